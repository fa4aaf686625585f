"""How fast the spool stores results durably (every put fsynced before it returns).

    .venv/bin/python -m bench.agent.spool_bench [--results 2000]

Puts results one after another (one fsync each) and then from 32 concurrent writers (group
commit shares the fsyncs), on a spool in a temporary directory on the same disk as the
repository (TMPDIR may point elsewhere: the figure is the disk's fsync speed).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from agent.spool import Spool
from shared.schema import Blocking, Measurement


def sample(i: int) -> Measurement:
    """A measurement of a realistic size (~1.5 KB on the wire)."""
    return Measurement(
        id=f"bench{i:08d}",
        measured_at=1_700_000_000.0 + i,
        url=f"https://site-{i}.example/",
        domain=f"site-{i}.example",
        blocking=Blocking.OK,
        accessible=True,
        network={"asn": 64500, "cc": "IR", "network_name": "Bench ISP"},
        dns={"resolver": "system", "answers": ["192.0.2.1"], "rcode": "NOERROR", "ttls": [300]},
        tcp=[{"address": "192.0.2.1", "port": 443, "failure": None, "t_ms": 12.5}],
        tls={
            "address": "192.0.2.1",
            "sni": f"site-{i}.example",
            "failure": None,
            "version": "TLSv1.3",
            "cert_verified": True,
            "leaf_sha256": "ab" * 32,
        },
        http={
            "url": f"https://site-{i}.example/",
            "status": 200,
            "body_length": 51234,
            "body_sha256": "cd" * 32,
            "title": "A site " * 10,
            "redirects": 0,
            "headers": {"server": "nginx", "content-type": "text/html; charset=utf-8"},
        },
        control={"http": {"status": 200, "body_length": 51200, "title": "A site " * 10}},
        timings={"dns_ms": 10.0, "tcp_ms": 12.5, "tls_ms": 30.1, "http_ms": 80.2},
    )


async def main(n: int, where: Path) -> None:
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        spool = Spool(Path(tmp) / "spool.db", 1 << 30)
        await spool.open()
        t0 = time.perf_counter()
        for i in range(n):
            await spool.put(sample(i))
        serial = time.perf_counter() - t0

        sem = asyncio.Semaphore(32)

        async def put(i: int) -> None:
            async with sem:
                await spool.put(sample(n + i))

        t0 = time.perf_counter()
        await asyncio.gather(*(put(i) for i in range(n)))
        concurrent = time.perf_counter() - t0
        stats = await spool.stats()
        await spool.close()
    print(
        f"spool: {n} results put one at a time: {n / serial:,.0f} results/s "
        f"({serial / n * 1000:.2f} ms each, one fsync per result)"
    )
    print(
        f"spool: {n} results from 32 concurrent writers: {n / concurrent:,.0f} results/s "
        f"(group commit)"
    )
    print(f"spool: {stats.results} results, {stats.bytes / stats.results:,.0f} bytes each")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=int, default=2000)
    parser.add_argument("--dir", type=Path, default=Path(__file__).resolve().parents[2])
    args = parser.parse_args()
    asyncio.run(main(args.results, args.dir))
