"""Agent throughput and memory: 1,000 slow loopback targets, default concurrency against one
measurement at a time, in the same run.

    .venv/bin/python -m bench.agent.run [--targets 1000] [--sample 50]

Everything stays on 127.0.0.1. The bench process serves:

- a DNS responder that answers ``site-N.bench.test`` with 127.0.0.1 after 50 ms;
- one HTTP site for every name, which waits 50 ms after accepting a connection and 50 ms
  more before answering a request (so each TCP and HTTP step costs 50 ms);
- a minimal collector: targets, whoami, batches, and a control (the facts of one site,
  measured once at start and given for every URL, so that the collector side costs
  nothing here).

Then it runs a real ``filterwatch agent run`` subprocess twice: at the default concurrency
on all targets, and with ``concurrency: 1`` on a sample whose time is extrapolated to all
targets (said in the output). Wall time runs from the agent's first request for targets to
the collector holding every result; peak RSS is the agent process's ``VmHWM``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.message
import dns.rcode
import dns.rrset
from aiohttp import web

from agent.config import DEFAULT_CONCURRENCY
from agent.state import Credentials, save_credentials
from shared.codec import CONTENT_TYPE, encode
from shared.schema import decode_batch, decode_measurement

ROOT = Path(__file__).resolve().parents[2]

STEP_DELAY_S = 0.05
TOKEN = "bench-token"
AGENT_ID = "bench-agent"
PAGE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 71\r\n"
    b"Connection: close\r\n\r\n"
    b"<html><head><title>Bench site</title></head><body>hello</body></html>\n\n"
)


class SlowDns(asyncio.DatagramProtocol):
    """Answers A queries for *.bench.test with 127.0.0.1 after STEP_DELAY_S."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        asyncio.get_running_loop().call_later(STEP_DELAY_S, self._answer, data, addr)

    def _answer(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return
        reply = dns.message.make_response(query)
        name = query.question[0].name
        if name.to_text().endswith(".bench.test."):
            reply.answer.append(dns.rrset.from_text(name, 60, "IN", "A", "127.0.0.1"))
        else:
            reply.set_rcode(dns.rcode.NXDOMAIN)
        self.transport.sendto(reply.to_wire(), addr)  # type: ignore[attr-defined]


async def slow_site(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Waits before handling the connection and again before answering the request."""
    try:
        await asyncio.sleep(STEP_DELAY_S)
        request = await reader.readuntil(b"\r\n\r\n")
        if request:
            await asyncio.sleep(STEP_DELAY_S)
            writer.write(PAGE)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass  # the TCP step connects and closes without a request
    finally:
        writer.close()


@dataclass
class BenchCollector:
    targets: list[str]
    control: bytes
    expected: int = 0
    first_request: float | None = None
    finished: float | None = None
    stored: set[str] = field(default_factory=set)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    durations_ms: list[float] = field(default_factory=list)  # each measurement's total time

    def reset(self, targets: list[str]) -> None:
        self.targets = targets
        self.expected = len(targets)
        self.first_request = self.finished = None
        self.stored = set()
        self.done = asyncio.Event()
        self.durations_ms = []

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_get("/api/v1/targets", self.get_targets)
        app.router.add_get("/api/v1/whoami", self.whoami)
        app.router.add_post("/api/v1/control", self.post_control)
        app.router.add_post("/api/v1/batches", self.post_batch)
        return app

    async def get_targets(self, request: web.Request) -> web.Response:
        if self.first_request is None:
            self.first_request = time.perf_counter()
        return web.json_response({"targets": self.targets})

    async def whoami(self, request: web.Request) -> web.Response:
        return web.json_response({"asn": 64500, "cc": "IR", "network_name": "Bench ISP"})

    async def post_control(self, request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=self.control, content_type=CONTENT_TYPE)

    async def post_batch(self, request: web.Request) -> web.Response:
        env = decode_batch(await request.read())
        results = [decode_measurement(raw) for raw in env.results]
        new = {r.id for r in results} - self.stored
        self.durations_ms.extend(r.timings.get("total_ms", 0.0) for r in results if r.id in new)
        self.stored |= new
        if len(self.stored) >= self.expected and not self.done.is_set():
            self.finished = time.perf_counter()
            self.done.set()
        body = {"accepted": len(new), "duplicates": len(env.results) - len(new), "rejected": []}
        return web.Response(body=encode(body), content_type=CONTENT_TYPE)


@dataclass(frozen=True)
class RunFigures:
    targets: int
    concurrency: int
    wall_s: float
    peak_rss_mb: float
    cpu_s: float  # user + system time of the agent process
    threads: int  # the most threads seen in the agent process
    p50_ms: float  # a measurement's own duration, median
    p99_ms: float


def proc_status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def max_threads(pid: int, seen: list[int]) -> None:
    while True:
        seen.append(proc_status(pid, "Threads"))
        await asyncio.sleep(0.2)


async def run_agent(
    collector: BenchCollector,
    collector_url: str,
    dns_port: int,
    targets: list[str],
    concurrency: int,
    workdir: Path,
) -> RunFigures:
    state = workdir / f"state-{concurrency}"
    save_credentials(state, Credentials(AGENT_ID, TOKEN, collector_url))
    config = {
        "collector_url": collector_url,
        "state_dir": str(state),
        "interval_s": 3600,
        "concurrency": concurrency,
        "per_host_limit": min(2, concurrency),
        "probes": {
            "timeout_s": 15,
            "resolver": f"127.0.0.1:{dns_port}",
            "system_resolver": False,
        },
        "logging": {"json": True, "level": "warning"},
    }
    cfg_path = workdir / f"agent-{concurrency}.yaml"
    cfg_path.write_text(json.dumps(config))  # JSON is YAML
    collector.reset(targets)
    proc = await asyncio.create_subprocess_exec(
        str(ROOT / ".venv" / "bin" / "filterwatch"),
        "agent",
        "run",
        "--config",
        str(cfg_path),
        stderr=open(workdir / f"agent-{concurrency}.log", "wb"),  # noqa: SIM115, ASYNC230
    )
    threads: list[int] = [0]
    sampler = asyncio.create_task(max_threads(proc.pid, threads))
    try:
        async with asyncio.timeout(1800):
            await collector.done.wait()
        rss = proc_status(proc.pid, "VmHWM") / 1024
        cpu = cpu_seconds(proc.pid)
    finally:
        sampler.cancel()
        proc.send_signal(signal.SIGTERM)
        await proc.wait()
    assert collector.first_request is not None and collector.finished is not None
    wall = collector.finished - collector.first_request
    ms = sorted(collector.durations_ms) or [0.0]
    p50, p99 = ms[len(ms) // 2], ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return RunFigures(len(targets), concurrency, wall, rss, cpu, max(threads), p50, p99)


async def main(n_targets: int, sample: int) -> None:
    from shared.probes.web import ProbeOptions, measure_facts

    loop = asyncio.get_running_loop()
    dns_transport, _ = await loop.create_datagram_endpoint(SlowDns, local_addr=("127.0.0.1", 0))
    dns_port = dns_transport.get_extra_info("sockname")[1]
    site = await asyncio.start_server(slow_site, "127.0.0.1", 0, backlog=1024)
    site_port = site.sockets[0].getsockname()[1]
    urls = [f"http://site-{i}.bench.test:{site_port}/" for i in range(n_targets)]
    options = ProbeOptions(timeout_s=15, resolver=f"127.0.0.1:{dns_port}", system_resolver=False)
    control = encode(dict(await measure_facts(urls[0], options)))

    collector = BenchCollector(urls, control)
    runner = web.AppRunner(collector.app(), access_log=None)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    collector_url = f"http://127.0.0.1:{tcp._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        fast = await run_agent(
            collector, collector_url, dns_port, urls, DEFAULT_CONCURRENCY, workdir
        )
        slow = await run_agent(collector, collector_url, dns_port, urls[:sample], 1, workdir)
    await runner.cleanup()
    site.close()
    dns_transport.close()

    per_target = slow.wall_s / slow.targets
    extrapolated = per_target * n_targets
    print(
        f"agent bench: {n_targets} targets on loopback, {STEP_DELAY_S * 1000:.0f} ms added "
        "per DNS answer, per connection and per HTTP response"
    )
    print(
        f"  concurrency {fast.concurrency:>3}: {fast.targets} targets in {fast.wall_s:.1f} s "
        f"({fast.targets / fast.wall_s:.1f}/s), peak RSS {fast.peak_rss_mb:.1f} MB, "
        f"CPU {fast.cpu_s:.1f} s, at most {fast.threads} threads"
    )
    print(
        f"  concurrency   1: {slow.targets} targets (a sample) in {slow.wall_s:.1f} s "
        f"= {per_target * 1000:.0f} ms each, peak RSS {slow.peak_rss_mb:.1f} MB, "
        f"CPU {slow.cpu_s:.1f} s, at most {slow.threads} threads"
    )
    print(
        f"  a measurement's own time, median / 99th percentile: "
        f"{fast.p50_ms:.0f} / {fast.p99_ms:.0f} ms at concurrency {fast.concurrency}, "
        f"{slow.p50_ms:.0f} / {slow.p99_ms:.0f} ms one at a time"
    )
    print(
        f"  one at a time, extrapolated from the sample to {n_targets} targets: "
        f"{extrapolated:.0f} s"
    )
    print(
        f"  speed-up: {extrapolated / fast.wall_s:.1f}x (goal >= 20x); "
        f"peak RSS {fast.peak_rss_mb:.1f} MB (goal < 60 MB)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--sample", type=int, default=50)
    args = parser.parse_args()
    os.environ.pop("HTTP_PROXY", None)
    asyncio.run(main(args.targets, args.sample))
