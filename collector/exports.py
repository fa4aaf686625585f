"""Export formats (CSV, JSONL, Parquet): streaming writers, readers, and the aggregation of
export rows into the analysis input.

Writers take rows in chunks and keep at most one chunk (one Parquet row group) in memory.
Readers give the columns the analysis needs, slice by slice, from any mix of files;
``ArrowBucketCounter`` (behind ``count_exports``) counts them per (cc, asn, domain, bucket)
with Arrow's group_by, exactly as the store's SQL does, so compare and the collector feed
the analysis the same input.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from collector.analysis.model import BLOCKED_METHODS, BucketCount
from collector.filters import Filters
from collector.store.base import EXPORT_COLUMNS
from collector.store.queries import example_pair, plan_series
from shared.errors import FilterwatchError

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

# What compare reads: the columns the aggregation needs (CSV and JSONL give measured_at as
# text; it becomes epoch seconds, float64, in ``_normalise``).
_NEEDED: Final = ("measurement_id", "measured_at", "cc", "asn", "network_name", "agent",
                  "domain", "blocking")  # fmt: skip
_TEXT_SCHEMA: Final = pa.schema(
    [(name, pa.string() if name != "asn" else pa.int64()) for name in _NEEDED]
)


_DICTIONARY: Final = ("cc", "domain", "agent", "blocking")  # few distinct values each


class ExportReadError(FilterwatchError):
    """An export file could not be read."""


# --- writing ------------------------------------------------------------------------------


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


def _batches(path: Path, size: int) -> Iterator[pa.RecordBatch | pa.Table]:
    """The columns the analysis needs from one export file, a slice at a time."""
    fmt = _format_of(path)
    if fmt == "parquet":
        # Repetitive columns stay dictionary-encoded, as Parquet stores them: far cheaper
        # to decode and to group by than millions of strings.
        parquet = pq.ParquetFile(path, read_dictionary=list(_DICTIONARY))
        yield from parquet.iter_batches(batch_size=size, columns=list(_NEEDED))
    elif fmt == "csv":
        yield from pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=1 << 24),
            convert_options=pacsv.ConvertOptions(
                column_types=_TEXT_SCHEMA,
                include_columns=list(_NEEDED),
                strings_can_be_null=True,
            ),
        )
    else:
        if _blank(path):
            return  # an export of no measurements: Arrow's reader calls it an error
        yield from pajson.open_json(
            path,
            read_options=pajson.ReadOptions(block_size=1 << 24),
            parse_options=pajson.ParseOptions(
                explicit_schema=_TEXT_SCHEMA, unexpected_field_behavior="ignore"
            ),
        )


def _blank(path: Path) -> bool:
    """Whether a JSONL file holds nothing but white space (read in small pieces)."""
    with path.open("rb") as f:
        while piece := f.read(1 << 16):
            if piece.strip():
                return False
    return True


def _normalise(batch: pa.RecordBatch | pa.Table) -> pa.Table:
    """``_NEEDED`` columns with measured_at as epoch seconds (float64)."""
    measured = batch.column("measured_at")
    if measured.type != TIMESTAMP:
        measured = pc.cast(measured, TIMESTAMP)
    seconds = pc.divide(pc.cast(pc.cast(measured, pa.int64()), pa.float64()), 1_000_000.0)
    columns: dict[str, Any] = {}
    for name in _NEEDED:
        if name == "measured_at":
            columns[name] = seconds
            continue
        column, wanted = batch.column(name), _TEXT_SCHEMA.field(name).type
        if column.type == wanted or (
            name in _DICTIONARY and column.type == pa.dictionary(pa.int32(), wanted)
        ):
            columns[name] = column
        else:
            columns[name] = pc.cast(column, wanted)
    return pa.table(columns)


def read_slices(path: Path, size: int = 1 << 18) -> Iterator[pa.Table]:
    """One export file as normalised tables of about ``size`` rows; errors name the file."""
    iterator = _batches(path, size)
    while True:
        try:
            batch = next(iterator, None)
            if batch is None:
                return
            table = _normalise(batch)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowKeyError, OSError, KeyError) as exc:
            raise ExportReadError(f"{path}: {exc}") from None
        yield table


def read_export(path: Path) -> pa.Table:
    """One whole export file, normalised (see ``read_slices``), with plain string columns
    so that files of different formats concatenate."""
    slices = list(read_slices(path))
    if not slices:
        return _empty()
    table = pa.concat_tables(slices).unify_dictionaries()
    for i, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):
            table = table.set_column(i, field.name, pc.cast(table[i], pa.string()))
    return table


def _empty() -> pa.Table:
    return pa.table(
        {n: pa.array([], pa.float64() if n == "measured_at" else _TEXT_SCHEMA.field(n).type)
         for n in _NEEDED}
    )  # fmt: skip


def read_exports(
    sources: Sequence[Sequence[Path]], on_file: Callable[[Path], None] | None = None
) -> pa.Table:
    """All files of ``sources`` in one table, each measurement id once (see
    ``count_exports``, which does not hold every row at once when it can avoid it)."""
    tables = []
    for files in sources:
        for path in files:
            tables.append(read_export(path))
            if on_file is not None:
                on_file(path)
    table = pa.concat_tables(tables) if tables else _empty()
    return drop_duplicate_ids(table) if len(sources) > 1 else table


def drop_duplicate_ids(table: pa.Table) -> pa.Table:
    """Keep the first row of each measurement id."""
    table = table.combine_chunks()
    indexed = table.append_column("__row", pa.array(range(table.num_rows), pa.int64()))
    first = indexed.group_by("measurement_id", use_threads=False).aggregate([("__row", "min")])
    keep = pc.sort_indices(first["__row_min"])
    return table.take(pc.take(first["__row_min"], keep))


class ArrowBucketCounter:
    """Counts normalised export rows per (cc, asn, domain, bucket), slice by slice.

    Slices are gathered to about ``flush_rows`` rows and grouped by Arrow per (cc, asn,
    domain, bucket, verdict, agent) into small partial counts; at the end the partials are
    grouped per bucket (distinct agents, counts per verdict, the smallest and largest `ok`
    id, the largest network name: what the store's SQL computes). Memory holds one slice
    and the partials, never every row.
    """

    def __init__(
        self, filters: Filters, flush_rows: int = 1 << 20, *, summarise: bool = False
    ) -> None:
        self.filters = filters
        self.flush_rows = flush_rows
        self.summarise = summarise  # see ``_summarised``
        self.rows = 0
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._partials: list[pa.Table] = []

    def add(self, table: pa.Table) -> None:
        table = self.select(table)
        self.rows += table.num_rows
        self._pending.append(table)
        self._pending_rows += table.num_rows
        if self._pending_rows >= self.flush_rows:
            self._flush()

    def select(self, table: pa.Table) -> pa.Table:
        """The rows of ``table`` the filters keep (and only those with a known network)."""
        f = self.filters
        mask = pc.and_(pc.is_valid(table["cc"]), pc.is_valid(table["asn"]))
        if f.cc is not None:
            mask = pc.and_(mask, pc.equal(table["cc"], f.cc))
        if f.asn is not None:
            mask = pc.and_(mask, pc.equal(table["asn"], f.asn))
        if f.domain is not None:
            mask = pc.and_(mask, pc.equal(table["domain"], f.domain))
        if f.since is not None:
            mask = pc.and_(mask, pc.greater_equal(table["measured_at"], f.since))
        if f.until is not None:
            mask = pc.and_(mask, pc.less(table["measured_at"], f.until))
        return table.filter(mask)

    def _flush(self) -> None:
        if not self._pending:
            return
        table = pa.concat_tables(self._pending)
        self._pending, self._pending_rows = [], 0
        self._partials.append(self.partial_of(table))

    def add_selected_partial(self, partial: pa.Table, rows: int) -> None:
        """Take a partial made by ``partial_of(select(table))`` elsewhere (another thread)."""
        self.rows += rows
        self._partials.append(partial)

    def partial_of(self, table: pa.Table) -> pa.Table:
        """Partial counts of selected rows per (cc, asn, domain, bucket, verdict, agent).
        Thread-safe: Arrow does the work and releases the GIL."""
        table = table.unify_dictionaries()
        width = float(self.filters.bucket_s)
        partial = (
            pa.table(
                {
                    "cc": table["cc"],
                    "asn": table["asn"],
                    "domain": table["domain"],
                    "bucket": pc.multiply(pc.floor(pc.divide(table["measured_at"], width)), width),
                    "blocking": table["blocking"],
                    "agent": table["agent"],
                    "id": table["measurement_id"],
                    "name": table["network_name"],
                }
            )
            .group_by(["cc", "asn", "domain", "bucket", "blocking", "agent"], use_threads=False)
            .aggregate([("id", "count"), ("id", "min_max"), ("name", "max")])
        )
        ids = partial["id_min_max"].combine_chunks()
        partial = partial.drop_columns(["id_min_max"])
        partial = partial.append_column("id_min", ids.field("min"))
        partial = partial.append_column("id_max", ids.field("max"))
        for name in _DICTIONARY:  # the same types from every format, for concatenation
            i = partial.schema.get_field_index(name)
            if not pa.types.is_dictionary(partial.schema.field(i).type):
                partial = partial.set_column(i, name, pc.dictionary_encode(partial[i]))
        return partial

    def buckets(self) -> list[BucketCount]:
        self._flush()
        if not self._partials:
            return []
        p = pa.concat_tables(self._partials).unify_dictionaries().combine_chunks()
        # Group on small integers rather than strings: codes of cc and domain that follow
        # the strings' order (so sorting the codes sorts the names), the agent's index.
        cc_codes, cc_names = _ranked_codes(p["cc"])
        domain_codes, domain_names = _ranked_codes(p["domain"])
        agent_column = _single(p["agent"])
        agent = agent_column.indices
        agent_names = pc.cast(agent_column.dictionary, pa.string()).to_pylist()
        ok = pc.fill_null(pc.equal(p["blocking"], "ok"), False)
        none = pa.scalar(None, pa.string())
        columns: dict[str, Any] = {
            "cc": cc_codes,
            "asn": p["asn"],
            "domain": domain_codes,
            "bucket": p["bucket"],
            "agent": agent,
            "ok_agent": pc.if_else(ok, agent, pa.scalar(None, agent.type)),
            "ok_low": pc.if_else(ok, p["id_min"], none),
            "ok_high": pc.if_else(ok, p["id_max"], none),
            "name": p["name_max"],
        }
        blocking = pc.cast(_single(p["blocking"]).dictionary, pa.string()).to_pylist()
        verdicts = sorted(v for v in blocking if v is not None)
        for v in verdicts:
            columns[f"n:{v}"] = pc.if_else(pc.equal(p["blocking"], v), p["id_count"], 0)
        table = pa.table(columns)
        keys = ["cc", "asn", "domain", "bucket"]
        summaries: list[BucketCount] = []
        if self.summarise:
            # First the cheap aggregates of every bucket, enough to plan the series and sum
            # those no finding can come from; the dear ones (the `ok` agents, the example
            # ids) only for the series the analysis needs whole.
            light = table.group_by(keys, use_threads=True).aggregate(
                [
                    ("agent", "count_distinct"),
                    ("name", "max"),
                    *[(f"n:{v}", "sum") for v in verdicts],
                ]
            )
            whole, summaries = _summarised(
                light, verdicts, cc_names, domain_names, self.filters.bucket_s
            )
            table = table.filter(pc.is_in(_series_code(table, len(domain_names)), value_set=whole))
        grouped = table.group_by(keys, use_threads=True).aggregate(  # sorted below
            [
                ("agent", "count_distinct"),
                ("ok_agent", "distinct"),
                ("ok_low", "min"),
                ("ok_high", "max"),
                ("name", "max"),
                *[(f"n:{v}", "sum") for v in verdicts],
            ]
        )
        # In the store's order, so that the analysis' own sort has nothing left to do.
        grouped = grouped.sort_by([(k, "ascending") for k in keys])
        out: list[BucketCount] = []
        for offset in range(0, grouped.num_rows, 1 << 16):  # a slice at a time: less memory
            out.extend(
                _to_bucket_counts(
                    grouped.slice(offset, 1 << 16), verdicts, cc_names, domain_names, agent_names
                )
            )
        if summaries:
            out = sorted(out + summaries, key=lambda b: (b.cc, b.asn, b.domain, b.bucket_start))
        return out


def _series_code(table: pa.Table, domains: int) -> pa.Array:
    """One integer per row naming its series (cc code, domain code, asn), for a vectorised
    membership test."""
    width = max(domains, 1)
    return pc.add(
        pc.multiply(
            pc.add(
                pc.multiply(pc.cast(table["cc"], pa.int64()), width),
                pc.cast(table["domain"], pa.int64()),
            ),
            1 << 32,
        ),
        pc.cast(table["asn"], pa.int64()),
    )


def _summarised(
    light: pa.Table,
    verdicts: Sequence[str],
    cc_names: list[str],
    domain_names: list[str],
    bucket_s: float,
) -> tuple[pa.Array, list[BucketCount]]:
    """The series the analysis needs whole (``plan_series``), as ``_series_code`` values, and
    for each other series one bucket that sums it: its counts, its most agents in one
    bucket, its name, at its last bucket. ``light`` is one row per bucket (distinct agents,
    largest name, counts per verdict). The events come out exactly as from every bucket
    (no finding can come from those series), and so does the per-ISP table (totals, most
    agents, domains, names), while most buckets never become Python objects.
    """
    series = light.group_by(["cc", "asn", "domain"], use_threads=False).aggregate(
        [
            ("bucket", "max"),
            ("agent_count_distinct", "max"),
            ("name_max", "max"),
            *[(f"n:{v}_sum", "sum") for v in verdicts],
        ]
    )
    cols = {name: series[name].to_pylist() for name in series.column_names}
    blocked_sums = [f"n:{v}_sum_sum" for v in verdicts if v in BLOCKED_METHODS]
    rows = [
        (
            cc_names[cc],
            asn,
            domain_names[domain],
            cols["n:ok_sum_sum"][i] if "n:ok_sum_sum" in cols else 0,
            sum(cols[c][i] for c in blocked_sums),
            last,
            cols["name_max_max"][i] or "",
        )
        for i, (cc, asn, domain, last) in enumerate(
            zip(cols["cc"], cols["asn"], cols["domain"], cols["bucket_max"], strict=True)
        )
    ]
    plans = plan_series(rows, bucket_s)
    whole = pa.array([p.whole for p in plans], pa.bool_())
    codes = _series_code(series, len(domain_names)).filter(whole)
    summaries = [
        BucketCount(
            cc=p.cc,
            asn=p.asn,
            network_name=p.name,
            domain=p.domain,
            bucket_start=p.last,
            counts={v: n for v in verdicts if (n := cols[f"n:{v}_sum_sum"][i])},
            agents=cols["agent_count_distinct_max"][i],
            accessible_agent_ids=(),
            example_ids=(),
        )
        for i, p in enumerate(plans)
        if not p.whole
    ]
    return codes, summaries


def _to_bucket_counts(
    grouped: pa.Table,
    verdicts: Sequence[str],
    cc_names: list[str],
    domain_names: list[str],
    agent_names: list[str],
) -> list[BucketCount]:
    plain = ("cc", "asn", "domain", "bucket", "agent_count_distinct",
             "ok_agent_distinct", "ok_low_min", "ok_high_max", "name_max")  # fmt: skip
    g = [grouped[name].to_pylist() for name in plain]
    # Counts per verdict, filled column by column where non-zero: most buckets have one.
    counts: list[dict[str, int]] = [{} for _ in range(grouped.num_rows)]
    for v in verdicts:
        column = grouped[f"n:{v}_sum"]
        where = pc.indices_nonzero(column).to_pylist()
        values = pc.take(column, pa.array(where, pa.uint64())).to_pylist()
        for i, n in zip(where, values, strict=True):
            counts[i][v] = n
    return [
        BucketCount(
            cc=cc_names[cc],
            asn=asn,
            network_name=name or "",
            domain=domain_names[domain],
            bucket_start=bucket,
            counts=bucket_counts,
            agents=agents,
            accessible_agent_ids=tuple(sorted(agent_names[i] for i in ok_agents if i is not None)),
            example_ids=example_pair(low, high),
        )
        for (cc, asn, domain, bucket, agents, ok_agents, low, high, name), bucket_counts in zip(
            zip(*g, strict=True), counts, strict=True
        )
    ]


def _single(column: pa.ChunkedArray) -> pa.DictionaryArray:
    """The one chunk of a combined dictionary column (an empty one if there are none)."""
    if column.num_chunks == 1:
        return column.chunk(0)
    return pa.chunked_array(column.chunks, column.type).combine_chunks()


def _ranked_codes(column: pa.ChunkedArray) -> tuple[pa.Array, list[str]]:
    """Integer codes of a dictionary column in the order of its strings, and the strings."""
    array = _single(column)
    values = pc.cast(array.dictionary, pa.string())
    order = pc.sort_indices(values)
    rank = pc.sort_indices(order)  # the inverse permutation: string index -> its rank
    return pc.take(rank, array.indices), pc.take(values, order).to_pylist()


def count_exports(
    sources: Sequence[Sequence[Path]],
    filters: Filters,
    on_file: Callable[[Path], None] | None = None,
    on_rows: Callable[[int], None] | None = None,
    *,
    summarise: bool = False,
) -> tuple[list[BucketCount], int]:
    """(buckets, rows counted) of several exports. One export is read slice by slice
    (Parquet row groups on two threads); when several are merged, their rows are first
    gathered to drop repeated measurement ids. With ``summarise``, the series no finding
    can come from are one bucket each (``ArrowBucketCounter``): for the events and the
    per-ISP table, not for charts of every bucket."""
    counter = ArrowBucketCounter(filters, summarise=summarise)
    if len(sources) > 1:
        counter.add(read_exports(sources, on_file))
        return counter.buckets(), counter.rows
    read = 0
    for files in sources:
        for path in files:
            if _format_of(path) == "parquet":
                read = _count_parquet(path, counter, read, on_rows)
            else:
                for table in read_slices(path):
                    counter.add(table)
                    read += table.num_rows
                    if on_rows is not None:
                        on_rows(read)
            if on_file is not None:
                on_file(path)
    return counter.buckets(), counter.rows


def _count_parquet(
    path: Path,
    counter: ArrowBucketCounter,
    read: int,
    on_rows: Callable[[int], None] | None,
    *,
    workers: int = 2,
    rows_per_task: int = 1 << 20,
) -> int:
    """Partial counts of one Parquet file, runs of row groups read and grouped on
    ``workers`` threads (Arrow releases the GIL), at most ``workers`` runs in memory."""
    try:
        parquet = pq.ParquetFile(path, read_dictionary=list(_DICTIONARY))
        metadata = parquet.metadata
    except (pa.ArrowInvalid, OSError) as exc:
        raise ExportReadError(f"{path}: {exc}") from None
    runs: list[list[int]] = [[]]
    size = 0
    for i in range(metadata.num_row_groups):
        if size >= rows_per_task:
            runs.append([])
            size = 0
        runs[-1].append(i)
        size += metadata.row_group(i).num_rows

    def task(groups: list[int]) -> tuple[pa.Table, int, int]:
        local = pq.ParquetFile(path, read_dictionary=list(_DICTIONARY))
        try:
            raw = local.read_row_groups(groups, columns=list(_NEEDED), use_threads=False)
            table = counter.select(_normalise(raw))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowKeyError, OSError, KeyError) as exc:
            raise ExportReadError(f"{path}: {exc}") from None
        return counter.partial_of(table), table.num_rows, raw.num_rows

    with ThreadPoolExecutor(workers, thread_name_prefix="compare") as pool:
        pending: list[Future[tuple[pa.Table, int, int]]] = []
        for groups in runs:
            if not groups:
                continue
            pending.append(pool.submit(task, groups))
            if len(pending) >= workers:
                read = _take(pending.pop(0), counter, read, on_rows)
        for future in pending:
            read = _take(future, counter, read, on_rows)
    return read


def _take(
    future: Future[tuple[pa.Table, int, int]],
    counter: ArrowBucketCounter,
    read: int,
    on_rows: Callable[[int], None] | None,
) -> int:
    partial, selected, raw = future.result()
    counter.add_selected_partial(partial, selected)
    read += raw
    if on_rows is not None:
        on_rows(read)
    return read


def bucket_counts(table: pa.Table, filters: Filters) -> list[BucketCount]:
    """Per (cc, asn, domain, bucket) counts of a normalised table (from ``read_exports``),
    the same numbers as ``collector.store.queries.aggregate_sqlite`` on the same rows."""
    counter = ArrowBucketCounter(filters)
    counter.add(table)
    return counter.buckets()
