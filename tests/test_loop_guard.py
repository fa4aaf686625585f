"""The guard of tests/loop_guard.py: a blocking call on the event loop fails the test."""

from __future__ import annotations

import time

import pytest
from blockbuster import BlockingError


async def test_a_blocking_sleep_on_the_loop_fails_the_test() -> None:
    """time.sleep inside an async test raises blockbuster's BlockingError."""
    with pytest.raises(BlockingError, match=r"time\.sleep"):
        time.sleep(0.001)  # noqa: ASYNC251 (the blocking call the guard must catch)
