"""Analyst endpoints: /api/v1/compare, /api/v1/leaks, /api/v1/export (stubs until built)."""

from __future__ import annotations

from aiohttp import web


def add_routes(app: web.Application) -> None:
    """Add the analyst routes to ``app`` (filled in by the analysis work)."""
