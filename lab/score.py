"""Scoring the collector's findings against a scenario's ground truth. Pure.

Events are compared per (ISP, domain): a collector event that names several domains
counts once for each. An expected leak is *found* when a collector leak of the same AS
names its domain and overlaps its rounds (one round of slack each side, so that a late
start still counts and shows as a window error); every (leak, domain) left unmatched is a
*false* leak. The same matching, on the collector's ``uncorroborated`` list, scores the
lapses of ISPs with too few agents.

Divergences are standing differences, so they are matched by (AS, domain, kind) alone,
whatever their windows: an expected divergence is *found* when a collector divergence of
that AS and kind names its domain; every other (AS, domain, kind) the collector names is
*wrong* - a ``partial`` on an ISP that blocks every time, a divergence of an ISP with too
few agents, or the right place with the wrong kind. Several collector events of one key
count once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lab.scenario import Scenario, domain_matches
from lab.truth import ExpectedDivergence, ExpectedEvent, expected_accessible


@dataclass(frozen=True, slots=True)
class FoundEvent:
    """One domain of one collector event, its window converted to lab rounds."""

    asn: int
    network_name: str
    domain: str
    start_round: int
    end_round: int  # inclusive; the last round when the collector says "ongoing"


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def to_rounds(
    events: Iterable[Mapping[str, Any]], t0: float, round_seconds: float, rounds: int
) -> list[FoundEvent]:
    """Collector events (JSON, ISO times, ``end`` exclusive or null) as per-domain rounds."""
    found: list[FoundEvent] = []
    for event in events:
        start = parse_time(str(event["start"]))
        start_round = math.floor((start - t0) / round_seconds + 1e-6) + 1
        end_text = event.get("end")
        if end_text is None:
            end_round = rounds
        else:
            end_round = math.ceil((parse_time(str(end_text)) - t0) / round_seconds - 1e-6)
        for domain in event.get("domains", []):
            found.append(
                FoundEvent(
                    asn=int(event["asn"]),
                    network_name=str(event.get("network_name", "")),
                    domain=str(domain),
                    start_round=start_round,
                    end_round=max(start_round, end_round),
                )
            )
    return found


def _same_domain(expected: str, reported: str) -> bool:
    return domain_matches(expected, reported) or domain_matches(reported, expected)


@dataclass(frozen=True, slots=True)
class Match:
    expected: ExpectedEvent
    found: FoundEvent

    @property
    def start_error(self) -> int:
        return self.found.start_round - self.expected.start_round

    @property
    def end_error(self) -> int:
        return self.found.end_round - self.expected.end_round


@dataclass(frozen=True, slots=True)
class Matching:
    matches: tuple[Match, ...]
    missed: tuple[ExpectedEvent, ...]
    unmatched: tuple[FoundEvent, ...]


def match_events(expected: Sequence[ExpectedEvent], found: Sequence[FoundEvent]) -> Matching:
    """Pair expected and found events one to one, closest windows first."""
    candidates: list[tuple[int, int, int]] = []
    for i, exp in enumerate(expected):
        for j, fnd in enumerate(found):
            if fnd.asn != exp.asn or not _same_domain(exp.domain, fnd.domain):
                continue
            if fnd.end_round < exp.start_round - 1 or fnd.start_round > exp.end_round + 1:
                continue
            cost = abs(fnd.start_round - exp.start_round) + abs(fnd.end_round - exp.end_round)
            candidates.append((cost, i, j))
    used_e: set[int] = set()
    used_f: set[int] = set()
    matches: list[Match] = []
    for _, i, j in sorted(candidates):
        if i in used_e or j in used_f:
            continue
        used_e.add(i)
        used_f.add(j)
        matches.append(Match(expected[i], found[j]))
    matches.sort(key=lambda m: (m.expected.isp, m.expected.domain, m.expected.start_round))
    missed = tuple(e for i, e in enumerate(expected) if i not in used_e)
    unmatched = tuple(f for j, f in enumerate(found) if j not in used_f)
    return Matching(tuple(matches), missed, unmatched)


@dataclass(frozen=True, slots=True)
class FoundDivergence:
    """One (AS, domain, kind) the collector names among its divergences."""

    asn: int
    network_name: str
    domain: str
    kind: str
    blocked_share: float | None


def found_divergences(events: Iterable[Mapping[str, Any]]) -> list[FoundDivergence]:
    """The collector's divergence events, one per (AS, domain, kind), first event wins."""
    found: dict[tuple[int, str, str], FoundDivergence] = {}
    for event in events:
        share = event.get("blocked_share")
        for domain in event.get("domains", []):
            key = (int(event["asn"]), str(domain), str(event.get("kind")))
            found.setdefault(
                key,
                FoundDivergence(
                    asn=key[0],
                    network_name=str(event.get("network_name", "")),
                    domain=key[1],
                    kind=key[2],
                    blocked_share=float(share) if isinstance(share, int | float) else None,
                ),
            )
    return list(found.values())


@dataclass(frozen=True, slots=True)
class DivergenceMatching:
    matches: tuple[tuple[ExpectedDivergence, FoundDivergence], ...]
    missed: tuple[ExpectedDivergence, ...]
    wrong: tuple[FoundDivergence, ...]


def match_divergences(
    expected: Sequence[ExpectedDivergence], found: Sequence[FoundDivergence]
) -> DivergenceMatching:
    """Pair expected and found divergences by (AS, domain, kind), one to one."""
    used: set[int] = set()
    matches: list[tuple[ExpectedDivergence, FoundDivergence]] = []
    missed: list[ExpectedDivergence] = []
    for exp in expected:
        for j, fnd in enumerate(found):
            if j in used or fnd.asn != exp.asn or fnd.kind != exp.kind:
                continue
            if _same_domain(exp.domain, fnd.domain):
                used.add(j)
                matches.append((exp, fnd))
                break
        else:
            missed.append(exp)
    wrong = tuple(f for j, f in enumerate(found) if j not in used)
    return DivergenceMatching(tuple(matches), tuple(missed), wrong)


@dataclass(frozen=True, slots=True)
class MeasurementRow:
    """What scoring needs of one stored measurement."""

    agent: str  # the lab's name for the agent, e.g. "TCI/2" or "TCI/vpn1"
    isp: str
    vpn: bool
    url: str
    measured_at: float
    blocking: str
    accessible: bool | None


@dataclass(frozen=True, slots=True)
class VerdictScore:
    total: int
    correct: int
    wrong: tuple[dict[str, Any], ...]  # a few wrong verdicts, to look at

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.total if self.total else None


def score_verdicts(
    scenario: Scenario,
    rows: Iterable[MeasurementRow],
    t0: float,
    *,
    max_examples: int = 20,
) -> VerdictScore:
    """Per-measurement accuracy of ``accessible`` against the truth of (agent, site, round).

    Measurements outside rounds 1..N, or of URLs that are not the scenario's, are ignored.
    """
    isps = {isp.name: isp for isp in scenario.isps}
    sites = {site.url: site for site in scenario.sites}
    total = correct = 0
    wrong: list[dict[str, Any]] = []
    for row in rows:
        round_no = math.floor((row.measured_at - t0) / scenario.round_seconds) + 1
        site = sites.get(row.url)
        isp = isps.get(row.isp)
        if site is None or isp is None or not 1 <= round_no <= scenario.rounds:
            continue
        allowed = expected_accessible(scenario, isp, row.vpn, site, round_no)
        total += 1
        if row.accessible in allowed:
            correct += 1
        elif len(wrong) < max_examples:
            wrong.append(
                {
                    "agent": row.agent,
                    "url": row.url,
                    "round": round_no,
                    "blocking": row.blocking,
                    "expected_accessible": sorted(allowed, key=str),
                }
            )
    return VerdictScore(total, correct, tuple(wrong))


@dataclass(frozen=True, slots=True)
class Score:
    """The score of design.md section 7, plus the uncorroborated side and the verdicts."""

    leaks: Matching
    uncorroborated: Matching
    verdicts: VerdictScore
    divergences: DivergenceMatching = DivergenceMatching((), (), ())

    @property
    def expected(self) -> int:
        return len(self.leaks.matches) + len(self.leaks.missed)

    @property
    def found(self) -> int:
        return len(self.leaks.matches)

    @property
    def missed(self) -> int:
        return len(self.leaks.missed)

    @property
    def false_leaks(self) -> int:
        return len(self.leaks.unmatched)

    @property
    def max_window_error(self) -> int:
        errors = [abs(m.start_error) for m in self.leaks.matches]
        errors += [abs(m.end_error) for m in self.leaks.matches]
        return max(errors, default=0)

    @property
    def passed(self) -> bool:
        """Nothing missed, nothing false, every divergence named and none wrong."""
        d = self.divergences
        return self.missed == 0 and self.false_leaks == 0 and not d.missed and not d.wrong

    @property
    def perfect(self) -> bool:
        """Passed, with every window exact and every uncorroborated lapse found too."""
        u = self.uncorroborated
        return self.passed and self.max_window_error == 0 and not u.missed and not u.unmatched

    def to_json(self) -> dict[str, Any]:
        accuracy = self.verdicts.accuracy
        d = self.divergences
        return {
            "expected": self.expected,
            "found": self.found,
            "missed": self.missed,
            "false_leaks": self.false_leaks,
            "window_error_rounds": [
                {
                    "isp": m.expected.isp,
                    "asn": m.expected.asn,
                    "domain": m.expected.domain,
                    "start": m.start_error,
                    "end": m.end_error,
                }
                for m in self.leaks.matches
            ],
            "max_window_error_rounds": self.max_window_error,
            "verdict_accuracy": None if accuracy is None else round(accuracy, 4),
            "measurements_scored": self.verdicts.total,
            "uncorroborated_expected": len(self.uncorroborated.matches)
            + len(self.uncorroborated.missed),
            "uncorroborated_found": len(self.uncorroborated.matches),
            "divergences_expected": len(d.matches) + len(d.missed),
            "divergences_found": len(d.matches),
            "divergences_wrong": len(d.wrong),
            "passed": self.passed,
            "perfect": self.perfect,
            "missed_leaks": [_expected_json(e) for e in self.leaks.missed],
            "false_leak_events": [_found_json(f) for f in self.leaks.unmatched],
            "found_divergences": [
                {**divergence_json(e), "found_blocked_share": f.blocked_share} for e, f in d.matches
            ],
            "missed_divergences": [divergence_json(e) for e in d.missed],
            "wrong_divergences": [
                {
                    "asn": f.asn,
                    "network_name": f.network_name,
                    "domain": f.domain,
                    "kind": f.kind,
                    "blocked_share": f.blocked_share,
                }
                for f in d.wrong
            ],
            "wrong_verdicts": list(self.verdicts.wrong),
        }


def _expected_json(e: ExpectedEvent) -> dict[str, Any]:
    return {"isp": e.isp, "asn": e.asn, "domain": e.domain, "rounds": [e.start_round, e.end_round]}


def divergence_json(e: ExpectedDivergence) -> dict[str, Any]:
    """An expected divergence as ``lab run --json`` shows it."""
    return {
        "isp": e.isp,
        "asn": e.asn,
        "domain": e.domain,
        "kind": e.kind,
        "rounds": [e.start_round, e.end_round],
        "blocked_share": round(e.blocked_share, 4),
    }


def _found_json(f: FoundEvent) -> dict[str, Any]:
    return {
        "asn": f.asn,
        "network_name": f.network_name,
        "domain": f.domain,
        "rounds": [f.start_round, f.end_round],
    }


def score(
    scenario: Scenario,
    expected: Sequence[ExpectedEvent],
    report: Mapping[str, Any],
    rows: Iterable[MeasurementRow],
    t0: float,
    divergences: Sequence[ExpectedDivergence] = (),
) -> Score:
    """Score the collector's ``report`` ({leaks, uncorroborated, divergences}) and its
    measurements against the expected events and divergences."""
    rs, n = scenario.round_seconds, scenario.rounds
    leaks = to_rounds(report.get("leaks", []), t0, rs, n)
    unc = to_rounds(report.get("uncorroborated", []), t0, rs, n)
    return Score(
        leaks=match_events([e for e in expected if e.corroborated], leaks),
        uncorroborated=match_events([e for e in expected if not e.corroborated], unc),
        verdicts=score_verdicts(scenario, rows, t0),
        divergences=match_divergences(
            divergences, found_divergences(report.get("divergences", []))
        ),
    )
