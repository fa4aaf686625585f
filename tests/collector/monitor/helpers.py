"""A small country for monitor tests: three ISPs of two agents, measurements made to order,
a collector configuration with one-minute buckets, and a clock the test moves."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from collector.config import (
    AlertsConfig,
    CollectorConfig,
    DatabaseConfig,
    MonitorConfig,
    WebhookConfig,
    WebhookFilters,
)
from collector.store.base import Store
from shared.codec import encode
from shared.schema import Measurement, decode_measurement
from tests.collector.conftest import record

CC = "IR"
T0 = 1_800_000_000.0  # a multiple of 60: bucket i is [T0 + 60 i, T0 + 60 (i + 1))
BUCKET_S = 60.0
ISPS = {100: "Alpha Net", 200: "Beta Telecom", 300: "Gamma"}
DOMAINS = ("fb.example", "tw.example")
SECRET = "a-webhook-secret-of-some-length"


def at(bucket: int, second: float = 5.0) -> float:
    return T0 + bucket * BUCKET_S + second


class FakeClock:
    """Time as the test says."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def bucket(self, i: int, second: float = 50.0) -> None:
        self.now = at(i, second)


def measurement(asn: int, agent: int, domain: str, when: float, ok: bool) -> Measurement:
    url = f"https://{domain}/"
    changes: dict[str, object] = {
        "id": f"m-{uuid.uuid4().hex}",
        "measured_at": when,
        "url": url,
        "domain": domain,
        "network": {"asn": asn, "cc": CC, "network_name": ISPS[asn]},
    }
    if ok:
        changes.update(
            blocking="ok",
            accessible=True,
            failure=None,
            tls={"address": "192.0.2.7", "sni": domain, "failure": None},
            http={"url": url, "status": 200, "failure": None, "body_length": 1000},
        )
    else:
        changes.update(blocking="tls", accessible=False)
    return decode_measurement(encode(record(0, **changes)))


def agent_id(asn: int, agent: int) -> str:
    return f"ag-{asn}-{agent}"


Row = tuple[str, Measurement]


def rounds(
    buckets: Iterable[int],
    leaking: dict[int, set[str]] | None = None,
    agents: Iterable[int] = (0, 1),
    asns: Iterable[int] = tuple(ISPS),
    domains: Iterable[str] = DOMAINS,
) -> list[Row]:
    """One measurement per agent, domain and bucket: accessible where ``leaking`` says."""
    leaking = leaking or {}
    out: list[Row] = []
    for b in buckets:
        for asn in asns:
            for a in agents:
                for d in domains:
                    ok = d in leaking.get(asn, set())
                    out.append((agent_id(asn, a), measurement(asn, a, d, at(b, 5 + a), ok)))
    return out


async def upload(store: Store, rows: Iterable[Row]) -> None:
    """Each agent's measurements as one batch, as ingest stores them."""
    by_agent: dict[str, list[Measurement]] = defaultdict(list)
    for agent, m in rows:
        by_agent[agent].append(m)
    for agent, ms in sorted(by_agent.items()):
        await store.insert_measurements(agent, uuid.uuid4().hex, ms, time.time())


def config(
    path: Path,
    *,
    webhooks: tuple[WebhookConfig, ...] = (),
    window: str = "1h",
    interval_s: float = 0.2,
    postgres_dsn: str | None = None,
) -> CollectorConfig:
    return CollectorConfig(
        database=DatabaseConfig(sqlite_path=path / "collector.sqlite3", postgres_dsn=postgres_dsn),
        monitor=MonitorConfig(interval_s=interval_s, bucket="60s", window=window),
        alerts=AlertsConfig(allow_ranges=("127.0.0.0/8",), webhooks=webhooks, max_age="1h"),
    )


def webhook(url: str, kinds: tuple[str, ...] = ("lapse",), **changes: object) -> WebhookConfig:
    hook = WebhookConfig(url=url, secret=SECRET, filters=WebhookFilters(kinds=kinds))
    return dataclasses.replace(hook, **changes)  # type: ignore[arg-type]
