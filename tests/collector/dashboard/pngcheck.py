"""A strict PNG reader for the tests: signature, chunk CRCs, IHDR and the inflated image
data, without any imaging library."""

from __future__ import annotations

import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def decode_png(data: bytes) -> tuple[int, int, bytes]:
    """(width, height, raw scanlines) of a valid PNG; ValueError otherwise."""
    if not data.startswith(SIGNATURE):
        raise ValueError("not a PNG signature")
    pos = len(SIGNATURE)
    header: tuple[int, ...] | None = None
    idat = b""
    seen_end = False
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        if zlib.crc32(kind + body) != crc:
            raise ValueError(f"bad CRC in chunk {kind!r}")
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            seen_end = True
            break
        pos += 12 + length
    if header is None or not seen_end:
        raise ValueError("missing IHDR or IEND")
    width, height, depth, colour_type = header[:4]
    raw = zlib.decompress(idat)
    row = 1 + width * _CHANNELS[colour_type] * depth // 8
    if len(raw) != row * height:
        raise ValueError(f"image data is {len(raw)} bytes, expected {row * height}")
    return width, height, raw
