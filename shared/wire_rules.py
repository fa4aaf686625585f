"""The rules of docs/wire-format.md that a typed decoder does not see. Pure: bytes in.

msgspec validates the fields a record is known to have and skips the others unread, so by
itself it would accept an extension type or absurd nesting inside an unknown field, and
take the last of two equal keys. These checks cover the whole record, known fields or not:

- no msgpack extension type anywhere (the timestamp extension included);
- no map with the same key twice;
- at most ``MAX_RECORD_DEPTH`` levels of maps and arrays in one record.

A record that breaks one is refused alone (``rejected`` in the batch's answer), so the
checks run per record; ``split_map`` finds a batch's top-level keys and the byte span of
each value without recursion, for batches too deep for a recursive decoder.

The checks are cheap for what agents really send: the record is decoded by msgspec (in C,
an extension type stops it) and encoded again; identical bytes prove that no map had a key
twice (the decoded map would have lost one), and only the subtrees the schema does not know
(``unknown``) are walked for their depth. Anything else (another encoder's choices, a byte
sequence that may be a timestamp) takes the exact path, a full decode with hooks. The
collector runs these checks only on records that are not the msgpack of the measurement they
decode to (``shared.schema.decode_record``): those cannot break a rule.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from typing import Any, Final, NoReturn

import msgpack
import msgspec

from shared.errors import CodecError, SchemaError

MAX_RECORD_DEPTH: Final = 32  # the schema itself needs 4 (control.dns.answers)

# Bytes that follow a type byte: fixed payloads, and the width of a length prefix.
_FIXED: Final = {
    0xC0: 0, 0xC2: 0, 0xC3: 0, 0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8,
    0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8,
}  # fmt: skip
_LENGTH: Final = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4}  # bin, str
_ARRAY: Final = {0xDC: 2, 0xDD: 4}
_MAP: Final = {0xDE: 2, 0xDF: 4}
_FIXEXT: Final = {0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17}  # type byte + data
_EXT: Final = {0xC7: 1, 0xC8: 2, 0xC9: 4}  # length width; then the type byte and data
_WIDTH: Final = {1: ">B", 2: ">H", 4: ">I"}


class _Refused(Exception):
    pass


def _refuse_ext(code: int, data: bytes) -> NoReturn:
    raise _Refused(f"msgpack extension type {code} is not allowed")


class _Depth:
    """Nesting depth computed bottom-up by the decoder's hooks (children are built first)."""

    __slots__ = ("of",)

    def __init__(self) -> None:
        self.of: dict[int, int] = {}

    def level(self, values: Any) -> int:
        deepest = 1
        of = self.of
        for value in values:
            t = type(value)
            if t is dict or t is list:
                below = of.pop(id(value)) + 1
                if below > deepest:
                    deepest = below
            elif t is msgpack.Timestamp:  # the one extension msgpack decodes by itself
                raise _Refused("msgpack extension type -1 (timestamp) is not allowed")
        return deepest

    def pairs(self, items: list[tuple[Any, Any]]) -> dict[Any, Any]:
        mapping = dict(items)
        if len(mapping) != len(items):
            seen: set[Any] = set()
            for key, _ in items:
                if key in seen:
                    raise _Refused(f"the key {str(key)[:64]!r} appears twice in one map")
                seen.add(key)
        self._note(mapping, self.level(mapping.values()))
        return mapping

    def array(self, items: list[Any]) -> list[Any]:
        self._note(items, self.level(items))
        return items

    def _note(self, container: Any, depth: int) -> None:
        if depth > MAX_RECORD_DEPTH:
            raise _Refused(f"nested deeper than {MAX_RECORD_DEPTH} levels")
        self.of[id(container)] = depth


def _refuse_ext_fast(code: int, data: memoryview) -> NoReturn:
    raise _Refused(f"msgpack extension type {code} is not allowed")


_FAST_DECODER: Final = msgspec.msgpack.Decoder(ext_hook=_refuse_ext_fast)
_FAST_ENCODER: Final = msgspec.msgpack.Encoder()
# msgspec decodes the timestamp extension (type -1) itself: its headers send a record down
# the exact path (rarely a false alarm inside a float or a string, never a miss).
_TIMESTAMP_MARKS: Final = (b"\xd6\xff", b"\xd7\xff", b"\xc7\x0c\xff")

Unknown = Callable[[Any], Iterable[tuple[Any, int]]]


def _depth_within(node: Any, depth: int) -> bool:
    stack = [(node, depth)]
    while stack:
        item, level = stack.pop()
        if level > MAX_RECORD_DEPTH:
            return False
        for value in item.values() if type(item) is dict else item:
            t = type(value)
            if t is dict or t is list:
                stack.append((value, level + 1))
    return True


def check_record(raw: bytes | memoryview, unknown: Unknown | None = None) -> None:
    """Refuse (``CodecError``) a record with an extension type, a duplicate key or more
    than ``MAX_RECORD_DEPTH`` levels of nesting, wherever in the record it is.

    ``unknown(decoded)`` yields the containers the schema does not describe, each with its
    depth in the record; without it, or when the fast path cannot vouch for the record,
    every level is checked.
    """
    data = bytes(raw)
    if unknown is not None and not any(mark in data for mark in _TIMESTAMP_MARKS):
        try:
            decoded = _FAST_DECODER.decode(data)
        except _Refused as exc:
            raise CodecError(str(exc)) from None
        except RecursionError:
            raise CodecError(f"nested deeper than {MAX_RECORD_DEPTH} levels") from None
        except msgspec.DecodeError as exc:
            raise CodecError(f"not valid msgpack: {exc}") from None
        if type(decoded) is dict and _FAST_ENCODER.encode(decoded) == data:
            for node, depth in unknown(decoded):
                if not _depth_within(node, depth):
                    raise CodecError(f"nested deeper than {MAX_RECORD_DEPTH} levels")
            return
    _check_exactly(data)


def _check_exactly(raw: bytes) -> None:
    depth = _Depth()
    try:
        msgpack.unpackb(
            raw,
            raw=False,
            strict_map_key=True,  # keys are strings (a timestamp key would slip by)
            use_list=True,
            ext_hook=_refuse_ext,
            object_pairs_hook=depth.pairs,
            list_hook=depth.array,
            timestamp=0,
        )
    except _Refused as exc:
        raise CodecError(str(exc)) from None
    except msgpack.StackError:
        raise CodecError(f"nested deeper than {MAX_RECORD_DEPTH} levels") from None
    except msgpack.ExtraData:
        raise CodecError("trailing bytes after the record") from None
    except (ValueError, TypeError) as exc:
        raise CodecError(f"not valid msgpack: {exc}") from None


def _skip(data: bytes | memoryview, pos: int) -> int:
    """The offset just past the msgpack value at ``pos``; iterative, so any depth is fine.
    Only the structure is read: what the value holds is for ``check_record`` to judge."""
    pending = 1
    size = len(data)
    try:
        while pending:
            pending -= 1
            b = data[pos]
            pos += 1
            if b <= 0x7F or b >= 0xE0:
                continue
            if b <= 0x8F:
                pending += 2 * (b & 0x0F)
            elif b <= 0x9F:
                pending += b & 0x0F
            elif b <= 0xBF:
                pos += b & 0x1F
            elif b in _FIXED:
                pos += _FIXED[b]
            elif b in _LENGTH:
                width = _LENGTH[b]
                pos += width + struct.unpack_from(_WIDTH[width], data, pos)[0]
            elif b in _ARRAY:
                width = _ARRAY[b]
                pending += struct.unpack_from(_WIDTH[width], data, pos)[0]
                pos += width
            elif b in _MAP:
                width = _MAP[b]
                pending += 2 * struct.unpack_from(_WIDTH[width], data, pos)[0]
                pos += width
            elif b in _FIXEXT:
                pos += _FIXEXT[b]  # skipped here: check_record refuses it in its record
            elif b in _EXT:
                width = _EXT[b]
                pos += width + 1 + struct.unpack_from(_WIDTH[width], data, pos)[0]
            else:
                raise CodecError(f"not valid msgpack: byte 0x{b:02x} is no type")
            if pos > size:
                raise IndexError
    except (IndexError, struct.error):
        raise CodecError("not valid msgpack: the document is truncated") from None
    return pos


def _header(data: bytes | memoryview, pos: int, fix: int, wide: dict[int, int]) -> tuple[int, int]:
    """(item count, offset of the first item) of the map or array header at ``pos``."""
    if pos >= len(data):
        raise CodecError("not valid msgpack: the document is truncated")
    b = data[pos]
    if fix <= b <= fix + 0x0F:
        return b & 0x0F, pos + 1
    if b in wide:
        width = wide[b]
        try:
            return struct.unpack_from(_WIDTH[width], data, pos + 1)[0], pos + 1 + width
        except struct.error:
            raise CodecError("not valid msgpack: the document is truncated") from None
    raise SchemaError("", "expected a map" if fix == 0x80 else "expected an array")


def split_map(data: bytes | memoryview) -> dict[str, memoryview]:
    """A top-level msgpack map's string keys and the bytes of each value, undecoded.

    ``SchemaError`` if the document is not a map or a key appears twice, ``CodecError`` if
    it is not one msgpack document.
    """
    view = memoryview(data)
    count, pos = _header(view, 0, 0x80, _MAP)
    out: dict[str, memoryview] = {}
    for _ in range(count):
        key_end = _skip(view, pos)
        try:
            key = msgpack.unpackb(view[pos:key_end], raw=False)
        except (ValueError, TypeError):
            raise CodecError("not valid msgpack: a map key is not valid UTF-8") from None
        if not isinstance(key, str):
            raise SchemaError("", "map keys must be strings")
        value_end = _skip(view, key_end)
        if key in out:
            raise SchemaError(key[:64], "appears twice in the map")
        out[key] = view[key_end:value_end]
        pos = value_end
    if pos != len(view):
        raise CodecError("trailing bytes after the msgpack document")
    return out


def split_array(data: bytes | memoryview) -> list[bytes]:
    """The bytes of each item of a msgpack array, undecoded."""
    view = memoryview(data)
    count, pos = _header(view, 0, 0x90, _ARRAY)
    items: list[bytes] = []
    for _ in range(count):
        end = _skip(view, pos)
        items.append(bytes(view[pos:end]))
        pos = end
    return items


def check_top_level_keys(data: bytes) -> None:
    """``SchemaError`` if the top-level map of ``data`` has a key twice (decoders keep the
    last, which would let two readers see two different batches)."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=len(data) or 1)
    unpacker.feed(data)
    try:
        count = unpacker.read_map_header()
        seen: set[Any] = set()
        for _ in range(count):
            key = unpacker.unpack()
            if key in seen:
                raise SchemaError(str(key)[:64], "appears twice in the map")
            seen.add(key)
            unpacker.skip()
    except msgpack.StackError:
        split_map(data)  # too deep for the C skipper: the iterative one checks the keys
    except (msgpack.OutOfData, ValueError, TypeError):
        return  # not a valid map at all: the decoder says what is wrong
