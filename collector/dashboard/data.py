"""The dashboard's data access: what the pages show, computed from the store.

Today the findings come from the pure analysis over the store's aggregation (what
``/api/v1/leaks`` and ``/api/v1/compare`` answer). The pages only see the small typed views
below (``Finding``, ``CountryView``, ``DomainView``), built from the findings' JSON, so the
monitor's stored event records (stable ids, revisions) can replace the source without
touching a template.

A whole-window analysis takes seconds on a big store, so it is cached: pages are served
from the last snapshot, and one older than ``refresh_s`` is recomputed in the background
while the stale one is still served (the first page after start-up waits for it).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime
from typing import Any, Protocol

import structlog

from collector.analysis import AnalysisParams, Report, analyse
from collector.analysis.model import BLOCKED_METHODS, METHOD_NAMES, BucketCount
from collector.filters import Filters

log = structlog.get_logger("collector.dashboard")

MIN_AGENTS = AnalysisParams().min_agents
BLIND_SPOT = "a leak here could not be confirmed: recruit volunteers on this network"


class Source(Protocol):
    """Where the dashboard gets its numbers (the store, or a fixed set in the benchmark)."""

    async def buckets(self, filters: Filters) -> list[BucketCount]: ...

    async def coverage(self, since: float) -> dict[tuple[str, int], int]: ...


class RecordSource(Source, Protocol):
    """A source that also has the monitor's stored event records (stable ids, revisions)."""

    async def records(self, since: float) -> dict[str, list[dict[str, Any]]] | None:
        """Per country the JSON of every record still going on at or after ``since``
        (None: this collector keeps no records, so the pages run the analysis)."""

    async def records_version(self) -> int | None:
        """Changes whenever a record does (the sequence of its latest revision)."""

    async def record(self, ident: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        """One record's JSON and its revisions, oldest first."""


# --- findings ---


def _parse_time(value: Any) -> float | None:
    if value is None:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def finding_id(doc: dict[str, Any], category: str) -> str:
    """The finding's id: the record's own when it has one, else one made from what does not
    change while an event grows (its ISP, its kind and its start)."""
    given = doc.get("id")
    if isinstance(given, str | int) and str(given):
        return str(given)
    start = datetime.fromisoformat(str(doc["start"]).replace("Z", "+00:00"))
    kind = doc.get("kind") or ("leak" if category != "divergence" else "divergence")
    prefix = "u" if category == "uncorroborated" else ""
    return f"{prefix}{kind}-{doc['cc']}-{doc['asn']}-{start:%Y%m%dT%H%M%S}Z".lower()


@dataclass(frozen=True, slots=True)
class Finding:
    """A leak, an uncorroborated leak or a divergence, as the pages show it."""

    id: str
    category: str  # "leak" | "uncorroborated" | "divergence"
    kind: str  # "lapse" (a leak) | "unfiltered" | "lagging" | "partial"
    status: str  # "open" | "closed" | "retracted"
    cc: str
    asn: int
    network_name: str
    domains: tuple[str, ...]
    start: float
    end: float | None
    measurements: int
    agents: int
    accessible_rate: float
    isps_blocking: int
    isps_measured: int
    confidence: float
    example_ids: tuple[str, ...]
    revisions: tuple[dict[str, Any], ...]
    doc: dict[str, Any] = field(compare=False)

    @classmethod
    def from_json(cls, doc: dict[str, Any], category: str) -> Finding:
        end = _parse_time(doc.get("end"))
        status = doc.get("status") or ("open" if end is None else "closed")
        kind = doc.get("kind") or ("lapse" if category != "divergence" else "divergence")
        ident = finding_id(doc, category)
        return cls(
            id=ident,
            category=category,
            kind=str(kind),
            status=str(status),
            cc=str(doc["cc"]),
            asn=int(doc["asn"]),
            network_name=str(doc.get("network_name") or ""),
            domains=tuple(doc.get("domains") or ()),
            start=_parse_time(doc["start"]) or 0.0,
            end=end,
            measurements=int(doc.get("measurements") or 0),
            agents=int(doc.get("agents") or 0),
            accessible_rate=float(doc.get("accessible_rate") or 0.0),
            isps_blocking=int(doc.get("isps_blocking") or 0),
            isps_measured=int(doc.get("isps_measured") or 0),
            confidence=float(doc.get("confidence") or 0.0),
            example_ids=tuple(doc.get("example_measurement_ids") or ()),
            revisions=tuple(doc.get("revisions") or ()),
            doc={"id": ident, **doc},
        )

    @property
    def open(self) -> bool:
        return self.end is None and self.status == "open"

    @property
    def isp_label(self) -> str:
        return f"{self.network_name or 'unnamed network'} (AS{self.asn})"


_KIND_CATEGORIES: dict[str, str] = {"lapse": "leak", "uncorroborated": "uncorroborated"}


def record_finding(doc: dict[str, Any], revisions: Sequence[dict[str, Any]] = ()) -> Finding:
    """A stored record (its JSON, as ``GET /api/v1/events`` gives it) as a finding."""
    kind = str(doc.get("kind") or "lapse")
    category = _KIND_CATEGORIES.get(kind, "divergence")
    finding = Finding.from_json(
        {**doc, "revisions": list(revisions)} if revisions else doc, category
    )
    if revisions:
        finding.doc.pop("revisions", None)
    return finding


def findings_of(report: Report | dict[str, Any]) -> list[Finding]:
    """Every finding of an analysis report (or its JSON); ``divergences`` when present."""
    doc = report if isinstance(report, dict) else report.to_json(with_isps=False)
    if not isinstance(report, dict):
        divergences = getattr(report, "divergences", None)
        if divergences is not None and "divergences" not in doc:
            doc["divergences"] = [d.to_json() for d in divergences]
    out: list[Finding] = []
    for key, category in (
        ("leaks", "leak"),
        ("uncorroborated", "uncorroborated"),
        ("divergences", "divergence"),
    ):
        out.extend(Finding.from_json(d, category) for d in doc.get(key) or ())
    return out


# --- a country ---


@dataclass(frozen=True, slots=True)
class Cell:
    """The latest state of one (ISP, domain): its last bucket with conclusive data."""

    state: str  # "blocked" | "accessible" | "leaking" | "diverging"
    share: float  # accessible share in that bucket
    method: str | None  # the commonest blocking method, when blocked
    bucket_start: float

    @property
    def step(self) -> int:
        """0..10: the colour step of the share."""
        return min(10, max(0, math.floor(self.share * 10 + 0.5)))

    @property
    def percent(self) -> str:
        return f"{self.share:.0%}"

    @property
    def short(self) -> str:
        if self.state == "blocked":
            return self.method or "blk"
        return {"accessible": "ok", "leaking": "LEAK", "diverging": "div"}[self.state]


@dataclass(frozen=True, slots=True)
class IspView:
    asn: int
    network_name: str
    measurements: int
    coverage: int  # distinct agents seen in the last two intervals
    methods: dict[str, int]
    leaking: bool  # an open leak right now
    leaked: bool  # a leak in the window (open or closed)

    @property
    def blind_spot(self) -> bool:
        return self.coverage < MIN_AGENTS

    @property
    def label(self) -> str:
        return f"{self.network_name or 'unnamed network'} (AS{self.asn})"


@dataclass(frozen=True, slots=True)
class CountryView:
    cc: str
    since: float
    until: float
    bucket_s: float
    isps: tuple[IspView, ...]
    domains: tuple[str, ...]
    cells: dict[tuple[int, str], Cell]
    findings: tuple[Finding, ...]
    agents_alive: int
    computed_at: float
    # Parts of the page made once per snapshot (the grid's HTML), filled by the pages' code.
    fragments: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def leaks(self) -> list[Finding]:
        return [f for f in self.findings if f.category == "leak"]

    @property
    def open_leaks(self) -> list[Finding]:
        return [f for f in self.leaks if f.open]

    @property
    def uncorroborated(self) -> list[Finding]:
        return [f for f in self.findings if f.category == "uncorroborated"]

    @property
    def divergences(self) -> list[Finding]:
        return [f for f in self.findings if f.category == "divergence"]

    def finding(self, ident: str) -> Finding | None:
        return next((f for f in self.findings if f.id == ident), None)

    def version(self) -> str:
        """Changes whenever anything a page shows changes (what live updates compare)."""
        digest = hashlib.sha256()
        for f in self.findings:
            digest.update(json.dumps(f.doc, sort_keys=True).encode())
        for isp in self.isps:
            digest.update(f"{isp.asn}:{isp.coverage}:{isp.measurements};".encode())
        for (asn, domain), cell in sorted(self.cells.items()):
            digest.update(
                f"{asn}/{domain}/{cell.state}/{cell.share:.3f}/{cell.bucket_start};".encode()
            )
        return digest.hexdigest()[:16]


def country_view(
    cc: str,
    buckets: Sequence[BucketCount],
    findings: Sequence[Finding],
    coverage: dict[tuple[str, int], int],
    *,
    since: float,
    until: float,
    bucket_s: float,
    computed_at: float,
) -> CountryView:
    """The country page's content from one country's buckets (sorted by cc, asn, domain,
    bucket, as the store gives them) and its findings. Pure."""
    names: dict[int, str] = {}
    measured: dict[int, int] = defaultdict(int)
    methods: dict[int, dict[str, int]] = defaultdict(lambda: dict.fromkeys(METHOD_NAMES, 0))
    latest: dict[tuple[int, str], tuple[float, int, int, dict[str, int]]] = {}
    domains: set[str] = set()
    blocked_methods = BLOCKED_METHODS
    for b in buckets:
        asn = b.asn
        if b.network_name > names.get(asn, "") or asn not in names:
            names[asn] = b.network_name
        domains.add(b.domain)
        counts = b.counts
        ok = counts.get("ok", 0)
        blocked = 0
        isp_methods = methods[asn]
        total = 0
        for verdict, n in counts.items():
            total += n
            method = blocked_methods.get(verdict)
            if method is not None:
                blocked += n
                isp_methods[method] += n
        measured[asn] += total
        if ok + blocked:
            key = (asn, b.domain)
            seen = latest.get(key)
            if seen is None or b.bucket_start >= seen[0]:
                latest[key] = (b.bucket_start, ok, blocked, counts)

    open_by_cell: dict[tuple[int, str], str] = {}
    for f in findings:
        if not f.open or f.category == "uncorroborated":
            continue
        state = "leaking" if f.category == "leak" else "diverging"
        for domain in f.domains:
            if open_by_cell.get((f.asn, domain)) != "leaking":
                open_by_cell[(f.asn, domain)] = state

    cells: dict[tuple[int, str], Cell] = {}
    for key, (start, ok, blocked, counts) in latest.items():
        share = ok / (ok + blocked)
        state = open_by_cell.get(key) or ("blocked" if blocked > ok else "accessible")
        method = None
        if blocked:
            best = max(
                ((blocked_methods[v], n) for v, n in counts.items() if v in blocked_methods),
                key=lambda mn: mn[1],
            )
            method = best[0]
        cells[key] = Cell(state=state, share=share, method=method, bucket_start=start)

    leaking_now = {f.asn for f in findings if f.category == "leak" and f.open}
    leaked = {f.asn for f in findings if f.category == "leak"}
    isps = tuple(
        IspView(
            asn=asn,
            network_name=names[asn],
            measurements=measured[asn],
            coverage=coverage.get((cc, asn), 0),
            methods=dict(methods[asn]),
            leaking=asn in leaking_now,
            leaked=asn in leaked,
        )
        for asn in sorted(names, key=lambda a: (names[a].lower(), a))
    )
    return CountryView(
        cc=cc,
        since=since,
        until=until,
        bucket_s=bucket_s,
        isps=isps,
        domains=tuple(sorted(domains)),
        cells=cells,
        findings=tuple(sorted(findings, key=lambda f: (f.end is not None, -f.start, f.id))),
        agents_alive=sum(n for (c, _), n in coverage.items() if c == cc),
        computed_at=computed_at,
    )


# --- one domain ---


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    bucket_start: float
    ok: int
    conclusive: int

    @property
    def share(self) -> float | None:
        return self.ok / self.conclusive if self.conclusive else None


@dataclass(frozen=True, slots=True)
class IspSeries:
    asn: int
    network_name: str
    points: tuple[SeriesPoint, ...]
    methods: dict[str, int]  # blocked measurements by method
    accessible: int
    blocked: int

    @property
    def label(self) -> str:
        return f"{self.network_name or 'unnamed network'} (AS{self.asn})"


def isp_series(buckets: Iterable[BucketCount]) -> list[IspSeries]:
    """Per ISP its accessible share per bucket and its method mix (of the buckets given:
    one domain, or the domains of an event, summed)."""
    per: dict[int, dict[float, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    names: dict[int, str] = {}
    mix: dict[int, dict[str, int]] = defaultdict(lambda: dict.fromkeys(METHOD_NAMES, 0))
    for b in buckets:
        names[b.asn] = max(names.get(b.asn, ""), b.network_name)
        ok = b.counts.get("ok", 0)
        blocked = 0
        for verdict, n in b.counts.items():
            method = BLOCKED_METHODS.get(verdict)
            if method is not None:
                blocked += n
                mix[b.asn][method] += n
        cell = per[b.asn][b.bucket_start]
        cell[0] += ok
        cell[1] += ok + blocked
    out = []
    for asn in sorted(names, key=lambda a: (names[a].lower(), a)):
        points = tuple(SeriesPoint(t, ok, n) for t, (ok, n) in sorted(per[asn].items()))
        out.append(
            IspSeries(
                asn=asn,
                network_name=names[asn],
                points=points,
                methods=dict(mix[asn]),
                accessible=sum(p.ok for p in points),
                blocked=sum(p.conclusive - p.ok for p in points),
            )
        )
    return out


# --- the snapshot cache ---


@dataclass(frozen=True, slots=True)
class Snapshot:
    countries: dict[str, CountryView]
    since: float
    until: float
    computed_at: float
    version: int | None = None  # of the records it was made from


def coverage_since(now: float, bucket_s: float) -> float:
    """The start of "the last two intervals": the current bucket and the one before it."""
    return (math.floor(now / bucket_s) - 1) * bucket_s


def window(now: float, window_s: float, bucket_s: float) -> tuple[float, float]:
    """[since, until): whole buckets, the last one being the current (partial) bucket."""
    until = (math.floor(now / bucket_s) + 1) * bucket_s
    since = until - math.ceil(window_s / bucket_s) * bucket_s
    return since, until


def build_snapshot(
    buckets: Sequence[BucketCount],
    coverage: dict[tuple[str, int], int],
    *,
    since: float,
    until: float,
    bucket_s: float,
    computed_at: float,
    records: dict[str, list[dict[str, Any]]] | None = None,
    version: int | None = None,
) -> Snapshot:
    """Every country's view from one aggregation of the window and, where the collector
    keeps them, the monitor's records (else the analysis of those buckets). Pure."""
    by_cc: dict[str, list[BucketCount]] = defaultdict(list)
    for b in buckets:
        by_cc[b.cc].append(b)
    countries = {}
    for cc, mine in sorted(by_cc.items()):
        if records is not None:
            findings = [
                record_finding(doc)
                for doc in records.get(cc, ())
                if doc.get("status") != "retracted"
            ]
        else:
            findings = findings_of(analyse(mine, bucket_s))
        countries[cc] = country_view(
            cc,
            mine,
            findings,
            coverage,
            since=since,
            until=until,
            bucket_s=bucket_s,
            computed_at=computed_at,
        )
    return Snapshot(
        countries=countries, since=since, until=until, computed_at=computed_at, version=version
    )


def _log_failure(task: asyncio.Task[Snapshot]) -> None:
    # A background refresh that failed: the pages keep the last snapshot, the log says why.
    if not task.cancelled() and task.exception() is not None:
        log.error("dashboard_refresh_failed", error=repr(task.exception()))


@dataclass(eq=False)
class DashboardData:
    """The cached snapshot and the on-demand views (a domain, an event's evidence)."""

    source: Source
    _: KW_ONLY
    window_s: float
    bucket_s: float
    refresh_s: float
    clock: Callable[[], float] = time.time
    prepare: Callable[[Snapshot], None] | None = None  # runs on the worker thread once per snapshot
    _snapshot: Snapshot | None = field(init=False, default=None)
    _refreshing: asyncio.Task[Snapshot] | None = field(init=False, default=None)

    async def snapshot(self) -> Snapshot:
        """The latest snapshot; a stale one starts a refresh and is served meanwhile."""
        current = self._snapshot
        if current is not None and await self._fresh(current):
            return current
        task = self._refreshing
        if task is None or task.done():
            task = self._refreshing = asyncio.create_task(self._compute())
            task.add_done_callback(_log_failure)
        if current is not None:
            return current
        return await asyncio.shield(task)

    async def _fresh(self, snap: Snapshot) -> bool:
        if self.clock() - snap.computed_at > self.refresh_s:
            return False
        return snap.version is None or snap.version == await self._records_version()

    async def close(self) -> None:
        task = self._refreshing
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _compute(self) -> Snapshot:
        now = self.clock()
        since, until = window(now, self.window_s, self.bucket_s)
        filters = Filters(since=since, until=until, bucket_s=self.bucket_s)
        version = await self._records_version()
        records = await self._records(since)
        buckets = await self.source.buckets(filters)
        coverage = await self.source.coverage(coverage_since(now, self.bucket_s))

        def build() -> Snapshot:  # on a worker thread: the analysis and ``prepare`` take time
            snap = build_snapshot(
                buckets,
                coverage,
                since=since,
                until=until,
                bucket_s=self.bucket_s,
                computed_at=now,
                records=records,
                version=version,
            )
            if self.prepare is not None:
                self.prepare(snap)
            return snap

        snap = await asyncio.to_thread(build)
        self._snapshot = snap
        return snap

    async def _records(self, since: float) -> dict[str, list[dict[str, Any]]] | None:
        fetch = getattr(self.source, "records", None)
        return None if fetch is None else await fetch(since)

    async def _records_version(self) -> int | None:
        fetch = getattr(self.source, "records_version", None)
        return None if fetch is None else await fetch()

    async def country(self, cc: str) -> CountryView | None:
        return (await self.snapshot()).countries.get(cc)

    async def finding(self, ident: str) -> Finding | None:
        """The finding with this id: the record with its revisions where the collector keeps
        records (also one no longer in the window, or retracted), else the analysis'."""
        fetch = getattr(self.source, "record", None)
        if fetch is not None:
            got = await fetch(ident)
            if got is not None:
                return record_finding(*got)
        for view in (await self.snapshot()).countries.values():
            found = view.finding(ident)
            if found is not None:
                return found
        return None

    async def series(
        self, cc: str, domains: Sequence[str], since: float, until: float
    ) -> list[IspSeries]:
        """Per ISP of ``cc`` the accessible share per bucket of ``domains`` (summed)."""
        buckets: list[BucketCount] = []
        for domain in domains:
            filters = Filters(
                cc=cc, domain=domain, since=since, until=until, bucket_s=self.bucket_s
            )
            buckets.extend(await self.source.buckets(filters))
        return isp_series(buckets)
