"""The collector's configuration: one YAML file read by ``shared.config.load_config``.

Every key has a default, so no file at all gives a working collector on 127.0.0.1:8470
with a SQLite file in the working directory. Unknown keys and wrong types stop start-up
with a message naming the file and the key.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from agent.probes.dns import parse_resolver
from shared.config import config_from_mapping, load_config
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
