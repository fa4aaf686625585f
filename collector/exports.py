"""Export formats (CSV, JSONL, Parquet): streaming writers, readers, and the aggregation of
export rows into the analysis input.

Writers take rows in chunks and keep at most one chunk (one Parquet row group) in memory.
Readers turn any mix of files into one Arrow table of the columns the analysis needs, and
``bucket_counts`` counts it per (cc, asn, domain, bucket) with Arrow's group_by, exactly as
the store's SQL does, so compare and the collector feed the analysis the same input.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any, Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from collector.store.base import EXPORT_COLUMNS, BucketCount
from shared.errors import FilterwatchError
from shared.filters import Filters
from shared.schema import Blocking

FORMATS: Final = ("csv", "jsonl", "parquet")
SUFFIXES: Final = {"csv": ".csv", "jsonl": ".jsonl", "parquet": ".parquet"}
MEDIA_TYPES: Final = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
}
_VERDICTS: Final = tuple(b.value for b in Blocking)

TIMESTAMP: Final = pa.timestamp("us", tz="UTC")
EXPORT_SCHEMA: Final = pa.schema(
    [
        ("measurement_id", pa.string()),
        ("measured_at", TIMESTAMP),
        ("cc", pa.string()),
        ("asn", pa.int64()),
        ("network_name", pa.string()),
        ("agent", pa.string()),
        ("url", pa.string()),
        ("domain", pa.string()),
        ("blocking", pa.string()),
        ("accessible", pa.bool_()),
        ("failure", pa.string()),
        ("blockpage", pa.string()),
        ("dns_answers", pa.string()),
        ("http_status", pa.int64()),
        ("http_body_length", pa.int64()),
        ("control_ok", pa.bool_()),
    ]
)
assert tuple(EXPORT_SCHEMA.names) == EXPORT_COLUMNS

# What compare reads: the columns the aggregation needs, measured_at as a string to parse.
_NEEDED: Final = ("measurement_id", "measured_at", "cc", "asn", "network_name", "agent",
                  "domain", "blocking")  # fmt: skip
_TEXT_SCHEMA: Final = pa.schema(
    [(name, pa.string() if name != "asn" else pa.int64()) for name in _NEEDED]
)


class ExportReadError(FilterwatchError):
    """An export file could not be read."""


# --- writing ------------------------------------------------------------------------------


def _csv_value(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def csv_bytes(rows: Sequence[dict[str, object]], *, header: bool) -> bytes:
    """CSV text of ``rows`` (EXPORT_COLUMNS), with the header line when asked."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header:
        writer.writerow(EXPORT_COLUMNS)
    writer.writerows([_csv_value(row[c]) for c in EXPORT_COLUMNS] for row in rows)
    return buf.getvalue().encode("utf-8")


def jsonl_bytes(rows: Sequence[dict[str, object]]) -> bytes:
    """One JSON object per line, keys in EXPORT_COLUMNS order."""
    return "".join(
        json.dumps({c: row[c] for c in EXPORT_COLUMNS}, separators=(",", ":")) + "\n"
        for row in rows
    ).encode("utf-8")


def arrow_batch(rows: Sequence[dict[str, object]]) -> pa.RecordBatch:
    """A record batch of ``rows`` in EXPORT_SCHEMA (measured_at parsed to a UTC timestamp)."""
    columns: dict[str, Any] = {c: [row[c] for row in rows] for c in EXPORT_COLUMNS}
    arrays = []
    for field in EXPORT_SCHEMA:
        values = columns[field.name]
        if field.name == "measured_at":
            arrays.append(pa.array(values, pa.string()).cast(TIMESTAMP))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=EXPORT_SCHEMA)


class _Drain(io.RawIOBase):
    """A write-only file whose bytes are taken out as they come (to stream Parquet)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        self._position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._position

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


class ExportEncoder:
    """Turns chunks of export rows into the bytes of one export file, piece by piece:
    ``encode(rows)`` for each chunk, then ``finish()``. Memory holds one chunk."""

    def __init__(self, fmt: str) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown export format {fmt!r}")
        self.fmt = fmt
        self._started = False
        self._drain: _Drain | None = None
        self._parquet: pq.ParquetWriter | None = None

    def encode(self, rows: Sequence[dict[str, object]]) -> bytes:
        first = not self._started
        self._started = True
        if self.fmt == "csv":
            return csv_bytes(rows, header=first)
        if self.fmt == "jsonl":
            return jsonl_bytes(rows)
        if self._parquet is None:
            self._drain = _Drain()
            self._parquet = pq.ParquetWriter(self._drain, EXPORT_SCHEMA, compression="zstd")
        assert self._drain is not None
        if rows:
            self._parquet.write_batch(arrow_batch(rows))
        return self._drain.take()

    def finish(self) -> bytes:
        if self.fmt == "csv" and not self._started:
            return csv_bytes([], header=True)
        if self.fmt != "parquet":
            return b""
        if self._parquet is None:
            self.encode([])
        assert self._parquet is not None and self._drain is not None
        self._parquet.close()
        return self._drain.take()


def day_of(row: dict[str, object]) -> str:
    return str(row["measured_at"])[:10]


def write_export(
    chunks: Iterable[Sequence[dict[str, object]]],
    fmt: str,
    out: Path,
    *,
    partition_by_day: bool = False,
    on_rows: Callable[[int], None] | None = None,
) -> int:
    """Write an export to ``out`` (a file, or with ``partition_by_day`` a directory of
    ``day=YYYY-MM-DD/part-0.<fmt>`` that DuckDB and pyarrow.dataset read as one table).
    Rows must come ordered by time, as the store gives them. Returns the rows written."""
    written = 0
    encoder: ExportEncoder | None = None
    sink: IO[bytes] | None = None
    day: str | None = None

    def open_part(name: str) -> tuple[ExportEncoder, IO[bytes]]:
        folder = out / f"day={name}"
        folder.mkdir(parents=True, exist_ok=True)
        return ExportEncoder(fmt), (folder / f"part-0{SUFFIXES[fmt]}").open("wb")

    try:
        if not partition_by_day:
            out.parent.mkdir(parents=True, exist_ok=True)
            encoder, sink = ExportEncoder(fmt), out.open("wb")
        for rows in chunks:
            if not partition_by_day:
                assert encoder is not None and sink is not None
                sink.write(encoder.encode(rows))
            else:
                start = 0
                for i, row in enumerate(rows):
                    row_day = day_of(row)
                    if row_day != day:
                        if encoder is not None and sink is not None:
                            sink.write(encoder.encode(rows[start:i]))
                            sink.write(encoder.finish())
                            sink.close()
                        encoder, sink = open_part(row_day)
                        day, start = row_day, i
                if encoder is not None and sink is not None:
                    sink.write(encoder.encode(rows[start:]))
            written += len(rows)
            if on_rows is not None:
                on_rows(written)
        if encoder is not None and sink is not None:
            sink.write(encoder.finish())
        elif partition_by_day:
            out.mkdir(parents=True, exist_ok=True)  # an empty export is an empty directory
    finally:
        if sink is not None:
            sink.close()
    return written


# --- reading ------------------------------------------------------------------------------


def export_files(paths: Iterable[Path]) -> list[Path]:
    """The export files named by ``paths``; directories (partitioned exports) are walked."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                sorted(p for p in path.rglob("*") if p.is_file() and _format_of(p) is not None)
            )
        elif path.is_file():
            if _format_of(path) is None:
                raise ExportReadError(f"{path}: not an export (expected .csv, .jsonl or .parquet)")
            found.append(path)
        else:
            raise ExportReadError(f"{path}: no such file or directory")
    return found


def _format_of(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    return None


def read_export(path: Path) -> pa.Table:
    """The columns the analysis needs from one export file, as a table of ``_NEEDED`` with
    measured_at in epoch seconds (float64)."""
    fmt = _format_of(path)
    try:
        if fmt == "parquet":
            table = pq.read_table(path, columns=list(_NEEDED))
        elif fmt == "csv":
            table = pacsv.read_csv(
                path,
                convert_options=pacsv.ConvertOptions(
                    column_types=_TEXT_SCHEMA,
                    include_columns=list(_NEEDED),
                    strings_can_be_null=True,
                ),
            )
        else:
            table = pajson.read_json(
                path,
                parse_options=pajson.ParseOptions(
                    explicit_schema=_TEXT_SCHEMA, unexpected_field_behavior="ignore"
                ),
            )
        measured = table["measured_at"]
        if measured.type != TIMESTAMP:
            measured = pc.cast(measured, TIMESTAMP)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, KeyError) as exc:
        raise ExportReadError(f"{path}: {exc}") from None
    seconds = pc.divide(pc.cast(pc.cast(measured, pa.int64()), pa.float64()), 1_000_000.0)
    columns = {"measured_at": seconds}
    for name in _NEEDED:
        column, wanted = table[name], _TEXT_SCHEMA.field(name).type
        if name != "measured_at":
            columns[name] = column if column.type == wanted else column.cast(wanted)
    return pa.table({name: columns[name] for name in _NEEDED})


def read_exports(
    sources: Sequence[Sequence[Path]], on_file: Callable[[Path], None] | None = None
) -> pa.Table:
    """All files of ``sources`` in one table, each measurement id once.

    A source is one export: a file, or the files of one partitioned directory. Ids are
    unique within an export (the store's primary key), so duplicates are looked for only
    when several sources are merged (several collectors, or overlapping exports), which
    spares the hash of every id in the common case of one export.
    """
    tables = []
    for files in sources:
        for path in files:
            tables.append(read_export(path))
            if on_file is not None:
                on_file(path)
    if not tables:
        return pa.table(
            {n: pa.array([], pa.float64() if n == "measured_at" else _TEXT_SCHEMA.field(n).type)
             for n in _NEEDED}
        )  # fmt: skip
    table = pa.concat_tables(tables)
    return drop_duplicate_ids(table) if len(sources) > 1 else table


def drop_duplicate_ids(table: pa.Table) -> pa.Table:
    """Keep the first row of each measurement id."""
    table = table.combine_chunks()
    indexed = table.append_column("__row", pa.array(range(table.num_rows), pa.int64()))
    first = indexed.group_by("measurement_id", use_threads=False).aggregate([("__row", "min")])
    keep = pc.sort_indices(first["__row_min"])
    return table.take(pc.take(first["__row_min"], keep))


def bucket_counts(table: pa.Table, filters: Filters) -> list[BucketCount]:
    """Per (cc, asn, domain, bucket) counts of ``table`` (from ``read_exports``), the same
    numbers as ``collector.store.queries.aggregate_sqlite`` on the same measurements."""
    mask = pc.and_(pc.is_valid(table["cc"]), pc.is_valid(table["asn"]))
    if filters.cc is not None:
        mask = pc.and_(mask, pc.equal(table["cc"], filters.cc))
    if filters.asn is not None:
        mask = pc.and_(mask, pc.equal(table["asn"], filters.asn))
    if filters.domain is not None:
        mask = pc.and_(mask, pc.equal(table["domain"], filters.domain))
    if filters.since is not None:
        mask = pc.and_(mask, pc.greater_equal(table["measured_at"], filters.since))
    if filters.until is not None:
        mask = pc.and_(mask, pc.less(table["measured_at"], filters.until))
    table = table.filter(mask)
    width = float(filters.bucket_s)
    bucket = pc.multiply(pc.floor(pc.divide(table["measured_at"], width)), width)
    blocking = table["blocking"]
    ok = pc.equal(blocking, "ok")
    columns: dict[str, Any] = {
        "cc": table["cc"],
        "asn": table["asn"],
        "domain": table["domain"],
        "bucket": bucket,
        "network_name": table["network_name"],
        "agent": table["agent"],
        "ok_agent": pc.if_else(ok, table["agent"], pa.scalar(None, pa.string())),
        "ok_id": pc.if_else(ok, table["measurement_id"], pa.scalar(None, pa.string())),
    }
    # Verdicts as small integer codes counted per group: one pass instead of nine columns.
    codes = pc.index_in(blocking, value_set=pa.array(_VERDICTS))
    for i, verdict in enumerate(_VERDICTS):
        columns[f"n_{verdict}"] = pc.cast(pc.equal(codes, i), pa.int64())
    grouped = (
        pa.table(columns)
        .group_by(["cc", "asn", "domain", "bucket"], use_threads=True)
        .aggregate(
            [
                ("network_name", "max"),
                ("agent", "count_distinct"),
                ("ok_agent", "count_distinct"),
                ("ok_id", "min"),
                ("ok_id", "max"),
                *[(f"n_{v}", "sum") for v in _VERDICTS],
            ]
        )
    )
    g = {name: grouped[name].to_pylist() for name in grouped.column_names}
    sums = [g[f"n_{v}_sum"] for v in _VERDICTS]
    out: list[BucketCount] = []
    for i in range(grouped.num_rows):
        ok_min, ok_max = g["ok_id_min"][i], g["ok_id_max"][i]
        out.append(
            BucketCount(
                cc=g["cc"][i],
                asn=g["asn"][i],
                network_name=g["network_name_max"][i] or "",
                domain=g["domain"][i],
                bucket_start=g["bucket"][i],
                counts={v: s[i] for v, s in zip(_VERDICTS, sums, strict=True) if s[i]},
                agents=g["agent_count_distinct"][i],
                accessible_agents=g["ok_agent_count_distinct"][i],
                example_ids=(
                    () if ok_min is None else (ok_min,) if ok_min == ok_max else (ok_min, ok_max)
                ),
            )
        )
    return out
