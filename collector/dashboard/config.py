"""The ``dashboard`` section of the collector's configuration."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DashboardConfig:
    enabled: bool = True
    name: str | None = None  # the collector's name in chart captions; None: the Host it is asked by
    window_s: float = 7 * 86400.0  # how far back the pages look
    bucket_s: float = 3600.0  # the pages' time bucket (and the "interval" of coverage)
    session_ttl_s: float = 12 * 3600.0  # a session cookie expires this long after sign-in
    refresh_s: float = 60.0  # the cached snapshot is recomputed once it is older than this
    poll_s: float = 15.0  # open pages ask for changes this often (live updates)
    login_attempts_per_minute: int = 5  # per client address (kept in memory only)

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.bucket_s <= 0 or self.session_ttl_s <= 0:
            raise ValueError("window_s, bucket_s and session_ttl_s must be positive")
        if self.bucket_s > self.window_s:
            raise ValueError("bucket_s must not be larger than window_s")
        if self.refresh_s < 0 or self.poll_s <= 0:
            raise ValueError("refresh_s must not be negative and poll_s must be positive")
        if self.login_attempts_per_minute < 1:
            raise ValueError("login_attempts_per_minute must be at least 1")
