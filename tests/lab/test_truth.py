"""Ground truth of lab scenarios (design.md section 7)."""

from __future__ import annotations

import random
from typing import Any

from lab.scenario import BUILTIN_DIR, Scenario, load_scenario, scenario_from_mapping
from lab.truth import (
    ExpectedDivergence,
    ExpectedEvent,
    blocking_methods,
    censor_round,
    expected_accessible,
    expected_divergences,
    expected_events,
)

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


def test_isp_that_never_filters_is_unfiltered_not_a_leak() -> None:
    """An ISP that never filters what the others block from the first round has no lapse:
    it is an unfiltered divergence over the rounds the others block."""
    s = scenario([isp("A", 1), isp("B", 2), {"name": "C", "asn": 3}], rounds=5)
    assert expected_events(s) == ()
    assert expected_divergences(s) == (
        ExpectedDivergence("C", 3, "www.facebook.com", "unfiltered", 1, 5, 0.0),
    )


def kinds(s: Scenario) -> list[tuple[str, str, str, int, int]]:
    return [(d.isp, d.domain, d.kind, d.start_round, d.end_round) for d in expected_divergences(s)]


def test_rate_below_one_is_partial_not_a_leak() -> None:
    """A 70 % blocker still blocks for the country's majority and is a partial divergence,
    with its blocked share; the full blockers beside it show nothing."""
    rated = {**BLOCKS_ALL, "rates": {"dns_inject": 0.7, "sni_reset": 0.5}}
    s = scenario([isp("A", 1), isp("B", 2), isp("C", 3, censor=rated)])
    assert expected_events(s) == ()
    (d,) = expected_divergences(s)
    assert (d.isp, d.kind, d.start_round, d.end_round) == ("C", "partial", 1, 10)
    assert abs(d.blocked_share - (1 - 0.3 * 0.5)) < 1e-9
    assert expected_accessible(s, s.isps[2], False, s.sites[0], 1) == {True, False}
    assert expected_accessible(s, s.isps[0], False, s.sites[0], 1) == {False}


def test_partial_method_beside_a_full_one_is_a_full_block() -> None:
    """A rate below 1 does not make a site partial while a method with rate 1 blocks it."""
    rated = {**BLOCKS_ALL, "rates": {"dns_inject": 0.7}}
    s = scenario([isp("A", 1), isp("B", 2, censor=rated)])
    assert expected_divergences(s) == ()


def test_glitch_lifting_a_partial_block_is_a_leak_and_the_rest_partial() -> None:
    """A 70 % blocker that stops completely for some rounds leaks then; the rest of the run
    it is partial."""
    rated = {"ip_block": ["facebook.com"], "rates": {"ip_block": 0.7}}
    glitch = {"from_round": 5, "to_round": 7, "lift": ["facebook.com"]}
    s = scenario([isp("A", 1), isp("B", 2), isp("C", 3, censor=rated, glitches=[glitch])])
    assert expected_events(s) == (ExpectedEvent("C", 3, "www.facebook.com", 5, 7, True),)
    assert kinds(s) == [("C", "www.facebook.com", "partial", 1, 10)]


def test_block_starting_later_is_lagging_for_the_rounds_between() -> None:
    """A block that reaches one ISP at round 6 while the others have it from round 3 is
    lagging in rounds 3-5, not a leak; an ISP that leads is nothing."""
    s = scenario(
        [
            isp("A", 1, blocks_from_round={"facebook.com": 3}),
            isp("B", 2, blocks_from_round={"facebook.com": 3}),
            isp("C", 3, blocks_from_round={"www.facebook.com": 6}),
            isp("D", 4, blocks_from_round={"facebook.com": 2}),
        ]
    )
    assert expected_events(s) == ()
    assert kinds(s) == [("C", "www.facebook.com", "lagging", 3, 5)]


def test_isp_that_never_follows_a_new_block_is_unfiltered() -> None:
    """When the country begins blocking inside the data, an ISP whose censor never lists the
    site is unfiltered (over the rounds the others block), not lagging."""
    s = scenario(
        [
            isp("A", 1, blocks_from_round={"facebook.com": 4}),
            isp("B", 2, blocks_from_round={"facebook.com": 4}),
            {"name": "C", "asn": 3},
        ]
    )
    assert kinds(s) == [("C", "www.facebook.com", "unfiltered", 4, 10)]


def test_partial_needs_a_blocking_country_for_a_few_rounds() -> None:
    """A partial blocker is a divergence only against a country that blocks the site, for
    at least three rounds: alone, or for two rounds, it is not one."""
    rated = {**BLOCKS_ALL, "rates": {"dns_inject": 0.5, "sni_reset": 0.5}}
    alone = scenario([isp("A", 1, censor=rated), {"name": "B", "asn": 2}, {"name": "C", "asn": 3}])
    assert kinds(alone) == []
    brief = scenario(
        [isp("A", 1, censor=rated, blocks_from_round={"facebook.com": 9}), isp("B", 2)]
    )
    assert kinds(brief) == [("A", "www.facebook.com", "lagging", 1, 8)]
    three = scenario(
        [isp("A", 1, censor=rated, blocks_from_round={"facebook.com": 8}), isp("B", 2)]
    )
    assert kinds(three) == [
        ("A", "www.facebook.com", "lagging", 1, 7),
        ("A", "www.facebook.com", "partial", 8, 10),
    ]


def test_lapse_needs_a_block_of_its_own_first() -> None:
    """A filter lifted from the first round has no baseline of its own to lapse from: the
    rounds before its first block are lagging; a later lift is a leak."""
    early = {"from_round": 1, "to_round": 3, "lift": ["facebook.com"]}
    late = {"from_round": 7, "to_round": 8, "lift": ["facebook.com"]}
    s = scenario([isp("A", 1), isp("B", 2), isp("C", 3, glitches=[early, late])])
    assert expected_events(s) == (ExpectedEvent("C", 3, "www.facebook.com", 7, 8, True),)
    assert kinds(s) == [("C", "www.facebook.com", "lagging", 1, 3)]


def test_no_divergence_of_an_isp_with_too_few_agents() -> None:
    """An ISP with one non-VPN agent (and VPN volunteers) cannot show a divergence."""
    rated = {**BLOCKS_ALL, "rates": {"dns_inject": 0.5, "sni_reset": 0.5}}
    s = scenario(
        [
            isp("A", 1),
            isp("B", 2),
            isp("C", 3, agents=1, vpn_agents=2, censor=rated),
            {"name": "D", "asn": 4, "agents": 1},
        ]
    )
    assert expected_divergences(s) == ()


def test_down_rounds_are_no_rounds_of_a_divergence() -> None:
    """Rounds in which the site is down everywhere are not part of a divergence."""
    s = scenario(
        [isp("A", 1), isp("B", 2), {"name": "C", "asn": 3}],
        sites=[{"url": "https://www.facebook.com/", "down": [1, 2]}],
    )
    assert kinds(s) == [("C", "www.facebook.com", "unfiltered", 3, 10)]


def test_censor_round_holds_a_block_back_until_its_round() -> None:
    """Before its round a rolling-out domain is lifted by every method; from it on it is
    blocked at the method's rate."""
    rated = {**BLOCKS_ALL, "rates": {"sni_reset": 0.25}}
    s = scenario([isp("A", 1, censor=rated, blocks_from_round={"facebook.com": 4})])
    before, at = censor_round(s.isps[0], 3), censor_round(s.isps[0], 4)
    assert not before.blocks("dns_inject", "www.facebook.com")
    assert not before.blocks("sni_reset", "www.facebook.com")
    assert at.blocks("sni_reset", "www.facebook.com") and at.starting == ("facebook.com",)
    assert at.rate("sni_reset") == 0.25 and at.rate("dns_inject") == 1.0


def test_existing_scenarios_expect_no_divergence() -> None:
    """The seven scenarios written before rates and rolling blocks expect no divergence."""
    old = ["iran-2013", "vpn-volunteer", "site-down", "sni-glitch", "ip-blocking"]
    for name in [*old, "two-leaks", "single-agent"]:
        assert expected_divergences(load_scenario(BUILTIN_DIR / f"{name}.yaml")) == (), name


def test_down_site_verdict_may_name_the_block() -> None:
    """When a censored site is down, either site_down or the block is a right verdict."""
    s = scenario([isp("A", 1)], sites=[{"url": "https://www.facebook.com/", "down": [2]}])
    assert expected_accessible(s, s.isps[0], False, s.sites[0], 2) == {None, False}
    assert expected_accessible(s, s.isps[0], True, s.sites[0], 2) == {None}


def test_draw_blocks_queries_at_the_rate() -> None:
    """The resolver's and the proxy's draw: every query at rate 1, about the rate's share
    below 1, none for a name the method does not list."""
    rated = {**BLOCKS_ALL, "rates": {"dns_inject": 0.7}}
    s = scenario([isp("A", 1, censor=rated), isp("B", 2)])
    rng = random.Random(8)
    partial, full = censor_round(s.isps[0], 1), censor_round(s.isps[1], 1)
    drawn = sum(partial.draw("dns_inject", "www.facebook.com", rng) for _ in range(1000))
    assert 600 < drawn < 800
    assert all(full.draw("dns_inject", "www.facebook.com", rng) for _ in range(100))
    assert not any(partial.draw("dns_inject", "en.wikipedia.org", rng) for _ in range(100))


def test_rules_change_only_at_the_start_round() -> None:
    """The round after a block starts has the same rules: the routers are not rewritten."""
    s = scenario([isp("A", 1, blocks_from_round={"facebook.com": 4})])
    assert censor_round(s.isps[0], 3) != censor_round(s.isps[0], 4)
    assert censor_round(s.isps[0], 4) == censor_round(s.isps[0], 5)
    assert censor_round(s.isps[0], 5).starting == ()
