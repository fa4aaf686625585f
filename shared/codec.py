"""msgpack encoding and decoding with hard limits. Pure: no sockets, no files.

The agent's codec (its spool records, its uploads, the collector's answers it reads). The
limits protect whoever decodes from hostile or broken input: the whole document, each
string, binary and container is bounded, nesting is bounded, and extension types (which
could smuggle anything) are refused. The collector decodes batches with msgspec
(``shared.schema``), not with this module. Any problem raises ``CodecError``; nothing else
escapes ``decode``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, NoReturn

import msgpack

from shared.errors import CodecError

CONTENT_TYPE: Final = "application/vnd.msgpack"


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on a decoded document."""

    max_bytes: int = 8 * 1024 * 1024
    max_str_len: int = 64 * 1024
    max_bin_len: int = 64 * 1024
    max_array_len: int = 10_000
    max_map_len: int = 512
    max_depth: int = 12


DEFAULT_LIMITS: Final = Limits()


def _refuse_ext(code: int, data: bytes) -> NoReturn:
    raise CodecError(f"msgpack extension type {code} is not allowed")


def encode(obj: Any) -> bytes:
    """Encode a document of maps, arrays, strings, numbers, booleans and nil."""
    try:
        return msgpack.packb(obj, use_bin_type=True, datetime=False)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"cannot encode: {exc}") from None


def _check_depth(doc: Any, max_depth: int) -> None:
    # Iterative, and only containers are visited: scalars cost nothing here.
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise CodecError(f"nested deeper than {max_depth} levels")
        if type(node) is dict:
            for value in node.values():
                t = type(value)
                if t is dict or t is list:
                    stack.append((value, depth + 1))
        else:
            for value in node:
                t = type(value)
                if t is dict or t is list:
                    stack.append((value, depth + 1))


def decode(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Decode one msgpack document within ``limits``; raise ``CodecError`` otherwise."""
    if len(data) > limits.max_bytes:
        raise CodecError(f"document of {len(data)} bytes is over the limit of {limits.max_bytes}")
    if not data:
        raise CodecError("empty body: expected one msgpack document")
    try:
        doc = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            ext_hook=_refuse_ext,
            max_str_len=limits.max_str_len,
            max_bin_len=limits.max_bin_len,
            max_array_len=limits.max_array_len,
            max_map_len=limits.max_map_len,
            max_ext_len=0,
            timestamp=0,
        )
    except CodecError:
        raise
    except msgpack.ExtraData:
        raise CodecError("trailing bytes after the msgpack document") from None
    except (ValueError, TypeError, RecursionError, msgpack.UnpackException) as exc:
        # ValueError covers truncated input, over-limit lengths and invalid UTF-8;
        # TypeError an unhashable map key; RecursionError absurd nesting.
        if "max_ext_len" in str(exc):  # max_ext_len=0 refuses extensions before ext_hook
            raise CodecError("msgpack extension types are not allowed") from None
        raise CodecError(f"not valid msgpack: {exc}") from None
    except Exception as exc:  # the C extension may raise other types on garbage
        raise CodecError(f"not valid msgpack: {type(exc).__name__}") from None
    if type(doc) is dict or type(doc) is list:
        _check_depth(doc, limits.max_depth)
    return doc
