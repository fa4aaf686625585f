"""Dispatch ``filterwatch GROUP COMMAND`` to the package that owns the group.

Each group's module has ``register(subparsers)``, which adds its parser and sets
``handler``, a function from the parsed arguments to an exit code:
0 success, 1 findings or run failure, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from collector.filters import FilterError
from filterwatch.extras import COMMAND_EXTRAS, MissingExtraError, extra_of_module, require_extra
from shared.errors import ConfigError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


# Which module registers each group, in the order of ``filterwatch --help``. Only the group
# named on the command line is imported: an agent's commands start without the collector's
# and the lab's modules (on a Raspberry Pi that is seconds).
GROUPS: dict[str, str] = {
    "lab": "lab.cli",
    "demo": "lab.cli",
    "collector": "collector.cli",
    "agent": "agent.cli",
    "compare": "collector.compare.cli",
    "import": "collector.ooni.cli",
}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for ``argv``: only its group's, when the first word names one."""
    parser = _Parser(
        prog="filterwatch",
        description="Per-ISP censorship measurement: which ISP leaks, to which sites, since when.",
    )
    sub = parser.add_subparsers(dest="group", metavar="COMMAND", parser_class=_Parser)
    first = argv[0] if argv else None
    modules = [GROUPS[first]] if first in GROUPS else list(dict.fromkeys(GROUPS.values()))
    for name in modules:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        if args.group in COMMAND_EXTRAS:
            require_extra(*COMMAND_EXTRAS[args.group])
        return int(handler(args))
    except (ConfigError, FilterError, MissingExtraError) as exc:
        print(f"filterwatch: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        # A lazy import deeper down that the check above did not foresee: still no traceback.
        extra = extra_of_module(exc.name)
        if extra is None:
            raise
        print(
            f"filterwatch: {args.group} needs: pip install 'filterwatch[{extra}]'"
            f" (missing: {exc.name})",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        return 130
