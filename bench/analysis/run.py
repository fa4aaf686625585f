"""Benchmark of the leak analysis: on the SQLite store and with compare on a Parquet export.

    .venv/bin/python -m bench.analysis.run [--measurements 10000000] [--out bench/analysis/out]
    .venv/bin/python -m bench.analysis.run --postgres [DSN]   # collector leaks on PostgreSQL

Generates the synthetic store once (cached in --out), exports it to Parquet once, then
times the two real commands in child processes - `filterwatch collector leaks --json` and
`filterwatch compare export.parquet --format json` - reporting wall time and peak memory
(the child's maximum resident set), and checks that each found exactly the injected leaks
and named exactly the injected divergences (a 70 % blocker, an ISP that never filters two
sites, a block rolling out), whatever else the noise holds.

With ``--postgres`` (DSN default: $FILTERWATCH_TEST_PG_DSN) the same measurements are also
copied (once, cached in a database named after the count) into a PostgreSQL store with the
collector's own migrations (month partitions), and `collector leaks` is timed on it too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.analysis.generate import expected_divergences, expected_leaks, generate

ROOT = Path(__file__).resolve().parents[2]

FILTERWATCH = str(Path(sys.executable).with_name("filterwatch"))


def timed(argv: list[str]) -> tuple[float, float, float, str]:
    """(wall seconds, CPU seconds, peak RSS in MiB, stdout) of a child process."""
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited with {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, text


def found(text: str) -> list[tuple[str, int, tuple[str, ...], str, str | None]]:
    doc = json.loads(text)
    return [(e["cc"], e["asn"], tuple(e["domains"]), e["start"], e["end"]) for e in doc["leaks"]]


def found_divergences(text: str) -> list[tuple[str, int, str, str, str, str | None]]:
    """(cc, asn, domain, kind, start, end), one per domain of each divergence."""
    doc = json.loads(text)
    return sorted(
        (d["cc"], d["asn"], domain, d["kind"], d["start"], d["end"])
        for d in doc["divergences"]
        for domain in d["domains"]
    )


def load_postgres(dsn: str, store: Path, n: int) -> str:
    """A PostgreSQL store with the measurements of the SQLite ``store``; its DSN (cached)."""
    import asyncio
    import sqlite3

    import asyncpg

    from collector.store.postgres import PostgresStore, add_months, month_start

    name = f"fw_bench_analysis_{n}"
    db = dsn.rsplit("/", 1)[0] + "/" + name

    async def run() -> None:
        admin = await asyncpg.connect(dsn)
        try:
            exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if exists:
                conn = await asyncpg.connect(db)
                try:
                    count = await conn.fetchval("SELECT count(*) FROM measurements")
                finally:
                    await conn.close()
                if count == n:
                    return
                await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        started = time.perf_counter()
        pg = PostgresStore(db)
        await pg.open()  # the collector's migrations: partitioned by month
        await pg.close()
        lite = sqlite3.connect(store)
        lo, hi = lite.execute(
            "SELECT min(measured_at), max(measured_at) FROM measurements"
        ).fetchone()
        conn = await asyncpg.connect(db)
        try:
            month = month_start(lo)
            while month <= hi:
                await conn.execute("SELECT filterwatch_month_partition($1)", month)
                month = add_months(month, 1)
            # Bulk load without the secondary indexes, then build them once.
            indexes = await conn.fetch(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'measurements'"
                " AND indexname <> 'measurements_pkey'"
            )
            for row in indexes:
                await conn.execute(f'DROP INDEX "{row["indexname"]}"')
            columns = [r[1] for r in lite.execute("PRAGMA table_info(measurements)")]
            cur = lite.execute(f"SELECT {', '.join(columns)} FROM measurements")
            while True:
                chunk = cur.fetchmany(100_000)
                if not chunk:
                    break
                await conn.copy_records_to_table("measurements", records=chunk, columns=columns)
            for row in indexes:
                # pg_indexes says "ON ONLY measurements" for a partitioned table's index:
                # as written that builds no index on the partitions; without ONLY it does.
                await conn.execute(row["indexdef"].replace(" ON ONLY ", " ON ", 1))
            # VACUUM too: index-only scans need the visibility map a bulk load leaves unset.
            await conn.execute("VACUUM (ANALYZE) measurements")
        finally:
            await conn.close()
            lite.close()
        print(f"copied {n} measurements into PostgreSQL in {time.perf_counter() - started:.1f} s")

    asyncio.run(run())
    return db


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measurements", type=int, default=10_000_000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "analysis" / "out")
    parser.add_argument("--bucket", default="1h")
    parser.add_argument(
        "--postgres", nargs="?", const="", default=None, metavar="DSN",
        help="also time collector leaks on PostgreSQL (DSN default: $FILTERWATCH_TEST_PG_DSN)",
    )  # fmt: skip
    parser.add_argument(
        "--no-compare", action="store_true", help="skip the Parquet export and compare"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    n = args.measurements
    store = args.out / f"store-{n}.sqlite3"
    export = args.out / f"export-{n}.parquet"
    config = args.out / f"collector-{n}.yaml"
    config.write_text(f"database: {{sqlite_path: {store}}}\n")

    if not store.exists():
        start = time.perf_counter()
        partial = store.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        count = generate(partial, n)
        partial.rename(store)
        print(f"generated {count} measurements in {time.perf_counter() - start:.1f} s")
    if not export.exists() and not args.no_compare:
        partial = export.with_suffix(".partial.parquet")
        wall, _, rss, _ = timed([FILTERWATCH, "collector", "export", "--format", "parquet",
                              "--out", str(partial), "--config", str(config)])  # fmt: skip
        partial.rename(export)
        print(f"exported to Parquet in {wall:.1f} s (peak {rss:.0f} MiB)")

    expected = expected_leaks(n)
    expected_div = expected_divergences(n)
    ok = True
    rows = []
    commands: list[tuple[str, list[str]]] = []
    for label, argv in (
        ("collector leaks (SQLite store)",
         [FILTERWATCH, "collector", "leaks", "--json", "--bucket", args.bucket,
          "--config", str(config)]),
        ("compare (Parquet export)",
         [FILTERWATCH, "compare", str(export), "--format", "json", "--bucket", args.bucket]),
    ):  # fmt: skip
        if not (args.no_compare and label.startswith("compare")):
            commands.append((label, argv))
    if args.postgres is not None:
        dsn = args.postgres or os.environ.get("FILTERWATCH_TEST_PG_DSN", "")
        pg_config = args.out / f"collector-{n}-postgres.yaml"
        pg_config.write_text(f"database: {{postgres_dsn: '{load_postgres(dsn, store, n)}'}}\n")
        commands.append(
            ("collector leaks (PostgreSQL)",
             [FILTERWATCH, "collector", "leaks", "--json", "--bucket", args.bucket,
              "--config", str(pg_config)])
        )  # fmt: skip
    for label, argv in commands:
        load = os.getloadavg()[0]
        wall, cpu, rss, text = timed(argv)
        got, divergences = found(text), found_divergences(text)
        exact = got == expected and divergences == expected_div
        ok = ok and exact
        if not exact:
            print(f"{label}: leaks {got}\n  divergences {divergences}", file=sys.stderr)
        rows.append((label, wall, cpu, rss, load, len(got), len(divergences), exact))
    print(
        f"{n} measurements, {len(expected)} injected leak events and {len(expected_div)}"
        f" injected divergences (per domain), buckets of {args.bucket}"
    )
    for label, wall, cpu, rss, load, events, named, exact in rows:
        verdict = "exactly the injected ones" if exact else "MISMATCH"
        print(
            f"  {label:32s} wall {wall:6.2f} s  cpu {cpu:6.2f} s  peak {rss:6.0f} MiB"
            f"  (load {load:.1f})  {events} leaks, {named} divergences: {verdict}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
