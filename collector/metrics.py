"""Prometheus metrics of one collector app, in a registry of its own (tests run several):
every metric its ``/metrics`` shows, the monitor's and the webhook worker's too."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["CONTENT_TYPE_LATEST", "DeliveryMetrics", "Metrics", "MonitorMetrics"]


@dataclass(frozen=True, slots=True)
class MonitorMetrics:
    passes: Counter
    pass_seconds: Histogram
    leader: Gauge
    changes: Counter
    series: Counter


@dataclass(frozen=True, slots=True)
class DeliveryMetrics:
    attempts: Counter
    outbox: Gauge


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
    monitor: MonitorMetrics
    delivery: DeliveryMetrics

    @classmethod
    def create(cls) -> Metrics:
        registry = CollectorRegistry(auto_describe=True)
        counter = partial(Counter, registry=registry)
        gauge = partial(Gauge, registry=registry)
        histogram = partial(Histogram, registry=registry)
        return cls(
            registry=registry,
            ingested=counter("filterwatch_ingested_results", "Measurements stored by ingest."),
            duplicates=counter(
                "filterwatch_duplicate_results",
                "Measurements received again (their id was already stored).",
            ),
            rejected=counter(
                "filterwatch_rejected",
                "Measurements or whole batches refused, by reason.",
                ["reason"],
            ),
            batches=counter("filterwatch_batches", "Batches answered, by HTTP status.", ["status"]),
            request_seconds=histogram(
                "filterwatch_request_seconds",
                "Time to answer an HTTP request, by route.",
                ["route", "method"],
                buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            ),
            in_flight=gauge("filterwatch_requests_in_flight", "HTTP requests being answered now."),
            ingest_in_flight=gauge(
                "filterwatch_ingest_in_flight",
                "Batches being ingested now (bounded by limits.max_inflight_batches).",
            ),
            monitor=MonitorMetrics(
                passes=counter("filterwatch_monitor_passes", "Monitor passes, by kind.", ["kind"]),
                pass_seconds=histogram(
                    "filterwatch_monitor_pass_seconds",
                    "Time of one monitor pass.",
                    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
                ),
                leader=gauge(
                    "filterwatch_monitor_leader",
                    "1 when this collector runs the monitor (holds the lock).",
                ),
                changes=counter(
                    "filterwatch_event_changes", "Revisions of event records, by type.", ["type"]
                ),
                series=counter(
                    "filterwatch_monitor_series_recounted",
                    "Series (cc, asn, domain) whose changed buckets a pass counted again.",
                ),
            ),
            delivery=DeliveryMetrics(
                attempts=counter(
                    "filterwatch_webhook_attempts",
                    "Webhook delivery attempts, by subscription and outcome.",
                    ["subscription", "outcome"],
                ),
                outbox=gauge(
                    "filterwatch_webhook_deliveries",
                    "Webhook deliveries in the outbox, by subscription and state"
                    " (pending, delivered, failed).",
                    ["subscription", "state"],
                ),
            ),
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
