"""The collector's HTTP API: what every endpoint shares (content negotiation, bodies)."""

from __future__ import annotations

import asyncio
import json
import zlib
from typing import Any, Final

import msgspec
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from collector.state import CONFIG, json_error

MSGPACK_TYPES: Final = frozenset(
    {"application/vnd.msgpack", "application/msgpack", "application/x-msgpack"}
)
MSGPACK_CONTENT_TYPE: Final = "application/vnd.msgpack"
_READ_CHUNK: Final = 64 * 1024
_MSGPACK_ENCODER: Final = msgspec.msgpack.Encoder()


def is_msgpack(content_type: str) -> bool:
    return content_type.lower() in MSGPACK_TYPES


def wants_msgpack(request: web.Request) -> bool:
    """Whether to answer in msgpack: the Accept header asks for it, or, with no preference
    stated, the request itself was msgpack."""
    accept = request.headers.get("Accept", "").lower()
    if "json" in accept:
        return False
    if any(t in accept for t in MSGPACK_TYPES):
        return True
    return is_msgpack(request.content_type)


def reply(request: web.Request, data: Any, status: int = 200) -> web.Response:
    """``data`` as msgpack for msgpack clients, JSON for everyone else."""
    if wants_msgpack(request):
        return web.Response(
            status=status, body=_MSGPACK_ENCODER.encode(data), content_type=MSGPACK_CONTENT_TYPE
        )
    return web.Response(
        status=status, text=json.dumps(data, separators=(",", ":")), content_type="application/json"
    )


def _decompressor(request: web.Request) -> Any:
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj(zlib.MAX_WBITS)  # RFC 9110: the zlib format
    raise json_error(
        415,
        "unsupported_encoding",
        f"Content-Encoding {encoding[:40]!r} is not supported; use gzip, deflate or none",
    )


def _too_large(limit: int) -> web.HTTPException:
    return json_error(
        413,
        "body_too_large",
        f"the request body is larger than {limit} bytes (after decompression)",
    )


def _stalled(timeout_s: float, min_rate: float) -> web.HTTPException:
    exc = json_error(
        408,
        "request_timeout",
        f"the request body did not arrive in time (allowed: {timeout_s:g} s plus one second"
        f" for every {min_rate:g} bytes received); send it again",
    )
    exc.force_close()  # the rest of a stalled body is not worth waiting for
    return exc


async def read_body(request: web.Request, limit: int, *, compressed_ok: bool = True) -> bytes:
    """The request body, decompressed, refused with 413 as soon as it passes ``limit`` bytes.

    The compressed stream is inflated here, a chunk at a time with a cap on the output, so
    a gzip bomb costs at most ``limit`` bytes of memory (aiohttp's own inflation is off).

    The body must arrive by a deadline (``limits.body_timeout_s`` after the headers, pushed
    back one second for every ``limits.body_min_bytes_per_second`` bytes received): an
    honest slow link keeps going, a stalled or trickling upload ends with 408.
    """
    inflate = _decompressor(request)
    if inflate is not None and not compressed_ok:
        raise json_error(415, "unsupported_encoding", "this endpoint takes no Content-Encoding")
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    limits = request.app[CONFIG].limits
    timeout_s, min_rate = limits.body_timeout_s, limits.body_min_bytes_per_second
    loop = asyncio.get_running_loop()
    started = loop.time()
    out = bytearray()
    received = 0
    try:
        async with asyncio.timeout(started + timeout_s) as deadline:
            async for chunk in request.content.iter_chunked(_READ_CHUNK):
                received += len(chunk)
                if received > limit:
                    raise _too_large(limit)
                deadline.reschedule(started + timeout_s + received / min_rate)
                if inflate is None:
                    out += chunk
                    continue
                out += inflate.decompress(chunk, limit + 1 - len(out))
                if len(out) > limit or inflate.unconsumed_tail:
                    raise _too_large(limit)
    except TimeoutError:
        raise _stalled(timeout_s, min_rate) from None
    except zlib.error:
        raise json_error(400, "bad_encoding", "the body is not valid gzip/deflate data") from None
    except (RequestPayloadError, ConnectionError):
        # The client went away or broke the framing mid-body: nobody is likely to read the
        # answer, but it is a bad request, not a failure of the collector.
        raise json_error(400, "incomplete_body", "the request body ended early") from None
    if inflate is not None and (not inflate.eof or inflate.unused_data):
        raise json_error(
            400, "bad_encoding", "the compressed body is truncated or has trailing data"
        )
    return bytes(out)


def decode_small_body(request: web.Request, body: bytes) -> dict[str, Any]:
    """A small JSON or msgpack map (enroll, control requests); 415 or 400 otherwise."""
    content_type = request.content_type.lower()
    try:
        if is_msgpack(content_type):
            data = msgspec.msgpack.decode(body)
        elif content_type == "application/json":
            data = json.loads(body)
        else:
            raise json_error(
                415,
                "unsupported_media_type",
                "send application/json or application/vnd.msgpack",
            )
    except (msgspec.DecodeError, ValueError, RecursionError):
        raise json_error(400, "bad_body", "the body is not valid JSON or msgpack") from None
    if not isinstance(data, dict):
        raise json_error(400, "bad_body", "expected a map")
    for key, value in data.items():
        # JSON may spell a lone surrogate ("\ud800"), which no UTF-8 string can hold.
        for text in (key, value):
            if isinstance(text, str) and not _is_unicode(text):
                raise json_error(400, "bad_body", f"{str(key)[:40]!r}: not a valid Unicode string")
    return data


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
