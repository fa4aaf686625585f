"""Which subscription hears of which change, and as what. Pure."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from urllib.parse import urlsplit

from collector.config import WebhookConfig
from collector.monitor.reconcile import Revised
from collector.store.records import EventChange, StoredEvent


def subscription_key(webhook: WebhookConfig) -> str:
    """A stable name for a webhook in the outbox: a hash of its URL (never the URL, which
    for Slack-style hooks is itself a secret)."""
    return hashlib.sha256(webhook.url.encode("utf-8")).hexdigest()[:16]


def shown_url(webhook: WebhookConfig) -> str:
    """The webhook as people may see it in status output and logs: scheme and host."""
    parts = urlsplit(webhook.url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/…"


def matches(webhook: WebhookConfig, event: StoredEvent) -> bool:
    f = webhook.filters
    if event.kind not in f.kinds:
        return False
    if f.cc and event.cc not in f.cc:
        return False
    if f.asn and event.asn not in f.asn:
        return False
    if f.domain:
        wanted = f.domain  # lower-case: the loader made them so
        if not any(d in wanted or any(d.endswith("." + w) for w in wanted) for d in event.domains):
            return False
    return True


def route(revised: Revised, webhooks: Sequence[WebhookConfig]) -> EventChange:
    """The change with its deliveries: a subscription that matches the record now but did
    not match its previous revision (an uncorroborated leak that a second volunteer
    corroborates, for a subscription to lapses) is told that it opened."""
    deliveries: list[tuple[str, str]] = []
    for webhook in webhooks:
        now_matches = matches(webhook, revised.event)
        before = revised.previous is not None and matches(webhook, revised.previous)
        if now_matches and not before:
            if revised.type == "leak.retracted":
                continue  # never told of it: nothing to take back
            deliveries.append((subscription_key(webhook), "leak.opened"))
        elif before:
            deliveries.append((subscription_key(webhook), revised.type))
    return EventChange(event=revised.event, type=revised.type, deliveries=tuple(deliveries))
