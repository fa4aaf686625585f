"""Behind a load balancer: X-Forwarded-For names the caller only when the peer is one of
``listen.trusted_proxies``; anyone else's header is ignored."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from collector.app import make_app
from collector.config import CollectorConfig
from tests.collector.conftest import TEST_ASN, enroll


def _behind(config: CollectorConfig, *proxies: str) -> CollectorConfig:
    return dataclasses.replace(
        config, listen=dataclasses.replace(config.listen, trusted_proxies=proxies)
    )


async def _whoami(client: Any, token: str, forwarded: str) -> dict[str, Any]:
    resp = await client.get(
        "/api/v1/whoami",
        headers={"Authorization": f"Bearer {token}", "X-Forwarded-For": forwarded},
    )
    assert resp.status == 200
    body: dict[str, Any] = await resp.json()
    return body


async def test_trusted_proxy_forwards_the_callers_network(
    aiohttp_client: Any, config: CollectorConfig
) -> None:
    """From a trusted proxy, the rightmost untrusted X-Forwarded-For address is looked up."""
    client = await aiohttp_client(make_app(_behind(config, "127.0.0.0/8")))
    _, token = await enroll(client)
    # 1.0.0.7 is CLOUDFLARENET in the test table; the spoofed first hop is not believed.
    body = await _whoami(client, token, "127.1.2.3, 1.0.0.7")
    assert body["asn"] == 13335 and body["cc"] == "US"


@pytest.mark.parametrize(
    "proxies",
    [
        (),  # no trusted_proxies at all
        ("10.0.0.0/8",),  # trusted proxies elsewhere: the peer (loopback) is not one of them
    ],
    ids=["none-trusted", "trusted-elsewhere"],
)
async def test_untrusted_peer_cannot_claim_another_network(
    aiohttp_client: Any, config: CollectorConfig, proxies: tuple[str, ...]
) -> None:
    """From a peer outside trusted_proxies the header changes nothing: the peer's own
    network counts."""
    client = await aiohttp_client(make_app(_behind(config, *proxies)))
    _, token = await enroll(client)
    body = await _whoami(client, token, "1.0.0.7")
    assert body["asn"] == TEST_ASN
