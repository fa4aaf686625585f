"""Asking the collector for a control measurement of a URL (POST /api/v1/control)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import structlog

from agent.collector_api import ApiError, api_url, call
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


async def request_control(
    session: aiohttp.ClientSession,
    collector_url: str,
    token: str,
    url: str,
    timeout_s: float,
    proxy: str | None = None,
) -> ControlAnswer:
    """The control for ``url``, or the reason it could not be had."""
    try:
        result = await call(
            session,
            "POST",
            api_url(collector_url, CONTROL_PATH),
            token=token,
            body={"url": url},
            proxy=proxy,
            timeout_s=timeout_s,
        )
    except ApiError as exc:
        log.warning("control_unavailable", reason=exc.reason, status=exc.status)
        return ControlAnswer(None, exc.reason)
    try:
        return ControlAnswer(control_from_wire(url, result.body))
    except SchemaError as exc:
        log.warning("control_unreadable", field=exc.field)
        return ControlAnswer(None, "unreadable_answer")


async def fetch_control(
    session: aiohttp.ClientSession,
    collector_url: str,
    token: str,
    url: str,
    timeout_s: float,
    proxy: str | None = None,
) -> ControlFacts | None:
    """The control's facts for ``url``, or None when the collector cannot give them.
    ``proxy``: the upload proxy, since the control comes from the same, maybe blocked,
    collector."""
    answer = await request_control(session, collector_url, token, url, timeout_s, proxy)
    return answer.facts
