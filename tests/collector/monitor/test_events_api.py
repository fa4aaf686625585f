"""GET /api/v1/events, /api/v1/events/{id}, /api/v1/events/stream and /feeds/events.atom on
the real app (127.0.0.1, SQLite in tmp_path); the records come from a real monitor pass
whose clock the test sets (the app's own monitor is off so that only the test moves time)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any, cast
from xml.etree import ElementTree as ET

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from collector.app import make_app
from collector.config import CollectorConfig
from collector.monitor.runner import Monitor
from collector.state import PSEUDONYM_KEY, STORE
from collector.store.sqlite import SqliteStore
from tests.collector.monitor.helpers import FakeClock, at, config, rounds, upload

TOKEN = "fwa_test-analyst-token-for-events"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FB, TW = "fb.example", "tw.example"
ATOM = "{http://www.w3.org/2005/Atom}"

Client = TestClient[web.Request, web.Application]


def app_config(tmp_path: Path, **alerts: Any) -> CollectorConfig:
    cfg = config(tmp_path)
    return dataclasses.replace(
        cfg,
        analyst_tokens=(TOKEN,),
        monitor=dataclasses.replace(cfg.monitor, enabled=False),
        alerts=dataclasses.replace(cfg.alerts, **alerts),
    )


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, tmp_path: Path) -> Client:
    return await aiohttp_client(make_app(app_config(tmp_path)))


async def monitor_of(client: Client, clock: FakeClock) -> Monitor:
    app = client.app
    # the app of these tests is on SQLite (in tmp_path): its store has a path
    cfg = config(Path(str(cast(SqliteStore, app[STORE]).path)).parent)
    return Monitor(app[STORE], cfg, app[PSEUDONYM_KEY], clock=clock)


async def two_leaks(client: Client) -> tuple[Monitor, FakeClock]:
    """Beta leaks fb.example in buckets 5-7 (then closes); Alpha leaks tw.example from 12."""
    store = client.app[STORE]
    clock = FakeClock(at(0))
    monitor = await monitor_of(client, clock)
    await upload(store, rounds(range(0, 5)))
    await upload(store, rounds(range(5, 8), leaking={200: {FB}}))
    clock.bucket(7)
    await monitor.step()
    await upload(store, rounds(range(8, 12)))
    await upload(store, rounds(range(12, 14), leaking={100: {TW}}))
    clock.bucket(13)
    await monitor.step()
    return monitor, clock


async def test_events_are_listed_newest_first_with_filters(client: Client) -> None:
    """Records by cc, asn, domain, kind and status; newest first."""
    await two_leaks(client)
    resp = await client.get("/api/v1/events", headers=AUTH)
    assert resp.status == 200
    events = (await resp.json())["events"]
    assert [(e["asn"], e["status"]) for e in events] == [(100, "open"), (200, "closed")]
    for query, expected in (
        ("asn=200", [200]),
        ("domain=tw.example", [100]),
        ("status=open", [100]),
        ("kind=lapse&cc=IR", [100, 200]),
        ("cc=DE", []),
        ("kind=partial", []),
    ):
        resp = await client.get(f"/api/v1/events?{query}", headers=AUTH)
        assert [e["asn"] for e in (await resp.json())["events"]] == expected, query


async def test_the_cursor_pages_through_every_event_once(client: Client) -> None:
    """limit=1 and next_cursor: each record once, then no cursor."""
    await two_leaks(client)
    seen: list[str] = []
    url = "/api/v1/events?limit=1"
    while True:
        doc = await (await client.get(url, headers=AUTH)).json()
        seen.extend(e["id"] for e in doc["events"])
        if doc["next_cursor"] is None:
            break
        url = f"/api/v1/events?limit=1&cursor={doc['next_cursor']}"
    assert len(seen) == 2 and len(set(seen)) == 2


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("colour=red", "colour"),
        ("kind=leaky", "kind"),
        ("status=maybe", "status"),
        ("cursor=abc", "cursor"),
        ("asn=AS-x", "asn"),
        ("limit=0", "limit"),
        ("since=yesterday-ish", "since"),
    ],
)
async def test_bad_parameters_are_a_400_naming_them(client: Client, query: str, named: str) -> None:
    """A bad or unknown parameter is a JSON 400 that names it."""
    resp = await client.get(f"/api/v1/events?{query}", headers=AUTH)
    assert resp.status == 400
    body = await resp.json()
    assert named in body["detail"]


async def test_events_need_an_analyst_token(client: Client) -> None:
    """No token: 401 on the list, a record, the stream and (not public) the feed."""
    for path in (
        "/api/v1/events",
        "/api/v1/events/ev_x",
        "/api/v1/events/stream",
        "/feeds/events.atom",
    ):
        assert (await client.get(path)).status == 401, path


async def test_an_event_shows_its_revisions_and_the_evidence_around_it(client: Client) -> None:
    """GET /api/v1/events/{id}: every revision, and per bucket the ISP's and the other
    ISPs' counts, from a few buckets before the start to a few after the end."""
    await two_leaks(client)
    events = (await (await client.get("/api/v1/events?asn=200", headers=AUTH)).json())["events"]
    resp = await client.get(f"/api/v1/events/{events[0]['id']}", headers=AUTH)
    assert resp.status == 200
    doc = await resp.json()
    assert [(r["revision"], r["type"]) for r in doc["revisions"]] == [
        (1, "leak.opened"),
        (2, "leak.closed"),
    ]
    assert doc["event"]["revision"] == 2
    rows = {r["start"]: r for r in doc["evidence"]["domains"][FB]}
    leaking = rows["2027-01-15T08:05:00Z"]
    assert leaking["isp"]["ok"] == 2 and leaking["isp"]["accessible_agents"] == 2
    assert leaking["country"] == {"isps_measured": 2, "isps_blocking": 2, "ok": 0, "blocked": 4}
    before = rows["2027-01-15T08:02:00Z"]
    assert before["isp"]["ok"] == 0 and before["isp"]["blocked"] == 2
    assert (await client.get("/api/v1/events/ev_nothing", headers=AUTH)).status == 404


async def read_sse(resp: Any, n: int) -> list[tuple[int, str, str]]:
    """The next ``n`` events of an SSE response: (id, event, data)."""
    out: list[tuple[int, str, str]] = []
    fields: dict[str, str] = {}
    async with asyncio.timeout(20):
        while len(out) < n:
            line = (await resp.content.readline()).decode().rstrip("\n")
            if not line:
                if "id" in fields:
                    out.append((int(fields["id"]), fields["event"], fields["data"]))
                fields = {}
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            fields[name] = value
    return out


async def test_the_stream_resumes_after_last_event_id(client: Client) -> None:
    """SSE from Last-Event-ID 0 gives every change; reconnecting with the last id seen
    gives only the changes made since, the first of them at once."""
    monitor, clock = await two_leaks(client)
    resp = await client.get("/api/v1/events/stream", headers={**AUTH, "Last-Event-ID": "0"})
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    first = await read_sse(resp, 3)
    resp.close()
    assert [e[1] for e in first] == ["leak.opened", "leak.closed", "leak.opened"]
    last_id = first[-1][0]

    await upload(client.app[STORE], rounds(range(14, 17)))
    clock.bucket(16)
    await monitor.step()
    resp = await client.get(
        "/api/v1/events/stream", headers={**AUTH, "Last-Event-ID": str(last_id)}
    )
    [(seq, kind, data)] = await read_sse(resp, 1)
    resp.close()
    assert seq == last_id + 1 and kind == "leak.closed" and '"asn":100' in data


async def test_the_atom_feed_parses_and_lists_every_change(client: Client) -> None:
    """An Atom document (xml.etree parses it) with one entry per change, newest first,
    and the cc filter."""
    await two_leaks(client)
    resp = await client.get("/feeds/events.atom", headers=AUTH)
    assert resp.status == 200 and resp.content_type == "application/atom+xml"
    feed = ET.fromstring(await resp.read())
    entries = feed.findall(f"{ATOM}entry")
    assert len(entries) == 3
    titles = [e.findtext(f"{ATOM}title") or "" for e in entries]
    assert titles[0].startswith("Opened: Alpha Net (AS100, IR)")
    assert all(e.findtext(f"{ATOM}id", "").startswith("urn:filterwatch:event:") for e in entries)
    other = ET.fromstring(await (await client.get("/feeds/events.atom?cc=DE", headers=AUTH)).read())
    assert other.findall(f"{ATOM}entry") == []


async def test_a_public_feed_needs_no_token(aiohttp_client: Any, tmp_path: Path) -> None:
    """alerts.public_feed: true serves the feed to anyone."""
    client = await aiohttp_client(make_app(app_config(tmp_path, public_feed=True)))
    resp = await client.get("/feeds/events.atom")
    assert resp.status == 200
    assert ET.fromstring(await resp.read()).tag == f"{ATOM}feed"
