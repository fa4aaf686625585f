"""The web measurement against loopback servers that behave like sites and like censors.

Each test measures a control first, from an uncensored set-up (a clean DNS responder, or
the same server with its censoring behaviour off), then the agent's view, and asserts the
verdict and the failure string.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import dns.rcode
import pytest

from shared.blockpages import Fingerprints, default_fingerprints
from shared.probes.web import ProbeOptions, measure, measure_facts
from shared.schema import Blocking, ControlFacts, Measurement, NetworkFacts
from tests.servers import (
    DnsResponder,
    HttpSite,
    LoopbackPki,
    Page,
    SniServer,
    html_page,
    make_pki,
    refused_port,
    serve_http,
    serve_silent,
    serve_sni,
    start_dns,
)

NETWORK: NetworkFacts = {"asn": 58224, "cc": "IR", "network_name": "TCI"}
REAL_TITLE = "Blocked Site News Front Page"


@pytest.fixture
async def dns_server() -> AsyncIterator[DnsResponder]:
    server = await start_dns()
    yield server
    server.close()


@pytest.fixture
async def control_dns() -> AsyncIterator[DnsResponder]:
    server = await start_dns()
    yield server
    server.close()


@pytest.fixture
def pki(tmp_path: Path) -> LoopbackPki:
    return make_pki(tmp_path)


@pytest.fixture
def fingerprints() -> Fingerprints:
    return default_fingerprints()


def options(
    resolver: DnsResponder, pki: LoopbackPki | None = None, timeout_s: float = 3.0
) -> ProbeOptions:
    return ProbeOptions(
        timeout_s=timeout_s,
        resolver=resolver.address,
        system_resolver=False,  # nothing in a test asks the real system resolver
        ca_file=pki.ca_file if pki else None,
        innocuous_sni="innocuous.test",
    )


def real_site() -> HttpSite:
    site = HttpSite()
    site.set("*", Page(body=html_page(REAL_TITLE)))
    return site


async def agent_view(
    url: str, opts: ProbeOptions, control: ControlFacts | None, fingerprints: Fingerprints
) -> Measurement:
    return await measure(
        url, opts, network=NETWORK, control=control, clock_age_s=0.0, fingerprints=fingerprints
    )


async def dns_censored_view(
    dns_server: DnsResponder, control_dns: DnsResponder, fingerprints: Fingerprints
) -> Measurement:
    """The agent's view of blocked.test through ``dns_server`` (which the test has told how
    to censor), against a control that resolves the name through ``control_dns``."""
    control_dns.answer("blocked.test", "127.0.0.1")
    async with serve_http(real_site().app) as port:
        url = f"http://blocked.test:{port}/"
        control = await measure_facts(url, options(control_dns))
        return await agent_view(url, options(dns_server), control, fingerprints)


async def sni_censored_view(
    dns_server: DnsResponder,
    pki: LoopbackPki,
    fingerprints: Fingerprints,
    censor: Callable[[SniServer], None],
    timeout_s: float = 3.0,
) -> tuple[Measurement, SniServer]:
    """The agent's view of https://blocked.test when ``censor`` turns on the TLS server's
    censoring behaviour after the control has measured it uncensored."""
    dns_server.answer("blocked.test", "127.0.0.1")
    async with serve_sni(real_site().app, pki.server_context("blocked.test")) as server:
        url = f"https://blocked.test:{server.port}/"
        control = await measure_facts(url, options(dns_server, pki))
        censor(server)
        opts = options(dns_server, pki, timeout_s=timeout_s)
        return await agent_view(url, opts, control, fingerprints), server


async def replaced_page_view(
    dns_server: DnsResponder, fingerprints: Fingerprints, page: Page
) -> Measurement:
    """The agent's view of http://blocked.test when every path serves ``page`` after the
    control has measured the real site."""
    dns_server.answer("blocked.test", "127.0.0.1")
    site = real_site()
    async with serve_http(site.app) as port:
        url = f"http://blocked.test:{port}/"
        control = await measure_facts(url, options(dns_server))
        site.set("*", page)
        return await agent_view(url, options(dns_server), control, fingerprints)


async def test_valid_https_site_is_ok(
    dns_server: DnsResponder, pki: LoopbackPki, fingerprints: Fingerprints
) -> None:
    """A site that answers the same to the agent and the control over verified TLS is ok."""
    dns_server.answer("ok.test", "127.0.0.1")
    async with serve_sni(real_site().app, pki.server_context("ok.test")) as server:
        url = f"https://ok.test:{server.port}/"
        control = await measure_facts(url, options(dns_server, pki))
        m = await agent_view(url, options(dns_server, pki), control, fingerprints)
    assert (m.blocking, m.failure, m.accessible) == (Blocking.OK, None, True)
    assert m.tls is not None and m.tls["cert_verified"] is True
    assert m.tls["leaf_sha256"] == control["tls"]["leaf_sha256"]  # type: ignore[index]
    assert m.http is not None and m.http["title"] == REAL_TITLE


async def test_dns_injection_of_known_bogon_is_dns_blocking(
    dns_server: DnsResponder, control_dns: DnsResponder, fingerprints: Fingerprints
) -> None:
    """An answer of 10.10.34.34 is DNS blocking; no packet is sent to that address."""
    dns_server.inject("blocked.test", ["10.10.34.34"])
    m = await dns_censored_view(dns_server, control_dns, fingerprints)
    assert (m.blocking, m.failure, m.accessible) == (Blocking.DNS, None, False)
    assert m.blockpage == "ir_dns_1"
    assert m.dns is not None and m.dns["answers"] == ["10.10.34.34"] and m.dns["bogon"] is True
    assert m.tcp == []


async def test_late_second_answer_is_recorded_as_injection_evidence(
    dns_server: DnsResponder, control_dns: DnsResponder, fingerprints: Fingerprints
) -> None:
    """A forged first answer followed by the genuine one to the same query id is recorded
    in late_answers, and the verdict is dns."""
    dns_server.inject("blocked.test", ["10.10.34.35"], genuine=["127.0.0.1"])
    m = await dns_censored_view(dns_server, control_dns, fingerprints)
    assert m.dns is not None
    assert m.dns["answers"] == ["10.10.34.35"]
    assert m.dns["late_answers"] == ["127.0.0.1"]
    assert (m.blocking, m.failure) == (Blocking.DNS, None)


@pytest.mark.parametrize(
    ("rcode", "failure"),
    [
        pytest.param(dns.rcode.NXDOMAIN, "dns_nxdomain_error", id="nxdomain"),
        pytest.param(dns.rcode.SERVFAIL, "dns_servfail_error", id="servfail"),
    ],
)
async def test_error_rcode_the_control_does_not_get_is_dns_blocking(
    dns_server: DnsResponder,
    control_dns: DnsResponder,
    fingerprints: Fingerprints,
    rcode: dns.rcode.Rcode,
    failure: str,
) -> None:
    """NXDOMAIN (SERVFAIL) for a name the control resolves is dns blocking with
    dns_nxdomain_error (dns_servfail_error), and the rcode is recorded."""
    dns_server.fail("blocked.test", rcode)
    m = await dns_censored_view(dns_server, control_dns, fingerprints)
    assert (m.blocking, m.failure) == (Blocking.DNS, failure)
    assert m.dns is not None and m.dns["rcode"] == dns.rcode.to_text(rcode)


async def test_silent_resolver_times_out(dns_server: DnsResponder) -> None:
    """A resolver that never answers gives a DNS generic_timeout_error within the deadline."""
    dns_server.silence("quiet.test")
    facts = await measure_facts("http://quiet.test/", options(dns_server, timeout_s=1.0))
    assert facts["dns"] is not None and facts["dns"]["failure"] == "generic_timeout_error"
    assert facts["failure"] == "generic_timeout_error"


async def test_sni_reset_is_tls_blocking(
    dns_server: DnsResponder, pki: LoopbackPki, fingerprints: Fingerprints
) -> None:
    """A server that resets on the real SNI but accepts an innocuous one is tls blocking
    with connection_reset: SNI filtering, not IP blocking."""
    m, server = await sni_censored_view(
        dns_server, pki, fingerprints, lambda server: server.reset.add("blocked.test")
    )
    assert (m.blocking, m.failure) == (Blocking.TLS, "connection_reset")
    assert m.tls is not None
    assert m.tls["innocuous_sni"] == "innocuous.test" and m.tls["innocuous_failure"] is None
    assert server.seen_sni[-2:] == ["blocked.test", "innocuous.test"]


async def test_reset_on_every_name_is_ip_blocking(
    dns_server: DnsResponder, pki: LoopbackPki, fingerprints: Fingerprints
) -> None:
    """When the innocuous SNI is reset too, the address is blocked: tcp_ip, not tls."""
    m, _ = await sni_censored_view(
        dns_server,
        pki,
        fingerprints,
        lambda server: server.reset.update({"blocked.test", "innocuous.test"}),
    )
    assert (m.blocking, m.failure) == (Blocking.TCP_IP, "connection_reset")
    assert m.tls is not None and m.tls["innocuous_failure"] == "connection_reset"


async def test_sni_blackhole_times_out_within_the_deadline(
    dns_server: DnsResponder, pki: LoopbackPki, fingerprints: Fingerprints
) -> None:
    """A server that goes silent on the real SNI gives tls blocking with
    generic_timeout_error, and the innocuous handshake still gets its turn."""
    m, _ = await sni_censored_view(
        dns_server,
        pki,
        fingerprints,
        lambda server: server.blackhole.add("blocked.test"),
        timeout_s=1.0,
    )
    assert (m.blocking, m.failure) == (Blocking.TLS, "generic_timeout_error")
    assert m.tls is not None and m.tls["innocuous_failure"] is None


async def test_close_during_handshake_is_eof_error(
    dns_server: DnsResponder, pki: LoopbackPki, fingerprints: Fingerprints
) -> None:
    """A server that closes the connection on the real SNI gives eof_error."""
    m, _ = await sni_censored_view(
        dns_server, pki, fingerprints, lambda server: server.close.add("blocked.test")
    )
    assert (m.blocking, m.failure) == (Blocking.TLS, "eof_error")


async def test_unknown_authority_keeps_the_leaf_fingerprint(
    dns_server: DnsResponder, pki: LoopbackPki
) -> None:
    """A certificate from a CA the client does not trust is ssl_unknown_authority, and the
    leaf's SHA-256 is still recorded (it identifies a forged certificate)."""
    dns_server.answer("ok.test", "127.0.0.1")
    async with serve_sni(real_site().app, pki.server_context("ok.test")) as server:
        url = f"https://ok.test:{server.port}/"
        trusted = await measure_facts(url, options(dns_server, pki))
        untrusted = await measure_facts(url, options(dns_server))
    assert untrusted["tls"] is not None and trusted["tls"] is not None
    assert untrusted["tls"]["failure"] == "ssl_unknown_authority"
    assert untrusted["tls"]["cert_verified"] is False
    assert untrusted["tls"]["leaf_sha256"] == trusted["tls"]["leaf_sha256"]
    assert untrusted["http"] is None


async def test_wrong_name_on_certificate_is_ssl_invalid_hostname(
    dns_server: DnsResponder, pki: LoopbackPki
) -> None:
    """A certificate for another name is ssl_invalid_hostname."""
    dns_server.answer("ok.test", "127.0.0.1")
    async with serve_sni(real_site().app, pki.server_context("other.test")) as server:
        facts = await measure_facts(f"https://ok.test:{server.port}/", options(dns_server, pki))
    assert facts["tls"] is not None and facts["tls"]["failure"] == "ssl_invalid_hostname"
    assert facts["failure"] == "ssl_invalid_hostname"


async def test_server_that_never_answers_is_http_failure_with_timeout(
    dns_server: DnsResponder, fingerprints: Fingerprints
) -> None:
    """A server that accepts the connection and never answers the request gives
    http_failure with generic_timeout_error when the one-second deadline passes."""
    dns_server.answer("slow.test", "127.0.0.1")
    async with serve_http(real_site().app) as site_port, serve_silent() as silent_port:
        control = await measure_facts(f"http://slow.test:{site_port}/", options(dns_server))
        m = await agent_view(
            f"http://slow.test:{silent_port}/",
            options(dns_server, timeout_s=1.0),
            control,
            fingerprints,
        )
    assert (m.blocking, m.failure) == (Blocking.HTTP_FAILURE, "generic_timeout_error")
    assert m.tcp[0]["failure"] is None


async def test_refused_port_is_tcp_ip_blocking(
    dns_server: DnsResponder, fingerprints: Fingerprints
) -> None:
    """Connections refused where the control's succeed are tcp_ip with connection_refused."""
    dns_server.answer("blocked.test", "127.0.0.1")
    async with serve_http(real_site().app) as port:
        control = await measure_facts(f"http://blocked.test:{port}/", options(dns_server))
    m = await agent_view(
        f"http://blocked.test:{refused_port()}/", options(dns_server), control, fingerprints
    )
    assert (m.blocking, m.failure) == (Blocking.TCP_IP, "connection_refused")


async def test_site_down_for_the_control_too_is_site_down(
    dns_server: DnsResponder, fingerprints: Fingerprints
) -> None:
    """A site the control cannot reach either is site_down, not censorship."""
    dns_server.answer("down.test", "127.0.0.1")
    url = f"http://down.test:{refused_port()}/"
    control = await measure_facts(url, options(dns_server))
    m = await agent_view(url, options(dns_server), control, fingerprints)
    assert (m.blocking, m.failure, m.accessible) == (Blocking.SITE_DOWN, "connection_refused", None)


async def test_blockpage_is_recognised_by_its_fingerprint(
    dns_server: DnsResponder, fingerprints: Fingerprints
) -> None:
    """A page carrying the Iranian blockpage's iframe is blockpage, named by fingerprint."""
    iframe = Page(
        status=403,
        body='<html><body><iframe src="http://10.10.34.34?type=Invalid Site'
        '&policy=MainPolicy" style="width: 100%; height: 100%"></iframe></body></html>',
    )
    m = await replaced_page_view(dns_server, fingerprints, iframe)
    assert (m.blocking, m.failure, m.blockpage) == (Blocking.BLOCKPAGE, None, "ir_body_1")


async def test_page_that_differs_from_the_control_is_http_diff(
    dns_server: DnsResponder, fingerprints: Fingerprints
) -> None:
    """A short page with another title and a header the real site never sends is http_diff."""
    other = Page(
        body="<html><head><title>Access restricted</title></head><body>No.</body></html>",
        headers={"X-Filter-Box": "policy-7"},
    )
    m = await replaced_page_view(dns_server, fingerprints, other)
    assert (m.blocking, m.failure, m.blockpage) == (Blocking.HTTP_DIFF, None, None)
    assert m.http is not None and m.http["headers"]["x-filter-box"] == "policy-7"


async def test_no_control_is_inconclusive(
    dns_server: DnsResponder, fingerprints: Fingerprints
) -> None:
    """Without a control the verdict is inconclusive, whatever the facts."""
    dns_server.answer("ok.test", "127.0.0.1")
    async with serve_http(real_site().app) as port:
        m = await agent_view(f"http://ok.test:{port}/", options(dns_server), None, fingerprints)
    assert (m.blocking, m.accessible) == (Blocking.INCONCLUSIVE, None)
    assert m.http is not None and m.http["status"] == 200


async def test_redirects_are_followed_through_the_same_resolver(
    dns_server: DnsResponder, fingerprints: Fingerprints
) -> None:
    """A redirect to another name is resolved by the measurement's resolver and followed."""
    dns_server.answer("old.test", "127.0.0.1")
    dns_server.answer("new.test", "127.0.0.1")
    site = real_site()
    async with serve_http(site.app) as port:
        site.set("/", Page(status=302, headers={"Location": f"http://new.test:{port}/home"}))
        facts = await measure_facts(f"http://old.test:{port}/", options(dns_server))
    assert facts["http"] is not None
    assert facts["http"]["redirects"] == 1 and facts["http"]["status"] == 200
    assert facts["http"]["url"] == f"http://new.test:{port}/home"
    assert site.requests == [f"old.test:{port}/", f"new.test:{port}/home"]


async def test_body_is_capped(dns_server: DnsResponder) -> None:
    """A body longer than the cap is cut at the cap and marked truncated."""
    dns_server.answer("big.test", "127.0.0.1")
    site = HttpSite()
    site.set("*", Page(body="x" * 200_000))
    async with serve_http(site.app) as port:
        opts = replace(options(dns_server), body_cap=64 * 1024)
        facts = await measure_facts(f"http://big.test:{port}/", opts)
    assert facts["http"] is not None
    assert facts["http"]["body_length"] == 64 * 1024 and facts["http"]["body_truncated"] is True


async def test_private_resolver_address_is_not_recorded(dns_server: DnsResponder) -> None:
    """A configured resolver on a private address is recorded by role, not by address."""
    dns_server.answer("ok.test", "127.0.0.1")
    facts = await measure_facts(f"http://ok.test:{refused_port()}/", options(dns_server))
    assert facts["dns"] is not None and facts["dns"]["resolver"] == "configured"
