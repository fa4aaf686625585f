"""Waiting that a stop cuts short: the daemon's one idiom for "sleep unless stopped"."""

from __future__ import annotations

import asyncio


async def wait_or_stop(
    stop: asyncio.Event, seconds: float | None, *, wake: asyncio.Event | None = None
) -> bool:
    """Wait ``seconds`` (None: no time limit), or until ``stop`` (or ``wake``) is set; True
    when ``stop`` is set. A cancellation of the caller is never swallowed."""
    if stop.is_set():
        return True
    try:
        async with asyncio.timeout(seconds):
            if wake is None:
                await stop.wait()
            else:
                await _either(stop, wake)
    except TimeoutError:
        pass
    return stop.is_set()


async def _either(first: asyncio.Event, second: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(first.wait()), asyncio.ensure_future(second.wait())]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
