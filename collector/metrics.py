"""Prometheus metrics of one collector app, in a registry of its own (tests run several)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


@dataclass(frozen=True, slots=True)
class Metrics:
    registry: CollectorRegistry
    ingested: Counter
    duplicates: Counter
    rejected: Counter
    batches: Counter
    request_seconds: Histogram
    in_flight: Gauge
    ingest_in_flight: Gauge

    @classmethod
    def create(cls) -> Metrics:
        registry = CollectorRegistry(auto_describe=True)
        return cls(
            registry=registry,
            ingested=Counter(
                "filterwatch_ingested_results",
                "Measurements stored by ingest.",
                registry=registry,
            ),
            duplicates=Counter(
                "filterwatch_duplicate_results",
                "Measurements received again (their id was already stored).",
                registry=registry,
            ),
            rejected=Counter(
                "filterwatch_rejected",
                "Measurements or whole batches refused, by reason.",
                ["reason"],
                registry=registry,
            ),
            batches=Counter(
                "filterwatch_batches",
                "Batches answered, by HTTP status.",
                ["status"],
                registry=registry,
            ),
            request_seconds=Histogram(
                "filterwatch_request_seconds",
                "Time to answer an HTTP request, by route.",
                ["route", "method"],
                registry=registry,
                buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            ),
            in_flight=Gauge(
                "filterwatch_requests_in_flight",
                "HTTP requests being answered now.",
                registry=registry,
            ),
            ingest_in_flight=Gauge(
                "filterwatch_ingest_in_flight",
                "Batches being ingested now (bounded by limits.max_inflight_batches).",
                registry=registry,
            ),
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
