"""Which network the agent measures from, and how far its clock can be trusted.

The network is what the collector's ``whoami`` says, asked over a direct connection (never
through the upload proxy, which would report the proxy's network). It is asked before each
round and again whenever the machine's local addresses change (a laptop moving from home
Wi-Fi to a phone hotspot changes ISP mid-round). When the collector cannot be asked, or
does not know the network, the network is *unknown* (None): results measured then are kept
and judged inconclusive; nothing is guessed from an earlier answer.

Local addresses are compared without sending anything: interface names from
``socket.if_nameindex`` plus the source address the kernel would pick for the collector's
address (a UDP ``connect`` only consults the routing table). Only a hash of them is kept,
never logged.

The clock is confirmed against the ``server_time`` of ``whoami`` answers and the ``Date``
header of other collector answers: ``clock_age_s`` is
the time since the last confirmation (monotonic), ``skew_s`` the collector's time minus
ours.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import structlog

from agent.collector_api import ApiError, ApiResult, CollectorClient, network_from_whoami
from shared.schema import NetworkFacts

log = structlog.get_logger("agent.identity")

# How often, at most, local addresses are compared (they are compared before measurements).
ADDRESS_CHECK_EVERY_S = 1.0
# A Date header has one-second resolution: smaller differences are not evidence of skew.
DATE_RESOLUTION_S = 1.0
# Below this a skew is not worth correcting (and could be the round trip's asymmetry).
MIN_SKEW_S = 1.0


class Clock:
    """The agent's trust in its own clock, from collector ``Date`` headers."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._confirmed_at: float | None = None
        self.skew_s: float | None = None
        self.confirmed_wall: float | None = None

    def observe(self, date_header: str | None, sent_at: float, received_at: float) -> None:
        """Confirm the clock with a ``Date`` header seen between ``sent_at`` and
        ``received_at`` (wall clock)."""
        if not date_header:
            return
        try:
            server = parsedate_to_datetime(date_header).timestamp()
        except (TypeError, ValueError, IndexError):
            return
        self.observe_time(server, sent_at, received_at, DATE_RESOLUTION_S)

    def observe_time(
        self, server: float, sent_at: float, received_at: float, resolution_s: float = 0.0
    ) -> None:
        """Confirm the clock with the collector's time ``server``, read between ``sent_at``
        and ``received_at``, given to within ``resolution_s``."""
        local = (sent_at + received_at) / 2
        skew = server - local
        # Within the resolution plus the round trip our clock is as good as theirs.
        slack = resolution_s + MIN_SKEW_S + max(0.0, received_at - sent_at)
        self.skew_s = 0.0 if abs(skew) <= slack else skew
        self._confirmed_at = self._monotonic()
        self.confirmed_wall = received_at

    def observe_result(self, result: ApiResult) -> None:
        self.observe(result.date, result.sent_at, result.received_at)

    def age_s(self) -> float | None:
        """Seconds since the clock was last confirmed, or None if it never was."""
        if self._confirmed_at is None:
            return None
        return max(0.0, self._monotonic() - self._confirmed_at)

    def corrected(self, wall: float) -> float:
        """``wall`` moved by the observed skew (the collector's clock is the reference)."""
        return wall + (self.skew_s or 0.0)


def local_address_fingerprint(destinations: list[tuple[int, tuple[str, int]]]) -> str:
    """A hash of the interface names and of the source address the kernel picks towards
    each destination. Sends nothing: ``connect`` on a UDP socket is a route lookup."""
    facts: list[str] = sorted(name for _, name in socket.if_nameindex())
    for family, sockaddr in destinations:
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.connect(sockaddr)
                facts.append(f"{family}:{sock.getsockname()[0]}")
        except OSError:
            facts.append(f"{family}:unroutable")
    return hashlib.sha256("\n".join(facts).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class IdentitySnapshot:
    network: NetworkFacts | None
    checked_at: float | None  # wall clock of the last whoami answer
    last_error: str | None


class NetworkIdentity:
    """The current network, kept up to date with ``whoami`` over the direct session."""

    def __init__(
        self,
        collector: CollectorClient,
        clock: Clock,
        timeout_s: float = 10.0,
        check_every_s: float = ADDRESS_CHECK_EVERY_S,
    ) -> None:
        self._collector = collector
        self._check_every_s = check_every_s
        self._clock = clock
        self._timeout_s = timeout_s
        self._lock = asyncio.Lock()
        self._fingerprint: str | None = None
        self._checked_mono = -1e18
        self._destinations: list[tuple[int, tuple[str, int]]] = []
        self.network: NetworkFacts | None = None
        self.checked_at: float | None = None
        self.last_error: str | None = None

    async def refresh(self) -> NetworkFacts | None:
        """Ask the collector which network we are on now (None if it cannot say)."""
        async with self._lock:
            await self._refresh_locked()
            return self.network

    async def current(self) -> NetworkFacts | None:
        """The network for a measurement starting now: asks again first if the local
        addresses changed since the last answer."""
        now = time.monotonic()
        if now - self._checked_mono >= self._check_every_s:
            self._checked_mono = now
            if local_address_fingerprint(self._destinations) != self._fingerprint:
                async with self._lock:
                    # Another measurement may have refreshed while we waited for the lock.
                    if local_address_fingerprint(self._destinations) != self._fingerprint:
                        if self._fingerprint is not None:
                            log.info("local_addresses_changed")
                        await self._refresh_locked()
        return self.network

    def snapshot(self) -> IdentitySnapshot:
        return IdentitySnapshot(self.network, self.checked_at, self.last_error)

    async def _refresh_locked(self) -> None:
        await self._resolve_collector()
        # The fingerprint is taken before asking: a change during the request is seen next time.
        self._fingerprint = local_address_fingerprint(self._destinations)
        try:
            res = await self._collector.request(
                "GET", "/api/v1/whoami", timeout_s=self._timeout_s, direct=True
            )
        except ApiError as exc:
            if self.network is not None or self.last_error != exc.reason:
                log.warning("network_unknown", reason=str(exc))
            self.network = None
            self.last_error = exc.reason
            return
        server_time = res.body.get("server_time") if isinstance(res.body, dict) else None
        if isinstance(server_time, int | float) and not isinstance(server_time, bool):
            # The collector's own clock to the millisecond: better than Date's second.
            self._clock.observe_time(float(server_time), res.sent_at, res.received_at)
        else:
            self._clock.observe_result(res)
        network = network_from_whoami(res.body)
        if network != self.network:
            if network is None:
                log.warning("network_unknown", reason="collector_does_not_know")
            else:
                log.info("network_identified", asn=network["asn"], cc=network["cc"])
        self.network = network
        self.checked_at = res.received_at
        self.last_error = None if network is not None else "collector_does_not_know"

    async def _resolve_collector(self) -> None:
        parts = urlsplit(self._collector.url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except OSError:
            return  # keep what we had: the fingerprint still covers the interfaces
        self._destinations = [(int(fam), (str(sa[0]), int(sa[1]))) for fam, _, _, _, sa in infos][
            :4
        ]
