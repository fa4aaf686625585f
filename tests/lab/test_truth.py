"""Ground truth of lab scenarios (design.md section 7)."""

from __future__ import annotations

from typing import Any

from lab.scenario import Scenario, scenario_from_mapping
from lab.truth import ExpectedEvent, blocking_methods, expected_accessible, expected_events

BLOCKS_ALL = {"dns_inject": ["facebook.com"], "sni_reset": ["facebook.com"]}


def scenario(
    isps: list[dict[str, Any]], sites: list[Any] | None = None, rounds: int = 10
) -> Scenario:
    return scenario_from_mapping(
        {
            "name": "t",
            "country": "IR",
            "round_seconds": 4,
            "rounds": rounds,
            "sites": sites or [{"url": "https://www.facebook.com/"}],
            "isps": isps,
        }
    )


def isp(name: str, asn: int, **kw: Any) -> dict[str, Any]:
    return {"name": name, "asn": asn, "censor": BLOCKS_ALL, **kw}


def test_glitch_lifting_everything_is_a_leak() -> None:
    """An ISP whose filter lifts a site others block leaks it in exactly those rounds."""
    s = scenario(
        [
            isp("A", 1),
            isp("B", 2),
            isp("C", 3, glitches=[{"from_round": 4, "to_round": 6, "lift": ["facebook.com"]}]),
        ]
    )
    assert expected_events(s) == (ExpectedEvent("C", 3, "www.facebook.com", 4, 6, True),)


def test_lifting_one_method_is_no_leak() -> None:
    """Lifting SNI filtering while DNS injection stays leaves the site blocked."""
    glitch = {"from_round": 2, "to_round": 5, "lift": ["facebook.com"], "methods": ["sni_reset"]}
    s = scenario([isp("A", 1), isp("B", 2, glitches=[glitch])])
    assert expected_events(s) == ()
    assert blocking_methods(s.isps[1], s.sites[0], 3) == ("dns_inject",)


def test_sni_reset_does_not_touch_plain_http() -> None:
    """SNI filtering cannot block an http:// site, and Host filtering cannot block https://."""
    s = scenario(
        [
            {"name": "A", "asn": 1, "censor": {"sni_reset": ["bbc.com"]}},
            {"name": "B", "asn": 2, "censor": {"http_blockpage": ["bbc.com"]}},
        ],
        sites=[{"url": "http://www.bbc.com/persian"}, {"url": "https://news.bbc.com/"}],
    )
    http, https = s.sites
    assert blocking_methods(s.isps[0], http, 1) == ()
    assert blocking_methods(s.isps[0], https, 1) == ("sni_reset",)
    assert blocking_methods(s.isps[1], http, 1) == ("http_blockpage",)
    assert blocking_methods(s.isps[1], https, 1) == ()


def test_down_site_leaks_nowhere() -> None:
    """A site down in a round cannot leak in that round, even where the filter lapses."""
    glitch = {"from_round": 3, "to_round": 6, "lift": ["facebook.com"]}
    s = scenario(
        [isp("A", 1), isp("B", 2), isp("C", 3, glitches=[glitch])],
        sites=[{"url": "https://www.facebook.com/", "down": [4, 5]}],
    )
    assert [(e.start_round, e.end_round) for e in expected_events(s)] == [(3, 3), (6, 6)]


def test_single_agent_isp_is_uncorroborated() -> None:
    """An ISP with one agent cannot show a leak: its lapse is expected as uncorroborated."""
    glitch = {"from_round": 2, "to_round": 4, "lift": ["facebook.com"]}
    s = scenario([isp("A", 1), isp("B", 2), isp("C", 3, agents=1, glitches=[glitch])])
    assert expected_events(s) == (ExpectedEvent("C", 3, "www.facebook.com", 2, 4, False),)


def test_vpn_agents_do_not_count_for_corroboration_or_leaks() -> None:
    """VPN agents' open access is not their ISP's: no leak, and they are not corroboration."""
    s = scenario([isp("A", 1), isp("B", 2, agents=2, vpn_agents=3)])
    assert expected_events(s) == ()
    assert expected_accessible(s, s.isps[1], True, s.sites[0], 1) == {True}
    assert expected_accessible(s, s.isps[1], False, s.sites[0], 1) == {False}


def test_minority_blocking_is_no_leak() -> None:
    """A site only a minority of the other ISPs block is not a leak where it is open."""
    s = scenario([isp("A", 1), {"name": "B", "asn": 2}, {"name": "C", "asn": 3}])
    assert expected_events(s) == ()


def test_isp_that_never_filters_leaks_all_run() -> None:
    """An ISP that never filters what the others block leaks it from first to last round."""
    s = scenario([isp("A", 1), isp("B", 2), {"name": "C", "asn": 3}], rounds=5)
    assert expected_events(s) == (ExpectedEvent("C", 3, "www.facebook.com", 1, 5, True),)


def test_down_site_verdict_may_name_the_block() -> None:
    """When a censored site is down, either site_down or the block is a right verdict."""
    s = scenario([isp("A", 1)], sites=[{"url": "https://www.facebook.com/", "down": [2]}])
    assert expected_accessible(s, s.isps[0], False, s.sites[0], 2) == {None, False}
    assert expected_accessible(s, s.isps[0], True, s.sites[0], 2) == {None}
