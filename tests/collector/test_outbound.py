"""collector.outbound: the one destination check for everything the collector fetches on
someone's behalf. Address tables are checked as data (no packet is sent for them); the
resolver and the session are checked against a real DNS responder and a real server on
127.0.0.1."""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import AsyncIterator

import aiohttp
import dns.asyncquery
import dns.message
import dns.rdatatype
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from collector.outbound import (
    ANY_PORT,
    IPV4_SPECIAL,
    IPV6_SPECIAL,
    WEB_PORTS,
    DestinationRefused,
    check_address,
    check_port,
    checked_session,
    resolve_checked,
)
from tests.servers import DnsResponder, serve_http, start_dns

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


@pytest.fixture
async def dns_server() -> AsyncIterator[DnsResponder]:
    server = await start_dns()
    yield server
    server.close()


class LoopbackDnsResolver(AbstractResolver):
    """An aiohttp resolver that asks the test's DNS responder over real UDP (A records)."""

    def __init__(self, server: DnsResponder) -> None:
        self.server = server

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        query = dns.message.make_query(host, dns.rdatatype.A)
        reply = await dns.asyncquery.udp(query, "127.0.0.1", port=self.server.port, timeout=2)
        return [
            ResolveResult(
                hostname=host, host=r.address, port=port, family=socket.AF_INET, proto=0, flags=0
            )
            for rrset in reply.answer
            for r in rrset
        ]

    async def close(self) -> None:
        return None


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("192.0.0.8", "192.0.0.0/24 (IETF protocol assignments)"),
        ("192.88.99.1", "192.88.99.0/24"),
        ("198.18.0.1", "198.18.0.0/15 (benchmarking)"),
        ("169.254.169.254", "169.254.0.0/16"),
        ("255.255.255.255", "limited broadcast"),
        ("2002:7f00:1::", "6to4 form of 127.0.0.1"),
        ("2002:a9fe:a9fe::", "6to4 form of 169.254.169.254"),
        ("64:ff9b::7f00:1", "NAT64 form of 127.0.0.1"),
        ("64:ff9b:1::1", "64:ff9b:1::/48"),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo form of 127.0.0.1"),
        ("::ffff:10.0.0.1", "10.0.0.0/8 (private use)"),
        ("::a00:1", "IPv4-compatible form of 10.0.0.1"),
        ("2001:2::1", "2001:2::/48 (benchmarking)"),
        ("4000::1", "outside 2000::/3"),
    ],
)
def test_check_address_names_the_address_and_why(address: str, reason: str) -> None:
    """A refusal names the address and the registry range (or embedded address) behind it."""
    with pytest.raises(DestinationRefused) as refused:
        check_address(ipaddress.ip_address(address), ())
    assert str(refused.value).startswith(address.split("::ffff:")[-1])
    assert reason in str(refused.value)


@pytest.mark.parametrize("row", IPV4_SPECIAL + IPV6_SPECIAL, ids=lambda r: str(r.network))
def test_every_registry_range_is_refused_at_both_ends(row: object) -> None:
    """The first and the last address of every table row are refused."""
    network = row.network  # type: ignore[attr-defined]
    for ip in (network[0], network[-1]):
        with pytest.raises(DestinationRefused):
            check_address(ip, ())


@pytest.mark.parametrize(
    "address", ["1.1.1.1", "9.9.9.9", "2606:4700::1111", "64:ff9b::101:101", "::ffff:1.1.1.1"]
)
def test_public_addresses_pass(address: str) -> None:
    """Public unicast addresses, and the NAT64 and mapped forms of them, are allowed."""
    check_address(ipaddress.ip_address(address), ())


def test_allow_ranges_let_configured_private_ranges_through() -> None:
    """An address inside allow_ranges is allowed; one next to it is not."""
    check_address(ipaddress.ip_address("127.0.0.1"), LOOPBACK)
    check_address(ipaddress.ip_address("::ffff:127.0.0.1"), LOOPBACK)
    with pytest.raises(DestinationRefused):
        check_address(ipaddress.ip_address("10.0.0.1"), LOOPBACK)


def test_check_port_allows_web_ports_and_listed_ones() -> None:
    """80 and 443 always; others only when listed; 0 and 65536 never."""
    for port in WEB_PORTS:
        check_port(port, ())
    check_port(8443, (8443,))
    for port, allowed in ((22, ()), (6379, (8443,)), (0, ANY_PORT), (65536, ANY_PORT)):
        with pytest.raises(DestinationRefused, match=f"port {port}"):
            check_port(port, allowed)


async def test_resolve_checked_refuses_a_name_with_any_refused_answer(
    dns_server: DnsResponder,
) -> None:
    """One special answer among public ones refuses the whole name, naming the answer."""
    dns_server.answer("mixed.test", "1.1.1.1", "192.0.0.8")
    with pytest.raises(DestinationRefused) as refused:
        await resolve_checked("mixed.test", 443, resolver=LoopbackDnsResolver(dns_server))
    assert "mixed.test resolves to 192.0.0.8" in str(refused.value)


async def test_resolve_checked_returns_the_checked_addresses(dns_server: DnsResponder) -> None:
    """A name with allowed answers gives exactly those addresses to connect to."""
    dns_server.answer("ok.test", "1.1.1.1", "9.9.9.9")
    addresses = await resolve_checked("ok.test", 443, resolver=LoopbackDnsResolver(dns_server))
    assert sorted(addresses) == [ipaddress.ip_address("1.1.1.1"), ipaddress.ip_address("9.9.9.9")]


async def test_resolve_checked_refuses_the_port_before_resolving(
    dns_server: DnsResponder,
) -> None:
    """A refused port is refused without a DNS query."""
    with pytest.raises(DestinationRefused, match="port 22"):
        await resolve_checked(
            "ok.test", 22, allow_ports=(), resolver=LoopbackDnsResolver(dns_server)
        )
    assert dns_server.queries == []


async def test_resolve_checked_with_the_system_resolver() -> None:
    """localhost (from the hosts file) is refused by default and allowed when configured."""
    with pytest.raises(DestinationRefused, match="localhost resolves to"):
        await resolve_checked("localhost", 80)
    allowed = (*LOOPBACK, ipaddress.ip_network("::1/128"))
    addresses = await resolve_checked("localhost", 80, allow_ranges=allowed)
    assert ipaddress.ip_address("127.0.0.1") in addresses


def receiver() -> tuple[web.Application, list[str]]:
    seen: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hook)
    return app, seen


async def test_checked_session_refuses_an_ip_literal_before_connecting() -> None:
    """aiohttp skips the resolver for literals; the socket factory refuses them anyway."""
    app, seen = receiver()
    async with serve_http(app) as port, checked_session() as session:
        with pytest.raises(DestinationRefused, match=re.escape("127.0.0.1 is in 127.0.0.0/8")):
            await session.post(f"http://127.0.0.1:{port}/hook", data=b"{}")
        with pytest.raises(DestinationRefused, match="localhost resolves to"):
            await session.post(f"http://localhost:{port}/hook", data=b"{}")
    assert seen == []


async def test_checked_session_reaches_allowed_destinations_only(
    dns_server: DnsResponder,
) -> None:
    """With the range allowed the POST arrives; a disallowed port is still refused."""
    dns_server.answer("hooks.test", "127.0.0.1")
    app, seen = receiver()
    async with serve_http(app) as port:
        async with checked_session(
            allow_ranges=LOOPBACK, resolver=LoopbackDnsResolver(dns_server)
        ) as session:
            for url in (f"http://127.0.0.1:{port}/a", f"http://hooks.test:{port}/b"):
                async with session.post(url, data=b"{}") as resp:
                    assert resp.status == 200
        async with checked_session(allow_ranges=LOOPBACK, allow_ports=WEB_PORTS) as session:
            with pytest.raises(DestinationRefused, match=f"port {port}"):
                await session.post(f"http://127.0.0.1:{port}/c", data=b"{}")
    assert seen == ["/a", "/b"]


async def test_checked_session_ignores_proxies_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A proxy in the environment would make the connection unchecked: it is not used,
    although the proxy itself is in an allowed range."""
    app, seen = receiver()
    async with serve_http(app) as proxy_port:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy_port}")
        async with checked_session(allow_ranges=LOOPBACK, allow_ports=ANY_PORT) as session:
            with pytest.raises((DestinationRefused, aiohttp.ClientError, OSError)):
                await session.post("http://192.0.0.8/hook", data=b"{}")
    assert seen == []
