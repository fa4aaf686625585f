"""The agent's configuration: one YAML file read by ``shared.config.load_config``.

Every key has a default except ``collector_url``, which ``filterwatch agent enroll`` writes.
With no configuration file at all, the agent runs on the defaults and takes the collector's
address from the credentials in its state directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from agent.state import default_config_path, default_state_dir
from shared.config import (
    EXISTING,
    EXISTING_FILE,
    config_from_mapping,
    http_url,
    load_config,
    parse_with,
    require,
)
from shared.logging import LoggingConfig
from shared.probes.dns import parse_resolver

# At the default concurrency the agent measures 1,000 slow targets more than 20 times faster
# than one at a time while staying under 60 MB of memory (see bench/agent and the README).
DEFAULT_CONCURRENCY = 32

PROXY_SCHEMES = ("http", "https", "socks4", "socks5", "socks5h")


def _positive(key: str, value: float) -> None:
    require(value > 0, key, f"must be greater than 0, got {value:g}")


@dataclass(frozen=True, slots=True)
class ProbesConfig:
    """How each measurement is made (passed on to the probes' ``ProbeOptions``)."""

    timeout_s: float = 15.0
    resolver: str | None = None  # "ip" or "ip:port"; None: the first nameserver of resolv.conf
    system_resolver: bool = True
    ca_file: Path | None = field(default=None, metadata=EXISTING_FILE)
    # Blockpage fingerprint files (OONI CSV, Censored Planet JSON lines) or directories of
    # them, used with the shipped set and the collector's (shared/blockpages.py).
    fingerprints: tuple[Path, ...] = field(default=(), metadata=EXISTING)

    def __post_init__(self) -> None:
        _positive("timeout_s", self.timeout_s)
        if self.resolver is not None:
            parse_with("resolver", parse_resolver, self.resolver)


@dataclass(frozen=True, slots=True)
class UploadConfig:
    """How results reach the collector."""

    batch_max_results: int = 500
    batch_max_bytes: int = 1024 * 1024
    proxy: str | None = None  # http://, https://, socks4://, socks5:// (collector blocked)
    # An extra CA the agent trusts for the collector.
    ca_file: Path | None = field(default=None, metadata=EXISTING_FILE)
    retry_base_s: float = 2.0  # first retry within this; doubles per failure (full jitter)
    retry_cap_s: float = 300.0  # the longest wait between retries (Retry-After may ask more)

    def __post_init__(self) -> None:
        _positive("retry_base_s", self.retry_base_s)
        require(
            self.retry_cap_s >= self.retry_base_s,
            "retry_cap_s",
            f"must be at least retry_base_s ({self.retry_base_s:g}), got {self.retry_cap_s:g}",
        )
        require(
            1 <= self.batch_max_results <= 5000,
            "batch_max_results",
            f"must be between 1 and 5000, got {self.batch_max_results}",
        )
        require(
            self.batch_max_bytes >= 4096,
            "batch_max_bytes",
            f"must be at least 4096, got {self.batch_max_bytes}",
        )
        if self.proxy is not None:
            parts = urlsplit(self.proxy)
            require(
                parts.scheme in PROXY_SCHEMES,
                "proxy",
                f"{self.proxy!r} must start with http://, https://, socks4:// or socks5://",
            )
            require(bool(parts.hostname), "proxy", f"{self.proxy!r} names no host")


@dataclass(frozen=True, slots=True)
class SpoolConfig:
    """The local store of results not yet acknowledged by the collector."""

    max_bytes: int = 100 * 1024 * 1024

    def __post_init__(self) -> None:
        require(
            self.max_bytes >= 64 * 1024,
            "max_bytes",
            f"must be at least 65536, got {self.max_bytes}",
        )


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
        http_url("collector_url", self.collector_url)
        _positive("interval_s", self.interval_s)
        require(
            0 <= self.jitter_s < self.interval_s,
            "jitter_s",
            f"must be at least 0 and less than interval_s ({self.interval_s:g}),"
            f" got {self.jitter_s:g}",
        )
        require(
            1 <= self.concurrency <= 1024,
            "concurrency",
            f"must be between 1 and 1024, got {self.concurrency}",
        )
        _positive("shutdown_grace_s", self.shutdown_grace_s)
        require(
            1 <= self.per_host_limit <= self.concurrency,
            "per_host_limit",
            f"must be between 1 and concurrency ({self.concurrency}), got {self.per_host_limit}",
        )


def load_agent_config(path: Path | str) -> AgentConfig:
    """Read the agent's YAML configuration; ``ConfigError`` names the file and key (the
    files it names must exist)."""
    return load_config(AgentConfig, path, check_files=True)


@dataclass(frozen=True, slots=True)
class AgentSetup:
    """The configuration an agent command runs with, and where its state is."""

    config: AgentConfig | None  # None when there is no configuration file yet
    config_path: Path | None  # the file it was read from
    state_dir: Path


def load_agent_setup(config_path: Path | None, state_dir: Path | None) -> AgentSetup:
    """The configuration in ``config_path``, or in the default file if that exists; the state
    directory ``state_dir``, or the configuration's, or the default one."""
    if config_path is None and default_config_path().exists():
        config_path = default_config_path()
    config = load_agent_config(config_path) if config_path is not None else None
    state_dir = state_dir or (config.state_dir if config else None) or default_state_dir()
    return AgentSetup(config, config_path, state_dir)


def default_config(collector_url: str) -> AgentConfig:
    """The configuration of an agent that has no configuration file."""
    return config_from_mapping(AgentConfig, {"collector_url": collector_url}, "<defaults>")
