"""Compare's counting: ``ArrowBucketCounter`` (behind ``count_exports``) counts export rows
per (cc, asn, domain, bucket) with Arrow's group_by, exactly as the store's SQL does, so
compare and the collector feed the analysis the same input."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from collector.analysis.model import BLOCKED_METHODS, BucketCount
from collector.compare.read import (
    DICTIONARY,
    NEEDED,
    ExportReadError,
    format_of,
    normalise,
    read_exports,
    read_slices,
)
from collector.filters import Filters
from collector.store.queries import example_pair, plan_series

_KEYS = ("cc", "domain", "agent", "blocking")  # the partials' dictionary-encoded keys


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
        masks = [pc.is_valid(table[name]) for name in ("cc", "asn") if table[name].null_count]
        if f.cc is not None:
            masks.append(pc.equal(table["cc"], f.cc))
        if f.asn is not None:
            masks.append(pc.equal(table["asn"], f.asn))
        if f.domain is not None:
            masks.append(pc.equal(table["domain"], f.domain))
        if f.since is not None:
            masks.append(pc.greater_equal(table["measured_at"], f.since))
        if f.until is not None:
            masks.append(pc.less(table["measured_at"], f.until))
        if not masks:
            return table  # every row is kept: no copy
        mask = masks[0]
        for more in masks[1:]:
            mask = pc.and_(mask, more)
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
        # The largest name by its rank among the names (an integer max, not a string one).
        names = table["network_name"]
        if not pa.types.is_dictionary(names.type):  # CSV and JSONL give strings
            names = pc.dictionary_encode(names)
        name_codes, name_values = _ranked_array(names)
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
                    "name": name_codes,
                }
            )
            .group_by(["cc", "asn", "domain", "bucket", "blocking", "agent"], use_threads=False)
            .aggregate([("id", "count"), ("id", "min_max"), ("name", "max")])
        )
        ids = partial["id_min_max"].combine_chunks()
        largest = pa.DictionaryArray.from_arrays(
            pc.cast(partial["name_max"].combine_chunks(), pa.int32()), name_values
        )
        partial = partial.drop_columns(["id_min_max", "name_max"])
        partial = partial.append_column("id_min", ids.field("min"))
        partial = partial.append_column("id_max", ids.field("max"))
        partial = partial.append_column("name_max", largest)
        for name in _KEYS:  # the same types from every format, for concatenation
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
        name_codes, name_names = _ranked_codes(p["name_max"])
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
            "name": name_codes,
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
                light, verdicts, (cc_names, domain_names, name_names), self.filters.bucket_s
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
                    grouped.slice(offset, 1 << 16),
                    verdicts,
                    (cc_names, domain_names, name_names),
                    agent_names,
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
    names: tuple[list[str], list[str], list[str]],
    bucket_s: float,
) -> tuple[pa.Array, list[BucketCount]]:
    """The series the analysis needs whole (``plan_series``), as ``_series_code`` values, and
    for each other series one bucket that sums it: its counts, its most agents in one
    bucket, its name, at its last bucket. ``light`` is one row per bucket (distinct agents,
    largest name, counts per verdict). The events come out exactly as from every bucket
    (no finding can come from those series), and so does the per-ISP table (totals, most
    agents, domains, names), while most buckets never become Python objects. ``names`` are
    the strings of the cc, domain and network name codes (``_ranked_codes``).
    """
    cc_names, domain_names, network_names = names
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
            _name(network_names, cols["name_max_max"][i]),
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


def _name(names: list[str], code: int | None) -> str:
    """The network name of a code (none: the empty name, as the store gives it)."""
    return "" if code is None else names[code] or ""


def _to_bucket_counts(
    grouped: pa.Table,
    verdicts: Sequence[str],
    names: tuple[list[str], list[str], list[str]],
    agent_names: list[str],
) -> list[BucketCount]:
    cc_names, domain_names, network_names = names
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
            network_name=_name(network_names, name),
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
    codes, values = _ranked_array(column)
    return codes, values.to_pylist()


def _ranked_array(column: pa.ChunkedArray) -> tuple[pa.Array, pa.Array]:
    """``_ranked_codes`` with the sorted strings as an Arrow array."""
    array = _single(column)
    values = pc.cast(array.dictionary, pa.string())
    order = pc.sort_indices(values)
    rank = pc.sort_indices(order)  # the inverse permutation: string index -> its rank
    return pc.take(rank, array.indices), pc.take(values, order)


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
            if format_of(path) == "parquet":
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
        parquet = pq.ParquetFile(path, read_dictionary=list(DICTIONARY))
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
        local = pq.ParquetFile(path, read_dictionary=list(DICTIONARY))
        try:
            raw = local.read_row_groups(groups, columns=list(NEEDED), use_threads=False)
            table = counter.select(normalise(raw))
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
