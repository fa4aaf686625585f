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
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from itertools import compress, groupby
from typing import Any

from collector.analysis.model import BLOCKED_METHODS, BucketCount
from collector.filters import Filters
from collector.pseudonyms import agent_pseudonym
from collector.store.base import EXPORT_COLUMNS, StoredVerdict
from collector.store.records import DirtySeries
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
    # The largest network name, compared bytewise as SQLite and Arrow do (on PostgreSQL
    # also the cheapest comparison, whatever the database's collation).
    name_max: str = "MAX(network_name)"


SQLITE = Dialect(placeholder=lambda n: "?")
SQLITE_NO_MATH = Dialect(placeholder=lambda n: "?", floor="CAST({} AS INTEGER)")  # epoch > 0
POSTGRES = Dialect(
    placeholder=lambda n: f"${n}",
    distinct_list="STRING_AGG(DISTINCT {}, ',')",
    name_max='MAX(network_name COLLATE "C")',
)


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
        f"SELECT bucket_start, COALESCE({dialect.name_max}, ''), COUNT(DISTINCT agent_id),"
        f" {dialect.distinct_list.format('agent_id')} FILTER (WHERE blocking = 'ok'),"
        " MIN(measurement_id) FILTER (WHERE blocking = 'ok'),"
        f" MAX(measurement_id) FILTER (WHERE blocking = 'ok'), {counts}"
        f" FROM (SELECT {bucket} AS bucket_start, network_name, agent_id, blocking,"
        " measurement_id FROM measurements"
        f" WHERE cc = {ph(3)} AND asn = {ph(4)} AND domain = {ph(5)} AND {where}) AS m"
        " GROUP BY bucket_start"
    )
    return sql, params


def survey_sql(
    filters: Filters, dialect: Dialect, *, one_isp: bool = False
) -> tuple[str, list[Any]]:
    """Per (cc, asn, domain) under ``filters``: how many `ok` and blocked measurements, the
    last measurement time and the network name. Grouped in the covering index's own order:
    one pass, no sort, about a fifth of the cost of the per-bucket aggregation. With
    ``one_isp`` the last two parameters are one ISP's cc and asn (placeholders for them
    are left at the end of ``params`` as None)."""
    params: list[Any] = []
    where = _where(filters, dialect, params)
    if one_isp:
        params.extend((None, None))
        n = len(params)
        where += f" AND cc = {dialect.placeholder(n - 1)} AND asn = {dialect.placeholder(n)}"
    blocked = ", ".join(f"'{v}'" for v in sorted(BLOCKED_METHODS))
    return (
        "SELECT cc, asn, domain, COUNT(*) FILTER (WHERE blocking = 'ok'),"
        f" COUNT(*) FILTER (WHERE blocking IN ({blocked})), MAX(measured_at),"
        f" COALESCE({dialect.name_max}, '') FROM measurements WHERE {where}"
        " GROUP BY cc, asn, domain ORDER BY cc, asn, domain",
        params,
    )


@dataclass(frozen=True, slots=True)
class SeriesPlan:
    """How one (cc, asn, domain) is counted for the leak analysis: every bucket (``whole``),
    or only its last bucket, named as the whole series is (``name``)."""

    cc: str
    asn: int
    domain: str
    whole: bool
    last: float
    name: str


def plan_series(rows: Iterable[Sequence[Any]], bucket_s: float) -> list[SeriesPlan]:
    """Which series the leak analysis needs whole, from rows of ``survey_sql``.

    Every finding (a lapse, an uncorroborated one, a divergence) is an ISP seen accessible
    where other ISPs of its country block the same domain. So a (cc, domain) in which no ISP
    has an `ok` while another has a blocked measurement can give no finding, and its
    buckets are not needed; most (cc, domain) of real data are such (blocked or open
    everywhere). Of those series the last bucket is still counted, with the series' name:
    what the analysis reads of the rest of the data (where each country's data ends, each
    ISP's name) stays exactly what it was, so the events are exactly those of all buckets.
    """
    surveyed = [
        (str(cc), int(asn), str(domain), int(ok), int(blocked), float(last), str(name))
        for cc, asn, domain, ok, blocked, last, name in rows
    ]
    accessible: dict[tuple[str, str], set[int]] = {}
    blocking: dict[tuple[str, str], set[int]] = {}
    for cc, asn, domain, ok, blocked, _, _ in surveyed:
        if ok:
            accessible.setdefault((cc, domain), set()).add(asn)
        if blocked:
            blocking.setdefault((cc, domain), set()).add(asn)

    def needed(place: tuple[str, str]) -> bool:
        open_isps, blocking_isps = accessible.get(place, set()), blocking.get(place, set())
        return bool(open_isps and blocking_isps) and len(open_isps | blocking_isps) > 1

    return [
        SeriesPlan(
            cc, asn, domain, needed((cc, domain)), math.floor(last / bucket_s) * bucket_s, name
        )
        for cc, asn, domain, _, _, last, name in surveyed
    ]


def last_bucket_sql(filters: Filters, dialect: Dialect) -> tuple[str, list[Any]]:
    """``aggregate_sql`` from a given time on: parameter 6 is that time (a series' last
    bucket start, or the filters' own start if later)."""
    return aggregate_sql(replace(filters, since=filters.since or 0.0), dialect)


def last_buckets_postgres_sql(filters: Filters) -> tuple[str, list[Any]]:
    """The last bucket of many series in one PostgreSQL statement (a lateral look-up in the
    covering index per series, rather than a round trip each): parameters 3 to 6 are arrays
    of cc, asn, domain and the time each series' last bucket starts; one row per (series,
    bucket), the series' position (from 1) first, then what ``aggregate_sql`` gives."""
    params: list[Any] = [float(filters.bucket_s), float(filters.bucket_s), None, None, None, None]
    where = ""
    if filters.until is not None:
        params.append(filters.until)
        where = f" AND m.measured_at < ${len(params)}"
    counts = ", ".join(f"COUNT(*) FILTER (WHERE m.blocking = '{v}')" for v in _VERDICTS)
    sql = (
        "SELECT s.i, FLOOR(m.measured_at / $1) * $2 AS bucket_start,"
        """ COALESCE(MAX(m.network_name COLLATE "C"), ''), COUNT(DISTINCT m.agent_id),"""
        " STRING_AGG(DISTINCT m.agent_id, ',') FILTER (WHERE m.blocking = 'ok'),"
        " MIN(m.measurement_id) FILTER (WHERE m.blocking = 'ok'),"
        f" MAX(m.measurement_id) FILTER (WHERE m.blocking = 'ok'), {counts}"
        " FROM unnest($3::text[], $4::bigint[], $5::text[], $6::float8[])"
        " WITH ORDINALITY AS s(cc, asn, domain, since, i)"
        " JOIN measurements m ON m.cc = s.cc AND m.asn = s.asn AND m.domain = s.domain"
        f" AND m.measured_at >= s.since{where}"
        " GROUP BY s.i, bucket_start ORDER BY s.i, bucket_start"
    )
    return sql, params


def fold_last(
    plan: SeriesPlan, rows: Iterable[Sequence[Any]], pseudonym: Callable[[str], str]
) -> list[BucketCount]:
    """The last bucket of a series the analysis does not need whole, with its name."""
    buckets = fold_series(plan.cc, plan.asn, plan.domain, rows, pseudonym)
    return [replace(b, network_name=plan.name) for b in buckets[-1:]]


class Pseudonyms:
    """Agent ids to their export pseudonyms, each computed once: the analysis sees agents
    by the same names whether it counts a store or its exports."""

    def __init__(self, key: bytes) -> None:
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
    conn: sqlite3.Connection,
    filters: Filters,
    pseudonym_key: bytes,
    workers: int = 2,
    *,
    comparable_only: bool = False,
) -> list[BucketCount]:
    """Per (cc, asn, domain, bucket) counts for ``filters``, computed by SQLite; with
    ``comparable_only``, only what the leak analysis needs (``plan_series``).

    SQLite runs one statement on one core; with ``workers`` > 1 the series are shared with
    extra read-only connections on threads (sqlite3 releases the GIL while it steps).
    """
    dialect = _sqlite_dialect(conn)
    path = _database_file(conn)
    plans = _plans(conn, filters, dialect, comparable_only, workers, path)
    whole_sql, whole_params = aggregate_sql(filters, dialect)
    last_sql, last_params = last_bucket_sql(filters, dialect)
    pseudonym = Pseudonyms(pseudonym_key)

    def run(c: sqlite3.Connection, share: Sequence[SeriesPlan]) -> list[BucketCount]:
        out: list[BucketCount] = []
        whole, last = list(whole_params), list(last_params)
        for plan in share:
            if plan.whole:
                whole[2:5] = (plan.cc, plan.asn, plan.domain)
                rows = c.execute(whole_sql, whole)
                out.extend(fold_series(plan.cc, plan.asn, plan.domain, rows, pseudonym))
            else:
                last[2:6] = (plan.cc, plan.asn, plan.domain, max(plan.last, last_params[5]))
                out.extend(fold_last(plan, c.execute(last_sql, last), pseudonym))
        return out

    if workers <= 1 or path is None or len(plans) < 64:
        return run(conn, plans)
    # Contiguous shares of equal work keep each thread's reads local in the index; results
    # stay in order.
    shares = _shares(plans, workers)
    if len(shares) == 1:
        return run(conn, shares[0])

    with ThreadPoolExecutor(len(shares) - 1, thread_name_prefix="aggregate") as pool:
        futures = [pool.submit(_on_reader, path, run, share) for share in shares[1:]]
        first = run(conn, shares[0])
        return first + [b for f in futures for b in f.result()]


def _plans(
    conn: sqlite3.Connection,
    filters: Filters,
    dialect: Dialect,
    comparable_only: bool,
    workers: int,
    path: str | None,
) -> list[SeriesPlan]:
    if not comparable_only:
        sql, params = keys_sql(filters, dialect)
        return [whole_series(cc, asn, domain) for cc, asn, domain in conn.execute(sql, params)]
    # One survey statement per ISP, the ISPs shared among threads as the series are below.
    sql, params = survey_sql(filters, dialect, one_isp=True)
    isps = list(_isps(conn))

    def survey(c: sqlite3.Connection, share: Sequence[tuple[str, int]]) -> list[Any]:
        rows: list[Any] = []
        mine = list(params)
        for cc, asn in share:
            mine[-2:] = (cc, asn)
            rows.extend(c.execute(sql, mine))
        return rows

    if workers <= 1 or path is None or len(isps) < 2:
        rows = survey(conn, isps)
    else:
        size = -(-len(isps) // workers)
        shares = [isps[i : i + size] for i in range(0, len(isps), size)]
        with ThreadPoolExecutor(len(shares) - 1, thread_name_prefix="survey") as pool:
            futures = [pool.submit(_on_reader, path, survey, share) for share in shares[1:]]
            rows = survey(conn, shares[0]) + [r for f in futures for r in f.result()]
    return plan_series(rows, filters.bucket_s)


def _isps(conn: sqlite3.Connection) -> Iterator[tuple[str, int]]:
    """The distinct located (cc, asn), in order, by seeks in the covering index (one look-up
    each rather than a scan of every measurement)."""
    first = "SELECT MIN(cc) FROM measurements WHERE cc > ?"
    asn_after = "SELECT MIN(asn) FROM measurements WHERE cc = ? AND asn > ?"
    cc = conn.execute(first, ("",)).fetchone()[0]
    while cc is not None:
        asn = conn.execute(asn_after, (cc, -(2**63))).fetchone()[0]
        while asn is not None:
            yield cc, int(asn)
            asn = conn.execute(asn_after, (cc, asn)).fetchone()[0]
        cc = conn.execute(first, (cc,)).fetchone()[0]


def _on_reader(path: str, work: Callable[[sqlite3.Connection, Any], Any], share: Any) -> Any:
    """``work(connection, share)`` on a read-only connection of its own (another thread)."""
    c = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    try:
        c.execute("PRAGMA query_only = ON")
        return work(c, share)
    finally:
        c.close()


def whole_series(cc: str, asn: int, domain: str) -> SeriesPlan:
    return SeriesPlan(cc, int(asn), domain, whole=True, last=0.0, name="")


def _shares(plans: Sequence[SeriesPlan], workers: int) -> list[Sequence[SeriesPlan]]:
    """``plans`` cut into at most ``workers`` contiguous runs of about equal work (a series
    counted whole weighs as much as fifty last buckets)."""
    weights = [50 if p.whole else 1 for p in plans]
    target = sum(weights) / workers
    shares: list[Sequence[SeriesPlan]] = []
    start, acc = 0, 0
    for i, w in enumerate(weights):
        acc += w
        if acc >= target and len(shares) < workers - 1:
            shares.append(plans[start : i + 1])
            start, acc = i + 1, 0
    shares.append(plans[start:])
    return [s for s in shares if s]


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
        f"SELECT domain, bucket_start, COALESCE({dialect.name_max}, ''),"
        " COUNT(DISTINCT agent_id),"
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


def verdicts_sql(filters: Filters, dialect: Dialect) -> tuple[str, list[Any]]:
    """The statement of ``Store.verdicts``: the columns of ``StoredVerdict``, in order."""
    params: list[Any] = []
    where = _where(filters, dialect, params, located_only=False)
    return (
        "SELECT measurement_id, agent_id, url, measured_at, blocking, accessible"
        f" FROM measurements WHERE {where} ORDER BY measured_at, measurement_id",
        params,
    )


def stored_verdict(values: Sequence[Any]) -> StoredVerdict:
    """A ``StoredVerdict`` from one row of ``verdicts_sql``."""
    measurement_id, agent_id, url, measured_at, blocking, accessible = values
    return StoredVerdict(
        measurement_id=str(measurement_id),
        agent_id=str(agent_id),
        url=str(url),
        measured_at=float(measured_at),
        blocking=str(blocking),
        accessible=None if accessible is None else bool(accessible),
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
