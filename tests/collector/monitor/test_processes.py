"""Real collector processes (``filterwatch collector serve``): a kill -9 between the commit
of a revision and its delivery loses nothing; on one PostgreSQL exactly one of two
collectors runs the monitor, the other takes over when the leader is killed, and no
delivery is sent by both."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp

from collector.alerts.subscriptions import subscription_key
from collector.store.base import Store
from collector.store.postgres import PostgresStore
from collector.store.records import EventChange, EventQuery
from collector.store.sqlite import SqliteStore
from tests.collector.alerts.test_webhooks import Receiver, an_event, free_port
from tests.collector.monitor.helpers import SECRET, agent_id, measurement, upload, webhook
from tests.commands import FILTERWATCH

ROOT = Path(__file__).resolve().parents[3]
FB, TW = "fb.example", "tw.example"


def real_rounds(leak_asn: int, domain: str, leak_buckets: range) -> list[Any]:
    """Measurements of the last ten one-minute buckets (real time: the collector's monitor
    runs on the real clock); ``leak_asn`` sees ``domain`` in ``leak_buckets`` (0 = oldest)."""
    first = math.floor(time.time() / 60) - 9
    rows = []
    for i in range(10):
        start = (first + i) * 60
        if start + 10 > time.time():
            break
        for asn in (100, 200, 300):
            for a in (0, 1):
                ok = asn == leak_asn and i in leak_buckets
                rows.append((agent_id(asn, a), measurement(asn, a, domain, start + 5 + a, ok)))
    return rows


def write_config(path: Path, database: str, hook_url: str, monitor: bool = True) -> Path:
    doc = {
        "database": json.loads(database),
        "monitor": {"enabled": monitor, "interval_s": 0.5, "bucket": "60s", "window": "1h"},
        "alerts": {
            "allow_ranges": ["127.0.0.0/8"],
            "webhooks": [{"url": hook_url, "secret": SECRET, "filters": {"kinds": ["lapse"]}}],
        },
        "logging": {"json": True, "level": "info"},
    }
    path.write_text(json.dumps(doc))  # JSON is YAML
    return path


class Collector:
    """One ``filterwatch collector serve`` child on 127.0.0.1, port chosen by the kernel."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log = config, log
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0

    async def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *FILTERWATCH, "collector", "serve",
                "--config", str(self.config), "--port", "0",
                stdout=asyncio.subprocess.PIPE, stderr=log, cwd=ROOT,
            )  # fmt: skip
        assert self.proc.stdout is not None
        async with asyncio.timeout(30):
            line = (await self.proc.stdout.readline()).decode()
        match = re.search(r":(\d+)$", line.strip())
        assert match, f"no listening line: {line!r}; see {self.log}"
        self.port = int(match.group(1))

    async def leader(self) -> bool:
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"http://127.0.0.1:{self.port}/metrics") as resp,
        ):
            text = await resp.text()
        return "filterwatch_monitor_leader 1.0" in text

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(15):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def eventually(check: Any, timeout_s: float = 60.0, what: str = "") -> None:
    async with asyncio.timeout(timeout_s):
        while not await check():  # noqa: ASYNC110 - another process changes the state
            await asyncio.sleep(0.2)


def outbox(path: Path) -> list[tuple[str, str, int]]:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return db.execute("SELECT delivery_id, state, attempts FROM outbox").fetchall()


async def test_kill_9_between_commit_and_delivery_loses_nothing(tmp_path: Path) -> None:
    """The receiver is down: the revision and its delivery are committed, attempts fail.
    kill -9 the collector; start the receiver and the collector again: the delivery
    arrives, with the key of the committed row, and every row ends delivered."""
    db = tmp_path / "collector.sqlite3"
    store = SqliteStore(db)
    await store.open()
    await upload(store, real_rounds(200, FB, range(5, 10)))
    await store.close()
    port = free_port()
    config = write_config(
        tmp_path / "c.yaml", json.dumps({"sqlite_path": str(db)}), f"http://127.0.0.1:{port}/h"
    )
    collector = Collector(config, tmp_path / "collector.log")
    receiver = Receiver()
    try:
        await collector.start()

        async def attempted() -> bool:
            return any(state == "pending" and n >= 1 for _, state, n in outbox(db))

        await eventually(attempted, what="a failed attempt")
        collector.kill9()
        assert collector.proc is not None
        await collector.proc.wait()
        [(delivery_id, state, _)] = outbox(db)
        assert state == "pending"

        await receiver.start(port)
        await collector.start()

        async def arrived() -> bool:
            return bool(receiver.requests) and all(s == "delivered" for _, s, _ in outbox(db))

        await eventually(arrived, what="the delivery after the restart")
    finally:
        await collector.stop()
        await receiver.stop()
    keys = {h["X-Filterwatch-Delivery"] for h, _ in receiver.requests}
    assert keys == {delivery_id.rsplit(":", 1)[0]}
    body = json.loads(receiver.requests[0][1])
    assert (body["type"], body["event"]["asn"], body["event"]["kind"]) == (
        "leak.opened",
        200,
        "lapse",
    )


async def two_collectors(
    tmp_path: Path, dsn: str, hook_url: str, monitor: bool = True
) -> list[Collector]:
    database = json.dumps({"postgres_dsn": dsn})
    config = write_config(tmp_path / "c.yaml", database, hook_url, monitor)
    collectors = [Collector(config, tmp_path / f"collector-{i}.log") for i in range(2)]
    for c in collectors:
        await c.start()
    return collectors


async def test_one_monitor_on_postgres_and_a_takeover_when_the_leader_is_killed(
    tmp_path: Path, pg_dsn: str
) -> None:
    """Two collectors on one PostgreSQL: one leads (the advisory lock), records are made
    once; kill -9 the leader and the other leads and finds the next leak."""
    store: Store = PostgresStore(pg_dsn)
    await store.open()
    receiver = Receiver()
    await receiver.start()
    collectors: list[Collector] = []
    try:
        await upload(store, real_rounds(200, FB, range(5, 10)))
        collectors = await two_collectors(tmp_path, pg_dsn, receiver.url())

        async def one_leader() -> bool:
            return [await c.leader() for c in collectors].count(True) == 1

        await eventually(one_leader, what="one leader")
        await eventually(lambda: _delivered(receiver, 1), what="the first alert")
        [leader] = [c for c in collectors if await c.leader()]
        [follower] = [c for c in collectors if c is not leader]
        leader.kill9()
        await eventually(follower.leader, what="the takeover")
        await upload(store, real_rounds(100, TW, range(7, 10)))
        await eventually(lambda: _delivered(receiver, 2), what="the alert after the takeover")
        found = await store.list_events(EventQuery())
    finally:
        for c in collectors:
            await c.stop()
        await receiver.stop()
        await store.close()
    assert sorted((e.asn, e.domains) for e in found) == [(100, (TW,)), (200, (FB,))]
    keys = [h["X-Filterwatch-Delivery"] for h, _ in receiver.requests]
    assert len(keys) == len(set(keys)) == 2


async def _delivered(receiver: Receiver, n: int) -> bool:
    return len(receiver.requests) >= n


async def test_two_collectors_never_send_one_delivery_twice(tmp_path: Path, pg_dsn: str) -> None:
    """Forty deliveries in the outbox, two collectors' workers claiming at once
    (FOR UPDATE SKIP LOCKED and a lease): the receiver gets each exactly once."""
    receiver = Receiver()
    await receiver.start()
    store = PostgresStore(pg_dsn)
    await store.open()
    collectors: list[Collector] = []
    try:
        hook = webhook(receiver.url())
        changes = [
            EventChange(an_event(i), "leak.opened", ((subscription_key(hook), "leak.opened"),))
            for i in range(40)
        ]
        # The monitors off: they would retract these records, which no data supports.
        collectors = await two_collectors(tmp_path, pg_dsn, receiver.url(), monitor=False)
        await store.save_changes(changes, time.time())
        await eventually(lambda: _delivered(receiver, 40), what="forty deliveries")
        await asyncio.sleep(2)  # room for a second send, were there one
    finally:
        for c in collectors:
            await c.stop()
        await receiver.stop()
        await store.close()
    keys = [h["X-Filterwatch-Delivery"] for h, _ in receiver.requests]
    assert len(keys) == len(set(keys)) == 40
