"""``filterwatch collector leaks`` and ``filterwatch collector export`` (stubs until built)."""

from __future__ import annotations

from typing import Any

from filterwatch.cli import not_built


def register_leaks(cmds: Any) -> None:
    c = cmds.add_parser("leaks", help="print leak events from the store")
    c.set_defaults(handler=lambda a: not_built("collector leaks"))


def register_export(cmds: Any) -> None:
    c = cmds.add_parser("export", help="write an export of measurements")
    c.set_defaults(handler=lambda a: not_built("collector export"))
