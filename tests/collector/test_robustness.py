"""Robust at every edge (issue 9): uploads that stall after their headers cannot starve
honest agents and end with 408; bad input is a 4xx JSON error, never a 500."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

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
