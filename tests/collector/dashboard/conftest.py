"""A real collector with the dashboard on 127.0.0.1 port 0, filled with the lab-like
dataset, and (for the browser tests) Debian's headless Chromium driven by Playwright."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from collector.app import make_app
from collector.config import CollectorConfig, DatabaseConfig, MonitorConfig
from collector.dashboard.config import DashboardConfig
from collector.state import STORE
from collector.store.base import Store
from tests.collector.dashboard import dataset
from tests.conftest import skip_or_fail_in_ci

TOKEN = "fwa_dashboard-test-token-0123456789abcdef"
CHROMIUM = Path("/usr/bin/chromium")


@dataclass
class Collector:
    server: TestServer
    app: web.Application
    agents: dict[int, list[str]]

    def url(self, path: str = "/") -> str:
        return str(self.server.make_url(path))


def dashboard_config(tmp_path: Path, *, monitor: bool = True, **changes: Any) -> CollectorConfig:
    """The test collector: the dashboard refreshing at once, pages polling every 0.3 s,
    and the monitor (the event records' maker) passing every 0.3 s, or off."""
    dash = {"refresh_s": 0.0, "poll_s": 0.3, **changes}
    return CollectorConfig(
        database=DatabaseConfig(sqlite_path=tmp_path / "collector.sqlite3"),
        analyst_tokens=(TOKEN,),
        monitor=MonitorConfig(enabled=monitor, interval_s=0.3),
        dashboard=DashboardConfig(**dash),
    )


async def wait_for_record(store: Store, asn: int, status: str = "open") -> dict[str, Any]:
    """The monitor's record of an event of ``asn`` once it has made it (30 s at most)."""
    from collector.store.records import EventQuery

    for _ in range(300):
        for event in await store.list_events(EventQuery(asn=asn, status=status)):
            if event.kind == "lapse":
                return event.body
        await asyncio.sleep(0.1)
    raise AssertionError(f"the monitor made no {status} record for AS{asn}")


@pytest.fixture
async def collector(aiohttp_server: Any, tmp_path: Path) -> Collector:
    app = make_app(dashboard_config(tmp_path))
    server = await aiohttp_server(app, host="127.0.0.1", port=0)
    agents = await dataset.fill(app[STORE])
    await wait_for_record(app[STORE], dataset.SHATEL)
    return Collector(server, app, agents)


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no CSRF field in the form"
    return match.group(1)


@dataclass
class Watched:
    """Everything the browser said while a test ran: console errors, page errors, CSP
    violations (reported by the page's own securitypolicyviolation events)."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)


CSP_PROBE = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


def _require_chromium() -> None:
    if not CHROMIUM.exists():
        skip_or_fail_in_ci(f"{CHROMIUM} is not installed (apt-get install chromium)")


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    _require_chromium()
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        skip_or_fail_in_ci("the playwright package is not installed (pip install -e '.[dev]')")
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@dataclass
class Tab:
    page: Any
    watched: Watched
    shots: Path

    async def shot(self, name: str, *, full_page: bool = False) -> Path:
        path = self.shots / f"{name}.png"
        await self.page.screenshot(path=str(path), full_page=full_page)
        return path

    async def csp_violations(self) -> list[str]:
        found: list[str] = await self.page.evaluate("window.__cspViolations || []")
        return found


async def open_tab(browser: Any, tmp_path: Path, **context: Any) -> Tab:
    ctx = await browser.new_context(accept_downloads=True, **context)
    await ctx.add_init_script(CSP_PROBE)
    page = await ctx.new_page()
    watched = Watched()
    page.on(
        "console",
        lambda msg: watched.console_errors.append(msg.text) if msg.type == "error" else None,
    )
    page.on("pageerror", lambda exc: watched.page_errors.append(str(exc)))
    shots = tmp_path / "screenshots"
    shots.mkdir(exist_ok=True)
    return Tab(page, watched, shots)


@pytest.fixture
async def tab(browser: Any, tmp_path: Path) -> AsyncIterator[Tab]:
    """A fresh browser context; after the test, no console error, page error or CSP
    violation may have happened on it."""
    t = await open_tab(browser, tmp_path, viewport={"width": 1280, "height": 900})
    yield t
    violations = await t.csp_violations() if not t.page.is_closed() else []
    await t.page.context.close()
    assert t.watched.console_errors == []
    assert t.watched.page_errors == []
    assert violations == []


async def sign_in(tab: Tab, collector: Collector, token: str = TOKEN) -> None:
    page = tab.page
    await page.goto(collector.url("/"))
    assert page.url.endswith("/login")
    await page.fill("#token", token)
    await page.click("form.login button[type=submit]")
    await page.wait_for_load_state()
