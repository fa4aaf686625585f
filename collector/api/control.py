"""POST /api/v1/control: the collector measures a URL from its own vantage.

An agent sends ``{"url": ...}`` (msgpack) with its token; the collector runs the same
``measure_facts`` as the agent, with the resolver and CA of the configuration's
``control`` section, and answers the facts (msgpack for msgpack clients).

The control must never become an open proxy into the collector's own network: only
http(s) URLs, and no connection to a loopback, private, link-local, multicast, reserved or
otherwise non-public address, whether the URL names it or DNS (or a redirect) leads to it,
unless the address is inside one of ``control.allow_ranges`` (the lab's own networks).
Such a destination is vetoed before any packet is sent to it and the answer is
``400 destination_not_allowed``. Time and concurrency are capped too.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from agent.blockpages import Fingerprints
from agent.probes.dns import parse_resolver
from agent.probes.web import ProbeOptions, measure_facts, parse_target
from collector.api import decode_small_body, read_body, reply
from collector.config import ControlConfig
from collector.state import CONFIG, FINGERPRINTS, json_error, require_agent
from shared.errors import ConfigError
from shared.schema import MAX_URL_LENGTH, ControlFacts

CONTROL_BODY_LIMIT: Final = 4096
MAX_CONTROL_TIMEOUT_S: Final = 30.0
MAX_CONTROLS_IN_FLIGHT: Final = 16
RETRY_AFTER_S: Final = 5

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass
class _Gate:
    """How many controls run now; past the limit the endpoint sheds load with 503."""

    limit: int
    active: int = 0


@dataclass(frozen=True, slots=True)
class _ControlSetup:
    options: ProbeOptions
    allow: tuple[Network, ...]


CONTROL_SETUP: Final = web.AppKey("control_setup", _ControlSetup)
CONTROL_GATE: Final = web.AppKey("control_gate", _Gate)
CONTROL_INFLIGHT: Final = web.AppKey(
    "control_inflight", dict[str, "asyncio.Future[tuple[ControlFacts, list[str]]]"]
)

_NOT_ALLOWED: Final = (
    "the control only measures public destinations; this URL leads to a loopback, private, "
    "link-local, multicast or reserved address"
)


def _plain(address: str) -> IpAddress:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return ip


def destination_allowed(address: str, allow: Sequence[Network]) -> bool:
    """Whether the control may connect to ``address``."""
    try:
        ip = _plain(address)
    except ValueError:
        return False
    if any(ip.version == net.version and ip in net for net in allow):
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return False
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def control_setup(config: ControlConfig) -> _ControlSetup:
    """The probe options and allowed ranges for ``config``; ConfigError if one is wrong."""
    if config.resolver is not None:
        try:
            parse_resolver(config.resolver)
        except ValueError as exc:
            raise ConfigError("<config>", "control.resolver", str(exc)) from None
    allow = tuple(ipaddress.ip_network(cidr, strict=False) for cidr in config.allow_ranges)
    options = ProbeOptions(
        timeout_s=min(config.timeout_s, MAX_CONTROL_TIMEOUT_S),
        resolver=config.resolver,
        # The direct query to the configured (or the system's) resolver is the control's
        # view; getaddrinfo would add the hosts file of the collector's machine.
        system_resolver=False,
        ca_file=config.ca_file,
    )
    return _ControlSetup(options=options, allow=allow)


async def _measure(
    url: str, setup: _ControlSetup, gate: _Gate, fingerprints: Fingerprints | None = None
) -> tuple[ControlFacts, list[str]]:
    refused: list[str] = []

    def may_connect(address: str) -> bool:
        if destination_allowed(address, setup.allow):
            return True
        refused.append(address)
        return False

    gate.active += 1
    try:
        facts = await measure_facts(
            url, setup.options, may_connect=may_connect, fingerprints=fingerprints
        )
    finally:
        gate.active -= 1
    return facts, refused


async def post_control(request: web.Request) -> web.Response:
    await require_agent(request)
    body = await read_body(request, CONTROL_BODY_LIMIT, compressed_ok=False)
    doc = decode_small_body(request, body)
    url = doc.get("url")
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise json_error(
            400, "bad_url", f"url: expected an http(s) URL of at most {MAX_URL_LENGTH} characters"
        )
    try:
        target = parse_target(url)
    except ValueError as exc:
        raise json_error(400, "bad_url", f"url: {exc}") from None
    setup = request.app[CONTROL_SETUP]
    if target.ip_literal is not None and not destination_allowed(target.ip_literal, setup.allow):
        raise json_error(400, "destination_not_allowed", _NOT_ALLOWED)
    # Agents of one round ask for the same URLs at the same moment: requests for a URL whose
    # control is already running share it instead of measuring again (and of being shed).
    inflight = request.app[CONTROL_INFLIGHT]
    shared = inflight.get(url)
    if shared is None:
        gate = request.app[CONTROL_GATE]
        if gate.active >= gate.limit:
            raise json_error(
                503,
                "overloaded",
                f"{gate.limit} controls are running; retry in a few seconds",
                {"Retry-After": str(RETRY_AFTER_S)},
            )
        shared = asyncio.ensure_future(_measure(url, setup, gate, request.app.get(FINGERPRINTS)))
        inflight[url] = shared
        shared.add_done_callback(lambda _: inflight.pop(url, None))
    facts, refused = await asyncio.shield(shared)
    if refused:
        raise json_error(400, "destination_not_allowed", _NOT_ALLOWED)
    return reply(request, facts)


def add_routes(app: web.Application) -> None:
    """Add POST /api/v1/control to ``app`` (whose configuration is already set)."""
    app[CONTROL_SETUP] = control_setup(app[CONFIG].control)
    app[CONTROL_GATE] = _Gate(limit=MAX_CONTROLS_IN_FLIGHT)
    app[CONTROL_INFLIGHT] = {}
    app.router.add_post("/api/v1/control", post_control)
