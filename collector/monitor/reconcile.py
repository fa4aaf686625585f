"""From one analysis of a country to revisions of its records. Pure: no I/O, no clock.

The analysis (``collector.analysis.analyse``) says what the data shows now; the records say
what the monitor has told people so far. ``reconcile`` pairs each finding with the record it
continues (same ISP, same family of kind, overlapping time and domains), so that a record
keeps its id while it grows, closes or is revised by late data, and says which records the
data no longer supports (retracted).

Kinds are treated generically: ``lapse`` and ``uncorroborated`` are one family (a leak that
a second volunteer corroborates stays the same record), each divergence kind is its own.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from collector.analysis import Report, iso_utc
from collector.store.records import StoredEvent

LEAK_KINDS: Final = frozenset({"lapse", "uncorroborated"})
DIVERGENCE_KINDS: Final = frozenset({"unfiltered", "lagging", "partial"})
# What makes a new revision. Counts that grow with every measurement of an ongoing leak
# (measurements, confidence) are refreshed with the next revision, not on their own: one
# revision per minute per ongoing leak would drown every subscriber.
_MATERIAL: Final = ("kind", "status", "domains", "start", "end", "agents")


@dataclass(frozen=True, slots=True)
class Finding:
    """One finding of the analysis: its kind, where and when, and its JSON."""

    kind: str
    cc: str
    asn: int
    domains: tuple[str, ...]
    start: float
    end: float | None
    doc: dict[str, Any]


def findings_of(report: Report) -> list[Finding]:
    """Every finding of ``report``: leaks (lapses), uncorroborated ones and divergences."""
    out: list[Finding] = []
    groups: list[tuple[str | None, Iterable[Any]]] = [
        (None, report.leaks),
        ("uncorroborated", report.uncorroborated),
        (None, getattr(report, "divergences", ())),
    ]
    for forced, events in groups:
        for e in events:
            doc = e.to_json()
            kind = forced or str(doc.get("kind") or "lapse")
            out.append(
                Finding(
                    kind=kind,
                    cc=e.cc,
                    asn=int(e.asn),
                    domains=tuple(e.domains),
                    start=float(e.start),
                    end=None if e.end is None else float(e.end),
                    doc=doc,
                )
            )
    return out


def family(kind: str) -> str:
    return "leak" if kind in LEAK_KINDS else kind


@dataclass(frozen=True, slots=True)
class Clock:
    """Where the monitor stands: ``now``, the start of its window, the bucket width, and how
    much blocked history before a lapse the analysis needs to still see it as one
    (``history_s``: the detector's ``baseline_min_blocking`` buckets and one more)."""

    now: float
    window_start: float
    bucket_s: float
    history_s: float = 0.0

    def history_leaving(self, start: float) -> bool:
        """Whether a lapse that began at ``start`` has too little of its blocked history left
        in the window for the analysis to tell it from a standing difference."""
        return start < self.window_start + max(self.bucket_s, self.history_s)

    @property
    def filling_bucket(self) -> float:
        """Start of the bucket still filling: a finding that ends here has not ended."""
        return math.floor(self.now / self.bucket_s) * self.bucket_s


@dataclass(frozen=True, slots=True)
class Revised:
    """A new revision of a record (``previous`` is None for a new record)."""

    event: StoredEvent
    type: str
    previous: StoredEvent | None


def new_event_id(now: float) -> str:
    """``ev_`` + 12 hex digits of milliseconds + 8 random: sortable by first sight."""
    return f"ev_{int(now * 1000):012x}{secrets.token_hex(4)}"


def event_json(
    e: StoredEvent, doc: dict[str, Any] | None = None, network_name: str | None = None
) -> dict[str, Any]:
    """The record as JSON: the analysis' event with the record's fields over it."""
    body = dict(doc if doc is not None else e.body)
    body.update(
        {
            "id": e.event_id,
            "revision": e.revision,
            "status": e.status,
            "kind": e.kind,
            "cc": e.cc,
            "asn": e.asn,
            "domains": list(e.domains),
            "start": iso_utc(e.start),
            "end": None if e.end is None else iso_utc(e.end),
            "first_seen_at": iso_utc(round(e.first_seen_at, 3)),
            "updated_at": iso_utc(round(e.updated_at, 3)),
        }
    )
    if network_name is not None:
        body["network_name"] = network_name
    return body


def _material(e: StoredEvent) -> tuple[Any, ...]:
    return (e.kind, e.status, e.domains, e.start, e.end, e.body.get("agents"))


def _span_end(end: float | None) -> float:
    return math.inf if end is None else end


def _overlap(r: StoredEvent, f: Finding, clock: Clock) -> float | None:
    """Seconds the two overlap (ends None count as now), or None if they are apart by
    more than a bucket."""
    r_end, f_end = _span_end(r.end), _span_end(f.end)
    slack = clock.bucket_s
    if f.start > r_end + slack or r.start > f_end + slack:
        return None
    return max(0.0, min(r_end, f_end, clock.now) - max(r.start, f.start))


def _continues(r: StoredEvent, f: Finding, clock: Clock) -> bool:
    if family(r.kind) == family(f.kind):
        return True
    # A lapse whose blocked history is leaving the window looks, to the analysis, like an
    # ISP that blocks only partly or never blocked: it is still the lapse, and keeps its kind.
    return family(r.kind) == "leak" and clock.history_leaving(r.start)


def reconcile(
    live: Sequence[StoredEvent],
    found: Sequence[Finding],
    clock: Clock,
    make_id: Callable[[float], str] = new_event_id,
) -> list[Revised]:
    """The revisions that bring ``live`` (the records of one country that are not retracted
    and not yet out of the window) in line with ``found`` (the analysis of that country)."""
    pairs: list[tuple[int, float, int, int]] = []
    for i, r in enumerate(live):
        for j, f in enumerate(found):
            if r.asn != f.asn or r.cc != f.cc or not _continues(r, f, clock):
                continue
            shared = len(set(r.domains) & set(f.domains))
            if not shared:
                continue
            overlap = _overlap(r, f, clock)
            if overlap is None:
                continue
            pairs.append((shared, overlap, i, j))
    pairs.sort(key=lambda p: (-p[0], -p[1], p[2], p[3]))
    record_of: dict[int, int] = {}
    taken: set[int] = set()
    for _, _, i, j in pairs:
        if i in taken or j in record_of:
            continue
        taken.add(i)
        record_of[j] = i

    out: list[Revised] = []
    for j, f in sorted(enumerate(found), key=lambda p: (p[1].start, p[1].asn, p[1].domains)):
        paired = record_of.get(j)
        if paired is None:
            out.append(_opened(f, clock, make_id))
            continue
        revised = _continued(live[paired], f, clock)
        if revised is not None:
            out.append(revised)
    for i, r in enumerate(live):
        if i in taken:
            continue
        revised = _unsupported(r, clock)
        if revised is not None:
            out.append(revised)
    return out


def _end(f: Finding, clock: Clock) -> float | None:
    # The analysis ends a leak whose series has no data yet in the bucket still filling;
    # that is not an end until the bucket is over (else every bucket boundary would close
    # and reopen every ongoing leak).
    if f.end is not None and f.end >= clock.filling_bucket:
        return None
    return f.end


def _opened(f: Finding, clock: Clock, make_id: Callable[[float], str]) -> Revised:
    end = _end(f, clock)
    event = StoredEvent(
        event_id=make_id(clock.now),
        kind=f.kind,
        status="open" if end is None else "closed",
        cc=f.cc,
        asn=f.asn,
        domains=f.domains,
        start=f.start,
        end=end,
        revision=1,
        first_seen_at=clock.now,
        updated_at=clock.now,
        body={},
    )
    return Revised(replace(event, body=event_json(event, f.doc)), "leak.opened", None)


def _continued(r: StoredEvent, f: Finding, clock: Clock) -> Revised | None:
    end = _end(f, clock)
    # A record whose beginning (or, for a lapse, the history that made it one) has left the
    # window keeps its kind, start and domains: the analysis no longer sees them.
    keep = r.start < clock.window_start or family(f.kind) != family(r.kind)
    kind = r.kind if keep else f.kind
    start = r.start if keep else f.start
    domains = tuple(sorted(set(r.domains) | set(f.domains))) if keep else f.domains
    candidate = replace(
        r,
        kind=kind,
        status="open" if end is None else "closed",
        domains=domains,
        start=start,
        end=end,
        body={**r.body, "agents": f.doc.get("agents")},
    )
    if _material(candidate) == _material(r):
        return None
    change = (
        "leak.closed" if candidate.status == "closed" and r.status == "open" else "leak.updated"
    )
    event = replace(candidate, revision=r.revision + 1, updated_at=clock.now)
    return Revised(replace(event, body=event_json(event, f.doc)), change, r)


def _unsupported(r: StoredEvent, clock: Clock) -> Revised | None:
    """A record no finding continues: retracted when all of it is inside the window (the
    data, late uploads included, shows it was never there); left alone when its evidence
    is leaving the window; closed when it began before the window and was still open."""
    if r.end is not None and r.end < clock.window_start + 2 * clock.bucket_s:
        return None
    if (
        family(r.kind) == "leak"
        and r.start >= clock.window_start
        and clock.history_leaving(r.start)
    ):
        return None  # the analysis no longer sees the history that made it a lapse
    if r.start < clock.window_start:
        if r.status != "open":
            return None
        event = replace(
            r,
            status="closed",
            end=clock.filling_bucket,
            revision=r.revision + 1,
            updated_at=clock.now,
        )
        return Revised(replace(event, body=event_json(event)), "leak.closed", r)
    event = replace(r, status="retracted", revision=r.revision + 1, updated_at=clock.now)
    return Revised(replace(event, body=event_json(event)), "leak.retracted", r)
