"""The HTML report is one self-contained page that a real browser renders without errors."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from collector.analysis import analyse
from collector.report_html import render_html
from tests.collector.analysis.scenarios import (
    FIVE_ISPS,
    HOUR,
    STORY_DOMAINS,
    Isp,
    make_rows,
    reference_buckets,
    story_verdict,
)
from tests.conftest import skip_or_fail_in_ci

CHROMIUM = "/usr/bin/chromium"


def _report_page() -> str:
    isps = (*FIVE_ISPS, Isp("Solo", 7777, 1))

    def verdict(isp: Isp, domain: str, b: int, agent: int) -> str:
        if isp.asn == 7777:
            return "ok" if domain == "facebook.com" and b >= 9 else "tls"
        return story_verdict(isp, domain, b, agent)

    buckets = reference_buckets(make_rows(isps, STORY_DOMAINS, 12, verdict), HOUR)
    return render_html(analyse(buckets, HOUR), buckets, HOUR, title="Iran, 16 September 2013")


def test_report_is_self_contained_and_says_the_event_in_words() -> None:
    """The page names the leaking ISP, its domains and window, and loads nothing external."""
    page = _report_page()
    assert "AS31549 Shatel</b> (IR) let through <b>facebook.com</b>, <b>twitter.com</b>" in page
    assert "from 2013-09-16T04:00:00Z; the leak ended 2013-09-16T08:00:00Z" in page
    assert "Uncorroborated (1)" in page
    assert page.count("<svg") == len(STORY_DOMAINS)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<script" not in page


def test_chromium_renders_the_report_without_console_errors(tmp_path: Path) -> None:
    """Headless Chromium opens the file and takes a screenshot, with nothing on its console."""
    if not shutil.which(CHROMIUM):
        skip_or_fail_in_ci(f"{CHROMIUM} is not installed")
    page = tmp_path / "report.html"
    page.write_text(_report_page(), encoding="utf-8")
    shot = tmp_path / "report.png"
    proc = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1200,900",
            "--enable-logging=stderr",
            "--v=0",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert shot.exists() and shot.stat().st_size > 10_000
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    assert console == []


def test_report_says_divergences_and_national_lifts_in_words() -> None:
    """Divergences have their own section, each in one sentence; a lapse the country then
    lifted says so; events count distinct agents."""
    from tests.collector.analysis.scenarios import NOISY_ISPS, noisy_story

    buckets = reference_buckets(make_rows(NOISY_ISPS, STORY_DOMAINS, 12, noisy_story), HOUR)
    page = render_html(analyse(buckets, HOUR), buckets, HOUR)
    assert "<h2>Divergences (4)</h2>" in page
    assert "Echo (AS64605) has never filtered bbc.com, which 4 of 5 other ISPs block" in page
    assert "MCI (AS197207) lagged in blocking wikipedia.org" in page
    assert "Echo (AS64605) blocks twitter.com only 67% of the time" in page
    assert "Then the rest of the country lifted it too, from 2013-09-16T10:00:00Z" in page
    assert "3 distinct agents" in page and "at once" not in page
