"""The collector's configuration: one YAML file read by ``shared.config.load_config``.

Every key has a default, so no file at all gives a working collector on 127.0.0.1:8470
with a SQLite file in the working directory. Unknown keys and wrong types stop start-up
with a message naming the file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from collector.dashboard.config import DashboardConfig
from shared.config import (
    EXISTING,
    EXISTING_FILE,
    Network,
    cidr_ranges,
    config_from_mapping,
    derive,
    derived,
    duration,
    http_url,
    load_config,
    parse_with,
    require,
)
from shared.logging import LoggingConfig
from shared.probes.dns import parse_resolver

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8470
DEFAULT_SQLITE_PATH = Path("filterwatch.sqlite3")


@dataclass(frozen=True, slots=True)
class ListenConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    # PEM certificate chain and private key: the collector serves HTTPS itself; both are
    # loaded again on SIGHUP.
    tls_cert: Path | None = field(default=None, metadata=EXISTING_FILE)
    tls_key: Path | None = field(default=None, metadata=EXISTING_FILE)
    # Load balancers (CIDRs) whose X-Forwarded-For names the real caller (HAProxy's
    # `option forwardfor`); from anyone else the header is ignored.
    trusted_proxies: tuple[str, ...] = ()
    trusted_networks: tuple[Network, ...] = derived()

    def __post_init__(self) -> None:
        require(0 <= self.port <= 65535, "port", f"{self.port} is not in 0..65535")
        derive(self, "trusted_networks", cidr_ranges("trusted_proxies", self.trusted_proxies))
        require(
            (self.tls_cert is None) == (self.tls_key is None),
            "tls_cert",
            "goes with tls_key: set both or neither",
        )


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    sqlite_path: Path = DEFAULT_SQLITE_PATH
    postgres_dsn: str | None = None  # set: PostgreSQL instead of SQLite (several collectors)
    # Keep measurements this long (a duration like 400d); older ones are pruned hourly
    # (PostgreSQL: whole months dropped). None: keep everything.
    retention: str | None = None
    retention_s: float | None = derived()

    def __post_init__(self) -> None:
        require(
            self.postgres_dsn is None
            or self.postgres_dsn.startswith(("postgresql://", "postgres://")),
            "postgres_dsn",
            "expected a postgresql://user:password@host/db URL",
        )
        if self.retention is None:
            derive(self, "retention_s", None)
        else:
            derive(self, "retention_s", duration("retention", self.retention, 86400))


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_body_bytes: int = 8 * 1024 * 1024  # after decompression
    max_inflight_batches: int = 8  # batches decoded and stored at once; beyond: 503
    max_uploads_per_agent: int = 2  # uploads of one agent at once (reading included); beyond: 429
    body_timeout_s: float = 30.0  # a body must arrive within this after the headers...
    body_min_bytes_per_second: int = 16 * 1024  # ...plus one second per this many bytes

    def __post_init__(self) -> None:
        require(self.max_body_bytes >= 1024, "max_body_bytes", "must be at least 1024")
        require(self.max_inflight_batches >= 1, "max_inflight_batches", "must be at least 1")
        require(self.max_uploads_per_agent >= 1, "max_uploads_per_agent", "must be at least 1")
        require(
            0 < self.body_timeout_s <= 3600,
            "body_timeout_s",
            "must be more than 0 and at most 3600 seconds",
        )
        require(
            self.body_min_bytes_per_second >= 1, "body_min_bytes_per_second", "must be at least 1"
        )


@dataclass(frozen=True, slots=True)
class ControlConfig:
    allow_ranges: tuple[str, ...] = ()  # CIDRs the control may measure although private (lab)
    resolver: str | None = None  # "ip" or "ip:port"; None: the system resolver
    # Extra CA bundle the control trusts (lab CA).
    ca_file: Path | None = field(default=None, metadata=EXISTING_FILE)
    timeout_s: float = 15.0
    allow_ports: tuple[int, ...] = ()  # ports the control may measure besides 80 and 443
    allow_public: bool = True  # false: only destinations inside allow_ranges (a closed lab)
    allow_networks: tuple[Network, ...] = derived()

    def __post_init__(self) -> None:
        if self.resolver is not None:
            parse_with("resolver", parse_resolver, self.resolver)
        for port in self.allow_ports:
            require(0 < port < 65536, "allow_ports", f"{port} is not a TCP port (1..65535)")
        derive(self, "allow_networks", cidr_ranges("allow_ranges", self.allow_ranges))
        require(self.timeout_s > 0, "timeout_s", "must be positive")


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    """The monitor (design.md section 6): every ``interval_s`` it brings the findings of
    the trailing ``window`` up to date, in ``bucket``-wide buckets."""

    enabled: bool = True
    interval_s: float = 60.0
    bucket: str = "1h"
    window: str = "7d"
    bucket_s: float = derived()
    window_s: float = derived()

    def __post_init__(self) -> None:
        require(self.interval_s > 0, "interval_s", "must be positive")
        derive(self, "bucket_s", duration("bucket", self.bucket, 1.0))
        derive(self, "window_s", duration("window", self.window, 1.0))
        require(self.window_s >= 2 * self.bucket_s, "window", "must be at least two buckets")


KINDS: tuple[str, ...] = ("lapse", "uncorroborated", "unfiltered", "lagging", "partial")


@dataclass(frozen=True, slots=True)
class WebhookFilters:
    """Which findings a subscription hears of; empty lists mean every value. Countries are
    kept upper-case and domains lower-case, as findings name them."""

    cc: tuple[str, ...] = ()
    asn: tuple[int, ...] = ()
    domain: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ("lapse",)

    def __post_init__(self) -> None:
        for kind in self.kinds:
            require(kind in KINDS, "kinds", f"{kind!r} is not one of {', '.join(KINDS)}")
        for cc in self.cc:
            require(len(cc) == 2 and cc.isalpha(), "cc", f"{cc!r} is not a two-letter country code")
        derive(self, "cc", tuple(cc.upper() for cc in self.cc))
        derive(self, "domain", tuple(domain.lower() for domain in self.domain))


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    url: str
    secret: str
    format: Literal["json", "slack"] = "json"
    filters: WebhookFilters = field(default_factory=WebhookFilters)
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        http_url("url", self.url, shown=False)  # a Slack-style hook's URL is itself a secret
        require(
            len(self.secret) >= 16,
            "secret",
            "use at least 16 characters (e.g. openssl rand -hex 32)",
        )
        require(self.timeout_s > 0, "timeout_s", "must be positive")


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    allow_ranges: tuple[str, ...] = ()  # private destinations allowed (tests, intranets)
    max_age: str = "24h"  # a delivery is retried this long, then given up
    public_feed: bool = False  # the Atom feed without an analyst token
    webhooks: tuple[WebhookConfig, ...] = ()
    allow_networks: tuple[Network, ...] = derived()
    max_age_s: float = derived()

    def __post_init__(self) -> None:
        derive(self, "allow_networks", cidr_ranges("allow_ranges", self.allow_ranges))
        derive(self, "max_age_s", duration("max_age", self.max_age, 1.0))


@dataclass(frozen=True, slots=True)
class CollectorConfig:
    listen: ListenConfig = field(default_factory=ListenConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    # IP-to-ASN TSV (plain or .gz); None: every caller is AS0/ZZ.
    netdb_path: Path | None = field(default=None, metadata=EXISTING_FILE)
    # YAML or CSV target list (or a directory of CSVs).
    targets_path: Path | None = field(default=None, metadata=EXISTING)
    # Blockpage fingerprints for the agents and the control: an OONI CSV or Censored Planet
    # JSON-lines file, or a directory of them; None: the set shipped with filterwatch.
    fingerprints_path: Path | None = field(default=None, metadata=EXISTING)
    analyst_tokens: tuple[str, ...] = ()  # plaintext tokens accepted besides generated ones
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)


def load_collector_config(path: Path | str | None) -> CollectorConfig:
    """The configuration in ``path``, or the defaults when ``path`` is None.

    Raises ``shared.errors.ConfigError`` naming the file and the key; the files it names
    (netdb_path, targets_path, fingerprints_path, listen.tls_cert and tls_key,
    control.ca_file) must exist.
    """
    if path is None:
        return config_from_mapping(CollectorConfig, {}, "<defaults>")
    return load_config(CollectorConfig, path, check_files=True)
