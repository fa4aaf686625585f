"""Inputs for fuzzing a live collector, drawn from a ``random.Random``: mutated real batches,
random bodies for every endpoint, and malformed HTTP requests for raw sockets.

Shared by the bounded, seeded suite in CI (``tests/collector/test_fuzz.py``, Hypothesis
picks the seeds) and the long campaign ``bench/fuzz``. Every request carries the token it
is sent with somewhere a careless server might log it, so "no token in the log" is tested
by every input.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass
from typing import Any, Final

import msgpack

MSGPACK: Final = "application/vnd.msgpack"
ENDPOINTS: Final = (
    ("POST", "/api/v1/enroll"),
    ("GET", "/api/v1/whoami"),
    ("GET", "/api/v1/targets"),
    ("POST", "/api/v1/control"),
    ("POST", "/api/v1/batches"),
    ("GET", "/api/v1/compare"),
    ("GET", "/api/v1/leaks"),
    ("GET", "/api/v1/export"),
    ("GET", "/healthz"),
    ("GET", "/api/v1/openapi.json"),
)
_QUERY_NAMES: Final = ("cc", "asn", "domain", "since", "until", "bucket", "format", "x", "")
_QUERY_VALUES: Final = (
    "IR", "as58224", "%C2%B2", "9223372036854775808", "99999999999999999999w", "0s", "nan",
    "24h", "2013-09-16", "csv", "parquet", "jsonl", "%00", "%FF", "-1", "", "1e309",
    "%ED%A0%80", "AS", "1.5", "%F0%9F%98%80",
)  # fmt: skip


def measurement(rng: random.Random, n: int) -> dict[str, Any]:
    """A valid measurement, as an agent sends it."""
    blocked = rng.random() < 0.6
    return {
        "id": f"fz-{uuid.UUID(int=rng.getrandbits(128)).hex}-{n}",
        "measured_at": 1_700_000_000.0 + rng.random() * 1e6,
        "url": "https://blocked.example/",
        "domain": "blocked.example",
        "blocking": "tls" if blocked else "ok",
        "accessible": not blocked,
        "network": {"asn": rng.choice([58224, 31549, 0]), "cc": "IR", "network_name": "TCI"},
        "failure": "connection_reset" if blocked else None,
        "dns": {"resolver": "system", "query": "blocked.example", "answers": ["192.0.2.7"]},
        "tcp": [{"address": "192.0.2.7", "port": 443, "failure": None, "t_ms": 12.5}],
        "tls": {"address": "192.0.2.7", "sni": "blocked.example", "failure": None},
        "http": {"url": "https://blocked.example/", "status": 200 if not blocked else None},
        "timings": {"dns": 3.0},
        "agent_version": "fuzz",
    }


def batch(rng: random.Random, agent_id: str, size: int) -> bytes:
    doc = {
        "schema_version": 1,
        "agent_id": agent_id,
        "batch_id": f"b-{rng.getrandbits(40):x}",
        "results": [measurement(rng, i) for i in range(size)],
    }
    return msgpack.packb(doc, use_bin_type=True)  # type: ignore[no-any-return]


_SPECIAL_BYTES: Final = b"\x00\xc0\xc1\xc2\xc3\xd4\xd6\xd7\xc7\xdc\xdd\xde\xdf\x90\x80\xff\x7f"


def mutate(rng: random.Random, data: bytes) -> bytes:
    """``data`` with a few random edits: flipped, replaced, inserted, deleted, duplicated
    or truncated bytes, biased towards msgpack type bytes."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not out:
            out += bytes([rng.randrange(256)])
        op = rng.randrange(7)
        pos = rng.randrange(len(out))
        if op == 0:
            out[pos] ^= 1 << rng.randrange(8)
        elif op == 1:
            out[pos] = rng.choice(_SPECIAL_BYTES)
        elif op == 2:
            out[pos:pos] = bytes(rng.choice(_SPECIAL_BYTES) for _ in range(rng.randint(1, 8)))
        elif op == 3:
            del out[pos : pos + rng.randint(1, 16)]
        elif op == 4:
            end = min(len(out), pos + rng.randint(1, 64))
            out[pos:pos] = out[pos:end]
        elif op == 5:
            del out[pos:]
        else:
            out[pos : pos + 1] = b"\x91" * rng.randint(1, 2000) + b"\xc0"
    return bytes(out)


@dataclass(frozen=True, slots=True)
class FuzzRequest:
    """One HTTP request to send with a client library."""

    method: str
    path: str
    body: bytes
    content_type: str | None
    kind: str  # "batch" (a mutated real batch) or "random"


def random_body(rng: random.Random) -> tuple[bytes, str | None]:
    choice = rng.randrange(6)
    if choice == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 300))), MSGPACK
    if choice == 1:
        doc: Any = {"code": rng.choice(["\ud800", "x" * 300, 5, None, "ok"])}
        return json.dumps(doc).encode(), "application/json"
    if choice == 2:
        doc = {"url": rng.choice(["http://[2002:7f00:1::]/", "ftp://x/", "http://192.0.0.8/",
                                  "http://a:6379/", "http://[::1]:80/", 7])}  # fmt: skip
        return msgpack.packb(doc), MSGPACK
    if choice == 3:
        return b'{"a": ' * rng.randint(1, 5000), "application/json"
    if choice == 4:
        return mutate(rng, msgpack.packb({"code": "c", "url": "http://a/"})), MSGPACK
    return b"", rng.choice([None, "text/plain", MSGPACK, "application/json; charset=utf-16"])


def random_query(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(0, 4)):
        parts.append(f"{rng.choice(_QUERY_NAMES)}={rng.choice(_QUERY_VALUES)}")
    return "?" + "&".join(parts) if parts else ""


def http_request(rng: random.Random, agent_id: str, real_batch: bytes) -> FuzzRequest:
    """A mutated real batch (half the time) or a random request to any endpoint."""
    if rng.random() < 0.5:
        return FuzzRequest("POST", "/api/v1/batches", mutate(rng, real_batch), MSGPACK, "batch")
    method, path = rng.choice(ENDPOINTS)
    if method == "GET":
        return FuzzRequest(method, path + random_query(rng), b"", None, "random")
    body, content_type = random_body(rng)
    return FuzzRequest(method, path, body, content_type, "random")


_LINE_ENDS: Final = (b"\r\n", b"\n", b"\r", b"\r\r\n", b"\n\r")


def malformed_request(rng: random.Random, token: str) -> bytes:
    """Bytes for a raw socket: an HTTP request broken somewhere, the token inside it."""
    end = rng.choice(_LINE_ENDS)
    auth = b"Authorization: Bearer " + token.encode()
    method = rng.choice([b"GET", b"POST", b"G\x00T", b"PO ST", b"", b"\xff\xfe"])
    target = rng.choice([b"/api/v1/whoami", b"/api/v1/batches", b"*", b"/" + token.encode(),
                         b"/a b", b"/\x7f", b"http://x/api/v1/leaks?asn=1"])  # fmt: skip
    version = rng.choice(
        [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/9.9", b"HTTP/1.1 x", b"", b"HTTP/1.1\x00"]
    )
    headers = [
        b"Host: collector",
        auth,
        rng.choice(
            [
                b"Content-Length: 5",
                b"Content-Length: -1",
                b"Content-Length: zz",
                b"Transfer-Encoding: chunked",
                b"Transfer-Encoding: gzip, chunked",
                b"Content-Length: 99999999999999999999",
            ]
        ),
        rng.choice(
            [
                b"X-Bad\x00: 1",
                b"Bad Name: 1",
                b" folded: " + token.encode(),
                b"X: \x01",
                b"A" * rng.randint(1, 20000),
                b"Content-Type: application/vnd.msgpack",
            ]
        ),
    ]
    rng.shuffle(headers)
    head = b" ".join(p for p in (method, target, version) if p) + end
    head += end.join(headers) + end + end
    body = rng.choice([b"", b"abcde", b"zz\r\n" + token.encode() + b"\r\n0\r\n\r\n", b"\x84"])
    data = head + body
    if rng.random() < 0.3:
        data = mutate(rng, data)
        if token.encode() not in data:
            data += auth
    return data
