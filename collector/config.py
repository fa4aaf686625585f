"""The collector's configuration: one YAML file read by ``shared.config.load_config``.

Every key has a default, so no file at all gives a working collector on 127.0.0.1:8470
with a SQLite file in the working directory. Unknown keys and wrong types stop start-up
with a message naming the file and the key.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from shared.config import config_from_mapping, load_config, parse_duration
from shared.logging import LoggingConfig

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8470
DEFAULT_SQLITE_PATH = Path("filterwatch.sqlite3")


@dataclass(frozen=True, slots=True)
class ListenConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    tls_cert: Path | None = None  # PEM certificate chain: the collector serves HTTPS itself
    tls_key: Path | None = None  # PEM private key; both reloaded on SIGHUP
    # Load balancers (CIDRs) whose X-Forwarded-For names the real caller (HAProxy's
    # `option forwardfor`); from anyone else the header is ignored.
    trusted_proxies: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is not in 0..65535")
        for cidr in self.trusted_proxies:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"trusted_proxies: {cidr!r} is not a CIDR range") from None
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both or neither")


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    sqlite_path: Path = DEFAULT_SQLITE_PATH
    postgres_dsn: str | None = None  # set: PostgreSQL instead of SQLite (several collectors)
    # Keep measurements this long (a duration like 400d); older ones are pruned hourly
    # (PostgreSQL: whole months dropped). None: keep everything.
    retention: str | None = None

    def __post_init__(self) -> None:
        if self.retention is not None and parse_duration(self.retention) < 86400:
            raise ValueError("retention must be at least 1d")

    @property
    def retention_s(self) -> float | None:
        return None if self.retention is None else parse_duration(self.retention)


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_body_bytes: int = 8 * 1024 * 1024  # after decompression
    max_inflight_batches: int = 8  # beyond this, ingest answers 503 with Retry-After

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1024:
            raise ValueError("max_body_bytes must be at least 1024")
        if self.max_inflight_batches < 1:
            raise ValueError("max_inflight_batches must be at least 1")


@dataclass(frozen=True, slots=True)
class ControlConfig:
    allow_ranges: tuple[str, ...] = ()  # CIDRs the control may measure although private (lab)
    resolver: str | None = None  # "ip" or "ip:port"; None: the system resolver
    ca_file: Path | None = None  # extra CA bundle the control trusts (lab CA)
    timeout_s: float = 15.0

    def __post_init__(self) -> None:
        for cidr in self.allow_ranges:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"allow_ranges: {cidr!r} is not a CIDR range") from None
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")


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


def load_collector_config(path: Path | str | None) -> CollectorConfig:
    """The configuration in ``path``, or the defaults when ``path`` is None.

    Raises ``shared.errors.ConfigError`` naming the file and the key.
    """
    if path is None:
        return config_from_mapping(CollectorConfig, {}, "<defaults>")
    return load_config(CollectorConfig, path)
