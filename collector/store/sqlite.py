"""The SQLite store: WAL, one writer thread, a pool of reader threads.

SQLite allows one writer at a time, so every write goes through a single thread with its
own connection; reads run on a small pool of threads with a connection each, and WAL lets
them proceed while the writer commits. Nothing here ever runs sqlite on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import secrets
import sqlite3
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final, TypeVar

from collector.analysis.model import BucketCount
from collector.filters import Filters
from collector.store import queries, records
from collector.store.base import AgentRecord, InsertOutcome, PruneOutcome, Store, StoredVerdict
from collector.store.migrate import migrate_sqlite
from collector.store.rows import Row, dirty_rows

T = TypeVar("T")
X = TypeVar("X")

_READERS: Final = 4
_BUSY_TIMEOUT_MS: Final = 10_000

_INSERT_SQL: Final = (
    "INSERT INTO measurements (measurement_id, agent_id, batch_id, measured_at, received_at,"
    " cc, asn, network_name, url, domain, blocking, accessible, failure, blockpage,"
    " dns_answers, http_status, http_body_length, control_ok, failure_original, record)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (measurement_id) DO NOTHING"
)


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode with the pragmas every connection needs."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")
    if readonly:
        conn.execute("PRAGMA query_only = ON")
    else:
        # WAL: readers never wait for the writer. synchronous=FULL: a batch that was
        # acknowledged survives a power cut (the agent has already dropped it from its spool).
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        # Three indexes besides the primary key's take every insert: keep more of them in
        # memory (ids are time-ordered, but the analysis index is by series, not time).
        conn.execute("PRAGMA cache_size = -32768")
        # Checkpoint every 10,000 pages (~40 MB of WAL) rather than SQLite's 1,000: the
        # writer runs each checkpoint itself, and at ingest rates the default made it
        # checkpoint every few batches (bench/ingest: about 1.25x the insert rate).
        conn.execute("PRAGMA wal_autocheckpoint = 10000")
        conn.execute("PRAGMA journal_size_limit = 67108864")
    return conn


@dataclass(slots=True)
class _Job:
    future: Future[Any]
    fn: Callable[[sqlite3.Connection], Any] | None = None
    make_rows: Callable[[], Sequence[Row]] | None = None  # an insert, when set


_STOP: Final = None
_GROUP_JOBS: Final = 16  # inserts sharing one transaction, at most


class _Writer:
    """The one thread that writes, with its own connection.

    Inserts that are waiting together share one transaction (group commit): with
    synchronous=FULL every commit is an fsync, and concurrent batches pay for one. Each
    insert still gets its own accepted/duplicate counts, and none is answered before the
    transaction holding it has committed.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._started: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, name="sqlite-writer", daemon=True)

    async def start(self) -> None:
        self._thread.start()
        await asyncio.wrap_future(self._started)

    async def stop(self) -> None:
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> Future[T]:
        future: Future[T] = Future()
        self._queue.put(_Job(future, fn=fn))
        return future

    def submit_insert(self, make_rows: Callable[[], Sequence[Row]]) -> Future[InsertOutcome]:
        future: Future[InsertOutcome] = Future()
        self._queue.put(_Job(future, make_rows=make_rows))
        return future

    def _run(self) -> None:
        try:
            conn = _open_for_writing(self.path)
        except Exception as exc:
            self._started.set_exception(exc)
            return
        self._started.set_result(None)
        pending: deque[_Job | None] = deque()
        try:
            while True:
                job = pending.popleft() if pending else self._queue.get()
                if job is None:
                    break
                # A caller cancelled while its job waited: skip it (and never set a result
                # on its cancelled future, which would raise here and stop the writer).
                if not job.future.set_running_or_notify_cancel():
                    continue
                if job.make_rows is None:
                    _settle(job, job.fn, conn)
                    continue
                group = [job]
                while len(group) < _GROUP_JOBS:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None or more.make_rows is None:
                        pending.append(more)
                        break
                    if more.future.set_running_or_notify_cancel():
                        group.append(more)
                _insert_group(conn, group)
        finally:
            conn.close()


def _settle(
    job: _Job, fn: Callable[[sqlite3.Connection], Any] | None, conn: sqlite3.Connection
) -> None:
    assert fn is not None
    try:
        result = fn(conn)
    except Exception as exc:
        job.future.set_exception(exc)
    else:
        job.future.set_result(result)


def _insert_group(conn: sqlite3.Connection, group: list[_Job]) -> None:
    built: list[tuple[_Job, Sequence[Row]]] = []
    for job in group:
        assert job.make_rows is not None
        try:
            built.append((job, job.make_rows()))
        except Exception as exc:
            job.future.set_exception(exc)
    if not built:
        return
    try:
        with _transaction(conn):
            counts = [
                conn.executemany(_INSERT_SQL, rows).rowcount if rows else 0 for _, rows in built
            ]
            # The monitor's dirty series commit with the measurements: none is ever missed.
            conn.executemany(
                records.INSERT_DIRTY, [d for _, rows in built for d in dirty_rows(rows)]
            )
    except Exception as exc:
        if len(built) == 1:
            built[0][0].future.set_exception(exc)
            return
        for job, rows in built:  # find the culprit: each insert on its own
            _insert_group(conn, [_Job(job.future, make_rows=_constant(rows))])
        return
    for (job, rows), accepted in zip(built, counts, strict=True):
        job.future.set_result(InsertOutcome(accepted=accepted, duplicates=len(rows) - accepted))


def _constant(rows: Sequence[Row]) -> Callable[[], Sequence[Row]]:
    def make() -> Sequence[Row]:
        return rows

    return make


def _open_for_writing(path: Path) -> sqlite3.Connection:
    if not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    conn = connect(path)
    try:
        migrate_sqlite(conn)
    except Exception:
        conn.close()
        raise
    return conn


class SqliteStore(Store):
    """The default store: one SQLite file in WAL mode.

    ``readonly``: reader threads only, on a database another process writes (the lab reads
    its collector's this way): no writer, no migrations, and every write refused."""

    def __init__(self, path: Path | str, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._writer: _Writer | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._monitor_lock: Any = None

    # --- threads and connections ---

    async def open(self) -> None:
        if self.readonly:
            if not await asyncio.to_thread(self.path.is_file):
                raise FileNotFoundError(f"no SQLite database at {self.path}")
        else:
            writer = _Writer(self.path)
            await writer.start()
            self._writer = writer
        self._readers = ThreadPoolExecutor(_READERS, thread_name_prefix="sqlite-reader")

    async def close(self) -> None:
        await self.release_monitor_lock()
        writer, readers = self._writer, self._readers
        self._writer = self._readers = None
        if writer is not None:
            await writer.stop()
        if readers is not None:
            await asyncio.to_thread(readers.shutdown)
        with self._lock:
            conns, self._reader_conns = self._reader_conns, []
        for conn in conns:
            conn.close()

    def _live_writer(self) -> _Writer:
        if self._writer is None:
            raise RuntimeError(
                "the store is read-only" if self.readonly else "the store is not open"
            )
        return self._writer

    async def run_write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the writer thread; ``fn`` manages its own transaction."""
        return await asyncio.wrap_future(self._live_writer().submit(fn))

    def _reader_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, readonly=True)
            self._local.conn = conn
            with self._lock:
                self._reader_conns.append(conn)
        return conn

    def _in_reader(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return fn(self._reader_conn())

    async def run_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on a reader thread and return its result."""
        if self._readers is None:
            raise RuntimeError("the store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._readers, self._in_reader, fn)

    async def stream_read(
        self, fn: Callable[[sqlite3.Connection], Iterator[X]]
    ) -> AsyncIterator[X]:
        """The items of ``fn(connection)``, each produced on a reader thread.

        The stream has its own connection, so a slow consumer holds no pooled thread
        between items, and the read stays one consistent snapshot.
        """
        readers = self._readers
        if readers is None:
            raise RuntimeError("the store is not open")
        loop = asyncio.get_running_loop()
        conn = await loop.run_in_executor(readers, partial(connect, self.path, readonly=True))
        done = object()
        iterator: Iterator[X] | None = None
        try:
            await loop.run_in_executor(readers, conn.execute, "BEGIN")
            iterator = await loop.run_in_executor(readers, lambda: iter(fn(conn)))
            while True:
                item = await loop.run_in_executor(readers, next, iterator, done)
                if item is done:
                    break
                yield item  # type: ignore[misc]
        finally:
            # A stream left early (a client gone, an encoder failing) closes its generator
            # while the connection is still open, not later from the garbage collector.
            close = getattr(iterator, "close", None)
            if close is not None:
                await loop.run_in_executor(readers, close)
            await asyncio.to_thread(conn.close)

    # --- measurements ---

    async def _insert_rows(self, make_rows: Callable[[], list[Row]]) -> InsertOutcome:
        return await asyncio.wrap_future(self._live_writer().submit_insert(make_rows))

    async def prune(self, before: float, batch: int = 10_000) -> PruneOutcome:
        """Delete what was measured before ``before``, ``batch`` rows per transaction on
        the writer thread: ingest batches queue between them, never behind the whole prune."""

        def delete_some(conn: sqlite3.Connection) -> int:
            with _transaction(conn):
                cur = conn.execute(
                    "DELETE FROM measurements WHERE rowid IN (SELECT rowid FROM measurements"
                    " WHERE measured_at < ? LIMIT ?)",
                    (before, batch),
                )
                return cur.rowcount

        deleted = 0
        while True:
            n = await self.run_write(delete_some)
            deleted += n
            if n < batch:
                return PruneOutcome(deleted, [])

    async def backup(self, out: Path) -> None:
        """A consistent copy of the database in ``out``, made with SQLite's online backup
        API while the collector keeps ingesting. One step, in one read snapshot: in WAL mode
        that blocks no writer, where a copy in steps would start over after every commit."""

        def copy() -> None:
            tmp = out.with_name(out.name + ".partial")
            tmp.unlink(missing_ok=True)
            source = connect(self.path, readonly=True)
            try:
                target = sqlite3.connect(tmp)
                try:
                    source.backup(target)
                    target.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
                finally:
                    target.close()
            finally:
                source.close()
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, out)

        await asyncio.to_thread(copy)

    async def insert_rows(self, rows: Sequence[Row]) -> InsertOutcome:
        """Insert rows already built by ``measurement_row``, committing before returning."""
        return await asyncio.wrap_future(self._live_writer().submit_insert(lambda: rows))

    async def count_measurements(self) -> int:
        return await self.run_read(
            lambda c: int(c.execute("SELECT COUNT(*) FROM measurements").fetchone()[0])
        )

    async def aggregate(
        self, filters: Filters, pseudonym_key: bytes, *, comparable_only: bool = False
    ) -> list[BucketCount]:
        return await self.run_read(
            lambda c: queries.aggregate_sqlite(
                c, filters, pseudonym_key, comparable_only=comparable_only
            )
        )

    async def export_rows(
        self, filters: Filters, pseudonym_key: bytes, chunk: int = 5000
    ) -> AsyncIterator[list[dict[str, object]]]:
        def chunks(conn: sqlite3.Connection) -> Iterator[list[dict[str, object]]]:
            return queries.export_chunks_sqlite(conn, filters, pseudonym_key, chunk)

        async for rows in self.stream_read(chunks):
            yield rows

    async def verdicts(self, filters: Filters) -> list[StoredVerdict]:
        sql, params = queries.verdicts_sql(filters, queries.SQLITE)
        return await self.run_read(
            lambda c: [queries.stored_verdict(v) for v in c.execute(sql, params)]
        )

    # --- enrollment and credentials ---

    async def add_enroll_code(
        self, code_hash: str, cc: str | None, uses: int, expires_at: float | None
    ) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO enroll_codes (code_hash, cc, uses_left, expires_at, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (code_hash, cc, uses, expires_at, time.time()),
            )

        await self.run_write(write)

    async def redeem_enroll_code(
        self, code_hash: str, now: float, agent_id: str, token_hash: str
    ) -> AgentRecord | None:
        def write(conn: sqlite3.Connection) -> AgentRecord | None:
            with _transaction(conn):
                row = conn.execute(
                    "SELECT cc, uses_left, expires_at FROM enroll_codes WHERE code_hash = ?",
                    (code_hash,),
                ).fetchone()
                if row is None:
                    return None
                cc, uses_left, expires_at = row
                if uses_left <= 0 or (expires_at is not None and expires_at <= now):
                    return None
                conn.execute(
                    "UPDATE enroll_codes SET uses_left = uses_left - 1 WHERE code_hash = ?",
                    (code_hash,),
                )
                conn.execute(
                    "INSERT INTO agents (agent_id, token_hash, cc, created_at, revoked_at)"
                    " VALUES (?, ?, ?, ?, NULL)",
                    (agent_id, token_hash, cc, now),
                )
            return AgentRecord(agent_id=agent_id, cc=cc, created_at=now, revoked=False)

        return await self.run_write(write)

    async def agent_by_token(self, token_hash: str) -> AgentRecord | None:
        def read(conn: sqlite3.Connection) -> AgentRecord | None:
            row = conn.execute(
                "SELECT agent_id, cc, created_at, revoked_at FROM agents WHERE token_hash = ?",
                (token_hash,),
            ).fetchone()
            if row is None:
                return None
            return AgentRecord(
                agent_id=row[0], cc=row[1], created_at=row[2], revoked=row[3] is not None
            )

        return await self.run_read(read)

    async def revoke_agent(self, agent_id: str) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE agents SET revoked_at = ? WHERE agent_id = ? AND revoked_at IS NULL",
                (time.time(), agent_id),
            )
            if cur.rowcount:
                return True
            return (
                conn.execute("SELECT 1 FROM agents WHERE agent_id = ?", (agent_id,)).fetchone()
                is not None
            )

        return await self.run_write(write)

    async def add_analyst_token(self, token_hash: str) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO analyst_tokens (token_hash, created_at) VALUES (?, ?)",
                (token_hash, time.time()),
            )

        await self.run_write(write)

    async def analyst_token_exists(self, token_hash: str) -> bool:
        return await self.run_read(
            lambda c: (
                c.execute(
                    "SELECT 1 FROM analyst_tokens WHERE token_hash = ?", (token_hash,)
                ).fetchone()
                is not None
            )
        )

    async def secret(self, name: str, length: int = 32) -> bytes:
        def write(conn: sqlite3.Connection) -> bytes:
            with _transaction(conn):
                conn.execute(
                    "INSERT INTO collector_secrets (name, value, created_at) VALUES (?, ?, ?)"
                    " ON CONFLICT (name) DO NOTHING",
                    (name, secrets.token_bytes(length), time.time()),
                )
                row = conn.execute(
                    "SELECT value FROM collector_secrets WHERE name = ?", (name,)
                ).fetchone()
            return bytes(row[0])

        return await self.run_write(write)

    # --- the monitor ---

    async def take_dirty(self) -> list[records.DirtySeries]:
        def write(conn: sqlite3.Connection) -> list[records.DirtySeries]:
            with _transaction(conn):
                found = conn.execute(records.TAKE_DIRTY).fetchall()
            return [records.DirtySeries(cc, int(asn), d, lo, hi) for cc, asn, d, lo, hi in found]

        return await self.run_write(write)

    async def aggregate_ranges(
        self, ranges: Sequence[records.DirtySeries], bucket_s: float, pseudonym_key: bytes
    ) -> list[BucketCount]:
        return await self.run_read(
            lambda c: queries.aggregate_ranges_sqlite(c, ranges, bucket_s, pseudonym_key)
        )

    async def live_events(self, ended_after: float) -> list[records.StoredEvent]:
        return await self.run_read(
            lambda c: [
                records.event_from_row(r)
                for r in c.execute(records.LIVE_EVENTS, (ended_after,)).fetchall()
            ]
        )

    async def save_changes(
        self, changes: Sequence[records.EventChange], now: float
    ) -> list[records.StoredEvent]:
        def write(conn: sqlite3.Connection) -> list[records.StoredEvent]:
            with _transaction(conn):
                last = int(conn.execute(records.MAX_SEQ).fetchone()[0])
                plan = records.plan_write(changes, last + 1, now)
                conn.executemany(records.INSERT_EVENT, plan.events_new)
                conn.executemany(records.UPDATE_EVENT, plan.events_updated)
                conn.executemany(records.INSERT_REVISION, plan.revisions)
                conn.executemany(records.INSERT_DELIVERY, plan.deliveries)
            return plan.saved

        if not changes:
            return []
        return await self.run_write(write)

    async def list_events(self, query: records.EventQuery) -> list[records.StoredEvent]:
        sql, params = records.list_events_sql(query)
        return await self.run_read(
            lambda c: [records.event_from_row(r) for r in c.execute(sql, params).fetchall()]
        )

    async def get_event(
        self, event_id: str
    ) -> tuple[records.StoredEvent, list[records.Revision]] | None:
        def read(
            conn: sqlite3.Connection,
        ) -> tuple[records.StoredEvent, list[records.Revision]] | None:
            conn.execute("BEGIN")
            try:
                row = conn.execute(records.GET_EVENT, (event_id,)).fetchone()
                if row is None:
                    return None
                revisions = conn.execute(records.EVENT_REVISIONS, (event_id,)).fetchall()
            finally:
                conn.execute("COMMIT")
            return records.event_from_row(row), [records.revision_from_row(r) for r in revisions]

        return await self.run_read(read)

    async def revisions_after(self, seq: int, limit: int = 500) -> list[records.Revision]:
        return await self.run_read(
            lambda c: [
                records.revision_from_row(r)
                for r in c.execute(records.REVISIONS_AFTER, (seq, limit)).fetchall()
            ]
        )

    async def latest_revisions(self, cc: str | None, limit: int) -> list[records.Revision]:
        return await self.run_read(
            lambda c: [
                records.revision_from_row(r)
                for r in c.execute(records.LATEST_REVISIONS, (cc, cc, limit)).fetchall()
            ]
        )

    async def last_seq(self) -> int:
        return await self.run_read(lambda c: int(c.execute(records.MAX_SEQ).fetchone()[0]))

    async def claim_deliveries(
        self, now: float, limit: int, lease_s: float
    ) -> list[records.Delivery]:
        def write(conn: sqlite3.Connection) -> list[records.Delivery]:
            with _transaction(conn):  # BEGIN IMMEDIATE: the write lock is the claim
                due = conn.execute(records.DUE_DELIVERIES, (now, limit)).fetchall()
                conn.executemany(records.LEASE_DELIVERY, [(now + lease_s, r[0]) for r in due])
            return [records.delivery_from_row(r) for r in due]

        return await self.run_write(write)

    async def finish_delivery(
        self, delivery_id: str, state: str, next_attempt_at: float, error: str | None, now: float
    ) -> None:
        finished = None if state == "pending" else now

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                records.FINISH_DELIVERY, (state, next_attempt_at, error, finished, delivery_id)
            )

        await self.run_write(write)

    async def next_delivery_due(self) -> float | None:
        def read(conn: sqlite3.Connection) -> float | None:
            value = conn.execute(records.NEXT_DUE).fetchone()[0]
            return None if value is None else float(value)

        return await self.run_read(read)

    async def outbox_summary(self) -> list[records.OutboxSummary]:
        def read(conn: sqlite3.Connection) -> list[records.OutboxSummary]:
            out = []
            for sub, pending, delivered, failed, oldest, last in conn.execute(
                records.OUTBOX_SUMMARY
            ).fetchall():
                error = conn.execute(records.LAST_ERROR, (sub,)).fetchone()
                out.append(
                    records.OutboxSummary(
                        sub, pending, delivered, failed, oldest, last, error[0] if error else None
                    )
                )
            return out

        return await self.run_read(read)

    async def try_monitor_lock(self) -> bool:
        """An exclusive flock on ``<database>.monitor-lock``: one monitor per SQLite file,
        released by the kernel when the process dies, however it dies."""
        if self._monitor_lock is not None:
            return True

        def lock() -> Any:
            import fcntl

            handle = open(f"{self.path}.monitor-lock", "a+b")  # noqa: SIM115
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                return None
            return handle

        self._monitor_lock = await asyncio.to_thread(lock)
        return self._monitor_lock is not None

    async def release_monitor_lock(self) -> None:
        handle, self._monitor_lock = self._monitor_lock, None
        if handle is not None:
            handle.close()


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back if the body raises."""
    conn.execute("BEGIN IMMEDIATE")
    committed = False
    try:
        yield
        conn.execute("COMMIT")
        committed = True
    finally:
        if not committed:
            conn.execute("ROLLBACK")
