"""What the analysis takes (per-bucket counts) and returns: leak events and a per-ISP table
(design.md section 6)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# Verdicts that say "blocked", grouped into the method mix people read (DNS / TCP / TLS /
# HTTP / blockpage). site_down and inconclusive count for neither side.
BLOCKED_METHODS: dict[str, str] = {
    "dns": "dns",
    "tcp_ip": "tcp",
    "tls": "tls",
    "http_failure": "http",
    "http_diff": "http",
    "blockpage": "blockpage",
}
METHOD_NAMES: tuple[str, ...] = ("dns", "tcp", "tls", "http", "blockpage")


@dataclass(frozen=True, slots=True)
class BucketCount:
    """Measurements of one (cc, asn, domain, bucket), counted per verdict (analysis input)."""

    cc: str
    asn: int
    network_name: str
    domain: str
    bucket_start: float  # UTC epoch seconds, a multiple of the bucket width
    counts: dict[str, int]  # blocking value -> number of measurements
    agents: int  # distinct agents in the bucket
    # The agents with at least one `ok` in the bucket, sorted: agent ids in a store,
    # pseudonyms in exports. Only their number and their union over an event are used.
    accessible_agent_ids: tuple[str, ...]
    example_ids: tuple[str, ...]  # a few measurement ids with blocking == ok (evidence)

    @property
    def accessible_agents(self) -> int:
        """Distinct agents with at least one `ok` in the bucket."""
        return len(self.accessible_agent_ids)


# What a finding is (design.md section 6): a lapse is a leak; the others are divergences.
LAPSE = "lapse"
UNFILTERED = "unfiltered"
LAGGING = "lagging"
PARTIAL = "partial"
DIVERGENCE_KINDS: tuple[str, ...] = (UNFILTERED, LAGGING, PARTIAL)


@dataclass(frozen=True, slots=True)
class AnalysisParams:
    """Thresholds of the detector; the defaults suit 2-3 agents per ISP and one measurement
    per agent per bucket. docs/analysis.md explains each one."""

    z: float = 1.0  # Wilson interval width; modest so that 2 of 2 agents can speak
    min_agents: int = 2  # distinct agents that must see a site accessible in one bucket
    # CUSUM reference above the ISP's own baseline accessible share: a bucket adds
    # (lower bound - baseline - drift) to the opening sum.
    open_drift: float = 0.25
    open_threshold: float = 0.25  # the opening sum that opens a lapse
    close_drift: float = 0.25  # a bucket adds (baseline + drift - lower bound) to the closing sum
    close_threshold: float = 0.5  # the closing sum that closes it (two blocked buckets)
    consensus_share: float = 0.5  # more than this share of the other ISPs must block
    min_other_isps: int = 1  # other ISPs with conclusive data needed for a consensus
    max_examples: int = 5
    # The ISP's own baseline: its accessible share over its last `baseline_buckets` buckets
    # in which the country blocked (lapses left out), with `baseline_prior` pseudo-
    # measurements of each kind so that a short history is not taken for certainty.
    baseline_buckets: int = 48
    baseline_prior: float = 0.25
    # A lapse needs a blocking habit: this many buckets around it (its candidates left out)
    # in which the ISP blocked by majority.
    baseline_min_blocking: int = 3
    # A rise opens a lapse only when it is this improbable under the ISP's own baseline
    # (binomial tail of the rise's accessible measurements, counted per agent). The same
    # test decides that an ISP began blocking later than its country (lagging).
    significance: float = 1e-4
    # Against a baseline in which the ISP was seen accessible (a partial blocker) the test
    # is the baseline's predictive (beta-binomial) tail, and the rise must show in at least
    # this many buckets: one bucket of all agents through is such an ISP's own noise.
    partial_lapse_buckets: int = 2
    # The ISP blocks only part of the time (partial) when its blocked share lies between
    # this and 1 - this; below it, an ISP that never blocked by majority is unfiltered.
    partial_share: float = 0.1
    divergence_min_buckets: int = 3  # buckets of a blocking country a divergence needs
    # A lapse followed by the rest of the country lifting the same domain within this
    # many seconds of its start says so (`then_lifted_nationally_at`).
    national_lift_within_s: float = 86400.0

    def __post_init__(self) -> None:
        if self.min_agents < 1 or self.min_other_isps < 1:
            raise ValueError("min_agents and min_other_isps must be at least 1")
        if not (self.open_threshold > 0 and self.close_threshold > 0 and self.z > 0):
            raise ValueError("thresholds and z must be positive")
        if (
            min(
                self.baseline_buckets,
                self.divergence_min_buckets,
                self.baseline_min_blocking,
                self.partial_lapse_buckets,
            )
            < 1
        ):
            raise ValueError(
                "baseline_buckets, baseline_min_blocking, divergence_min_buckets and"
                " partial_lapse_buckets must be at least 1"
            )
        if not (0 < self.significance < 1 and 0 < self.partial_share < 0.5):
            raise ValueError("significance must be in (0, 1) and partial_share in (0, 0.5)")
        if self.baseline_prior < 0 or self.national_lift_within_s < 0:
            raise ValueError("baseline_prior and national_lift_within_s must not be negative")


@dataclass(frozen=True, slots=True)
class LeakEvent:
    """One ISP where sites the rest of its country blocks were accessible, from start to end:
    a lapse (a leak) or, with another ``kind``, a standing divergence."""

    cc: str
    asn: int
    network_name: str
    domains: tuple[str, ...]
    start: float  # start of the first leaking bucket, UTC epoch seconds
    end: float | None  # end of the last leaking bucket; None while ongoing
    measurements: int  # conclusive measurements of these domains on this ISP in the window
    accessible: int  # of which were `ok`
    agents: int  # distinct agents that saw the sites accessible during the event
    isps_blocking: int  # weakest country baseline seen during the event (other ISPs)
    isps_measured: int
    confidence: float
    example_ids: tuple[str, ...]
    kind: str = LAPSE
    # lapse: the ISP's own blocked share before it; divergence: its blocked share over it
    blocked_share: float = 1.0
    then_lifted_nationally_at: float | None = None  # lapses only

    @property
    def accessible_rate(self) -> float:
        return self.accessible / self.measurements if self.measurements else 0.0

    def to_json(self) -> dict[str, Any]:
        doc = self._common_json()
        doc["kind"] = self.kind
        if self.kind == LAPSE:
            doc["baseline_blocked_share"] = round(self.blocked_share, 4)
            lifted = self.then_lifted_nationally_at
            doc["then_lifted_nationally_at"] = None if lifted is None else iso_utc(lifted)
        else:
            doc["blocked_share"] = round(self.blocked_share, 4)
        return doc

    def _common_json(self) -> dict[str, Any]:
        return {
            "cc": self.cc,
            "asn": self.asn,
            "network_name": self.network_name,
            "domains": list(self.domains),
            "start": iso_utc(self.start),
            "end": None if self.end is None else iso_utc(self.end),
            "measurements": self.measurements,
            "agents": self.agents,
            "accessible_rate": round(self.accessible_rate, 4),
            "isps_blocking": self.isps_blocking,
            "isps_measured": self.isps_measured,
            "confidence": round(self.confidence, 4),
            "example_measurement_ids": list(self.example_ids),
        }


@dataclass(frozen=True, slots=True)
class IspRow:
    """One ISP (ASN) over the whole query: how much it let through, and how it blocks."""

    cc: str
    asn: int
    network_name: str
    measurements: int  # every measurement, whatever its verdict
    accessible: int  # `ok`
    blocked: int  # any blocking verdict
    site_down: int
    inconclusive: int
    accessible_lower: float  # Wilson bounds of accessible / (accessible + blocked)
    accessible_upper: float
    methods: dict[str, int]  # METHOD_NAMES -> blocked measurements by that method
    max_agents: int  # most distinct agents seen in one bucket (of any domain)
    domains: int  # domains measured
    leaking_domains: tuple[str, ...]  # domains in this ISP's corroborated leak events

    def to_json(self) -> dict[str, Any]:
        return {
            "cc": self.cc,
            "asn": self.asn,
            "network_name": self.network_name,
            "measurements": self.measurements,
            "accessible": self.accessible,
            "blocked": self.blocked,
            "site_down": self.site_down,
            "inconclusive": self.inconclusive,
            "accessible_share_lower": round(self.accessible_lower, 4),
            "accessible_share_upper": round(self.accessible_upper, 4),
            "methods": {name: self.methods.get(name, 0) for name in METHOD_NAMES},
            "max_agents": self.max_agents,
            "domains": self.domains,
            "leaking_domains": list(self.leaking_domains),
        }


@dataclass(frozen=True, slots=True)
class Report:
    """Everything one analysis run found; sorted, so equal inputs give equal reports."""

    leaks: tuple[LeakEvent, ...]
    uncorroborated: tuple[LeakEvent, ...]
    isps: tuple[IspRow, ...] = field(default=())
    divergences: tuple[LeakEvent, ...] = field(default=())

    def to_json(self, *, with_isps: bool) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "leaks": [e.to_json() for e in self.leaks],
            "uncorroborated": [e.to_json() for e in self.uncorroborated],
            "divergences": [e.to_json() for e in self.divergences],
        }
        if with_isps:
            doc["isps"] = [row.to_json() for row in self.isps]
        return doc

    def dumps(self, *, with_isps: bool) -> str:
        """Canonical JSON text: the same report always gives the same bytes."""
        return json.dumps(self.to_json(with_isps=with_isps), indent=2, sort_keys=True) + "\n"


def iso_utc(epoch: float) -> str:
    """``2013-09-16T10:00:00Z``; fractions of a second only when there are some."""
    whole = math.floor(epoch)
    moment = datetime.fromtimestamp(whole, UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    micros = round((epoch - whole) * 1_000_000)
    if micros:
        text += f".{micros:06d}"
    return text + "Z"
