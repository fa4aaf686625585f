"""The dashboard's pages and their routes (``add_dashboard(app)``)."""

from __future__ import annotations

import asyncio
import json
import math
import re
import secrets
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import aiohttp_jinja2
import jinja2
import structlog
from aiohttp import web
from markupsafe import Markup
from yarl import URL

from collector.api.events import open_event_stream
from collector.dashboard import charts
from collector.dashboard.data import (
    BLIND_SPOT,
    MIN_AGENTS,
    CountryView,
    DashboardData,
    Finding,
    IspSeries,
    Snapshot,
    coverage_since,
)
from collector.dashboard.records import Records
from collector.dashboard.security import (
    CSRF_FIELD,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    RateLimiter,
    Session,
    Sessions,
    add_page_headers,
    clear_cookie,
    set_cookie,
)
from collector.dashboard.source import StoreSource
from collector.pseudonyms import agent_pseudonym
from collector.state import CONFIG, PSEUDONYM_KEY, STORE

log = structlog.get_logger("collector.dashboard")

HERE: Final = Path(__file__).parent
DATA: web.AppKey[DashboardData] = web.AppKey("dashboard_data", DashboardData)
SESSIONS: web.AppKey[Sessions] = web.AppKey("dashboard_sessions", Sessions)
RECORDS: web.AppKey[Records] = web.AppKey("dashboard_records", Records)
LOGIN_LIMIT: web.AppKey[RateLimiter] = web.AppKey("dashboard_login_limit", RateLimiter)

_CC_RE: Final = re.compile(r"^[A-Z]{2}$")
_DOMAIN_RE: Final = re.compile(r"^[a-z0-9.-]{1,253}$")
_ID_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_PSEUDONYM_RE: Final = re.compile(r"^[0-9a-f]{16}$")

REFUSED: Final = (
    "That is not an analyst token of this collector. Check it, or make one with"
    " `filterwatch collector analyst-token`."
)

Handler = Callable[[web.Request, Session], Awaitable[web.StreamResponse]]

# Each page's route stands above its handler; ``add_dashboard`` adds them all.
routes = web.RouteTableDef()


# --- helpers ---


def utc(epoch: float | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    if epoch is None:
        return "now"
    return charts.utc(epoch, fmt)


def _page(
    request: web.Request, template: str, context: dict[str, Any], status: int = 200
) -> web.Response:
    config = request.app[CONFIG].dashboard
    context.setdefault("poll_ms", int(config.poll_s * 1000))
    context.setdefault("live_url", None)
    live = context["live_url"]
    if live is not None and _keeps_records(request.app):
        cc = live.partition("cc=")[2]
        context["stream_url"] = "/live/stream" + (f"?cc={cc}" if cc else "")
    context.setdefault("stream_url", None)
    return aiohttp_jinja2.render_template(template, request, context, status=status)


def _error(
    request: web.Request, status: int, title: str, detail: str, session: Session | None = None
) -> web.Response:
    return _page(
        request, "error.html", {"title": title, "detail": detail, "session": session}, status
    )


def _caption(request: web.Request, since: float, until: float) -> str:
    config = request.app[CONFIG].dashboard
    name = config.name or request.host
    return (
        f"filterwatch collector {name} - window {utc(since)} to {utc(until)} UTC"
        f" - made {utc(time.time())} UTC"
    )


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target[:512]
    return "/"


def signed_in(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Pages need a session: without one, GETs go to the sign-in form, the rest get 401."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        session = await request.app[SESSIONS].current(request)
        if session is None:
            path = request.path
            if path.endswith(".json") or path.startswith(("/live", "/charts/")):
                raise _json_answer(web.HTTPUnauthorized, "unauthorized", "sign in at /login")
            # Pages and their forms (a form posted after the session ended) go to sign-in.
            target = request.path_qs if request.method == "GET" and path != "/" else None
            location = "/login" if target is None else f"/login?next={_quote(target)}"
            raise web.HTTPSeeOther(location)
        try:
            return await handler(request, session)
        except _Answer as answer:
            return answer.response

    return wrapped


class _Answer(Exception):
    """Raised by a page's helper to answer with ``response`` instead (a 404 page, a form
    that had expired); ``signed_in`` returns it."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def _json_answer(answer: type[web.HTTPException], error: str, detail: str) -> web.HTTPException:
    """An answer to ``raise`` for the JSON views: ``{"error", "detail"}``."""
    return answer(
        text=json.dumps({"error": error, "detail": detail}), content_type="application/json"
    )


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="/")


async def _form(request: web.Request) -> dict[str, str]:
    if request.content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return {}
    data = await request.post()
    return {k: v for k, v in data.items() if isinstance(v, str)}


async def _csrf_ok(request: web.Request, session: Session, form: dict[str, str]) -> bool:
    return await request.app[SESSIONS].check_csrf(request, session, form.get(CSRF_FIELD, ""))


# --- sign-in ---


@routes.get("/login")
async def login_form(request: web.Request) -> web.StreamResponse:
    if await request.app[SESSIONS].current(request) is not None:
        raise web.HTTPSeeOther(_safe_next(request.query.get("next")))
    return await _login_page(request, message=None, status=200)


async def _login_page(request: web.Request, message: str | None, status: int) -> web.Response:
    pre = request.cookies.get(LOGIN_COOKIE)
    if not pre or len(pre) > 64:
        pre = secrets.token_urlsafe(24)
    csrf = await request.app[SESSIONS].login_csrf(request, pre)
    signed_out = request.query.get("signed_out") == "1"
    if message is None and request.query.get("refused") == "1":
        message = REFUSED
    response = _page(
        request,
        "login.html",
        {
            "csrf": csrf,
            "message": message,
            "signed_out": signed_out and message is None,
            "next": _safe_next(request.query.get("next")),
            "session": None,
        },
        status,
    )
    set_cookie(response, request, LOGIN_COOKIE, pre, 3600)
    return response


@routes.post("/login")
async def login(request: web.Request) -> web.StreamResponse:
    wait = request.app[LOGIN_LIMIT].retry_after(request.remote)
    if wait:
        response = await _login_page(
            request,
            f"Too many sign-in attempts from here. Wait {math.ceil(wait)} seconds and try again.",
            429,
        )
        response.headers["Retry-After"] = str(math.ceil(wait))
        return response
    form = await _form(request)
    sessions = request.app[SESSIONS]
    pre = request.cookies.get(LOGIN_COOKIE, "")
    expected = await sessions.login_csrf(request, pre) if pre else ""
    if not pre or not secrets.compare_digest(expected, form.get(CSRF_FIELD, "")):
        return await _login_page(
            request, "The sign-in form had expired. Please paste your token again.", 400
        )
    token = form.get("token", "").strip()
    if not await sessions.token_accepted(request, token):
        log.info("dashboard_sign_in_refused")
        # Post/Redirect/Get: the message is shown by the form's GET, so a reload does not
        # send the token again (and the browser logs no failed load).
        query = {"refused": "1"}
        target = _safe_next(form.get("next"))
        if target != "/":
            query["next"] = target
        raise web.HTTPSeeOther(str(URL("/login").with_query(query)))
    cookie, expires = await sessions.open(request, token)
    log.info("dashboard_signed_in")
    response = web.HTTPSeeOther(_safe_next(form.get("next")))
    set_cookie(response, request, SESSION_COOKIE, cookie, expires - time.time())
    clear_cookie(response, request, LOGIN_COOKIE)
    raise response


@routes.get("/logout")
@signed_in
async def logout_form(request: web.Request, session: Session) -> web.StreamResponse:
    return _page(request, "logout.html", {"session": session, "csrf": session.csrf})


@routes.post("/logout")
async def logout(request: web.Request) -> web.StreamResponse:
    session = await request.app[SESSIONS].current(request)
    if session is not None:
        form = await _form(request)
        if not await _csrf_ok(request, session, form):
            return _error(
                request, 400, "Not signed out", "The form had expired; try again.", session
            )
        await request.app[RECORDS].revoke_session(session.record.session_hash, time.time())
        log.info("dashboard_signed_out")
    response = web.HTTPSeeOther("/login?signed_out=1")
    clear_cookie(response, request, SESSION_COOKIE)
    raise response


# --- pages ---


@routes.get("/")
@signed_in
async def overview(request: web.Request, session: Session) -> web.StreamResponse:
    snap = await request.app[DATA].snapshot()
    countries = sorted(snap.countries.values(), key=lambda v: v.cc)
    return _page(
        request,
        "overview.html",
        {
            "session": session,
            "countries": countries,
            "since": snap.since,
            "until": snap.until,
            "live_url": "/live.json",
        },
    )


async def _country(request: web.Request, session: Session) -> CountryView:
    """The country the path names; without one in the window, the page says so."""
    cc = request.match_info["cc"].upper()
    view = await request.app[DATA].country(cc) if _CC_RE.match(cc) else None
    if view is None:
        raise _Answer(
            _error(
                request,
                404,
                "No such country",
                "No measurements from this country in the window.",
                session,
            )
        )
    return view


@routes.get("/countries/{cc}")
@signed_in
async def country(request: web.Request, session: Session) -> web.StreamResponse:
    view = await _country(request, session)
    grid = view.fragments.get("grid")
    if grid is None:  # a snapshot made without the pages' preparation (not in the app)
        grid = await asyncio.to_thread(_render_grid, aiohttp_jinja2.get_env(request.app), view)
    return _page(
        request,
        "country.html",
        {
            "session": session,
            "view": view,
            "grid": grid,
            "blind_spot": BLIND_SPOT,
            "min_agents": MIN_AGENTS,
            "live_url": f"/live.json?cc={view.cc}",
        },
    )


def _render_grid(env: jinja2.Environment, view: CountryView) -> Markup:
    html = env.get_template("_grid.html").render(view=view, blind_spot=BLIND_SPOT)
    return Markup(html)


def _prepare(env: jinja2.Environment) -> Callable[[Snapshot], None]:
    """What each new snapshot gets on its worker thread: every country's grid, rendered
    (by the template engine, escaping as ever) before any page asks for it."""

    def prepare(snapshot: Snapshot) -> None:
        for view in snapshot.countries.values():
            view.fragments["grid"] = _render_grid(env, view)

    return prepare


def _outlines(view: CountryView, domain: str | None) -> list[charts.Outline]:
    out = []
    for f in view.findings:
        if f.category != "leak" or (domain is not None and domain not in f.domains):
            continue
        window = f"{utc(f.start)} to {utc(f.end) if f.end else 'now'} UTC"
        out.append(charts.Outline(f.asn, f.start, f.end, f"leak: {f.isp_label}, {window}"))
    return out


async def _domain_chart(
    request: web.Request, view: CountryView, domain: str
) -> tuple[str, list[IspSeries]]:
    data = request.app[DATA]
    series = await data.series(view.cc, [domain], view.since, view.until)
    svg = charts.heatmap_svg(
        cc=view.cc,
        domain=domain,
        rows=series,
        outlines=_outlines(view, domain),
        since=view.since,
        until=view.until,
        bucket_s=view.bucket_s,
        caption=_caption(request, view.since, view.until),
    )
    return svg, series


@routes.get("/countries/{cc}/domains/{domain}")
@signed_in
async def domain_page(request: web.Request, session: Session) -> web.StreamResponse:
    view = await _country(request, session)
    domain = request.match_info["domain"].lower()
    if not _DOMAIN_RE.match(domain) or domain not in view.domains:
        return _error(
            request,
            404,
            "No such domain",
            f"No measurements of this domain in {view.cc} in the window.",
            session,
        )
    svg, series = await _domain_chart(request, view, domain)
    findings = [f for f in view.findings if domain in f.domains]
    return _page(
        request,
        "domain.html",
        {
            "session": session,
            "view": view,
            "domain": domain,
            "chart": Markup(svg),
            "series": series,
            "findings": findings,
            "methods": ("dns", "tcp", "tls", "http", "blockpage"),
            "live_url": f"/live.json?cc={view.cc}",
        },
    )


async def _finding(request: web.Request) -> Finding | None:
    ident = request.match_info["id"]
    if not _ID_RE.match(ident):
        return None
    return await request.app[DATA].finding(ident)


def event_words(f: Finding) -> str:
    """The event in one sentence, as a person would say it."""
    domains = list(f.domains)
    names = domains[0] if len(domains) == 1 else ", ".join(domains[:-1]) + " and " + domains[-1]
    it = "it" if len(domains) == 1 else "them"
    start = utc(f.start)
    ongoing = f.end is None
    if ongoing:
        window = f"since {start} UTC"
    else:
        assert f.end is not None
        same_day = utc(f.start, "%Y-%m-%d") == utc(f.end, "%Y-%m-%d")
        end = utc(f.end, "%H:%M") if same_day else utc(f.end)
        window = f"from {start} to {end} UTC"
    volunteers = "volunteer" if f.agents == 1 else "volunteers"
    if f.category == "divergence":
        what = {
            "unfiltered": "does not block",
            "lagging": "blocks later than the rest of the country, or not yet,",
            "partial": "blocks only part of the time",
        }.get(f.kind, "differs from the rest of the country on")
        sentence = f"{f.isp_label} {what} {names} {window}"
        share = f.doc.get("blocked_share")
        if isinstance(share, int | float):
            sentence += f" ({share:.0%} of its conclusive measurements blocked)"
        others = f"{f.isps_blocking} of {f.isps_measured} other ISPs block {it}"
        return f"{sentence}, while {others}; {f.agents} distinct {volunteers} measured it."
    verb = ("has let" if ongoing else "let") if f.category == "leak" else "may have let"
    block = "block" if ongoing else "blocked"
    sentence = (
        f"{f.isp_label} {verb} {names} through {window} while {f.isps_blocking} of"
        f" {f.isps_measured} other ISPs {block} {it}; {f.agents} distinct {volunteers} saw it."
    )
    if f.category == "uncorroborated":
        sentence += f" Fewer than {MIN_AGENTS} volunteers saw it, so it is not confirmed."
    lifted = f.doc.get("then_lifted_nationally_at")
    if isinstance(lifted, str):
        sentence += (
            f" The rest of the country lifted the block too from {lifted}: a national"
            " unblocking rolling out, not a fault of this ISP."
        )
    return sentence


def _evidence_window(view: CountryView, f: Finding) -> tuple[float, float]:
    pad = 12 * view.bucket_s
    since = max(view.since, f.start - pad)
    until = min(view.until, (f.end if f.end is not None else view.until) + pad)
    return since, until


async def _evidence(request: web.Request, f: Finding) -> str:
    view = await request.app[DATA].country(f.cc)
    assert view is not None
    since, until = _evidence_window(view, f)
    series = await request.app[DATA].series(f.cc, f.domains, since, until)
    isp = next((s for s in series if s.asn == f.asn), None)
    others = [s for s in series if s.asn != f.asn]
    return charts.evidence_svg(
        title=f"{f.isp_label} vs the rest of {f.cc}: {', '.join(f.domains)}",
        isp=isp,
        others=others,
        start=f.start,
        end=f.end,
        since=since,
        until=until,
        bucket_s=view.bucket_s,
        caption=_caption(request, since, until),
    )


@routes.get(r"/events/{id:[A-Za-z0-9_-]+}")
@signed_in
async def event_page(request: web.Request, session: Session) -> web.StreamResponse:
    f = await _finding(request)
    if f is None:
        return _error(
            request,
            404,
            "No such event",
            "This event is not among the findings of the window.",
            session,
        )
    svg = await _evidence(request, f)
    examples = await request.app[RECORDS].measurement_facts(list(f.example_ids))
    return _page(
        request,
        "event.html",
        {
            "session": session,
            "f": f,
            "words": event_words(f),
            "chart": Markup(svg),
            "examples": examples,
            "live_url": f"/live.json?cc={f.cc}",
        },
    )


@routes.get(r"/events/{id:[A-Za-z0-9_-]+}.json")
@signed_in
async def event_json(request: web.Request, session: Session) -> web.StreamResponse:
    f = await _finding(request)
    if f is None:
        raise _json_answer(web.HTTPNotFound, "not_found", "no such event in the window")
    return web.Response(
        text=json.dumps(f.doc, indent=2, sort_keys=True) + "\n", content_type="application/json"
    )


def _svg(svg: str, filename: str) -> web.Response:
    return web.Response(
        text=svg,
        content_type="image/svg+xml",
        headers={"Content-Disposition": f'inline; filename="{filename}"'},
    )


@routes.get("/charts/heatmap.svg")
@signed_in
async def heatmap_chart(request: web.Request, session: Session) -> web.StreamResponse:
    cc = request.query.get("cc", "").upper()
    domain = request.query.get("domain", "").lower()
    view = await request.app[DATA].country(cc) if _CC_RE.match(cc) else None
    if view is None or not _DOMAIN_RE.match(domain) or domain not in view.domains:
        raise web.HTTPNotFound()
    svg, _ = await _domain_chart(request, view, domain)
    return _svg(svg, f"filterwatch-{cc}-{domain}.svg")


@routes.get("/charts/evidence.svg")
@signed_in
async def evidence_chart(request: web.Request, session: Session) -> web.StreamResponse:
    ident = request.query.get("event", "")
    f = await request.app[DATA].finding(ident) if _ID_RE.match(ident) else None
    if f is None:
        raise web.HTTPNotFound()
    return _svg(await _evidence(request, f), f"filterwatch-{ident}.svg")


@routes.get("/live.json")
@signed_in
async def live(request: web.Request, session: Session) -> web.StreamResponse:
    """What open pages poll: a version that changes whenever their content does."""
    snap = await request.app[DATA].snapshot()
    cc = request.query.get("cc", "").upper()
    if cc:
        view = snap.countries.get(cc)
        version = view.version() if view is not None else "none"
        events = [f.id for f in view.findings] if view is not None else []
    else:
        version = "".join(v.version() for v in snap.countries.values())[:64] or "none"
        events = [f.id for v in snap.countries.values() for f in v.findings]
    return web.json_response(
        {"version": version, "events": events, "computed_at": snap.computed_at}
    )


def _keeps_records(app: web.Application) -> bool:
    monitor = getattr(app[CONFIG], "monitor", None)
    return bool(monitor is not None and monitor.enabled and hasattr(app[STORE], "revisions_after"))


@routes.get("/live/stream")
async def live_stream(request: web.Request) -> web.StreamResponse:
    """The monitor's changes as Server-Sent Events for signed-in pages: the records' own
    stream (GET /api/v1/events/stream) wants a bearer token, which a page cannot send, so
    this one reads the same revisions from the store under the session. Each message only
    names the record and the change; the page then fetches what it shows."""
    sessions = request.app[SESSIONS]
    session = await sessions.current(request)
    if session is None:
        raise _json_answer(web.HTTPUnauthorized, "unauthorized", "sign in at /login")
    if not _keeps_records(request.app):
        raise _json_answer(web.HTTPNotFound, "not_found", "this collector keeps no records")
    cc = request.query.get("cc", "").upper() or None
    store: Any = request.app[STORE]
    seq = int(await store.last_seq())
    response = await open_event_stream(request, retry_ms=3000, cache_control="no-store")
    quiet = 0.0
    while True:
        revisions = await store.revisions_after(seq)
        for r in revisions:
            seq = r.seq
            event = r.payload["event"]
            if cc is not None and event.get("cc") != cc:
                continue
            data = json.dumps({"id": event.get("id"), "type": r.type, "cc": event.get("cc")})
            await response.write(f"id: {seq}\nevent: change\ndata: {data}\n\n".encode())
            quiet = 0.0
        if revisions:
            continue
        await asyncio.sleep(1.0)
        quiet += 1.0
        if quiet >= 15.0:
            # A comment keeps proxies from closing the stream; a session that ended, ends it.
            if await sessions.current(request) is None:
                break
            await response.write(b": keepalive\n\n")
            quiet = 0.0
    return response


# --- operators: agents and sessions ---


@routes.get("/agents")
@signed_in
async def agents_page(request: web.Request, session: Session) -> web.StreamResponse:
    return await _agents(request, session, message=None)


async def _agents(
    request: web.Request, session: Session, message: str | None, status: int = 200
) -> web.Response:
    config = request.app[CONFIG].dashboard
    records = request.app[RECORDS]
    key = request.app[PSEUDONYM_KEY]
    now = time.time()
    enrolled = {a.agent_id: a for a in await records.enrolled_agents()}
    seen = await records.agents_seen(now - config.window_s)
    by_isp: dict[tuple[str, int, str], list[dict[str, Any]]] = defaultdict(list)
    seen_ids: set[str] = set()
    for a in sorted(seen, key=lambda a: -a.last_measured_at):
        seen_ids.add(a.agent_id)
        rec = enrolled.get(a.agent_id)
        rounded = math.floor(a.last_measured_at / config.bucket_s) * config.bucket_s
        by_isp[(a.cc, a.asn, a.network_name)].append(
            {
                "pseudonym": agent_pseudonym(key, a.agent_id),
                "last_seen": utc(rounded),
                "alive": a.last_measured_at >= coverage_since(now, config.bucket_s),
                "version": a.version,
                "backlog": None,  # agents do not report their spool yet
                "revoked": rec.revoked if rec else False,
            }
        )
    unseen = [
        {
            "pseudonym": agent_pseudonym(key, a.agent_id),
            "enrolled": utc(a.created_at),
            "cc": a.cc,
            "revoked": a.revoked,
        }
        for a in enrolled.values()
        if a.agent_id not in seen_ids
    ]
    isps = [
        {"cc": cc, "asn": asn, "name": name, "agents": agents}
        for (cc, asn, name), agents in sorted(by_isp.items())
    ]
    return _page(
        request,
        "agents.html",
        {
            "session": session,
            "csrf": session.csrf,
            "isps": isps,
            "unseen": unseen,
            "message": message,
            "interval": charts._bucket_words(config.bucket_s),
            "sessions": await _session_rows(request, session),
        },
        status,
    )


async def _session_rows(request: web.Request, session: Session) -> list[dict[str, Any]]:
    rows = []
    for s in await request.app[RECORDS].live_sessions(time.time()):
        rows.append(
            {
                "ref": s.session_hash[:12],
                "created": utc(s.created_at),
                "expires": utc(s.expires_at),
                "mine": s.session_hash == session.record.session_hash,
            }
        )
    return rows


async def _operator_form(request: web.Request, session: Session) -> dict[str, str]:
    """The posted form of an operator's action; an expired one gets the agents page back."""
    form = await _form(request)
    if not await _csrf_ok(request, session, form):
        message = "The form had expired; nothing was revoked. Try again."
        raise _Answer(await _agents(request, session, message, 400))
    return form


@routes.post("/agents/revoke")
@signed_in
async def revoke_agent(request: web.Request, session: Session) -> web.StreamResponse:
    form = await _operator_form(request, session)
    pseudonym = form.get("agent", "")
    if not _PSEUDONYM_RE.match(pseudonym):
        return await _agents(request, session, "No such agent.", 400)
    key = request.app[PSEUDONYM_KEY]
    for a in await request.app[RECORDS].enrolled_agents():
        if agent_pseudonym(key, a.agent_id) == pseudonym:
            await request.app[STORE].revoke_agent(a.agent_id)
            log.info("dashboard_agent_revoked", agent=pseudonym)
            raise web.HTTPSeeOther("/agents?revoked=" + pseudonym)
    return await _agents(request, session, "No such agent.", 404)


@routes.post("/sessions/revoke")
@signed_in
async def revoke_sessions(request: web.Request, session: Session) -> web.StreamResponse:
    form = await _operator_form(request, session)
    records = request.app[RECORDS]
    now = time.time()
    which = form.get("session", "")
    if which == "all":
        await records.revoke_all_sessions(now)
    else:
        for s in await records.live_sessions(now):
            if s.session_hash[:12] == which:
                await records.revoke_session(s.session_hash, now)
    raise web.HTTPSeeOther("/agents#sessions")


@routes.get("/favicon.ico")
async def favicon(request: web.Request) -> web.StreamResponse:
    # Browsers ask for /favicon.ico on pages without a <link rel=icon> (the JSON views).
    return web.FileResponse(
        HERE / "static" / "favicon.svg", headers={"Content-Type": "image/svg+xml"}
    )


# --- set-up ---


async def _data_ctx(app: web.Application) -> Any:
    yield
    await app[DATA].close()


ENV_OPTIONS: Final[dict[str, Any]] = {
    "loader": jinja2.PackageLoader("collector.dashboard", "templates"),
    "autoescape": jinja2.select_autoescape(["html"], default=True),
    "undefined": jinja2.StrictUndefined,
    "trim_blocks": True,
    "lstrip_blocks": True,
    # The templates ship with the package: loaded once (add_dashboard), never looked at on
    # disk again, so no page waits on a stat or a read on the event loop.
    "auto_reload": False,
}


def configure_env(env: jinja2.Environment, static_urls: dict[str, str] | None = None) -> None:
    """The filters and globals the templates use (``static_urls``: the versioned URL of each
    static file by name; without it, unversioned ones)."""
    env.filters["utc"] = utc
    env.filters["pct"] = lambda share: "-" if share is None else f"{share:.0%}"
    if static_urls is not None:
        env.globals["static"] = static_urls.__getitem__
    else:
        env.globals["static"] = lambda name: f"/static/{name}"


def add_dashboard(app: web.Application) -> None:
    """Serve the dashboard from ``app`` (its store must be the app's STORE)."""
    config = app[CONFIG].dashboard
    if not config.enabled:
        return
    env = aiohttp_jinja2.setup(app, **ENV_OPTIONS)
    records = Records(app[STORE])
    app[RECORDS] = records
    app[SESSIONS] = Sessions(records, config.session_ttl_s)
    app[LOGIN_LIMIT] = RateLimiter(config.login_attempts_per_minute)
    app[DATA] = DashboardData(
        StoreSource(app),
        window_s=config.window_s,
        bucket_s=config.bucket_s,
        refresh_s=config.refresh_s,
        prepare=_prepare(env),
    )
    app.cleanup_ctx.append(_data_ctx)
    app.on_response_prepare.append(add_page_headers)
    app.router.add_routes(routes)
    static = app.router.add_static("/static/", HERE / "static", name="static", append_version=True)
    # Versioned once, at start-up: aiohttp's url_for reads and hashes the file at every call,
    # which would be at every page, on the event loop.
    files = (HERE / "static").iterdir()
    configure_env(env, {f.name: str(static.url_for(filename=f.name)) for f in files})
    for name in env.list_templates():
        env.get_template(name)
