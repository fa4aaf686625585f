"""The agent daemon end to end on loopback: rounds, the durable spool, delivery after an
outage, the disk cap, unknown networks, the clock."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from agent.collector_api import CollectorClient
from agent.config import AgentConfig
from agent.runner import Agent, Probing, real_probing
from agent.spool import read_stats
from agent.state import Credentials, save_credentials
from collector.app import make_app
from collector.auth import hash_enroll_code
from collector.config import CollectorConfig
from collector.state import STORE
from shared.config import config_from_mapping
from shared.schema import ControlFacts, Measurement, NetworkFacts
from tests.agent.collector_double import AGENT_ID, TOKEN, CollectorDouble
from tests.agent.sites import site_app
from tests.commands import FILTERWATCH
from tests.conftest import skip_or_fail_in_ci

ServerFactory = Callable[..., Awaitable[TestServer]]
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Recorder:
    """Wraps the real probes and remembers, in order, the ids of what they measured."""

    ids: list[str] = field(default_factory=list)
    results: list[Measurement] = field(default_factory=list)
    measured: asyncio.Event = field(default_factory=asyncio.Event)

    def factory(self, config: AgentConfig, collector: CollectorClient) -> Probing:
        real = real_probing(config, collector)

        async def measure(
            url: str, network: NetworkFacts | None, control: ControlFacts | None, age: float | None
        ) -> Measurement:
            m = await real.measure(url, network, control, age)
            self.ids.append(m.id)
            self.results.append(m)
            self.measured.set()
            return m

        return Probing(measure, real.control, fingerprints=real.fingerprints)

    async def wait_for(self, count: int) -> None:
        while len(self.ids) < count:
            self.measured.clear()
            await self.measured.wait()


def agent_config(collector: str, tmp_path: Path, **overrides: Any) -> AgentConfig:
    doc: dict[str, Any] = {
        "collector_url": collector,
        "state_dir": str(tmp_path / "state"),
        "interval_s": 1,
        "concurrency": 4,
        "shutdown_grace_s": 5,
        "probes": {"timeout_s": 5, "system_resolver": False, "resolver": "127.0.0.1:9"},
        "upload": {"retry_base_s": 0.05, "retry_cap_s": 0.2},
        "logging": {"json": True, "level": "warning"},
    }
    doc.update(overrides)
    return config_from_mapping(AgentConfig, doc)


async def start_agent(
    config: AgentConfig, recorder: Recorder
) -> tuple[Agent, asyncio.Event, asyncio.Task[None]]:
    assert config.state_dir is not None
    save_credentials(config.state_dir, Credentials(AGENT_ID, TOKEN, config.collector_url))
    agent = Agent(
        config,
        Credentials(AGENT_ID, TOKEN, config.collector_url),
        config.state_dir,
        recorder.factory,
    )
    stop = asyncio.Event()
    return agent, stop, asyncio.create_task(agent.run(stop))


@contextlib.asynccontextmanager
async def agent_running(
    aiohttp_server: ServerFactory, double: CollectorDouble, tmp_path: Path, **overrides: Any
) -> AsyncIterator[Recorder]:
    """An agent (configured with ``overrides``) running against ``double``, served on
    loopback; stopped, and its task awaited, when the block ends."""
    collector = await aiohttp_server(double.app())
    recorder = Recorder()
    config = agent_config(str(collector.make_url("")), tmp_path, **overrides)
    _agent, stop, task = await start_agent(config, recorder)
    yield recorder
    stop.set()
    await task


async def sites(aiohttp_server: ServerFactory, n: int) -> list[str]:
    server = await aiohttp_server(site_app())
    return [str(server.make_url(f"/page{i}")) for i in range(n)]


async def test_agent_measures_uploads_and_stops_cleanly(
    aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    """Every target is measured each round with the collector's network identity, and every
    result reaches the collector exactly once; a stop leaves an empty spool."""
    double = CollectorDouble(targets=await sites(aiohttp_server, 6))
    async with agent_running(aiohttp_server, double, tmp_path) as recorder, asyncio.timeout(60):
        await recorder.wait_for(12)  # two rounds
        await double.wait_for(set(recorder.ids[:12]))
    assert all(double.stored[i] == 1 for i in recorder.ids)
    assert set(double.stored) == set(recorder.ids)
    assert {m.url for m in recorder.results[:6]} == set(double.targets)
    assert all(m.network == double.network for m in recorder.results)
    assert all(m.clock_age_s is not None for m in recorder.results)
    stats = read_stats(tmp_path / "state" / "spool.sqlite3")
    assert stats is not None and stats.results == 0


async def test_agent_keeps_measuring_while_the_collector_is_down(
    aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    """With the collector unreachable the agent measures from its cached target list and
    keeps the results; when the collector is back it delivers all of them."""
    double = CollectorDouble(targets=await sites(aiohttp_server, 4))
    collector = await aiohttp_server(double.app())
    port = collector.port
    recorder = Recorder()
    config = agent_config(str(collector.make_url("")), tmp_path)
    agent, stop, task = await start_agent(config, recorder)
    async with asyncio.timeout(60):
        await recorder.wait_for(4)
        await double.wait_for(set(recorder.ids[:4]))
        await collector.close()
        delivered_before = set(double.stored)
        await recorder.wait_for(len(recorder.ids) + 12)  # three more rounds, offline
        assert len(agent.spool) > 0
        offline = [m for m in recorder.results if m.id not in delivered_before]
        assert all(m.network is None for m in offline[4:])
        collector = await aiohttp_server(double.app(), port=port)
        await double.wait_for(set(recorder.ids))
    stop.set()
    await task
    assert all(double.stored[i] == 1 for i in recorder.ids)
    assert len(agent.spool) == 0


async def test_disk_cap_drops_the_oldest_while_the_collector_is_down(
    aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    """Offline past the disk cap, the agent drops its oldest results, counts them, and later
    delivers the newest ones it kept."""
    double = CollectorDouble(targets=await sites(aiohttp_server, 5))
    collector = await aiohttp_server(double.app())
    port = collector.port
    recorder = Recorder()
    config = agent_config(
        str(collector.make_url("")),
        tmp_path,
        concurrency=1,
        per_host_limit=1,
        spool={"max_bytes": 65536},
    )
    agent, stop, task = await start_agent(config, recorder)
    async with asyncio.timeout(120):
        await recorder.wait_for(5)
        await double.wait_for(set(recorder.ids[:5]))
        await collector.close()
        while (await agent.spool.stats()).dropped < 3:
            await recorder.wait_for(len(recorder.ids) + 1)
        stop.set()
        await task
    stats = read_stats(tmp_path / "state" / "spool.sqlite3")
    assert stats is not None and stats.dropped >= 3 and stats.bytes <= 65536
    # concurrency 1: the spool holds results in the order they were measured
    offline = [i for i in recorder.ids if i not in double.stored]
    kept = offline[stats.dropped :]
    assert len(kept) == stats.results
    # Back online: a new agent process delivers exactly the newest results it kept.
    collector = await aiohttp_server(double.app(), port=port)
    agent, stop, task = await start_agent(config, Recorder())
    async with asyncio.timeout(60):
        await double.wait_for(set(kept))
    stop.set()
    await task
    assert not set(offline[: stats.dropped]) & set(double.stored)


async def test_unknown_network_results_are_kept_and_inconclusive(
    aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    """When the collector cannot place the agent's network, results carry no network and
    are judged inconclusive, and are still delivered."""
    double = CollectorDouble(
        targets=await sites(aiohttp_server, 3), network={"asn": 0, "cc": "ZZ", "network_name": ""}
    )
    async with agent_running(aiohttp_server, double, tmp_path) as recorder, asyncio.timeout(60):
        await recorder.wait_for(3)
        await double.wait_for(set(recorder.ids[:3]))
    assert all(m.network is None for m in recorder.results)
    assert all(m.blocking.value == "inconclusive" for m in recorder.results)


async def test_measurement_times_follow_the_collectors_clock(
    aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    """A collector clock an hour ahead moves the results' times by that hour."""
    ahead = time.time() + 3600
    double = CollectorDouble(
        targets=await sites(aiohttp_server, 2),
        date_header=time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(ahead)),
    )
    running = agent_running(aiohttp_server, double, tmp_path, interval_s=3600)
    async with running as recorder, asyncio.timeout(60):
        await recorder.wait_for(2)
        await double.wait_for(set(recorder.ids[:2]))
    assert all(abs(double.measured_at[i] - ahead) < 120 for i in recorder.ids[:2])


# --- the real agent process against the real collector ------------------------------------


def slow_site_app(delay_s: float) -> web.Application:
    """Pages that take ``delay_s`` to answer, so that measurements are in flight when the
    agent is killed."""

    async def page(request: web.Request) -> web.Response:
        await asyncio.sleep(delay_s)
        return web.Response(text="<html><title>slow</title></html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    return app


def logged_ids(log_path: Path) -> set[str]:
    """Ids of the results an agent process logged as spooled (JSON log lines)."""
    ids = set()
    for line in log_path.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "result_spooled":
            ids.add(event["id"])
    return ids


def spooled_ids(spool: Path) -> set[str]:
    conn = sqlite3.connect(spool)
    try:
        return {row[0] for row in conn.execute("SELECT id FROM results")}
    finally:
        conn.close()


def collector_rows(db: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(db)
    try:
        return list(conn.execute("SELECT measurement_id, agent_id FROM measurements"))
    finally:
        conn.close()


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 60.0) -> None:
    """Wait until ``check`` holds (polling: the agent is another process)."""
    async with asyncio.timeout(timeout_s):
        for _ in itertools.count():
            if await check():
                return
            await asyncio.sleep(0.1)


async def start_agent_process(config: Path, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as err:
        return await asyncio.create_subprocess_exec(
            *FILTERWATCH,
            "agent",
            "run",
            "--config",
            str(config),
            stderr=err,
            cwd=ROOT,
        )


@pytest.mark.slow
async def test_sigkill_mid_round_loses_nothing_and_duplicates_nothing(
    aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    """An agent process killed with SIGKILL while measuring and uploading, then restarted,
    delivers every result it spooled to the real collector exactly once, and a SIGTERM
    then stops it cleanly."""
    site = await aiohttp_server(slow_site_app(0.3))
    urls = [str(site.make_url(f"/p{i}")) for i in range(12)]
    (tmp_path / "targets.yaml").write_text(yaml.safe_dump(urls))
    db = tmp_path / "collector.sqlite3"
    collector_config = config_from_mapping(
        CollectorConfig,
        {"database": {"sqlite_path": str(db)}, "targets_path": str(tmp_path / "targets.yaml")},
    )
    app = make_app(collector_config)
    collector = await aiohttp_server(app)
    await app[STORE].add_enroll_code(hash_enroll_code("kill-test-code"), None, 1, None)
    url = str(collector.make_url("")).rstrip("/")
    state = tmp_path / "state"
    enrolled = await asyncio.create_subprocess_exec(
        *FILTERWATCH,
        "agent",
        "enroll",
        "--collector",
        url,
        "--code",
        "kill-test-code",
        "--state-dir",
        str(state),
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
    )
    assert await enrolled.wait() == 0
    agent_id = json.loads((state / "credentials.json").read_text())["agent_id"]
    config = tmp_path / "agent.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "collector_url": url,
                "state_dir": str(state),
                "interval_s": 2,
                "concurrency": 6,
                "per_host_limit": 6,
                "probes": {"timeout_s": 5, "system_resolver": False, "resolver": "127.0.0.1:9"},
                "upload": {"batch_max_results": 5, "retry_base_s": 0.1, "retry_cap_s": 0.5},
                "logging": {"json": True, "level": "info"},
            }
        )
    )
    logs = [tmp_path / "run1.log", tmp_path / "run2.log"]
    spool = state / "spool.sqlite3"

    proc = await start_agent_process(config, logs[0])

    async def delivered_some_and_more_spooled() -> bool:
        stored = {mid for mid, _ in await asyncio.to_thread(collector_rows, db)}
        return len(stored) >= 5 and len(await asyncio.to_thread(logged_ids, logs[0])) > len(stored)

    await eventually(delivered_some_and_more_spooled)
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    left_in_spool = await asyncio.to_thread(spooled_ids, spool)

    proc = await start_agent_process(config, logs[1])
    spooled = left_in_spool | logged_ids(logs[0])

    async def all_delivered() -> bool:
        stored = {mid for mid, _ in await asyncio.to_thread(collector_rows, db)}
        return (spooled | await asyncio.to_thread(logged_ids, logs[1])) <= stored

    await eventually(all_delivered)
    proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):  # the shutdown grace is 10 s
        assert await proc.wait() == 0
    spooled |= logged_ids(logs[1])
    rows = await asyncio.to_thread(collector_rows, db)
    ids = [mid for mid, _ in rows]
    assert len(ids) == len(set(ids))  # once each
    assert spooled <= set(ids)  # nothing lost
    assert {a for _, a in rows} == {agent_id}
    # Results put in the spool in the instant before the kill, not yet logged, may be in the
    # collector without a log line; never more than the measurements in flight.
    assert len(set(ids) - spooled) <= 6
    assert await asyncio.to_thread(spooled_ids, spool) == set()
    assert '"agent_stopped"' in logs[1].read_text()


@dataclass
class Gauge:
    """Counts the requests being answered at once, per host and in all, and the most seen."""

    now: dict[str, int] = field(default_factory=dict)
    most: dict[str, int] = field(default_factory=dict)
    now_total: int = 0
    most_total: int = 0

    def app(self) -> web.Application:
        async def page(request: web.Request) -> web.Response:
            host = request.host
            self.now[host] = self.now.get(host, 0) + 1
            self.most[host] = max(self.most.get(host, 0), self.now[host])
            self.now_total += 1
            self.most_total = max(self.most_total, self.now_total)
            try:
                await asyncio.sleep(0.2)
            finally:
                self.now[host] -= 1
                self.now_total -= 1
            return web.Response(text="<title>busy</title>", content_type="text/html")

        app = web.Application()
        app.router.add_get("/{tail:.*}", page)
        return app


@pytest.mark.parametrize(
    ("concurrency", "per_host_limit", "hosts", "expected_per_host", "expected_total"),
    [(4, 1, 2, 1, 2), (3, 3, 1, 3, 3)],
)
async def test_concurrency_and_per_host_limits_hold(
    aiohttp_server: ServerFactory,
    tmp_path: Path,
    concurrency: int,
    per_host_limit: int,
    hosts: int,
    expected_per_host: int,
    expected_total: int,
) -> None:
    """No host ever sees more than per_host_limit measurements at once and no more than
    ``concurrency`` run in all, while the workers use the room they have."""
    gauge = Gauge()
    servers = [
        await aiohttp_server(gauge.app(), host=host) for host in ("127.0.0.1", "127.0.0.2")[:hosts]
    ]
    urls = [str(s.make_url(f"/p{i}")) for s in servers for i in range(12 // hosts)]
    double = CollectorDouble(targets=urls)
    collector = await aiohttp_server(double.app())
    recorder = Recorder()
    config = agent_config(
        str(collector.make_url("")),
        tmp_path,
        interval_s=3600,
        concurrency=concurrency,
        per_host_limit=per_host_limit,
    )
    _agent, stop, task = await start_agent(config, recorder)
    async with asyncio.timeout(60):
        await recorder.wait_for(12)
    stop.set()
    await task
    assert max(gauge.most.values()) == expected_per_host
    assert gauge.most_total == expected_total


ADDRESS_CHANGE_SCRIPT = """
import asyncio, subprocess, sys
from aiohttp import web
from agent.collector_api import CollectorClient
from agent.identity import Clock, NetworkIdentity
from tests.conftest import skip_or_fail_in_ci
from tests.agent.collector_double import TOKEN, CollectorDouble

async def main():
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    double = CollectorDouble()
    runner = web.AppRunner(double.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    client = await CollectorClient.open(f"http://127.0.0.1:{port}", TOKEN)
    identity = NetworkIdentity(client, Clock(), check_every_s=0)
    await identity.current()
    await identity.current()
    calls = [double.whoami_calls]
    veth = ["ip", "link", "add", "fw-a", "type", "veth", "peer", "name", "fw-b"]
    subprocess.run(veth, check=True)
    await identity.current()
    calls.append(double.whoami_calls)
    await client.close()
    await runner.cleanup()
    print(calls)

asyncio.run(main())
"""


async def test_a_change_of_local_addresses_asks_whoami_again(tmp_path: Path) -> None:
    """The network is asked again as soon as the machine's interfaces change, and not
    before (run in a network namespace of its own, where an interface is added)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        skip_or_fail_in_ci("needs root, unshare and ip to change interfaces in a namespace")
    proc = await asyncio.create_subprocess_exec(
        "unshare",
        "--net",
        sys.executable,
        "-c",
        ADDRESS_CHANGE_SCRIPT,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert json.loads(out.splitlines()[-1]) == [1, 2]


async def test_the_collectors_fingerprints_are_used_and_cached(
    aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    """The agent measures with the collector's fingerprint set (an Iranian one, matched on
    an Iranian network), keeps it in the state directory for when the collector is away,
    and asks again with its ETag: an unchanged set is not sent again."""
    from shared.blockpages import Fingerprints, fingerprint_from_row

    row = {
        "name": "collector_fp",
        "scope": "isp",
        "location_found": "body",
        "pattern_type": "regexp",
        "pattern": "<body>hel+o</body>",
        "expected_countries": "IR",
    }
    prints = Fingerprints([fingerprint_from_row(row, "test", "row")])
    double = CollectorDouble(targets=await sites(aiohttp_server, 2), fingerprints=prints.to_json())
    async with agent_running(aiohttp_server, double, tmp_path) as recorder, asyncio.timeout(60):
        await recorder.wait_for(4)  # two rounds
    assert {m.blockpage for m in recorder.results[:4]} == {"collector_fp"}
    assert double.fingerprints_unchanged >= 1
    cached = json.loads((tmp_path / "state" / "fingerprints.json").read_text())
    assert cached["fingerprints"][0]["name"] == "collector_fp"
