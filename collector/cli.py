"""``filterwatch collector ...``"""

from __future__ import annotations

import argparse
from typing import Any

from filterwatch.cli import not_built


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("collector", help="the collector service")
    cmds = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in ("serve", "enroll-code", "analyst-token", "export", "leaks"):
        c = cmds.add_parser(name)
        c.set_defaults(handler=lambda a, n=name: not_built(f"collector {n}"))
