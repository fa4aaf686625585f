"""Serving the collector: aiohttp's HTTP server, with our own answer and log line for the
requests it cannot parse.

aiohttp answers a request line or header it cannot parse itself, before any middleware
runs, and logs the parser's exception with its traceback; the exception's message quotes
the offending bytes, which may be an ``Authorization`` header (a client with bare-LF line
endings gets its whole request quoted). Here such a request gets the same JSON error as
every other (``400 bad_request``) and one structured log event that names the kind of
error and never a byte of the request: ``http_parse_error`` with ``status`` and ``error``
(the parser exception's class name).

Time bounds: a connection must send its request headers within ``limits.body_timeout_s``
of opening (or of the previous answer), and the body within the deadline of
``collector.api.read_body``.
"""

from __future__ import annotations

import gc
import json
from http import HTTPStatus
from typing import Any, Final

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from collector.config import CollectorConfig

# The ``error`` code of each status, for the API's middleware (collector/api/errors.py) and
# for the answers the HTTP parser gives before any middleware runs (below). Here, not in the
# API package: `collector` commands import this module before the extras are checked, and
# the API's modules need prometheus_client, which a plain install does not have.
ERROR_CODES: Final = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    411: "length_required",
    413: "body_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    429: "too_many_requests",
    431: "headers_too_large",
    501: "not_implemented",
    503: "overloaded",
}

log = structlog.get_logger("collector.http")

# The cyclic garbage collector's thresholds for a serving collector (Python's default:
# 700, 10, 10). Ingest makes no cycles, but every batch in flight keeps thousands of
# containers alive (its decoded measurements, its rows) until it is stored: at 700 the
# collector ran some 2,000 young, 190 middle and 17 full collections per 100,000 results
# into PostgreSQL, about 3.8 s of its 9.6 CPU-s; at 50,000, under ten young ones and no
# others (bench/ingest --postgres). Cycles made elsewhere (exceptions, aiohttp) are
# still collected.
GC_THRESHOLDS: Final = (50_000, 20, 20)


def tune_gc() -> None:
    """For a collector that has started: what it loaded (modules, tables, fingerprints)
    moves out of the collector's sight for good (``gc.freeze``), and young collections
    run at ``GC_THRESHOLDS``."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _error_name(exc: BaseException | None) -> str | None:
    return type(exc).__name__ if exc is not None else None


class _Protocol(RequestHandler):
    """aiohttp's request handler with a JSON answer and a value-free log line for errors."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            log.error("http_server_error", status=status, error=_error_name(exc))
        else:
            log.info("http_parse_error", status=status, error=_error_name(exc))
        if request.writer.output_size > 0:
            raise ConnectionError("the answer has begun; the connection is closed instead")
        code = ERROR_CODES.get(status, "internal_error" if status >= 500 else "bad_request")
        if status < 500:
            detail = (
                f"the request could not be parsed as HTTP/1.1 ({_error_name(exc) or 'error'});"
                " lines end with CRLF, headers are 'Name: value'"
            )
        else:
            detail = "the collector failed to answer; the failure is logged"
        reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else None
        response = web.Response(
            status=status,
            reason=reason,
            text=json.dumps({"error": code, "detail": detail}),
            content_type="application/json",
        )
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        # aiohttp's messages here carry a peer address and exceptions that may quote bytes of
        # the request: only the exception's kind is logged.
        exc = kwargs.get("exc_info")
        log.warning(
            "http_connection_error",
            error=_error_name(exc if isinstance(exc, BaseException) else None),
        )


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _Protocol(self, loop=self._loop, **self._kwargs)


class CollectorRunner(web.AppRunner):
    """An ``AppRunner`` whose connections are served by ``_Protocol``."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return _Server(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=self._app.loop,
            **server._kwargs,
        )


def make_runner(app: web.Application, config: CollectorConfig) -> CollectorRunner:
    """The runner ``collector serve`` uses for ``app``."""
    return CollectorRunner(
        app,
        # aiohttp's access log would print every client's address.
        access_log=None,
        handle_signals=False,
        keepalive_timeout=config.limits.body_timeout_s,
    )
