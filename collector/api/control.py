"""POST /api/v1/control: the collector measures a URL from its own vantage (stub until built)."""

from __future__ import annotations

from aiohttp import web


def add_routes(app: web.Application) -> None:
    """Add the control route to ``app`` (filled in by the agent-probes work)."""
