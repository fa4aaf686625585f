"""The store interface. SQLite (default) and PostgreSQL (at scale) implement it.

Columns hold what analysis and exports need (design.md sections 5 and 6); ``record`` holds
the full measurement as msgpack, exactly as validated at ingest.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from functools import partial

from collector.analysis.model import BucketCount
from collector.filters import Filters
from collector.store.records import (
    Delivery,
    DirtySeries,
    EventChange,
    EventQuery,
    OutboxSummary,
    Revision,
    StoredEvent,
)
from collector.store.rows import Row, measurement_rows
from shared.schema import Measurement


@dataclass(frozen=True, slots=True)
class InsertOutcome:
    accepted: int
    duplicates: int


@dataclass(frozen=True, slots=True)
class PruneOutcome:
    deleted: int  # measurements removed
    dropped_partitions: list[str]  # whole months dropped (PostgreSQL)
    busy: bool = False  # another collector was pruning: nothing done here


@dataclass(frozen=True, slots=True)
class AgentRecord:
    agent_id: str
    cc: str | None  # the country the enrollment code was made for, if any
    created_at: float
    revoked: bool


@dataclass(frozen=True, slots=True)
class StoredVerdict:
    """The verdict of one stored measurement, with the id of the agent that made it."""

    measurement_id: str
    agent_id: str
    url: str
    measured_at: float  # UTC epoch seconds, as stored
    blocking: str  # a Blocking value
    accessible: bool | None


# The store's secret that keys agent pseudonyms (exports, and the analysis' agent sets).
PSEUDONYM_SECRET = "export_pseudonym_key"

# Export columns, in order (design.md section 5).
EXPORT_COLUMNS: tuple[str, ...] = (
    "measurement_id",
    "measured_at",
    "cc",
    "asn",
    "network_name",
    "agent",
    "url",
    "domain",
    "blocking",
    "accessible",
    "failure",
    "blockpage",
    "dns_answers",
    "http_status",
    "http_body_length",
    "control_ok",
    "failure_original",  # the failure as another tool named it, when mapped (issue 12)
)


class Store(abc.ABC):
    """Where measurements, agents and credentials live. Every method is safe to await from
    the event loop: implementations never block it."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and apply pending migrations."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def maintain(self, now: float) -> None:
        """Periodic upkeep the store needs (PostgreSQL: month partitions made ahead)."""
        return None

    async def prune(self, before: float, batch: int = 10_000) -> PruneOutcome:
        """Remove the measurements made before ``before`` (epoch seconds), in steps that
        never hold ingest up for long."""
        raise NotImplementedError(f"{type(self).__name__} has no retention")

    # --- measurements ---
    async def insert_measurements(
        self,
        agent_id: str,
        batch_id: str,
        results: Sequence[Measurement],
        received_at: float,
        records: Sequence[bytes] | None = None,
    ) -> InsertOutcome:
        """Insert, committing before returning; ids already stored count as duplicates.

        ``records``: each result's stored record (``shared.schema.decode_record`` gives
        it with the measurement), so that it is not encoded again."""
        return await self._insert_rows(
            partial(measurement_rows, results, agent_id, batch_id, received_at, records)
        )

    @abc.abstractmethod
    async def _insert_rows(self, make_rows: Callable[[], list[Row]]) -> InsertOutcome:
        """Store the rows ``make_rows`` builds, once each, committed before returning.
        Each store calls it where it likes: SQLite on its writer thread, off the loop."""

    @abc.abstractmethod
    async def count_measurements(self) -> int: ...

    @abc.abstractmethod
    async def aggregate(
        self, filters: Filters, pseudonym_key: bytes, *, comparable_only: bool = False
    ) -> list[BucketCount]:
        """Per (cc, asn, domain, bucket) counts computed in SQL (never row by row in Python);
        agents appear by their pseudonyms under ``pseudonym_key``, as in exports.

        With ``comparable_only``, only what the leak analysis needs for its events (not
        its per-ISP table): the series of domains no finding can come from are reduced to
        their last bucket (``queries.plan_series``)."""

    @abc.abstractmethod
    def export_rows(
        self, filters: Filters, pseudonym_key: bytes, chunk: int = 5000
    ) -> AsyncIterator[list[dict[str, object]]]:
        """Rows of EXPORT_COLUMNS ordered by (measured_at, measurement_id), in chunks."""

    @abc.abstractmethod
    async def verdicts(self, filters: Filters) -> list[StoredVerdict]:
        """The verdict of every measurement under ``filters`` (with a known network or
        not), ordered by (measured_at, measurement_id). Agents appear by their ids, not
        pseudonyms: this is for the collector's operator (the lab scores with it)."""

    # --- enrollment and credentials ---
    @abc.abstractmethod
    async def add_enroll_code(
        self, code_hash: str, cc: str | None, uses: int, expires_at: float | None
    ) -> None: ...

    @abc.abstractmethod
    async def redeem_enroll_code(
        self, code_hash: str, now: float, agent_id: str, token_hash: str
    ) -> AgentRecord | None:
        """Use one use of a live code and create the agent, atomically; None if the code is
        unknown, used up or expired."""

    @abc.abstractmethod
    async def agent_by_token(self, token_hash: str) -> AgentRecord | None: ...

    @abc.abstractmethod
    async def revoke_agent(self, agent_id: str) -> bool: ...

    @abc.abstractmethod
    async def add_analyst_token(self, token_hash: str) -> None: ...

    @abc.abstractmethod
    async def analyst_token_exists(self, token_hash: str) -> bool: ...

    # --- the collector's own secrets ---
    @abc.abstractmethod
    async def secret(self, name: str, length: int = 32) -> bytes:
        """The named random secret (e.g. the export pseudonym key), made and stored on first
        use so that it stays the same across restarts and collector processes."""

    # --- the monitor (migration 0005) ---
    @abc.abstractmethod
    async def take_dirty(self) -> list[DirtySeries]:
        """The series that received data since the last call, removed as they are taken.
        (Ingest records them in the transaction that stores the measurements.)"""

    @abc.abstractmethod
    async def aggregate_ranges(
        self, ranges: Sequence[DirtySeries], bucket_s: float, pseudonym_key: bytes
    ) -> list[BucketCount]:
        """``aggregate`` of each series between its ``lo`` and ``hi`` (whole buckets)."""

    @abc.abstractmethod
    async def live_events(self, ended_after: float) -> list[StoredEvent]:
        """Records not retracted, open or ended at or after ``ended_after``."""

    @abc.abstractmethod
    async def save_changes(self, changes: Sequence[EventChange], now: float) -> list[StoredEvent]:
        """Store the revisions and their outbox rows in one transaction; the saved records
        (with their seqs) in the order of ``changes``."""

    @abc.abstractmethod
    async def list_events(self, query: EventQuery) -> list[StoredEvent]:
        """Records under ``query``, newest first."""

    @abc.abstractmethod
    async def get_event(self, event_id: str) -> tuple[StoredEvent, list[Revision]] | None: ...

    @abc.abstractmethod
    async def revisions_after(self, seq: int, limit: int = 500) -> list[Revision]:
        """Every change after ``seq``, oldest first (SSE, ``events --follow``)."""

    @abc.abstractmethod
    async def latest_revisions(self, cc: str | None, limit: int) -> list[Revision]:
        """The last ``limit`` changes, newest first (the Atom feed)."""

    @abc.abstractmethod
    async def last_seq(self) -> int: ...

    @abc.abstractmethod
    async def claim_deliveries(self, now: float, limit: int, lease_s: float) -> list[Delivery]:
        """Due deliveries, each leased for ``lease_s`` so that no other collector sends it
        meanwhile (PostgreSQL: FOR UPDATE SKIP LOCKED)."""

    @abc.abstractmethod
    async def finish_delivery(
        self, delivery_id: str, state: str, next_attempt_at: float, error: str | None, now: float
    ) -> None:
        """Record an attempt: ``state`` delivered, failed (given up) or pending (retry)."""

    @abc.abstractmethod
    async def next_delivery_due(self) -> float | None: ...

    @abc.abstractmethod
    async def outbox_summary(self) -> list[OutboxSummary]: ...

    @abc.abstractmethod
    async def try_monitor_lock(self) -> bool:
        """Become the one collector that runs the monitor, if none is; True while held."""

    @abc.abstractmethod
    async def release_monitor_lock(self) -> None: ...
