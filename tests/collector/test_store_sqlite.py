"""The SQLite store: migrations, idempotent inserts, credentials, secrets, readers."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from collector.filters import Filters
from collector.store.migrate import Migration, MigrationError, load_migrations, migrate_sqlite
from collector.store.sqlite import SqliteStore
from shared.codec import encode
from shared.schema import Blocking, decode_measurement
from tests.collector.conftest import record
from tests.factories import measurement


@pytest.fixture
async def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = SqliteStore(tmp_path / "s.sqlite3")
    await s.open()
    yield s
    await s.close()


async def test_migrations_are_applied_once_in_order(tmp_path: Path) -> None:
    """A new database gets every migration; opening it again applies none."""
    path = tmp_path / "m.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    versions = [m.version for m in load_migrations()]
    assert versions == sorted(versions) and versions[:2] == [1, 2]
    assert migrate_sqlite(conn) == versions
    assert migrate_sqlite(conn) == []
    conn.close()


async def test_a_failing_migration_leaves_no_trace(tmp_path: Path) -> None:
    """A migration that fails half-way is rolled back whole and reported."""
    conn = sqlite3.connect(tmp_path / "f.sqlite3", isolation_level=None)
    bad = Migration(1, "bad", "CREATE TABLE a (x INTEGER);\nCREATE TABLE a (x INTEGER);\n")
    with pytest.raises(MigrationError, match="1_bad"):
        migrate_sqlite(conn, [bad])
    tables = conn.execute("SELECT name FROM sqlite_master WHERE name = 'a'").fetchall()
    assert tables == []
    conn.close()


async def test_insert_counts_duplicates_and_stores_columns(store: SqliteStore) -> None:
    """Inserting the same ids again counts them as duplicates; columns and record are kept."""
    results = [decode_measurement(encode(record(i))) for i in range(4)]
    first = await store.insert_measurements("ag-1", "b1", results, 100.0)
    again = await store.insert_measurements("ag-1", "b2", results[1:], 101.0)
    assert (first.accepted, first.duplicates) == (4, 0)
    assert (again.accepted, again.duplicates) == (0, 3)
    assert await store.count_measurements() == 4
    row = await store.run_read(
        lambda c: c.execute(
            "SELECT cc, asn, domain, blocking, accessible, dns_answers, control_ok, record"
            " FROM measurements WHERE measurement_id = ?",
            (results[0].id,),
        ).fetchone()
    )
    assert row[:7] == ("IR", 64500, "blocked.example", "tls", 0, "192.0.2.7", 1)
    assert decode_measurement(row[7]) == results[0]


async def test_tool_measurements_are_stored_too(store: SqliteStore) -> None:
    """A ``Measurement`` built by a tool is stored like an ingested one."""
    m = measurement(
        "https://blocked.example/", Blocking.DNS, dns={"answers": ["10.10.34.36"], "failure": None}
    )
    outcome = await store.insert_measurements("ag-1", "b", [m], 1.0)
    assert outcome.accepted == 1
    row = await store.run_read(
        lambda c: c.execute("SELECT dns_answers, record FROM measurements").fetchone()
    )
    assert row[0] == "10.10.34.36" and decode_measurement(row[1]) == m


async def test_stream_read_yields_in_order(store: SqliteStore) -> None:
    """stream_read hands over a generator's items one by one from a reader thread."""
    results = [decode_measurement(encode(record(i, measured_at=1000.0 + i))) for i in range(5)]
    await store.insert_measurements("ag-1", "b", results, 1.0)

    def ids(conn: sqlite3.Connection):  # type: ignore[no-untyped-def]
        for (mid,) in conn.execute("SELECT measurement_id FROM measurements ORDER BY measured_at"):
            yield mid

    got = [mid async for mid in store.stream_read(ids)]
    assert got == [r.id for r in results]


async def test_enroll_code_uses_and_revocation(store: SqliteStore) -> None:
    """A two-use code enrolls two agents then none; a revoked agent is marked so."""
    await store.add_enroll_code("h", "IR", 2, None)
    a = await store.redeem_enroll_code("h", 10.0, "ag-a", "ta")
    b = await store.redeem_enroll_code("h", 11.0, "ag-b", "tb")
    assert a is not None and a.cc == "IR" and b is not None
    assert await store.redeem_enroll_code("h", 12.0, "ag-c", "tc") is None
    assert await store.revoke_agent("ag-a")
    assert not await store.revoke_agent("ag-unknown")
    found = await store.agent_by_token("ta")
    assert found is not None and found.revoked
    assert await store.agent_by_token("nope") is None


async def test_expired_code_enrolls_nobody(store: SqliteStore) -> None:
    """A code past its expiry is refused."""
    await store.add_enroll_code("h", None, 5, expires_at=50.0)
    assert await store.redeem_enroll_code("h", 60.0, "ag-a", "ta") is None


async def test_secret_is_stable_across_restarts(tmp_path: Path) -> None:
    """The pseudonym key is made once and read back after the store is reopened."""
    path = tmp_path / "k.sqlite3"
    first = SqliteStore(path)
    await first.open()
    key = await first.secret("k")
    await first.close()
    second = SqliteStore(path)
    await second.open()
    assert await second.secret("k") == key and len(key) == 32
    assert await second.secret("other") != key
    await second.close()


async def test_analyst_tokens(store: SqliteStore) -> None:
    """An analyst token hash is found once added."""
    assert not await store.analyst_token_exists("x")
    await store.add_analyst_token("x")
    assert await store.analyst_token_exists("x")


async def test_concurrent_inserts_share_commits_but_not_outcomes(store: SqliteStore) -> None:
    """Inserts awaited together each get their own counts; overlapping ids are stored once."""
    import asyncio

    results = [decode_measurement(encode(record(i))) for i in range(30)]
    outcomes = await asyncio.gather(
        *(
            store.insert_measurements("ag-1", f"b{k}", results[k * 5 : k * 5 + 10], 1.0)
            for k in range(5)
        )
    )
    assert sum(o.accepted for o in outcomes) == 30
    assert sum(o.duplicates for o in outcomes) == 20
    assert await store.count_measurements() == 30


async def test_a_failing_insert_does_not_sink_its_group(store: SqliteStore) -> None:
    """An insert that fails inside a shared transaction fails alone; the others commit."""
    import asyncio

    from collector.store.rows import measurement_row

    good = [measurement_row(decode_measurement(encode(record(i))), "a", "b", 1.0) for i in range(3)]
    bad = [("too", "few", "columns")]
    outcomes = await asyncio.gather(
        store.insert_rows(good[:2]),
        store.insert_rows(bad),
        store.insert_rows(good[2:]),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], sqlite3.Error)
    assert [o.accepted for o in (outcomes[0], outcomes[2])] == [2, 1]  # type: ignore[union-attr]
    assert await store.count_measurements() == 3


async def test_verdicts_are_read_under_filters_in_time_order(store: SqliteStore) -> None:
    """``verdicts`` gives each measurement's agent id, url, time and verdict under the
    filters, located or not, ordered by time."""
    outcomes = [("ok", True), ("dns", False), ("inconclusive", None), ("tls", False)]
    results = [
        decode_measurement(
            encode(
                record(
                    i, measured_at=1000.0 + 10 * (3 - i), blocking=blocking, accessible=accessible
                )
            )
        )
        for i, (blocking, accessible) in enumerate(outcomes)
    ]
    unlocated = decode_measurement(encode(record(9, measured_at=1005.0, network=None)))
    await store.insert_measurements("ag-1", "b1", results[:2], 2000.0)
    await store.insert_measurements("ag-2", "b2", [*results[2:], unlocated], 2000.0)
    got = await store.verdicts(Filters(since=1005.0, until=1030.0))
    assert [(v.agent_id, v.measured_at, v.blocking, v.accessible) for v in got] == [
        ("ag-2", 1005.0, "tls", False),
        ("ag-2", 1010.0, "inconclusive", None),
        ("ag-1", 1020.0, "dns", False),
    ]
    assert [v.measurement_id for v in got] == [unlocated.id, results[2].id, results[1].id]
    assert {v.url for v in got} == {"https://blocked.example/"}


async def test_a_read_only_store_reads_another_writer_and_refuses_writes(
    store: SqliteStore, tmp_path: Path
) -> None:
    """A read-only store on the file an open store writes sees its commits; it writes
    nothing, and a missing file is an error rather than a new empty database."""
    reader = SqliteStore(store.path, readonly=True)
    await reader.open()
    try:
        await store.insert_measurements("ag-1", "b1", [decode_measurement(encode(record(1)))], 1.0)
        assert [v.agent_id for v in await reader.verdicts(Filters())] == ["ag-1"]
        with pytest.raises(RuntimeError, match="read-only"):
            await reader.insert_measurements(
                "ag-1", "b2", [decode_measurement(encode(record(2)))], 1.0
            )
    finally:
        await reader.close()
    with pytest.raises(FileNotFoundError):
        await SqliteStore(tmp_path / "none.sqlite3", readonly=True).open()
    assert not (tmp_path / "none.sqlite3").exists()
