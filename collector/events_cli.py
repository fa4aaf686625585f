"""``filterwatch collector events`` and ``filterwatch collector alerts status``: the
monitor's records and the webhook outbox, read from the collector's store."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from collector.config import KINDS
from collector.filters import FilterError, build_filters, parse_time
from collector.query_cli import add_config_argument
from collector.store.records import STATUSES, EventQuery, StoredEvent
from shared.errors import FilterwatchError

FOLLOW_POLL_S = 1.0


def register(cmds: Any) -> None:
    c: argparse.ArgumentParser = cmds.add_parser(
        "events",
        help="print the monitor's event records",
        description="The monitor's findings as records (stable ids, revisions), newest first.",
    )
    group = c.add_argument_group("filters")
    group.add_argument("--cc", help="country code, e.g. IR")
    group.add_argument("--asn", help="AS number, e.g. 58224")
    group.add_argument("--domain", help="a domain the event names")
    group.add_argument("--kind", choices=KINDS)
    group.add_argument("--status", choices=STATUSES)
    group.add_argument("--since", help="events going on at or after: ISO 8601 or an age like 24h")
    c.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    c.add_argument("--follow", action="store_true", help="then print each change as it comes")
    c.add_argument("--json", action="store_true", help="JSON (with --follow: one change a line)")
    add_config_argument(c)
    c.set_defaults(handler=events_command)

    alerts = cmds.add_parser("alerts", help="webhook deliveries")
    sub = alerts.add_subparsers(dest="alerts_command", metavar="COMMAND")
    status = sub.add_parser("status", help="pending, failed and delivered webhook deliveries")
    status.add_argument("--json", action="store_true")
    add_config_argument(status)
    status.set_defaults(handler=alerts_status_command)


def _query(args: argparse.Namespace) -> EventQuery:
    f = build_filters(cc=args.cc, asn=args.asn, domain=args.domain)
    since = parse_time(args.since, "--since") if args.since else None
    if not 1 <= args.limit <= 10_000:
        raise FilterError("--limit: expected 1 to 10000")
    return EventQuery(
        cc=f.cc,
        asn=f.asn,
        domain=f.domain.lower() if f.domain else None,
        kind=args.kind,
        status=args.status,
        since=since,
        limit=args.limit,
    )


def event_line(body: dict[str, Any], change: str | None = None) -> str:
    """One event in a line: id, revision, status, kind, where, what, when, how many saw it."""
    where = f"{body['cc']} AS{body['asn']} {body.get('network_name') or ''}".rstrip()
    when = f"{body['start']} -> {body['end'] or 'ongoing'}"
    agents = body.get("agents")
    parts = [
        body["id"],
        f"rev {body['revision']}",
        f"{body['status']:<9}",
        f"{body['kind']:<14}",
        where,
        ",".join(body.get("domains", [])),
        when,
    ]
    if agents is not None:
        parts.append(f"agents {agents}")
    line = "  ".join(parts)
    return f"{change:<15} {line}" if change else line


def _store(config_path: Path | None) -> Any:
    from collector.app import make_store
    from collector.config import load_collector_config

    return make_store(load_collector_config(config_path))


def events_command(args: argparse.Namespace) -> int:
    try:
        query = _query(args)
    except FilterError as exc:
        print(f"filterwatch: {exc}", file=sys.stderr)
        return 2

    store = _store(args.config)  # the configuration is read before the loop starts

    async def run() -> int:
        await store.open()
        try:
            start_seq = await store.last_seq()
            found: list[StoredEvent] = await store.list_events(query)
            if args.json and not args.follow:
                print(json.dumps({"events": [e.body for e in found]}, indent=2, sort_keys=True))
            else:
                for e in reversed(found):  # oldest first, as a log reads
                    print(json.dumps(e.body, sort_keys=True) if args.json else event_line(e.body))
            if not args.follow:
                return 0
            sys.stdout.flush()
            seq = start_seq
            while True:
                for r in await store.revisions_after(seq):
                    seq = r.seq
                    event = r.payload["event"]
                    if not query.matches(event):
                        continue
                    if args.json:
                        print(json.dumps(r.payload, sort_keys=True), flush=True)
                    else:
                        print(event_line(event, r.type), flush=True)
                await asyncio.sleep(FOLLOW_POLL_S)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        return 0


def alerts_status_command(args: argparse.Namespace) -> int:
    from collector.alerts.subscriptions import shown_url, subscription_key
    from collector.config import load_collector_config

    try:
        config = load_collector_config(args.config)
    except FilterwatchError as exc:
        print(f"filterwatch: {exc}", file=sys.stderr)
        return 2

    async def run() -> list[Any]:
        from collector.app import make_store

        store = make_store(config)
        await store.open()
        try:
            return list(await store.outbox_summary())
        finally:
            await store.close()

    summaries = {s.subscription: s for s in asyncio.run(run())}
    now = time.time()
    rows = []
    for webhook in config.alerts.webhooks:
        key = subscription_key(webhook)
        s = summaries.pop(key, None)
        rows.append(
            {
                "subscription": key,
                "url": shown_url(webhook),
                "format": webhook.format,
                "kinds": list(webhook.filters.kinds),
                "pending": s.pending if s else 0,
                "delivered": s.delivered if s else 0,
                "failed": s.failed if s else 0,
                "oldest_pending_age_s": (
                    round(now - s.oldest_pending_at, 1) if s and s.oldest_pending_at else None
                ),
                "last_delivered_at": s.last_delivered_at if s else None,
                "last_error": s.last_error if s else None,
            }
        )
    for key, s in summaries.items():  # deliveries of webhooks no longer configured
        rows.append(
            {
                "subscription": key,
                "url": None,
                "format": None,
                "kinds": [],
                "pending": s.pending,
                "delivered": s.delivered,
                "failed": s.failed,
                "oldest_pending_age_s": None,
                "last_delivered_at": s.last_delivered_at,
                "last_error": s.last_error,
            }
        )
    if args.json:
        print(json.dumps({"webhooks": rows}, indent=2))
        return 0
    if not rows:
        print("no webhooks configured (alerts.webhooks) and no deliveries in the outbox")
        return 0
    for r in rows:
        age = r["oldest_pending_age_s"]
        print(
            f"{r['subscription']}  {r['url'] or '(no longer configured)'}"
            f"  pending {r['pending']}  delivered {r['delivered']}  failed {r['failed']}"
            + (f"  oldest pending {age:.0f}s" if age is not None else "")
            + (f"  last error: {r['last_error']}" if r["last_error"] else "")
        )
    return 0
