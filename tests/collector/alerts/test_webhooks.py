"""Webhook deliveries from the outbox to real receivers on 127.0.0.1: signatures, the Slack
body, retries on 500, on timeouts and on a receiver that is down for a while, refused
destinations, giving up after max_age, and a slow receiver that holds up no other."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from collector.alerts.delivery import DeliveryWorker
from collector.alerts.subscriptions import subscription_key
from collector.config import AlertsConfig, WebhookConfig
from collector.monitor.reconcile import event_json
from collector.store.records import EventChange, StoredEvent
from collector.store.sqlite import SqliteStore
from tests.collector.monitor.helpers import SECRET, webhook

LOOPBACK = ("127.0.0.0/8",)
Behaviour = Callable[[int], Awaitable[web.StreamResponse]]


class Receiver:
    """An HTTP server on 127.0.0.1 that records every request and answers as told."""

    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.behaviour = behaviour
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.got = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append((dict(request.headers), body))
        n = len(self.requests)
        self.got.set()
        if self.behaviour is not None:
            return await self.behaviour(n)
        return web.Response(text="ok")

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port, reuse_address=True)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def store(sqlite_store: SqliteStore) -> SqliteStore:
    return sqlite_store


def an_event(n: int = 1) -> StoredEvent:
    e = StoredEvent(
        event_id=f"ev_test{n:04d}",
        kind="lapse",
        status="open",
        cc="IR",
        asn=31549,
        domains=("facebook.com", "twitter.com"),
        start=1379322000.0,
        end=None,
        revision=1,
        first_seen_at=time.time(),
        updated_at=time.time(),
        body={},
    )
    doc = {"network_name": "Shatel", "agents": 2, "measurements": 12}
    return dataclasses.replace(e, body=event_json(e, doc))


async def enqueue(store: SqliteStore, hooks: list[WebhookConfig], n: int = 1) -> None:
    changes = [
        EventChange(
            event=an_event(i),
            type="leak.opened",
            deliveries=tuple((subscription_key(h), "leak.opened") for h in hooks),
        )
        for i in range(n)
    ]
    await store.save_changes(changes, time.time())


async def run_until(
    store: SqliteStore,
    alerts: AlertsConfig,
    done: Callable[[], Awaitable[bool]],
    timeout_s: float = 30.0,
) -> None:
    worker = DeliveryWorker(store, alerts, backoff_base_s=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        async with asyncio.timeout(timeout_s):
            while not await done():  # noqa: ASYNC110 - the outbox is in the store
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task


async def states(store: SqliteStore) -> tuple[int, int, int]:
    s = await store.outbox_summary()
    return (sum(x.pending for x in s), sum(x.delivered for x in s), sum(x.failed for x in s))


async def delivered(store: SqliteStore, n: int = 1) -> bool:
    return (await states(store))[1] >= n


async def deliver_one(store: SqliteStore, receiver: Receiver, **hook: Any) -> None:
    """One event for a webhook to ``receiver`` (started here, stopped afterwards), the
    delivery worker running until it is delivered."""
    await receiver.start()
    try:
        config = webhook(receiver.url(), **hook)
        await enqueue(store, [config])
        alerts = AlertsConfig(allow_ranges=LOOPBACK, webhooks=(config,))
        await run_until(store, alerts, lambda: delivered(store))
    finally:
        await receiver.stop()


async def test_a_delivery_is_signed_over_timestamp_and_body(store: SqliteStore) -> None:
    """POST with X-Filterwatch-Timestamp, X-Filterwatch-Signature (sha256= HMAC-SHA256 of
    "<timestamp>.<body>" under the secret) and X-Filterwatch-Delivery (id and revision)."""
    receiver = Receiver()
    await deliver_one(store, receiver)
    [(headers, body)] = receiver.requests
    timestamp = headers["X-Filterwatch-Timestamp"]
    expected = hmac.new(SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    assert headers["X-Filterwatch-Signature"] == "sha256=" + expected.hexdigest()
    assert abs(int(timestamp) - time.time()) < 300
    assert headers["X-Filterwatch-Delivery"] == "ev_test0000:1"
    doc = json.loads(body)
    assert doc["type"] == "leak.opened"
    assert (doc["event"]["id"], doc["event"]["revision"], doc["event"]["kind"]) == (
        "ev_test0000",
        1,
        "lapse",
    )


async def test_a_wrong_secret_does_not_verify(store: SqliteStore) -> None:
    """The signature depends on the secret: a receiver with another secret rejects it."""
    receiver = Receiver()
    await deliver_one(store, receiver)
    [(headers, body)] = receiver.requests
    timestamp = headers["X-Filterwatch-Timestamp"]
    other = hmac.new(b"another-secret-entirely", timestamp.encode() + b"." + body, hashlib.sha256)
    assert headers["X-Filterwatch-Signature"] != "sha256=" + other.hexdigest()


async def test_slack_format_posts_a_text_message(store: SqliteStore) -> None:
    """format: slack posts {"text": ...} naming the ISP, its domains and the event."""
    receiver = Receiver()
    await deliver_one(store, receiver, format="slack")
    [(_, body)] = receiver.requests
    doc = json.loads(body)
    assert list(doc) == ["text"]
    assert "Shatel (AS31549, IR)" in doc["text"] and "facebook.com, twitter.com" in doc["text"]
    assert "ev_test0000" in doc["text"]


async def test_a_receiver_answering_500_is_retried_until_it_takes_it(store: SqliteStore) -> None:
    """Two 500s, then 200: three attempts, delivered once, the same delivery key each time."""

    async def flaky(n: int) -> web.StreamResponse:
        return web.Response(status=500 if n <= 2 else 200)

    receiver = Receiver(flaky)
    await deliver_one(store, receiver)
    assert len(receiver.requests) == 3
    assert {h["X-Filterwatch-Delivery"] for h, _ in receiver.requests} == {"ev_test0000:1"}
    assert await states(store) == (0, 1, 0)


async def test_a_receiver_that_does_not_answer_in_time_is_retried(store: SqliteStore) -> None:
    """The first attempt times out (the receiver sleeps past timeout_s); the next succeeds."""

    async def slow_once(n: int) -> web.StreamResponse:
        if n == 1:
            await asyncio.sleep(5)
        return web.Response(text="ok")

    receiver = Receiver(slow_once)
    await deliver_one(store, receiver, timeout_s=0.5)
    attempts = await store.run_read(
        lambda c: c.execute("SELECT attempts FROM outbox").fetchone()[0]
    )
    assert len(receiver.requests) == 2
    assert attempts == 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_receiver_down_for_a_while_gets_the_delivery_when_it_is_back(
    store: SqliteStore,
) -> None:
    """Connection refused for a while (attempts fail, the row stays pending), then the
    receiver starts on its port and gets the delivery."""
    port = free_port()
    receiver = Receiver()
    hook = webhook(f"http://127.0.0.1:{port}/hook")
    await enqueue(store, [hook])

    async def failed_twice_then_start() -> bool:
        summary = await store.outbox_summary()
        if receiver.runner is None and summary and summary[0].last_error is not None:
            attempts = await store.run_read(
                lambda c: c.execute("SELECT attempts FROM outbox").fetchone()[0]
            )
            if attempts >= 2:
                await receiver.start(port)
        return await delivered(store)

    await run_until(
        store, AlertsConfig(allow_ranges=LOOPBACK, webhooks=(hook,)), failed_twice_then_start
    )
    await receiver.stop()
    assert len(receiver.requests) == 1


async def test_a_private_destination_is_refused_and_never_retried(store: SqliteStore) -> None:
    """Without alerts.allow_ranges a loopback webhook is refused by the outbound check:
    the delivery fails at once, naming the reason, and the receiver hears nothing."""
    receiver = Receiver()
    await receiver.start()
    hook = webhook(receiver.url())
    await enqueue(store, [hook])

    async def failed() -> bool:
        return (await states(store))[2] == 1

    await run_until(store, AlertsConfig(webhooks=(hook,)), failed)
    await receiver.stop()
    assert receiver.requests == []
    [summary] = await store.outbox_summary()
    assert summary.last_error is not None and "destination refused" in summary.last_error
    assert "127.0.0.1" in summary.last_error


async def test_a_delivery_is_given_up_after_max_age(store: SqliteStore) -> None:
    """A receiver that always fails: retried with backoff until max_age, then failed."""

    async def broken(n: int) -> web.StreamResponse:
        return web.Response(status=503)

    receiver = Receiver(broken)
    await receiver.start()
    hook = webhook(receiver.url())
    await enqueue(store, [hook])

    async def failed() -> bool:
        return (await states(store))[2] == 1

    await run_until(
        store, AlertsConfig(allow_ranges=LOOPBACK, max_age="2s", webhooks=(hook,)), failed
    )
    await receiver.stop()
    assert len(receiver.requests) >= 2
    [summary] = await store.outbox_summary()
    assert summary.last_error == "HTTP 503"


async def test_a_hanging_receiver_holds_up_no_other(store: SqliteStore) -> None:
    """While one receiver hangs on every request, another gets all of its deliveries."""
    never = asyncio.Event()

    async def hang(n: int) -> web.StreamResponse:
        await never.wait()
        return web.Response()

    stuck, fine = Receiver(hang), Receiver()
    await stuck.start()
    await fine.start()
    hooks = [webhook(stuck.url(), timeout_s=30), webhook(fine.url())]
    await enqueue(store, hooks, n=5)

    async def fine_got_all() -> bool:
        return len(fine.requests) == 5

    await run_until(store, AlertsConfig(allow_ranges=LOOPBACK, webhooks=tuple(hooks)), fine_got_all)
    assert len(stuck.requests) >= 1
    never.set()
    await stuck.stop()
    await fine.stop()


def test_outbox_rows_name_the_subscription_not_its_url() -> None:
    """The outbox keys a webhook by a hash of its URL (Slack URLs are secrets)."""
    hook = webhook("https://hooks.slack.example/services/T000/B000/XXXXSECRET")
    key = subscription_key(hook)
    assert "XXXXSECRET" not in key and len(key) == 16
    assert key == subscription_key(webhook(hook.url, kinds=("partial",)))
