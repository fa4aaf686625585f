"""End to end in headless Chromium: a real collector on loopback, the lab-like dataset,
the pages as an analyst uses them. Every test also fails on any console error, page error
or Content-Security-Policy violation (the ``tab`` fixture)."""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from collector.state import STORE
from tests.collector.dashboard import dataset
from tests.collector.dashboard.conftest import TOKEN, Collector, Tab, open_tab, sign_in
from tests.collector.dashboard.pngcheck import decode_png

SVG = "{http://www.w3.org/2000/svg}"


async def test_wrong_token_is_refused_and_the_right_one_signs_in(
    collector: Collector, tab: Tab
) -> None:
    """Without a session / goes to the sign-in form; a wrong token gets a clear message
    and no session cookie; the analyst token opens the overview."""
    page = tab.page
    await sign_in(tab, collector, token="fwa_not-a-token-of-this-collector")
    assert urlsplit(page.url).path == "/login"
    message = await page.inner_text("#login-error")
    assert "not an analyst token of this collector" in message
    cookies = {c["name"] for c in await page.context.cookies()}
    assert "fw_session" not in cookies
    await tab.shot("login-refused")

    await page.fill("#token", TOKEN)
    await page.click("form.login button[type=submit]")
    await page.wait_for_load_state()
    assert page.url == collector.url("/")
    session = next(c for c in await page.context.cookies() if c["name"] == "fw_session")
    assert session["httpOnly"] and session["sameSite"] == "Strict" and session["expires"] > 0
    assert await page.inner_text("h1") == "Overview"
    assert "Shatel (AS31549)" in await page.inner_text("#overview")


async def test_country_page_marks_the_leaking_isp_and_the_event_tells_it(
    collector: Collector, tab: Tab
) -> None:
    """The country grid marks Shatel as leaking, the coverage line marks Rightel's single
    volunteer as a blind spot, and the event page says what happened, shows the evidence
    and example measurements without any agent id."""
    page = tab.page
    await sign_in(tab, collector)
    await page.click("text=IR")
    await page.wait_for_load_state()
    assert page.url.endswith("/countries/IR")
    shatel = page.locator('table.grid tr[data-asn="31549"]')
    assert "leaking" in await shatel.get_attribute("class")
    assert await shatel.locator(".badge.leak").inner_text() == "leaking"
    assert await shatel.locator("td.leaking").count() == 2  # facebook and twitter
    assert await page.locator('table.grid tr[data-asn="58224"] td.leaking').count() == 0
    rightel = await page.inner_text('#coverage li[data-asn="57218"]')
    assert "1 distinct agent in the last two intervals" in rightel
    assert "a leak here could not be confirmed: recruit volunteers on this network" in rightel
    assert "Blind spot" not in await page.inner_text('#coverage li[data-asn="58224"]')
    await tab.shot("country", full_page=True)
    readme_shot = os.environ.get("FILTERWATCH_README_SCREENSHOT")
    if readme_shot:
        await page.set_viewport_size({"width": 960, "height": 700})
        clip = {"x": 0, "y": 0, "width": 960, "height": 860}
        await page.screenshot(path=readme_shot, full_page=True, clip=clip)
        await page.set_viewport_size({"width": 1280, "height": 900})

    await page.click("#events .finding.leak.open a")
    await page.wait_for_load_state()
    words = await page.inner_text("#words")
    assert words.startswith(
        "Shatel (AS31549) has let twitter.com and www.facebook.com through since"
    )
    assert re.search(
        r" UTC while [45] of [45] other ISPs block them; 2 distinct volunteers saw it\.$", words
    )
    assert await page.locator("figure.chart svg polyline").count() == 2  # ISP and country
    revisions = await page.inner_text("ol.revisions")
    assert "Revision 1" in revisions and "leak.opened (open)" in revisions
    rows = page.locator("table.examples tbody tr")
    assert await rows.count() >= 2
    assert "93.184.216.34" in await rows.first.inner_text()  # the DNS answer, a fact
    html = await page.content()
    for agent_ids in collector.agents.values():
        for agent_id in agent_ids:
            assert agent_id not in html
    await tab.shot("event", full_page=True)

    async with page.expect_navigation():
        await page.click("text=This event as JSON")
    assert '"asn": 31549' in await page.inner_text("body")


async def test_charts_download_as_svg_and_png(collector: Collector, tab: Tab) -> None:
    """The domain page's heatmap downloads as an SVG that parses (AS numbers and names, a
    UTC axis, a caption naming the collector) and as a PNG that decodes."""
    page = tab.page
    await sign_in(tab, collector)
    await page.goto(collector.url("/countries/IR/domains/twitter.com"))
    assert await page.locator("#heatmap svg").count() == 1
    async with page.expect_download() as svg_download:
        await page.click("text=Download SVG")
    svg_path = tab.shots / "heatmap.svg"
    await (await svg_download.value).save_as(svg_path)
    root = ET.parse(svg_path).getroot()
    assert root.tag == f"{SVG}svg"
    texts = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert "Shatel (AS31549)" in texts and "TCI (AS58224)" in texts
    assert "time (UTC)" in texts
    assert f"filterwatch collector {collector.server.host}:{collector.server.port}" in texts

    async with page.expect_download() as png_download:
        await page.click("text=Download PNG")
    download = await png_download.value
    assert download.suggested_filename == "filterwatch-IR-twitter.com.png"
    png_path = tab.shots / "heatmap.png"
    await download.save_as(png_path)
    width, height, _ = decode_png(png_path.read_bytes())
    assert (width, height) == (int(root.get("width", 0)), int(root.get("height", 0)))
    await tab.shot("domain", full_page=True)


async def test_a_new_event_appears_live_without_a_reload(collector: Collector, tab: Tab) -> None:
    """With the YouTube page open, MCI starts leaking: the monitor records it, its stream
    tells the page, and the event appears without a reload."""
    page = tab.page
    await sign_in(tab, collector)
    await page.goto(collector.url("/countries/IR/domains/www.youtube.com"))
    assert await page.locator("#events .finding").count() == 0
    assert await page.get_attribute("#main", "data-stream-url") == "/live/stream?cc=IR"
    await page.evaluate("window.__sameDocument = true")

    await dataset.mci_starts_leaking(collector.app[STORE], collector.agents)
    event = page.locator('#events .finding.leak.open:has-text("MCI (AS197207)")')
    await event.wait_for(timeout=30_000)
    assert await page.evaluate("window.__sameDocument === true")
    outlines = page.locator("#heatmap svg rect[stroke-dasharray]")
    assert await outlines.count() == 1  # the open leak's window, dashed
    await tab.shot("live-event")


async def test_keyboard_reaches_everything_and_360_px_does_not_overflow(
    collector: Collector, browser: Any, tmp_path: Path
) -> None:
    """At 360 px the page itself never scrolls sideways (wide tables scroll in their own
    region); Tab starts at the skip link, which moves focus to the content."""
    narrow = await open_tab(browser, tmp_path, viewport={"width": 360, "height": 740})
    page = narrow.page
    await sign_in(narrow, collector)
    for path in ("/", "/countries/IR", "/countries/IR/domains/twitter.com", "/agents"):
        await page.goto(collector.url(path))
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 360, path
    await page.goto(collector.url("/countries/IR"))
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.className") == "skip"
    await page.keyboard.press("Enter")
    assert await page.evaluate("document.activeElement.id") == "main"
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.tagName") == "A"
    await narrow.shot("country-360")
    violations = await narrow.csp_violations()
    await page.context.close()
    assert narrow.watched.console_errors == [] and violations == []


async def test_an_operator_revokes_an_agent_from_the_agents_page(
    collector: Collector, tab: Tab
) -> None:
    """The agents page lists agents by pseudonym per ISP; Revoke (a form with its CSRF
    token) revokes that agent in the store."""
    page = tab.page
    await sign_in(tab, collector)
    await page.goto(collector.url("/agents"))
    assert "Rightel (AS57218)" in await page.inner_text("main")
    row = page.locator("section", has_text="Rightel (AS57218)").locator("tbody tr")
    assert await row.count() == 1
    pseudonym = await row.get_attribute("data-agent")
    assert "0.1.0" in await row.inner_text()
    await row.locator("button", has_text="Revoke").click()
    await page.wait_for_load_state()
    revoked = page.locator(f'tr[data-agent="{pseudonym}"]')
    assert "revoked" in await revoked.inner_text()
    store = collector.app[STORE]
    agents = {a.agent_id: a for a in await _enrolled(store)}
    assert agents[collector.agents[dataset.RIGHTEL][0]].revoked


async def _enrolled(store: Any) -> list[Any]:
    from collector.dashboard.records import Records

    return await Records(store).enrolled_agents()
