"""Versioned schema migrations: ``migrations/NNNN_name.sql``, applied in order, once each.

The SQL is portable (SQLite and PostgreSQL run the same text), except in a migration whose
first line names one dialect (``-- dialect: postgres``): only that store runs it. Each
migration runs in one transaction together with the row that records it in
``schema_migrations``, so a failed migration leaves no half-built schema, and two processes
starting at once do not both apply it (the SQLite runner takes the write lock first).
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

MIGRATIONS_DIR: Final = Path(__file__).parent / "migrations"
_NAME_RE: Final = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_BOOKKEEPING: Final = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    applied_at  DOUBLE PRECISION NOT NULL
)
"""


class MigrationError(RuntimeError):
    """The database schema could not be brought up to date."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def dialect(self) -> str | None:
        """``postgres`` for a migration whose first line is ``-- dialect: postgres`` (the
        other stores record it as applied and run nothing); None when portable."""
        first = self.sql.split("\n", 1)[0].strip()
        if first.startswith("-- dialect:"):
            return first.removeprefix("-- dialect:").strip()
        return None

    def statements(self) -> list[str]:
        """The migration's statements, split where SQLite says a statement is complete."""
        out: list[str] = []
        buf = ""
        for line in self.sql.splitlines(keepends=True):
            buf += line
            if sqlite3.complete_statement(buf):
                stmt = buf.strip()
                if stmt.rstrip(";").strip():
                    out.append(stmt)
                buf = ""
        if buf.strip() and not all(
            ln.strip().startswith("--") or not ln.strip() for ln in buf.splitlines()
        ):
            raise MigrationError(f"migration {self.version}: unterminated statement at the end")
        return out


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every migration in ``directory``, in version order."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _NAME_RE.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"{path.name}: version {version} appears twice")
        found[version] = Migration(version, match.group(2), path.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def migrate_sqlite(
    conn: sqlite3.Connection, migrations: list[Migration] | None = None
) -> list[int]:
    """Apply pending migrations on ``conn`` (in autocommit mode); return the versions applied."""
    if migrations is None:
        migrations = load_migrations()
    applied_now: list[int] = []
    conn.execute(_BOOKKEEPING)
    for migration in migrations:
        conn.execute("BEGIN IMMEDIATE")
        try:
            done = conn.execute(
                "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
            ).fetchone()
            if done:
                conn.execute("ROLLBACK")
                continue
            if migration.dialect in (None, "sqlite"):
                for stmt in migration.statements():
                    conn.execute(stmt)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, time.time()),
            )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            raise MigrationError(
                f"migration {migration.version}_{migration.name} failed: {exc}"
            ) from None
        applied_now.append(migration.version)
    return applied_now
