"""``filterwatch collector leaks`` and ``filterwatch collector export``: the analyst commands
that read the collector's store directly (no HTTP, no token: they need the database)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from collector.filters import Filters, add_filter_arguments, filters_from_args
from collector.progress import Progress, without_gc


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """``--config``, for the commands that open the collector's store."""
    parser.add_argument(
        "--config",
        type=Path,
        help="the collector's YAML configuration (default: filterwatch.sqlite3 here)",
    )


def _common(parser: argparse.ArgumentParser) -> None:
    add_filter_arguments(parser)
    add_config_argument(parser)


def register_leaks(cmds: Any) -> None:
    c: argparse.ArgumentParser = cmds.add_parser(
        "leaks",
        help="print leak events from the store",
        description="Leak events (and uncorroborated ones) found in the collector's store.",
    )
    _common(c)
    c.add_argument("--json", action="store_true", help="one JSON object, as GET /api/v1/leaks")
    c.set_defaults(handler=leaks_command)


def register_export(cmds: Any) -> None:
    c: argparse.ArgumentParser = cmds.add_parser(
        "export",
        help="write an export of measurements",
        description="Write the store's measurements (filtered) as CSV, JSONL or Parquet.",
    )
    c.add_argument("--format", choices=("csv", "jsonl", "parquet"), required=True)
    c.add_argument("--out", type=Path, required=True, help="file (or directory when partitioned)")
    c.add_argument(
        "--partition-by-day",
        action="store_true",
        help="write OUT/day=YYYY-MM-DD/part-0.<format> (readable by DuckDB, pyarrow.dataset)",
    )
    _common(c)
    c.set_defaults(handler=export_command)


@without_gc
def leaks_command(args: argparse.Namespace) -> int:
    from collector.analysis import analyse_filtered, evidence_filters
    from collector.report_text import events_text
    from collector.store.base import PSEUDONYM_SECRET

    filters = filters_from_args(args)
    config = _config(args)

    async def run() -> Any:
        store = _store(config)
        await store.open()
        try:
            # every ISP of the country is evidence; --asn / --domain choose what is shown
            evidence = evidence_filters(filters)
            # only the events are printed: the series no finding can come from are skipped
            key = await store.secret(PSEUDONYM_SECRET)
            return await store.aggregate(evidence, key, comparable_only=True)
        finally:
            await store.close()

    buckets = asyncio.run(run())
    report = analyse_filtered(buckets, filters)
    sys.stdout.write(report.dumps(with_isps=False) if args.json else events_text(report))
    return 0


def export_command(args: argparse.Namespace) -> int:
    from collector.exports import write_export

    filters = filters_from_args(args)
    config = _config(args)
    progress = Progress()
    written = write_export(
        _export_chunks(config, filters),
        args.format,
        args.out,
        partition_by_day=args.partition_by_day,
        on_rows=lambda n: progress.update(f"exported {n} measurements"),
    )
    progress.done()
    print(f"exported {written} measurements to {args.out}", file=sys.stderr)
    return 0


def _config(args: argparse.Namespace) -> Any:
    from collector.config import load_collector_config

    return load_collector_config(args.config)


def _store(config: Any) -> Any:
    from collector.app import make_store

    return make_store(config)


def _export_chunks(config: Any, filters: Filters) -> Iterator[Sequence[dict[str, object]]]:
    """The store's export rows, chunk by chunk, pulled through one event loop: the writer
    runs here, synchronously, and memory holds one chunk at a time."""
    from collector.store.base import PSEUDONYM_SECRET

    loop = asyncio.new_event_loop()
    store = _store(config)
    try:
        loop.run_until_complete(store.open())
        key = loop.run_until_complete(store.secret(PSEUDONYM_SECRET))
        stream = store.export_rows(filters, key, 20_000)
        try:
            while True:
                try:
                    rows = loop.run_until_complete(anext(stream))
                except StopAsyncIteration:
                    return
                yield rows
        finally:
            loop.run_until_complete(stream.aclose())
    finally:
        loop.run_until_complete(store.close())
        loop.close()
