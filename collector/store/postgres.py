"""The PostgreSQL store, for several collector processes (and hosts) behind a load balancer.

Every collector runs the same migrations (portable SQL, with BLOB spelt BYTEA) under an
advisory lock, so processes starting together apply each migration once. Ingest stays
idempotent across collectors because the measurement id is the primary key: a batch
retried against another collector inserts nothing twice. The analysis runs the same SQL as
the SQLite store (``collector.store.queries``) with PostgreSQL's placeholders.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from itertools import groupby
from typing import Any, Final

import asyncpg

from collector.analysis.model import BucketCount
from collector.filters import Filters
from collector.store import queries, records
from collector.store.base import AgentRecord, InsertOutcome, PruneOutcome, Store, StoredVerdict
from collector.store.migrate import Migration, MigrationError, load_migrations
from collector.store.records import numbered
from collector.store.rows import Row, dirty_rows

# Any constant would do; it only has to be the same in every collector process.
_MIGRATION_LOCK: Final = 0x66_77_6D_69  # "fwmi"

_BOOKKEEPING: Final = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    applied_at  DOUBLE PRECISION NOT NULL
)
"""

# The columns of the measurements insert with their types, in measurement_row's order.
_TYPED_COLUMNS: Final = (
    ("measurement_id", "text"),
    ("agent_id", "text"),
    ("batch_id", "text"),
    ("measured_at", "float8"),
    ("received_at", "float8"),
    ("cc", "text"),
    ("asn", "int8"),
    ("network_name", "text"),
    ("url", "text"),
    ("domain", "text"),
    ("blocking", "text"),
    ("accessible", "int2"),
    ("failure", "text"),
    ("blockpage", "text"),
    ("dns_answers", "text"),
    ("http_status", "int4"),
    ("http_body_length", "int8"),
    ("control_ok", "int2"),
    ("failure_original", "text"),
    ("record", "bytea"),
)
_COLUMNS: Final = tuple(name for name, _ in _TYPED_COLUMNS)
_INSERT_SQL: Final = (
    f"INSERT INTO measurements ({', '.join(_COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"${i + 1}::{t}[]" for i, (_, t) in enumerate(_TYPED_COLUMNS))
    + ") ON CONFLICT (measurement_id, measured_at) DO NOTHING"
    " RETURNING cc, asn, domain, measured_at"
)
# The insert and the monitor's dirty series in one statement (one transaction): the series
# of every accepted measurement is recorded, or nothing is.
_INSERT_WITH_DIRTY_SQL: Final = (
    f"WITH ins AS ({_INSERT_SQL}),"
    " dirt AS (INSERT INTO monitor_dirty (cc, asn, domain, lo, hi)"
    " SELECT cc, asn, domain, MIN(measured_at), MAX(measured_at) FROM ins"
    " WHERE cc IS NOT NULL AND asn IS NOT NULL GROUP BY cc, asn, domain)"
    " SELECT COUNT(*) FROM ins"
)
# The monitor's series of a batch COPYed in (every row of it new): rows.dirty_rows' ranges.
_INSERT_DIRTY_SQL: Final = (
    "INSERT INTO monitor_dirty (cc, asn, domain, lo, hi)"
    " SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::float8[], $5::float8[])"
)
_DEADLOCK_RETRIES: Final = 3
# The monitor's advisory lock (held on a dedicated connection by the one leader).
_MONITOR_LOCK: Final = 0x66_77_6D_6F  # "fwmo"
# Retention runs in one collector at a time (another such lock: the migrations').
_PRUNE_LOCK: Final = 0x66_77_70_72  # "fwpr"
_PARTITION_RE: Final = re.compile(r"^measurements_(\d{4})_(\d{2})$")
MONTHS_AHEAD: Final = 2  # partitions made ahead of the current month


def postgres_sql(migration: Migration) -> list[str]:
    """A migration's statements in PostgreSQL's spelling.

    Measurement ids compare bytewise (COLLATE "C"), as in SQLite, so that MIN and MAX pick
    the same example ids whatever the database's locale.
    """
    out = []
    for stmt in migration.statements():
        stmt = re.sub(r"\bBLOB\b", "BYTEA", stmt)
        stmt = re.sub(r"\bmeasurement_id(\s+)TEXT\b", r'measurement_id\1TEXT COLLATE "C"', stmt)
        out.append(stmt)
    return out


class PostgresStore(Store):
    """Measurements, agents and credentials in PostgreSQL, through an asyncpg pool."""

    def __init__(self, dsn: str, *, min_size: int = 1, max_size: int = 8) -> None:
        self._dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._leader: asyncpg.Connection | None = None
        self._months: set[float] = set()  # month partitions known to exist (their starts)

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the PostgreSQL store is not open")
        return self._pool

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(
            self._dsn, min_size=self._min_size, max_size=self._max_size
        )
        await self.migrate()
        await self.maintain(time.time())

    async def maintain(self, now: float) -> None:
        """Make this month's partition and the next MONTHS_AHEAD months' ahead of need."""
        start = month_start(now)
        await self._ensure_months({add_months(start, k) for k in range(MONTHS_AHEAD + 1)})

    async def _ensure_months(self, months: set[float]) -> None:
        missing = months - self._months
        if missing:
            await self.pool.execute(
                "SELECT filterwatch_month_partition(m) FROM unnest($1::float8[]) AS m",
                sorted(missing),
            )
            self._months |= missing

    async def partitions(self) -> list[tuple[str, float, float]]:
        """The month partitions of measurements: (name, start, end), oldest first."""
        rows = await self.pool.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'measurements'::regclass"
        )
        out = []
        for (name,) in rows:
            match = _PARTITION_RE.match(name)
            if match:
                start = month_start(
                    datetime(int(match[1]), int(match[2]), 1, tzinfo=UTC).timestamp()
                )
                out.append((name, start, add_months(start, 1)))
        return sorted(out, key=lambda p: p[1])

    async def prune(self, before: float, batch: int = 10_000) -> PruneOutcome:
        """Drop the months wholly before ``before`` (detached concurrently: ingest is never
        locked out), then delete the older rows of the month it falls in, in batches."""
        dropped: list[str] = []
        deleted = 0
        async with self.pool.acquire() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _PRUNE_LOCK):
                return PruneOutcome(0, [], busy=True)
            try:
                for name, start, end in await self.partitions():
                    if end > before:
                        continue
                    rows = await conn.fetchval(f'SELECT count(*) FROM "{name}"')
                    # Outside a transaction: DETACH ... CONCURRENTLY waits for running
                    # queries instead of locking the parent table against them.
                    await conn.execute(
                        f'ALTER TABLE measurements DETACH PARTITION "{name}" CONCURRENTLY'
                    )
                    await conn.execute(f'DROP TABLE "{name}"')
                    self._months.discard(start)
                    dropped.append(name)
                    deleted += int(rows)
                while True:
                    status = await conn.execute(
                        "DELETE FROM measurements WHERE (measurement_id, measured_at) IN"
                        " (SELECT measurement_id, measured_at FROM measurements"
                        "  WHERE measured_at < $1 LIMIT $2)",
                        before,
                        batch,
                    )
                    n = int(status.rsplit(" ", 1)[-1])
                    deleted += n
                    if n < batch:
                        break
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", _PRUNE_LOCK)
        return PruneOutcome(deleted, dropped)

    async def migrate(self, migrations: list[Migration] | None = None) -> list[int]:
        """Apply pending migrations (default: all), each in one transaction; return the
        versions applied."""
        if migrations is None:
            migrations = await asyncio.to_thread(load_migrations)  # reads the .sql files
        applied: list[int] = []
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(_BOOKKEEPING)
            done = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for migration in migrations:
                if migration.version in done:
                    continue
                try:
                    async with conn.transaction():
                        if migration.dialect in (None, "postgres"):
                            for stmt in postgres_sql(migration):
                                await conn.execute(stmt)
                        await conn.execute(
                            "INSERT INTO schema_migrations (version, name, applied_at)"
                            " VALUES ($1, $2, $3)",
                            migration.version,
                            migration.name,
                            time.time(),
                        )
                except asyncpg.PostgresError as exc:
                    raise MigrationError(
                        f"migration {migration.version}_{migration.name} failed: {exc}"
                    ) from None
                applied.append(migration.version)
        return applied

    async def close(self) -> None:
        await self.release_monitor_lock()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    # --- measurements ---
    async def _insert_rows(self, make_rows: Callable[[], list[Row]]) -> InsertOutcome:
        rows = make_rows()
        if not rows:
            return InsertOutcome(accepted=0, duplicates=0)
        months = _months_of([r[3] for r in rows])
        await self._ensure_months(months)
        try:
            inserted = await self._insert(rows)
        except asyncpg.CheckViolationError:
            # A month dropped meanwhile (retention, maybe by another collector) and wanted
            # again by a late result: make it again and retry once.
            self._months.clear()
            await self._ensure_months(months)
            inserted = await self._insert(rows)
        return InsertOutcome(accepted=inserted, duplicates=len(rows) - inserted)

    async def _insert(self, rows: list[Row]) -> int:
        """Store ``rows`` once each and their monitor series, in one transaction committed
        before this returns; how many were new.

        Most batches are new: they are COPYed in (binary; about 70 % of the CPU of the
        ``unnest ... ON CONFLICT`` insert, in the server and in the collector alike: README,
        "Benchmarks: ingest"). A COPY stops at the first id already stored (a retry, another
        collector's copy of the same batch) and its transaction rolls back whole, nothing of
        it kept; the batch then goes through the ``ON CONFLICT DO NOTHING`` insert, which
        skips what is there.
        """
        if len({(r[0], r[3]) for r in rows}) == len(rows):
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    await conn.copy_records_to_table("measurements", records=rows, columns=_COLUMNS)
                    dirty = list(zip(*dirty_rows(rows), strict=True))
                    if dirty:
                        await conn.execute(_INSERT_DIRTY_SQL, *dirty)
                return len(rows)
            except (asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError):
                # A deadlock too: two COPYs of overlapping batches, each waiting for the
                # other's ids; PostgreSQL ends one, and ON CONFLICT settles it.
                pass
        columns = [list(col) for col in zip(*rows, strict=True)]
        attempts = 1
        while True:
            try:
                return int(await self.pool.fetchval(_INSERT_WITH_DIRTY_SQL, *columns))
            except asyncpg.DeadlockDetectedError:
                # The same ids in two orders at once: one transaction was chosen to end;
                # the other has committed by now, and this one skips what it stored.
                if attempts == _DEADLOCK_RETRIES:
                    raise
                attempts += 1

    async def count_measurements(self) -> int:
        return int(await self.pool.fetchval("SELECT COUNT(*) FROM measurements"))

    async def aggregate(
        self, filters: Filters, pseudonym_key: bytes, *, comparable_only: bool = False
    ) -> list[BucketCount]:
        whole_sql, whole_params = queries.aggregate_sql(filters, queries.POSTGRES)
        pseudonym = queries.Pseudonyms(pseudonym_key)
        out: list[BucketCount] = []
        async with self.pool.acquire() as conn, conn.transaction(readonly=True):
            # Each series' statement planned for its own values: a generic plan (what a
            # prepared statement falls back to after five runs) scans every month partition
            # with parallel workers, about 0.7 s a series on 10 M rows instead of
            # milliseconds through the index.
            await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
            if comparable_only:
                sql, params = queries.survey_sql(filters, queries.POSTGRES)
                plans = queries.plan_series(await conn.fetch(sql, *params), filters.bucket_s)
            else:
                sql, params = queries.keys_sql(filters, queries.POSTGRES)
                plans = [queries.whole_series(*r) for r in await conn.fetch(sql, *params)]
            whole = await conn.prepare(whole_sql)
            for plan in plans:
                if plan.whole:
                    key = (plan.cc, plan.asn, plan.domain)
                    rows = await whole.fetch(*whole_params[:2], *key, *whole_params[5:])
                    out.extend(queries.fold_series(*key, rows, pseudonym))
            rest = [plan for plan in plans if not plan.whole]
            if rest:
                sql, params = queries.last_buckets_postgres_sql(filters)
                floor = filters.since or 0.0  # as last_bucket_sql bounds it
                params[2:6] = (
                    [p.cc for p in rest],
                    [p.asn for p in rest],
                    [p.domain for p in rest],
                    [max(p.last, floor) for p in rest],
                )
                rows = await conn.fetch(sql, *params)
                for i, group in groupby(rows, key=lambda r: r[0]):
                    out.extend(
                        queries.fold_last(rest[i - 1], (tuple(r)[1:] for r in group), pseudonym)
                    )
                # In the store's order (the series counted whole came first).
                out.sort(key=lambda b: (b.cc, b.asn, b.domain, b.bucket_start))
        return out

    async def export_rows(
        self, filters: Filters, pseudonym_key: bytes, chunk: int = 5000
    ) -> AsyncIterator[list[dict[str, object]]]:
        sql, params = queries.export_sql(filters, queries.POSTGRES)
        pseudonym = queries.Pseudonyms(pseudonym_key)
        async with self.pool.acquire() as conn, conn.transaction(readonly=True):
            cursor = await conn.cursor(sql, *params)
            while True:
                batch = await cursor.fetch(chunk)
                if not batch:
                    return
                yield [queries.export_row(tuple(r), pseudonym) for r in batch]

    async def verdicts(self, filters: Filters) -> list[StoredVerdict]:
        sql, params = queries.verdicts_sql(filters, queries.POSTGRES)
        return [queries.stored_verdict(tuple(r)) for r in await self.pool.fetch(sql, *params)]

    # --- enrollment and credentials ---
    async def add_enroll_code(
        self, code_hash: str, cc: str | None, uses: int, expires_at: float | None
    ) -> None:
        await self.pool.execute(
            "INSERT INTO enroll_codes (code_hash, cc, uses_left, expires_at, created_at)"
            " VALUES ($1, $2, $3, $4, $5)",
            code_hash,
            cc,
            uses,
            expires_at,
            time.time(),
        )

    async def redeem_enroll_code(
        self, code_hash: str, now: float, agent_id: str, token_hash: str
    ) -> AgentRecord | None:
        async with self.pool.acquire() as conn, conn.transaction():
            # The UPDATE takes the row lock, so two collectors cannot both spend the last use.
            row = await conn.fetchrow(
                "UPDATE enroll_codes SET uses_left = uses_left - 1"
                " WHERE code_hash = $1 AND uses_left > 0"
                " AND (expires_at IS NULL OR expires_at > $2)"
                " RETURNING cc",
                code_hash,
                now,
            )
            if row is None:
                return None
            await conn.execute(
                "INSERT INTO agents (agent_id, token_hash, cc, created_at) VALUES ($1, $2, $3, $4)",
                agent_id,
                token_hash,
                row["cc"],
                now,
            )
        return AgentRecord(agent_id=agent_id, cc=row["cc"], created_at=now, revoked=False)

    async def agent_by_token(self, token_hash: str) -> AgentRecord | None:
        row = await self.pool.fetchrow(
            "SELECT agent_id, cc, created_at, revoked_at FROM agents WHERE token_hash = $1",
            token_hash,
        )
        if row is None:
            return None
        return AgentRecord(
            agent_id=row["agent_id"],
            cc=row["cc"],
            created_at=row["created_at"],
            revoked=row["revoked_at"] is not None,
        )

    async def revoke_agent(self, agent_id: str) -> bool:
        """Revoke ``agent_id``; False only when no such agent exists."""
        async with self.pool.acquire() as conn:
            await conn.execute(
                "UPDATE agents SET revoked_at = $2 WHERE agent_id = $1 AND revoked_at IS NULL",
                agent_id,
                time.time(),
            )
            found: Any = await conn.fetchval("SELECT 1 FROM agents WHERE agent_id = $1", agent_id)
        return found is not None

    async def add_analyst_token(self, token_hash: str) -> None:
        await self.pool.execute(
            "INSERT INTO analyst_tokens (token_hash, created_at) VALUES ($1, $2)"
            " ON CONFLICT (token_hash) DO NOTHING",
            token_hash,
            time.time(),
        )

    async def analyst_token_exists(self, token_hash: str) -> bool:
        found: Any = await self.pool.fetchval(
            "SELECT 1 FROM analyst_tokens WHERE token_hash = $1", token_hash
        )
        return found is not None

    async def secret(self, name: str, length: int = 32) -> bytes:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO collector_secrets (name, value, created_at) VALUES ($1, $2, $3)"
                " ON CONFLICT (name) DO NOTHING",
                name,
                secrets.token_bytes(length),
                time.time(),
            )
            value: bytes = await conn.fetchval(
                "SELECT value FROM collector_secrets WHERE name = $1", name
            )
        return bytes(value)

    # --- the monitor ---

    async def take_dirty(self) -> list[records.DirtySeries]:
        rows = await self.pool.fetch(records.TAKE_DIRTY)
        return [records.DirtySeries(r[0], int(r[1]), r[2], float(r[3]), float(r[4])) for r in rows]

    async def aggregate_ranges(
        self, ranges: Sequence[records.DirtySeries], bucket_s: float, pseudonym_key: bytes
    ) -> list[BucketCount]:
        pseudonym = queries.Pseudonyms(pseudonym_key)
        out: list[BucketCount] = []
        async with self.pool.acquire() as conn:
            for cc, asn, since, until, domains in queries.range_groups(ranges, bucket_s):
                sql = queries.ranges_group_sql(len(domains), bucket_s, queries.POSTGRES)
                rows = await conn.fetch(sql, cc, asn, since, until, *domains)
                out.extend(queries.fold_group(cc, asn, rows, pseudonym))
        return out

    async def live_events(self, ended_after: float) -> list[records.StoredEvent]:
        rows = await self.pool.fetch(numbered(records.LIVE_EVENTS), ended_after)
        return [records.event_from_row(tuple(r)) for r in rows]

    async def save_changes(
        self, changes: Sequence[records.EventChange], now: float
    ) -> list[records.StoredEvent]:
        if not changes:
            return []
        async with self.pool.acquire() as conn, conn.transaction():
            last = int(await conn.fetchval(records.MAX_SEQ))
            plan = records.plan_write(changes, last + 1, now)
            for sql, rows in (
                (records.INSERT_EVENT, plan.events_new),
                (records.UPDATE_EVENT, plan.events_updated),
                (records.INSERT_REVISION, plan.revisions),
                (records.INSERT_DELIVERY, plan.deliveries),
            ):
                if rows:
                    await conn.executemany(numbered(sql), rows)
        return plan.saved

    async def list_events(self, query: records.EventQuery) -> list[records.StoredEvent]:
        sql, params = records.list_events_sql(query)
        rows = await self.pool.fetch(numbered(sql), *params)
        return [records.event_from_row(tuple(r)) for r in rows]

    async def get_event(
        self, event_id: str
    ) -> tuple[records.StoredEvent, list[records.Revision]] | None:
        async with self.pool.acquire() as conn, conn.transaction(readonly=True):
            row = await conn.fetchrow(numbered(records.GET_EVENT), event_id)
            if row is None:
                return None
            revisions = await conn.fetch(numbered(records.EVENT_REVISIONS), event_id)
        return records.event_from_row(tuple(row)), [
            records.revision_from_row(tuple(r)) for r in revisions
        ]

    async def revisions_after(self, seq: int, limit: int = 500) -> list[records.Revision]:
        rows = await self.pool.fetch(numbered(records.REVISIONS_AFTER), seq, limit)
        return [records.revision_from_row(tuple(r)) for r in rows]

    async def latest_revisions(self, cc: str | None, limit: int) -> list[records.Revision]:
        sql = numbered(records.LATEST_REVISIONS).replace("$1 IS NULL", "$1::text IS NULL")
        rows = await self.pool.fetch(sql, cc, cc, limit)
        return [records.revision_from_row(tuple(r)) for r in rows]

    async def last_seq(self) -> int:
        return int(await self.pool.fetchval(records.MAX_SEQ))

    async def claim_deliveries(
        self, now: float, limit: int, lease_s: float
    ) -> list[records.Delivery]:
        # FOR UPDATE SKIP LOCKED: collectors claiming at once each get other rows; the
        # lease (next_attempt_at moved on) keeps them claimed after this commits.
        sql = numbered(records.DUE_DELIVERIES) + " FOR UPDATE OF o SKIP LOCKED"
        async with self.pool.acquire() as conn, conn.transaction():
            due = await conn.fetch(sql, now, limit)
            if due:
                await conn.executemany(
                    numbered(records.LEASE_DELIVERY), [(now + lease_s, r[0]) for r in due]
                )
        return [records.delivery_from_row(tuple(r)) for r in due]

    async def finish_delivery(
        self, delivery_id: str, state: str, next_attempt_at: float, error: str | None, now: float
    ) -> None:
        finished = None if state == "pending" else now
        await self.pool.execute(
            numbered(records.FINISH_DELIVERY), state, next_attempt_at, error, finished, delivery_id
        )

    async def next_delivery_due(self) -> float | None:
        value = await self.pool.fetchval(records.NEXT_DUE)
        return None if value is None else float(value)

    async def outbox_summary(self) -> list[records.OutboxSummary]:
        out = []
        async with self.pool.acquire() as conn:
            for sub, pending, delivered, failed, oldest, last in await conn.fetch(
                records.OUTBOX_SUMMARY
            ):
                error = await conn.fetchval(numbered(records.LAST_ERROR), sub)
                out.append(
                    records.OutboxSummary(sub, pending, delivered, failed, oldest, last, error)
                )
        return out

    async def try_monitor_lock(self) -> bool:
        """pg_try_advisory_lock on a connection of its own, outside the pool: the lock lives
        as long as that session, and PostgreSQL frees it when the leader's process dies."""
        if self._leader is not None:
            try:
                await self._leader.fetchval("SELECT 1")
                return True
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
                await self.release_monitor_lock()
                return False
        conn = await asyncpg.connect(self._dsn)
        got = False
        try:
            got = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", _MONITOR_LOCK))
        finally:
            if not got:
                conn.terminate()
        if not got:
            return False
        self._leader = conn
        return True

    async def release_monitor_lock(self) -> None:
        conn, self._leader = self._leader, None
        if conn is not None:
            conn.terminate()


def _months_of(times: Sequence[float]) -> set[float]:
    # By day first: a batch spans a day or two, so only those few go through datetime.
    return {month_start(day * 86400.0) for day in {int(t // 86400) for t in times}}


def month_start(t: float) -> float:
    """The start (UTC epoch seconds) of the calendar month (UTC) that contains ``t``."""
    d = datetime.fromtimestamp(t, UTC)
    return datetime(d.year, d.month, 1, tzinfo=UTC).timestamp()


def add_months(start: float, months: int) -> float:
    d = datetime.fromtimestamp(start, UTC)
    y, m = divmod(d.month - 1 + months, 12)
    return datetime(d.year + y, m + 1, 1, tzinfo=UTC).timestamp()
