"""The monitor on a real SQLite store: records with stable ids, revisions from late data,
incremental passes, and the outbox rows that commit with each revision. Time is faked."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.monitor.runner import Monitor
from collector.store.base import PSEUDONYM_SECRET
from collector.store.records import EventQuery, StoredEvent
from collector.store.sqlite import SqliteStore
from tests.collector.monitor.helpers import (
    FakeClock,
    agent_id,
    at,
    config,
    measurement,
    rounds,
    upload,
    webhook,
)

FB = "fb.example"


@pytest.fixture
def store(sqlite_store: SqliteStore) -> SqliteStore:
    return sqlite_store


async def make_monitor(
    store: SqliteStore, tmp_path: Path, clock: FakeClock, **kwargs: object
) -> Monitor:
    hooks = (
        webhook("http://127.0.0.1:9/lapses"),
        webhook(
            "http://127.0.0.1:9/all",
            kinds=("lapse", "uncorroborated", "unfiltered", "lagging", "partial"),
        ),
    )
    cfg = config(tmp_path, webhooks=hooks, **kwargs)  # type: ignore[arg-type]
    return Monitor(store, cfg, await store.secret(PSEUDONYM_SECRET), clock=clock)


async def records(store: SqliteStore) -> list[StoredEvent]:
    """The leak records (lapses and uncorroborated), oldest first; divergences the
    detector may also find (a "partial" ISP) are left out."""
    found = reversed(await store.list_events(EventQuery()))
    return [e for e in found if e.kind in ("lapse", "uncorroborated")]


async def test_a_leak_becomes_one_record_that_grows_then_closes(
    store: SqliteStore, tmp_path: Path
) -> None:
    """A lapse gets an id when first seen, keeps it when its end is known, and closes with
    a new revision; each change has its outbox rows."""
    clock = FakeClock(at(0))
    monitor = await make_monitor(store, tmp_path, clock)
    await upload(store, rounds(range(0, 5)))
    await upload(store, rounds(range(5, 8), leaking={200: {FB}}))
    clock.bucket(7)
    first = await monitor.step()
    assert first.full
    [opened] = await records(store)
    assert (opened.kind, opened.status, opened.revision) == ("lapse", "open", 1)
    assert (opened.asn, opened.domains, opened.start, opened.end) == (200, (FB,), at(5, 0), None)
    assert opened.body["id"] == opened.event_id and opened.body["network_name"] == "Beta Telecom"

    await upload(store, rounds(range(8, 11)))
    clock.bucket(10)
    later = await monitor.step()
    assert not later.full and later.series > 0
    [closed] = await records(store)
    assert closed.event_id == opened.event_id
    assert (closed.status, closed.revision, closed.end) == ("closed", 2, at(8, 0))
    changes = [(r.event_id, r.type) for r in await store.revisions_after(0)]
    assert [t for e, t in changes if e == opened.event_id] == ["leak.opened", "leak.closed"]
    lapse_hook = await store.claim_deliveries(clock.now, 100, 60)
    told = sorted(
        (d.payload["event"]["id"], d.payload["event"]["revision"], d.type)
        for d in lapse_hook
        if d.payload["event"]["id"] == opened.event_id
    )
    assert (
        told
        == [(opened.event_id, 1, "leak.opened")] * 2 + [(opened.event_id, 2, "leak.closed")] * 2
    )  # both subscriptions take lapses


async def test_a_pass_with_no_new_data_reads_nothing_and_changes_nothing(
    store: SqliteStore, tmp_path: Path
) -> None:
    """After the first pass, a pass without uploads recounts no series and saves nothing."""
    clock = FakeClock(at(0))
    monitor = await make_monitor(store, tmp_path, clock)
    await upload(store, rounds(range(0, 4), leaking={100: {FB}}))
    clock.bucket(3)
    await monitor.step()
    clock.bucket(3, 55)
    again = await monitor.step()
    assert (again.series, again.countries, again.changes) == (0, 0, [])


async def test_only_the_series_that_received_data_are_recounted(
    store: SqliteStore, tmp_path: Path
) -> None:
    """One agent's upload of one domain dirties that one series."""
    clock = FakeClock(at(0))
    monitor = await make_monitor(store, tmp_path, clock)
    await upload(store, rounds(range(0, 4)))
    clock.bucket(3)
    await monitor.step()
    await upload(store, [(agent_id(300, 1), measurement(300, 1, FB, at(3, 30), False))])
    result = await monitor.step()
    assert (result.series, result.countries) == (1, 1)


async def test_late_blocked_results_retract_a_leak_that_was_never_there(
    store: SqliteStore, tmp_path: Path
) -> None:
    """Two agents saw the site; six more of the same ISP, uploading their spools late,
    saw it blocked in the same buckets: the record is retracted, not silently dropped."""
    clock = FakeClock(at(0))
    monitor = await make_monitor(store, tmp_path, clock)
    await upload(store, rounds(range(0, 5)))
    await upload(store, rounds(range(5, 7), leaking={200: {FB}}))
    await upload(store, rounds(range(7, 9)))
    clock.bucket(8)
    await monitor.step()
    [seen] = await records(store)
    assert seen.kind == "lapse"
    await upload(store, rounds(range(5, 7), agents=range(2, 8), asns=(200,)))
    await monitor.step()
    [retracted] = await records(store)
    assert (retracted.event_id, retracted.status, retracted.revision) == (
        seen.event_id,
        "retracted",
        2,
    )
    changes = [(r.event_id, r.type) for r in await store.revisions_after(0)]
    assert [t for e, t in changes if e == seen.event_id] == ["leak.opened", "leak.retracted"]


async def test_an_offline_agents_spool_extends_a_closed_leak(
    store: SqliteStore, tmp_path: Path
) -> None:
    """A leak that seemed over when its ISP went quiet is extended by the spool uploaded
    hours later: same id, a new revision with the later end."""
    clock = FakeClock(at(0))
    monitor = await make_monitor(store, tmp_path, clock)
    await upload(store, rounds(range(0, 5)))
    await upload(store, rounds(range(5, 7), leaking={200: {FB}}))
    others = (100, 300)
    await upload(store, rounds(range(7, 12), asns=others))
    clock.bucket(11)
    await monitor.step()
    [closed] = await records(store)
    assert (closed.status, closed.end) == ("closed", at(7, 0))
    await upload(store, rounds(range(7, 9), leaking={200: {FB}}, asns=(200,)))
    await upload(store, rounds(range(9, 12), asns=(200,)))
    await monitor.step()
    [extended] = await records(store)
    assert extended.event_id == closed.event_id
    assert (extended.status, extended.end, extended.revision) == ("closed", at(9, 0), 2)
    changes = [(r.event_id, r.type) for r in await store.revisions_after(0)]
    assert [t for e, t in changes if e == closed.event_id] == ["leak.opened", "leak.updated"]


async def test_a_second_volunteer_turns_an_uncorroborated_finding_into_a_lapse(
    store: SqliteStore, tmp_path: Path
) -> None:
    """One agent's word is uncorroborated; when the second agent's results of the same
    bucket arrive, the same record becomes a lapse, and a subscription to lapses is told
    it opened (while one to every kind is told it was updated)."""
    clock = FakeClock(at(0))
    monitor = await make_monitor(store, tmp_path, clock)
    await upload(store, rounds(range(0, 5)))
    await upload(store, rounds(range(5, 8), asns=(100, 200)))
    await upload(store, rounds(range(5, 8), leaking={300: {FB}}, asns=(300,), agents=(0,)))
    clock.bucket(7)
    await monitor.step()
    [alone] = await records(store)
    assert (alone.kind, alone.asn) == ("uncorroborated", 300)
    await upload(store, rounds(range(5, 8), leaking={300: {FB}}, asns=(300,), agents=(1,)))
    await monitor.step()
    [both] = await records(store)
    assert (both.event_id, both.kind, both.revision) == (alone.event_id, "lapse", 2)
    claimed = await store.claim_deliveries(clock.now, 100, 60)
    told = sorted(
        (d.payload["event"]["revision"], d.type)
        for d in claimed
        if d.payload["event"]["id"] == both.event_id
    )
    assert told == [(1, "leak.opened"), (2, "leak.opened"), (2, "leak.updated")]


async def test_a_lapse_longer_than_the_window_keeps_its_kind_and_start(
    store: SqliteStore, tmp_path: Path
) -> None:
    """A lapse open for longer than the window is still the same lapse, with its true
    start, after its beginning has left the window."""
    clock = FakeClock(at(0))
    monitor = await make_monitor(store, tmp_path, clock, window="10m")
    await upload(store, rounds(range(0, 3)))
    await upload(store, rounds(range(3, 8), leaking={200: {FB}}))
    clock.bucket(7)
    await monitor.step()
    [first] = await records(store)
    for b in range(8, 25):
        await upload(store, rounds([b], leaking={200: {FB}}))
        clock.bucket(b)
        await monitor.step()
    [still] = await records(store)
    assert (still.event_id, still.kind, still.status, still.start) == (
        first.event_id,
        "lapse",
        "open",
        at(3, 0),
    )
    assert clock.now - 600 > at(3, 0)  # the start really left the window


async def test_a_new_monitor_continues_the_stored_records(
    store: SqliteStore, tmp_path: Path
) -> None:
    """A restarted (or new leader's) monitor reads the window again and continues the
    stored records: no duplicate, no new revision when nothing changed."""
    clock = FakeClock(at(0))
    await upload(store, rounds(range(0, 5)))
    await upload(store, rounds(range(5, 8), leaking={200: {FB}}))
    clock.bucket(7)
    await (await make_monitor(store, tmp_path, clock)).step()
    again = await (await make_monitor(store, tmp_path, clock)).step()
    assert again.full and again.changes == []
    assert len(await records(store)) == 1
    assert len(await store.revisions_after(0)) == len(await store.list_events(EventQuery()))


async def test_incremental_passes_agree_with_one_analysis_of_everything(
    store: SqliteStore, tmp_path: Path
) -> None:
    """After passes fed in pieces (late spools, partial buckets, two leaks, one domain
    leaking on two ISPs), the live records are exactly the findings of one analysis of the
    whole window, as ``collector leaks`` would print them."""
    from collector.analysis import analyse
    from collector.filters import Filters
    from collector.monitor.reconcile import findings_of

    clock = FakeClock(at(0))
    monitor = await make_monitor(store, tmp_path, clock)
    tw = "tw.example"
    plan = [
        (range(0, 4), {}, (100, 200, 300)),
        (range(4, 7), {200: {FB}}, (100, 300)),
        (range(7, 10), {100: {tw}}, (100, 300)),
        (range(4, 10), {200: {FB, tw}}, (200,)),  # Beta's spool, uploaded late
        (range(10, 13), {300: {FB}}, (100, 200, 300)),
    ]
    for buckets, leaking, asns in plan:
        for b in buckets:
            await upload(store, rounds([b], leaking=leaking, asns=asns))
            clock.bucket(b, 30)
            await monitor.step()
    clock.bucket(12, 59)
    await monitor.step()
    window = Filters(since=clock.now - 3600, bucket_s=60.0)
    everything = analyse(await store.aggregate(window, monitor.key), 60.0)
    expected = sorted(
        (f.kind, f.asn, f.domains, f.start, f.end if f.end is None or f.end < at(12, 0) else None)
        for f in findings_of(everything)
    )
    live = [e for e in await store.list_events(EventQuery()) if e.status != "retracted"]
    assert sorted((e.kind, e.asn, e.domains, e.start, e.end) for e in live) == expected
    assert len(expected) >= 2
