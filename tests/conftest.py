"""Fixtures and rules every test shares."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, NoReturn

import pytest

from bench.fleet import drop_database as drop_test_database

if TYPE_CHECKING:
    from pathlib import Path

    from collector.store.postgres import PostgresStore
    from collector.store.sqlite import SqliteStore

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def skip_or_fail_in_ci(reason: str) -> NoReturn:
    """Skip with ``reason`` on a developer's machine; in CI the lab and PostgreSQL tests must
    run, so a missing prerequisite there is a failure."""
    if IN_CI:
        pytest.fail(f"CI must run this test, but: {reason}")
    pytest.skip(reason)


# --- stores: a fresh SQLite file, or a fresh PostgreSQL database, per test ------------------


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """The SQLite store in a new file in the test's directory, closed afterwards."""
    from collector.store.sqlite import SqliteStore

    store = SqliteStore(tmp_path / "collector.sqlite3")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


PG_DSN = os.environ.get("FILTERWATCH_TEST_PG_DSN", "")


@pytest.fixture
async def pg_dsn() -> AsyncIterator[str]:
    """A new, empty database on the test server for one test, dropped afterwards."""
    import uuid

    import asyncpg

    if not PG_DSN:
        skip_or_fail_in_ci("FILTERWATCH_TEST_PG_DSN is not set (scripts/test sets it as root)")
    try:
        admin = await asyncpg.connect(PG_DSN)
    except (OSError, asyncpg.PostgresError) as exc:
        skip_or_fail_in_ci(f"no PostgreSQL server at FILTERWATCH_TEST_PG_DSN: {exc}")
    name = f"fw_{uuid.uuid4().hex[:12]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_DSN.rsplit("/", 1)[0] + "/" + name
    finally:
        await drop_test_database(admin, name)
        await admin.close()


@pytest.fixture
async def pg_store(pg_dsn: str) -> AsyncIterator[PostgresStore]:
    """The PostgreSQL store, opened on the test's fresh database and closed afterwards."""
    from collector.store.postgres import PostgresStore

    store = PostgresStore(pg_dsn)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


# The event loop never blocks: blockbuster for every async test (tests/loop_guard.py).
from tests.loop_guard import blockbuster  # noqa: E402, F401
