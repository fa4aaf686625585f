"""``collector events [--follow] [--json]``, ``collector alerts status``, delivery state in
/metrics, and ingest and the monitor going on while every webhook delivery hangs."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from collector.app import make_app
from collector.config import CollectorConfig
from collector.monitor.runner import Monitor
from collector.state import STORE
from collector.store.base import PSEUDONYM_SECRET
from collector.store.sqlite import SqliteStore
from filterwatch.cli import main
from tests.collector.alerts.test_webhooks import Receiver, enqueue
from tests.collector.conftest import batch, enroll, post_batch, record, write_netdb
from tests.collector.monitor.helpers import (
    SECRET,
    FakeClock,
    Row,
    at,
    config,
    rounds,
    upload,
    webhook,
)
from tests.commands import FILTERWATCH

ROOT = Path(__file__).resolve().parents[3]
FB = "fb.example"


def write_yaml(tmp_path: Path, hooks: list[dict[str, Any]] | None = None) -> Path:
    doc = {
        "database": {"sqlite_path": str(tmp_path / "collector.sqlite3")},
        "monitor": {"bucket": "60s", "window": "1h"},
        "alerts": {"allow_ranges": ["127.0.0.0/8"], "webhooks": hooks or []},
    }
    path = tmp_path / "collector.yaml"
    path.write_text(json.dumps(doc))
    return path


async def monitor_pass(tmp_path: Path, now: float, *uploads: list[Row]) -> None:
    """``uploads`` stored in the collector's database in tmp_path, then one monitor pass at
    ``now`` (the first reads the whole window)."""
    store = SqliteStore(tmp_path / "collector.sqlite3")
    await store.open()
    try:
        key = await store.secret(PSEUDONYM_SECRET)
        monitor = Monitor(store, config(tmp_path), key, clock=FakeClock(now))
        for rows in uploads:
            await upload(store, rows)
        await monitor.step()
    finally:
        await store.close()


async def one_leak(tmp_path: Path) -> None:
    """AS 200 lets fb.example through in rounds 5 to 7 (the others block it): one record,
    opened by the pass at bucket 7."""
    leaking = rounds(range(5, 8), leaking={200: {FB}})
    await monitor_pass(tmp_path, at(7, 50.0), rounds(range(0, 5)), leaking)


async def test_events_prints_the_records_as_json(tmp_path: Path, capsys: Any) -> None:
    """``collector events --json``: the records as GET /api/v1/events has them; filters."""
    await one_leak(tmp_path)
    capsys.readouterr()  # the monitor's log lines
    cfg = str(write_yaml(tmp_path))
    assert await asyncio.to_thread(main, ["collector", "events", "--config", cfg, "--json"]) == 0
    [event] = json.loads(capsys.readouterr().out)["events"]
    assert (event["asn"], event["kind"], event["status"], event["revision"]) == (
        200,
        "lapse",
        "open",
        1,
    )
    assert (
        await asyncio.to_thread(main, ["collector", "events", "--config", cfg, "--asn", "100"]) == 0
    )
    assert capsys.readouterr().out == ""
    assert (
        await asyncio.to_thread(main, ["collector", "events", "--config", cfg, "--cc", "IRN"]) == 2
    )
    assert "--cc" in capsys.readouterr().err


async def test_events_follow_prints_each_new_change(tmp_path: Path) -> None:
    """``collector events --follow --json`` prints the records, then each change as the
    monitor saves it."""
    await one_leak(tmp_path)
    cfg = write_yaml(tmp_path)
    proc = await asyncio.create_subprocess_exec(
        *FILTERWATCH, "collector", "events", "--follow", "--json",
        "--config", str(cfg), stdout=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(60):
            existing = json.loads(await proc.stdout.readline())
            assert existing["status"] == "open"
            await one_leak_closes(tmp_path)
            change = json.loads(await proc.stdout.readline())
    finally:
        proc.terminate()
        await proc.wait()
    assert change["type"] == "leak.closed"
    assert change["event"]["id"] == existing["id"]


async def one_leak_closes(tmp_path: Path) -> None:
    """AS 200 blocks fb.example again in rounds 8 to 10: the pass at bucket 10 closes the
    record."""
    await monitor_pass(tmp_path, at(10), rounds(range(8, 11)))


async def test_alerts_status_counts_deliveries_per_webhook(tmp_path: Path, capsys: Any) -> None:
    """``collector alerts status --json``: pending deliveries per configured webhook, shown
    by scheme and host only (a webhook URL can be a secret)."""
    hook = webhook("https://hooks.example.org/services/SECRETPATH")
    store = SqliteStore(tmp_path / "collector.sqlite3")
    await store.open()
    await enqueue(store, [hook], n=3)
    await store.close()
    cfg = write_yaml(tmp_path, [{"url": hook.url, "secret": SECRET}])
    assert (
        await asyncio.to_thread(
            main, ["collector", "alerts", "status", "--config", str(cfg), "--json"]
        )
        == 0
    )
    out = capsys.readouterr().out
    [row] = json.loads(out)["webhooks"]
    assert (row["pending"], row["delivered"], row["failed"]) == (3, 0, 0)
    assert row["url"] == "https://hooks.example.org/…" and "SECRETPATH" not in out


def app_config(tmp_path: Path, hooks: tuple[Any, ...], monitor: bool) -> CollectorConfig:
    cfg = config(tmp_path, webhooks=hooks)
    return dataclasses.replace(
        cfg,
        netdb_path=write_netdb(tmp_path / "ip2asn.tsv"),
        monitor=dataclasses.replace(cfg.monitor, enabled=monitor, interval_s=0.2),
    )


async def test_metrics_show_the_outbox_by_state(aiohttp_client: Any, tmp_path: Path) -> None:
    """/metrics has the deliveries per subscription and state, and the attempts."""
    receiver = Receiver()
    await receiver.start()
    hook = webhook(receiver.url())
    client = await aiohttp_client(make_app(app_config(tmp_path, (hook,), monitor=False)))
    await enqueue(client.app[STORE], [hook], n=2)
    try:
        async with asyncio.timeout(30):
            while True:
                text = await (await client.get("/metrics")).text()
                if re.search(r'webhook_deliveries\{state="delivered",[^}]*\} 2\.0', text):
                    break
                await asyncio.sleep(0.2)
    finally:
        await receiver.stop()
    assert 'filterwatch_webhook_attempts_total{outcome="delivered"' in text
    assert "filterwatch_monitor_leader 0.0" in text


async def test_ingest_and_the_monitor_go_on_while_every_delivery_hangs(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    """A receiver that never answers: batches are still stored at once, the monitor still
    makes its records, and the deliveries wait in the outbox."""
    never = asyncio.Event()

    async def hang(n: int) -> web.StreamResponse:
        await never.wait()
        return web.Response()

    receiver = Receiver(hang)
    await receiver.start()
    hook = webhook(receiver.url(), timeout_s=60)
    client = await aiohttp_client(make_app(app_config(tmp_path, (hook,), monitor=True)))
    store = client.app[STORE]
    await enqueue(store, [hook], n=20)  # the receiver is busy with these
    agent, token = await enroll(client, "IR")
    try:
        async with asyncio.timeout(30):
            while not receiver.requests:  # noqa: ASYNC110 - deliveries are in flight
                await asyncio.sleep(0.1)
        for i in range(5):
            doc = batch(agent, [record(i, measured_at=time.time() - 30) for _ in range(3)])
            resp = await post_batch(client, token, doc)
            assert resp.status == 200, await resp.text()
        async with asyncio.timeout(30):
            while True:
                text = await (await client.get("/metrics")).text()
                if 'filterwatch_monitor_passes_total{kind="incremental"}' in text:
                    break
                await asyncio.sleep(0.1)
        assert await store.count_measurements() == 15
        pending = sum(s.pending for s in await store.outbox_summary())
        assert pending >= 4  # 16 in flight at most; the rest wait
    finally:
        never.set()
        await receiver.stop()
