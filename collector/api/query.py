"""Analyst endpoints: GET /api/v1/compare, /api/v1/leaks, /api/v1/export?format=.

All take an analyst token and the filters of design.md section 2 as query parameters
(cc, asn, domain, since, until, bucket). The analysis runs on a worker thread; exports
stream chunk by chunk, so memory stays flat however large the store.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from collector.analysis import Report, analyse_filtered, evidence_filters
from collector.exports import FORMATS, MEDIA_TYPES, SUFFIXES, ExportEncoder
from collector.state import PSEUDONYM_KEY, STORE, json_error, require_analyst
from shared.filters import FilterError, Filters, filters_from_query

_EXPORT_CHUNK = 5000


def _filters(request: web.Request) -> Filters:
    try:
        return filters_from_query(request.query)
    except FilterError as exc:
        raise json_error(400, "bad_filter", str(exc)) from None


async def _report(request: web.Request) -> Report:
    await require_analyst(request)
    filters = _filters(request)
    # asn and domain choose what is shown; every ISP of the country is evidence
    evidence = evidence_filters(filters)
    buckets = await request.app[STORE].aggregate(evidence, request.app[PSEUDONYM_KEY])
    return await asyncio.to_thread(analyse_filtered, buckets, filters)


def _json(report: Report, *, with_isps: bool) -> web.Response:
    # The canonical text, the same bytes as `collector leaks --json` and `compare --format json`.
    return web.Response(
        text=report.dumps(with_isps=with_isps), content_type="application/json", charset="utf-8"
    )


async def leaks(request: web.Request) -> web.Response:
    return _json(await _report(request), with_isps=False)


async def compare(request: web.Request) -> web.Response:
    return _json(await _report(request), with_isps=True)


async def export(request: web.Request) -> web.StreamResponse:
    await require_analyst(request)
    fmt = request.query.get("format", "")
    if fmt not in FORMATS:
        raise json_error(400, "bad_format", f"format: {fmt!r} is not one of {', '.join(FORMATS)}")
    filters = _filters(request)
    response = web.StreamResponse(
        headers={
            "Content-Type": MEDIA_TYPES[fmt],
            "Content-Disposition": f'attachment; filename="filterwatch-export{SUFFIXES[fmt]}"',
        }
    )
    encoder = ExportEncoder(fmt)
    await response.prepare(request)
    rows: Any
    stream = request.app[STORE].export_rows(filters, request.app[PSEUDONYM_KEY], _EXPORT_CHUNK)
    try:
        async for rows in stream:
            data = await asyncio.to_thread(encoder.encode, rows)
            if data:
                await response.write(data)
    finally:
        # A client that goes away mid-export releases the store's reader at once.
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()
    await response.write(await asyncio.to_thread(encoder.finish))
    await response.write_eof()
    return response


def add_routes(app: web.Application) -> None:
    """Add the analyst routes to ``app``."""
    app.router.add_get("/api/v1/compare", compare)
    app.router.add_get("/api/v1/leaks", leaks)
    app.router.add_get("/api/v1/export", export)
