"""Ingest benchmark: end-to-end results/s over HTTP against the ceiling without HTTP.

    .venv/bin/python -m bench.ingest [--batches 200] [--size 500] [--clients 4]
    .venv/bin/python -m bench.ingest --postgres [DSN] [--collectors 1 2]
    (either with --foreign-records: records not encoded as our agent encodes them)

A real collector (``filterwatch collector serve``, SQLite in WAL mode in a temporary
directory) runs in its own process on 127.0.0.1; this process is the load generator. It
pre-encodes the batches, enrolls an agent, then POSTs every batch and times the run from
the first request to the last answer (each answer comes after its commit). In the same run
it measures the ceiling: decode + validate + insert of the same batches in one process,
with no HTTP. Nothing leaves the loopback interface.

With ``--postgres`` (DSN default: $FILTERWATCH_TEST_PG_DSN) the collectors store into a
fresh database on that server, and for each count in ``--collectors`` that many collector
processes run behind HAProxy (deploy/fleet/haproxy.cfg); the load goes through HAProxy, as
a fleet's agents' does. The ceiling is then one process inserting with no HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil

from bench.fleet import drop_database
from bench.ingest.workload import encoded_batches
from collector.server import tune_gc
from collector.store.base import Store
from collector.store.sqlite import SqliteStore
from shared.schema import decode_batch, decode_record

MSGPACK = "application/vnd.msgpack"
ROOT = Path(__file__).resolve().parents[2]


def _filterwatch(*args: str) -> list[str]:
    return [sys.executable, "-m", "filterwatch", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _enroll_code(config: Path) -> str:
    """A one-use enroll code made by ``filterwatch collector enroll-code``."""
    return subprocess.run(
        _filterwatch("collector", "enroll-code", "--config", str(config), "--uses", "1"),
        check=True,
        capture_output=True,
        text=True,
        env=_env(),
    ).stdout.strip()


def _serve(config: Path, port: int) -> subprocess.Popen[str]:
    """``filterwatch collector serve`` on ``port`` (0: any); its first line says where."""
    return subprocess.Popen(
        _filterwatch("collector", "serve", "--config", str(config), "--port", str(port)),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=_env(),
    )


async def _post_all(url: str, token: str, agent_batches: list[bytes], clients: int) -> float:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in agent_batches:
        queue.put_nowait(body)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": MSGPACK, "Accept": MSGPACK}
    accepted = 0

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal accepted
        while not queue.empty():
            body = queue.get_nowait()
            async with session.post(url + "/api/v1/batches", data=body, headers=headers) as resp:
                if resp.status != 200:
                    raise SystemExit(f"bench: batch refused: {resp.status} {await resp.text()}")
                await resp.read()
                accepted += 1

    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    assert accepted == len(agent_batches)
    return elapsed


async def _enroll(url: str, code: str) -> tuple[str, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + "/api/v1/enroll", json={"code": code}) as resp,
    ):
        body = await resp.json()
    return body["agent_id"], body["token"]


def end_to_end(
    work: Path, batches: int, size: int, clients: int, as_agent: bool = True
) -> tuple[float, float, int]:
    """(wall seconds, collector CPU seconds, results stored) for posting every batch."""
    config = work / "collector.yaml"
    config.write_text(
        f"database: {{sqlite_path: {work / 'e2e.sqlite3'}}}\nlogging: {{json: true, level: info}}\n"
        # One agent stands in for many: it may upload as many batches at once as there are
        # clients (the default is 2 per agent).
        f"limits: {{max_uploads_per_agent: {max(clients, 2)}}}\n"
    )
    code = _enroll_code(config)
    server = _serve(config, 0)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().rsplit(" ", 1)[-1].strip()
        agent_id, token = asyncio.run(_enroll(url, code))
        bodies = encoded_batches(agent_id, batches, size, seed=2, as_agent=as_agent)
        proc = psutil.Process(server.pid)
        cpu_before = sum(proc.cpu_times()[:2])
        elapsed = asyncio.run(_post_all(url, token, bodies, clients))
        cpu = sum(proc.cpu_times()[:2]) - cpu_before
    finally:
        server.terminate()
        server.wait(30)
    stored = asyncio.run(_count(SqliteStore(work / "e2e.sqlite3")))
    return elapsed, cpu, stored


async def _count(store: Store) -> int:
    """How many measurements ``store`` keeps (opened for this, and closed)."""
    await store.open()
    try:
        return await store.count_measurements()
    finally:
        await store.close()


async def _ceiling(path: Path, bodies: list[bytes]) -> tuple[float, float, float, float]:
    """(total, decode+validate, insert, CPU) seconds for the batches, no HTTP."""
    store = SqliteStore(path)
    await store.open()
    decode_s = insert_s = 0.0
    try:
        cpu_started = time.process_time()  # the whole process: the writer thread included
        started = time.perf_counter()
        for body in bodies:
            t0 = time.perf_counter()
            env = decode_batch(body)
            results, records = zip(*(decode_record(raw) for raw in env.results), strict=True)
            t1 = time.perf_counter()
            await store.insert_measurements(
                env.agent_id, env.batch_id, results, time.time(), records
            )
            insert_s += time.perf_counter() - t1
            decode_s += t1 - t0
        total = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
    finally:
        await store.close()
    return total, decode_s, insert_s, cpu


async def _fresh_database(dsn: str) -> str:
    import asyncpg

    name = f"fw_bench_{os.getpid()}_{int(time.time())}"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return dsn.rsplit("/", 1)[0] + "/" + name


async def _drop_database(dsn: str, db_dsn: str) -> None:
    import asyncpg

    admin = await asyncpg.connect(dsn)
    try:
        await drop_database(admin, db_dsn.rsplit("/", 1)[1])
    finally:
        await admin.close()


async def _pg_ceiling(db_dsn: str, bodies: list[bytes], clients: int) -> tuple[float, float]:
    """(seconds, decode share) to decode and insert every batch in this process, no HTTP,
    ``clients`` inserts at once (the pool's connections work in parallel)."""
    from collector.store.postgres import PostgresStore

    store = PostgresStore(db_dsn)
    await store.open()
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    decode_s = 0.0

    async def worker() -> None:
        nonlocal decode_s
        while not queue.empty():
            body = queue.get_nowait()
            t0 = time.perf_counter()
            env = decode_batch(body)
            results, records = zip(*(decode_record(raw) for raw in env.results), strict=True)
            decode_s += time.perf_counter() - t0
            await store.insert_measurements(
                env.agent_id, env.batch_id, results, time.time(), records
            )

    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return time.perf_counter() - started, decode_s
    finally:
        await store.close()


@dataclass(frozen=True)
class FleetRun:
    """One timed run through HAProxy: wall seconds, CPU seconds of each part, results stored."""

    wall_s: float
    collectors_cpu_s: float
    haproxy_cpu_s: float
    postgres_cpu_s: float  # every PostgreSQL server process (backends, WAL writer, ...)
    generator_cpu_s: float  # this process, posting the pre-encoded batches
    stored: int


def _postgres_cpu() -> float:
    """CPU seconds used so far by the processes of the PostgreSQL server on this machine
    (those running as its ``postgres`` user; the benchmark needs the server local)."""
    total = 0.0
    for proc in psutil.process_iter(["username"]):
        try:
            if proc.info["username"] == "postgres":
                total += sum(proc.cpu_times()[:2])
        except psutil.Error:
            continue  # a backend that ended meanwhile
    return total


def fleet_end_to_end(
    dsn: str,
    work: Path,
    collectors: int,
    batches: int,
    size: int,
    clients: int,
    as_agent: bool = True,
) -> FleetRun:
    """One run of every batch through HAProxy to ``collectors`` collector processes."""
    import shutil

    from bench.fleet import free_port, haproxy_config
    from collector.store.postgres import PostgresStore

    db = asyncio.run(_fresh_database(dsn))
    config = work / f"collector-{collectors}.yaml"
    config.write_text(
        f"database: {{postgres_dsn: '{db}'}}\n"
        "listen: {trusted_proxies: [127.0.0.1/32]}\n"
        # One agent stands in for many, as in end_to_end.
        f"limits: {{max_inflight_batches: 64, max_uploads_per_agent: {max(clients, 2)}}}\n"
        "logging: {json: true, level: warning}\n"
    )
    servers: list[subprocess.Popen[str]] = []
    haproxy: subprocess.Popen[bytes] | None = None
    try:
        code = _enroll_code(config)
        ports = [free_port() for _ in range(collectors)]
        servers.extend(_serve(config, port) for port in ports)
        for server in servers:
            assert server.stdout is not None
            server.stdout.readline()  # listening
        front = free_port()
        cfg = work / f"haproxy-{collectors}.cfg"
        cfg.write_text(haproxy_config(front, ports))
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        haproxy = subprocess.Popen(
            [binary, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        url = f"http://127.0.0.1:{front}"
        agent_id, token = asyncio.run(_enroll_when_up(url, code))
        bodies = encoded_batches(agent_id, batches, size, seed=2, as_agent=as_agent)
        procs = [psutil.Process(s.pid) for s in servers]
        hap = psutil.Process(haproxy.pid)
        cpu_before = sum(sum(p.cpu_times()[:2]) for p in procs)
        hap_before = sum(hap.cpu_times()[:2])
        pg_before = _postgres_cpu()
        generator_before = time.process_time()
        elapsed = asyncio.run(_post_all(url, token, bodies, clients))
        run = FleetRun(
            wall_s=elapsed,
            collectors_cpu_s=sum(sum(p.cpu_times()[:2]) for p in procs) - cpu_before,
            haproxy_cpu_s=sum(hap.cpu_times()[:2]) - hap_before,
            postgres_cpu_s=_postgres_cpu() - pg_before,
            generator_cpu_s=time.process_time() - generator_before,
            stored=asyncio.run(_count(PostgresStore(db))),
        )
    finally:
        if haproxy is not None:
            haproxy.terminate()
            haproxy.wait(30)
        for server in servers:
            server.terminate()
            server.wait(30)
            if server.stdout is not None:
                server.stdout.close()
        asyncio.run(_drop_database(dsn, db))
    return run


async def _enroll_when_up(url: str, code: str) -> tuple[str, str]:
    for _ in range(100):
        try:
            return await _enroll(url, code)
        except (aiohttp.ClientError, KeyError, ValueError):
            await asyncio.sleep(0.2)
    raise SystemExit(f"bench: HAProxy at {url} never answered")


def _records_kind(args: argparse.Namespace) -> str:
    if args.as_agent:
        return "as our agent uploads them (encode_measurement, encode_batch)"
    return "foreign (--foreign-records: another key order, defaults left out)"


def main_postgres(args: argparse.Namespace) -> int:
    dsn = args.postgres or os.environ.get("FILTERWATCH_TEST_PG_DSN", "")
    if not dsn:
        print("bench: --postgres needs a DSN or $FILTERWATCH_TEST_PG_DSN", file=sys.stderr)
        return 2
    n = args.batches * args.size
    bodies = encoded_batches("ag-bench", args.batches, args.size, seed=1, as_agent=args.as_agent)
    # The garbage collector as a serving collector sets it (collector/server.py), in this
    # process (the ceiling's) as in the collectors.
    tune_gc()
    db = asyncio.run(_fresh_database(dsn))
    try:
        ceiling_s, decode_s = asyncio.run(_pg_ceiling(db, bodies, args.clients))
    finally:
        asyncio.run(_drop_database(dsn, db))
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(
        f"workload: {args.batches} batches x {args.size} results, {args.clients} concurrent"
        " clients, PostgreSQL (a fresh database each run)"
    )
    print(f"records: {_records_kind(args)}")
    print(f"  decode+validate (msgspec)        {n / decode_s:>10,.0f} results/s")
    print(f"  ceiling: 1 process, no HTTP      {n / ceiling_s:>10,.0f} results/s")
    with tempfile.TemporaryDirectory(prefix="fw-bench-pg-") as tmp:
        for count in args.collectors:
            load_before = os.getloadavg()[0]
            run = fleet_end_to_end(
                dsn, Path(tmp), count, args.batches, args.size, args.clients, args.as_agent
            )
            if run.stored != n:
                print(f"bench: {run.stored} results stored, expected {n}", file=sys.stderr)
                return 1
            print(
                f"  {count} collector(s) behind HAProxy  {n / run.wall_s:>10,.0f} results/s"
                f"  ({run.wall_s:.2f} s, load {load_before:.1f} -> {os.getloadavg()[0]:.1f})"
            )
            # Where the two cores went, per result: the parts add up to the CPU the run used.
            parts = {
                "collectors": run.collectors_cpu_s,
                "PostgreSQL": run.postgres_cpu_s,
                "HAProxy": run.haproxy_cpu_s,
                "load generator": run.generator_cpu_s,
            }
            print(
                "    CPU per result: "
                + ", ".join(f"{name} {cpu / n * 1e6:.1f} us" for name, cpu in parts.items())
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--size", type=int, default=500, help="results per batch")
    parser.add_argument("--clients", type=int, default=4, help="concurrent uploads")
    parser.add_argument(
        "--postgres",
        nargs="?",
        const="",
        default=None,
        metavar="DSN",
        help="PostgreSQL through HAProxy (DSN default: $FILTERWATCH_TEST_PG_DSN)",
    )
    parser.add_argument(
        "--collectors",
        type=int,
        nargs="+",
        default=[1, 2],
        help="with --postgres: collector processes behind HAProxy, one run per count",
    )
    parser.add_argument(
        "--foreign-records",
        dest="as_agent",
        action="store_false",
        help="records encoded as another tool might (key order, defaults left out), not as"
        " our agent uploads them",
    )
    args = parser.parse_args(argv)
    if args.postgres is not None:
        return main_postgres(args)
    n = args.batches * args.size
    with tempfile.TemporaryDirectory(prefix="fw-bench-") as tmp:
        work = Path(tmp)
        bodies = encoded_batches(
            "ag-bench", args.batches, args.size, seed=1, as_agent=args.as_agent
        )
        per_result = sum(len(b) for b in bodies) / n
        total, decode_s, insert_s, ceiling_cpu = asyncio.run(
            _ceiling(work / "ceiling.sqlite3", bodies)
        )
        e2e_s, e2e_cpu, stored = end_to_end(
            work, args.batches, args.size, args.clients, args.as_agent
        )
        load = os.getloadavg()[0]
    if stored != n:
        print(f"bench: {stored} results stored, expected {n}", file=sys.stderr)
        return 1
    ceiling = n / total
    e2e = n / e2e_s
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(
        f"workload: {args.batches} batches x {args.size} results,"
        f" {per_result:.0f} bytes/result msgpack, {args.clients} concurrent clients"
    )
    print(f"records: {_records_kind(args)}")
    print(f"  decode+validate (msgspec)      {n / decode_s:>10,.0f} results/s")
    print(f"  insert (SQLite WAL, 1 writer)  {n / insert_s:>10,.0f} results/s")
    print(f"  ceiling, no HTTP               {ceiling:>10,.0f} results/s")
    print(f"  end to end over HTTP           {e2e:>10,.0f} results/s  ({e2e_s:.2f} s)")
    print(f"  ratio end to end / ceiling     {e2e / ceiling:>10.2f}")
    # CPU time is steadier than wall time on a shared machine: results per CPU-second.
    print(f"  ceiling per CPU-second         {n / ceiling_cpu:>10,.0f} results")
    print(f"  collector per CPU-second       {n / e2e_cpu:>10,.0f} results (HTTP included)")
    print(f"  load average during the run    {load:>10.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
