"""Robust at every edge (issue 9): uploads that stall after their headers cannot starve
honest agents and end with 408; bad input is a 4xx JSON error, never a 500."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from collector.api.ingest import UPLOADS
from collector.app import make_app
from collector.config import CollectorConfig
from shared.codec import encode
from tests.collector.conftest import Client, batch, enroll, post_batch, record, stored

STALLED = 16


async def open_stalled_upload(client: Client, token: str) -> asyncio.StreamWriter:
    """A connection that sends a valid agent's headers and one byte of a 4 KiB body."""
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    writer.write(
        b"POST /api/v1/batches HTTP/1.1\r\nHost: collector\r\n"
        b"Content-Type: application/vnd.msgpack\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\n"
        b"Content-Length: 4096\r\n\r\n\x84"
    )
    await writer.drain()
    writer.transport.set_write_buffer_limits(0)
    writer.reader = reader  # type: ignore[attr-defined]  # kept for the test to read
    return writer


def stalling_config(config: CollectorConfig, body_timeout_s: float) -> CollectorConfig:
    limits = dataclasses.replace(config.limits, body_timeout_s=body_timeout_s)
    return dataclasses.replace(config, limits=limits)


async def test_sixteen_stalled_uploads_do_not_stop_an_honest_agent(
    aiohttp_client: Any, config: CollectorConfig
) -> None:
    """16 uploads from 8 agents stall after one byte (4 in-flight slots configured); an
    honest agent's batch is accepted while they stay open."""
    client = await aiohttp_client(make_app(stalling_config(config, body_timeout_s=600)))
    writers = []
    for _ in range(STALLED // 2):
        _, token = await enroll(client)
        writers += [await open_stalled_upload(client, token) for _ in range(2)]
    while client.app[UPLOADS].total < STALLED:  # noqa: ASYNC110 - wait for the state
        await asyncio.sleep(0.01)
    agent_id, token = await enroll(client)
    resp = await post_batch(client, token, batch(agent_id, [record(0), record(1)]))
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["accepted"] == 2
    assert client.app[UPLOADS].total == STALLED  # still open, still harmless
    for writer in writers:
        writer.close()
    assert await stored(client) == 2


async def test_a_stalled_upload_ends_with_408(aiohttp_client: Any, config: CollectorConfig) -> None:
    """A body that stops arriving gets 408 request_timeout and the connection is closed."""
    client = await aiohttp_client(make_app(stalling_config(config, body_timeout_s=0.5)))
    _, token = await enroll(client)
    writer = await open_stalled_upload(client, token)
    reader: asyncio.StreamReader = writer.reader  # type: ignore[attr-defined]
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
    assert head.startswith(b"HTTP/1.1 408 ")
    assert b"Connection: close" in head
    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    body = await reader.readexactly(length)
    assert b'"error": "request_timeout"' in body
    assert client.app[UPLOADS].total == 0
    writer.close()


async def test_a_slow_honest_upload_is_not_cut_off(
    aiohttp_client: Any, config: CollectorConfig
) -> None:
    """A body sent in pieces, each well within the deadline, is accepted."""
    client = await aiohttp_client(make_app(stalling_config(config, body_timeout_s=5)))
    agent_id, token = await enroll(client)
    body = encode(batch(agent_id, [record(0)]))

    async def pieces() -> Any:
        for i in range(0, len(body), 100):
            yield body[i : i + 100]
            await asyncio.sleep(0.01)

    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/vnd.msgpack",
        "Accept": "application/json",
    }
    resp = await client.post("/api/v1/batches", data=pieces(), headers=headers)
    assert resp.status == 200
    assert (await resp.json())["accepted"] == 1


async def test_enroll_with_a_lone_surrogate_is_a_400(client: Client) -> None:
    """Issue 9, finding 2: {"code": "\\ud800"} is a 400 bad_body, logged without traceback."""
    from structlog.testing import capture_logs

    with capture_logs() as events:
        resp = await client.post(
            "/api/v1/enroll",
            data=b'{"code": "\\ud800"}',
            headers={"Content-Type": "application/json"},
        )
    assert resp.status == 400
    assert (await resp.json())["error"] == "bad_body"
    assert not [e for e in events if e["event"] == "request_failed"]


def _map(*pairs: tuple[bytes, bytes]) -> bytes:
    """A msgpack map written by hand (a dict cannot hold a key twice)."""
    assert len(pairs) < 16
    return bytes([0x80 | len(pairs)]) + b"".join(k + v for k, v in pairs)


def _with_field(rec: dict[str, Any], key: str, value_bytes: bytes) -> bytes:
    """``rec`` encoded with one more field whose value is given as raw msgpack."""
    body = encode(rec)
    count = len(rec)
    assert count < 16 and body[0] == 0x80 | count  # a fixmap: written again as a map16
    return b"\xde" + (count + 1).to_bytes(2, "big") + body[1:] + encode(key) + value_bytes


def _batch_of(agent_id: str, raw_results: list[bytes]) -> bytes:
    head = encode({"schema_version": 1, "agent_id": agent_id, "batch_id": "b-wire"})
    array = b"\xdc" + len(raw_results).to_bytes(2, "big") + b"".join(raw_results)
    return bytes([head[0] + 1]) + head[1:] + encode("results") + array


WIRE_BREAKS = {
    "extension type in an unknown field": encode({"a": 1})[:-1] + b"\xd4\x05\x00",
    "timestamp extension in an unknown field": b"\xd6\xff\x00\x00\x00\x01",
    "extension type deep in an unknown field": b"\x91\x91\x91\xc7\x01\x07x",
    "a map with a key twice": _map((encode("k"), encode(1)), (encode("k"), encode(2))),
    "40-deep nesting": b"\x91" * 40 + b"\xc0",
    "1000-deep nesting": b"\x91" * 1000 + b"\xc0",
    "100000-deep nesting": b"\x91" * 100_000 + b"\xc0",
}


async def test_wire_rules_refuse_the_record_not_the_batch(client: Client) -> None:
    """Issue 9, finding 6: each break of docs/wire-format.md inside a result refuses that
    result (named in rejected) while the good results beside it are stored."""
    agent_id, token = await enroll(client)
    names = sorted(WIRE_BREAKS)
    raws = [encode(record(0))]
    for name in names:
        raws += [_with_field(record(1 + len(raws)), "future", WIRE_BREAKS[name])]
    raws.append(encode(record(99)))
    resp = await post_batch(client, token, None, raw=_batch_of(agent_id, raws))
    assert resp.status == 200, await resp.text()
    answer = await resp.json()
    assert answer["accepted"] == 2
    assert [r["index"] for r in answer["rejected"]] == list(range(1, 1 + len(names)))
    assert await stored(client) == 2


async def test_rules_hold_inside_known_maps_too(client: Client) -> None:
    """An unknown field inside ``dns`` or ``control.http`` is held to the same rules."""
    agent_id, token = await enroll(client)
    deep = [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[None]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]
    bad_dns = record(0, dns={"query": "x", "future": deep})
    bad_control = record(1, control={"http": {"status": 200, "future": {"a": deep}}})
    fine = record(2, dns={"query": "x", "future": [[1, 2], {"a": [3]}]})
    resp = await post_batch(client, token, batch(agent_id, [bad_dns, bad_control, fine]))
    answer = await resp.json()
    assert answer["accepted"] == 1
    assert [r["index"] for r in answer["rejected"]] == [0, 1]
    assert all("nested deeper" in r["error"] for r in answer["rejected"])


async def test_a_duplicate_known_field_is_refused(client: Client) -> None:
    """A result that gives ``blocking`` twice is refused: no reader may pick one."""
    agent_id, token = await enroll(client)
    rec = record(0)
    dup = _with_field(rec, "blocking", encode("ok"))
    resp = await post_batch(client, token, None, raw=_batch_of(agent_id, [dup]))
    answer = await resp.json()
    assert answer["accepted"] == 0
    assert "appears twice" in answer["rejected"][0]["error"]


async def test_a_duplicate_envelope_key_refuses_the_batch(client: Client) -> None:
    """A batch whose envelope names ``agent_id`` twice is a 400 bad_batch."""
    agent_id, token = await enroll(client)
    body = _batch_of(agent_id, [encode(record(0))])
    body = bytes([body[0] + 1]) + body[1:] + encode("agent_id") + encode("ag-other")
    resp = await post_batch(client, token, None, raw=body)
    assert resp.status == 400
    doc = await resp.json()
    assert doc["error"] == "bad_batch" and "appears twice" in doc["detail"]
    assert await stored(client) == 0


@pytest.mark.parametrize(
    "change",
    [
        {"timings": {"dns": -1.0}},
        {"clock_age_s": -5.0},
        {"tcp": [{"address": "192.0.2.7", "port": 443, "failure": None, "t_ms": -0.5}]},
    ],
)
async def test_negative_durations_are_refused(client: Client, change: dict[str, Any]) -> None:
    """Durations are never negative: such a result is rejected, naming the field."""
    agent_id, token = await enroll(client)
    resp = await post_batch(client, token, batch(agent_id, [record(0, **change), record(1)]))
    answer = await resp.json()
    assert answer["accepted"] == 1
    assert answer["rejected"][0]["index"] == 0
    assert next(iter(change)) in answer["rejected"][0]["error"]
