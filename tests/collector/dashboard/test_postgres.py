"""The dashboard on the PostgreSQL store (migration 0007 and every query of its own)."""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from collector.app import make_app
from collector.auth import hash_secret
from collector.config import DatabaseConfig
from collector.dashboard.records import Records
from collector.state import STORE
from collector.store.postgres import PostgresStore
from tests.collector.dashboard import dataset
from tests.collector.dashboard.conftest import TOKEN, csrf_of, dashboard_config, wait_for_record

pytestmark = pytest.mark.postgres


async def test_sessions_live_hashed_and_revocable_in_postgres(pg_store: PostgresStore) -> None:
    """Sessions are added, found by hash, listed while live, revoked one by one or all."""
    records = Records(pg_store)
    now = time.time()
    await records.add_session(hash_secret("a"), hash_secret(TOKEN), now, now + 60)
    await records.add_session(hash_secret("b"), hash_secret(TOKEN), now, now + 60)
    await records.add_session(hash_secret("old"), hash_secret(TOKEN), now - 120, now - 60)
    found = await records.session(hash_secret("a"))
    assert found is not None and not found.revoked and found.expires_at == pytest.approx(now + 60)
    assert {s.session_hash for s in await records.live_sessions(now)} == {
        hash_secret("a"),
        hash_secret("b"),
    }
    assert await records.revoke_session(hash_secret("a"), now)
    assert not await records.revoke_session(hash_secret("a"), now)  # already revoked
    assert await records.revoke_all_sessions(now) == 1
    assert await records.live_sessions(now) == []


async def test_agents_coverage_and_examples_from_postgres(pg_store: PostgresStore) -> None:
    """Who measured lately (with version), coverage per ISP and a measurement's facts."""
    agents = await dataset.fill(pg_store)
    records = Records(pg_store)
    seen = await records.agents_seen(time.time() - 86400 * 2)
    assert {a.agent_id for a in seen} == {a for ids in agents.values() for a in ids}
    assert {a.version for a in seen} == {"0.1.0"}
    coverage = await records.coverage(dataset.current_bucket() - dataset.HOUR)
    assert coverage[("IR", dataset.RIGHTEL)] == 1 and coverage[("IR", 58224)] == 3
    enrolled = await records.enrolled_agents()
    assert len(enrolled) == 12 and not any(a.revoked for a in enrolled)


async def test_the_dashboard_serves_from_postgres(
    aiohttp_server: Any,
    tmp_path: Path,
    pg_dsn: str,
) -> None:
    """A collector on PostgreSQL signs in, shows the leaking ISP and the event's examples."""
    config = dashboard_config(tmp_path)
    config = dataclasses.replace(config, database=DatabaseConfig(postgres_dsn=pg_dsn))
    app = make_app(config)
    server = await aiohttp_server(app, host="127.0.0.1", port=0)
    await dataset.fill(app[STORE])
    await wait_for_record(app[STORE], dataset.SHATEL)
    base = str(server.make_url("")).rstrip("/")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        async with client.get(base + "/login") as resp:
            csrf = csrf_of(await resp.text())
        async with client.post(base + "/login", data={"csrf": csrf, "token": TOKEN}) as resp:
            assert resp.status == 200
        async with client.get(base + "/countries/IR") as resp:
            text = await resp.text()
        assert re.search(r'<tr data-asn="31549" class="leaking">', text)
        event = re.search(r'class="finding leak open" data-event-id="([^"]+)"', text).group(1)  # type: ignore[union-attr]
        async with client.get(base + f"/events/{event}") as resp:
            page = await resp.text()
        assert page.count("93.184.216.34") >= 2  # example measurements with their DNS answers
