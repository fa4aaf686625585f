"""``filterwatch lab run`` and ``filterwatch demo`` before any namespace is made: bad
scenarios and missing prerequisites give a clear message and exit 2."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from lab.netns import UsernsSettings, missing_tools, userns_problems
from lab.report import render
from tests.commands import FILTERWATCH


def filterwatch(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FILTERWATCH, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )


def test_bad_scenario_exits_2_naming_file_and_key(tmp_path: Path) -> None:
    """A scenario with a wrong key stops the run before anything is built, naming both."""
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\ncountry: IR\nround_seconds: 4\nrounds: 3\n"
        "sites: [{url: https://a.example.org/}]\n"
        "isps: [{name: A, asn: 1, censor: {dns_injection: [example.org]}}]\n"
    )
    done = filterwatch("lab", "run", str(path))
    assert done.returncode == 2
    assert str(path) in done.stderr
    assert "isps[0].censor.dns_injection: unknown key" in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_scenario_file_exits_2(tmp_path: Path) -> None:
    """A scenario path that does not exist is reported, with exit status 2."""
    done = filterwatch("lab", "run", str(tmp_path / "nowhere.yaml"), "--json")
    assert done.returncode == 2
    assert "no such file" in done.stderr


def test_missing_tools_name_their_packages(tmp_path: Path) -> None:
    """Without ip, nft, iptables and unshare, each package to install is named."""
    problems = " ".join(missing_tools(str(tmp_path)))
    for package in ("iproute2", "nftables", "iptables", "util-linux"):
        assert f"apt-get install {package}" in problems


def restricted(*, root: bool, max_user_namespaces: int) -> UsernsSettings:
    """A machine that keeps unprivileged users from cloning namespaces (both sysctls)."""
    return UsernsSettings(
        root=root,
        max_user_namespaces=max_user_namespaces,
        unprivileged_userns_clone=0,
        apparmor_restrict_unprivileged_userns=1,
    )


def test_disabled_user_namespaces_name_the_sysctl() -> None:
    """Disabled user namespaces are reported with the sysctl that enables them."""
    text = " ".join(userns_problems(restricted(root=False, max_user_namespaces=0)))
    assert "sysctl -w user.max_user_namespaces=15000" in text
    assert "sysctl -w kernel.unprivileged_userns_clone=1" in text
    assert "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0" in text


def test_root_needs_only_user_namespaces_enabled() -> None:
    """For root, only a zero user.max_user_namespaces stops the lab."""
    assert userns_problems(restricted(root=True, max_user_namespaces=100)) == []


def report_doc() -> dict[str, Any]:
    return {
        "scenario": "iran-2013",
        "rounds": 12,
        "round_seconds": 5.0,
        "round_1_start": "2013-09-16T10:00:00Z",
        "isps": [{"name": "Shatel", "asn": 31549, "agents": 2, "vpn_agents": 0}],
        "sites": ["https://twitter.com/"],
        "leaks": [
            {
                "asn": 31549,
                "network_name": "Shatel",
                "domains": ["twitter.com"],
                "start": "2013-09-16T10:00:15Z",
                "end": "2013-09-16T10:00:40Z",
                "agents": 2,
                "confidence": 0.95,
            }
        ],
        "uncorroborated": [],
        "expected_leaks": [
            {"isp": "Shatel", "asn": 31549, "domain": "twitter.com", "rounds": [4, 8]}
        ],
        "expected_uncorroborated": [],
        "expected": 1,
        "found": 1,
        "missed": 0,
        "false_leaks": 0,
        "window_error_rounds": [
            {"isp": "Shatel", "asn": 31549, "domain": "twitter.com", "start": 0, "end": 0}
        ],
        "uncorroborated_expected": 0,
        "uncorroborated_found": 0,
        "verdict_accuracy": 1.0,
        "measurements_scored": 24,
        "total_seconds": 80.0,
        "setup_seconds": 15.0,
    }


def test_report_names_the_leaking_isp_in_plain_words() -> None:
    """The demo's text says which ISP let which sites through, when, and where to look next."""
    text = render(report_doc(), demo=True)
    assert "LEAK: Shatel (AS31549) let through twitter.com from 10:00:15Z to 10:00:40Z" in text
    assert "(rounds 4-8)" in text
    assert "found 1, missed 0, false 0" in text
    assert "Where to look next" in text
    assert "seen by 2 distinct agent(s)" in text


def test_report_shows_divergences_in_words_with_their_score() -> None:
    """Divergences have their own section, in words, beside the truth and the score."""
    doc = {
        **report_doc(),
        "divergences": [
            {
                "asn": 64605,
                "network_name": "Echo",
                "domains": ["x.example"],
                "kind": "unfiltered",
                "start": "2013-09-16T10:00:00Z",
                "end": None,
                "isps_blocking": 4,
                "isps_measured": 5,
                "blocked_share": 0.0,
            }
        ],
        "expected_divergences": [
            {
                "isp": "Kcell",
                "asn": 29355,
                "domain": "y.example",
                "kind": "partial",
                "rounds": [1, 12],
                "blocked_share": 0.7,
            }
        ],
        "divergences_expected": 1,
        "divergences_found": 0,
        "divergences_wrong": 1,
        "wrong_divergences": [{"asn": 64605, "domain": "x.example", "kind": "unfiltered"}],
        "missed_divergences": [{"isp": "Kcell", "domain": "y.example", "kind": "partial"}],
    }
    text = render(doc)
    assert "UNFILTERED: Echo (AS64605) has never filtered x.example, which 4 of 5" in text
    assert "Kcell (AS29355) blocks y.example only 70% of the time in rounds 1-12" in text
    assert "divergences: expected 1, found 0, wrong 1" in text
    assert "wrong: unfiltered x.example on AS64605; missed: partial y.example on Kcell" in text


def test_report_warns_when_a_busy_machine_spoilt_the_verdicts() -> None:
    """Many wrong verdicts on a loaded machine are called what they are."""
    text = render({**report_doc(), "verdict_accuracy": 0.6, "load_average": [3.0, 24.5]})
    assert "40% of the verdicts are wrong and the load average was 24.5" in text
    assert "note:" not in render({**report_doc(), "load_average": [30.0, 30.0]})
