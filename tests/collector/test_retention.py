"""Retention and backups: ``collector prune --before`` / ``database.retention`` on SQLite
(batched deletes) and on PostgreSQL (month partitions, migration 0006), and ``collector
backup`` with a restore that gives identical exports."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from collector.app import make_app
from collector.config import CollectorConfig, DatabaseConfig
from collector.store.migrate import load_migrations
from collector.store.postgres import PostgresStore, month_start
from collector.store.rows import measurement_row
from collector.store.sqlite import SqliteStore
from shared.codec import encode
from shared.schema import Measurement, decode_measurement
from tests.collector.conftest import record

ROOT = Path(__file__).resolve().parents[2]


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


# Five measurements in each of three months of 2025.
TIMES = [ts(f"2025-{m:02d}-{d:02d}T12:00:00") for m in (1, 2, 3) for d in (1, 8, 15, 22, 28)]


def made(times: list[float] = TIMES) -> list[Measurement]:
    return [decode_measurement(encode(record(i, measured_at=t))) for i, t in enumerate(times)]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "filterwatch", "collector", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )


async def _sqlite_with(path: Path, ms: list[Measurement]) -> None:
    store = SqliteStore(path)
    await store.open()
    try:
        await store.insert_measurements("ag-1", "b-1", ms, received_at=ts("2025-04-01T00:00:00"))
    finally:
        await store.close()


async def test_sqlite_prune_deletes_in_batches_what_is_older(sqlite_store: SqliteStore) -> None:
    """prune(before) removes exactly the older rows, several small transactions deep."""
    await sqlite_store.insert_measurements("ag-1", "b-1", made(), received_at=0.0)
    outcome = await sqlite_store.prune(ts("2025-02-15T00:00:00"), batch=2)
    assert outcome.deleted == 7  # January's five, 1 and 8 February
    assert outcome.dropped_partitions == []
    assert await sqlite_store.count_measurements() == len(TIMES) - 7
    again = await sqlite_store.prune(ts("2025-02-15T00:00:00"), batch=2)
    assert again.deleted == 0


async def test_sqlite_prune_while_ingesting_loses_no_new_result(sqlite_store: SqliteStore) -> None:
    """Batches arriving during a prune are stored; only the old rows go."""
    old = made([ts("2024-06-01T00:00:00") + i for i in range(3000)])
    await sqlite_store.insert_measurements("ag-1", "b-old", old, received_at=0.0)
    new = [made([ts("2025-06-01T00:00:00") + i * 10 + k for k in range(10)]) for i in range(30)]

    async def ingest() -> None:
        for i, chunk in enumerate(new):
            await sqlite_store.insert_measurements("ag-2", f"b-{i}", chunk, received_at=0.0)

    outcome, _ = await asyncio.gather(
        sqlite_store.prune(ts("2025-01-01T00:00:00"), batch=100), ingest()
    )
    assert outcome.deleted == 3000
    assert await sqlite_store.count_measurements() == 300


async def test_retention_prunes_at_start_and_serving_goes_on(
    tmp_path: Path, aiohttp_client: Any
) -> None:
    """database.retention: the collector prunes older measurements by itself."""
    path = tmp_path / "c.sqlite3"
    now = datetime.now(UTC).timestamp()
    await _sqlite_with(path, made([now - 400 * 86400, now - 200 * 86400, now - 3600]))
    config = CollectorConfig(database=DatabaseConfig(sqlite_path=path, retention="300d"))
    client = await aiohttp_client(make_app(config))
    store = client.app[make_app.__globals__["STORE"]]
    for _ in range(100):
        if await store.count_measurements() == 2:
            break
        await asyncio.sleep(0.05)
    assert await store.count_measurements() == 2
    assert (await client.get("/healthz")).status == 200


def test_retention_shorter_than_a_day_is_a_config_error(tmp_path: Path) -> None:
    """database.retention: 1h stops the collector with exit 2 naming the key."""
    config = tmp_path / "c.yaml"
    config.write_text("database: {retention: 1h}\n")
    done = _cli("prune", "--before", "30d", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 2
    assert "c.yaml: database" in done.stderr and "retention: must be at least 1d" in done.stderr


def test_prune_cli_and_backup_restore_give_identical_exports(tmp_path: Path) -> None:
    """backup --out copies the live store; its export is byte-identical; prune --before cuts."""
    path = tmp_path / "c.sqlite3"
    asyncio.run(_sqlite_with(path, made()))
    config = tmp_path / "c.yaml"
    config.write_text(f"database: {{sqlite_path: '{path}'}}\n")
    copy = tmp_path / "backup.sqlite3"
    done = _cli("backup", "--out", str(copy), "--config", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    restored = tmp_path / "restored.yaml"
    restored.write_text(f"database: {{sqlite_path: '{copy}'}}\n")
    exports = []
    for cfg, name in ((config, "a.csv"), (restored, "b.csv")):
        done = _cli("export", "--format", "csv", "--out", name, "--config", str(cfg), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        exports.append((tmp_path / name).read_bytes())
    assert exports[0] == exports[1]
    assert exports[0].count(b"\n") == len(TIMES) + 1
    done = _cli("prune", "--before", "2025-03-01", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "deleted 10 measurements made before 2025-03-01" in done.stdout
    done = _cli("prune", "--before", "2999-01-01", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 2 and "future" in done.stderr


def test_backup_of_postgres_points_at_pg_dump(tmp_path: Path) -> None:
    """backup on a PostgreSQL configuration exits 2 and shows the pg_dump command."""
    config = tmp_path / "c.yaml"
    config.write_text("database: {postgres_dsn: 'postgresql://127.0.0.1:1/none'}\n")
    done = _cli("backup", "--out", "x", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 2 and "pg_dump" in done.stderr


async def _partitions(store: PostgresStore) -> list[str]:
    return [name for name, _, _ in await store.partitions()]


@pytest.mark.postgres
async def test_postgres_partitions_by_month_ahead_and_on_demand(pg_dsn: str) -> None:
    """Months ahead exist from the start; a batch of an older month makes its partition."""
    store = PostgresStore(pg_dsn)
    await store.open()
    try:
        now = datetime.now(UTC)
        this_month = f"measurements_{now.year:04d}_{now.month:02d}"
        assert this_month in await _partitions(store)
        assert len(await _partitions(store)) == 3  # this month and the next two
        outcome = await store.insert_measurements("ag-1", "b-1", made(), received_at=0.0)
        assert outcome.accepted == len(TIMES)
        parts = await _partitions(store)
        for month in ("2025_01", "2025_02", "2025_03"):
            assert f"measurements_{month}" in parts
        again = await store.insert_measurements("ag-1", "b-2", made()[:0] + made(), received_at=0.0)
        assert again.accepted == len(TIMES)  # fresh ids: stored
        retry = list(made())
        first = await store.insert_measurements("ag-1", "b-3", retry, received_at=0.0)
        second = await store.insert_measurements("ag-1", "b-4", retry, received_at=0.0)
        assert (first.accepted, second.accepted, second.duplicates) == (len(TIMES), 0, len(TIMES))
    finally:
        await store.close()


@pytest.mark.postgres
async def test_postgres_prune_drops_whole_months_and_trims_the_next(pg_dsn: str) -> None:
    """prune(15 Feb): January's partition dropped, February's older rows deleted."""
    store = PostgresStore(pg_dsn)
    await store.open()
    try:
        await store.insert_measurements("ag-1", "b-1", made(), received_at=0.0)
        outcome = await store.prune(ts("2025-02-15T00:00:00"), batch=1)
        assert outcome.dropped_partitions == ["measurements_2025_01"]
        assert outcome.deleted == 7
        assert await store.count_measurements() == len(TIMES) - 7
        assert "measurements_2025_01" not in await _partitions(store)
        # A late result for the dropped month is still stored (its month is made again).
        late = made([ts("2025-01-20T00:00:00")])
        assert (await store.insert_measurements("ag-1", "b-2", late, received_at=0.0)).accepted == 1
    finally:
        await store.close()


@pytest.mark.postgres
async def test_migration_0006_moves_existing_rows_into_months(pg_dsn: str) -> None:
    """A store of migration 0004 gets partitioned with every row and the same aggregates."""
    migrations = load_migrations()
    store = PostgresStore(pg_dsn)
    store._pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2)
    try:
        await store.migrate([m for m in migrations if m.version <= 4])
        # Rows as version 4 stored them: no failure_original (migration 0008), the record last.
        rows = [
            row[:-2] + row[-1:] for row in (measurement_row(m, "ag-1", "b-1", 0.0) for m in made())
        ]
        placeholders = ", ".join(f"${i + 1}" for i in range(len(rows[0])))
        async with store.pool.acquire() as conn:
            await conn.executemany(f"INSERT INTO measurements VALUES ({placeholders})", rows)
        assert await store.count_measurements() == len(TIMES)
        applied = await store.migrate()
        assert 6 in applied
        assert await store.count_measurements() == len(TIMES)
        parts = await _partitions(store)
        assert {"measurements_2025_01", "measurements_2025_02", "measurements_2025_03"} <= set(
            parts
        )
        async with store.pool.acquire() as conn:
            per_month = await conn.fetch(
                "SELECT tableoid::regclass::text AS part, count(*) FROM measurements GROUP BY 1"
            )
        assert {r["part"]: r["count"] for r in per_month} == {
            "measurements_2025_01": 5,
            "measurements_2025_02": 5,
            "measurements_2025_03": 5,
        }
    finally:
        await store.close()


def test_month_start_is_utc_calendar_month() -> None:
    """month_start maps any instant to 00:00 UTC on the 1st of its month."""
    assert month_start(ts("2025-02-28T23:59:59")) == ts("2025-02-01T00:00:00")
    assert month_start(ts("2025-03-01T00:00:00")) == ts("2025-03-01T00:00:00")
