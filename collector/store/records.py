"""What the store keeps for the monitor: dirty series, event records, revisions, the outbox.

Plain frozen dataclasses shared by the SQLite and PostgreSQL stores, the monitor and the
endpoints; the SQL that both stores run is here too (``?`` placeholders; the PostgreSQL
store numbers them with ``numbered``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from collector.filters import parse_time

STATUSES: Final = ("open", "closed", "retracted")
CHANGE_TYPES: Final = ("leak.opened", "leak.updated", "leak.closed", "leak.retracted")


@dataclass(frozen=True, slots=True)
class DirtySeries:
    """A series that received measurements measured between ``lo`` and ``hi``."""

    cc: str
    asn: int
    domain: str
    lo: float
    hi: float


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One finding as a record; ``body`` is its JSON as of its latest revision."""

    event_id: str
    kind: str
    status: str
    cc: str
    asn: int
    domains: tuple[str, ...]
    start: float
    end: float | None
    revision: int
    first_seen_at: float
    updated_at: float
    body: dict[str, Any]
    seq: int = 0  # of the latest revision; 0 before it is saved
    created_seq: int = 0


@dataclass(frozen=True, slots=True)
class EventChange:
    """A new revision of one record, and the subscriptions that hear of it (with the type
    each is told: a subscription that had not heard of the record is told it opened)."""

    event: StoredEvent
    type: str
    deliveries: tuple[tuple[str, str], ...] = ()  # (subscription, type)


@dataclass(frozen=True, slots=True)
class Revision:
    seq: int
    event_id: str
    revision: int
    type: str
    at: float
    payload: dict[str, Any]  # {"type": ..., "event": {...}}


@dataclass(frozen=True, slots=True)
class Delivery:
    delivery_id: str
    subscription: str
    seq: int
    type: str
    created_at: float
    attempts: int
    payload: dict[str, Any]  # the revision's payload; ``type`` is this delivery's

    @property
    def key(self) -> str:
        """``X-Filterwatch-Delivery``: the event id and revision, for receivers to dedupe."""
        event = self.payload["event"]
        return f"{event['id']}:{event['revision']}"


@dataclass(frozen=True, slots=True)
class OutboxSummary:
    subscription: str
    pending: int
    delivered: int
    failed: int
    oldest_pending_at: float | None
    last_delivered_at: float | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Filters of GET /api/v1/events and ``collector events``; None means any."""

    cc: str | None = None
    asn: int | None = None
    domain: str | None = None
    kind: str | None = None
    status: str | None = None
    since: float | None = None  # events still going on at or after this time
    before_created_seq: int | None = None  # the cursor: older records than this one
    limit: int = 100

    def matches(self, event: Mapping[str, Any]) -> bool:
        """Whether an event's JSON (a revision's ``event``) passes these filters: what the
        stream and ``collector events --follow`` show of the changes they read."""
        if self.cc is not None and event.get("cc") != self.cc:
            return False
        if self.asn is not None and event.get("asn") != self.asn:
            return False
        if self.domain is not None and self.domain not in event.get("domains", []):
            return False
        if self.kind is not None and event.get("kind") != self.kind:
            return False
        if self.status is not None and event.get("status") != self.status:
            return False
        end = event.get("end")
        if self.since is not None and end is not None:
            return parse_time(end, "end") >= self.since
        return True


def numbered(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1, $2, ...`` (our SQL has no ``?`` literals)."""
    parts = sql.split("?")
    out = [parts[0]]
    for i, part in enumerate(parts[1:], start=1):
        out.append(f"${i}{part}")
    return "".join(out)


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def domains_column(domains: Sequence[str]) -> str:
    return " " + " ".join(domains) + " "


def like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# --- SQL both stores run -------------------------------------------------------------------

EVENT_COLUMNS: Final = (
    "event_id, kind, status, cc, asn, domains, start_at, end_at, revision, first_seen_at,"
    " updated_at, body, seq, created_seq"
)
INSERT_EVENT: Final = (
    f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
UPDATE_EVENT: Final = (
    "UPDATE events SET kind = ?, status = ?, domains = ?, start_at = ?, end_at = ?,"
    " revision = ?, updated_at = ?, body = ?, seq = ? WHERE event_id = ?"
)
INSERT_REVISION: Final = (
    "INSERT INTO event_revisions (seq, event_id, revision, type, at, body)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
INSERT_DELIVERY: Final = (
    "INSERT INTO outbox (delivery_id, subscription, seq, type, created_at, next_attempt_at,"
    " attempts, state) VALUES (?, ?, ?, ?, ?, ?, 0, 'pending')"
)
INSERT_DIRTY: Final = "INSERT INTO monitor_dirty (cc, asn, domain, lo, hi) VALUES (?, ?, ?, ?, ?)"
TAKE_DIRTY: Final = "DELETE FROM monitor_dirty RETURNING cc, asn, domain, lo, hi"
LIVE_EVENTS: Final = (
    f"SELECT {EVENT_COLUMNS} FROM events WHERE status <> 'retracted'"
    " AND (end_at IS NULL OR end_at >= ?) ORDER BY created_seq"
)
GET_EVENT: Final = f"SELECT {EVENT_COLUMNS} FROM events WHERE event_id = ?"
EVENT_REVISIONS: Final = (
    "SELECT seq, event_id, revision, type, at, body FROM event_revisions"
    " WHERE event_id = ? ORDER BY revision"
)
REVISIONS_AFTER: Final = (
    "SELECT seq, event_id, revision, type, at, body FROM event_revisions"
    " WHERE seq > ? ORDER BY seq LIMIT ?"
)
LATEST_REVISIONS: Final = (
    "SELECT r.seq, r.event_id, r.revision, r.type, r.at, r.body FROM event_revisions r"
    " JOIN events e ON e.event_id = r.event_id WHERE (? IS NULL OR e.cc = ?)"
    " ORDER BY r.seq DESC LIMIT ?"
)
MAX_SEQ: Final = "SELECT COALESCE(MAX(seq), 0) FROM event_revisions"
DELIVERY_COLUMNS: Final = (
    "o.delivery_id, o.subscription, o.seq, o.type, o.created_at, o.attempts, r.body"
)
DUE_DELIVERIES: Final = (
    f"SELECT {DELIVERY_COLUMNS} FROM outbox o JOIN event_revisions r ON r.seq = o.seq"
    " WHERE o.state = 'pending' AND o.next_attempt_at <= ? ORDER BY o.next_attempt_at, o.seq"
    " LIMIT ?"
)
LEASE_DELIVERY: Final = "UPDATE outbox SET next_attempt_at = ? WHERE delivery_id = ?"
FINISH_DELIVERY: Final = (
    "UPDATE outbox SET state = ?, attempts = attempts + 1, next_attempt_at = ?,"
    " last_error = ?, finished_at = ? WHERE delivery_id = ?"
)
NEXT_DUE: Final = "SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'pending'"
OUTBOX_SUMMARY: Final = (
    "SELECT subscription,"
    " COUNT(*) FILTER (WHERE state = 'pending'),"
    " COUNT(*) FILTER (WHERE state = 'delivered'),"
    " COUNT(*) FILTER (WHERE state = 'failed'),"
    " MIN(created_at) FILTER (WHERE state = 'pending'),"
    " MAX(finished_at) FILTER (WHERE state = 'delivered')"
    " FROM outbox GROUP BY subscription ORDER BY subscription"
)
LAST_ERROR: Final = (
    "SELECT last_error FROM outbox WHERE subscription = ? AND last_error IS NOT NULL"
    " ORDER BY seq DESC LIMIT 1"
)


def list_events_sql(query: EventQuery) -> tuple[str, list[Any]]:
    clauses: list[str] = ["1 = 1"]
    params: list[Any] = []
    for column, value in (
        ("cc", query.cc),
        ("asn", query.asn),
        ("kind", query.kind),
        ("status", query.status),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if query.domain is not None:
        clauses.append("domains LIKE ? ESCAPE '\\'")
        params.append(f"% {like_escape(query.domain)} %")
    if query.since is not None:
        clauses.append("(end_at IS NULL OR end_at >= ?)")
        params.append(query.since)
    if query.before_created_seq is not None:
        clauses.append("created_seq < ?")
        params.append(query.before_created_seq)
    params.append(query.limit)
    sql = (
        f"SELECT {EVENT_COLUMNS} FROM events WHERE {' AND '.join(clauses)}"
        " ORDER BY created_seq DESC LIMIT ?"
    )
    return sql, params


def event_from_row(row: Sequence[Any]) -> StoredEvent:
    (
        event_id,
        kind,
        status,
        cc,
        asn,
        domains,
        start,
        end,
        revision,
        first_seen_at,
        updated_at,
        body,
        seq,
        created_seq,
    ) = row
    return StoredEvent(
        event_id=event_id,
        kind=kind,
        status=status,
        cc=cc,
        asn=int(asn),
        domains=tuple(domains.split()),
        start=float(start),
        end=None if end is None else float(end),
        revision=int(revision),
        first_seen_at=float(first_seen_at),
        updated_at=float(updated_at),
        body=json.loads(body),
        seq=int(seq),
        created_seq=int(created_seq),
    )


def revision_from_row(row: Sequence[Any]) -> Revision:
    seq, event_id, revision, type_, at, body = row
    return Revision(int(seq), event_id, int(revision), type_, float(at), json.loads(body))


def delivery_from_row(row: Sequence[Any]) -> Delivery:
    delivery_id, subscription, seq, type_, created_at, attempts, body = row
    payload = json.loads(body)
    payload["type"] = type_
    return Delivery(
        delivery_id, subscription, int(seq), type_, float(created_at), int(attempts), payload
    )


@dataclass(frozen=True, slots=True)
class PlannedWrite:
    """The statements of ``save_changes``, with seqs assigned from ``first_seq``."""

    events_new: list[tuple[Any, ...]]
    events_updated: list[tuple[Any, ...]]
    revisions: list[tuple[Any, ...]]
    deliveries: list[tuple[Any, ...]]
    saved: list[StoredEvent]


def plan_write(changes: Sequence[EventChange], first_seq: int, now: float) -> PlannedWrite:
    """Rows for the events, revisions and outbox tables of ``changes``, in one order."""
    events_new: list[tuple[Any, ...]] = []
    events_updated: list[tuple[Any, ...]] = []
    revisions: list[tuple[Any, ...]] = []
    deliveries: list[tuple[Any, ...]] = []
    saved: list[StoredEvent] = []
    for i, change in enumerate(changes):
        seq = first_seq + i
        e = change.event
        created_seq = seq if e.revision == 1 else e.created_seq
        body = dumps(e.body)
        if e.revision == 1:
            events_new.append(
                (
                    e.event_id,
                    e.kind,
                    e.status,
                    e.cc,
                    e.asn,
                    domains_column(e.domains),
                    e.start,
                    e.end,
                    e.revision,
                    e.first_seen_at,
                    e.updated_at,
                    body,
                    seq,
                    created_seq,
                )
            )
        else:
            events_updated.append(
                (
                    e.kind,
                    e.status,
                    domains_column(e.domains),
                    e.start,
                    e.end,
                    e.revision,
                    e.updated_at,
                    body,
                    seq,
                    e.event_id,
                )
            )
        revisions.append(
            (
                seq,
                e.event_id,
                e.revision,
                change.type,
                now,
                dumps({"type": change.type, "event": e.body}),
            )
        )
        for subscription, type_ in change.deliveries:
            delivery_id = f"{e.event_id}:{e.revision}:{subscription}"
            deliveries.append((delivery_id, subscription, seq, type_, now, now))
        saved.append(_with_seqs(e, seq, created_seq))
    return PlannedWrite(events_new, events_updated, revisions, deliveries, saved)


def _with_seqs(e: StoredEvent, seq: int, created_seq: int) -> StoredEvent:
    return replace(e, seq=seq, created_seq=created_seq)
