"""SQL for the analysis and the exports, shared by the SQLite and PostgreSQL stores.

The statements are plain SQL that both databases run; only the placeholder style and the
floor function differ, and a ``Dialect`` supplies those. The counting happens in the
database (GROUP BY over the covering index of migration 0003): Python only ever sees one
row per (cc, asn, domain, bucket), never the measurements themselves.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from itertools import compress, groupby
from typing import Any

from collector.store.base import EXPORT_COLUMNS, BucketCount
from collector.store.records import DirtySeries
from shared.filters import Filters
from shared.schema import Blocking

_VERDICTS: tuple[str, ...] = tuple(b.value for b in Blocking)


@dataclass(frozen=True, slots=True)
class Dialect:
    """What differs between the databases: how to write the n-th parameter (1-based) and
    how to floor a number."""

    placeholder: Callable[[int], str]
    floor: str = "FLOOR({})"
    # The distinct values of a column joined by commas (agent ids and pseudonyms have none).
    distinct_list: str = "GROUP_CONCAT(DISTINCT {})"


SQLITE = Dialect(placeholder=lambda n: "?")
SQLITE_NO_MATH = Dialect(placeholder=lambda n: "?", floor="CAST({} AS INTEGER)")  # epoch > 0
POSTGRES = Dialect(placeholder=lambda n: f"${n}", distinct_list="STRING_AGG(DISTINCT {}, ',')")


def _where(
    filters: Filters, dialect: Dialect, params: list[Any], *, located_only: bool = True
) -> str:
    """The WHERE clause of ``filters``, appending its values to ``params``. The analysis
    looks only at measurements with a known network; exports carry them all."""
    clauses = ["cc IS NOT NULL", "asn IS NOT NULL"] if located_only else ["1 = 1"]

    def add(sql: str, value: Any) -> None:
        params.append(value)
        clauses.append(sql.format(dialect.placeholder(len(params))))

    if filters.cc is not None:
        add("cc = {}", filters.cc)
    if filters.asn is not None:
        add("asn = {}", filters.asn)
    if filters.domain is not None:
        add("domain = {}", filters.domain)
    if filters.since is not None:
        add("measured_at >= {}", filters.since)
    if filters.until is not None:
        add("measured_at < {}", filters.until)
    return " AND ".join(clauses)


def keys_sql(filters: Filters, dialect: Dialect) -> tuple[str, list[Any]]:
    """The distinct (cc, asn, domain) under ``filters``: a skip-scan of the covering index."""
    params: list[Any] = []
    where = _where(filters, dialect, params)
    return (
        f"SELECT DISTINCT cc, asn, domain FROM measurements WHERE {where} ORDER BY cc, asn, domain",
        params,
    )


def aggregate_sql(filters: Filters, dialect: Dialect) -> tuple[str, list[Any]]:
    """The aggregation of one (cc, asn, domain): parameters 3 to 5 are those (in the order
    they appear in the text, as "?" placeholders need), the rest come from ``filters``.

    One row per bucket. One statement per (cc, asn, domain) rather than one for
    everything: each sorts only that series' rows, in cache, instead of one sort of every
    row (measured about twice as fast on SQLite). ``COUNT(*) FILTER (WHERE ...)`` is
    standard SQL that SQLite (3.30+) and PostgreSQL share, and cheaper than CASE. MIN and
    MAX of the `ok` ids give two example ids portably (no GROUP_CONCAT / string_agg).
    """
    key = Filters(cc=None, asn=None, domain=None, since=filters.since, until=filters.until)
    params: list[Any] = [float(filters.bucket_s), float(filters.bucket_s), None, None, None]
    where = _where(key, dialect, params)
    ph = dialect.placeholder
    bucket = dialect.floor.format(f"measured_at / {ph(1)}") + f" * {ph(2)}"
    counts = ", ".join(f"COUNT(*) FILTER (WHERE blocking = '{v}')" for v in _VERDICTS)
    sql = (
        "SELECT bucket_start, COALESCE(MAX(network_name), ''), COUNT(DISTINCT agent_id),"
        f" {dialect.distinct_list.format('agent_id')} FILTER (WHERE blocking = 'ok'),"
        " MIN(measurement_id) FILTER (WHERE blocking = 'ok'),"
        f" MAX(measurement_id) FILTER (WHERE blocking = 'ok'), {counts}"
        f" FROM (SELECT {bucket} AS bucket_start, network_name, agent_id, blocking,"
        " measurement_id FROM measurements"
        f" WHERE cc = {ph(3)} AND asn = {ph(4)} AND domain = {ph(5)} AND {where}) AS m"
        " GROUP BY bucket_start"
    )
    return sql, params


class Pseudonyms:
    """Agent ids to their export pseudonyms, each computed once: the analysis sees agents
    by the same names whether it counts a store or its exports."""

    def __init__(self, key: bytes) -> None:
        from collector.state import agent_pseudonym  # aiohttp-heavy module: only when used

        self._make = partial(agent_pseudonym, key)
        self._known: dict[str, str] = {}

    def __call__(self, agent_id: str) -> str:
        known = self._known.get(agent_id)
        if known is None:
            known = self._known[agent_id] = self._make(agent_id)
        return known


def fold_series(
    cc: str,
    asn: int,
    domain: str,
    rows: Iterable[Sequence[Any]],
    pseudonym: Callable[[str], str],
) -> list[BucketCount]:
    """``BucketCount`` of one (cc, asn, domain) from rows of ``aggregate_sql`` (sqlite3
    tuples or asyncpg records: anything that unpacks), agents named by ``pseudonym``."""
    verdicts = _VERDICTS
    out: list[BucketCount] = []
    for record in rows:
        start, name, agents, ok_agents, low, high, *counts = record
        ok_agent_ids = tuple(sorted(map(pseudonym, ok_agents.split(",")))) if ok_agents else ()
        out.append(
            BucketCount(
                cc=cc,
                asn=asn,
                network_name=name,
                domain=domain,
                bucket_start=float(start),
                counts=dict(compress(zip(verdicts, counts, strict=True), counts)),  # non-zero
                agents=agents,
                accessible_agent_ids=ok_agent_ids,
                example_ids=example_pair(low, high),
            )
        )
    return out


def example_pair(low: str | None, high: str | None) -> tuple[str, ...]:
    """The example ids of a bucket from the smallest and largest `ok` id."""
    if low is None or high is None:
        return ()
    return (low,) if low == high else (low, high)


def _sqlite_dialect(conn: sqlite3.Connection) -> Dialect:
    """FLOOR exists only when SQLite was built with its math functions."""
    try:
        conn.execute("SELECT FLOOR(1.5)").fetchone()
    except sqlite3.OperationalError:
        return SQLITE_NO_MATH
    return SQLITE


def _database_file(conn: sqlite3.Connection) -> str | None:
    for _, name, path in conn.execute("PRAGMA database_list").fetchall():
        if name == "main":
            return str(path) or None
    return None


def aggregate_sqlite(
    conn: sqlite3.Connection, filters: Filters, pseudonym_key: bytes, workers: int = 2
) -> list[BucketCount]:
    """Per (cc, asn, domain, bucket) counts for ``filters``, computed by SQLite.

    SQLite runs one statement on one core; with ``workers`` > 1 the series are shared with
    extra read-only connections on threads (sqlite3 releases the GIL while it steps).
    """
    dialect = _sqlite_dialect(conn)
    sql, params = keys_sql(filters, dialect)
    keys = [(cc, int(asn), domain) for cc, asn, domain in conn.execute(sql, params)]
    sql, params = aggregate_sql(filters, dialect)
    pseudonym = Pseudonyms(pseudonym_key)

    def run(c: sqlite3.Connection, share: Sequence[tuple[str, int, str]]) -> list[BucketCount]:
        out: list[BucketCount] = []
        mine = list(params)
        for cc, asn, domain in share:
            mine[2:5] = (cc, asn, domain)
            out.extend(fold_series(cc, asn, domain, c.execute(sql, mine), pseudonym))
        return out

    path = _database_file(conn)
    if workers <= 1 or path is None or len(keys) < 64:
        return run(conn, keys)
    # Contiguous shares keep each thread's reads local in the index; results stay in order.
    size = -(-len(keys) // workers)
    shares = [keys[i : i + size] for i in range(0, len(keys), size)]

    def helper(share: Sequence[tuple[str, int, str]]) -> list[BucketCount]:
        c = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        try:
            c.execute("PRAGMA query_only = ON")
            return run(c, share)
        finally:
            c.close()

    with ThreadPoolExecutor(len(shares) - 1, thread_name_prefix="aggregate") as pool:
        futures = [pool.submit(helper, share) for share in shares[1:]]
        first = run(conn, shares[0])
        return first + [b for f in futures for b in f.result()]


def merged_ranges(
    ranges: Iterable[DirtySeries], bucket_s: float
) -> list[tuple[str, int, str, float, float]]:
    """One (cc, asn, domain, since, until) per series, widened to whole buckets."""
    merged: dict[tuple[str, int, str], tuple[float, float]] = {}
    for r in ranges:
        key = (r.cc, r.asn, r.domain)
        lo, hi = merged.get(key, (r.lo, r.hi))
        merged[key] = (min(lo, r.lo), max(hi, r.hi))
    return [
        (
            cc,
            asn,
            domain,
            math.floor(lo / bucket_s) * bucket_s,
            (math.floor(hi / bucket_s) + 1) * bucket_s,
        )
        for (cc, asn, domain), (lo, hi) in sorted(merged.items())
    ]


_IN_CHUNK = 500  # domains per statement


def ranges_group_sql(domains: int, bucket_s: float, dialect: Dialect) -> str:
    """The buckets of several domains of one (cc, asn) over one time range, one row per
    (domain, bucket): parameters cc, asn, since, until, then the domains. One statement
    for a whole batch's series (an agent measures every target of its country)."""
    ph = dialect.placeholder
    bucket = dialect.floor.format(f"measured_at / {float(bucket_s)!r}") + f" * {float(bucket_s)!r}"
    counts = ", ".join(f"COUNT(*) FILTER (WHERE blocking = '{v}')" for v in _VERDICTS)
    listed = ", ".join(ph(5 + i) for i in range(domains))
    return (
        "SELECT domain, bucket_start, COALESCE(MAX(network_name), ''), COUNT(DISTINCT agent_id),"
        f" {dialect.distinct_list.format('agent_id')} FILTER (WHERE blocking = 'ok'),"
        " MIN(measurement_id) FILTER (WHERE blocking = 'ok'),"
        f" MAX(measurement_id) FILTER (WHERE blocking = 'ok'), {counts}"
        f" FROM (SELECT domain, {bucket} AS bucket_start, network_name, agent_id, blocking,"
        " measurement_id FROM measurements"
        f" WHERE cc = {ph(1)} AND asn = {ph(2)} AND measured_at >= {ph(3)}"
        f" AND measured_at < {ph(4)} AND domain IN ({listed})) AS m"
        " GROUP BY domain, bucket_start ORDER BY domain, bucket_start"
    )


def range_groups(
    ranges: Iterable[DirtySeries], bucket_s: float
) -> list[tuple[str, int, float, float, list[str]]]:
    """The merged ranges grouped into statements: (cc, asn, since, until, domains)."""
    groups: dict[tuple[str, int, float, float], list[str]] = {}
    for cc, asn, domain, since, until in merged_ranges(ranges, bucket_s):
        groups.setdefault((cc, asn, since, until), []).append(domain)
    out = []
    for (cc, asn, since, until), domains in sorted(groups.items()):
        for i in range(0, len(domains), _IN_CHUNK):
            out.append((cc, asn, since, until, domains[i : i + _IN_CHUNK]))
    return out


def fold_group(
    cc: str, asn: int, rows: Iterable[Sequence[Any]], pseudonym: Callable[[str], str]
) -> list[BucketCount]:
    """``BucketCount`` of the rows of ``ranges_group_sql`` (ordered by domain)."""
    out: list[BucketCount] = []
    for domain, series in groupby(rows, key=lambda r: r[0]):
        out.extend(fold_series(cc, asn, domain, (tuple(r)[1:] for r in series), pseudonym))
    return out


def aggregate_ranges_sqlite(
    conn: sqlite3.Connection, ranges: Sequence[DirtySeries], bucket_s: float, pseudonym_key: bytes
) -> list[BucketCount]:
    """The buckets of each dirty series over its range: the monitor's incremental read."""
    dialect = _sqlite_dialect(conn)
    pseudonym = Pseudonyms(pseudonym_key)
    out: list[BucketCount] = []
    for cc, asn, since, until, domains in range_groups(ranges, bucket_s):
        sql = ranges_group_sql(len(domains), bucket_s, dialect)
        rows = conn.execute(sql, [cc, asn, since, until, *domains])
        out.extend(fold_group(cc, asn, rows, pseudonym))
    return out


def export_sql(filters: Filters, dialect: Dialect) -> tuple[str, list[Any]]:
    """The export statement: stored columns in EXPORT_COLUMNS order, agent_id in place of
    the pseudonym (made in Python, so that the key never enters the database)."""
    params: list[Any] = []
    where = _where(filters, dialect, params, located_only=False)
    columns = ", ".join("agent_id" if c == "agent" else c for c in EXPORT_COLUMNS)
    return (
        f"SELECT {columns} FROM measurements WHERE {where} ORDER BY measured_at, measurement_id",
        params,
    )


def iso_measured_at(epoch: float) -> str:
    """Export form of a measurement time: UTC, microseconds, ``Z``."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def export_row(values: Sequence[Any], pseudonym: Pseudonyms) -> dict[str, object]:
    """One export row (EXPORT_COLUMNS) from the stored values of ``export_sql``."""
    row = dict(zip(EXPORT_COLUMNS, values, strict=True))
    row["agent"] = pseudonym(str(row["agent"]))
    row["measured_at"] = iso_measured_at(float(values[1]))
    for flag in ("accessible", "control_ok"):
        if row[flag] is not None:
            row[flag] = bool(row[flag])
    answers = row["dns_answers"]
    row["dns_answers"] = str(answers).split() if answers else None  # stored space-separated
    return row


def export_chunks_sqlite(
    conn: sqlite3.Connection, filters: Filters, pseudonym_key: bytes, chunk: int
) -> Iterator[list[dict[str, object]]]:
    """Export rows ordered by (measured_at, measurement_id), ``chunk`` at a time: the cursor
    streams, so memory holds one chunk however large the store."""
    sql, params = export_sql(filters, SQLITE)
    cursor = conn.execute(sql, params)
    pseudonym = Pseudonyms(pseudonym_key)
    try:
        while True:
            batch = cursor.fetchmany(chunk)
            if not batch:
                return
            yield [export_row(values, pseudonym) for values in batch]
    finally:
        cursor.close()
