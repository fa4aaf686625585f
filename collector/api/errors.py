"""The middleware every request passes: errors become JSON, failures never leak a traceback,
and each request is timed, counted and logged without the caller's address."""

from __future__ import annotations

import time
from typing import Final

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from collector.server import ERROR_CODES
from collector.state import METRICS, JsonError, json_error

log = structlog.get_logger("collector.http")

_KEPT_HEADERS: Final = ("Allow", "Retry-After", "WWW-Authenticate")
_METHODS: Final = frozenset({"GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"})
_QUIET_ROUTES: Final = frozenset({"/healthz", "/metrics"})


def _route(request: web.Request) -> str:
    # The route's pattern, not the path: bounded label values, and nothing the caller chose.
    info = request.match_info
    resource = info.route.resource if info.http_exception is None else None
    return resource.canonical if resource is not None else "unmatched"


def _as_json(exc: web.HTTPException) -> web.HTTPException:
    headers = {k: exc.headers[k] for k in _KEPT_HEADERS if k in exc.headers}
    code = ERROR_CODES.get(exc.status, "error")
    return json_error(exc.status, code, exc.reason, headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    metrics = request.app[METRICS]
    started = time.perf_counter()
    # Stays 499 ("client closed request") only if the handler is cancelled because the
    # client hung up: cancellation is not caught here, just recorded as such.
    status = 499
    metrics.in_flight.inc()
    try:
        response = await handler(request)
        status = response.status
        return response
    except JsonError as exc:
        status = exc.status
        raise
    except web.HTTPException as exc:
        status = exc.status
        if exc.status < 400:
            raise
        raise _as_json(exc) from None
    except ConnectionError:
        raise  # the client went away mid-answer (status stays 499): nothing to answer
    except Exception:
        status = 500
        route = _route(request)
        log.exception("request_failed", method=request.method, route=route)
        raise json_error(
            500, "internal_error", "the collector failed to answer; the failure is logged"
        ) from None
    finally:
        metrics.in_flight.dec()
        elapsed = time.perf_counter() - started
        route = _route(request)
        method = request.method if request.method in _METHODS else "OTHER"
        metrics.request_seconds.labels(route, method).observe(elapsed)
        level = log.debug if route in _QUIET_ROUTES else log.info
        level(
            "http_request",
            method=method,
            route=route,
            status=status,
            ms=round(elapsed * 1000, 2),
        )
