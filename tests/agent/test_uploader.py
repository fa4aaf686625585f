"""The uploader against a loopback collector: batches within limits, deletion only on
acknowledgement, backoff and Retry-After, rejected results counted."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agent.collector_api import CollectorClient
from agent.config import UploadConfig
from agent.identity import Clock, NetworkIdentity
from agent.spool import Spool
from agent.state import Status, StatusRecorder, load_status
from agent.uploader import Uploader
from shared.codec import decode, encode
from shared.schema import encode_measurement
from tests.agent.collector_double import AGENT_ID, TOKEN, CollectorDouble
from tests.factories import measurement

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]


@dataclass
class Rig:
    double: CollectorDouble
    server: TestServer
    spool: Spool
    collector: CollectorClient
    status: StatusRecorder
    state_dir: Path

    def uploader(self, **config: Any) -> Uploader:
        return Uploader(
            self.spool,
            self.collector,
            AGENT_ID,
            UploadConfig(**config),
            self.status,
            rng=random.Random(0),
            linger_s=0.01,
        )

    async def fill(self, n: int, **kw: Any) -> list[str]:
        ms = [measurement(**kw) for _ in range(n)]
        for m in ms:
            await self.spool.put(m)
        return [m.id for m in ms]


@pytest.fixture
async def rig(aiohttp_server: ServerFactory, tmp_path: Path) -> AsyncIterator[Rig]:
    double = CollectorDouble()
    server = await aiohttp_server(double.app())
    spool = Spool(tmp_path / "spool.db", 50 * 1024 * 1024)
    await spool.open()
    collector = await CollectorClient.open(str(server.make_url("/")), TOKEN)
    rig = Rig(double, server, spool, collector, StatusRecorder(tmp_path, Status()), tmp_path)
    yield rig
    await rig.collector.close()
    await spool.close()


async def test_everything_spooled_is_delivered_in_bounded_batches(rig: Rig) -> None:
    """All results reach the collector once, in batches of at most batch_max_results, each
    under a fresh batch id, and the spool ends empty."""
    ids = await rig.fill(23)
    up = rig.uploader(batch_max_results=10)
    assert await up.flush(30.0)
    assert rig.double.stored == dict.fromkeys(ids, 1)
    assert rig.double.batch_sizes == [10, 10, 3]
    assert len(set(rig.double.batches)) == 3
    assert len(rig.spool) == 0
    assert rig.status.current.uploaded == 23
    assert rig.status.current.last_upload_at is not None


async def test_batches_stay_under_the_byte_limit(rig: Rig) -> None:
    """A batch's body never exceeds batch_max_bytes."""
    await rig.fill(30, padding=3000)
    up = rig.uploader(batch_max_bytes=16 * 1024)
    assert await up.flush(30.0)
    assert len(rig.double.stored) == 30
    assert max(rig.double.batch_sizes) <= 5  # 16 KiB / ~3.1 KB per result


async def test_retry_after_is_returned_and_nothing_is_deleted(rig: Rig) -> None:
    """A 429 with Retry-After deletes nothing and hands the wait to the retry logic."""
    await rig.fill(5)
    rig.double.batch_errors.append((429, {"Retry-After": "7"}))
    up = rig.uploader()
    outcome = await up.upload_once()
    assert not outcome.acknowledged and outcome.retry_after == 7.0
    assert len(rig.spool) == 5
    assert rig.status.current.last_error is not None
    assert (await up.upload_once()).acknowledged
    assert len(rig.spool) == 0 and rig.status.current.last_error is None


async def test_unreachable_collector_keeps_results(rig: Rig) -> None:
    """With the collector gone, results stay in the spool and the error is recorded."""
    await rig.fill(4)
    up = rig.uploader()
    await rig.server.close()
    outcome = await up.upload_once()
    assert not outcome.acknowledged and outcome.retry_after is None
    assert len(rig.spool) == 4
    assert "connect_failed" in (rig.status.current.last_error or "")


async def test_results_already_stored_count_as_acknowledged(rig: Rig) -> None:
    """A batch resent after a lost answer comes back as duplicates and is deleted."""
    ids = await rig.fill(3)
    rig.double.stored.update(dict.fromkeys(ids, 1))
    assert (await rig.uploader().upload_once()).acknowledged
    assert len(rig.spool) == 0
    assert rig.double.stored == dict.fromkeys(ids, 2)


async def test_rejected_results_are_deleted_and_counted(rig: Rig) -> None:
    """Results the collector rejects as invalid are not resent, and are counted."""
    rig.double.reject_urls = frozenset({"https://bad.test/"})
    await rig.fill(2, url="https://bad.test/")
    good = await rig.fill(3)
    assert await rig.uploader().flush(30.0)
    assert set(rig.double.stored) == set(good)
    stats = await rig.spool.stats()
    assert (stats.results, stats.rejected) == (0, 2)
    assert rig.status.current.rejected == 2


def _insert_records(path: Path, records: list[bytes]) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(
            "INSERT INTO results (id, size, record) VALUES (?, ?, ?)",
            [(f"r{i}", len(r), r) for i, r in enumerate(records)],
        )
    conn.close()


async def spool_of(path: Path, records: list[bytes]) -> Spool:
    """An open spool holding ``records`` as they were written (by this or another version)."""
    made = Spool(path, 50 * 1024 * 1024)
    await made.open()
    await made.close()
    await asyncio.to_thread(_insert_records, path, records)
    spool = Spool(path, 50 * 1024 * 1024)
    await spool.open()
    return spool


async def test_spooled_records_are_sent_byte_for_byte(rig: Rig) -> None:
    """Each result reaches the collector exactly as it was spooled, fields this version
    does not know included (a spool written by a newer agent)."""
    newer = encode({**decode(encode_measurement(measurement())), "quic": {"failure": "new"}})
    records = [encode_measurement(measurement()), newer]
    rig.spool = await spool_of(rig.state_dir / "newer.db", records)
    try:
        assert await rig.uploader().flush(30.0)
    finally:
        await rig.spool.close()
    assert rig.double.records == records


async def test_a_damaged_record_is_dropped_alone(rig: Rig) -> None:
    """A spooled record that is not one whole msgpack value is counted as rejected and not
    sent; the records around it are delivered."""
    good = [encode_measurement(measurement()) for _ in range(2)]
    rig.spool = await spool_of(rig.state_dir / "damaged.db", [good[0], good[1][:-3], good[1]])
    try:
        assert await rig.uploader().flush(30.0)
        stats = await rig.spool.stats()
    finally:
        await rig.spool.close()
    assert rig.double.records == [good[0], good[1]]
    assert (stats.results, stats.rejected) == (0, 1)


async def test_too_large_halves_the_batch(rig: Rig) -> None:
    """A 413 makes the next batch half as big, and everything is still delivered."""
    await rig.fill(8)
    rig.double.batch_errors.append((413, {}))
    assert await rig.uploader(batch_max_results=8).flush(30.0)
    assert rig.double.batch_sizes[0] == 4
    assert len(rig.double.stored) == 8


async def test_run_backs_off_then_delivers_and_stops(rig: Rig) -> None:
    """The upload loop rides out 503s with backoff, delivers everything, and returns when
    asked to stop."""
    ids = await rig.fill(6)
    for _ in range(3):
        rig.double.batch_errors.append((503, {"Retry-After": "0"}))
    stop = asyncio.Event()
    up = rig.uploader(retry_base_s=0.01, retry_cap_s=0.05)
    task = asyncio.create_task(up.run(stop))
    async with asyncio.timeout(30):
        await rig.double.wait_for(set(ids))
    stop.set()
    await task
    assert len(rig.spool) == 0
    assert len(rig.double.batch_errors) == 0


async def test_status_is_saved_without_secrets(rig: Rig) -> None:
    """The status file records the upload and never holds the token."""
    await rig.fill(2)
    assert await rig.uploader().flush(30.0)
    await rig.status.save(123.0)
    assert load_status(rig.state_dir).uploaded == 2
    assert TOKEN not in (rig.state_dir / "status.json").read_text()


def forward_proxy(relayed: list[str]) -> web.Application:
    """A plain HTTP forward proxy: relays absolute-form requests and notes their paths."""

    async def relay(request: web.Request) -> web.Response:
        relayed.append(request.path)
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method, request.url, data=await request.read(), headers=request.headers
            ) as resp,
        ):
            return web.Response(
                status=resp.status, body=await resp.read(), content_type=resp.content_type
            )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", relay)
    return app


async def test_uploads_go_through_the_configured_proxy(
    rig: Rig, aiohttp_server: ServerFactory
) -> None:
    """With an HTTP upload proxy, batches reach the collector through the proxy."""
    relayed: list[str] = []
    proxy = await aiohttp_server(forward_proxy(relayed))
    await rig.collector.close()
    rig.collector = await CollectorClient.open(
        str(rig.server.make_url("/")), TOKEN, UploadConfig(proxy=str(proxy.make_url("")))
    )
    ids = await rig.fill(3)
    assert await rig.uploader().flush(30.0)
    assert relayed == ["/api/v1/batches"]
    assert set(rig.double.stored) == set(ids)


async def test_whoami_never_uses_a_proxy_from_the_environment(
    aiohttp_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """whoami goes straight to the collector even when HTTP_PROXY names a proxy."""
    relayed: list[str] = []
    proxy = await aiohttp_server(forward_proxy(relayed))
    monkeypatch.setenv("HTTP_PROXY", str(proxy.make_url("")))
    monkeypatch.setenv("NO_PROXY", "")
    double = CollectorDouble()
    collector = await aiohttp_server(double.app())
    async with await CollectorClient.open(str(collector.make_url("")), TOKEN) as client:
        assert await NetworkIdentity(client, Clock()).refresh() == double.network
    assert relayed == [] and double.whoami_calls == 1


async def test_controls_go_through_the_upload_proxy(
    rig: Rig, aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    """The control comes from the collector too, so with an HTTP upload proxy the daemon
    asks for it through the proxy (a blocked collector is blocked for controls as well)."""
    from agent.config import AgentConfig
    from agent.runner import real_probing

    relayed: list[str] = []
    proxy = await aiohttp_server(forward_proxy(relayed))
    await rig.collector.close()
    rig.collector = await CollectorClient.open(
        str(rig.server.make_url("/")), TOKEN, UploadConfig(proxy=str(proxy.make_url("")))
    )
    collector_url = str(rig.server.make_url("/"))
    config = AgentConfig(collector_url=collector_url, state_dir=tmp_path / "state")
    probing = real_probing(config, rig.collector)
    await probing.control("http://127.0.0.1:9/")  # the double has no control: None
    assert relayed == ["/api/v1/control"]
