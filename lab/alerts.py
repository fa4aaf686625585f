"""The lab's webhook receiver and the score of the alerts it received.

The receiver listens in the lab's internet, beside the collector, and the collector is
configured to send it every lapse (its monitor on the lab's round-wide buckets). Each
request is checked as a subscriber would check it (the signature over timestamp and body)
and kept with the wall time it arrived. The score: for every leak the collector found, the
seconds from the leak's true start (the start of its first round) to the arrival of its
``leak.opened``; and every alert about something that was not a leak.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from lab.netns import Namespaces
from lab.plan import COLLECTOR_ADDRESS, INTERNET_NS
from lab.scenario import Scenario
from lab.score import Match, _same_domain, to_rounds
from lab.truth import ExpectedEvent

ALERTS_PORT = 8479
MONITOR_INTERVAL_S = 0.25  # the lab is small: passes cost little, and latency is measured


@dataclass
class Alert:
    received_at: float
    verified: bool
    payload: dict[str, Any]


@dataclass
class AlertReceiver:
    """An aiohttp receiver on COLLECTOR_ADDRESS:ALERTS_PORT in the lab's internet."""

    secret: str = field(default_factory=lambda: secrets.token_hex(16))
    alerts: list[Alert] = field(default_factory=list)
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{COLLECTOR_ADDRESS}:{ALERTS_PORT}/alerts"

    async def start(self, ns: Namespaces) -> None:
        app = web.Application()
        app.router.add_post("/alerts", self._receive)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.SockSite(
            self.runner, ns.listener(INTERNET_NS, COLLECTOR_ADDRESS, ALERTS_PORT)
        ).start()

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def _receive(self, request: web.Request) -> web.Response:
        arrived = time.time()
        body = await request.read()
        timestamp = request.headers.get("X-Filterwatch-Timestamp", "")
        mac = hmac.new(self.secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
        signature = request.headers.get("X-Filterwatch-Signature", "")
        verified = hmac.compare_digest("sha256=" + mac.hexdigest(), signature)
        try:
            payload = json.loads(body)
        except ValueError:
            return web.Response(status=400)
        self.alerts.append(Alert(arrived, verified, payload))
        return web.Response(text="ok")

    def collector_config(self, round_seconds: float) -> dict[str, Any]:
        """The collector's ``monitor`` and ``alerts`` keys for the lab."""
        return {
            "monitor": {
                "interval_s": MONITOR_INTERVAL_S,
                "bucket": f"{round_seconds:g}s",
                "window": "1h",
            },
            "alerts": {
                "allow_ranges": [f"{COLLECTOR_ADDRESS}/32"],
                "webhooks": [
                    {"url": self.url, "secret": self.secret, "filters": {"kinds": ["lapse"]}}
                ],
            },
        }


def score_alerts(
    scenario: Scenario,
    expected: Sequence[ExpectedEvent],
    matches: Iterable[Match],
    alerts: Sequence[Alert],
    t0: float,
) -> dict[str, Any]:
    """``alerts`` of ``lab run --json``: per found leak, seconds from its true start to its
    ``leak.opened``; alerts about anything that was not a leak; unsigned alerts."""
    rs, rounds = scenario.round_seconds, scenario.rounds
    opened = [a for a in alerts if a.payload.get("type") == "leak.opened"]
    leaks = []
    for m in matches:
        e = m.expected
        true_start = t0 + (e.start_round - 1) * rs
        arrivals = [
            a.received_at
            for a in opened
            for f in to_rounds([a.payload["event"]], t0, rs, rounds)
            if f.asn == e.asn
            and _same_domain(e.domain, f.domain)
            and f.start_round <= e.end_round + 1
            and f.end_round >= e.start_round - 1
        ]
        first = min(arrivals, default=None)
        seconds = None if first is None else round(first - true_start, 2)
        leaks.append(
            {
                "isp": e.isp,
                "asn": e.asn,
                "domain": e.domain,
                "true_start_round": e.start_round,
                "seconds_to_alert": seconds,
                "rounds_to_alert": None if seconds is None else round(seconds / rs, 2),
                "within_two_rounds": seconds is not None and seconds <= 2 * rs,
            }
        )
    corroborated = [e for e in expected if e.corroborated]
    not_leaks = []
    for a in alerts:
        for f in to_rounds([a.payload["event"]], t0, rs, rounds):
            real = any(
                e.asn == f.asn
                and _same_domain(e.domain, f.domain)
                and f.start_round <= e.end_round + 1
                and f.end_round >= e.start_round - 1
                for e in corroborated
            )
            if not real and a.payload.get("type") != "leak.retracted":
                not_leaks.append(
                    {
                        "type": a.payload.get("type"),
                        "id": a.payload["event"].get("id"),
                        "asn": f.asn,
                        "domain": f.domain,
                        "rounds": [f.start_round, f.end_round],
                    }
                )
    return {
        "received": len(alerts),
        "unsigned": sum(1 for a in alerts if not a.verified),
        "leaks": leaks,
        "non_leak_alerts": not_leaks,
    }


def alerts_text(doc: dict[str, Any]) -> str:
    """Lines for the report: when each found leak's alert arrived."""
    alerts = doc.get("alerts")
    if not alerts:
        return ""
    lines = ["Alerts (webhook in the lab's internet, signed):"]
    for a in alerts["leaks"]:
        if a["seconds_to_alert"] is None:
            lines.append(f"  {a['isp']} {a['domain']}: no alert arrived")
            continue
        lines.append(
            f"  {a['isp']} {a['domain']}: leak.opened arrived {a['seconds_to_alert']:.1f}s"
            f" after the leak began (round {a['true_start_round']}; "
            f"{a['rounds_to_alert']:.1f} rounds)"
        )
    for n in alerts["non_leak_alerts"]:
        lines.append(f"  alert for something that was not a leak: {n}")
    return "\n".join(lines)
