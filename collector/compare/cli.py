"""``filterwatch compare FILE... [filters] [--format table|json|html] [--out F]``

Reads any mix of CSV, JSONL and Parquet exports (files or partitioned directories) from one
or several collectors, keeps each measurement id once, and runs the same analysis as the
collector on the same per-bucket counts.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from collector.filters import add_filter_arguments, filters_from_args
from collector.progress import Progress, without_gc


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "compare",
        help="per-ISP comparison and leak events from exports",
        description="Per-ISP comparison and leak events from CSV, JSONL or Parquet exports"
        " (several collectors' files are merged; duplicate measurement ids are dropped).",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="export files or directories")
    add_filter_arguments(p)
    p.add_argument("--format", choices=("table", "json", "html"), default="table")
    p.add_argument("--out", type=Path, help="write here instead of standard output")
    p.set_defaults(handler=run)


@without_gc
def run(args: argparse.Namespace) -> int:
    _prefer_jemalloc()
    return _run(args)


def _prefer_jemalloc() -> None:
    """Ask Arrow for jemalloc in this process, unless the user chose an allocator.

    Counting allocates and frees buffers of megabytes per row group on two threads.
    Arrow's default allocator, mimalloc, hands those pages back to the kernel and faults
    them in again: on 10 million rows (``bench/analysis``) 2-3 s of system time against
    0.6-1 s with jemalloc, for the same peak memory, and about a second more wall time.
    Arrow reads the variable once, when pyarrow is first imported (which is after this);
    its Linux wheels carry jemalloc, which other platforms' may not.
    """
    if sys.platform == "linux" and "pyarrow" not in sys.modules:
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")


def _run(args: argparse.Namespace) -> int:
    from collector.analysis import analyse_filtered, evidence_filters
    from collector.compare.count import count_exports
    from collector.compare.read import ExportReadError, export_files
    from collector.report_text import compare_text

    filters = filters_from_args(args)
    progress = Progress()
    try:
        sources = [export_files([Path(f)]) for f in args.files]
        total = sum(len(files) for files in sources)
        done = 0

        def on_file(path: Path) -> None:
            nonlocal done
            done += 1
            progress.update(f"read {done}/{total} files ({path.name})", force=True)

        # every ISP of the country is evidence; --asn / --domain choose what is shown
        buckets, rows = count_exports(
            sources,
            evidence_filters(filters),
            on_file,
            lambda n: progress.update(f"read {n} measurements"),
            summarise=args.format != "html",  # the HTML report charts every bucket
        )
    except ExportReadError as exc:
        progress.done()
        print(f"filterwatch compare: {exc}", file=sys.stderr)
        return 2
    progress.update(f"analysing {len(buckets)} buckets of {rows} measurements", force=True)
    report = analyse_filtered(buckets, filters)
    progress.done()
    if args.format == "json":
        text = report.dumps(with_isps=True)
    elif args.format == "html":
        from collector.report_html import render_html

        if filters.domain is not None:
            buckets = [b for b in buckets if b.domain == filters.domain]
        text = render_html(report, buckets, filters.bucket_s, title="filterwatch compare")
    else:
        text = compare_text(report)
    write_output(text, args.out)
    return 0


def write_output(text: str, out: Path | None) -> None:
    if out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
