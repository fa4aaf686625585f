"""A fleet for real: two ``filterwatch collector serve`` processes on one PostgreSQL behind
HAProxy (deploy/fleet/haproxy.cfg), 20 agents uploading through it with the real spool and
uploader; one collector is SIGKILLed mid-ingest and restarted. Every acknowledged result
is stored exactly once, nothing is lost, every agent empties its spool, and the monitor's
leadership moves to the collector left standing."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from agent.collector_api import CollectorClient, enroll
from agent.config import UploadConfig
from agent.spool import Spool
from agent.state import Status, StatusRecorder
from agent.uploader import Uploader
from bench.fleet import free_port, haproxy_config
from bench.ingest.workload import measurement as wire_measurement
from shared.codec import encode
from shared.schema import decode_measurement
from tests.conftest import skip_or_fail_in_ci

pytestmark = [pytest.mark.fleet, pytest.mark.postgres, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
AGENTS = 20
ROUNDS = 30
PER_ROUND = 10
ROUND_S = 0.25
FILTERWATCH = (sys.executable, "-m", "filterwatch")


@dataclass
class Fleet:
    tmp: Path
    config: Path
    ports: list[int]
    front: str
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, port: int) -> None:
        log = open(self.tmp / f"collector-{port}.log", "ab")  # noqa: SIM115
        self.procs[port] = subprocess.Popen(
            [*FILTERWATCH, "collector", "serve", "--config", str(self.config), "--port", str(port)],
            stdout=log,
            stderr=log,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            cwd=self.tmp,
        )
        log.close()

    def kill(self, port: int) -> None:
        self.procs[port].send_signal(signal.SIGKILL)
        self.procs[port].wait(30)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _leads(port: int) -> bool:
    """Whether the collector on ``port`` runs the monitor (holds the advisory lock)."""
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as resp,
        ):
            return "filterwatch_monitor_leader 1.0" in await resp.text()
    except aiohttp.ClientError:
        return False


async def _one_leader(fleet: Fleet, timeout_s: float = 60) -> int:
    """The port of the one collector that leads the monitor, once exactly one does."""
    deadline = time.monotonic() + timeout_s
    while True:
        leaders = [port for port in fleet.ports if await _leads(port)]
        if len(leaders) == 1:
            return leaders[0]
        assert time.monotonic() < deadline, f"not one monitor leader: {leaders}"
        await asyncio.sleep(0.2)


async def _healthy(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url + "/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            assert time.monotonic() < deadline, f"{url} never became healthy"
            await asyncio.sleep(0.2)


def _start_haproxy(binary: str, cfg: Path, log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen([binary, "-db", "-f", str(cfg)], stdout=log, stderr=log)


@pytest.fixture
def haproxy_bin() -> str:
    path = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(path).exists():
        skip_or_fail_in_ci("haproxy is not installed (Debian package haproxy; scripts/setup)")
    return path


@pytest.fixture
async def fleet(tmp_path: Path, pg_dsn: str, haproxy_bin: str) -> AsyncIterator[Fleet]:
    config = tmp_path / "collector.yaml"
    config.write_text(
        "listen: {host: 127.0.0.1, trusted_proxies: [127.0.0.1/32]}\n"
        f"database: {{postgres_dsn: '{pg_dsn}'}}\n"
        "limits: {max_inflight_batches: 32}\n"
        "logging: {json: true, level: warning}\n"
        "monitor: {enabled: true, interval_s: 0.5, bucket: 60s, window: 1h}\n"
    )
    ports = [free_port(), free_port()]
    front = free_port()
    fleet = Fleet(tmp_path, config, ports, f"http://127.0.0.1:{front}")
    for port in ports:
        fleet.start(port)
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(haproxy_config(front, ports))
    haproxy = _start_haproxy(haproxy_bin, cfg, tmp_path / "haproxy.log")
    try:
        for port in ports:
            await _healthy(f"http://127.0.0.1:{port}")
        await _healthy(fleet.front)
        yield fleet
    finally:
        haproxy.terminate()
        # Waiting for processes to exit blocks: off the loop.
        await asyncio.to_thread(haproxy.wait, 30)
        await asyncio.to_thread(fleet.stop_all)


@dataclass
class SimAgent:
    spool: Spool
    uploader: Uploader
    made: list[str] = field(default_factory=list)


async def _produce(agent: SimAgent, rng: random.Random) -> None:
    """Measure ROUNDS rounds of PER_ROUND results into the spool, like a daemon does."""
    for _ in range(ROUNDS):
        for _ in range(PER_ROUND):
            m = decode_measurement(encode(wire_measurement(rng, time.time())))
            agent.made.append(m.id)
            await agent.spool.put(m)
        await asyncio.sleep(ROUND_S)


async def _stored(dsn: str) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT count(*), count(DISTINCT measurement_id) FROM measurements"
        )
        assert row is not None
        return int(row[0]), int(row[1])
    finally:
        await conn.close()


def _collector_code(fleet: Fleet) -> str:
    done = subprocess.run(
        [
            *FILTERWATCH,
            "collector",
            "enroll-code",
            "--uses",
            str(AGENTS),
            "--config",
            str(fleet.config),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


async def test_collector_killed_mid_ingest_loses_nothing(
    fleet: Fleet, pg_dsn: str, tmp_path: Path
) -> None:
    """SIGKILL one of two collectors while 20 agents upload through HAProxy, restart it: every
    result made is stored exactly once and every spool drains (no agent stalls); the killed
    one led the monitor, and the other takes the lead."""
    code = await asyncio.to_thread(_collector_code, fleet)  # a subprocess: off the loop
    agents: list[SimAgent] = []
    clients = []
    upload = UploadConfig(batch_max_results=25, retry_base_s=0.2, retry_cap_s=2.0)
    async with await CollectorClient.open(fleet.front, None) as enrolling:
        credentials = [await enroll(enrolling, code) for _ in range(AGENTS)]
    for i, (agent_id, token) in enumerate(credentials):
        client = await CollectorClient.open(fleet.front, token)
        clients.append(client)
        state = tmp_path / f"agent-{i}"
        state.mkdir()
        spool = Spool(state / "spool.sqlite3", 100 * 1024 * 1024)
        await spool.open()
        uploader = Uploader(
            spool,
            client,
            agent_id,
            upload,
            StatusRecorder(state, Status()),
            rng=random.Random(i),
            linger_s=0.05,
            timeout_s=20.0,
        )
        agents.append(SimAgent(spool, uploader))
    stop = asyncio.Event()
    uploads = [asyncio.create_task(a.uploader.run(stop)) for a in agents]
    producers = [
        asyncio.create_task(_produce(a, random.Random(100 + i))) for i, a in enumerate(agents)
    ]
    total = AGENTS * ROUNDS * PER_ROUND
    try:
        # Mid-ingest: a third of the results stored, producers and uploads still going.
        deadline = time.monotonic() + 120
        while (await _stored(pg_dsn))[0] < total // 3:
            assert time.monotonic() < deadline, "ingest through HAProxy never got going"
            await asyncio.sleep(0.05)
        # The victim is the monitor's leader: its leadership must fail over too.
        victim = await _one_leader(fleet)
        await asyncio.to_thread(fleet.kill, victim)  # the agents upload on while it dies
        killed_at = await _stored(pg_dsn)
        assert killed_at[0] < total  # the kill came mid-ingest
        [survivor] = [port for port in fleet.ports if port != victim]
        assert await _one_leader(fleet) == survivor
        fleet.start(victim)
        await asyncio.gather(*producers)
        # Every spool drains; a stalled agent would leave results behind.
        deadline = time.monotonic() + 120
        while any(len(a.spool) for a in agents):
            left = {i: len(a.spool) for i, a in enumerate(agents) if len(a.spool)}
            assert time.monotonic() < deadline, f"agents stalled with results left: {left}"
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        await asyncio.gather(*uploads, return_exceptions=True)
        for a in agents:
            await a.spool.close()
        for client in clients:
            await client.close()

    made = [m for a in agents for m in a.made]
    assert len(made) == len(set(made)) == total
    rows, distinct = await _stored(pg_dsn)
    assert rows == distinct == total  # exactly once, nothing lost
    conn = await asyncpg.connect(pg_dsn)
    try:
        stored = {r[0] for r in await conn.fetch("SELECT measurement_id FROM measurements")}
    finally:
        await conn.close()
    assert stored == set(made)
    # The restarted collector is back in service, and does not take the lead back.
    await _healthy(f"http://127.0.0.1:{victim}")
    assert await _one_leader(fleet) == survivor
