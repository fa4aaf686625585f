"""The collector's configuration: one YAML file read by ``shared.config.load_config``.

Every key has a default, so no file at all gives a working collector on 127.0.0.1:8470
with a SQLite file in the working directory. Unknown keys and wrong types stop start-up
with a message naming the file and the key.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from agent.probes.dns import parse_resolver
from collector.dashboard.config import DashboardConfig
from shared.config import config_from_mapping, load_config, parse_duration
from shared.logging import LoggingConfig

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8470
DEFAULT_SQLITE_PATH = Path("filterwatch.sqlite3")


@dataclass(frozen=True, slots=True)
class ListenConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port: {self.port} is not in 0..65535")


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    sqlite_path: Path = DEFAULT_SQLITE_PATH
    postgres_dsn: str | None = None  # set: PostgreSQL instead of SQLite (several collectors)

    def __post_init__(self) -> None:
        if self.postgres_dsn is not None and not self.postgres_dsn.startswith(
            ("postgresql://", "postgres://")
        ):
            raise ValueError("postgres_dsn: expected a postgresql://user:password@host/db URL")


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_body_bytes: int = 8 * 1024 * 1024  # after decompression
    max_inflight_batches: int = 8  # batches decoded and stored at once; beyond: 503
    max_uploads_per_agent: int = 2  # uploads of one agent at once (reading included); beyond: 429
    body_timeout_s: float = 30.0  # a body must arrive within this after the headers...
    body_min_bytes_per_second: int = 16 * 1024  # ...plus one second per this many bytes

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1024:
            raise ValueError("max_body_bytes: must be at least 1024")
        if self.max_inflight_batches < 1:
            raise ValueError("max_inflight_batches: must be at least 1")
        if self.max_uploads_per_agent < 1:
            raise ValueError("max_uploads_per_agent: must be at least 1")
        if not 0 < self.body_timeout_s <= 3600:
            raise ValueError("body_timeout_s: must be more than 0 and at most 3600 seconds")
        if self.body_min_bytes_per_second < 1:
            raise ValueError("body_min_bytes_per_second: must be at least 1")


@dataclass(frozen=True, slots=True)
class ControlConfig:
    allow_ranges: tuple[str, ...] = ()  # CIDRs the control may measure although private (lab)
    resolver: str | None = None  # "ip" or "ip:port"; None: the system resolver
    ca_file: Path | None = None  # extra CA bundle the control trusts (lab CA)
    timeout_s: float = 15.0
    allow_ports: tuple[int, ...] = ()  # ports the control may measure besides 80 and 443
    allow_public: bool = True  # false: only destinations inside allow_ranges (a closed lab)

    def __post_init__(self) -> None:
        if self.resolver is not None:
            try:
                parse_resolver(self.resolver)
            except ValueError as exc:
                raise ValueError(f"resolver: {exc}") from None
        for port in self.allow_ports:
            if not 0 < port < 65536:
                raise ValueError(f"allow_ports: {port} is not a TCP port (1..65535)")
        for cidr in self.allow_ranges:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"allow_ranges: {cidr!r} is not a CIDR range") from None
        if self.timeout_s <= 0:
            raise ValueError("timeout_s: must be positive")


def _duration(name: str, text: str, minimum: float) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    if seconds < minimum:
        raise ValueError(f"{name}: must be at least {minimum:g}s")
    return seconds


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    """The monitor (design.md section 6): every ``interval_s`` it brings the findings of
    the trailing ``window`` up to date, in ``bucket``-wide buckets."""

    enabled: bool = True
    interval_s: float = 60.0
    bucket: str = "1h"
    window: str = "7d"

    def __post_init__(self) -> None:
        if self.interval_s <= 0:
            raise ValueError("interval_s: must be positive")
        if self.window_s < 2 * self.bucket_s:
            raise ValueError("window: must be at least two buckets")

    @property
    def bucket_s(self) -> float:
        return _duration("bucket", self.bucket, 1.0)

    @property
    def window_s(self) -> float:
        return _duration("window", self.window, 1.0)


KINDS: tuple[str, ...] = ("lapse", "uncorroborated", "unfiltered", "lagging", "partial")


@dataclass(frozen=True, slots=True)
class WebhookFilters:
    """Which findings a subscription hears of; empty lists mean every value."""

    cc: tuple[str, ...] = ()
    asn: tuple[int, ...] = ()
    domain: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ("lapse",)

    def __post_init__(self) -> None:
        for kind in self.kinds:
            if kind not in KINDS:
                raise ValueError(f"kinds: {kind!r} is not one of {', '.join(KINDS)}")
        for cc in self.cc:
            if len(cc) != 2 or not cc.isalpha():
                raise ValueError(f"cc: {cc!r} is not a two-letter country code")


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    url: str
    secret: str
    format: Literal["json", "slack"] = "json"
    filters: WebhookFilters = field(default_factory=WebhookFilters)
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url: not an http:// or https:// URL with a host")
        if len(self.secret) < 16:
            raise ValueError("secret: use at least 16 characters (e.g. openssl rand -hex 32)")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s: must be positive")


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    allow_ranges: tuple[str, ...] = ()  # private destinations allowed (tests, intranets)
    max_age: str = "24h"  # a delivery is retried this long, then given up
    public_feed: bool = False  # the Atom feed without an analyst token
    webhooks: tuple[WebhookConfig, ...] = ()

    def __post_init__(self) -> None:
        for cidr in self.allow_ranges:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"allow_ranges: {cidr!r} is not a CIDR range") from None
        _ = self.max_age_s

    @property
    def max_age_s(self) -> float:
        return _duration("max_age", self.max_age, 1.0)


@dataclass(frozen=True, slots=True)
class CollectorConfig:
    listen: ListenConfig = field(default_factory=ListenConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    netdb_path: Path | None = None  # IP-to-ASN TSV (plain or .gz); None: every caller is AS0/ZZ
    targets_path: Path | None = None  # YAML or CSV target list (or a directory of CSVs)
    analyst_tokens: tuple[str, ...] = ()  # plaintext tokens accepted besides generated ones
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)


def load_collector_config(path: Path | str | None) -> CollectorConfig:
    """The configuration in ``path``, or the defaults when ``path`` is None.

    Raises ``shared.errors.ConfigError`` naming the file and the key.
    """
    if path is None:
        return config_from_mapping(CollectorConfig, {}, "<defaults>")
    return load_config(CollectorConfig, path)
