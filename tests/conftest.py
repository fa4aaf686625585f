"""Fixtures and rules every test shares."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def skip_or_fail_in_ci(reason: str) -> NoReturn:
    """Skip with ``reason`` on a developer's machine; in CI the lab and PostgreSQL tests must
    run, so a missing prerequisite there is a failure."""
    if IN_CI:
        pytest.fail(f"CI must run this test, but: {reason}")
    pytest.skip(reason)
