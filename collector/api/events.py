"""The monitor's records over HTTP: GET /api/v1/events, /api/v1/events/{id},
/api/v1/events/stream (Server-Sent Events) and /feeds/events.atom.

Every endpoint reads the store, so any collector of a fleet answers for the one that runs
the monitor. Query parameters are checked: an unknown one or a bad value is a 400 naming it.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Mapping
from typing import Any, Final
from xml.etree import ElementTree as ET

from aiohttp import web

from collector.alerts.signing import describe
from collector.analysis.model import BLOCKED_METHODS, BucketCount
from collector.api.query import check_parameters
from collector.config import KINDS
from collector.filters import FilterError, Filters, build_filters, parse_time
from collector.state import CONFIG, PSEUDONYM_KEY, STORE, json_error, require_analyst
from collector.store.records import STATUSES, EventQuery, Revision, StoredEvent

MAX_LIMIT: Final = 500
EVIDENCE_MARGIN_BUCKETS: Final = 3
EVIDENCE_MAX_BUCKETS: Final = 400
SSE_POLL_S: Final = 1.0
SSE_KEEPALIVE_S: Final = 15.0
FEED_ENTRIES: Final = 100
_CURSOR_PREFIX: Final = "c"
ATOM: Final = "http://www.w3.org/2005/Atom"

# Set by the app to an asyncio.Event replaced after every saved pass (in-process wakeup);
# the stream also polls, for changes made by the monitor of another collector.
CHANGED: web.AppKey[Any] = web.AppKey("events_changed", object)


def _bad(name: str, problem: str) -> web.HTTPException:
    return json_error(400, "bad_parameter", f"{name}: {problem}")


def _query(request: web.Request, allowed: tuple[str, ...]) -> EventQuery:
    check_parameters(request, allowed)
    params = request.query
    try:
        f = build_filters(cc=params.get("cc"), asn=params.get("asn"), domain=params.get("domain"))
        since = parse_time(params["since"], "since") if "since" in params else None
    except FilterError as exc:
        raise json_error(400, "bad_filter", str(exc).removeprefix("--")) from None
    kind = params.get("kind")
    if kind is not None and kind not in KINDS:
        raise _bad("kind", f"{kind[:40]!r} is not one of {', '.join(KINDS)}")
    status = params.get("status")
    if status is not None and status not in STATUSES:
        raise _bad("status", f"{status[:40]!r} is not one of {', '.join(STATUSES)}")
    limit = 100
    if "limit" in params:
        text = params["limit"]
        if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
            raise _bad("limit", f"expected a whole number from 1 to {MAX_LIMIT}")
        limit = int(text)
    before: int | None = None
    if "cursor" in params:
        cursor = params["cursor"]
        digits = cursor.removeprefix(_CURSOR_PREFIX)
        if not cursor.startswith(_CURSOR_PREFIX) or not digits.isdigit():
            raise _bad("cursor", "not a cursor of this endpoint (use next_cursor as given)")
        before = int(digits)
    return EventQuery(
        cc=f.cc,
        asn=f.asn,
        domain=f.domain.lower() if f.domain else None,
        kind=kind,
        status=status,
        since=since,
        before_created_seq=before,
        limit=limit,
    )


_LIST_PARAMS: Final = ("cc", "asn", "domain", "kind", "status", "since", "cursor", "limit")
_STREAM_PARAMS: Final = ("cc", "asn", "domain", "kind", "status", "last_event_id")


async def list_events(request: web.Request) -> web.Response:
    await require_analyst(request)
    query = _query(request, _LIST_PARAMS)
    found = await request.app[STORE].list_events(query)
    more = len(found) == query.limit
    return web.json_response(
        {
            "events": [e.body for e in found],
            "next_cursor": f"{_CURSOR_PREFIX}{found[-1].created_seq}" if more else None,
        }
    )


async def get_event(request: web.Request) -> web.Response:
    await require_analyst(request)
    check_parameters(request, ())
    event_id = request.match_info["event_id"]
    got = await request.app[STORE].get_event(event_id)
    if got is None:
        raise json_error(404, "not_found", f"no event {event_id[:60]!r} in this collector")
    event, revisions = got
    return web.json_response(
        {
            "event": event.body,
            "revisions": [
                {
                    "revision": r.revision,
                    "type": r.type,
                    "at": r.payload["event"]["updated_at"],
                    "event": r.payload["event"],
                }
                for r in revisions
            ],
            "evidence": await _evidence(request, event),
        }
    )


async def _evidence(request: web.Request, event: StoredEvent) -> dict[str, Any]:
    """Per domain and bucket, around the event: the ISP's counts and the country's (its
    other ISPs), from the store as it is now: what anyone can check against an export."""
    bucket_s = request.app[CONFIG].monitor.bucket_s
    since = (math.floor(event.start / bucket_s) - EVIDENCE_MARGIN_BUCKETS) * bucket_s
    last = event.end if event.end is not None else time.time()
    until = (math.floor(last / bucket_s) + 1 + EVIDENCE_MARGIN_BUCKETS) * bucket_s
    until = min(until, since + EVIDENCE_MAX_BUCKETS * bucket_s)
    store, key = request.app[STORE], request.app[PSEUDONYM_KEY]
    domains: dict[str, list[dict[str, Any]]] = {}
    for domain in event.domains:
        filters = Filters(cc=event.cc, domain=domain, since=since, until=until, bucket_s=bucket_s)
        buckets = await store.aggregate(filters, key)
        domains[domain] = _evidence_rows(buckets, event.asn)
    return {
        "bucket_s": bucket_s,
        "since": _iso(since),
        "until": _iso(until),
        "domains": domains,
    }


def _split(counts: Mapping[str, int]) -> tuple[int, int]:
    ok = counts.get("ok", 0)
    blocked = sum(n for v, n in counts.items() if v in BLOCKED_METHODS)
    return ok, blocked


def _evidence_rows(buckets: list[BucketCount], asn: int) -> list[dict[str, Any]]:
    by_start: dict[float, list[BucketCount]] = {}
    for b in buckets:
        by_start.setdefault(b.bucket_start, []).append(b)
    rows = []
    for start in sorted(by_start):
        isp: dict[str, Any] | None = None
        measured = blocking = country_ok = country_blocked = 0
        for b in by_start[start]:
            ok, blocked = _split(b.counts)
            if b.asn == asn:
                isp = {
                    "ok": ok,
                    "blocked": blocked,
                    "site_down": b.counts.get("site_down", 0),
                    "inconclusive": b.counts.get("inconclusive", 0),
                    "agents": b.agents,
                    "accessible_agents": b.accessible_agents,
                    "example_measurement_ids": list(b.example_ids),
                }
                continue
            if ok + blocked:
                measured += 1
                blocking += 1 if blocked > ok else 0
            country_ok += ok
            country_blocked += blocked
        rows.append(
            {
                "start": _iso(start),
                "isp": isp,
                "country": {
                    "isps_measured": measured,
                    "isps_blocking": blocking,
                    "ok": country_ok,
                    "blocked": country_blocked,
                },
            }
        )
    return rows


def _iso(epoch: float) -> str:
    from collector.analysis import iso_utc

    return iso_utc(epoch)


def _sse(revision: Revision) -> bytes:
    data = json.dumps(revision.payload, sort_keys=True, separators=(",", ":"))
    return f"id: {revision.seq}\nevent: {revision.type}\ndata: {data}\n\n".encode()


async def open_event_stream(
    request: web.Request, *, retry_ms: int, cache_control: str
) -> web.StreamResponse:
    """A Server-Sent Events response, sent off with the client's reconnection delay; proxies
    are asked not to buffer it (``X-Accel-Buffering``)."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": cache_control,
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    await response.write(f"retry: {retry_ms}\n\n".encode())
    return response


async def stream(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events of every change after ``Last-Event-ID`` (or from now on)."""
    await require_analyst(request)
    query = _query(request, _STREAM_PARAMS)
    store = request.app[STORE]
    resume = request.headers.get("Last-Event-ID", request.query.get("last_event_id"))
    if resume is not None:
        if not resume.strip().isdigit():
            raise _bad("Last-Event-ID", "expected the id of an event of this stream")
        seq = int(resume)
    else:
        seq = await store.last_seq()
    response = await open_event_stream(request, retry_ms=2000, cache_control="no-cache")
    quiet_since = time.monotonic()
    while True:
        revisions = await store.revisions_after(seq)
        for r in revisions:
            seq = r.seq
            if query.matches(r.payload["event"]):
                await response.write(_sse(r))
                quiet_since = time.monotonic()
        if revisions:
            continue
        if time.monotonic() - quiet_since > SSE_KEEPALIVE_S:
            await response.write(b": keepalive\n\n")
            quiet_since = time.monotonic()
        changed = request.app.get(CHANGED)
        waiter = changed() if callable(changed) else None
        try:
            async with asyncio.timeout(SSE_POLL_S):
                if waiter is not None:
                    await waiter.wait()
                else:
                    await asyncio.sleep(SSE_POLL_S)
        except TimeoutError:
            pass


async def atom_feed(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    if not config.alerts.public_feed:
        await require_analyst(request)
    check_parameters(request, ("cc",))
    cc = request.query.get("cc")
    if cc is not None:
        try:
            cc = build_filters(cc=cc).cc
        except FilterError as exc:
            raise json_error(400, "bad_filter", str(exc).removeprefix("--")) from None
    revisions = await request.app[STORE].latest_revisions(cc, FEED_ENTRIES)
    body = atom_document(revisions, str(request.url.with_query(None)), cc)
    return web.Response(body=body, content_type="application/atom+xml", charset="utf-8")


def atom_document(revisions: list[Revision], self_url: str, cc: str | None) -> bytes:
    """An Atom 1.0 feed (RFC 4287): one entry per change, newest first."""
    ET.register_namespace("", ATOM)

    def sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        el = ET.SubElement(parent, f"{{{ATOM}}}{tag}", attrs)
        if text is not None:
            el.text = text
        return el

    feed = ET.Element(f"{{{ATOM}}}feed")
    sub(feed, "title", "filterwatch events" + (f" ({cc})" if cc else ""))
    sub(feed, "id", "urn:filterwatch:events" + (f":{cc}" if cc else ""))
    sub(feed, "link", rel="self", href=self_url)
    updated = revisions[0].payload["event"]["updated_at"] if revisions else _iso(0)
    sub(feed, "updated", updated)
    author = sub(feed, "author")
    sub(author, "name", "filterwatch collector")
    for r in revisions:
        event = r.payload["event"]
        entry = sub(feed, "entry")
        sub(entry, "id", f"urn:filterwatch:event:{event['id']}:{event['revision']}")
        sub(entry, "title", describe(r.payload))
        sub(entry, "updated", event["updated_at"])
        sub(entry, "category", term=r.type)
        sub(entry, "category", term=str(event.get("kind")))
        sub(entry, "content", json.dumps(event, sort_keys=True, indent=2), type="text")
    text = ET.tostring(feed, encoding="unicode")
    return ('<?xml version="1.0" encoding="utf-8"?>\n' + text).encode("utf-8")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/events", list_events)
    app.router.add_get("/api/v1/events/stream", stream)
    app.router.add_get("/api/v1/events/{event_id}", get_event)
    app.router.add_get("/feeds/events.atom", atom_feed)
