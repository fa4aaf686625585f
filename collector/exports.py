"""Export formats (CSV, JSONL, Parquet): the export schema and streaming writers.

Writers take rows in chunks and keep at most one chunk (one Parquet row group) in memory.
Reading exports and counting them for ``compare`` live in ``collector.compare``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

from collector.store.base import EXPORT_COLUMNS

FORMATS: Final = ("csv", "jsonl", "parquet")
SUFFIXES: Final = {"csv": ".csv", "jsonl": ".jsonl", "parquet": ".parquet"}
MEDIA_TYPES: Final = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
}

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
        ("dns_answers", pa.list_(pa.string())),
        ("http_status", pa.int64()),
        ("http_body_length", pa.int64()),
        ("control_ok", pa.bool_()),
        ("failure_original", pa.string()),
    ]
)
assert tuple(EXPORT_SCHEMA.names) == EXPORT_COLUMNS


def _pandas_metadata(schema: pa.Schema) -> bytes:
    """The ``pandas`` schema metadata that makes ``pandas.read_parquet`` give nullable
    integers as ``Int64`` and booleans as ``boolean`` (not float64 and object), as pyarrow
    writes it for such a DataFrame; written by hand so that exports need no pandas."""
    kinds = {pa.int64(): ("int64", "Int64"), pa.bool_(): ("bool", "boolean")}
    columns = []
    for f in schema:
        if f.type in kinds:
            pandas_type, numpy_type = kinds[f.type]
        elif f.type == TIMESTAMP:
            pandas_type, numpy_type = "datetimetz", "datetime64[us]"
        elif pa.types.is_list(f.type):
            pandas_type, numpy_type = "list[unicode]", "object"
        else:
            pandas_type, numpy_type = "unicode", "object"
        metadata = {"timezone": "UTC"} if f.type == TIMESTAMP else None
        columns.append(
            {
                "name": f.name,
                "field_name": f.name,
                "pandas_type": pandas_type,
                "numpy_type": numpy_type,
                "metadata": metadata,
            }
        )
    doc = {
        "index_columns": [],
        "column_indexes": [],
        "columns": columns,
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.0.0",
    }
    return json.dumps(doc).encode("utf-8")


# The schema Parquet files are written with: EXPORT_SCHEMA and its pandas metadata.
PARQUET_SCHEMA: Final = EXPORT_SCHEMA.with_metadata({b"pandas": _pandas_metadata(EXPORT_SCHEMA)})


def _csv_value(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return " ".join(str(v) for v in value)  # dns_answers: addresses, space-separated
    return value


def csv_bytes(rows: Sequence[dict[str, object]], *, header: bool) -> bytes:
    """CSV text of ``rows`` (EXPORT_COLUMNS), with the header line when asked."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header:
        writer.writerow(EXPORT_COLUMNS)
    writer.writerows([_csv_value(row.get(c)) for c in EXPORT_COLUMNS] for row in rows)
    return buf.getvalue().encode("utf-8")


def _answers(value: object) -> object:
    # Rows made before dns_answers became a list carry the stored space-separated text.
    return value.split() if isinstance(value, str) else value


def _json_value(column: str, value: object) -> object:
    return _answers(value) if column == "dns_answers" else value


def jsonl_bytes(rows: Sequence[dict[str, object]]) -> bytes:
    """One JSON object per line, keys in EXPORT_COLUMNS order."""
    return "".join(
        json.dumps({c: _json_value(c, row.get(c)) for c in EXPORT_COLUMNS}, separators=(",", ":"))
        + "\n"
        for row in rows
    ).encode("utf-8")


def arrow_batch(rows: Sequence[dict[str, object]]) -> pa.RecordBatch:
    """A record batch of ``rows`` in EXPORT_SCHEMA (measured_at parsed to a UTC timestamp)."""
    columns: dict[str, Any] = {c: [row.get(c) for row in rows] for c in EXPORT_COLUMNS}
    columns["dns_answers"] = [_answers(v) for v in columns["dns_answers"]]
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
    ``encode(rows)`` for each chunk, then ``finish()``. Memory holds one chunk (for
    Parquet, one row group of up to ``ROW_GROUP_ROWS`` rows, as Arrow columns)."""

    ROW_GROUP_ROWS = 1 << 18  # big enough for fast scans, small enough to hold in memory

    def __init__(self, fmt: str) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown export format {fmt!r}")
        self.fmt = fmt
        self._started = False
        self._drain: _Drain | None = None
        self._parquet: pq.ParquetWriter | None = None
        self._group: list[pa.RecordBatch] = []
        self._group_rows = 0

    def encode(self, rows: Sequence[dict[str, object]]) -> bytes:
        first = not self._started
        self._started = True
        if self.fmt == "csv":
            return csv_bytes(rows, header=first)
        if self.fmt == "jsonl":
            return jsonl_bytes(rows)
        if self._parquet is None:
            self._drain = _Drain()
            self._parquet = pq.ParquetWriter(self._drain, PARQUET_SCHEMA, compression="zstd")
        assert self._drain is not None
        if rows:
            self._group.append(arrow_batch(rows))
            self._group_rows += len(rows)
            if self._group_rows >= self.ROW_GROUP_ROWS:
                self._write_group()
        return self._drain.take()

    def _write_group(self) -> None:
        assert self._parquet is not None
        if self._group:
            table = pa.Table.from_batches(
                self._group, schema=EXPORT_SCHEMA
            ).replace_schema_metadata(PARQUET_SCHEMA.metadata)
            self._parquet.write_table(table, row_group_size=max(1, table.num_rows))
        self._group, self._group_rows = [], 0

    def finish(self) -> bytes:
        if self.fmt == "csv" and not self._started:
            return csv_bytes([], header=True)
        if self.fmt != "parquet":
            return b""
        if self._parquet is None:
            self.encode([])
        assert self._parquet is not None and self._drain is not None
        self._write_group()
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
