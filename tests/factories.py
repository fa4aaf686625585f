"""Measurements for tests, made without probing anything."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from shared.schema import Blocking, Measurement


def measurement(
    url: str = "https://site.test/",
    blocking: Blocking = Blocking.INCONCLUSIVE,
    *,
    padding: int = 0,
    **fields: Any,
) -> Measurement:
    """A measurement of ``url`` with a fresh id, the ``accessible`` value that goes with
    ``blocking``, ``padding`` bytes of one HTTP header, and any other ``fields`` given."""
    made = Measurement(
        id=uuid.uuid4().hex,
        measured_at=1_700_000_000.0,
        url=url,
        domain=url.split("/")[2],
        blocking=blocking,
        accessible=blocking.accessible,
        http={"status": 200, "headers": {"x-padding": "x" * padding}} if padding else None,
    )
    return msgspec.structs.replace(made, **fields)
