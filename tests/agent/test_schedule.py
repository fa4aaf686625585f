"""The schedule maths: round alignment, jitter, backoff and Retry-After, without sleeping."""

from __future__ import annotations

import random

import pytest

from agent.schedule import (
    MAX_RETRY_AFTER_S,
    backoff_delay,
    first_run,
    next_run,
    parse_retry_after,
    round_start,
)


class Extreme:
    """A random source that always returns the top (or bottom) of the range asked for."""

    def __init__(self, top: bool) -> None:
        self.top = top

    def uniform(self, a: float, b: float) -> float:
        return b if self.top else a


def test_next_run_is_the_next_multiple_of_the_interval_since_the_epoch() -> None:
    """Without jitter the next round starts at the next multiple of the interval."""
    assert next_run(7205.0, 3600.0, 0.0, random.Random(1)) == 10800.0


def test_next_run_is_strictly_after_now_on_a_boundary() -> None:
    """At a boundary the next round is the following one, never ``now`` again."""
    assert next_run(10800.0, 3600.0, 0.0, random.Random(1)) == 14400.0


def test_jitter_is_added_within_its_bound() -> None:
    """Jitter delays the round by at most ``jitter_s`` after the boundary."""
    assert next_run(100.0, 60.0, 10.0, Extreme(top=True)) == 130.0
    assert next_run(100.0, 60.0, 10.0, Extreme(top=False)) == 120.0


def test_jitter_never_reaches_the_next_round() -> None:
    """A jitter as long as the interval is clipped so the round stays inside its window."""
    when = next_run(100.0, 60.0, 60.0, Extreme(top=True))
    assert 120.0 <= when < 180.0


def test_agents_share_round_windows() -> None:
    """Agents started at different times within a round agree on the next round's start."""
    rng = random.Random(3)
    assert {next_run(t, 5.0, 0.0, rng) for t in (10.0, 11.2, 14.99)} == {15.0}


def test_first_run_measures_at_once_when_the_round_was_not_measured() -> None:
    """A fresh agent measures at once."""
    assert first_run(1000.5, 60.0, 5.0, None, random.Random(0)) == 1000.5


def test_first_run_after_a_restart_waits_for_the_next_round() -> None:
    """An agent restarted within a round it already measured waits for the next one."""
    assert first_run(1000.5, 60.0, 0.0, round_start(990.0, 60.0), random.Random(0)) == 1020.0


def test_first_run_after_a_restart_in_a_later_round_measures_at_once() -> None:
    """An agent restarted in a round it did not measure measures at once."""
    assert first_run(1000.5, 60.0, 0.0, 900.0, random.Random(0)) == 1000.5


@pytest.mark.parametrize(("attempt", "ceiling"), [(0, 2.0), (1, 4.0), (3, 16.0), (10, 300.0)])
def test_backoff_doubles_up_to_the_cap(attempt: int, ceiling: float) -> None:
    """The longest possible wait doubles per attempt and stops at the cap."""
    assert backoff_delay(attempt, 2.0, 300.0, Extreme(top=True)) == ceiling


def test_backoff_is_fully_jittered() -> None:
    """The wait can be anywhere from zero up to the ceiling (full jitter)."""
    assert backoff_delay(5, 2.0, 300.0, Extreme(top=False)) == 0.0
    delays = {backoff_delay(5, 2.0, 300.0, random.Random(seed)) for seed in range(20)}
    assert len(delays) == 20 and all(0 <= d <= 64.0 for d in delays)


def test_backoff_survives_huge_attempt_numbers() -> None:
    """A very long outage does not overflow the arithmetic."""
    assert backoff_delay(5000, 2.0, 300.0, Extreme(top=True)) == 300.0


def test_retry_after_is_a_floor() -> None:
    """The agent never retries sooner than the collector's Retry-After, even past the cap."""
    assert backoff_delay(0, 2.0, 300.0, Extreme(top=False), retry_after=30.0) == 30.0
    assert backoff_delay(0, 2.0, 300.0, Extreme(top=False), retry_after=900.0) == 900.0


def test_absurd_retry_after_is_bounded() -> None:
    """A Retry-After of days is bounded so that the agent asks again within the hour."""
    assert backoff_delay(0, 2.0, 300.0, Extreme(top=False), 10**9) == MAX_RETRY_AFTER_S


def test_parse_retry_after_seconds_and_dates() -> None:
    """Retry-After is read as delta-seconds or as an HTTP date relative to now."""
    assert parse_retry_after("120", 0.0) == 120.0
    now = 784111777.0 - 30.0  # "Sun, 06 Nov 1994 08:49:37 GMT" minus 30 s
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now) == pytest.approx(30.0)


def test_parse_retry_after_ignores_garbage() -> None:
    """An unreadable Retry-After is ignored rather than trusted."""
    assert parse_retry_after("soon", 0.0) is None
    assert parse_retry_after(None, 0.0) is None
    assert parse_retry_after("-5", 0.0) is None
