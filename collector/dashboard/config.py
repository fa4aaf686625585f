"""The ``dashboard`` section of the collector's configuration."""

from __future__ import annotations

from dataclasses import dataclass

from shared.config import require


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
        for key in ("window_s", "bucket_s", "session_ttl_s", "poll_s"):
            require(getattr(self, key) > 0, key, "must be positive")
        require(self.bucket_s <= self.window_s, "bucket_s", "must not be larger than window_s")
        require(self.refresh_s >= 0, "refresh_s", "must not be negative")
        require(
            self.login_attempts_per_minute >= 1, "login_attempts_per_minute", "must be at least 1"
        )
