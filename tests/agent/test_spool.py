"""The durable spool: what is put survives crashes, acknowledgement deletes, the cap drops
the oldest first and counts it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from agent.spool import Spool, read_stats
from shared.codec import decode
from tests.factories import measurement


async def opened(path: Path, max_bytes: int = 10 * 1024 * 1024) -> Spool:
    spool = Spool(path, max_bytes)
    await spool.open()
    return spool


async def test_put_results_are_there_after_reopening(tmp_path: Path) -> None:
    """Results put in the spool are read back, in order, after the spool is reopened."""
    spool = await opened(tmp_path / "s.db")
    ms = [measurement(f"https://s{i}.test/") for i in range(5)]
    for m in ms:
        await spool.put(m)
    await spool.close()
    spool = await opened(tmp_path / "s.db")
    items = await spool.peek(100, 10**6)
    assert [it.id for it in items] == [m.id for m in ms]
    assert decode(items[0].record)["url"] == "https://s0.test/"
    await spool.close()


async def test_concurrent_puts_all_land(tmp_path: Path) -> None:
    """Many results put at the same time (sharing commits) are all stored once."""
    spool = await opened(tmp_path / "s.db")
    ms = [measurement() for _ in range(200)]
    await asyncio.gather(*(spool.put(m) for m in ms))
    items = await spool.peek(1000, 10**7)
    assert sorted(it.id for it in items) == sorted(m.id for m in ms)
    assert len(spool) == 200
    await spool.close()


CRASHING_WRITER = """
import asyncio, os, sys
from pathlib import Path
from agent.spool import Spool
from tests.factories import measurement

async def main():
    spool = Spool(Path(sys.argv[1]), 10 * 1024 * 1024)
    await spool.open()
    for i in range(20):
        m = measurement(f"https://s{i}.test/")
        await spool.put(m)
        print(m.id, flush=True)
    os._exit(0)  # no close, no checkpoint: as if the power went

asyncio.run(main())
"""


def tear_the_log(wal: Path) -> int:
    """Append a half-written frame to the WAL; return its size before."""
    size = wal.stat().st_size
    with wal.open("ab") as f:
        f.write(b"\x37\x7f\x06\x82" + b"torn frame" * 100)
    return size


async def test_results_survive_a_crash_and_a_torn_tail(tmp_path: Path) -> None:
    """Results whose put returned survive a process that dies without closing the spool,
    even when garbage follows the last commit in the log (a torn write)."""
    path = tmp_path / "s.db"
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", CRASHING_WRITER, str(path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    written = out.stdout.split()
    wal_size = await asyncio.to_thread(tear_the_log, Path(f"{path}-wal"))
    assert wal_size > 0
    spool = await opened(path)
    items = await spool.peek(100, 10**6)
    assert [it.id for it in items] == written
    await spool.put(measurement())
    assert len(spool) == 21
    await spool.close()


async def test_peek_respects_both_limits_but_always_gives_one(tmp_path: Path) -> None:
    """A batch stops at the result limit or the byte limit, whichever comes first, and a
    single result over the byte limit still goes alone."""
    spool = await opened(tmp_path / "s.db")
    for _ in range(10):
        await spool.put(measurement(padding=1000))
    assert len(await spool.peek(3, 10**6)) == 3
    size = len((await spool.peek(1, 10**6))[0].record)
    assert len(await spool.peek(100, size * 4 + 10)) == 4
    assert len(await spool.peek(100, 10)) == 1
    await spool.close()


async def test_ack_deletes_only_what_it_names_and_counts_rejections(tmp_path: Path) -> None:
    """Acknowledged results are deleted, others stay, and rejected ones are counted."""
    spool = await opened(tmp_path / "s.db")
    for _ in range(6):
        await spool.put(measurement())
    items = await spool.peek(100, 10**6)
    await spool.ack([it.seq for it in items[:4]], rejected=1)
    left = await spool.peek(100, 10**6)
    assert [it.id for it in left] == [it.id for it in items[4:]]
    stats = await spool.stats()
    assert (stats.results, stats.rejected, stats.dropped) == (2, 1, 0)
    assert stats.bytes == sum(len(it.record) for it in left)
    await spool.close()


async def test_cap_drops_the_oldest_first_and_counts_them(tmp_path: Path) -> None:
    """When the cap is passed the oldest results go first, counted, and the newest stay."""
    spool = await opened(tmp_path / "s.db", max_bytes=64 * 1024)
    ms = [measurement(f"https://s{i}.test/", padding=4000) for i in range(40)]
    for m in ms:
        await spool.put(m)
    stats = await spool.stats()
    assert stats.bytes <= 64 * 1024
    assert stats.dropped == 40 - stats.results > 0
    kept = [it.id for it in await spool.peek(100, 10**7)]
    assert kept == [m.id for m in ms[-len(kept) :]]
    assert len(kept) >= 10  # a cap of 64 KiB holds more than ten 4 KB results
    await spool.close()
    on_disk = read_stats(tmp_path / "s.db")
    assert on_disk is not None and on_disk.dropped == stats.dropped


async def test_acknowledging_results_the_cap_dropped_is_harmless(tmp_path: Path) -> None:
    """A batch in flight whose results the cap dropped meanwhile acknowledges cleanly."""
    spool = await opened(tmp_path / "s.db", max_bytes=64 * 1024)
    await spool.put(measurement(padding=4000))
    first = await spool.peek(1, 10**6)
    for _ in range(40):
        await spool.put(measurement(padding=4000))
    before = await spool.stats()
    await spool.ack([it.seq for it in first])
    after = await spool.stats()
    assert (after.results, after.bytes) == (before.results, before.bytes)
    await spool.close()


def test_read_stats_of_a_missing_spool_is_none(tmp_path: Path) -> None:
    """`agent status` before the first run finds no spool and says so."""
    assert read_stats(tmp_path / "nothing.db") is None


async def test_status_reads_a_spool_that_is_being_written(tmp_path: Path) -> None:
    """`agent status` can read the figures of a running agent's spool."""
    spool = await opened(tmp_path / "s.db")
    for _ in range(3):
        await spool.put(measurement())
    stats = await asyncio.to_thread(read_stats, tmp_path / "s.db")
    assert stats is not None and stats.results == 3
    assert stats.bytes == (await spool.stats()).bytes
    await spool.close()
