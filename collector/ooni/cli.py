"""``filterwatch import ooni PATH... (--out FILE | --partition-by-day DIR)``

Reads OONI web_connectivity measurements (collector/ooni/read.py), maps each to an export
row (collector/ooni/mapping.py) and writes CSV, JSONL or Parquet that ``filterwatch
compare`` reads like a collector's export, alone or merged with collectors' exports. Ends
with a summary: documents read, rows kept, and documents skipped by reason.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from shared.errors import ConfigError

CHUNK_ROWS: Final = 4096
MAX_OPEN_DAYS: Final = 32  # open day partitions at once; an evicted day gets a new part file


def register(sub: Any) -> None:
    group = sub.add_parser("import", help="import other platforms' measurements")
    kinds = group.add_subparsers(dest="source", metavar="SOURCE")
    p: argparse.ArgumentParser = kinds.add_parser(
        "ooni",
        help="OONI web_connectivity measurements to an export file",
        description="OONI web_connectivity measurements (JSON as the API returns them, JSON"
        " lines, .gz of either, .tar.gz postcans, directories such as OONI's public bucket) to"
        " a CSV, JSONL or Parquet export that `filterwatch compare` reads. See docs/ooni.md.",
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files or directories")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=Path, help="the export file; its extension is the format")
    where.add_argument(
        "--partition-by-day",
        type=Path,
        metavar="DIR",
        help="write DIR/day=YYYY-MM-DD/part-N.<format> instead",
    )
    p.add_argument(
        "--format",
        choices=("csv", "jsonl", "parquet"),
        help="the format (default: from --out's extension; parquet with --partition-by-day)",
    )
    p.add_argument(
        "--fingerprints",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="blockpage fingerprint file or directory (OONI CSV, Censored Planet JSON lines);"
        " repeatable; used with the shipped set",
    )
    p.add_argument(
        "--pseudonym-key",
        type=Path,
        metavar="FILE",
        help="key file for the agent pseudonyms (created if missing); default: a fixed key,"
        " so that imports of the same reports agree",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(handler=run)
    group.set_defaults(handler=lambda args: _no_source(group))


def _no_source(parser: argparse.ArgumentParser) -> int:
    parser.print_usage(sys.stderr)
    print(
        "filterwatch import: say what to import: `filterwatch import ooni PATH...`", file=sys.stderr
    )
    return 2


def _format(args: argparse.Namespace) -> str:
    if args.format:
        return str(args.format)
    if args.partition_by_day is not None:
        return "parquet"
    suffix = args.out.suffix.lower()
    formats = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
    if suffix not in formats:
        raise ConfigError(
            str(args.out), "--out", "expected a .csv, .jsonl or .parquet file (or --format)"
        )
    return formats[suffix]


def _key(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
        key = path.read_text(encoding="utf-8").strip().encode("utf-8")
    except OSError as exc:
        raise ConfigError(str(path), "--pseudonym-key", f"cannot use: {exc.strerror}") from None
    if len(key) < 16:
        raise ConfigError(str(path), "--pseudonym-key", "the key is shorter than 16 characters")
    return key


@dataclass(slots=True)
class Summary:
    """What an import did: documents read, rows kept, skipped documents by reason."""

    read: int = 0
    kept: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    verdicts: Counter[str] = field(default_factory=Counter)
    fingerprints_elsewhere: int = 0
    files: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "read": self.read,
            "kept": self.kept,
            "skipped": dict(self.skipped.most_common()),
            "verdicts": dict(self.verdicts.most_common()),
            "fingerprints_elsewhere": self.fingerprints_elsewhere,
        }

    def text(self) -> str:
        lines = [
            f"read {self.read} documents from {self.files} files: kept {self.kept},"
            f" skipped {sum(self.skipped.values())}"
        ]
        for reason, n in self.skipped.most_common():
            lines.append(f"  skipped {n:>9}  {reason}")
        for verdict, n in self.verdicts.most_common():
            lines.append(f"  verdict {n:>9}  {verdict}")
        if self.fingerprints_elsewhere:
            lines.append(
                f"  {self.fingerprints_elsewhere} matched a fingerprint of other countries"
                " only (not counted as blockpages)"
            )
        return "\n".join(lines) + "\n"


def import_rows(
    files: Iterable[Path], mapper: Any, summary: Summary
) -> Iterator[list[dict[str, object]]]:
    """Export rows of every measurement in ``files``, in chunks; ``summary`` counts."""
    from collector.ooni.mapping import Skip
    from collector.ooni.read import Bad, documents

    seen: set[int] = set()  # 64 bits of each id: a million take tens of MB, not hundreds
    chunk: list[dict[str, object]] = []
    for path in files:
        for doc in documents(path):
            summary.read += 1
            if isinstance(doc, Bad):
                summary.skipped[doc.reason] += 1
                continue
            row = mapper.row(doc)
            if isinstance(row, Skip):
                summary.skipped[row.reason] += 1
                continue
            mid = int(str(row["measurement_id"])[5:21], 16)
            if mid in seen:
                summary.skipped["duplicate"] += 1
                continue
            seen.add(mid)
            summary.kept += 1
            chunk.append(row)
            if len(chunk) >= CHUNK_ROWS:
                yield chunk
                chunk = []
    if chunk:
        yield chunk
    summary.verdicts.update(mapper.verdicts)
    summary.fingerprints_elsewhere = mapper.fingerprints_elsewhere


class _DayParts:
    """Day partitions written as rows come, in any order: a bounded number open at once."""

    def __init__(self, root: Path, fmt: str) -> None:
        from collector.exports import SUFFIXES

        self.root, self.fmt, self.suffix = root, fmt, SUFFIXES[fmt]
        self.open: OrderedDict[str, tuple[Any, IO[bytes]]] = OrderedDict()
        self.parts: Counter[str] = Counter()

    def write(self, day: str, rows: list[dict[str, object]]) -> None:
        from collector.exports import ExportEncoder

        entry = self.open.get(day)
        if entry is None:
            if len(self.open) >= MAX_OPEN_DAYS:
                self._close(next(iter(self.open)))
            folder = self.root / f"day={day}"
            folder.mkdir(parents=True, exist_ok=True)
            part = self.parts[day]
            self.parts[day] += 1
            new_sink: IO[bytes] = (folder / f"part-{part}{self.suffix}").open("wb")
            entry = self.open[day] = (ExportEncoder(self.fmt), new_sink)
        self.open.move_to_end(day)
        encoder, sink = entry
        sink.write(encoder.encode(rows))

    def _close(self, day: str) -> None:
        encoder, sink = self.open.pop(day)
        try:
            sink.write(encoder.finish())
        finally:
            sink.close()

    def close(self) -> None:
        while self.open:
            self._close(next(iter(self.open)))


def write_rows(
    chunks: Iterable[list[dict[str, object]]], fmt: str, out: Path | None, by_day: Path | None
) -> None:
    """Write the chunks to one export file, or to day partitions under ``by_day``."""
    from collector.exports import ExportEncoder, day_of

    if by_day is not None:
        by_day.mkdir(parents=True, exist_ok=True)
        parts = _DayParts(by_day, fmt)
        try:
            for rows in chunks:
                days: dict[str, list[dict[str, object]]] = {}
                for row in rows:
                    days.setdefault(day_of(row), []).append(row)
                for day, members in days.items():
                    parts.write(day, members)
        finally:
            parts.close()
        return
    assert out is not None
    out.parent.mkdir(parents=True, exist_ok=True)
    encoder = ExportEncoder(fmt)
    with out.open("wb") as sink:
        for rows in chunks:
            sink.write(encoder.encode(rows))
        sink.write(encoder.finish())


def run(args: argparse.Namespace) -> int:
    from collector.ooni.mapping import DEFAULT_PSEUDONYM_KEY, Mapper
    from collector.ooni.read import OoniReadError, measurement_files
    from shared.blockpages import load_fingerprint_set

    fmt = _format(args)
    try:
        files = measurement_files(args.paths)
    except OoniReadError as exc:
        print(f"filterwatch import ooni: {exc}", file=sys.stderr)
        return 2
    key = _key(args.pseudonym_key) or DEFAULT_PSEUDONYM_KEY
    fingerprints = load_fingerprint_set(list(args.fingerprints))
    summary = Summary(files=len(files))
    mapper = Mapper(fingerprints, key)
    write_rows(import_rows(files, mapper, summary), fmt, args.out, args.partition_by_day)
    if args.json:
        sys.stdout.write(json.dumps(summary.to_json()) + "\n")
    else:
        sys.stdout.write(summary.text())
    return 0
