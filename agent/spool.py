"""The durable spool: every result is on disk, fsynced, before it counts as measured.

Choice: SQLite in WAL mode with ``synchronous=FULL``, rather than append-only segment files
of length-prefixed, CRC-checked msgpack records.

- Acknowledgements arrive out of order and in pieces: a batch's results are deleted when a
  2xx answer covers them while later results keep arriving. With segment files that needs
  an acknowledgement log beside the data and compaction of half-acknowledged segments;
  SQLite deletes rows by key and reuses the pages.
- The disk cap ("oldest dropped first") is a delete of the lowest sequence numbers, and the
  running total of bytes is one indexed column, kept exact across crashes by the same
  transactions that change it.
- Crash safety is SQLite's: a torn WAL tail fails its checksums and is ignored at the next
  open, exactly what we would otherwise write by hand with CRC32s.
- ``sqlite3`` ships with Python: no dependency, and ``filterwatch agent status`` can read
  the spool of a running agent safely.

The cost is an fsync per commit. Group commit pays it once for all results that arrive
while the previous commit runs: ``put`` queues the record and submits a commit job to the
spool's single writer thread; the job commits everything queued so far, so each caller
returns only after its own record is durable, and a burst of measurements shares one fsync.
``bench/agent/spool_bench.py`` measures it (figures in the README).

All SQLite calls run in that one thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog

from shared.schema import Measurement, encode_measurement

log = structlog.get_logger("agent.spool")
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,  -- arrival order: the cap drops the lowest first
    id     TEXT NOT NULL,
    size   INTEGER NOT NULL,
    record BLOB NOT NULL                       -- the measurement's wire map, msgpack
);
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class SpooledResult:
    seq: int
    id: str
    record: bytes


@dataclass(frozen=True, slots=True)
class SpoolStats:
    results: int
    bytes: int  # bytes of spooled records (SQLite's own overhead comes on top)
    dropped: int  # results dropped by the disk cap since the spool was created
    rejected: int  # results the collector acknowledged as invalid


class Spool:
    """Results waiting for the collector, in a SQLite file.

    ``max_bytes`` caps the bytes of spooled records. Policy when a new result would pass the
    cap: the OLDEST results are dropped first (the newest say most about the network as it
    is now), each drop is counted in ``dropped`` and logged.
    """

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        self._pending: collections.deque[tuple[str, bytes]] = collections.deque()
        self._conn: sqlite3.Connection | None = None
        self._results = 0
        self._bytes = 0
        # Guards the counters above, read by stats() from the event loop's thread.
        self._lock = threading.Lock()
        self.changed = asyncio.Event()  # set when a result is added; the uploader waits on it

    # --- life cycle ------------------------------------------------------------------------

    async def open(self) -> None:
        await self._run(self._open_sync)

    def _open_sync(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(_SCHEMA)
        count, total = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM results"
        ).fetchone()
        self._conn = conn
        with self._lock:
            self._results, self._bytes = int(count), int(total)
        if count:
            self.changed.set()

    async def close(self) -> None:
        await self._run(self._close_sync)
        await asyncio.to_thread(self._executor.shutdown)  # joins the writer thread

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._commit_pending()  # a put cancelled before its job ran is still kept
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
            self._conn = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # --- writing ---------------------------------------------------------------------------

    async def put(self, measurement: Measurement) -> None:
        """Store one result durably; returns once it is fsynced to disk."""
        record = encode_measurement(measurement)
        self._pending.append((measurement.id, record))
        await self._run(self._commit_pending)
        self.changed.set()

    def _commit_pending(self) -> None:
        # Runs in the writer thread. Earlier jobs may have committed our record already;
        # the executor runs jobs in order, so when this one returns it is durable either way.
        items: list[tuple[str, bytes]] = []
        while self._pending:
            items.append(self._pending.popleft())
        if not items:
            return
        conn = self._connection()
        added = sum(len(rec) for _, rec in items)
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT INTO results (id, size, record) VALUES (?, ?, ?)",
                [(mid, len(rec), rec) for mid, rec in items],
            )
            dropped, freed = self._enforce_cap(conn, self._bytes + added)
            conn.execute("COMMIT")
        except Exception:
            conn.execute("ROLLBACK")
            raise
        with self._lock:
            self._results += len(items) - dropped
            self._bytes += added - freed
        if dropped:
            log.warning(
                "spool_full_dropped_oldest", dropped=dropped, bytes=freed, cap=self.max_bytes
            )

    def _enforce_cap(self, conn: sqlite3.Connection, total: int) -> tuple[int, int]:
        if total <= self.max_bytes:
            return 0, 0
        excess = total - self.max_bytes
        dropped = freed = 0
        # Oldest first; only as many rows as it takes to get back under the cap.
        for seq, size in conn.execute("SELECT seq, size FROM results ORDER BY seq").fetchall():
            if freed >= excess:
                break
            conn.execute("DELETE FROM results WHERE seq = ?", (seq,))
            dropped += 1
            freed += size
        conn.execute(
            "INSERT INTO counters (name, value) VALUES ('dropped', ?) "
            "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            (dropped,),
        )
        return dropped, freed

    # --- reading and acknowledging -----------------------------------------------------------

    async def peek(self, max_results: int, max_bytes: int) -> list[SpooledResult]:
        """The oldest results, at most ``max_results`` of them and ``max_bytes`` of records
        (always at least one when the spool is not empty)."""
        return await self._run(self._peek_sync, max_results, max_bytes)

    def _peek_sync(self, max_results: int, max_bytes: int) -> list[SpooledResult]:
        rows = self._connection().execute(
            "SELECT seq, id, record FROM results ORDER BY seq LIMIT ?", (max_results,)
        )
        out: list[SpooledResult] = []
        used = 0
        for seq, mid, record in rows:
            if out and used + len(record) > max_bytes:
                break
            out.append(SpooledResult(seq, mid, bytes(record)))
            used += len(record)
        return out

    async def ack(self, seqs: list[int], rejected: int = 0) -> None:
        """Delete results the collector acknowledged; count those it rejected as invalid."""
        await self._run(self._ack_sync, seqs, rejected)

    def _ack_sync(self, seqs: list[int], rejected: int) -> None:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            removed = freed = 0
            for start in range(0, len(seqs), 500):
                chunk = seqs[start : start + 500]
                marks = ",".join("?" * len(chunk))
                # Rows the cap already dropped are simply not found.
                sizes = conn.execute(
                    f"DELETE FROM results WHERE seq IN ({marks}) RETURNING size", chunk
                ).fetchall()
                removed += len(sizes)
                freed += sum(s for (s,) in sizes)
            if rejected:
                conn.execute(
                    "INSERT INTO counters (name, value) VALUES ('rejected', ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                    (rejected,),
                )
            conn.execute("COMMIT")
        except Exception:
            conn.execute("ROLLBACK")
            raise
        with self._lock:
            self._results -= removed
            self._bytes -= freed

    async def stats(self) -> SpoolStats:
        return await self._run(self._stats_sync)

    def _stats_sync(self) -> SpoolStats:
        counters = dict(self._connection().execute("SELECT name, value FROM counters").fetchall())
        with self._lock:
            return SpoolStats(
                results=self._results,
                bytes=self._bytes,
                dropped=int(counters.get("dropped", 0)),
                rejected=int(counters.get("rejected", 0)),
            )

    def __len__(self) -> int:
        with self._lock:
            return self._results

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("the spool is not open")
        return self._conn


def read_stats(path: Path) -> SpoolStats | None:
    """The spool's figures read straight from its file (for `agent status`), or None when
    there is no spool yet. Blocking: call it from a thread or outside an event loop."""
    if not path.exists():
        return None
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        count, total = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM results"
        ).fetchone()
        counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
    finally:
        conn.close()
    return SpoolStats(
        results=int(count),
        bytes=int(total),
        dropped=int(counters.get("dropped", 0)),
        rejected=int(counters.get("rejected", 0)),
    )
