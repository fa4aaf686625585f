"""Requests aiohttp's parser refuses (issue 9, finding 3): a live collector answers them with
a JSON 400, logs one structured event without a byte of the request, and no token ever
reaches its log, whatever the line endings."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from tests.live_collector import LiveCollector, live_collector

TOKEN = "fw-agent-SECRET-TOKEN-0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCollector]:
    with live_collector(tmp_path_factory.mktemp("malformed")) as live:
        yield live


def send_raw(port: int, data: bytes) -> bytes:
    """Send ``data`` and read until the collector closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


AUTH = b"Authorization: Bearer " + TOKEN.encode()
MALFORMED = {
    "bad_header_name": b"GET /api/v1/whoami HTTP/1.1\r\nHost: x\r\n"
    + AUTH
    + b"\r\nBad Header: v\r\n\r\n",
    "bare_lf": b"GET /api/v1/whoami HTTP/1.1\nHost: x\n" + AUTH + b"\n\x01bad\n\n",
    "bare_lf_post": b"POST /api/v1/batches HTTP/1.1\nHost: x\n"
    + AUTH
    + b"\nContent-Length: zz\n\n",
    "bad_content_length": b"POST /api/v1/batches HTTP/1.1\r\n"
    + AUTH
    + b"\r\nContent-Length: -1\r\n\r\n",
    "token_in_request_line": b"GET /x?"
    + TOKEN.encode()
    + b" HTTP/1.1 extra\r\n"
    + AUTH
    + b"\r\n\r\n",
    "bad_method": b"G\x00T / HTTP/1.1\r\n" + AUTH + b"\r\n\r\n",
    "bad_version": b"GET / HTTP/9.Z\r\n" + AUTH + b"\r\n\r\n",
    "control_char_in_value": b"GET / HTTP/1.1\r\n" + AUTH + b"\x00\x7f\r\n\r\n",
    "line_too_long": b"GET / HTTP/1.1\r\n" + AUTH + b"A" * 20000 + b"\r\n\r\n",
    "obsolete_folding": b"GET / HTTP/1.1\r\nX-A: 1\r\n " + AUTH + b"\r\n\r\n",
    "double_content_length": (
        b"POST /api/v1/batches HTTP/1.1\r\n" + AUTH + b"\r\nContent-Length: 1\r\n"
        b"Content-Length: 2\r\n\r\nab"
    ),
    "chunked_garbage": (
        b"POST /api/v1/batches HTTP/1.1\r\n" + AUTH + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\n" + TOKEN.encode() + b"\r\n0\r\n\r\n"
    ),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_malformed_request_gets_json_and_leaves_no_token_in_the_log(
    collector: LiveCollector, name: str
) -> None:
    """Each malformed request is a 4xx JSON answer; the log holds no token and no traceback."""
    answer = send_raw(collector.port, MALFORMED[name])
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert 400 <= status < 500, answer[:200]
    assert json.loads(body)["error"]
    assert collector.alive()
    log = collector.log_text()
    assert TOKEN not in log
    assert "SECRET" not in log
    assert "Traceback" not in log


def test_parse_errors_are_one_structured_event_each(collector: LiveCollector) -> None:
    """A parse error is logged as ``http_parse_error`` with its kind, in JSON."""
    send_raw(collector.port, MALFORMED["bad_header_name"])
    events = [
        json.loads(line) for line in collector.log_text().splitlines() if line.startswith("{")
    ]
    parse_errors = [e for e in events if e["event"] == "http_parse_error"]
    assert parse_errors
    assert {"status", "error"} <= set(parse_errors[-1])
    assert all(e.get("logger") != "aiohttp.server" for e in events)
    non_json = [
        line for line in collector.log_text().splitlines() if line and not line.startswith("{")
    ]
    assert non_json == []
