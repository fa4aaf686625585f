"""POST /api/v1/control: the collector measures a URL from its own vantage.

An agent sends ``{"url": ...}`` (msgpack) with its token; the collector runs the same
``measure_facts`` as the agent, with the resolver and CA of the configuration's
``control`` section, and answers the facts (msgpack for msgpack clients).

The control must never become an open proxy into the collector's own network or a port
scanner: only http(s) URLs, only ports 80 and 443 (and ``control.allow_ports``), and no
connection to any special-purpose address (``collector.outbound``: loopback, private,
link-local, the 6to4, NAT64 and Teredo forms of those, documentation, benchmarking,
multicast, reserved...), whether the URL names it, DNS answers it or a redirect leads to it,
unless it is inside one of ``control.allow_ranges`` (the lab's own networks). A host with
any refused address is refused as a whole. Such a destination is vetoed before any packet
is sent to it and the answer is ``400 destination_not_allowed`` saying why. Time and
concurrency are capped too.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from collector.api import decode_small_body, read_body, reply
from collector.config import ControlConfig
from collector.outbound import DestinationRefused, Network, check_port, refusal
from collector.state import CONFIG, FINGERPRINTS, json_error, require_agent
from shared.blockpages import Fingerprints
from shared.probes.web import ProbeOptions, measure_facts, parse_target
from shared.schema import MAX_URL_LENGTH, ControlFacts

CONTROL_BODY_LIMIT: Final = 4096
MAX_CONTROL_TIMEOUT_S: Final = 30.0
MAX_CONTROLS_IN_FLIGHT: Final = 16
RETRY_AFTER_S: Final = 5


@dataclass
class _Gate:
    """How many controls run now; past the limit the endpoint sheds load with 503."""

    limit: int
    active: int = 0


@dataclass(frozen=True, slots=True)
class _ControlSetup:
    options: ProbeOptions
    allow: tuple[Network, ...]
    allow_ports: frozenset[int]
    allow_public: bool


CONTROL_SETUP: Final = web.AppKey("control_setup", _ControlSetup)
CONTROL_GATE: Final = web.AppKey("control_gate", _Gate)
CONTROL_INFLIGHT: Final = web.AppKey("control_inflight", dict[str, "asyncio.Future[ControlFacts]"])

_ONLY_PUBLIC: Final = "; the control only measures public web destinations"


def refused(exc: DestinationRefused) -> web.HTTPException:
    return json_error(400, "destination_not_allowed", exc.detail + _ONLY_PUBLIC)


def check_destination(address: str, port: int, setup: _ControlSetup) -> None:
    """Raise ``DestinationRefused`` unless the control may connect to ``address`` on ``port``."""
    check_port(port, setup.allow_ports)
    refusal_ = refusal(address, setup.allow)
    if refusal_ is not None:
        raise refusal_
    if not setup.allow_public and not any(
        ip.version == net.version and ip in net
        for ip in (ipaddress.ip_address(address),)
        for net in setup.allow
    ):
        raise DestinationRefused(address, "is outside control.allow_ranges (allow_public: false)")


def control_setup(config: ControlConfig) -> _ControlSetup:
    """The probe options and allowed ranges for ``config`` (checked by the loader)."""
    options = ProbeOptions(
        timeout_s=min(config.timeout_s, MAX_CONTROL_TIMEOUT_S),
        resolver=config.resolver,
        # The direct query to the configured (or the system's) resolver is the control's
        # view; getaddrinfo would add the hosts file of the collector's machine.
        system_resolver=False,
        ca_file=config.ca_file,
    )
    return _ControlSetup(
        options=options,
        allow=config.allow_networks,
        allow_ports=frozenset(config.allow_ports),
        allow_public=config.allow_public,
    )


async def _measure(
    url: str, setup: _ControlSetup, gate: _Gate, fingerprints: Fingerprints | None = None
) -> ControlFacts:
    def may_connect(address: str, port: int) -> bool:
        # Raising stops the measurement before any address of this host is connected to.
        check_destination(address, port, setup)
        return True

    gate.active += 1
    try:
        return await measure_facts(
            url, setup.options, may_connect=may_connect, fingerprints=fingerprints
        )
    finally:
        gate.active -= 1


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
    try:
        check_port(target.port, setup.allow_ports)
        if target.ip_literal is not None:
            check_destination(target.ip_literal, target.port, setup)
    except DestinationRefused as exc:
        raise refused(exc) from None
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
    try:
        facts = await asyncio.shield(shared)
    except DestinationRefused as exc:
        raise refused(exc) from None
    return reply(request, facts)


def add_routes(app: web.Application) -> None:
    """Add POST /api/v1/control to ``app`` (whose configuration is already set)."""
    app[CONTROL_SETUP] = control_setup(app[CONFIG].control)
    app[CONTROL_GATE] = _Gate(limit=MAX_CONTROLS_IN_FLIGHT)
    app[CONTROL_INFLIGHT] = {}
    app.router.add_post("/api/v1/control", post_control)
