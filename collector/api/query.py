"""Analyst endpoints: GET /api/v1/compare, /api/v1/leaks, /api/v1/export?format=.

All take an analyst token and the filters of design.md section 2 as query parameters
(cc, asn, domain, since, until, bucket). The analysis runs on a worker thread; exports
stream chunk by chunk, so memory stays flat however large the store.

Every query parameter is checked before any work is done (and, for an export, before the
first byte of the answer): an unknown or repeated parameter, a value that is not valid
text, a bad filter value or ``since`` after ``until`` is ``400 bad_parameter`` or
``400 bad_filter`` whose detail starts with the parameter's name (``asn: ...``). An export
that fails after its first byte aborts the connection, so the client sees a broken
transfer rather than a short file that looks complete.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, Final

import structlog
from aiohttp import web

from collector.analysis import Report, analyse_filtered, evidence_filters
from collector.exports import FORMATS, MEDIA_TYPES, SUFFIXES, ExportEncoder
from collector.filters import FilterError, Filters, filters_from_query
from collector.state import PSEUDONYM_KEY, STORE, json_error, require_analyst

log = structlog.get_logger("collector.query")

_EXPORT_CHUNK = 5000
FILTER_PARAMETERS: Final = ("cc", "asn", "domain", "since", "until", "bucket")
EXPORT_PARAMETERS: Final = ("format", *FILTER_PARAMETERS)
_CONTROL_CHARACTERS: Final = re.compile(r"[\x00-\x1f\x7f]")


def _bad_parameter(name: str, problem: str) -> web.HTTPException:
    return json_error(400, "bad_parameter", f"{name[:40]}: {problem}")


def check_parameters(request: web.Request, known: tuple[str, ...]) -> None:
    """400 for a parameter this endpoint does not take, one given twice, or a value that
    is not text (invalid UTF-8, control characters)."""
    for name in request.query:
        if name not in known:
            raise _bad_parameter(
                name, f"unknown query parameter (this endpoint takes {', '.join(known)})"
            )
        values = request.query.getall(name)
        if len(values) > 1:
            raise _bad_parameter(name, "given more than once")
        value = values[0]
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _bad_parameter(name, "not valid UTF-8") from None
        if _CONTROL_CHARACTERS.search(value) or len(value) > 1024:
            raise _bad_parameter(name, "control characters or more than 1024 characters")


def _filters(request: web.Request, known: tuple[str, ...] = FILTER_PARAMETERS) -> Filters:
    check_parameters(request, known)
    try:
        filters = filters_from_query(request.query)
    except FilterError as exc:
        # The shared messages name command-line flags ("--asn: ..."): here, query names.
        raise json_error(400, "bad_filter", str(exc).removeprefix("--")) from None
    if filters.since is not None and filters.until is not None and filters.since > filters.until:
        raise json_error(400, "bad_filter", "since: is after until (nothing can match)")
    return filters


async def _report(request: web.Request, *, with_isps: bool) -> Report:
    await require_analyst(request)
    filters = _filters(request)
    # asn and domain choose what is shown; every ISP of the country is evidence
    evidence = evidence_filters(filters)
    buckets = await request.app[STORE].aggregate(
        evidence, request.app[PSEUDONYM_KEY], comparable_only=not with_isps
    )
    return await asyncio.to_thread(analyse_filtered, buckets, filters)


def _json(report: Report, *, with_isps: bool) -> web.Response:
    # The canonical text, the same bytes as `collector leaks --json` and `compare --format json`.
    return web.Response(
        text=report.dumps(with_isps=with_isps), content_type="application/json", charset="utf-8"
    )


async def leaks(request: web.Request) -> web.Response:
    return _json(await _report(request, with_isps=False), with_isps=False)


async def compare(request: web.Request) -> web.Response:
    return _json(await _report(request, with_isps=True), with_isps=True)


async def export(request: web.Request) -> web.StreamResponse:
    await require_analyst(request)
    check_parameters(request, EXPORT_PARAMETERS)
    fmt = request.query.get("format", "")
    if fmt not in FORMATS:
        raise json_error(
            400, "bad_format", f"format: {fmt[:40]!r} is not one of {', '.join(FORMATS)}"
        )
    filters = _filters(request, EXPORT_PARAMETERS)
    response = web.StreamResponse(
        headers={
            "Content-Type": MEDIA_TYPES[fmt],
            "Content-Disposition": f'attachment; filename="filterwatch-export{SUFFIXES[fmt]}"',
        }
    )
    encoder = ExportEncoder(fmt)
    await response.prepare(request)
    try:
        await _stream_export(request, response, encoder, filters)
    except ConnectionError:
        raise
    except Exception as exc:
        # The status line is gone: the only honest signal left is a broken transfer.
        log.error("export_failed", format=fmt, error=type(exc).__name__)
        if request.transport is not None:
            request.transport.abort()
    return response


async def _stream_export(
    request: web.Request, response: web.StreamResponse, encoder: ExportEncoder, filters: Filters
) -> None:
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


def add_routes(app: web.Application) -> None:
    """Add the analyst routes to ``app``."""
    app.router.add_get("/api/v1/compare", compare)
    app.router.add_get("/api/v1/leaks", leaks)
    app.router.add_get("/api/v1/export", export)
