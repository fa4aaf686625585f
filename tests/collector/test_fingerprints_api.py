"""GET /api/v1/fingerprints: the collector's set (fingerprints_path and the shipped one)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from collector.app import make_app
from collector.config import CollectorConfig
from shared.blockpages import fingerprints_from_json
from tests.collector.conftest import auth, enroll


async def test_agents_get_the_configured_set_and_a_validator(
    aiohttp_client: Any, config: CollectorConfig, tmp_path: Path
) -> None:
    """The configured file's fingerprints come first, the shipped ones after; a repeat with
    the ETag is a 304; without a token it is refused."""
    extra = tmp_path / "prints"
    extra.mkdir()
    (extra / "ours.csv").write_text(
        "name,scope,location_found,pattern_type,pattern,expected_countries\n"
        "kz_body,nat,body,regexp,zakon\\.kz/blocked/[0-9]+,KZ\n"
    )
    client = await aiohttp_client(make_app(dataclasses.replace(config, fingerprints_path=extra)))
    _, token = await enroll(client)
    resp = await client.get("/api/v1/fingerprints", headers=auth(token))
    assert resp.status == 200
    prints = fingerprints_from_json(await resp.json())
    assert prints.entries[0].name == "kz_body" and prints.entries[0].expected_countries == ("KZ",)
    assert prints.match_dns("10.10.34.34", "IR") is not None  # the shipped set too
    etag = resp.headers["ETag"]
    again = await client.get("/api/v1/fingerprints", headers={**auth(token), "If-None-Match": etag})
    assert again.status == 304
    assert (await client.get("/api/v1/fingerprints")).status == 401
