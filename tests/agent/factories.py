"""Measurements for the agent's tests, made without probing anything."""

from __future__ import annotations

import uuid

from shared.schema import Blocking, Measurement


def measurement(url: str = "https://site.test/", *, padding: int = 0) -> Measurement:
    """An inconclusive measurement of ``url`` with a fresh id (``padding`` bytes of title)."""
    domain = url.split("/")[2]
    return Measurement(
        id=uuid.uuid4().hex,
        measured_at=1_700_000_000.0,
        url=url,
        domain=domain,
        blocking=Blocking.INCONCLUSIVE,
        accessible=None,
        http={"status": 200, "headers": {"x-padding": "x" * padding}} if padding else None,
    )
