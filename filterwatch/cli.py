"""Dispatch ``filterwatch GROUP COMMAND`` to the package that owns the group.

Each group's module has ``register(subparsers)``, which adds its parser and sets
``handler``, a function from the parsed arguments to an exit code:
0 success, 1 findings or run failure, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from filterwatch.extras import COMMAND_EXTRAS, MissingExtraError, extra_of_module, require_extra
from shared.errors import ConfigError
from shared.filters import FilterError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    from agent import cli as agent_cli
    from collector import cli as collector_cli
    from collector import compare_cli
    from collector.ooni import cli as import_cli
    from lab import cli as lab_cli

    parser = _Parser(
        prog="filterwatch",
        description="Per-ISP censorship measurement: which ISP leaks, to which sites, since when.",
    )
    sub = parser.add_subparsers(dest="group", metavar="COMMAND", parser_class=_Parser)
    lab_cli.register(sub)
    collector_cli.register(sub)
    agent_cli.register(sub)
    compare_cli.register(sub)
    import_cli.register(sub)
    return parser


def not_built(what: str) -> int:
    print(f"filterwatch: '{what}' is not built yet", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
