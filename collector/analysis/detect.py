"""Leak detection: per-bucket country consensus, per-(ISP, domain) CUSUM with hysteresis.

Pure: counts in (``BucketCount``), a typed ``Report`` out. See README "Finding leaks" for
the reasoning behind each threshold.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter

from collector.analysis.model import (
    BLOCKED_METHODS,
    AnalysisParams,
    IspRow,
    LeakEvent,
    Report,
)
from collector.analysis.stats import wilson_bounds
from collector.store.base import BucketCount

_IspKey = tuple[str, int]  # (cc, asn)
_KEY = attrgetter("cc", "asn", "domain", "bucket_start")


@dataclass(frozen=True, slots=True)
class _Point:
    """One bucket of one (ISP, domain) series, with what the detector needs from it."""

    domain: str
    bucket_start: float
    accessible: int
    conclusive: int
    accessible_agent_ids: tuple[str, ...]
    example_ids: tuple[str, ...]
    lower: float  # Wilson lower bound of the accessible share; 0 when the country does not block
    isps_blocking: int  # other ISPs of the country that block the domain in this bucket
    isps_measured: int


@dataclass(frozen=True, slots=True)
class _Run:
    """A leak of one ISP on one domain, before merging domains."""

    key: _IspKey
    domain: str
    start: float
    end: float | None
    points: tuple[_Point, ...]
    corroborated: bool


def analyse(
    buckets: Iterable[BucketCount], bucket_s: float, params: AnalysisParams | None = None
) -> Report:
    """Leak events and the per-ISP table for ``buckets`` of width ``bucket_s`` seconds."""
    params = params or AnalysisParams()
    survey = _survey(_canonical(buckets))
    points = _points(survey, params)

    runs: list[_Run] = []
    for (cc, asn, domain), series in sorted(points.items()):  # sorted: deterministic
        last = survey.country_last[cc]
        runs.extend(_detect(series, (cc, asn), domain, bucket_s, last, params))

    names = survey.names
    leaks = _merge([r for r in runs if r.corroborated], names, params)
    uncorroborated = _merge([r for r in runs if not r.corroborated], names, params)
    isps = _isp_table(survey, leaks, params)
    return Report(leaks=leaks, uncorroborated=uncorroborated, isps=isps)


def _canonical(buckets: Iterable[BucketCount]) -> list[BucketCount]:
    """Buckets sorted by key, any repeated key folded into one, so input order never matters.
    (Sorting input that is already in order, as the store gives it, is a linear pass.)"""
    ordered = sorted(buckets, key=_KEY)
    out: list[BucketCount] = []
    for b in ordered:
        if out and _KEY(out[-1]) == _KEY(b):
            out[-1] = _fold(out[-1], b)
            continue
        out.append(b)
    return out


def _fold(seen: BucketCount, b: BucketCount) -> BucketCount:
    counts = dict(seen.counts)
    for verdict, n in b.counts.items():
        counts[verdict] = counts.get(verdict, 0) + n
    return BucketCount(
        cc=b.cc,
        asn=b.asn,
        network_name=max(seen.network_name, b.network_name),
        domain=b.domain,
        bucket_start=b.bucket_start,
        counts=counts,
        agents=seen.agents + b.agents,
        accessible_agent_ids=tuple(
            sorted(set(seen.accessible_agent_ids) | set(b.accessible_agent_ids))
        ),
        example_ids=tuple(sorted(set(seen.example_ids) | set(b.example_ids))),
    )


def _blocked(counts: dict[str, int]) -> int:
    return sum(n for verdict, n in counts.items() if verdict in BLOCKED_METHODS)


@dataclass(slots=True)
class _IspTotals:
    counts: dict[str, int]
    max_agents: int = 0
    domains: int = 0


@dataclass(slots=True)
class _Survey:
    """One pass over the sorted buckets: what every later step needs from all of them."""

    facts: list[tuple[BucketCount, int, int, tuple[str, str, float]]]  # (b, ok, blocked, place)
    measured: dict[tuple[str, str, float], int]  # ISPs with conclusive data per place
    blocking: dict[tuple[str, str, float], int]  # of which block
    isps: dict[_IspKey, _IspTotals]
    names: dict[_IspKey, str]
    country_last: dict[str, float]


def _survey(buckets: Sequence[BucketCount]) -> _Survey:
    """Per bucket its `ok` and blocked counts (site_down and inconclusive count for
    neither), per (cc, domain, bucket) how many ISPs measured and blocked, per ISP its
    totals. Buckets come sorted by (cc, asn, domain, bucket), so an ISP's buckets are
    contiguous and its totals add up without a lookup per bucket."""
    blocked_verdicts = BLOCKED_METHODS
    facts: list[tuple[BucketCount, int, int, tuple[str, str, float]]] = []
    measured: dict[tuple[str, str, float], int] = {}
    blocking: dict[tuple[str, str, float], int] = {}
    isps: dict[_IspKey, _IspTotals] = {}
    names: dict[_IspKey, str] = {}
    country_last: dict[str, float] = {}
    isp_key: _IspKey | None = None
    totals = _IspTotals(counts={})
    domain = ""
    for b in buckets:
        key = (b.cc, b.asn)
        if key != isp_key:
            isp_key, domain = key, ""
            totals = isps[key] = _IspTotals(counts={})
            names[key] = b.network_name
        elif b.network_name > names[key]:
            names[key] = b.network_name
        if b.domain != domain:
            domain = b.domain
            totals.domains += 1
        if b.agents > totals.max_agents:
            totals.max_agents = b.agents
        if b.bucket_start > country_last.get(b.cc, -1.0):
            country_last[b.cc] = b.bucket_start
        counts = b.counts
        isp_counts = totals.counts
        ok = blocked = 0
        for verdict, n in counts.items():
            isp_counts[verdict] = isp_counts.get(verdict, 0) + n
            if verdict == "ok":
                ok = n
            elif verdict in blocked_verdicts:
                blocked += n
        if ok + blocked == 0:
            continue  # site_down / inconclusive only: says nothing either way
        place = (b.cc, b.domain, b.bucket_start)
        facts.append((b, ok, blocked, place))
        measured[place] = measured.get(place, 0) + 1
        if blocked > ok:
            blocking[place] = blocking.get(place, 0) + 1
    return _Survey(facts, measured, blocking, isps, names, country_last)


def _points(survey: _Survey, params: AnalysisParams) -> dict[tuple[str, int, str], list[_Point]]:
    """Series of points per (cc, asn, domain), each bucket judged against the other ISPs.

    An ISP "blocks" a domain in a bucket when most of its conclusive measurements are
    blocked; the consensus for one ISP counts the *other* ISPs, so a leaking ISP does not
    dilute the baseline it is compared with. Series that never rise above the opening
    drift cannot open a leak and are left out (most of them, on real data).
    """
    measured, blocking = survey.measured, survey.blocking
    min_others, share, drift, z = (
        params.min_other_isps,
        params.consensus_share,
        params.open_drift,
        params.z,
    )
    raw: dict[tuple[str, int, str], list[tuple[BucketCount, int, int, float, int, int]]]
    raw = defaultdict(list)
    worth_a_look: set[tuple[str, int, str]] = set()
    for b, ok, blocked, place in survey.facts:
        others = measured[place] - 1
        if others < min_others:
            continue  # no baseline to compare with: neutral
        others_blocking = blocking.get(place, 0) - (1 if blocked > ok else 0)
        lower = 0.0  # not accessible, or the country does not block it: no leak here
        if ok and others_blocking > share * others:
            # Both the measurements and the agents must show the site accessible beyond
            # the bound: a VPN volunteer's many results are still one agent's word.
            lower = min(
                wilson_bounds(ok, ok + blocked, z)[0],
                wilson_bounds(b.accessible_agents, b.agents, z)[0],
            )
        key = (b.cc, b.asn, b.domain)
        raw[key].append((b, ok, ok + blocked, lower, others_blocking, others))
        if lower > drift:
            worth_a_look.add(key)

    return {
        key: [
            _Point(
                domain=b.domain,
                bucket_start=b.bucket_start,
                accessible=ok,
                conclusive=conclusive,
                accessible_agent_ids=b.accessible_agent_ids,
                example_ids=b.example_ids,
                lower=lower,
                isps_blocking=others_blocking,
                isps_measured=others,
            )
            for b, ok, conclusive, lower, others_blocking, others in raw[key]
        ]
        for key in worth_a_look
    }


def _detect(
    series: Sequence[_Point],
    key: _IspKey,
    domain: str,
    bucket_s: float,
    data_end: float,
    params: AnalysisParams,
) -> list[_Run]:
    """Two one-sided CUSUMs on the Wilson lower bound, one to open and one to close.

    The opening sum grows by (lower - open_drift) and opens a leak at open_threshold; its
    start is dated back to the bucket where the sum last left zero (the CUSUM change-point
    estimate), so starts are bucket-accurate even when detection needs several buckets.
    Once open, the closing sum grows by (close_drift - lower) and closes the leak at
    close_threshold; the end is dated back to the last bucket that still supported it.
    One contrary bucket therefore never closes a leak: no flapping.
    """
    runs: list[_Run] = []
    up = 0.0
    candidate: list[_Point] = []
    window: list[_Point] | None = None  # the open leak's points, None when closed
    down = 0.0
    support = 0  # points in ``window`` up to the last one that supported the leak

    def finish(end: float | None) -> None:
        assert window is not None
        kept = tuple(window[:support])
        runs.append(
            _Run(
                key=key,
                domain=domain,
                start=kept[0].bucket_start,
                end=end,
                points=kept,
                corroborated=any(len(p.accessible_agent_ids) >= params.min_agents for p in kept),
            )
        )

    for point in series:
        if window is None:
            up = max(0.0, up + point.lower - params.open_drift)
            if up > 0.0:
                candidate.append(point)
            else:
                candidate = []
            if up >= params.open_threshold:
                window, support, down = candidate, len(candidate), 0.0
                candidate, up = [], 0.0
            continue
        window.append(point)
        down = max(0.0, down + params.close_drift - point.lower)
        if down == 0.0:
            support = len(window)
        if down >= params.close_threshold:
            finish(window[support - 1].bucket_start + bucket_s)
            window = None
    if window is not None:
        last = window[support - 1]
        ongoing = down == 0.0 and last.bucket_start >= data_end
        finish(None if ongoing else last.bucket_start + bucket_s)
    return runs


def _merge(
    runs: Sequence[_Run], names: dict[_IspKey, str], params: AnalysisParams
) -> tuple[LeakEvent, ...]:
    """One event per ISP and stretch of time: runs of one ISP that overlap become one
    event listing all their domains (the 2013 story: facebook.com and twitter.com)."""
    by_isp: dict[_IspKey, list[_Run]] = defaultdict(list)
    for run in runs:
        by_isp[run.key].append(run)
    events: list[LeakEvent] = []
    for key, isp_runs in by_isp.items():
        isp_runs.sort(key=lambda r: (r.start, r.domain))
        group: list[_Run] = []
        group_end: float | None = 0.0
        for run in isp_runs:
            if group and (group_end is None or run.start < group_end):
                group.append(run)
                group_end = (
                    None if group_end is None or run.end is None else max(group_end, run.end)
                )
                continue
            if group:
                events.append(_event(key, names[key], group, params))
            group, group_end = [run], run.end
        if group:
            events.append(_event(key, names[key], group, params))
    events.sort(key=lambda e: (e.start, e.cc, e.asn, e.domains))
    return tuple(events)


def _event(key: _IspKey, name: str, group: Sequence[_Run], params: AnalysisParams) -> LeakEvent:
    points = [p for run in group for p in run.points]
    measurements = sum(p.conclusive for p in points)
    accessible = sum(p.accessible for p in points)
    # The weakest baseline among the buckets that showed the leak: the most cautious
    # statement of it (a bucket inside the window where the country did not block is
    # not a baseline for a leak).
    evidence = [p for p in points if p.lower > 0.0] or points
    weakest = min(
        evidence,
        key=lambda p: (
            p.isps_blocking / p.isps_measured,
            p.isps_measured,
            p.bucket_start,
            p.domain,
        ),
    )
    ends = [run.end for run in group]
    examples = sorted((p.bucket_start, i) for p in points for i in p.example_ids)
    unique: list[str] = []
    for _, measurement_id in examples:
        if measurement_id not in unique:
            unique.append(measurement_id)
    lower = wilson_bounds(accessible, measurements, params.z)[0]
    return LeakEvent(
        cc=key[0],
        asn=key[1],
        network_name=name,
        domains=tuple(sorted({run.domain for run in group})),
        start=min(run.start for run in group),
        end=None if any(e is None for e in ends) else max(e for e in ends if e is not None),
        measurements=measurements,
        accessible=accessible,
        agents=len({agent for p in points for agent in p.accessible_agent_ids}),
        isps_blocking=weakest.isps_blocking,
        isps_measured=weakest.isps_measured,
        confidence=lower * weakest.isps_blocking / weakest.isps_measured,
        example_ids=tuple(unique[: params.max_examples]),
    )


def _isp_table(
    survey: _Survey, leaks: Sequence[LeakEvent], params: AnalysisParams
) -> tuple[IspRow, ...]:
    leaking: dict[_IspKey, set[str]] = defaultdict(set)
    for event in leaks:
        leaking[(event.cc, event.asn)].update(event.domains)
    rows: list[IspRow] = []
    for key in sorted(survey.isps):
        totals = survey.isps[key]
        counts = totals.counts
        ok = counts.get("ok", 0)
        blocked = _blocked(counts)
        methods: dict[str, int] = defaultdict(int)
        for verdict, method in BLOCKED_METHODS.items():
            methods[method] += counts.get(verdict, 0)
        lower, upper = wilson_bounds(ok, ok + blocked, params.z)
        rows.append(
            IspRow(
                cc=key[0],
                asn=key[1],
                network_name=survey.names[key],
                measurements=sum(counts.values()),
                accessible=ok,
                blocked=blocked,
                site_down=counts.get("site_down", 0),
                inconclusive=counts.get("inconclusive", 0),
                accessible_lower=lower,
                accessible_upper=upper,
                methods=dict(methods),
                max_agents=totals.max_agents,
                domains=totals.domains,
                leaking_domains=tuple(sorted(leaking[key])),
            )
        )
    return tuple(rows)
