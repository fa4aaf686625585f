"""What the analysis returns: leak events and a per-ISP table (design.md section 6)."""

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
class AnalysisParams:
    """Thresholds of the detector; the defaults suit 2-3 agents per ISP and one measurement
    per agent per bucket (see README, "Finding leaks")."""

    z: float = 1.0  # Wilson interval width; modest so that 2 of 2 agents can speak
    min_agents: int = 2  # distinct agents that must see a site accessible in one bucket
    open_drift: float = 0.25  # CUSUM reference: a bucket adds (lower bound - drift)
    open_threshold: float = 0.25  # the opening sum that opens a leak
    close_drift: float = 0.25  # a bucket adds (drift - lower bound) to the closing sum
    close_threshold: float = 0.5  # the closing sum that closes it (two blocked buckets)
    consensus_share: float = 0.5  # more than this share of the other ISPs must block
    min_other_isps: int = 1  # other ISPs with conclusive data needed for a consensus
    max_examples: int = 5

    def __post_init__(self) -> None:
        if self.min_agents < 1 or self.min_other_isps < 1:
            raise ValueError("min_agents and min_other_isps must be at least 1")
        if not (self.open_threshold > 0 and self.close_threshold > 0 and self.z > 0):
            raise ValueError("thresholds and z must be positive")


@dataclass(frozen=True, slots=True)
class LeakEvent:
    """One ISP where sites the rest of its country blocks were accessible, from start to end."""

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

    @property
    def accessible_rate(self) -> float:
        return self.accessible / self.measurements if self.measurements else 0.0

    def to_json(self) -> dict[str, Any]:
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

    def to_json(self, *, with_isps: bool) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "leaks": [e.to_json() for e in self.leaks],
            "uncorroborated": [e.to_json() for e in self.uncorroborated],
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
