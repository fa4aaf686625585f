"""The monitor's cost per pass against the store's size.

    .venv/bin/python -m bench.monitor.run                       # 1 M and 10 M measurements
    .venv/bin/python -m bench.monitor.run --measurements 1000000
    .venv/bin/python -m bench.monitor.run --lab two-leaks iran-2013   # lab detection latency

The stores are bench/analysis's synthetic ones (5 countries of 3 ISPs, 200 domains, one
measurement per agent and domain every 5 minutes, 7 injected leaks), generated once into
bench/monitor/out/. The monitor runs in this process on the real SQLite store, hourly
buckets, a 7-day window, with a clock set inside the last hour of the data (the bucket
still filling). Timed: the first pass (reads the whole window once), a pass with no new
data, a pass after one 500-result batch of one agent, and a pass after 100 such batches
(every agent of every country). Batches go through the store's real insert (which records
the dirty series in the same transaction); only the pass is timed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench.analysis.generate import (
    AGENTS_PER_ISP,
    BLOCKED,
    COUNTRIES,
    DOMAINS,
    T0,
    asn_of,
    generate,
    plan,
)
from collector.config import CollectorConfig, DatabaseConfig, MonitorConfig
from collector.monitor.runner import Monitor, PassResult
from collector.store.base import PSEUDONYM_SECRET
from collector.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parents[2]

OUT = ROOT / "bench" / "monitor" / "out"
BATCH = 500


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def batch_rows(cc_index: int, isp: int, agent: int, end: float) -> list[tuple[Any, ...]]:
    """One agent's 500 results of the last minutes before ``end``: 2.5 rounds of its targets."""
    cc = COUNTRIES[cc_index]
    agent_id, asn, name = f"agent-{cc}-{isp}-{agent}", asn_of(cc_index, isp), f"{cc} Net {isp}"
    batch = uuid.uuid4().hex
    rows = []
    for i in range(BATCH):
        domain = DOMAINS[i % len(DOMAINS)]
        at = end - 900 + i
        ok = domain not in BLOCKED
        rows.append(
            (
                f"b-{uuid.uuid4().hex}", agent_id, batch, at, at + 5, cc, asn, name,
                f"https://{domain}/", domain, "ok" if ok else "tls", 1 if ok else 0,
                None if ok else "connection_reset", None, "192.0.2.10", 200 if ok else None,
                5120 if ok else None, 1, None, b"\x80",
            )
        )  # fmt: skip
    return rows


def agents() -> list[tuple[int, int, int]]:
    return [
        (ci, isp, a)
        for ci in range(len(COUNTRIES))
        for isp, n in enumerate(AGENTS_PER_ISP)
        for a in range(n)
    ]


async def measure(n: int, repeats: int) -> dict[str, Any]:
    path = OUT / f"store-{n}.sqlite3"
    if not path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        started = time.perf_counter()
        generate(partial, n)
        partial.rename(path)
        print(f"generated {n} measurements in {time.perf_counter() - started:.0f} s", flush=True)
    _, hours = plan(n)
    end = T0 + hours * 3600.0
    clock = Clock(end - 60.0)
    store = SqliteStore(path)
    await store.open()
    try:
        measurements = await store.count_measurements()
        config = CollectorConfig(
            database=DatabaseConfig(sqlite_path=path),
            monitor=MonitorConfig(interval_s=60, bucket="1h", window="7d"),
        )
        key = await store.secret(PSEUDONYM_SECRET)
        monitor = Monitor(store, config, key, clock=clock)
        everyone = agents()

        async def timed_step() -> tuple[float, PassResult]:
            started = time.perf_counter()
            result = await monitor.step()
            return time.perf_counter() - started, result

        async def upload(i: int) -> None:
            """One batch of the ``i``th agent (round robin), at the window's end."""
            ci, isp, a = everyone[i % len(everyone)]
            await store.insert_rows(batch_rows(ci, isp, a, end - 60))

        full_s, first = await timed_step()
        records = len(monitor.live)

        idle = [(await timed_step())[0] for _ in range(repeats * 4)]

        one = []
        for r in range(repeats):
            await upload(r)
            seconds, result = await timed_step()
            one.append(seconds)
        series_one = result.series

        hundred = []
        for _ in range(max(1, repeats // 2)):
            for b in range(100):
                await upload(b)
            seconds, result = await timed_step()
            hundred.append(seconds)
        series_hundred = result.series
    finally:
        await store.close()
    return {
        "measurements": measurements,
        "cached_buckets": len(monitor.cache),
        "records": records,
        "first_pass_s": round(full_s, 2),
        "first_pass_changes": len(first.changes),
        "no_new_data_ms": round(statistics.median(idle) * 1000, 2),
        "one_batch_ms": round(statistics.median(one) * 1000, 1),
        "one_batch_series": series_one,
        "hundred_batches_ms": round(statistics.median(hundred) * 1000, 1),
        "hundred_batches_series": series_hundred,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def lab_latency(names: list[str]) -> list[dict[str, Any]]:
    out = []
    for name in names:
        scenario = ROOT / "lab" / "scenarios" / f"{name}.yaml"
        proc = subprocess.run(
            [sys.executable, "-m", "filterwatch", "lab", "run", str(scenario), "--json"],
            capture_output=True,
            cwd=ROOT,
        )
        doc = json.loads(proc.stdout or b"{}")
        alerts = doc.get("alerts", {})
        out.append(
            {
                "scenario": name,
                "round_seconds": doc.get("round_seconds"),
                "leaks": alerts.get("leaks", []),
                "non_leak_alerts": alerts.get("non_leak_alerts", []),
            }
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measurements", type=int, action="append")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--lab", nargs="*", help="lab scenarios whose alert latency to measure")
    args = parser.parse_args()
    if args.lab:
        print(json.dumps(lab_latency(args.lab), indent=2))
        return 0
    print(f"load {os.getloadavg()[0]:.2f}", flush=True)
    for n in args.measurements or [1_000_000, 10_000_000]:
        figures = asyncio.run(measure(n, args.repeats))
        print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
