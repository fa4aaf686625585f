"""The dashboard's pure parts: findings from the analysis' JSON (divergences optional),
the country view's cell states, the charts' SVG, the sign-in rate limit with a fake clock."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import jinja2
from markupsafe import Markup

from collector.analysis import analyse
from collector.dashboard import charts
from collector.dashboard.data import country_view, findings_of, isp_series
from collector.dashboard.security import RateLimiter
from collector.dashboard.views import ENV_OPTIONS, configure_env, event_words
from tests.collector.analysis.scenarios import (
    FIVE_ISPS,
    HOUR,
    STORY_DOMAINS,
    T0,
    make_rows,
    reference_buckets,
    story_verdict,
)

SVG = "{http://www.w3.org/2000/svg}"


def _story() -> tuple[list[Any], dict[str, Any]]:
    buckets = reference_buckets(make_rows(FIVE_ISPS, STORY_DOMAINS, 12, story_verdict), HOUR)
    return buckets, analyse(buckets, HOUR).to_json(with_isps=False)


def _view(buckets: list[Any], doc: dict[str, Any]) -> Any:
    return country_view(
        "IR",
        buckets,
        findings_of(doc),
        {("IR", isp.asn): isp.agents for isp in FIVE_ISPS},
        since=T0,
        until=T0 + 12 * HOUR,
        bucket_s=HOUR,
        computed_at=T0 + 12 * HOUR,
    )


def test_a_closed_leak_leaves_the_cells_in_their_latest_state() -> None:
    """The 2013 story's leak ended: Shatel's cells show blocked again (with the method and
    0 % written), the ISP is marked as having leaked, and the event reads as it happened."""
    buckets, doc = _story()
    view = _view(buckets, doc)
    (leak,) = view.leaks
    assert leak.asn == 31549 and leak.end is not None and not leak.open
    shatel = next(i for i in view.isps if i.asn == 31549)
    assert shatel.leaked and not shatel.leaking
    cell = view.cells[(31549, "twitter.com")]
    assert cell.state == "blocked" and cell.percent == "0%" and cell.method is not None
    words = event_words(leak)
    assert words.startswith("Shatel (AS31549) let facebook.com and twitter.com through from")
    assert (
        "from 2013-09-16 04:00 to 08:00 UTC while 4 of 4 other ISPs blocked them; 3 distinct"
        in words
    )


def test_an_open_leak_marks_its_cells_leaking() -> None:
    """A leak still going on (end null) turns its cells into "leaking" with the share."""
    buckets, doc = _story()
    doc["leaks"][0]["end"] = None
    view = _view(buckets, doc)
    assert view.cells[(31549, "facebook.com")].state == "leaking"
    assert view.cells[(31549, "facebook.com")].short == "LEAK"
    assert next(i for i in view.isps if i.asn == 31549).leaking


def test_divergences_are_rendered_when_the_analysis_gives_them() -> None:
    """An analysis output with `divergences` (issue 8's field, optional) lists them and
    marks their open cells as diverging; without the field nothing changes."""
    buckets, doc = _story()
    divergence = dict(doc["leaks"][0], kind="lagging", end=None, domains=["bbc.com"])
    divergence["asn"] = 16322
    divergence["network_name"] = "ParsOnline"
    doc["divergences"] = [divergence]
    view = _view(buckets, doc)
    (found,) = view.divergences
    assert found.kind == "lagging" and found.id.startswith("lagging-ir-16322-")
    assert view.cells[(16322, "bbc.com")].state == "diverging"
    assert event_words(found).startswith(
        "ParsOnline (AS16322) blocks later than the rest of the country, or not yet, bbc.com"
        " since 2013-09-16 04:00 UTC, while 4 of 4 other ISPs block it;"
    )
    env = jinja2.Environment(**ENV_OPTIONS)
    configure_env(env)
    grid = Markup(env.get_template("_grid.html").render(view=view, blind_spot=""))
    page = env.get_template("country.html").render(
        view=view,
        grid=grid,
        session=None,
        blind_spot="b",
        min_agents=2,
        live_url=None,
        stream_url=None,
        poll_ms=1000,
    )
    assert "Diverging (lagging):" in page
    assert 'diverging" title="bbc.com: diverging' in page


def test_finding_ids_are_stable_while_an_event_grows() -> None:
    """An event keeps its id when its end moves or a domain joins; records with their own
    id keep that one."""
    _, doc = _story()
    first = findings_of(doc)[0].id
    doc["leaks"][0]["end"] = None
    doc["leaks"][0]["domains"] = [*doc["leaks"][0]["domains"], "www.youtube.com"]
    assert findings_of(doc)[0].id == first
    doc["leaks"][0]["id"] = "ev_123"
    assert findings_of(doc)[0].id == "ev_123"


def test_the_heatmap_svg_names_isps_by_as_and_has_a_utc_axis_and_caption() -> None:
    """The chart parses as SVG, labels rows with names and AS numbers, outlines the leak,
    writes a UTC axis and the caption; markup in names is escaped."""
    buckets, doc = _story()
    view = _view(buckets, doc)
    series = isp_series(b for b in buckets if b.domain == "twitter.com")
    leak = view.leaks[0]
    svg = charts.heatmap_svg(
        cc="IR",
        domain="twitter.com",
        rows=series,
        outlines=[charts.Outline(leak.asn, leak.start, leak.end, "leak <b>")],
        since=T0,
        until=T0 + 12 * HOUR,
        bucket_s=HOUR,
        caption="filterwatch collector test - window",
    )
    root = ET.fromstring(svg)
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "Shatel (AS31549)" in texts and "TCI (AS58224)" in texts
    assert "time (UTC)" in texts and "filterwatch collector test - window" in texts
    assert "09-16 00:00" in texts and "09-16 12:00" in texts  # UTC ticks
    outlined = [r for r in root.iter(f"{SVG}rect") if r.get("stroke") == "#000"]
    assert len(outlined) == 2  # the legend's sample and the leak
    assert outlined[1].findtext(f"{SVG}title") == "leak <b>"  # escaped, so read back as text
    assert "<b>" not in svg


def test_the_evidence_chart_plots_the_isp_against_the_rest_of_the_country() -> None:
    """Two lines, the ISP's and the pooled other ISPs', each point with its numbers."""
    buckets, doc = _story()
    leak = _view(buckets, doc).leaks[0]
    series = isp_series(b for b in buckets if b.domain in leak.domains)
    svg = charts.evidence_svg(
        title="t",
        isp=next(s for s in series if s.asn == leak.asn),
        others=[s for s in series if s.asn != leak.asn],
        start=leak.start,
        end=leak.end,
        since=T0,
        until=T0 + 12 * HOUR,
        bucket_s=HOUR,
        caption="c",
    )
    root = ET.fromstring(svg)
    assert len(list(root.iter(f"{SVG}polyline"))) == 2
    tips = [t.text or "" for c in root.iter(f"{SVG}circle") for t in c.iter(f"{SVG}title")]
    assert any(t.startswith("Shatel (AS31549) 2013-09-16 04:00 UTC: 100%") for t in tips)
    assert len(root.get("width", "")) and root.get("height") == "675"


def test_the_sign_in_limit_counts_per_address_and_forgets_after_its_period() -> None:
    """Five attempts a minute per address; a sixth waits; other addresses are unaffected;
    a minute later the address may try again (a fake clock, no sleeping)."""
    now = [1000.0]
    limiter = RateLimiter(5, 60.0, clock=lambda: now[0])
    assert all(limiter.retry_after("192.0.2.1") == 0 for _ in range(5))
    assert limiter.retry_after("192.0.2.1") >= 1
    assert limiter.retry_after("192.0.2.2") == 0
    now[0] += 61
    assert limiter.retry_after("192.0.2.1") == 0
