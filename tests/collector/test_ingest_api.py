"""The collector's agent API end to end: enroll, whoami, targets, ingest and its refusals."""

from __future__ import annotations

import asyncio
import gzip
import sqlite3
import zlib
from typing import Any

import msgpack
import pytest

from collector.app import make_app
from collector.auth import hash_enroll_code
from collector.state import STORE
from shared.codec import encode
from tests.collector.conftest import (
    MSGPACK,
    TEST_ASN,
    Client,
    auth,
    batch,
    enroll,
    make_code,
    post_batch,
    record,
    stored,
    with_limits,
)


async def test_enroll_whoami_targets_ingest(client: Client) -> None:
    """An enrolled agent learns its network and targets and gets a valid batch stored."""
    agent_id, token = await enroll(client)
    resp = await client.get("/api/v1/whoami", headers=auth(token))
    assert resp.status == 200
    who = await resp.json()
    assert (who["asn"], who["cc"], who["network_name"]) == (
        TEST_ASN,
        "IR",
        "TEST-AS Loopback Telecom",
    )
    resp = await client.get("/api/v1/targets", headers=auth(token))
    assert await resp.json() == [
        {"url": "https://global.example/", "category_code": "MISC"},
        {"url": "http://news.example/persian", "category_code": "NEWS"},
    ]
    results = [record(i) for i in range(3)]
    resp = await post_batch(client, token, batch(agent_id, results))
    assert resp.status == 200
    assert await resp.json() == {"accepted": 3, "duplicates": 0, "rejected": []}
    assert await stored(client) == 3


async def test_targets_follow_the_enroll_codes_country(client: Client) -> None:
    """An agent enrolled with a code for DE gets DE's targets wherever it connects from."""
    _, token = await enroll(client, cc="DE")
    resp = await client.get("/api/v1/targets", headers=auth(token))
    urls = [t["url"] for t in await resp.json()]
    assert urls == ["https://global.example/", "https://de.example/"]


async def test_msgpack_client_gets_msgpack_answer(client: Client) -> None:
    """A batch sent as msgpack without an Accept preference is answered in msgpack."""
    agent_id, token = await enroll(client)
    resp = await client.post(
        "/api/v1/batches",
        data=encode(batch(agent_id, [record()])),
        headers={**auth(token), "Content-Type": MSGPACK},
    )
    assert resp.content_type == MSGPACK
    assert msgpack.unpackb(await resp.read()) == {"accepted": 1, "duplicates": 0, "rejected": []}


async def test_retried_and_resplit_batches_store_each_measurement_once(client: Client) -> None:
    """The same batch twice, then its results re-split into new batches, store each id once."""
    agent_id, token = await enroll(client)
    results = [record(i) for i in range(6)]
    doc = batch(agent_id, results)
    first = await (await post_batch(client, token, doc)).json()
    again = await (await post_batch(client, token, doc)).json()
    assert first == {"accepted": 6, "duplicates": 0, "rejected": []}
    assert again == {"accepted": 0, "duplicates": 6, "rejected": []}
    part = await (
        await post_batch(client, token, batch(agent_id, [*results[2:], record(9)]))
    ).json()
    assert part == {"accepted": 1, "duplicates": 4, "rejected": []}
    assert await stored(client) == 7


async def test_bad_record_is_named_and_the_rest_are_kept(client: Client) -> None:
    """One record with a wrongly typed field is rejected by index and field; the others stored."""
    agent_id, token = await enroll(client)
    bad = record(1, http={"url": "https://x.example/", "status": "two hundred"})
    missing = {k: v for k, v in record(2).items() if k != "url"}
    resp = await post_batch(client, token, batch(agent_id, [record(0), bad, missing, record(3)]))
    body = await resp.json()
    assert resp.status == 200
    assert body["accepted"] == 2
    assert [r["index"] for r in body["rejected"]] == [1, 2]
    assert body["rejected"][0]["error"].startswith("http.status: ")
    assert body["rejected"][1]["error"] == "url: required field is missing"
    assert await stored(client) == 2


async def test_gzip_and_deflate_bodies_are_accepted(client: Client) -> None:
    """Compressed batches are inflated by the collector and stored."""
    agent_id, token = await enroll(client)
    resp = await post_batch(client, token, batch(agent_id, [record(0)]), gzipped=True)
    assert (await resp.json())["accepted"] == 1
    resp = await client.post(
        "/api/v1/batches",
        data=zlib.compress(encode(batch(agent_id, [record(1)]))),
        headers={**auth(token), "Content-Type": MSGPACK, "Content-Encoding": "deflate"},
    )
    assert resp.status == 200
    assert await stored(client) == 2


def _bomb() -> bytes:
    # 64 MiB of zeros: a few dozen KiB compressed, far over the 256 KiB test limit inflated.
    return gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)


BAD_BATCHES: list[tuple[str, dict[str, Any], int, str]] = [
    ("not msgpack", {"raw": b'{"json": true}'}, 400, "not_msgpack"),
    ("truncated msgpack", {"truncate": True}, 400, "not_msgpack"),
    ("empty body", {"raw": b""}, 400, "not_msgpack"),
    ("wrong schema version", {"doc": {"schema_version": 2}}, 400, "schema_version"),
    ("results not an array", {"doc": {"results": {"a": 1}}}, 400, "bad_batch"),
    ("batch id of wrong type", {"doc": {"batch_id": 7}}, 400, "bad_batch"),
    ("a batch that is a list", {"raw": encode([1, 2, 3])}, 400, "bad_batch"),
    (
        "oversized body",
        {"raw": encode({"pad": "x" * 60000, "p2": ["y" * 60000] * 5})},
        413,
        "body_too_large",
    ),
    ("gzip bomb", {"bomb": True}, 413, "body_too_large"),
    ("corrupt gzip", {"raw": b"\x1f\x8bnot gzip at all", "encoding": "gzip"}, 400, "bad_encoding"),
    ("unknown encoding", {"encoding": "br"}, 415, "unsupported_encoding"),
    ("wrong content type", {"content_type": "application/json"}, 415, "unsupported_media_type"),
    ("missing token", {"token": None}, 401, "unauthorized"),
    ("invalid token", {"token": "fwt_not-a-real-token"}, 401, "invalid_token"),
    ("revoked agent", {"revoke": True}, 403, "agent_revoked"),
    ("another agent's id", {"doc": {"agent_id": "ag-someone-else"}}, 403, "agent_mismatch"),
]


@pytest.mark.parametrize(
    ("case", "how", "status", "code"), BAD_BATCHES, ids=[c[0] for c in BAD_BATCHES]
)
async def test_bad_batches_get_a_json_4xx_and_change_nothing(
    client: Client, case: str, how: dict[str, Any], status: int, code: str
) -> None:
    """Each kind of bad upload gets its 4xx with a JSON error and leaves the store unchanged."""
    agent_id, token = await enroll(client)
    doc = batch(agent_id, [record(0), record(1)])
    doc.update(how.get("doc", {}))
    body = how.get("raw", encode(doc))
    if how.get("truncate"):
        body = body[: len(body) // 2]
    headers = {"Content-Type": how.get("content_type", MSGPACK)}
    if how.get("bomb"):
        body = _bomb()
        headers["Content-Encoding"] = "gzip"
    if "encoding" in how:
        headers["Content-Encoding"] = how["encoding"]
    sent_token = how.get("token", token)
    if sent_token is not None:
        headers.update(auth(sent_token))
    if how.get("revoke"):
        assert await client.app[STORE].revoke_agent(agent_id)
    resp = await client.post("/api/v1/batches", data=body, headers=headers)
    assert resp.status == status
    assert resp.content_type == "application/json"
    error = await resp.json()
    assert error["error"] == code
    assert isinstance(error["detail"], str) and "Traceback" not in error["detail"]
    assert await stored(client) == 0


async def test_unknown_route_and_method_get_json_errors(client: Client) -> None:
    """The router's own 404 and 405 are JSON like every other error."""
    resp = await client.get("/nope")
    assert resp.status == 404
    assert (await resp.json())["error"] == "not_found"
    resp = await client.get("/api/v1/batches")
    assert resp.status == 405
    assert (await resp.json())["error"] == "method_not_allowed"


async def test_enroll_refuses_unknown_used_and_expired_codes(client: Client) -> None:
    """A code works as many times as it allows and not after it expires; bad bodies get 400."""
    code = await make_code(client, uses=1)
    assert (await client.post("/api/v1/enroll", json={"code": code})).status == 200
    again = await client.post("/api/v1/enroll", json={"code": code})
    assert again.status == 403
    assert (await again.json())["error"] == "invalid_code"
    expired = await make_code(client, expires_at=1.0)
    assert (await client.post("/api/v1/enroll", json={"code": expired})).status == 403
    assert (await client.post("/api/v1/enroll", json={"code": "NOPE"})).status == 403
    bad = await client.post(
        "/api/v1/enroll", data=b"{", headers={"Content-Type": "application/json"}
    )
    assert bad.status == 400
    assert (await client.post("/api/v1/enroll", json={"code": 5})).status == 400
    assert (
        await client.post("/api/v1/enroll", data=b"x", headers={"Content-Type": "text/plain"})
    ).status == 415


async def test_enroll_speaks_msgpack_and_codes_are_typed_loosely(client: Client) -> None:
    """A msgpack enroll gets a msgpack answer, and a code typed in lower case still works."""
    code = "ABCDE-FGHJK"
    await client.app[STORE].add_enroll_code(hash_enroll_code(code), None, 1, None)
    resp = await client.post(
        "/api/v1/enroll", data=encode({"code": "abcde fghjk"}), headers={"Content-Type": MSGPACK}
    )
    assert resp.status == 200
    answer = msgpack.unpackb(await resp.read())
    assert set(answer) == {"agent_id", "token"}


async def test_metrics_count_ingest(client: Client) -> None:
    """/metrics reports stored, duplicate and rejected results and request latency."""
    agent_id, token = await enroll(client)
    doc = batch(agent_id, [record(0), record(1, blocking="bogus")])
    await post_batch(client, token, doc)
    await post_batch(client, token, doc)
    await post_batch(client, token, None, raw=b"\xc1")
    text = await (await client.get("/metrics")).text()
    assert "filterwatch_ingested_results_total 1.0" in text
    assert "filterwatch_duplicate_results_total 1.0" in text
    assert 'filterwatch_rejected_total{reason="bad_result"} 2.0' in text
    assert 'filterwatch_rejected_total{reason="not_msgpack"} 1.0' in text
    assert 'filterwatch_request_seconds_count{method="POST",route="/api/v1/batches"} 3.0' in text
    assert "filterwatch_requests_in_flight" in text
    assert (await (await client.get("/healthz")).json()) == {"status": "ok"}


async def test_ingest_beyond_the_in_flight_bound_gets_503(aiohttp_client: Any, config: Any) -> None:
    """With the in-flight bound reached (a batch waiting for the database), another agent's
    batch is shed with 503 and Retry-After; the waiting one is stored afterwards."""
    from collector.api.ingest import INGEST_GATE

    client = await aiohttp_client(make_app(with_limits(config, max_inflight_batches=1)))
    first_id, first_token = await enroll(client)
    second_id, second_token = await enroll(client)
    # Another process holds SQLite's write lock: the first batch waits inside the gate.
    blocker = sqlite3.connect(config.database.sqlite_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        first = asyncio.create_task(post_batch(client, first_token, batch(first_id, [record(0)])))
        while client.app[INGEST_GATE].busy == 0:  # noqa: ASYNC110 - wait for the state
            await asyncio.sleep(0.01)
        shed = await post_batch(client, second_token, batch(second_id, [record(1)]))
        assert shed.status == 503
        assert shed.headers["Retry-After"] == "2"
        assert (await shed.json())["error"] == "overloaded"
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    resp = await first
    assert (await resp.json())["accepted"] == 1


async def test_one_agent_cannot_hold_more_than_its_uploads(
    aiohttp_client: Any, config: Any
) -> None:
    """Two uploads of one agent still reading their bodies: a third gets 429, and another
    agent's batch goes through."""
    from collector.api.ingest import UPLOADS

    client = await aiohttp_client(make_app(config))
    agent_id, token = await enroll(client)
    other_id, other_token = await enroll(client)
    release = asyncio.Event()
    body = encode(batch(agent_id, [record(0)]))

    async def slow_body() -> Any:
        yield body[:10]
        await release.wait()
        yield body[10:]

    headers = {**auth(token), "Content-Type": MSGPACK, "Accept": "application/json"}
    held = [
        asyncio.create_task(client.post("/api/v1/batches", data=slow_body(), headers=headers))
        for _ in range(2)
    ]
    while client.app[UPLOADS].total < 2:  # noqa: ASYNC110 - wait for the state
        await asyncio.sleep(0.01)
    third = await post_batch(client, token, batch(agent_id, [record(1)]))
    assert third.status == 429
    assert (await third.json())["error"] == "too_many_uploads"
    assert "Retry-After" in third.headers
    other = await post_batch(client, other_token, batch(other_id, [record(2)]))
    assert (await other.json())["accepted"] == 1
    release.set()
    answers = [await (await task).json() for task in held]
    assert sorted(a["accepted"] + a["duplicates"] for a in answers) == [1, 1]


async def test_body_cut_short_is_a_400_not_a_failure(client: Client) -> None:
    """A client that promises more body than it sends and hangs up gets no 500 logged."""
    from structlog.testing import capture_logs

    from collector.api.ingest import UPLOADS

    agent_id, token = await enroll(client)
    body = encode(batch(agent_id, [record(0)]))
    assert client.server.port is not None
    with capture_logs() as events:
        _, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
        writer.write(
            b"POST /api/v1/batches HTTP/1.1\r\nHost: t\r\nContent-Type: "
            + MSGPACK.encode()
            + b"\r\nAuthorization: Bearer "
            + token.encode()
            + b"\r\nContent-Length: "
            + str(len(body) + 1000).encode()
            + b"\r\n\r\n"
            + body
        )
        await writer.drain()
        while client.app[UPLOADS].total == 0:  # noqa: ASYNC110 - wait for the handler
            await asyncio.sleep(0.01)
        writer.close()
        await writer.wait_closed()
        while client.app[UPLOADS].total:  # noqa: ASYNC110 - and for it to finish
            await asyncio.sleep(0.01)
    statuses = [e.get("status") for e in events if e["event"] == "http_request"]
    assert len(statuses) == 1 and statuses[0] in (400, 499)  # refused, or cut off with it
    assert not [e for e in events if e["event"] == "request_failed"]
    assert await stored(client) == 0
