"""Reading exports: the columns the analysis needs, slice by slice, from any mix of CSV,
JSONL and Parquet files (or directories of partitioned exports)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from collector.exports import TIMESTAMP
from collector.inputs import input_files
from shared.errors import FilterwatchError

# What compare reads: the columns the aggregation needs (CSV and JSONL give measured_at as
# text; it becomes epoch seconds, float64, in ``normalise``).
NEEDED: Final = ("measurement_id", "measured_at", "cc", "asn", "network_name", "agent",
                 "domain", "blocking")  # fmt: skip
TEXT_SCHEMA: Final = pa.schema(
    [(name, pa.string() if name != "asn" else pa.int64()) for name in NEEDED]
)
DICTIONARY: Final = ("cc", "domain", "agent", "blocking", "network_name")  # few values each


class ExportReadError(FilterwatchError):
    """An export file could not be read."""


def export_files(paths: Iterable[Path]) -> list[Path]:
    """The export files named by ``paths``; directories (partitioned exports) are walked."""
    expected = "not an export (expected .csv, .jsonl or .parquet)"
    return input_files(paths, format_of, ExportReadError, expected)


def format_of(path: Path) -> str | None:
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
    fmt = format_of(path)
    if fmt == "parquet":
        # Repetitive columns stay dictionary-encoded, as Parquet stores them: far cheaper
        # to decode and to group by than millions of strings.
        parquet = pq.ParquetFile(path, read_dictionary=list(DICTIONARY))
        yield from parquet.iter_batches(batch_size=size, columns=list(NEEDED))
    elif fmt == "csv":
        yield from pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=1 << 24),
            convert_options=pacsv.ConvertOptions(
                column_types=TEXT_SCHEMA,
                include_columns=list(NEEDED),
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
                explicit_schema=TEXT_SCHEMA, unexpected_field_behavior="ignore"
            ),
        )


def _blank(path: Path) -> bool:
    """Whether a JSONL file holds nothing but white space (read in small pieces)."""
    with path.open("rb") as f:
        while piece := f.read(1 << 16):
            if piece.strip():
                return False
    return True


def normalise(batch: pa.RecordBatch | pa.Table) -> pa.Table:
    """``NEEDED`` columns with measured_at as epoch seconds (float64)."""
    measured = batch.column("measured_at")
    if measured.type != TIMESTAMP:
        measured = pc.cast(measured, TIMESTAMP)
    seconds = pc.divide(pc.cast(pc.cast(measured, pa.int64()), pa.float64()), 1_000_000.0)
    columns: dict[str, Any] = {}
    for name in NEEDED:
        if name == "measured_at":
            columns[name] = seconds
            continue
        column, wanted = batch.column(name), TEXT_SCHEMA.field(name).type
        if column.type == wanted or (
            name in DICTIONARY and column.type == pa.dictionary(pa.int32(), wanted)
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
            table = normalise(batch)
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
        {n: pa.array([], pa.float64() if n == "measured_at" else TEXT_SCHEMA.field(n).type)
         for n in NEEDED}
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
