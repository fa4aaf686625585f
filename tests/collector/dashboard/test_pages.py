"""The dashboard over HTTP against a real collector on loopback: sign-in and sessions,
CSRF, the rate limit, security headers, escaping, and what the pages say."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import sqlite3
import ssl
import time
from pathlib import Path
from typing import Any

import aiohttp
import trustme

from collector.app import make_app
from collector.auth import hash_secret
from collector.dashboard.records import Records
from collector.state import STORE
from shared.schema import Blocking
from tests.collector.analysis.scenarios import Isp
from tests.collector.dashboard import dataset
from tests.collector.dashboard.conftest import (
    TOKEN,
    Collector,
    csrf_of,
    dashboard_config,
    wait_for_record,
)

PAGES = (
    "/",
    "/countries/IR",
    "/countries/IR/domains/twitter.com",
    "/agents",
)


async def _session(collector: Collector, token: str = TOKEN) -> aiohttp.ClientSession:
    """A client signed in with ``token`` (raises if it was refused)."""
    client = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with client.get(collector.url("/login")) as resp:
        csrf = csrf_of(await resp.text())
    async with client.post(
        collector.url("/login"), data={"csrf": csrf, "token": token}, allow_redirects=False
    ) as resp:
        assert resp.status == 303
        assert "fw_session" in resp.cookies, "no session"
    return client


async def _login_once(
    client: aiohttp.ClientSession, url: str, token: str
) -> aiohttp.ClientResponse:
    async with client.get(url + "/login") as resp:
        csrf = csrf_of(await resp.text())
    resp = await client.post(
        url + "/login", data={"csrf": csrf, "token": token}, allow_redirects=False
    )
    await resp.read()
    return resp


async def _status_with(cookie: str, url: str) -> int:
    """The status of a GET of ``url`` by a client that only has this session cookie."""
    async with (
        aiohttp.ClientSession(cookies={"fw_session": cookie}) as client,
        client.get(url, allow_redirects=False) as resp,
    ):
        return resp.status


async def test_pages_need_a_session(collector: Collector) -> None:
    """Without a session, / and every page redirect to the sign-in form (keeping where
    they were going); the live JSON answers 401."""
    async with aiohttp.ClientSession() as client:
        async with client.get(collector.url("/"), allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/login"
        async with client.get(collector.url("/countries/IR"), allow_redirects=False) as resp:
            assert resp.headers["Location"] == "/login?next=/countries/IR"
        async with client.get(collector.url("/live.json?cc=IR")) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"] == "unauthorized"


async def test_a_form_posted_without_a_session_goes_to_sign_in(collector: Collector) -> None:
    """A revocation posted after the session ended changes nothing and leads to sign-in."""
    async with (
        aiohttp.ClientSession() as client,
        client.post(
            collector.url("/agents/revoke"), data={"agent": "0" * 16}, allow_redirects=False
        ) as resp,
    ):
        assert resp.status == 303 and resp.headers["Location"] == "/login"
    assert not any(a.revoked for a in await Records(collector.app[STORE]).enrolled_agents())


async def test_the_session_cookie_is_httponly_strict_and_expires(collector: Collector) -> None:
    """Signing in sets an HttpOnly, SameSite=Strict cookie with a Max-Age, not Secure over
    plain HTTP; the store keeps only its hash."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        resp = await _login_once(client, collector.url("").rstrip("/"), TOKEN)
        assert resp.status == 303 and resp.headers["Location"] == "/"
        header = next(h for h in resp.headers.getall("Set-Cookie") if h.startswith("fw_session="))
        cookie = header.split(";")[0].split("=", 1)[1]
        attributes = {a.strip().split("=")[0].lower() for a in header.split(";")[1:]}
        assert {"httponly", "samesite", "max-age", "path"} <= attributes
        assert "SameSite=Strict" in header
        assert int(re.search(r"Max-Age=(\d+)", header).group(1)) > 3600  # type: ignore[union-attr]
        assert "secure" not in attributes
    db = sqlite3.connect(_db(collector))
    hashes = [r[0] for r in db.execute("SELECT session_hash FROM dashboard_sessions")]
    db.close()
    assert hashes == [hash_secret(cookie)]
    assert cookie.encode() not in await asyncio.to_thread(_db(collector).read_bytes)


def _db(collector: Collector) -> Path:
    from collector.state import CONFIG

    return collector.app[CONFIG].database.sqlite_path


async def test_over_tls_the_cookie_is_secure(aiohttp_server: Any, tmp_path: Path) -> None:
    """Served over HTTPS (a trustme CA), the session cookie is also Secure."""
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    app = make_app(dashboard_config(tmp_path))
    server = await aiohttp_server(app, host="127.0.0.1", port=0, ssl=server_ctx)
    url = f"https://127.0.0.1:{server.port}"
    connector = aiohttp.TCPConnector(ssl=client_ctx)
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.CookieJar(unsafe=True)
    ) as client:
        resp = await _login_once(client, url, TOKEN)
        header = next(h for h in resp.headers.getall("Set-Cookie") if h.startswith("fw_session="))
        assert "Secure" in header and "HttpOnly" in header and "SameSite=Strict" in header


async def test_a_wrong_token_gets_no_session_and_a_clear_message(collector: Collector) -> None:
    """A wrong token (or an agent's) opens no session; the form says why."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        resp = await _login_once(client, collector.url("").rstrip("/"), "fwt_an-agent-token")
        assert resp.status == 303 and resp.headers["Location"].startswith("/login?refused=1")
        assert "fw_session" not in resp.cookies
        async with client.get(collector.url(resp.headers["Location"])) as page:
            text = await page.text()
        assert "That is not an analyst token of this collector" in text
        async with client.get(collector.url("/"), allow_redirects=False) as home:
            assert home.status == 303


async def test_sign_in_needs_the_forms_csrf_token(collector: Collector) -> None:
    """A sign-in posted from elsewhere (no or a wrong CSRF token) opens no session."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        for csrf in ("", "0" * 40):
            async with client.post(
                collector.url("/login"), data={"csrf": csrf, "token": TOKEN}, allow_redirects=False
            ) as resp:
                assert resp.status == 400
                assert "fw_session" not in resp.cookies
                assert "The sign-in form had expired" in await resp.text()


async def test_sign_in_attempts_are_rate_limited(collector: Collector) -> None:
    """Past five attempts a minute from one address, even the right token is refused with
    429 and Retry-After."""
    base = collector.url("").rstrip("/")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        for _ in range(5):
            resp = await _login_once(client, base, "fwa_wrong")
            assert resp.status == 303
        resp = await _login_once(client, base, TOKEN)
        assert resp.status == 429
        assert int(resp.headers["Retry-After"]) >= 1
        assert "fw_session" not in resp.cookies


async def test_every_page_sends_the_security_headers_and_no_inline_script(
    collector: Collector,
) -> None:
    """CSP with script-src 'self' and frame-ancestors 'none', nosniff, Referrer-Policy
    same-origin on every page; no inline script, handler or style attribute in any."""
    client = await _session(collector)
    try:
        event = await _open_event_id(client, collector)
        for path in (*PAGES, f"/events/{event}", f"/events/{event}.json", "/login"):
            async with client.get(collector.url(path)) as resp:
                assert resp.status == 200, path
                csp = resp.headers["Content-Security-Policy"]
                assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
                assert "default-src 'none'" in csp and "'unsafe-inline'" not in csp
                assert resp.headers["X-Content-Type-Options"] == "nosniff"
                assert resp.headers["Referrer-Policy"] == "same-origin"
                text = await resp.text()
            for script in re.findall(r"<script\b[^>]*>(.*?)</script>", text, re.S):
                assert script == "", path
            assert not re.search(r"<script(?![^>]*\bsrc=)", text), path
            assert not re.search(r"\son[a-z]+\s*=", text), path
            assert not re.search(r"\sstyle\s*=", text), path
    finally:
        await client.close()


async def _open_event_id(client: aiohttp.ClientSession, collector: Collector) -> str:
    async with client.get(collector.url("/countries/IR")) as resp:
        text = await resp.text()
    match = re.search(r'class="finding leak open" data-event-id="([^"]+)"', text)
    assert match
    return match.group(1)


async def _open_event_json(client: aiohttp.ClientSession, collector: Collector) -> tuple[str, Any]:
    """The open leak's id on IR's page, and what the page's JSON link gives for it."""
    event_id = await _open_event_id(client, collector)
    async with client.get(collector.url(f"/events/{event_id}.json")) as resp:
        return event_id, await resp.json()


async def _api_json(client: aiohttp.ClientSession, collector: Collector, path: str) -> Any:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with client.get(collector.url(path), headers=headers) as resp:
        return await resp.json()


async def test_state_changing_forms_need_their_csrf_token(collector: Collector) -> None:
    """Revoking an agent or signing out without the session's CSRF token does nothing."""
    client = await _session(collector)
    try:
        async with client.get(collector.url("/agents")) as resp:
            text = await resp.text()
        pseudonym = re.search(r'name="agent" value="([0-9a-f]{16})"', text).group(1)  # type: ignore[union-attr]
        async with client.post(
            collector.url("/agents/revoke"), data={"agent": pseudonym, "csrf": "nope"}
        ) as resp:
            assert resp.status == 400
        agents = await Records(collector.app[STORE]).enrolled_agents()
        assert not any(a.revoked for a in agents)
        async with client.post(collector.url("/logout"), data={}, allow_redirects=False) as resp:
            assert resp.status == 400
        async with client.get(collector.url("/"), allow_redirects=False) as resp:
            assert resp.status == 200  # still signed in
        async with client.post(
            collector.url("/agents/revoke"),
            data={"agent": pseudonym, "csrf": csrf_of(text)},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 303
        agents = await Records(collector.app[STORE]).enrolled_agents()
        assert sum(a.revoked for a in agents) == 1
    finally:
        await client.close()


async def test_sign_out_revokes_the_session_in_the_store(collector: Collector) -> None:
    """After /logout the same cookie opens nothing, even if a client kept it."""
    client = await _session(collector)
    try:
        cookie = next(c for c in client.cookie_jar if c.key == "fw_session").value
        async with client.get(collector.url("/logout")) as resp:
            csrf = csrf_of(await resp.text())
        async with client.post(
            collector.url("/logout"), data={"csrf": csrf}, allow_redirects=False
        ) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/login?signed_out=1"
    finally:
        await client.close()
    assert await _status_with(cookie, collector.url("/")) == 303
    record = await Records(collector.app[STORE]).session(hash_secret(cookie))
    assert record is not None and record.revoked


async def test_an_expired_session_opens_nothing(collector: Collector) -> None:
    """A session past its expiry is refused although it is in the store."""
    cookie = "expired-session-cookie-value"
    now = time.time()
    await Records(collector.app[STORE]).add_session(
        hash_secret(cookie), hash_secret(TOKEN), now - 7200, now - 1
    )
    assert await _status_with(cookie, collector.url("/")) == 303


async def test_a_session_ends_when_its_token_is_no_longer_accepted(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    """A collector whose configuration no longer lists the token refuses its sessions."""
    first = make_app(dashboard_config(tmp_path))
    server = await aiohttp_server(first, host="127.0.0.1", port=0)
    collector = Collector(server, first, {})
    client = await _session(collector)
    cookie = next(c for c in client.cookie_jar if c.key == "fw_session").value
    await client.close()
    first_url = server.make_url("/")
    config = dashboard_config(tmp_path)
    config = dataclasses.replace(config, analyst_tokens=("fwa_another-token",))
    second = await aiohttp_server(make_app(config), host="127.0.0.1", port=0)
    assert await _status_with(cookie, str(first_url)) == 200
    assert await _status_with(cookie, str(second.make_url("/"))) == 303


async def test_names_from_the_data_are_escaped(collector: Collector) -> None:
    """A network name with markup is shown as text on the pages and in the charts."""
    store = collector.app[STORE]
    evil = Isp('<script>alert("x")</script>', 64999, 1)
    m = dataset.measurement(evil, "twitter.com", Blocking.DNS, time.time() - 60, "0.1.0")
    await store.insert_measurements(collector.agents[dataset.SHATEL][0], "b-evil", [m], time.time())
    client = await _session(collector)
    try:
        for path in ("/countries/IR", "/charts/heatmap.svg?cc=IR&domain=twitter.com"):
            async with client.get(collector.url(path)) as resp:
                text = await resp.text()
            assert "<script>alert" not in text, path
            assert "&lt;script&gt;alert(" in text, path
    finally:
        await client.close()


async def test_the_overview_counts_each_country(collector: Collector) -> None:
    """The overview lists IR with its six ISPs, its live agents and the open leak."""
    client = await _session(collector)
    try:
        async with client.get(collector.url("/")) as resp:
            text = await resp.text()
        row = re.search(r'<a href="/countries/IR">IR</a></th>(.*?)</tr>', text, re.S).group(1)  # type: ignore[union-attr]
        cells = re.findall(r"<td>(.*?)</td>", row, re.S)
        assert cells[0] == "6" and cells[1] == "12"
        assert "Shatel (AS31549): twitter.com, www.facebook.com" in cells[2]
    finally:
        await client.close()


async def test_the_event_json_is_the_monitors_record(collector: Collector) -> None:
    """The event page's JSON is the monitor's record as GET /api/v1/events/{id} gives it:
    the same id, revision and claims, checkable against the API and the exports."""
    client = await _session(collector)
    try:
        event_id, mine = await _open_event_json(client, collector)
        record = (await _api_json(client, collector, f"/api/v1/events/{event_id}"))["event"]
    finally:
        await client.close()
    assert event_id.startswith("ev_") and mine == record


async def test_without_the_monitor_the_pages_run_the_analysis(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    """With the monitor off the findings come from the analysis, as GET /api/v1/leaks gives
    them (plus an id made from the ISP and the start), and the page marks the same leak."""
    app = make_app(dashboard_config(tmp_path, monitor=False))
    server = await aiohttp_server(app, host="127.0.0.1", port=0)
    collector = Collector(server, app, await dataset.fill(app[STORE]))
    client = await _session(collector)
    try:
        event_id, mine = await _open_event_json(client, collector)
        leaks = (await _api_json(client, collector, "/api/v1/leaks"))["leaks"]
    finally:
        await client.close()
    assert mine.pop("id") == event_id == "lapse-ir-31549-" + event_id.rsplit("-", 1)[1]
    assert mine in leaks


async def test_unknown_things_are_a_404_page(collector: Collector) -> None:
    """An unknown country, domain or event is a 404 page that says so, never a 500."""
    client = await _session(collector)
    try:
        for path, words in (
            ("/countries/DE", "No such country"),
            ("/countries/IR/domains/nowhere.example", "No such domain"),
            ("/events/leak-ir-1-20000101t000000z", "No such event"),
            ("/countries/I%3Cb%3E", "No such country"),
        ):
            async with client.get(collector.url(path)) as resp:
                assert resp.status == 404, path
                assert words in await resp.text()
        async with client.get(collector.url("/charts/heatmap.svg?cc=IR&domain=x")) as resp:
            assert resp.status == 404
    finally:
        await client.close()


async def test_the_live_stream_tells_a_signed_in_page_of_a_new_record(
    collector: Collector,
) -> None:
    """/live/stream (under the session, no bearer token) sends a `change` naming the new
    record when the monitor records MCI's leak; without a session it is a 401."""
    async with (
        aiohttp.ClientSession() as anonymous,
        anonymous.get(collector.url("/live/stream?cc=IR")) as resp,
    ):
        assert resp.status == 401
    client = await _session(collector)
    try:
        async with client.get(collector.url("/live/stream?cc=IR")) as stream:
            assert stream.status == 200
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            await dataset.mci_starts_leaking(collector.app[STORE], collector.agents)
            record = await wait_for_record(collector.app[STORE], dataset.MCI)
            async with asyncio.timeout(30):
                while True:
                    line = (await stream.content.readline()).decode()
                    if line.startswith("data: ") and record["id"] in line:
                        break
            assert json.loads(line[6:]) == {"id": record["id"], "type": "leak.opened", "cc": "IR"}
    finally:
        await client.close()
