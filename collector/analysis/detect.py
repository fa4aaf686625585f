"""Leak detection: per-bucket country consensus, and per (ISP, domain) a CUSUM with
hysteresis against the ISP's own baseline; standing differences named as divergences.

Pure: counts in (``BucketCount``), a typed ``Report`` out. docs/analysis.md explains the
method, its reasoning and every threshold.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter

from collector.analysis.model import (
    BLOCKED_METHODS,
    LAGGING,
    LAPSE,
    PARTIAL,
    UNFILTERED,
    AnalysisParams,
    BucketCount,
    IspRow,
    LeakEvent,
    Report,
)
from collector.analysis.stats import beta_binomial_tail, binomial_tail, wilson_bounds

_IspKey = tuple[str, int]  # (cc, asn)
_KEY = attrgetter("cc", "asn", "domain", "bucket_start")


@dataclass(frozen=True, slots=True)
class _Point:
    """One bucket of one (ISP, domain) series, with what the detector needs from it."""

    domain: str
    bucket_start: float
    accessible: int
    conclusive: int
    agents: int  # distinct agents in the bucket
    accessible_agent_ids: tuple[str, ...]
    example_ids: tuple[str, ...]
    lower: float  # Wilson lower bound of the accessible share; 0 when the country does not block
    consensus: bool  # most other ISPs of the country block the domain in this bucket
    isps_blocking: int  # other ISPs of the country that block the domain in this bucket
    isps_measured: int

    @property
    def blocked(self) -> int:
        return self.conclusive - self.accessible

    @property
    def evidence(self) -> tuple[float, float]:
        """(accessible, trials) counted per agent: at most one trial per distinct agent, its
        accessible part the smaller of the measurements' and the agents' shares. Many
        measurements of one agent (a VPN volunteer, a flaky link) are not independent, so
        the tests of own-baseline change weigh agents, not measurements."""
        trials = min(self.conclusive, self.agents)
        if trials <= 0:
            return 0.0, 0.0
        share = min(
            self.accessible / self.conclusive,
            len(self.accessible_agent_ids) / self.agents,
        )
        return trials * share, float(trials)


@dataclass(frozen=True, slots=True)
class _Run:
    """A lapse of one ISP on one domain, before merging domains."""

    key: _IspKey
    domain: str
    start: float
    end: float | None
    points: tuple[_Point, ...]
    corroborated: bool
    baseline_blocked_share: float
    lifted_at: float | None


@dataclass(frozen=True, slots=True)
class _Divergence:
    """A standing difference of one ISP on one domain, before merging domains."""

    key: _IspKey
    domain: str
    kind: str
    start: float
    end: float | None
    points: tuple[_Point, ...]


class _Baseline:
    """The ISP's own accessible share over its last ``size`` buckets in which the country
    blocked (per-agent evidence, see ``_Point.evidence``), with a small prior."""

    __slots__ = ("_accessible", "_prior", "_trials", "_window")

    def __init__(self, size: int, prior: float) -> None:
        self._window: deque[tuple[float, float]] = deque(maxlen=size)
        self._accessible = 0.0
        self._trials = 0.0
        self._prior = prior

    def add(self, point: _Point) -> None:
        if not point.consensus:
            return  # how the ISP behaves where its country does not block says nothing
        accessible, trials = point.evidence
        if trials <= 0:
            return
        if len(self._window) == self._window.maxlen:
            old_accessible, old_trials = self._window[0]
            self._accessible -= old_accessible
            self._trials -= old_trials
        self._window.append((accessible, trials))
        self._accessible += accessible
        self._trials += trials

    def accessible_share(self) -> float:
        """The smoothed share a lapse is measured against."""
        return (self._accessible + self._prior) / (self._trials + 2 * self._prior)

    def improbable(self, points: Sequence[_Point], significance: float) -> bool:
        return _improbable(points, self.accessible_share(), significance)


def _improbable(points: Sequence[_Point], share: float, significance: float) -> bool:
    """Whether the accessible evidence of ``points`` (where the country blocked) is less
    probable than ``significance`` under an accessible ``share``: a binomial tail."""
    k, n = _counted(points)
    return binomial_tail(k, n, share) < significance


def _lapse_improbable(
    points: Sequence[_Point],
    accessible: float,
    trials: float,
    prior: float,
    significance: float,
    min_buckets: int,
) -> bool:
    """Whether a rise's accessible evidence is less probable than ``significance`` given
    the ISP's baseline of ``accessible`` of ``trials`` (per agent).

    A baseline in which the ISP was seen accessible is a share *estimated* from a few
    dozen agent-trials: the rise is tested against its predictive distribution (a beta-
    binomial with the baseline's counts and the prior), so that a 70 % blocker whose
    history happened to look like 80 % is not called a lapse on a chance run of open
    buckets. A clean baseline (never accessible where its country blocked: a full blocker)
    is tested under its smoothed share, as fast as ever: it has no partial share whose
    uncertainty would matter."""
    k, n = _counted(points)
    if accessible <= 0.0:
        return binomial_tail(k, n, prior / (trials + 2 * prior)) < significance
    if sum(1 for p in points if p.consensus and p.lower > 0.0) < min_buckets:
        return False  # one bucket of all agents through is a partial blocker's own noise
    tail = beta_binomial_tail(k, n, accessible + prior, max(0.0, trials - accessible) + prior)
    return tail < significance


def _counted(points: Sequence[_Point]) -> tuple[int, int]:
    """(accessible, trials) of ``points`` where the country blocked, per agent, whole."""
    accessible = trials = 0.0
    for p in points:
        if p.consensus:
            a, t = p.evidence
            accessible += a
            trials += t
    return math.floor(accessible + 1e-9), round(trials)


def analyse(
    buckets: Iterable[BucketCount],
    bucket_s: float,
    params: AnalysisParams | None = None,
    *,
    asn: int | None = None,
    domain: str | None = None,
) -> Report:
    """Lapses, divergences and the per-ISP table for ``buckets`` of width ``bucket_s``.

    ``asn`` and ``domain`` narrow the answer, never the evidence: every ISP of a country
    in ``buckets`` takes part in the comparison, and only the events (and ISP rows) of
    that AS and domain are returned. They are exactly the events the whole answer holds
    for them.
    """
    params = params or AnalysisParams()
    canonical = _canonical(buckets)
    survey = _survey(canonical)
    points = _points(survey, params)

    runs: list[_Run] = []
    found: list[_Divergence] = []
    for (cc, isp, name), series in sorted(points.items()):  # sorted: deterministic
        if asn is not None and isp != asn:
            continue
        if domain is not None and name != domain:
            continue
        last = survey.country_last[cc]
        mine = _detect(series, (cc, isp), name, bucket_s, last, params)
        runs.extend(mine)
        found.extend(_divergences(series, mine, (cc, isp), name, bucket_s, last, params))

    names = survey.names
    leaks = _merge([r for r in runs if r.corroborated], names, params)
    uncorroborated = _merge([r for r in runs if not r.corroborated], names, params)
    divergences = _merge_divergences(found, names, params)
    if domain is not None:
        survey = _survey([b for b in canonical if b.domain == domain])
    isps = _isp_table(survey, leaks, params, asn)
    return Report(leaks=leaks, uncorroborated=uncorroborated, isps=isps, divergences=divergences)


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
        # the smallest and largest `ok` id, as the store's SQL and compare give them
        example_ids=_extremes((*seen.example_ids, *b.example_ids)),
    )


def _extremes(ids: tuple[str, ...]) -> tuple[str, ...]:
    if not ids:
        return ()
    low, high = min(ids), max(ids)
    return (low,) if low == high else (low, high)


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
    # where each (cc, asn, domain) series begins in ``facts`` (they are contiguous)
    series: list[tuple[tuple[str, int, str], int]]


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
    series: list[tuple[tuple[str, int, str], int]] = []
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
            series.append(((b.cc, b.asn, domain), len(facts)))
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
    return _Survey(facts, measured, blocking, isps, names, country_last, series)


def _points(survey: _Survey, params: AnalysisParams) -> dict[tuple[str, int, str], list[_Point]]:
    """Series of points per (cc, asn, domain), each bucket judged against the other ISPs.

    An ISP "blocks" a domain in a bucket when most of its conclusive measurements are
    blocked; the consensus for one ISP counts the *other* ISPs, so a leaking ISP does not
    dilute the baseline it is compared with. Series in which the ISP was never seen
    accessible while its country blocked can be neither a lapse nor a divergence and are
    left out (most of them, on real data) after a look at their `ok` buckets only.
    """
    measured, blocking, facts = survey.measured, survey.blocking, survey.facts
    share = params.consensus_share
    bounds = [start for _, start in survey.series[1:]] + [len(facts)] * bool(survey.series)
    out: dict[tuple[str, int, str], list[_Point]] = {}
    for (key, start), stop in zip(survey.series, bounds, strict=True):
        for _, ok, _, place in facts[start:stop]:
            if ok and blocking.get(place, 0) > share * (measured[place] - 1):
                break  # accessible somewhere the other ISPs block (counted exactly below)
        else:
            continue
        points = _series(facts[start:stop], survey, params)
        if any(p.lower > 0.0 for p in points):
            out[key] = points
    return out


def _series(
    facts: Sequence[tuple[BucketCount, int, int, tuple[str, str, float]]],
    survey: _Survey,
    params: AnalysisParams,
) -> list[_Point]:
    measured, blocking = survey.measured, survey.blocking
    min_others, share, z = params.min_other_isps, params.consensus_share, params.z
    points: list[_Point] = []
    for b, ok, blocked, place in facts:
        others = measured[place] - 1
        if others < min_others:
            continue  # no baseline to compare with: neutral
        others_blocking = blocking.get(place, 0) - (1 if blocked > ok else 0)
        consensus = others_blocking > share * others
        lower = 0.0  # not accessible, or the country does not block it: no leak here
        if ok and consensus:
            # Both the measurements and the agents must show the site accessible beyond
            # the bound: a VPN volunteer's many results are still one agent's word.
            lower = min(
                wilson_bounds(ok, ok + blocked, z)[0],
                wilson_bounds(b.accessible_agents, b.agents, z)[0],
            )
        points.append(
            _Point(
                domain=b.domain,
                bucket_start=b.bucket_start,
                accessible=ok,
                conclusive=ok + blocked,
                agents=b.agents,
                accessible_agent_ids=b.accessible_agent_ids,
                example_ids=b.example_ids,
                lower=lower,
                consensus=consensus,
                isps_blocking=others_blocking,
                isps_measured=others,
            )
        )
    return points


def _detect(
    series: Sequence[_Point],
    key: _IspKey,
    domain: str,
    bucket_s: float,
    data_end: float,
    params: AnalysisParams,
) -> list[_Run]:
    """Lapses of one (ISP, domain), in two passes of the same CUSUM (``_scan``).

    Nothing can lapse before the ISP's blocking begins (``_blocking_begins``): without a
    history of its own an open ISP is unfiltered or lagging, never a fault.
    The first pass measures each bucket against the ISP's *trailing* baseline and
    finds the candidate lapses. A short history misleads, though: an ISP that blocks 70 %
    of the time can block every time for a few buckets and then let two agents through
    twice, which looks like a lapse against those few buckets. So the second pass measures
    again against the ISP's *surrounding* baseline (the buckets before and after, the first
    pass's candidates left out), and only its lapses that overlap a first-pass candidate
    are kept: a lapse must be improbable under how the ISP behaves both before and around
    it. At the end of the data the surrounding baseline is the trailing one.
    """
    first = _blocking_begins([p for p in series if p.consensus], at_start=True)
    if first is None:
        return []
    points = series[series.index(first) :]
    trailing = _TrailingBaseline(params.baseline_buckets, params.baseline_prior)
    candidates = _scan(points, trailing, params)
    if not candidates:
        return []
    excluded = {id(p) for _, _, run in candidates for _, p in run}
    surrounding = _SurroundingBaseline(points, excluded, params)
    spans = [(first, len(points) if last < 0 else last) for first, last, _ in candidates]
    confirmed = [
        c
        for c in _scan(points, surrounding, params)
        if any(c[0] <= e and s <= (len(points) if c[1] < 0 else c[1]) for s, e in spans)
    ]
    runs = []
    for _, last, kept in confirmed:
        start = kept[0][1].bucket_start
        end_point = kept[-1][1]
        ongoing = last < 0 and end_point.bucket_start >= data_end
        runs.append(
            _Run(
                key=key,
                domain=domain,
                start=start,
                end=None if ongoing else end_point.bucket_start + bucket_s,
                points=tuple(p for _, p in kept),
                corroborated=any(len(p.accessible_agent_ids) >= params.min_agents for _, p in kept),
                baseline_blocked_share=surrounding.blocked_share(kept[0][0]),
                lifted_at=_lifted_nationally(series, start, params),
            )
        )
    return runs


class _TrailingBaseline(_Baseline):
    """The baseline of the last buckets before the one being judged (``_Baseline``)."""

    def share_at(self, index: int) -> float:
        return self.accessible_share()

    def improbable_at(self, points: Sequence[_Point], index: int, significance: float) -> bool:
        return self.improbable(points, significance)


class _SurroundingBaseline:
    """The ISP's accessible share in the buckets around each one: up to
    ``baseline_buckets`` points before and after it, ``excluded`` points left out; from
    prefix sums, so each look-up costs the same however wide the window."""

    def __init__(
        self, points: Sequence[_Point], excluded: set[int], params: AnalysisParams
    ) -> None:
        self._width = params.baseline_buckets
        self._prior = params.baseline_prior
        self._accessible = [0.0]
        self._trials = [0.0]
        self._habit = params.baseline_min_blocking
        self._partial_buckets = params.partial_lapse_buckets
        self._blocking = [0]
        for p in points:
            kept = p.consensus and id(p) not in excluded
            a, t = p.evidence if kept else (0.0, 0.0)
            self._accessible.append(self._accessible[-1] + a)
            self._trials.append(self._trials[-1] + t)
            half = p.blocked >= p.accessible and p.blocked > 0
            self._blocking.append(self._blocking[-1] + (kept and half))

    def _window(self, index: int) -> tuple[int, int]:
        return max(0, index - self._width), min(len(self._trials) - 1, index + self._width + 1)

    def _sums(self, index: int) -> tuple[float, float]:
        lo, hi = self._window(index)
        return (
            self._accessible[hi] - self._accessible[lo],
            self._trials[hi] - self._trials[lo],
        )

    def habitual(self, index: int) -> bool:
        """Whether the window shows a blocking habit to lapse from: at least
        ``baseline_min_blocking`` buckets in which the ISP blocked at least half, candidates
        left out (a never-filtering ISP with one bucket of failed measurements has none)."""
        lo, hi = self._window(index)
        return self._blocking[hi] - self._blocking[lo] >= self._habit

    def share_at(self, index: int) -> float:
        accessible, trials = self._sums(index)
        return (accessible + self._prior) / (trials + 2 * self._prior)

    def blocked_share(self, index: int) -> float:
        accessible, trials = self._sums(index)
        return 1.0 if trials <= 0 else max(0.0, 1.0 - accessible / trials)

    def improbable_at(self, points: Sequence[_Point], index: int, significance: float) -> bool:
        if not self.habitual(index):
            return False
        accessible, trials = self._sums(index)
        return _lapse_improbable(
            points, accessible, trials, self._prior, significance, self._partial_buckets
        )

    def add(self, point: _Point) -> None:
        """Nothing to learn: the surrounding baseline is fixed before the scan."""


# One pass's lapse: (index of its first point, index of its last supporting point or -1
# while it is still supported at the end, its supporting points with their indexes).
_Found = tuple[int, int, list[tuple[int, _Point]]]


def _scan(
    points: Sequence[_Point],
    baseline: _TrailingBaseline | _SurroundingBaseline,
    params: AnalysisParams,
) -> list[_Found]:
    """Two one-sided CUSUMs on the Wilson lower bound, their reference raised by the
    ISP's own baseline accessible share.

    The opening sum grows by (lower - baseline - open_drift); a lapse opens when it
    reaches open_threshold *and* the rise's accessible evidence is improbable under the
    baseline (binomial tail below ``significance``). The start is dated back to the bucket
    where the sum last left zero. While a rise is pending a trailing baseline is frozen,
    so that a lapse does not become its own baseline; a rise that comes to nothing joins
    it. Once open, the closing sum grows by (baseline + close_drift - lower) and closes
    the lapse at close_threshold; the end is dated back to the last bucket that supported
    it. One contrary bucket therefore never closes a lapse: no flapping.
    """
    found: list[_Found] = []
    up = 0.0
    candidate: list[tuple[int, _Point]] = []
    window: list[tuple[int, _Point]] | None = None  # the open lapse's points
    down = 0.0
    support = 0  # points in ``window`` up to the last one that supported the lapse
    share = 0.0  # the baseline accessible share the open lapse is measured against

    for i, point in enumerate(points):
        if window is None:
            share = baseline.share_at(candidate[0][0] if candidate else i)
            up = max(0.0, up + point.lower - share - params.open_drift * (1.0 - share))
            if up <= 0.0:
                for _, p in candidate:
                    baseline.add(p)
                baseline.add(point)
                candidate = []
                continue
            candidate.append((i, point))
            if up >= params.open_threshold and baseline.improbable_at(
                [p for _, p in candidate], candidate[0][0], params.significance
            ):
                window, support, down = candidate, len(candidate), 0.0
                candidate, up = [], 0.0
            continue
        window.append((i, point))
        down = max(0.0, down + share + params.close_drift * (1.0 - share) - point.lower)
        if down == 0.0:
            support = len(window)
        if down >= params.close_threshold:
            kept = window[:support]
            found.append((kept[0][0], kept[-1][0], kept))
            for _, p in window[support:]:
                baseline.add(p)
            window = None
    if window is not None:
        kept = window[:support]
        found.append((kept[0][0], -1 if down == 0.0 else kept[-1][0], kept))
    return found


def _lifted_nationally(
    series: Sequence[_Point], start: float, params: AnalysisParams
) -> float | None:
    """The start of the first bucket, within ``national_lift_within_s`` of ``start``, from
    which the other ISPs stop blocking the domain and keep it open for that long again (or
    to the end of the data): a national unblocking that this ISP merely led."""
    within = params.national_lift_within_s
    lifted: float | None = None
    for p in series:
        if p.bucket_start < start:
            continue
        if lifted is not None and p.bucket_start > lifted + within:
            break
        if p.consensus:
            lifted = None
            if p.bucket_start > start + within:
                break
        elif lifted is None:
            if p.bucket_start > start + within:
                break
            lifted = p.bucket_start
    return lifted


def _divergences(
    series: Sequence[_Point],
    runs: Sequence[_Run],
    key: _IspKey,
    domain: str,
    bucket_s: float,
    data_end: float,
    params: AnalysisParams,
) -> list[_Divergence]:
    """Standing differences of one (ISP, domain) where its country blocks, lapses left out.

    An ISP whose blocked share there is below partial_share is ``unfiltered``. The buckets
    before it begins blocking (by majority, two buckets running) are its lead-in: when its
    open lead-in is improbable under how it blocks since, it was ``lagging`` for that span.
    What remains is ``partial`` when the ISP's blocked share is stable between
    partial_share and 1 - partial_share and does not come from a single always-open agent
    (a volunteer on a VPN is that agent, not the ISP).
    """
    windows = [(r.start, math.inf if r.end is None else r.end) for r in runs]
    eligible = [
        p for p in series if p.consensus and not any(s <= p.bucket_start < e for s, e in windows)
    ]
    if len(eligible) < params.divergence_min_buckets:
        # a country that "blocked" an open site in a bucket or two, as a busy network's
        # timeouts can make it look, is no standing difference to diverge from
        return []
    out: list[_Divergence] = []

    def add(kind: str, points: Sequence[_Point], end: float | None) -> None:
        distinct = {a for p in points for a in p.accessible_agent_ids}
        if len(distinct) >= params.min_agents:
            out.append(_Divergence(key, domain, kind, points[0].bucket_start, end, tuple(points)))

    def span_end(points: Sequence[_Point]) -> float | None:
        last = points[-1].bucket_start
        return None if last >= data_end else last + bucket_s

    if _blocked_share(eligible) < params.partial_share:
        add(UNFILTERED, eligible, span_end(eligible))
        return out
    begins = _blocking_begins(eligible, at_start=False)
    first = None if begins is None else eligible.index(begins)
    rest: Sequence[_Point]
    if first is None:
        rest = eligible
    else:
        lead, rest = eligible[:first], eligible[first:]
        if lead and _lagged(lead, rest, params):
            add(LAGGING, lead, rest[0].bucket_start)
        else:
            rest = eligible
    share = _blocked_share(rest)
    if (
        len(rest) >= params.divergence_min_buckets
        and params.partial_share <= share <= 1.0 - params.partial_share
        and not _one_agent(rest)
    ):
        add(PARTIAL, rest, span_end(rest))
    return out


def _blocking_begins(eligible: Sequence[_Point], *, at_start: bool) -> _Point | None:
    """The bucket where the ISP's blocking begins: at least half of its measurements are
    blocked there and in the next bucket where its country blocks (or that is the last
    one), or, with ``at_start``, in the first such bucket of the data. One bucket of
    failed measurements (timeouts count as blocked) is not a filter starting."""
    blocks = [p.blocked >= p.accessible and p.blocked > 0 for p in eligible]
    for i, p in enumerate(eligible):
        if blocks[i] and ((at_start and i == 0) or i + 1 == len(blocks) or blocks[i + 1]):
            return p
    return None


def _blocked_share(points: Sequence[_Point]) -> float:
    conclusive = sum(p.conclusive for p in points)
    return 1.0 - sum(p.accessible for p in points) / conclusive if conclusive else 1.0


def _lagged(lead: Sequence[_Point], rest: Sequence[_Point], params: AnalysisParams) -> bool:
    """Whether an open lead-in is more than chance under how the ISP blocks afterwards: it
    must be open by majority and its accessible evidence improbable under the later share
    (a bucket of failed measurements inside it does not undo a lag)."""
    if _blocked_share(lead) >= 0.5:
        return False
    later = _Baseline(len(rest), params.baseline_prior)
    for p in rest:
        later.add(p)
    return later.improbable(lead, params.significance)


def _one_agent(points: Sequence[_Point]) -> bool:
    """Whether the accessible share comes from one agent: leaving out the agent seen
    accessible most often, the others are accessible less than a quarter as often as all
    agents together (a VPN volunteer's companions: about never)."""
    seen: dict[str, int] = defaultdict(int)
    for p in points:
        for agent in p.accessible_agent_ids:
            seen[agent] += 1
    if not seen:
        return True
    top = max(sorted(seen), key=lambda a: seen[a])
    all_accessible = sum(seen.values())
    all_slots = sum(p.agents for p in points)
    others_accessible = all_accessible - seen[top]
    others_slots = sum(max(0, p.agents - 1) for p in points)
    if others_slots == 0 or others_accessible == 0:
        return True
    return others_accessible / others_slots < 0.25 * all_accessible / all_slots


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
                events.append(_lapse_event(key, names[key], group, params))
            group, group_end = [run], run.end
        if group:
            events.append(_lapse_event(key, names[key], group, params))
    events.sort(key=lambda e: (e.start, e.cc, e.asn, e.domains))
    return tuple(events)


def _lapse_event(
    key: _IspKey, name: str, group: Sequence[_Run], params: AnalysisParams
) -> LeakEvent:
    ends = [run.end for run in group]
    lifted = [run.lifted_at for run in group]
    return _event(
        key,
        name,
        [p for run in group for p in run.points],
        {run.domain for run in group},
        min(run.start for run in group),
        None if any(e is None for e in ends) else max(e for e in ends if e is not None),
        params,
        kind=LAPSE,
        # the most cautious statement: the least the ISP blocked before any of them
        blocked_share=min(run.baseline_blocked_share for run in group),
        # only when the country lifted every domain of the event
        lifted=None if any(t is None for t in lifted) else max(t for t in lifted if t is not None),
    )


def _merge_divergences(
    found: Sequence[_Divergence], names: dict[_IspKey, str], params: AnalysisParams
) -> tuple[LeakEvent, ...]:
    """One divergence per ISP, kind and window: domains share an event only when both
    their kind and their window are the same."""
    groups: dict[tuple[_IspKey, str, float, float | None], list[_Divergence]] = defaultdict(list)
    for d in found:
        groups[(d.key, d.kind, d.start, d.end)].append(d)
    events = []
    for (key, kind, start, end), group in groups.items():
        points = [p for d in group for p in d.points]
        events.append(
            _event(
                key,
                names[key],
                points,
                {d.domain for d in group},
                start,
                end,
                params,
                kind=kind,
                blocked_share=_blocked_share(points),
                lifted=None,
            )
        )
    events.sort(key=lambda e: (e.start, e.cc, e.asn, e.kind, e.domains))
    return tuple(events)


def _event(
    key: _IspKey,
    name: str,
    points: Sequence[_Point],
    domains: set[str],
    start: float,
    end: float | None,
    params: AnalysisParams,
    *,
    kind: str,
    blocked_share: float,
    lifted: float | None,
) -> LeakEvent:
    measurements = sum(p.conclusive for p in points)
    accessible = sum(p.accessible for p in points)
    # The weakest baseline among the buckets that showed the difference: the most cautious
    # statement of it (a bucket inside the window where the country did not block is
    # not a baseline for a leak).
    evidence = [p for p in points if p.lower > 0.0] or list(points)
    weakest = min(
        evidence,
        key=lambda p: (
            p.isps_blocking / p.isps_measured,
            p.isps_measured,
            p.bucket_start,
            p.domain,
        ),
    )
    examples = sorted((p.bucket_start, i) for p in points for i in p.example_ids)
    unique: list[str] = []
    for _, measurement_id in examples:
        if measurement_id not in unique:
            unique.append(measurement_id)
        if len(unique) >= params.max_examples:
            break
    lower = wilson_bounds(accessible, measurements, params.z)[0]
    return LeakEvent(
        cc=key[0],
        asn=key[1],
        network_name=name,
        domains=tuple(sorted(domains)),
        start=start,
        end=end,
        measurements=measurements,
        accessible=accessible,
        agents=len({agent for p in points for agent in p.accessible_agent_ids}),
        isps_blocking=weakest.isps_blocking,
        isps_measured=weakest.isps_measured,
        confidence=lower * weakest.isps_blocking / weakest.isps_measured,
        example_ids=tuple(unique[: params.max_examples]),
        kind=kind,
        blocked_share=blocked_share,
        then_lifted_nationally_at=lifted,
    )


def _isp_table(
    survey: _Survey, leaks: Sequence[LeakEvent], params: AnalysisParams, asn: int | None
) -> tuple[IspRow, ...]:
    leaking: dict[_IspKey, set[str]] = defaultdict(set)
    for event in leaks:
        leaking[(event.cc, event.asn)].update(event.domains)
    rows: list[IspRow] = []
    for key in sorted(survey.isps):
        if asn is not None and key[1] != asn:
            continue
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
