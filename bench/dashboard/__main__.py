"""Benchmark of the dashboard's country page: 20 ISPs x 200 domains x 7 days of hourly
buckets (672,000 buckets, 2 agents per ISP).

    .venv/bin/python -m bench.dashboard [--isps 20] [--domains 200] [--days 7] [--requests 30]

A real collector app serves the page on 127.0.0.1 (port 0) from a fixed set of buckets
handed to the dashboard's data layer in place of the store (the store's aggregation of
such a window is measured by bench/analysis). It reports the one-off cost of a snapshot
(analysis and the country view, done in the background once per refresh_s) and then the
server time of GET /countries/XX: the handler's time from the collector's own request
timing, and the wall time seen by a client on loopback, over --requests requests.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import aiohttp_jinja2
from aiohttp import web

from collector.analysis.model import BucketCount
from collector.app import make_app
from collector.config import CollectorConfig, DatabaseConfig
from collector.dashboard.config import DashboardConfig
from collector.dashboard.data import build_snapshot, window
from collector.dashboard.views import DATA, _render_grid
from collector.filters import Filters

ROOT = Path(__file__).resolve().parents[2]

TOKEN = "fwa_bench-dashboard-token"
HOUR = 3600.0
METHODS = ("dns", "tls", "blockpage", "tcp_ip")


def make_buckets(isps: int, domains: int, days: int, now: float) -> list[BucketCount]:
    """One country: most domains blocked everywhere (by each ISP's own method), some open,
    a few leaks and a site down now and then; 2 agents per ISP and bucket."""
    rng = random.Random(11)
    since, until = window(now, days * 86400.0, HOUR)
    hours = int((until - since) // HOUR)
    names = [f"ISP {i}" for i in range(isps)]
    leaks = {
        (rng.randrange(isps), rng.randrange(domains)): rng.randrange(hours - 12) for _ in range(8)
    }
    out: list[BucketCount] = []
    for i in range(isps):
        asn = 64512 + i
        for d in range(domains):
            domain = f"site-{d:03d}.example"
            blocked = d % 4 != 0
            method = METHODS[(i + d) % len(METHODS)]
            leak_at = leaks.get((i, d))
            for h in range(hours):
                start = since + h * HOUR
                leaking = leak_at is not None and leak_at <= h < leak_at + 6
                if not blocked or leaking:
                    counts = {"ok": 2}
                    ok_agents: tuple[str, ...] = (f"a{i}x0", f"a{i}x1")
                elif rng.random() < 0.01:
                    counts = {"site_down": 2}
                    ok_agents = ()
                else:
                    counts = {method: 2}
                    ok_agents = ()
                out.append(
                    BucketCount(
                        cc="XX",
                        asn=asn,
                        network_name=names[i],
                        domain=domain,
                        bucket_start=start,
                        counts=counts,
                        agents=2,
                        accessible_agent_ids=ok_agents,
                        example_ids=(f"m-{i}-{d}-{h}",) if ok_agents else (),
                    )
                )
    return out


class FixedSource:
    """The dashboard's data source with the buckets already made (no store)."""

    def __init__(self, buckets: list[BucketCount], isps: int) -> None:
        self._buckets = buckets
        self._coverage = {("XX", 64512 + i): 2 for i in range(isps)}

    async def buckets(self, filters: Filters) -> list[BucketCount]:
        return [
            b
            for b in self._buckets
            if (filters.domain is None or b.domain == filters.domain)
            and (filters.since is None or b.bucket_start >= filters.since)
        ]

    async def coverage(self, since: float) -> dict[tuple[str, int], int]:
        return self._coverage


async def run(args: argparse.Namespace) -> None:
    now = time.time()
    t0 = time.perf_counter()
    buckets = make_buckets(args.isps, args.domains, args.days, now)
    print(f"buckets: {len(buckets):,} (made in {time.perf_counter() - t0:.1f} s)")

    since, until = window(now, args.days * 86400.0, HOUR)
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    snap = build_snapshot(buckets, {}, since=since, until=until, bucket_s=HOUR, computed_at=now)
    print(
        f"snapshot (analysis + country view, once per refresh, in the background):"
        f" {time.perf_counter() - t0:.2f} s wall, {time.process_time() - cpu0:.2f} s CPU;"
        f" {len(snap.countries['XX'].leaks)} leaks"
    )

    with tempfile.TemporaryDirectory() as tmp:
        config = CollectorConfig(
            database=DatabaseConfig(sqlite_path=Path(tmp) / "bench.sqlite3"),
            analyst_tokens=(TOKEN,),
            dashboard=DashboardConfig(window_s=args.days * 86400.0, refresh_s=3600.0),
        )
        app = make_app(config)
        data = app[DATA]
        data.source = FixedSource(buckets, args.isps)  # in place of the store
        handler_ms: list[float] = []
        handler_cpu_ms: list[float] = []

        @web.middleware
        async def timing(request: web.Request, handler):  # type: ignore[no-untyped-def]
            started, cpu = time.perf_counter(), time.thread_time()
            response = await handler(request)
            if request.path.startswith("/countries/"):
                handler_ms.append((time.perf_counter() - started) * 1000)
                handler_cpu_ms.append((time.thread_time() - cpu) * 1000)
            return response

        app.middlewares.append(timing)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
                async with client.get(base + "/login") as resp:
                    text = await resp.text()
                csrf = text.split('name="csrf" value="')[1].split('"')[0]
                async with client.post(
                    base + "/login", data={"csrf": csrf, "token": TOKEN}, allow_redirects=False
                ) as resp:
                    assert resp.status == 303, resp.status
                t0 = time.perf_counter()
                await data.snapshot()  # the first page after start-up waits for it
                print(
                    f"first snapshot in the app (analysis, view, grid rendered):"
                    f" {time.perf_counter() - t0:.2f} s"
                )
                view = (await data.snapshot()).countries["XX"]
                env = aiohttp_jinja2.get_env(app)
                grid_ms = []
                for _ in range(5):
                    cpu = time.thread_time()
                    _render_grid(env, view)
                    grid_ms.append((time.thread_time() - cpu) * 1000)
                print(
                    f"the grid's HTML, rendered once per snapshot on its worker thread:"
                    f" median {statistics.median(grid_ms):.0f} ms CPU of 5"
                )
                wall_ms: list[float] = []
                size = 0
                for _ in range(args.requests):
                    t0 = time.perf_counter()
                    async with client.get(base + "/countries/XX") as resp:
                        body = await resp.read()
                        assert resp.status == 200
                    wall_ms.append((time.perf_counter() - t0) * 1000)
                    size = len(body)
        finally:
            await runner.cleanup()
    cells = args.isps * args.domains
    print(
        f"GET /countries/XX ({args.isps} ISPs x {args.domains} domains = {cells:,} cells,"
        f" {size / 1024:.0f} KiB of HTML), {args.requests} requests:"
    )
    for name, values in (
        ("server, handler wall", handler_ms),
        ("server, handler CPU", handler_cpu_ms),
        ("client wall, loopback", wall_ms),
    ):
        values = sorted(values)
        p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
        print(
            f"  {name}: median {statistics.median(values):.0f} ms, p95 {p95:.0f} ms,"
            f" max {values[-1]:.0f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--isps", type=int, default=20)
    parser.add_argument("--domains", type=int, default=200)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--requests", type=int, default=30)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
