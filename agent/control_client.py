"""Asking the collector for a control measurement of a URL (POST /api/v1/control)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import structlog

from agent.collector_api import ApiError, CollectorClient
from shared.errors import SchemaError
from shared.schema import ControlFacts, validate_control

log = structlog.get_logger("agent.control")

CONTROL_PATH: Final = "/api/v1/control"


@dataclass(frozen=True, slots=True)
class ControlAnswer:
    """The control's facts, or why there are none (an error code, never a detail)."""

    facts: ControlFacts | None
    problem: str | None = None


def control_from_wire(url: str, doc: Any) -> ControlFacts:
    """Validate the collector's answer with the wire schema's own rules for ``control``."""
    return validate_control(doc)


async def request_control(collector: CollectorClient, url: str, timeout_s: float) -> ControlAnswer:
    """The control for ``url``, or the reason it could not be had. It comes through the
    upload session: from the same, maybe blocked, collector."""
    try:
        result = await collector.request(
            "POST", CONTROL_PATH, body={"url": url}, timeout_s=timeout_s
        )
    except ApiError as exc:
        log.warning("control_unavailable", reason=exc.reason, status=exc.status)
        return ControlAnswer(None, exc.reason)
    try:
        return ControlAnswer(control_from_wire(url, result.body))
    except SchemaError as exc:
        log.warning("control_unreadable", field=exc.field)
        return ControlAnswer(None, "unreadable_answer")
