"""A real SQLite store file filled with hand-made measurement rows."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from collector.store.migrate import migrate_sqlite

_INSERT = (
    "INSERT INTO measurements (measurement_id, agent_id, batch_id, measured_at, received_at,"
    " cc, asn, network_name, url, domain, blocking, accessible, failure, blockpage,"
    " dns_answers, http_status, http_body_length, control_ok, failure_original, record)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def stored_values(rows: Sequence[dict[str, object]]) -> list[tuple[object, ...]]:
    """The measurements table's values of export-shaped ``rows`` (``agent`` being the agent
    id), in the stores' insert column order."""
    return [
        (
            r["measurement_id"],
            r["agent"],
            "batch-1",
            r["measured_at"],
            r["measured_at"],
            r["cc"],
            r["asn"],
            r["network_name"],
            r["url"],
            r["domain"],
            r["blocking"],
            r.get("accessible"),
            r.get("failure"),
            r.get("blockpage"),
            r.get("dns_answers"),
            r.get("http_status"),
            r.get("http_body_length"),
            r.get("control_ok"),
            r.get("failure_original"),
            b"\x80",
        )
        for r in rows
    ]


def store_with(path: Path, rows: Sequence[dict[str, object]]) -> sqlite3.Connection:
    """A migrated SQLite store at ``path`` holding ``rows`` (export-shaped, ``agent`` being
    the agent id); returns an open connection."""
    conn = sqlite3.connect(path, isolation_level=None)
    migrate_sqlite(conn)
    conn.execute("BEGIN")
    conn.executemany(_INSERT, stored_values(rows))
    conn.execute("COMMIT")
    return conn
