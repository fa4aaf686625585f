"""When to measure and when to retry: pure functions of the time and a random source.

Rounds are aligned to multiples of the interval since the epoch, so that every agent's
round ``k`` covers the same wall-clock window and the collector can compare ISPs hour by
hour (or, in the lab, every few seconds). Jitter spreads the agents' first requests across
the start of the window so that thousands of them do not hit the collector in the same
second. Retries back off exponentially with "full jitter" and never come sooner than the
collector's ``Retry-After``.

Nothing here sleeps or reads a clock: callers pass ``now`` and an ``rng``, which keeps the
maths testable without waiting.
"""

from __future__ import annotations

import math
from email.utils import parsedate_to_datetime
from typing import Protocol


class Uniform(Protocol):
    def uniform(self, a: float, b: float) -> float: ...


# Retry-After beyond this is treated as a mistake: the agent will ask again within the hour.
MAX_RETRY_AFTER_S = 3600.0


def round_start(now: float, interval: float) -> float:
    """The start of the round that contains ``now``."""
    return math.floor(now / interval) * interval


def next_run(now: float, interval: float, jitter_s: float, rng: Uniform) -> float:
    """The time of the next round strictly after ``now``, with a random delay of at most
    ``jitter_s`` added (the delay is always less than the interval)."""
    if interval <= 0:
        raise ValueError("interval must be positive")
    boundary = round_start(now, interval) + interval
    if boundary <= now:  # floating point at huge timestamps
        boundary += interval
    jitter = min(max(jitter_s, 0.0), interval * 0.999)
    return boundary + (rng.uniform(0.0, jitter) if jitter > 0 else 0.0)


def first_run(
    now: float, interval: float, jitter_s: float, last_round: float | None, rng: Uniform
) -> float:
    """When a freshly started agent measures first: at once, unless it already measured in
    the current round (a restart must not measure the same round twice)."""
    current = round_start(now, interval)
    if last_round is not None and last_round >= current:
        return next_run(now, interval, jitter_s, rng)
    return now


def backoff_delay(
    attempt: int,
    base: float,
    cap: float,
    rng: Uniform,
    retry_after: float | None = None,
) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first retry).

    Full jitter: uniform between 0 and ``min(cap, base * 2**attempt)``, so that agents cut
    off together do not come back together. A ``Retry-After`` from the collector is a floor:
    the agent never comes back sooner than asked (bounded by ``MAX_RETRY_AFTER_S``).
    """
    if attempt < 0:
        raise ValueError("attempt must be 0 or more")
    # 2**attempt overflows a float past ~1024: the cap applies long before that.
    ceiling = cap if attempt >= 62 else min(cap, base * float(2**attempt))
    delay = rng.uniform(0.0, ceiling)
    if retry_after is not None:
        delay = max(delay, min(max(retry_after, 0.0), MAX_RETRY_AFTER_S))
    return delay


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from ``now`` that a ``Retry-After`` header asks for (delta-seconds or an
    HTTP date), or None when it is missing or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" dates are UTC by RFC 9110
        return None
    return max(0.0, when.timestamp() - now)
