"""The PostgreSQL store against a real server (CI starts one; see scripts/test)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any

import pytest

from collector.analysis.model import BucketCount
from collector.filters import Filters
from collector.store.base import PSEUDONYM_SECRET
from collector.store.postgres import PostgresStore
from collector.store.queries import Pseudonyms
from collector.store.sqlite import SqliteStore
from shared.codec import encode
from shared.schema import Measurement, decode_measurement
from tests.collector.conftest import record


@pytest.fixture
def store(pg_store: PostgresStore) -> PostgresStore:
    return pg_store


def measurements(n: int, **changes: Any) -> list[Measurement]:
    return [decode_measurement(encode(record(i, **changes))) for i in range(n)]


async def test_retried_and_resplit_inserts_store_each_measurement_once(
    store: PostgresStore,
) -> None:
    """A batch sent twice, then re-split differently, stores every measurement once."""
    ms = measurements(10)
    first = await store.insert_measurements("a1", "b1", ms, time.time())
    again = await store.insert_measurements("a1", "b2", ms, time.time())
    split = await store.insert_measurements("a1", "b3", ms[3:7] + ms[:2], time.time())
    assert (first.accepted, first.duplicates) == (10, 0)
    assert (again.accepted, again.duplicates) == (0, 10)
    assert (split.accepted, split.duplicates) == (0, 6)
    assert await store.count_measurements() == 10


async def test_a_repeated_id_inside_one_insert_counts_as_duplicate(store: PostgresStore) -> None:
    """The same measurement twice in one batch is stored once and counted once as duplicate."""
    m = measurements(1)[0]
    outcome = await store.insert_measurements("a1", "b1", [m, m], time.time())
    assert (outcome.accepted, outcome.duplicates) == (1, 1)


async def test_two_collectors_on_one_database_never_duplicate(pg_dsn: str) -> None:
    """Two store instances (two collector processes) ingesting overlapping batches at once
    store each measurement exactly once, and the migrations ran once."""
    a, b = PostgresStore(pg_dsn), PostgresStore(pg_dsn)
    await asyncio.gather(a.open(), b.open())
    try:
        ms = measurements(200)
        outcomes = await asyncio.gather(
            *(
                (a if i % 2 else b).insert_measurements("a1", f"b{i}", ms[i * 20 : i * 20 + 60], 0)
                for i in range(8)
            )
        )
        assert sum(o.accepted for o in outcomes) == 200
        assert await a.count_measurements() == 200
        versions = await a.pool.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r[0] for r in versions] == sorted({r[0] for r in versions})
    finally:
        await a.close()
        await b.close()


async def test_enroll_code_uses_and_revocation(store: PostgresStore) -> None:
    """A code redeems as many times as its uses, not after expiry; a revoked agent says so."""
    now = time.time()
    await store.add_enroll_code("code-hash", "IR", 1, now + 60)
    await store.add_enroll_code("old-hash", None, 5, now - 1)
    agent = await store.redeem_enroll_code("code-hash", now, "agent-1", "token-hash")
    assert agent is not None and agent.cc == "IR"
    assert await store.redeem_enroll_code("code-hash", now, "agent-2", "token-2") is None
    assert await store.redeem_enroll_code("old-hash", now, "agent-3", "token-3") is None
    found = await store.agent_by_token("token-hash")
    assert found is not None and not found.revoked
    assert await store.revoke_agent("agent-1") is True
    assert await store.revoke_agent("nobody") is False
    revoked = await store.agent_by_token("token-hash")
    assert revoked is not None and revoked.revoked


async def test_analyst_tokens_and_secrets(store: PostgresStore, pg_dsn: str) -> None:
    """Analyst token hashes are found once added; a secret is made once and then kept."""
    assert not await store.analyst_token_exists("h")
    await store.add_analyst_token("h")
    assert await store.analyst_token_exists("h")
    key = await store.secret("k")
    other = PostgresStore(pg_dsn)
    await other.open()
    try:
        assert await other.secret("k") == key
    finally:
        await other.close()


async def test_aggregation_and_export_match_sqlite(store: PostgresStore, tmp_path: Path) -> None:
    """The same measurements give the same per-bucket counts and export rows on both stores."""
    base = 1_700_000_000.0
    ms: list[Measurement] = []
    for i in range(120):
        verdict = ("ok", True) if i % 3 == 0 else ("dns", False)
        ms.append(
            decode_measurement(
                encode(
                    record(
                        i,
                        measured_at=base + i * 37.0,
                        blocking=verdict[0],
                        accessible=verdict[1],
                        domain=f"site{i % 4}.example",
                        network={"asn": 100 + i % 3, "cc": "IR", "network_name": f"ISP{i % 3}"},
                    )
                )
            )
        )
    lite = SqliteStore(tmp_path / "same.sqlite3")
    await lite.open()
    try:
        for i, chunk in enumerate((ms[:50], ms[50:])):
            await store.insert_measurements(f"agent{i}", f"b{i}", chunk, base)
            await lite.insert_measurements(f"agent{i}", f"b{i}", chunk, base)
        filters = Filters(cc="IR", bucket_s=600.0)
        agents = ("agent0", "agent1")  # each store names them by its own pseudonym key

        async def by_agent_id(s: Any) -> list[BucketCount]:
            key = await s.secret(PSEUDONYM_SECRET)
            named = Pseudonyms(key)
            real = {named(a): a for a in agents}
            return [
                dataclasses.replace(
                    b, accessible_agent_ids=tuple(sorted(real[i] for i in b.accessible_agent_ids))
                )
                for b in await s.aggregate(filters, key)
            ]

        from_pg = await by_agent_id(store)
        assert from_pg == await by_agent_id(lite)
        assert any(len(b.accessible_agent_ids) == 1 for b in from_pg)
        key = b"k" * 32
        pg_rows = [r async for chunk in store.export_rows(filters, key, chunk=7) for r in chunk]
        lite_rows = [r async for chunk in lite.export_rows(filters, key, chunk=7) for r in chunk]
        assert len(pg_rows) == 120
        assert pg_rows == lite_rows
    finally:
        await lite.close()


async def test_two_collector_apps_on_postgres_ingest_idempotently(
    aiohttp_client: Any, config: Any, pg_dsn: str
) -> None:
    """An agent enrolled on one collector uploads the same batch to two collectors sharing
    one PostgreSQL database: the measurements are stored once, the second answer says
    duplicates."""
    from collector.app import make_app
    from collector.config import DatabaseConfig
    from tests.collector.conftest import batch, enroll, post_batch

    pg_config = dataclasses.replace(config, database=DatabaseConfig(postgres_dsn=pg_dsn))
    first = await aiohttp_client(make_app(pg_config))
    second = await aiohttp_client(make_app(pg_config))
    agent_id, token = await enroll(first)
    doc = batch(agent_id, [record(i) for i in range(25)])
    resp = await post_batch(first, token, doc)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["accepted"] == 25
    resp = await post_batch(second, token, doc)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert (body["accepted"], body["duplicates"]) == (0, 25)
    check = PostgresStore(pg_dsn)
    await check.open()
    try:
        assert await check.count_measurements() == 25
    finally:
        await check.close()


async def test_verdicts_match_sqlite(store: PostgresStore, tmp_path: Path) -> None:
    """The same measurements give the same verdicts, in the same order, on both stores."""
    base = 1_700_000_000.0
    outcomes = [("ok", True), ("dns", False), ("inconclusive", None)]
    ms = [
        decode_measurement(
            encode(
                record(
                    i,
                    measured_at=base + (i * 19) % 50,  # distinct times
                    blocking=outcomes[i % 3][0],
                    accessible=outcomes[i % 3][1],
                    network=None if i % 5 == 0 else record()["network"],
                )
            )
        )
        for i in range(30)
    ]
    lite = SqliteStore(tmp_path / "same.sqlite3")
    await lite.open()
    try:
        for s in (store, lite):
            await s.insert_measurements("agent0", "b0", ms[:20], base)
            await s.insert_measurements("agent1", "b1", ms[20:], base)
        filters = Filters(since=base + 10, until=base + 40)
        from_pg = await store.verdicts(filters)
        assert from_pg == await lite.verdicts(filters)
        inside = sorted(
            (m for m in ms if base + 10 <= m.measured_at < base + 40), key=lambda m: m.measured_at
        )
        assert [v.measurement_id for v in from_pg] == [m.id for m in inside]
        assert {v.accessible for v in from_pg} == {True, False, None}
    finally:
        await lite.close()


async def test_a_batch_partly_stored_before_stores_only_the_rest(store: PostgresStore) -> None:
    """A batch whose first results were stored before stores the others once, and only
    those new ones reach the monitor's dirty series: nothing is kept of the COPY that met
    the stored ids."""
    ms = [decode_measurement(encode(record(i, measured_at=1.7e9 + i))) for i in range(20)]
    await store.insert_measurements("a1", "b1", ms[:5], time.time())
    await store.take_dirty()
    outcome = await store.insert_measurements("a1", "b2", ms, time.time())
    assert (outcome.accepted, outcome.duplicates) == (15, 5)
    assert await store.count_measurements() == 20
    [series] = await store.take_dirty()
    assert (series.lo, series.hi) == (1.7e9 + 5, 1.7e9 + 19)


async def test_a_new_batch_marks_its_series_dirty_as_sqlite_does(
    store: PostgresStore, tmp_path: Path
) -> None:
    """A batch of new results (the COPY path) leaves the same dirty series as the SQLite
    store: per (cc, asn, domain), the range of measured_at; unlocated results none."""
    ms = [
        decode_measurement(encode(record(i, measured_at=1.7e9 + i, domain=f"d{i % 3}.example")))
        for i in range(30)
    ] + [decode_measurement(encode(record(99, network=None)))]
    sqlite = SqliteStore(tmp_path / "c.sqlite3")
    await sqlite.open()
    try:
        for s in (store, sqlite):
            outcome = await s.insert_measurements("a1", "b1", ms, time.time())
            assert outcome.accepted == 31
        ours, theirs = await store.take_dirty(), await sqlite.take_dirty()
        assert sorted(ours, key=repr) == sorted(theirs, key=repr) and len(ours) == 3
    finally:
        await sqlite.close()


async def test_the_same_batch_in_two_orders_at_once_is_stored_once(pg_dsn: str) -> None:
    """Two collectors storing the same results at the same moment in opposite orders (the
    one case where two inserts can each wait for the other) store each result once, and
    together accept each once."""
    a, b = PostgresStore(pg_dsn), PostgresStore(pg_dsn)
    await asyncio.gather(a.open(), b.open())
    try:
        for round_ in range(5):
            ms = [decode_measurement(encode(record(round_ * 1000 + i))) for i in range(400)]
            outcomes = await asyncio.gather(
                a.insert_measurements("a1", "b1", ms, time.time()),
                b.insert_measurements("a1", "b2", ms[::-1], time.time()),
            )
            assert sum(o.accepted for o in outcomes) == 400
            assert sum(o.duplicates for o in outcomes) == 400
        assert await a.count_measurements() == 2000
    finally:
        await a.close()
        await b.close()
