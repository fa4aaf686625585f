"""Fixtures and rules every test shares."""

from __future__ import annotations

import os
from typing import Any, NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def skip_or_fail_in_ci(reason: str) -> NoReturn:
    """Skip with ``reason`` on a developer's machine; in CI the lab and PostgreSQL tests must
    run, so a missing prerequisite there is a failure."""
    if IN_CI:
        pytest.fail(f"CI must run this test, but: {reason}")
    pytest.skip(reason)


async def drop_test_database(admin: Any, name: str) -> None:
    """DROP DATABASE ... WITH (FORCE), retried: an autovacuum worker that the test role may
    not terminate can hold a fresh database for a moment after the test."""
    import asyncio

    import asyncpg

    for attempt in range(50):
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except asyncpg.InsufficientPrivilegeError:
            if attempt == 49:
                raise
            await asyncio.sleep(0.2)


# The event loop never blocks: blockbuster for every async test (tests/loop_guard.py).
from tests.loop_guard import blockbuster  # noqa: E402, F401
