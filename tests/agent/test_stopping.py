"""wait_or_stop: the daemon's one way to wait unless stopped."""

from __future__ import annotations

import asyncio

import pytest

from agent.stopping import wait_or_stop


async def test_a_stop_ends_the_wait_and_says_so() -> None:
    """A stop set while waiting ends a wait with no time limit, and the answer is True."""
    stop = asyncio.Event()
    waiting = asyncio.create_task(wait_or_stop(stop, None))
    await asyncio.sleep(0)
    stop.set()
    assert await waiting is True


async def test_the_time_running_out_is_not_a_stop() -> None:
    """When the time runs out first the answer is False."""
    assert await wait_or_stop(asyncio.Event(), 0.01) is False


async def test_a_wake_ends_the_wait_without_a_stop() -> None:
    """The ``wake`` event ends the wait too, and the answer is False (no stop)."""
    stop, wake = asyncio.Event(), asyncio.Event()
    waiting = asyncio.create_task(wait_or_stop(stop, None, wake=wake))
    await asyncio.sleep(0)
    wake.set()
    assert await waiting is False


async def test_a_cancellation_is_never_swallowed() -> None:
    """Cancelling the waiter raises CancelledError in it, with or without ``wake``."""
    for wake in (None, asyncio.Event()):
        waiting = asyncio.create_task(wait_or_stop(asyncio.Event(), 60.0, wake=wake))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
