"""POST /api/v1/control: a real collector measures loopback sites, and refuses to be a proxy."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from agent.collector_api import CollectorClient
from agent.control_client import request_control
from collector.app import make_app
from collector.config import CollectorConfig, ControlConfig
from shared.codec import decode, encode
from tests.collector.conftest import MSGPACK, auth, enroll
from tests.servers import DnsResponder, HttpSite, Page, html_page, serve_http, start_dns


@pytest.fixture
async def dns_server() -> AsyncIterator[DnsResponder]:
    server = await start_dns()
    yield server
    server.close()


def control_config(
    config: CollectorConfig, dns: DnsResponder, *allow: str, ports: tuple[int, ...] = ()
) -> CollectorConfig:
    control = ControlConfig(
        allow_ranges=allow, resolver=dns.address, timeout_s=3.0, allow_ports=ports
    )
    return dataclasses.replace(config, control=control)


async def post_control(
    client: TestClient[Any, Any], token: str | None, body: Any
) -> aiohttp.ClientResponse:
    headers = {"Content-Type": MSGPACK, "Accept": MSGPACK}
    if token is not None:
        headers.update(auth(token))
    return await client.post("/api/v1/control", data=encode(body), headers=headers)


async def control_client(
    aiohttp_client: Any,
    config: CollectorConfig,
    dns: DnsResponder,
    *allow: str,
    ports: tuple[int, ...] = (),
) -> tuple[TestClient[Any, Any], str]:
    """A collector whose control allows ``allow`` (and ``ports``), and an agent's token."""
    client = await aiohttp_client(make_app(control_config(config, dns, *allow, ports=ports)))
    _, token = await enroll(client)
    return client, token


async def refusal(client: TestClient[Any, Any], token: str, url: str) -> str:
    """The control refuses to measure ``url`` (400 destination_not_allowed): the detail."""
    resp = await post_control(client, token, {"url": url})
    assert resp.status == 400
    doc = await resp.json()
    assert doc["error"] == "destination_not_allowed"
    return str(doc["detail"])


def site() -> HttpSite:
    s = HttpSite()
    s.set("*", Page(body=html_page("Control Reference Page")))
    return s


async def test_control_measures_an_allowed_site(
    aiohttp_client: Any, config: CollectorConfig, dns_server: DnsResponder
) -> None:
    """Within an allowed range the control answers the DNS, TCP and HTTP facts in msgpack."""
    dns_server.answer("lab.test", "127.0.0.1")
    async with serve_http(site().app) as port:
        client, token = await control_client(
            aiohttp_client, config, dns_server, "127.0.0.0/8", ports=(port,)
        )
        resp = await post_control(client, token, {"url": f"http://lab.test:{port}/"})
        assert resp.status == 200, await resp.text()
        facts = decode(await resp.read())
    assert facts["dns"]["answers"] == ["127.0.0.1"]
    assert facts["tcp"][0]["failure"] is None
    assert facts["http"]["status"] == 200
    assert facts["http"]["title"] == "Control Reference Page"
    assert facts["failure"] is None


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",  # a loopback literal
        "sneaky.test",  # a name whose DNS answer is a loopback address
    ],
)
async def test_control_refuses_loopback(
    aiohttp_client: Any, config: CollectorConfig, dns_server: DnsResponder, host: str
) -> None:
    """A URL naming a loopback address, or a name that resolves to one, is refused with 400
    and never fetched."""
    dns_server.answer("sneaky.test", "127.0.0.1")
    target = site()
    async with serve_http(target.app) as port:
        client, token = await control_client(aiohttp_client, config, dns_server, ports=(port,))
        await refusal(client, token, f"http://{host}:{port}/")
    assert target.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "http://10.1.2.3/",
        "http://192.168.1.1:8080/admin",
        "https://[fe80::1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:10.0.0.1]/",
        "http://224.0.0.1/",
    ],
)
async def test_control_refuses_private_and_reserved_literals(
    aiohttp_client: Any, config: CollectorConfig, dns_server: DnsResponder, url: str
) -> None:
    """Private, link-local, mapped and multicast destinations are refused before any packet."""
    client, token = await control_client(aiohttp_client, config, dns_server)
    await refusal(client, token, url)


async def test_control_refuses_a_redirect_into_a_private_address(
    aiohttp_client: Any, config: CollectorConfig, dns_server: DnsResponder
) -> None:
    """A public-looking hop that redirects to a non-allowed address is refused, and the
    redirect is not followed."""
    dns_server.answer("lab.test", "127.0.0.1")
    # 127.0.0.1 is allowed (the lab), 127.0.0.2 is not: the redirect points there.
    target = site()
    async with serve_http(target.app) as port:
        client, token = await control_client(
            aiohttp_client, config, dns_server, "127.0.0.1/32", ports=(port,)
        )
        target.set("/", Page(status=302, headers={"Location": f"http://127.0.0.2:{port}/x"}))
        await refusal(client, token, f"http://lab.test:{port}/")
    assert target.requests == [f"lab.test:{port}/"]


async def test_control_needs_an_agent_token(
    aiohttp_client: Any, config: CollectorConfig, dns_server: DnsResponder
) -> None:
    """Without an agent token the control answers 401."""
    client = await aiohttp_client(make_app(control_config(config, dns_server)))
    resp = await post_control(client, None, {"url": "http://lab.test/"})
    assert resp.status == 401


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"url": "ftp://lab.test/file"}, "bad_url"),
        ({"url": "http:///nohost"}, "bad_url"),
        ({"url": 42}, "bad_url"),
        ({"url": "http://lab.test/" + "a" * 3000}, "bad_url"),
        ({}, "bad_url"),
    ],
)
async def test_control_refuses_bad_urls(
    aiohttp_client: Any,
    config: CollectorConfig,
    dns_server: DnsResponder,
    body: dict[str, Any],
    code: str,
) -> None:
    """Anything but an http(s) URL with a host is a 400 naming the problem."""
    client, token = await control_client(aiohttp_client, config, dns_server)
    resp = await post_control(client, token, body)
    assert resp.status == 400
    assert (await resp.json())["error"] == code


async def test_control_refuses_json_it_cannot_read(
    aiohttp_client: Any, config: CollectorConfig, dns_server: DnsResponder
) -> None:
    """A body that is not msgpack or JSON is 400, a wrong type 415; never a 500."""
    client, token = await control_client(aiohttp_client, config, dns_server)
    resp = await client.post(
        "/api/v1/control",
        data=b"\xc1\xc1",
        headers={**auth(token), "Content-Type": MSGPACK},
    )
    assert resp.status == 400
    resp = await client.post(
        "/api/v1/control", data=b"url=x", headers={**auth(token), "Content-Type": "text/plain"}
    )
    assert resp.status == 415


async def test_agent_control_client_gets_validated_facts(
    aiohttp_client: Any, config: CollectorConfig, dns_server: DnsResponder
) -> None:
    """The agent's request_control returns the control's facts from a running collector,
    and names the error code when the collector refuses."""
    dns_server.answer("lab.test", "127.0.0.1")
    async with serve_http(site().app) as port:
        client, token = await control_client(
            aiohttp_client, config, dns_server, "127.0.0.1/32", ports=(port,)
        )
        collector_url = str(client.make_url("")).rstrip("/")
        async with await CollectorClient.open(collector_url, token) as collector:
            answer = await request_control(collector, f"http://lab.test:{port}/", 5.0)
            refused = await request_control(collector, f"http://127.0.0.9:{port}/", 5.0)
    facts = answer.facts
    assert facts is not None and facts["http"] is not None
    assert facts["http"]["status"] == 200
    assert refused.facts is None and refused.problem == "destination_not_allowed"


# Finding 5 of issue 9: special-purpose forms that Python's is_global calls global, and the
# other forms of the IANA registries. None of these is ever sent a packet: the literal is
# refused before the control starts.
SPECIAL_FORMS = [
    "http://[2002:7f00:1::]/",  # 6to4 form of 127.0.0.1
    "http://[2002:a9fe:a9fe::]/",  # 6to4 form of the metadata address
    "http://[2002:c0a8:101::1]/",  # 6to4 form of 192.168.1.1
    "http://[2002:808:808::1]/",  # 6to4 of a public address: still 6to4
    "http://192.0.0.8/",  # IPv4 dummy address (IETF protocol assignments)
    "http://192.0.0.170/",  # NAT64 discovery
    "http://192.88.99.1/",  # deprecated 6to4 relay anycast
    "http://198.18.0.1/",  # benchmarking
    "http://198.19.255.254/",
    "http://192.0.2.10/",  # documentation
    "http://198.51.100.7/",
    "http://203.0.113.5/",
    "http://100.64.0.1/",  # shared address space
    "http://0.0.0.0/",
    "http://255.255.255.255/",
    "http://240.0.0.1/",
    "http://239.255.255.250/",  # multicast (SSDP)
    "http://192.31.196.1/",  # AS112
    "http://[64:ff9b::7f00:1]/",  # NAT64 form of 127.0.0.1
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 form of the metadata address
    "http://[64:ff9b:1::a00:1]/",  # local-use translation prefix
    "http://[::127.0.0.1]/",  # IPv4-compatible
    "http://[::ffff:169.254.169.254]/",  # IPv4-mapped
    "http://[::ffff:7f00:1]/",
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",  # Teredo, client 127.0.0.1
    "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",  # Teredo, client 192.0.2.45
    "http://[2001:db8::1]/",  # documentation
    "http://[3fff::1]/",
    "http://[2001:2::1]/",  # benchmarking
    "http://[100::1]/",  # discard only
    "http://[::1]/",
    "http://[::]/",
    "http://[fc00::1]/",
    "http://[fd00:ec2::254]/",  # the metadata service's IPv6 address
    "http://[fec0::1]/",
    "http://[ff02::1]/",
    "http://[4000::1]/",  # unassigned
]


@pytest.mark.parametrize("url", SPECIAL_FORMS)
async def test_control_refuses_every_special_purpose_form(
    aiohttp_client: Any, config: CollectorConfig, dns_server: DnsResponder, url: str
) -> None:
    """Every special-purpose form, embedded IPv4 ones included, is a 400 saying why."""
    client, token = await control_client(aiohttp_client, config, dns_server)
    # The detail says "<address> is in <range> (<name>)" or similar.
    assert " is " in await refusal(client, token, url)


@pytest.mark.parametrize(
    "answer", ["192.0.0.8", "192.88.99.1", "198.18.0.1", "100.64.0.1", "203.0.113.9"]
)
async def test_control_refuses_a_name_resolving_to_a_special_address(
    aiohttp_client: Any, config: CollectorConfig, dns_server: DnsResponder, answer: str
) -> None:
    """A name whose DNS answer is special-purpose is refused, naming the address."""
    dns_server.answer("special.test", answer)
    client, token = await control_client(aiohttp_client, config, dns_server)
    assert answer in await refusal(client, token, "http://special.test/")


async def test_control_refuses_a_name_with_any_refused_address(
    aiohttp_client: Any, config: CollectorConfig, dns_server: DnsResponder
) -> None:
    """One refused answer among allowed ones refuses the name: no address of it is visited."""
    dns_server.answer("mixed.test", "127.0.0.1", "127.0.0.2")
    target = site()
    async with serve_http(target.app) as port:
        client, token = await control_client(
            aiohttp_client, config, dns_server, "127.0.0.1/32", ports=(port,)
        )
        assert "127.0.0.2" in await refusal(client, token, f"http://mixed.test:{port}/")
    assert target.requests == []


@pytest.mark.parametrize("port", [22, 6379, 8080])
async def test_control_refuses_a_non_web_port(
    aiohttp_client: Any, config: CollectorConfig, dns_server: DnsResponder, port: int
) -> None:
    """An allowed address on a port other than 80 and 443 is refused unless listed."""
    dns_server.answer("lab.test", "127.0.0.1")
    client, token = await control_client(aiohttp_client, config, dns_server, "127.0.0.0/8")
    for url in (f"http://lab.test:{port}/", f"http://127.0.0.1:{port}/"):
        assert f"port {port}" in await refusal(client, token, url)
    assert dns_server.queries == []


async def test_control_refuses_a_redirect_to_a_non_web_port(
    aiohttp_client: Any, config: CollectorConfig, dns_server: DnsResponder
) -> None:
    """A redirect to a port that is not allowed is not followed: the control is no scanner."""
    dns_server.answer("lab.test", "127.0.0.1")
    target = site()
    async with serve_http(target.app) as port:
        client, token = await control_client(
            aiohttp_client, config, dns_server, "127.0.0.0/8", ports=(port,)
        )
        target.set("/", Page(status=302, headers={"Location": "http://127.0.0.1:6379/"}))
        assert "port 6379" in await refusal(client, token, f"http://lab.test:{port}/")
    assert target.requests == [f"lab.test:{port}/"]


async def test_control_without_public_destinations_refuses_them(
    aiohttp_client: Any, config: CollectorConfig, dns_server: DnsResponder
) -> None:
    """control.allow_public false: a public address is refused before any packet (a closed
    lab, or a fuzzed collector that must never reach out)."""
    control = ControlConfig(resolver=dns_server.address, timeout_s=3.0, allow_public=False)
    client = await aiohttp_client(make_app(dataclasses.replace(config, control=control)))
    _, token = await enroll(client)
    assert "allow_public" in await refusal(client, token, "http://1.1.1.1/")
