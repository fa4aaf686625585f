"""The agent's configuration: one YAML file read by ``shared.config.load_config``.

Every key has a default except ``collector_url``, which ``filterwatch agent enroll`` writes.
With no configuration file at all, the agent runs on the defaults and takes the collector's
address from the credentials in its state directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from agent.probes.dns import parse_resolver
from shared.config import config_from_mapping, load_config
from shared.logging import LoggingConfig

# At the default concurrency the agent measures 1,000 slow targets more than 20 times faster
# than one at a time while staying under 60 MB of memory (see bench/agent and the README).
DEFAULT_CONCURRENCY = 32


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{name}: must be greater than 0, got {value}")


@dataclass(frozen=True, slots=True)
class ProbesConfig:
    """How each measurement is made (passed on to the probes' ``ProbeOptions``)."""

    timeout_s: float = 15.0
    resolver: str | None = None  # "ip" or "ip:port"; None: the first nameserver of resolv.conf
    system_resolver: bool = True
    ca_file: Path | None = None
    # Blockpage fingerprint files (OONI CSV, Censored Planet JSON lines) or directories of
    # them, used with the shipped set and the collector's (agent/blockpages.py).
    fingerprints: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        _positive("timeout_s", self.timeout_s)
        if self.resolver is not None:
            try:
                parse_resolver(self.resolver)
            except ValueError as exc:
                raise ValueError(f"resolver: {exc}") from None


@dataclass(frozen=True, slots=True)
class UploadConfig:
    """How results reach the collector."""

    batch_max_results: int = 500
    batch_max_bytes: int = 1024 * 1024
    proxy: str | None = None  # http://, https://, socks4://, socks5:// (collector blocked)
    ca_file: Path | None = None  # an extra CA the agent trusts for the collector
    retry_base_s: float = 2.0  # first retry within this; doubles per failure (full jitter)
    retry_cap_s: float = 300.0  # the longest wait between retries (Retry-After may ask more)

    def __post_init__(self) -> None:
        _positive("retry_base_s", self.retry_base_s)
        if self.retry_cap_s < self.retry_base_s:
            raise ValueError("upload.retry_cap_s must be at least upload.retry_base_s")
        if not 1 <= self.batch_max_results <= 5000:
            raise ValueError(
                f"upload.batch_max_results must be between 1 and 5000, got {self.batch_max_results}"
            )
        if self.batch_max_bytes < 4096:
            raise ValueError(
                f"upload.batch_max_bytes must be at least 4096, got {self.batch_max_bytes}"
            )
        if self.proxy is not None:
            parts = urlsplit(self.proxy)
            if parts.scheme not in ("http", "https", "socks4", "socks5", "socks5h"):
                raise ValueError(
                    f"proxy: {self.proxy!r} must start with http://, https://, socks4:// or"
                    " socks5://"
                )
            if not parts.hostname:
                raise ValueError(f"proxy: {self.proxy!r} names no host")


@dataclass(frozen=True, slots=True)
class SpoolConfig:
    """The local store of results not yet acknowledged by the collector."""

    max_bytes: int = 100 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_bytes < 64 * 1024:
            raise ValueError(f"spool.max_bytes must be at least 65536, got {self.max_bytes}")


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Everything ``filterwatch agent run`` needs besides its credentials."""

    collector_url: str
    state_dir: Path | None = None  # None: $XDG_DATA_HOME/filterwatch-agent
    interval_s: float = 3600.0
    jitter_s: float = 0.0
    concurrency: int = DEFAULT_CONCURRENCY
    per_host_limit: int = 2
    # On SIGTERM: in-flight measurements get this long to finish, then the last upload too.
    shutdown_grace_s: float = 10.0
    probes: ProbesConfig = field(default_factory=ProbesConfig)
    upload: UploadConfig = field(default_factory=UploadConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def __post_init__(self) -> None:
        parts = urlsplit(self.collector_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"collector_url: must be an http:// or https:// URL with a host, got"
                f" {self.collector_url!r}"
            )
        _positive("interval_s", self.interval_s)
        if self.jitter_s < 0 or self.jitter_s >= self.interval_s:
            raise ValueError("jitter_s must be at least 0 and less than interval_s")
        if not 1 <= self.concurrency <= 1024:
            raise ValueError(f"concurrency must be between 1 and 1024, got {self.concurrency}")
        _positive("shutdown_grace_s", self.shutdown_grace_s)
        if not 1 <= self.per_host_limit <= self.concurrency:
            raise ValueError("per_host_limit must be between 1 and concurrency")


def load_agent_config(path: Path | str) -> AgentConfig:
    """Read the agent's YAML configuration; ``ConfigError`` names the file and key."""
    return load_config(AgentConfig, path)


def default_config(collector_url: str) -> AgentConfig:
    """The configuration of an agent that has no configuration file."""
    return config_from_mapping(AgentConfig, {"collector_url": collector_url}, "<defaults>")
