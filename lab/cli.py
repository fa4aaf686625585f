"""``filterwatch demo`` and ``filterwatch lab run``."""

from __future__ import annotations

import argparse
from typing import Any

from filterwatch.cli import not_built


def register(sub: Any) -> None:
    d: argparse.ArgumentParser = sub.add_parser("demo", help="run the Iran 2013 lab scenario")
    d.set_defaults(handler=lambda a: not_built("demo"))
    lab = sub.add_parser("lab", help="the censorship lab")
    cmds = lab.add_subparsers(dest="command", metavar="COMMAND")
    run = cmds.add_parser("run")
    run.add_argument("scenario")
    run.set_defaults(handler=lambda a: not_built("lab run"))
