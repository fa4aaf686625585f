"""The monitor's passes, and the leadership that makes exactly one collector run them.

A pass takes the series that received data since the last pass (ingest records them in
the transaction that stores the measurements, late uploads included), counts again only
their buckets in the range that changed, patches its copy of the window's buckets, and
analyses only the countries and domains concerned (plus the domains of their live records,
so that a record is only ever judged on all its evidence). The first pass after becoming
leader reads the whole window once. Revisions and their webhook deliveries commit together.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from collector.alerts.subscriptions import route
from collector.analysis import AnalysisParams, analyse
from collector.analysis.model import BucketCount
from collector.config import CollectorConfig
from collector.filters import Filters
from collector.metrics import MonitorMetrics
from collector.monitor.reconcile import Clock, Revised, findings_of, reconcile
from collector.monitor.series import SeriesCache
from collector.store.base import Store
from collector.store.queries import merged_ranges
from collector.store.records import DirtySeries, StoredEvent

log = structlog.get_logger("collector.monitor")


@dataclass(slots=True)
class PassResult:
    full: bool
    series: int  # dirty series read again
    countries: int  # countries analysed
    changes: list[StoredEvent] = field(default_factory=list)


@dataclass(eq=False)
class Monitor:
    """One collector's monitor; ``run`` keeps it going while this collector leads."""

    store: Store
    config: CollectorConfig
    key: bytes  # the pseudonym key
    metrics: MonitorMetrics | None = None
    clock: Callable[[], float] = time.time
    params: AnalysisParams = field(default_factory=AnalysisParams)
    cache: SeriesCache = field(init=False, default_factory=SeriesCache)
    live: dict[str, StoredEvent] = field(init=False, default_factory=dict)
    loaded: bool = field(init=False, default=False)
    _filling: float | None = field(init=False, default=None)
    # set after every pass that saved revisions
    changed: asyncio.Event = field(init=False, default_factory=asyncio.Event)
    wake_deliveries: Callable[[], None] | None = field(init=False, default=None)

    @property
    def bucket_s(self) -> float:
        return self.config.monitor.bucket_s

    @property
    def window_s(self) -> float:
        return self.config.monitor.window_s

    def _clock(self) -> Clock:
        now = self.clock()
        return Clock(
            now=now,
            window_start=now - self.window_s,
            bucket_s=self.bucket_s,
            history_s=(self.params.baseline_min_blocking + 1) * self.bucket_s,
        )

    async def step(self) -> PassResult:
        """One pass: the whole window the first time, only what changed afterwards."""
        started = time.perf_counter()
        clock = self._clock()
        if not self.loaded:
            result = await self._full(clock)
        else:
            result = await self._incremental(clock)
        if self.metrics is not None:
            self.metrics.passes.labels("full" if result.full else "incremental").inc()
            self.metrics.pass_seconds.observe(time.perf_counter() - started)
            self.metrics.series.inc(result.series)
        return result

    async def _full(self, clock: Clock) -> PassResult:
        await self.store.take_dirty()  # all of it is read below
        window = Filters(since=clock.window_start, bucket_s=self.bucket_s)
        buckets = await self.store.aggregate(window, self.key)
        self.cache.load(buckets)
        live = await self.store.live_events(clock.window_start)
        self.live = {e.event_id: e for e in live}
        self._filling = clock.filling_bucket
        self.loaded = True
        countries = self.cache.countries() | {e.cc for e in live}
        changes = await self._analyse({cc: set() for cc in countries}, clock)
        log.info("monitor_loaded", buckets=len(self.cache), records=len(self.live))
        return PassResult(True, 0, len(countries), changes)

    async def _incremental(self, clock: Clock) -> PassResult:
        taken = await self.store.take_dirty()
        ranges = [
            DirtySeries(d.cc, d.asn, d.domain, max(d.lo, clock.window_start), d.hi)
            for d in taken
            if d.hi >= clock.window_start
        ]
        todo: dict[str, set[str]] = defaultdict(set)
        if ranges:
            buckets = await self.store.aggregate_ranges(ranges, self.bucket_s, self.key)
            merged = merged_ranges(ranges, self.bucket_s)
            self.cache.patch(merged, buckets)
            for cc, _, domain, _, _ in merged:
                todo[cc].add(domain)
        if clock.filling_bucket != self._filling:
            # A new bucket: the old ones may leave the window, and open records may close
            # for want of data, with no new measurement to say so.
            self._filling = clock.filling_bucket
            self.cache.evict(clock.window_start)
            for e in self.live.values():
                todo[e.cc]
        changes = await self._analyse(todo, clock) if todo else []
        return PassResult(False, len(ranges), len(todo), changes)

    async def _analyse(self, todo: dict[str, set[str]], clock: Clock) -> list[StoredEvent]:
        live_by_cc: dict[str, list[StoredEvent]] = defaultdict(list)
        for e in self.live.values():
            live_by_cc[e.cc].append(e)
        jobs: list[tuple[list[StoredEvent], list[BucketCount]]] = []
        for cc in sorted(todo):
            live = live_by_cc.get(cc, [])
            domains = todo[cc] | {d for e in live for d in e.domains}
            if not todo[cc] and not live:
                domains = self.cache.domains(cc)  # the first pass: all of them
            domains = {d for d in domains if self.cache.disagrees(cc, d)}
            if not domains and not live:
                continue
            jobs.append((live, self.cache.country(cc, domains)))
        revised = await asyncio.to_thread(self._judge, jobs, clock)
        if not revised:
            return []
        changes = [route(r, self.config.alerts.webhooks) for r in revised]
        saved = await self.store.save_changes(changes, clock.now)
        for e in saved:
            if e.status == "retracted" or (
                e.end is not None and e.end < clock.window_start + 2 * clock.bucket_s
            ):
                self.live.pop(e.event_id, None)
            else:
                self.live[e.event_id] = e
        if self.metrics is not None:
            for change in changes:
                self.metrics.changes.labels(change.type).inc()
        for e, change in zip(saved, changes, strict=True):
            log.info(
                "event_changed",
                event_id=e.event_id,
                type=change.type,
                kind=e.kind,
                cc=e.cc,
                asn=e.asn,
                domains=list(e.domains),
                revision=e.revision,
                deliveries=len(change.deliveries),
            )
        self.changed.set()
        self.changed = asyncio.Event()
        if self.wake_deliveries is not None and any(c.deliveries for c in changes):
            self.wake_deliveries()
        return saved

    def _judge(
        self, jobs: Sequence[tuple[list[StoredEvent], list[BucketCount]]], clock: Clock
    ) -> list[Revised]:
        out: list[Revised] = []
        for live, buckets in jobs:
            report = analyse(buckets, self.bucket_s, self.params)
            out.extend(reconcile(live, findings_of(report), clock))
        return out

    async def run(self, stop: asyncio.Event) -> None:
        """Lead when no other collector does; pass every ``monitor.interval_s`` while leading.
        A follower tries for the lock once an interval, so it takes over within two."""
        interval = self.config.monitor.interval_s
        leading = False
        try:
            while not stop.is_set():
                try:
                    held = await self.store.try_monitor_lock()
                except (OSError, ConnectionError) as exc:
                    log.warning("monitor_lock_failed", error=str(exc))
                    held = False
                if held != leading:
                    leading = held
                    self.loaded = False  # a new leader reads the window and records again
                    log.info("monitor_leadership", leader=leading)
                    if self.metrics is not None:
                        self.metrics.leader.set(1 if leading else 0)
                if leading:
                    try:
                        await self.step()
                    except Exception:
                        log.exception("monitor_pass_failed")
                        self.loaded = False
                try:
                    async with asyncio.timeout(interval):
                        await stop.wait()
                except TimeoutError:
                    pass
        finally:
            if leading:
                await self.store.release_monitor_lock()
