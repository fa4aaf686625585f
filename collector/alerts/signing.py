"""The bodies and signatures of webhook requests (docs/alerts.md shows the receiver side)."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

SIGNATURE_HEADER = "X-Filterwatch-Signature"
TIMESTAMP_HEADER = "X-Filterwatch-Timestamp"
DELIVERY_HEADER = "X-Filterwatch-Delivery"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`` under ``secret``."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """What a receiver does (docs/alerts.md): recompute and compare in constant time."""
    if not timestamp.isdigit():
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), signature)


def json_body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8")


_VERBS = {
    "leak.opened": "opened",
    "leak.updated": "updated",
    "leak.closed": "closed",
    "leak.retracted": "retracted",
}


def describe(payload: dict[str, Any]) -> str:
    """One line a person reads in a chat channel or a feed reader."""
    e = payload["event"]
    who = f"{e.get('network_name') or 'AS' + str(e['asn'])} (AS{e['asn']}, {e['cc']})"
    domains = ", ".join(e.get("domains", []))
    start = str(e.get("start", "")).replace("T", " ").replace("Z", " UTC")
    agents = e.get("agents")
    seen = f"; {agents} volunteer(s) saw it" if agents else ""
    kind = e.get("kind", "lapse")
    kind_text = {
        "lapse": "stopped filtering",
        "uncorroborated": "may have stopped filtering (one volunteer only)",
        "unfiltered": "does not filter (others do)",
        "lagging": "filters later than the rest of the country",
        "partial": "filters only partly",
    }.get(kind, kind)
    verb = _VERBS.get(str(payload["type"]), str(payload["type"]))
    if payload["type"] == "leak.retracted":
        return f"Retracted: {who} {kind_text} {domains} — late data shows it was not so ({e['id']})"
    if payload["type"] == "leak.closed":
        end = str(e.get("end", "")).replace("T", " ").replace("Z", " UTC")
        ref = f"({e['id']}, revision {e['revision']})"
        return f"Closed: {who} filters {domains} again since {end} {ref}"
    return (
        f"{verb.capitalize()}: {who} {kind_text} {domains} since {start}{seen}"
        f" ({e['id']}, revision {e['revision']})"
    )


def slack_body(payload: dict[str, Any]) -> bytes:
    """``{"text": ...}``: what Slack, Mattermost and Rocket.Chat incoming webhooks take."""
    return json.dumps({"text": "filterwatch: " + describe(payload)}).encode("utf-8")
