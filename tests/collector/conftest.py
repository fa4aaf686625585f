"""A real collector on 127.0.0.1 port 0 with a real SQLite file, netdb and target list."""

from __future__ import annotations

import dataclasses
import gzip
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from collector.app import make_app
from collector.auth import hash_enroll_code
from collector.config import CollectorConfig, DatabaseConfig, LimitsConfig
from collector.state import STORE
from shared.codec import encode

MSGPACK = "application/vnd.msgpack"
TEST_ASN = 64500


def write_netdb(path: Path) -> Path:
    """An IP-to-ASN table that puts all of 127.0.0.0/8 in a test AS in Iran."""
    rows = [
        "1.0.0.0\t1.0.0.255\t13335\tUS\tCLOUDFLARENET",
        f"127.0.0.0\t127.255.255.255\t{TEST_ASN}\tIR\tTEST-AS Loopback Telecom",
        "2001:db8::\t2001:db8::ffff\t0\tNone\tNot routed",
    ]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture
def config(tmp_path: Path) -> CollectorConfig:
    targets = tmp_path / "targets.yaml"
    targets.write_text(
        "global:\n  - https://global.example/\n"
        "IR:\n  - {url: 'http://news.example/persian', category_code: NEWS}\n"
        "DE:\n  - https://de.example/\n"
    )
    return CollectorConfig(
        database=DatabaseConfig(sqlite_path=tmp_path / "collector.sqlite3"),
        netdb_path=write_netdb(tmp_path / "ip2asn.tsv"),
        targets_path=targets,
        limits=LimitsConfig(max_body_bytes=256 * 1024, max_inflight_batches=4),
    )


Client = TestClient[Any, Any]


@pytest.fixture
async def client(aiohttp_client: Any, config: CollectorConfig) -> Client:
    started: Client = await aiohttp_client(make_app(config))
    return started


def with_limits(config: CollectorConfig, **limits: int) -> CollectorConfig:
    return dataclasses.replace(config, limits=dataclasses.replace(config.limits, **limits))


async def make_code(
    client: Client, cc: str | None = None, uses: int = 1, expires_at: float | None = None
) -> str:
    code = "TESTC-" + uuid.uuid4().hex[:10].upper()
    await client.app[STORE].add_enroll_code(hash_enroll_code(code), cc, uses, expires_at)
    return code


async def enroll(client: Client, cc: str | None = None) -> tuple[str, str]:
    """Enroll one agent; return (agent_id, token)."""
    code = await make_code(client, cc)
    resp = await client.post("/api/v1/enroll", json={"code": code})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    return body["agent_id"], body["token"]


def record(n: int = 0, **changes: Any) -> dict[str, Any]:
    """A valid measurement with every step's facts (no addresses of the test's peer)."""
    rec: dict[str, Any] = {
        "id": f"m-{n:06d}-{uuid.uuid4().hex[:8]}",
        "measured_at": time.time() - 60,
        "url": "https://blocked.example/",
        "domain": "blocked.example",
        "blocking": "tls",
        "accessible": False,
        "network": {"asn": TEST_ASN, "cc": "IR", "network_name": "TEST-AS"},
        "failure": "connection_reset",
        "dns": {"resolver": "system", "query": "blocked.example", "answers": ["192.0.2.7"]},
        "tcp": [{"address": "192.0.2.7", "port": 443, "failure": None, "t_ms": 12.5}],
        "tls": {"address": "192.0.2.7", "sni": "blocked.example", "failure": "connection_reset"},
        "http": {"url": "https://blocked.example/", "status": None, "failure": "connection_reset"},
        "control": {"http": {"url": "https://blocked.example/", "status": 200, "failure": None}},
        "timings": {"dns": 3.0, "tls": 40.0},
        "agent_version": "test",
    }
    rec.update(changes)
    return rec


def batch(agent_id: str, results: list[Any], **changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema_version": 1,
        "agent_id": agent_id,
        "batch_id": uuid.uuid4().hex,
        "results": results,
    }
    doc.update(changes)
    return doc


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def post_batch(
    client: Client, token: str, doc: Any, *, raw: bytes | None = None, gzipped: bool = False
) -> Any:
    body = raw if raw is not None else encode(doc)
    headers = {**auth(token), "Content-Type": MSGPACK, "Accept": "application/json"}
    if gzipped:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    return await client.post("/api/v1/batches", data=body, headers=headers)


async def stored(client: Client) -> int:
    count: int = await client.app[STORE].count_measurements()
    return count


AsyncFn = Callable[..., Awaitable[Any]]
