"""The outbox's delivery worker: every collector runs one; each delivery is claimed by one.

Deliveries wait in the store (committed with the revision they tell of), so they survive
restarts and kill -9; a claim leases a row for longer than one attempt can take, and on
PostgreSQL the claim skips rows another collector holds (FOR UPDATE SKIP LOCKED). A failed
attempt is retried after an exponential backoff with full jitter (a uniform draw between 0
and base * 2^attempts, capped) until ``alerts.max_age`` has passed; then it is given up.
Attempts run as tasks of their own with a timeout, a bounded number at a time, so a dead or
slow receiver costs only its own deliveries: never ingest, never the monitor.

Every destination goes through ``collector.outbound`` (the collector's one check of
private and special-purpose addresses), and plain http only to ``alerts.allow_ranges``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

import aiohttp
import structlog

from collector.alerts.signing import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    json_body,
    sign,
    slack_body,
)
from collector.alerts.subscriptions import shown_url, subscription_key
from collector.config import AlertsConfig, WebhookConfig
from collector.metrics import DeliveryMetrics
from collector.outbound import (
    ANY_PORT,
    CheckedResolver,
    DestinationRefused,
    Network,
    checked_session,
    checked_socket_factory,
)
from collector.store.base import Store
from collector.store.records import Delivery

log = structlog.get_logger("collector.alerts")

BACKOFF_BASE_S: Final = 1.0
BACKOFF_CAP_S: Final = 600.0
IN_FLIGHT: Final = 16  # attempts at once, over every receiver
IDLE_POLL_S: Final = 1.0  # how often an idle worker looks for rows (others' commits)
_ERROR_CHARS: Final = 300


def backoff_s(attempts: int, rnd: random.Random, base: float = BACKOFF_BASE_S) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2^attempts)] after ``attempts`` failures."""
    return rnd.uniform(0.0, min(BACKOFF_CAP_S, base * 2.0 ** max(0, attempts - 1)))


class _Permanent(Exception):
    """An attempt that must not be retried (a refused destination)."""


@dataclass(eq=False)
class DeliveryWorker:
    """Sends the outbox of one collector's store to the configured webhooks."""

    store: Store
    config: AlertsConfig
    metrics: DeliveryMetrics | None = None
    clock: Callable[[], float] = time.time
    rnd: random.Random = field(default_factory=random.Random)
    backoff_base_s: float = BACKOFF_BASE_S
    webhooks: dict[str, WebhookConfig] = field(init=False)
    ranges: tuple[Network, ...] = field(init=False)
    _wake: asyncio.Event = field(init=False, default_factory=asyncio.Event)
    _inflight: set[asyncio.Task[None]] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        self.webhooks = {subscription_key(w): w for w in self.config.webhooks}
        self.ranges = self.config.allow_networks

    def wake(self) -> None:
        """New rows were committed: look now rather than at the next poll."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        # Two sessions: https anywhere the outbound check allows; http only to allow_ranges.
        async with (
            checked_session(allow_ranges=self.ranges, allow_ports=ANY_PORT) as https,
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    resolver=CheckedResolver(self.ranges, ANY_PORT),
                    use_dns_cache=False,
                    socket_factory=self._http_socket_factory(),
                ),
                trust_env=False,
            ) as http,
        ):
            self._sessions = {"https": https, "http": http}
            try:
                while not stop.is_set():
                    await self._round()
                    await self._sleep(stop)
            finally:
                for task in list(self._inflight):
                    task.cancel()
                await asyncio.gather(*self._inflight, return_exceptions=True)

    def _http_socket_factory(self) -> aiohttp.connector.SocketFactoryType:
        checked = checked_socket_factory(self.ranges, ANY_PORT)

        def make(addr_info: aiohttp.connector.AddrInfoType) -> socket.socket:
            address = ipaddress.ip_address(str(addr_info[4][0]))
            if not any(address in net for net in self.ranges):
                raise DestinationRefused(
                    str(address), "is not in alerts.allow_ranges (plain http goes only there)"
                )
            return checked(addr_info)

        return make

    async def _sleep(self, stop: asyncio.Event) -> None:
        delay = IDLE_POLL_S
        due = await self.store.next_delivery_due()
        if due is not None:
            delay = max(0.0, min(delay, due - self.clock()))
        self._wake.clear()
        waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def _round(self) -> None:
        free = IN_FLIGHT - len(self._inflight)
        if free <= 0:
            return
        lease = max((w.timeout_s for w in self.webhooks.values()), default=10.0) + 30.0
        claimed = await self.store.claim_deliveries(self.clock(), free, lease)
        for delivery in claimed:
            task = asyncio.create_task(self._attempt(delivery))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
        if self.metrics is not None:
            await self._update_gauges()

    async def _update_gauges(self) -> None:
        assert self.metrics is not None
        for s in await self.store.outbox_summary():
            for state, n in (
                ("pending", s.pending),
                ("delivered", s.delivered),
                ("failed", s.failed),
            ):
                self.metrics.outbox.labels(s.subscription, state).set(n)

    async def _attempt(self, delivery: Delivery) -> None:
        webhook = self.webhooks.get(delivery.subscription)
        now = self.clock()
        if webhook is None:
            await self.store.finish_delivery(
                delivery.delivery_id, "failed", now, "the subscription is no longer configured", now
            )
            return
        error: str | None = None
        permanent = False
        try:
            status = await self._post(webhook, delivery)
            if 200 <= status < 300:
                done = self.clock()
                await self.store.finish_delivery(
                    delivery.delivery_id, "delivered", done, None, done
                )
                self._count(delivery, "delivered")
                log.info(
                    "webhook_delivered",
                    delivery=delivery.key,
                    type=delivery.type,
                    url=shown_url(webhook),
                    attempts=delivery.attempts + 1,
                )
                return
            error = f"HTTP {status}"
        except DestinationRefused as exc:
            error, permanent = f"destination refused: {exc}", True
        except _Permanent as exc:
            error, permanent = str(exc), True
        except TimeoutError:
            error = f"no answer within {webhook.timeout_s:g}s"
        except (aiohttp.ClientError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        error = error[:_ERROR_CHARS]
        now = self.clock()
        retry_at = now + backoff_s(delivery.attempts + 1, self.rnd, self.backoff_base_s)
        give_up = permanent or retry_at > delivery.created_at + self.config.max_age_s
        state = "failed" if give_up else "pending"
        await self.store.finish_delivery(delivery.delivery_id, state, retry_at, error, now)
        self._count(delivery, "failed" if give_up else "retry")
        log.warning(
            "webhook_failed",
            delivery=delivery.key,
            url=shown_url(webhook),
            error=error,
            attempts=delivery.attempts + 1,
            given_up=give_up,
        )

    def _count(self, delivery: Delivery, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.attempts.labels(delivery.subscription, outcome).inc()

    async def _post(self, webhook: WebhookConfig, delivery: Delivery) -> int:
        scheme = urlsplit(webhook.url).scheme
        body = (
            slack_body(delivery.payload)
            if webhook.format == "slack"
            else json_body(delivery.payload)
        )
        timestamp = int(self.clock())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "filterwatch-webhook/1",
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(webhook.secret, timestamp, body),
            DELIVERY_HEADER: delivery.key,
        }
        session = self._sessions[scheme]
        async with (
            asyncio.timeout(webhook.timeout_s),
            session.post(webhook.url, data=body, headers=headers, allow_redirects=False) as resp,
        ):
            await resp.read()
            return resp.status
