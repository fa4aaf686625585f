"""What the dashboard reads and writes in the store besides the analysis' aggregation:
its sessions (migration 0007), who measured lately, and the facts of example measurements.

The SQL is written once with ``?`` placeholders and run on either store: SQLite through
its reader and writer threads, PostgreSQL through its pool (placeholders renumbered).
These are small, indexed queries (by primary key, or a range of ``measured_at`` on its
index), so that a page never scans the whole measurements table.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from collector.store.base import Store
from collector.store.sqlite import SqliteStore

_QMARK = re.compile(r"\?")


def _numbered(sql: str) -> str:
    counter = iter(range(1, 10_000))
    return _QMARK.sub(lambda _: f"${next(counter)}", sql)


@dataclass(frozen=True, slots=True)
class SessionRecord:
    session_hash: str
    token_hash: str
    created_at: float
    expires_at: float
    revoked: bool


@dataclass(frozen=True, slots=True)
class AgentSeen:
    """One agent on one network during the window: when it last measured, and its version."""

    agent_id: str
    cc: str
    asn: int
    network_name: str
    last_measured_at: float
    version: str | None


@dataclass(frozen=True, slots=True)
class EnrolledAgent:
    agent_id: str
    cc: str | None
    created_at: float
    revoked: bool


@dataclass(frozen=True, slots=True)
class MeasurementFacts:
    """An example measurement as the event page shows it: what was seen, never who saw it
    nor from which address."""

    measurement_id: str
    measured_at: float
    url: str
    blocking: str
    failure: str | None
    blockpage: str | None
    dns_answers: tuple[str, ...]
    dns_failure: str | None
    tls_failure: str | None
    http_status: int | None
    http_failure: str | None
    http_title: str | None
    control_ok: bool | None


_SESSIONS = (
    "SELECT session_hash, token_hash, created_at, expires_at, revoked_at FROM dashboard_sessions"
)


def _session_record(row: Sequence[Any]) -> SessionRecord:
    session_hash, token_hash, created, expires, revoked = row
    return SessionRecord(
        session_hash, token_hash, float(created), float(expires), revoked is not None
    )


class Records:
    """The dashboard's queries on ``store`` (SQLite or PostgreSQL)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def _read(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        store = self.store
        if isinstance(store, SqliteStore):
            return await store.run_read(lambda c: c.execute(sql, tuple(params)).fetchall())
        pool = getattr(store, "pool", None)
        if pool is None:
            raise TypeError(f"the dashboard cannot read from a {type(store).__name__}")
        return [tuple(r) for r in await pool.fetch(_numbered(sql), *params)]

    async def _write(self, sql: str, params: Sequence[Any]) -> int:
        """Run one statement in its own transaction; the number of rows it changed."""
        store = self.store
        if isinstance(store, SqliteStore):

            def write(conn: sqlite3.Connection) -> int:
                return conn.execute(sql, tuple(params)).rowcount  # autocommit: one transaction

            return await store.run_write(write)
        pool = getattr(store, "pool", None)
        if pool is None:
            raise TypeError(f"the dashboard cannot write to a {type(store).__name__}")
        status: str = await pool.execute(_numbered(sql), *params)
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    # --- sessions ---

    async def add_session(
        self, session_hash: str, token_hash: str, now: float, expires_at: float
    ) -> None:
        # Expired sessions are dropped a day after they end (kept a little for the page).
        await self._write("DELETE FROM dashboard_sessions WHERE expires_at < ?", [now - 86400])
        await self._write(
            "INSERT INTO dashboard_sessions (session_hash, token_hash, created_at, expires_at)"
            " VALUES (?, ?, ?, ?)",
            [session_hash, token_hash, now, expires_at],
        )

    async def session(self, session_hash: str) -> SessionRecord | None:
        rows = await self._read(_SESSIONS + " WHERE session_hash = ?", [session_hash])
        return _session_record(rows[0]) if rows else None

    async def live_sessions(self, now: float) -> list[SessionRecord]:
        where = " WHERE expires_at > ? AND revoked_at IS NULL ORDER BY created_at"
        return [_session_record(row) for row in await self._read(_SESSIONS + where, [now])]

    async def revoke_session(self, session_hash: str, now: float) -> bool:
        changed = await self._write(
            "UPDATE dashboard_sessions SET revoked_at = ?"
            " WHERE session_hash = ? AND revoked_at IS NULL",
            [now, session_hash],
        )
        return changed > 0

    async def revoke_all_sessions(self, now: float) -> int:
        """End every live session; how many there were."""
        return await self._write(
            "UPDATE dashboard_sessions SET revoked_at = ? WHERE revoked_at IS NULL"
            " AND expires_at > ?",
            [now, now],
        )

    # --- agents ---

    async def agents_seen(self, since: float) -> list[AgentSeen]:
        """Every (agent, network) with a measurement since ``since``, with its last one."""
        rows = await self._read(
            "SELECT agent_id, cc, asn, MAX(network_name), MAX(measured_at) FROM measurements"
            " WHERE measured_at >= ? AND cc IS NOT NULL AND asn IS NOT NULL"
            " GROUP BY agent_id, cc, asn",
            [since],
        )
        out: list[AgentSeen] = []
        for agent_id, cc, asn, name, last in rows:
            out.append(
                AgentSeen(
                    agent_id,
                    cc,
                    int(asn),
                    name or "",
                    float(last),
                    await self._version(agent_id, last),
                )
            )
        return out

    async def _version(self, agent_id: str, measured_at: float) -> str | None:
        # The agent's latest measurement says which version made it (found on the time index).
        rows = await self._read(
            "SELECT record FROM measurements WHERE measured_at = ? AND agent_id = ? LIMIT 1",
            [measured_at, agent_id],
        )
        if not rows:
            return None
        try:
            doc = msgspec.msgpack.decode(bytes(rows[0][0]))
        except msgspec.DecodeError:
            return None
        version = doc.get("agent_version") if isinstance(doc, dict) else None
        return version if isinstance(version, str) else None

    async def enrolled_agents(self) -> list[EnrolledAgent]:
        rows = await self._read(
            "SELECT agent_id, cc, created_at, revoked_at FROM agents ORDER BY created_at", []
        )
        return [EnrolledAgent(a, cc, float(c), r is not None) for a, cc, c, r in rows]

    async def coverage(self, since: float) -> dict[tuple[str, int], int]:
        """Distinct agents per (cc, asn) that measured since ``since``."""
        rows = await self._read(
            "SELECT cc, asn, COUNT(DISTINCT agent_id) FROM measurements"
            " WHERE measured_at >= ? AND cc IS NOT NULL AND asn IS NOT NULL GROUP BY cc, asn",
            [since],
        )
        return {(cc, int(asn)): int(n) for cc, asn, n in rows}

    # --- measurements ---

    async def measurement_facts(self, ids: Sequence[str]) -> list[MeasurementFacts]:
        if not ids:
            return []
        marks = ", ".join("?" for _ in ids)
        rows = await self._read(
            "SELECT measurement_id, measured_at, url, blocking, failure, blockpage, control_ok,"
            f" record FROM measurements WHERE measurement_id IN ({marks})",
            list(ids),
        )
        order = {m: i for i, m in enumerate(ids)}
        facts = [_facts(row) for row in rows]
        return sorted(facts, key=lambda f: order.get(f.measurement_id, len(order)))


def _facts(row: tuple[Any, ...]) -> MeasurementFacts:
    mid, measured_at, url, blocking, failure, blockpage, control_ok, record = row
    try:
        doc = msgspec.msgpack.decode(bytes(record))
    except msgspec.DecodeError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    dns = doc.get("dns") or {}
    tls = doc.get("tls") or {}
    http = doc.get("http") or {}
    answers = dns.get("answers") or []
    status = http.get("status")
    return MeasurementFacts(
        measurement_id=str(mid),
        measured_at=float(measured_at),
        url=str(url),
        blocking=str(blocking),
        failure=failure,
        blockpage=blockpage,
        dns_answers=tuple(str(a) for a in answers if isinstance(a, str)),
        dns_failure=_text(dns.get("failure")),
        tls_failure=_text(tls.get("failure")),
        http_status=status if isinstance(status, int) else None,
        http_failure=_text(http.get("failure")),
        http_title=_text(http.get("title")),
        control_ok=None if control_ok is None else bool(control_ok),
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
