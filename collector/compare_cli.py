"""``filterwatch compare FILE...``"""

from __future__ import annotations

import argparse
from typing import Any

from filterwatch.cli import not_built


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("compare", help="compare ISPs from exports")
    p.add_argument("files", nargs="*")
    p.set_defaults(handler=lambda a: not_built("compare"))
