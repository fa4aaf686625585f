"""Analyst tokens guard analyst endpoints; agent tokens do not open them."""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web

from collector.app import make_app
from collector.auth import hash_secret, matches_any, new_analyst_token
from collector.config import CollectorConfig
from collector.pseudonyms import agent_pseudonym
from collector.state import STORE, require_analyst
from tests.collector.conftest import auth, enroll


async def _guarded(request: web.Request) -> web.Response:
    await require_analyst(request)
    return web.json_response({"ok": True})


async def test_require_analyst(aiohttp_client: Any, config: CollectorConfig) -> None:
    """Configured and generated analyst tokens pass; none or unknown is 401, an agent's 403."""
    app = make_app(dataclasses.replace(config, analyst_tokens=("from-config-token",)))
    app.router.add_get("/guarded", _guarded)
    client = await aiohttp_client(app)
    generated = new_analyst_token()
    await client.app[STORE].add_analyst_token(hash_secret(generated))
    _, agent_token = await enroll(client)
    cases = [
        ({}, 401),
        (auth("nope"), 401),
        ({"Authorization": "Basic abc"}, 401),
        (auth(agent_token), 403),
        (auth("from-config-token"), 200),
        (auth(generated), 200),
    ]
    for headers, status in cases:
        resp = await client.get("/guarded", headers=headers)
        assert resp.status == status, headers
        if status != 200:
            assert "error" in await resp.json()


def test_constant_time_match_and_pseudonyms() -> None:
    """Token matching is exact; pseudonyms are stable, keyed and 16 hex characters."""
    assert matches_any("abc", ["x", "abc"]) and not matches_any("ab", ["abc"])
    p = agent_pseudonym(b"k" * 32, "ag-1")
    assert p == agent_pseudonym(b"k" * 32, "ag-1") and len(p) == 16
    assert p != agent_pseudonym(b"j" * 32, "ag-1") and "ag-1" not in p
