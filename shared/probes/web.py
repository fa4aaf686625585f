"""The web measurement: DNS, TCP, TLS and HTTP for one URL under one deadline, then a verdict.

``measure_facts`` is what both sides run: the agent inside the ISP and the collector's
control endpoint. ``measure`` adds the agent's side: the comparison with the control and
the verdict, wrapped in a ``Measurement``.

Steps are chained the way a browser would: the addresses of the DNS step are connected
to, the first that answers gets the TLS handshake with the real SNI, and the GET goes to
the addresses that connected. Every step shares one deadline (see ``deadline``).

``may_connect`` decides, address and port by address and port, whether a packet may be sent
there at all (False skips that address; raising stops the whole measurement).
The agent refuses known injection addresses (10.10.34.34 and the other DNS fingerprints:
nothing to learn there, and outside the censoring country such an address is somebody's
LAN); the control refuses private and reserved destinations so it is no open proxy.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Final

from yarl import URL

from shared.blockpages import Fingerprints, default_fingerprints
from shared.probes.deadline import Deadline
from shared.probes.dns import (
    DNS_SHARE,
    Resolver,
    choose_resolver,
    parse_resolver,
    query_a,
    resolve,
)
from shared.probes.failures import wire
from shared.probes.http import HttpOutcome, fetch
from shared.probes.tcp import connect_all
from shared.probes.tls import probe_tls, tls_contexts
from shared.schema import (
    ControlFacts,
    DnsFacts,
    Failure,
    HttpFacts,
    Measurement,
    NetworkFacts,
    TcpFacts,
    TlsFacts,
    new_measurement_id,
)
from shared.verdict import assess, dns_answers, dns_bogon

MAX_ADDRESSES: Final = 8  # connects per measurement: enough for round-robin DNS, no more

MayConnect = Callable[[str, int], bool]


def _version() -> str | None:
    try:
        return metadata.version("filterwatch")
    except metadata.PackageNotFoundError:
        return None


AGENT_VERSION: Final = _version()


@dataclass(frozen=True)
class ProbeOptions:
    """How to measure; the defaults are the agent's."""

    timeout_s: float = 15.0  # ONE deadline for the whole measurement
    resolver: str | None = None  # "ip" or "ip:port"; None -> first nameserver of resolv.conf
    system_resolver: bool = True  # also ask getaddrinfo (tests and the lab may turn it off)
    ca_file: Path | None = None  # extra trusted CA (lab, tests)
    body_cap: int = 512 * 1024
    max_redirects: int = 10
    innocuous_sni: str = "example.com"

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be greater than 0, got {self.timeout_s}")
        if self.resolver is not None:
            parse_resolver(self.resolver)  # raises ValueError naming the resolver
        if self.body_cap < 1 or self.max_redirects < 0:
            raise ValueError("body_cap must be positive and max_redirects not negative")


@dataclass(frozen=True, slots=True)
class Target:
    """A URL taken apart for measuring."""

    url: str
    scheme: str
    host: str  # lower case, IDNA-encoded, no trailing dot
    port: int
    ip_literal: str | None


def parse_target(url: str) -> Target:
    """The parts of an http(s) URL; ValueError says what is wrong with it."""
    try:
        parsed = URL(url)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise ValueError("only http:// and https:// URLs can be measured")
    host = (parsed.raw_host or "").lower().rstrip(".")
    if not host:
        raise ValueError("the URL has no host")
    try:
        port = parsed.port
    except ValueError:
        raise ValueError("the URL's port is not valid") from None
    if port is None or not 0 < port < 65536:
        raise ValueError("the URL's port is not valid")
    try:
        literal: str | None = str(ipaddress.ip_address(host))
    except ValueError:
        literal = None
    return Target(url=url, scheme=parsed.scheme, host=host, port=port, ip_literal=literal)


@dataclass(slots=True)
class FactsRun:
    """What one run of the steps produced: the facts, the in-memory response, timings."""

    target: Target
    facts: ControlFacts
    response: HttpOutcome | None = None
    timings: dict[str, float] = field(default_factory=dict)


def _summary_failure(
    dns: DnsFacts | None,
    addresses: list[str],
    tcp: list[TcpFacts],
    tls: TlsFacts | None,
    http: HttpFacts | None,
) -> Any:
    """The failure that stopped the fetch, step by step."""
    if dns is not None and not addresses:
        return dns.get("failure") or dns.get("system_failure") or wire(Failure.DNS_NO_ANSWER)
    if tcp and all(t.get("failure") for t in tcp):
        return tcp[0].get("failure")
    if tls is not None and tls.get("failure"):
        return tls.get("failure")
    if http is not None and http.get("failure"):
        return http.get("failure")
    return None


def _allow_all(address: str, port: int) -> bool:
    return True


async def run_steps(
    url: str, options: ProbeOptions, *, may_connect: MayConnect | None = None
) -> FactsRun:
    """Run DNS, TCP, TLS and HTTP for ``url`` under one deadline; network failures are facts."""
    allowed = may_connect or _allow_all
    loop = asyncio.get_running_loop()
    deadline = Deadline.after(options.timeout_s)
    target = parse_target(url)
    contexts = await tls_contexts(options.ca_file)
    resolver: Resolver | None = None
    timings: dict[str, float] = {}

    mark = loop.time()
    dns: DnsFacts | None = None
    if target.ip_literal is not None:
        addresses = [target.ip_literal]
    else:
        resolver = await choose_resolver(options.resolver)
        dns = await resolve(
            target.host, target.port, resolver, deadline, use_system=options.system_resolver
        )
        addresses = dns_answers(dns)[:MAX_ADDRESSES]
        timings["dns_ms"] = round((loop.time() - mark) * 1000, 3)

    mark = loop.time()
    reachable = [a for a in addresses if allowed(a, target.port)]
    tcp = await connect_all(reachable, target.port, deadline) if reachable else []
    timings["tcp_ms"] = round((loop.time() - mark) * 1000, 3)
    connected = [str(t["address"]) for t in tcp if not t.get("failure")]

    tls: TlsFacts | None = None
    response: HttpOutcome | None = None
    if connected:
        if target.scheme == "https":
            mark = loop.time()
            tls = await probe_tls(
                connected[0], target.port, target.host, options.innocuous_sni, contexts, deadline
            )
            timings["tls_ms"] = round((loop.time() - mark) * 1000, 3)
        if tls is None or not tls.get("failure"):

            async def lookup(host: str) -> tuple[list[str], Failure | None]:
                # Redirects to other hosts ask the same resolver, within the same deadline.
                chosen = resolver or await choose_resolver(options.resolver)
                exchange = await query_a(host, chosen, deadline.step(DNS_SHARE), late_window_s=0)
                return exchange.answers, exchange.failure

            mark = loop.time()
            response = await fetch(
                target.url,
                {target.host: connected},
                lookup=lookup,
                may_connect=allowed,
                contexts=contexts,
                body_cap=options.body_cap,
                max_redirects=options.max_redirects,
                until=deadline.at,
            )
            timings["http_ms"] = round((loop.time() - mark) * 1000, 3)

    http = response.facts if response is not None else None
    facts: ControlFacts = {
        "dns": dns,
        "tcp": tcp,
        "tls": tls,
        "http": http,
        "failure": _summary_failure(dns, addresses, tcp, tls, http),
    }
    timings["total_ms"] = round((loop.time() - (deadline.at - options.timeout_s)) * 1000, 3)
    return FactsRun(target=target, facts=facts, response=response, timings=timings)


async def measure_facts(
    url: str,
    options: ProbeOptions,
    *,
    may_connect: MayConnect | None = None,
    fingerprints: Fingerprints | None = None,
) -> ControlFacts:
    """The DNS, TCP, TLS and HTTP facts for ``url``: what the control endpoint returns.

    ``may_connect`` ((address, port) -> bool) vetoes destinations before any packet goes there;
    ``fingerprints`` (the collector's set; None: the shipped one) mark injected answers.
    """
    run = await run_steps(url, options, may_connect=may_connect)
    dns = run.facts.get("dns")
    if dns is not None:
        if fingerprints is None:
            fingerprints = await asyncio.to_thread(default_fingerprints)
        dns["bogon"] = dns_bogon(dns, None, fingerprints)
    return run.facts


async def measure(
    url: str,
    options: ProbeOptions,
    *,
    network: NetworkFacts | None,
    control: ControlFacts | None,
    clock_age_s: float | None,
    fingerprints: Fingerprints,
) -> Measurement:
    """Measure ``url`` now from this network and judge it against ``control``."""
    measured_at = time.time()
    literal = parse_target(url).ip_literal

    def may_connect(address: str, port: int) -> bool:
        # A URL that names an address is measured as asked; a DNS answer pointing at a
        # known injection address is not worth a packet.
        return address == literal or fingerprints.match_dns(address) is None

    run = await run_steps(url, options, may_connect=may_connect)
    facts = run.facts
    dns = facts.get("dns")
    if dns is not None:
        dns["bogon"] = dns_bogon(dns, control, fingerprints)
    response = run.response
    verdict = assess(
        facts,
        control,
        network,
        fingerprints,
        headers=response.headers if response is not None and response.body is not None else None,
        body=response.body if response is not None else None,
    )
    if verdict.elsewhere is not None:
        # Said in the facts, not claimed as a blockpage: the fingerprint is another
        # country's (blockpages.py, expected_countries).
        noted = facts.get("http") if verdict.elsewhere_in == "http" else dns
        if noted is not None:
            noted["blockpage_elsewhere"] = verdict.elsewhere
    return Measurement(
        id=new_measurement_id(),
        measured_at=measured_at,
        url=url,
        domain=run.target.host,
        blocking=verdict.blocking,
        accessible=verdict.blocking.accessible,
        network=network,
        failure=verdict.failure,
        blockpage=verdict.blockpage,
        clock_age_s=clock_age_s,
        dns=dns,
        tcp=facts.get("tcp") or [],
        tls=facts.get("tls"),
        http=facts.get("http"),
        control=control,
        timings=run.timings,
        agent_version=AGENT_VERSION,
    )
