"""Scoring the collector's leak events and verdicts against the ground truth."""

from __future__ import annotations

from typing import Any

from lab.report import iso
from lab.scenario import Scenario, scenario_from_mapping
from lab.score import MeasurementRow, match_events, score, to_rounds
from lab.truth import ExpectedEvent, expected_divergences, expected_events

RS = 5.0
T0 = 1_700_000_000.0  # a multiple of RS, as the lab's round 1 always is


def at(rounds_after_t0: int, rs: float) -> str:
    return iso(T0 + rounds_after_t0 * rs)


def two_sites(name: str, country: str, isps: list[dict[str, Any]]) -> Scenario:
    """Facebook and Twitter, measured for ten rounds of ``RS`` seconds by these ISPs."""
    return scenario_from_mapping(
        {
            "name": name,
            "country": country,
            "round_seconds": RS,
            "rounds": 10,
            "sites": [{"url": "https://www.facebook.com/"}, {"url": "https://twitter.com/"}],
            "isps": isps,
        }
    )


SCENARIO = two_sites(
    "t",
    "IR",
    [
        {"name": "A", "asn": 1, "censor": {"dns_inject": ["facebook.com", "twitter.com"]}},
        {"name": "B", "asn": 2, "censor": {"dns_inject": ["facebook.com", "twitter.com"]}},
        {
            "name": "C",
            "asn": 3,
            "censor": {"dns_inject": ["facebook.com", "twitter.com"]},
            "glitches": [{"from_round": 4, "to_round": 7, "lift": ["facebook.com", "twitter.com"]}],
        },
    ],
)


def event(asn: int, domains: list[str], start_round: int, end_round: int | None) -> dict[str, Any]:
    """A collector event whose buckets are the lab's rounds (end exclusive, null = ongoing)."""
    return {
        "cc": "IR",
        "asn": asn,
        "network_name": f"AS{asn}",
        "domains": domains,
        "start": at(start_round - 1, RS),
        "end": None if end_round is None else at(end_round, RS),
    }


def test_event_times_become_rounds() -> None:
    """Bucket-aligned start and exclusive end map back to the first and last round."""
    found = to_rounds([event(3, ["twitter.com"], 4, 7)], T0, RS, 10)
    assert [(f.start_round, f.end_round) for f in found] == [(4, 7)]


def test_ongoing_event_ends_with_the_run() -> None:
    """An event still open at the end of the run ends in the last round."""
    found = to_rounds([event(3, ["twitter.com"], 9, None)], T0, RS, 10)
    assert (found[0].start_round, found[0].end_round) == (9, 10)


def test_multi_domain_event_counts_per_domain() -> None:
    """One event naming both leaked domains finds both expected leaks, exactly."""
    report = {"leaks": [event(3, ["twitter.com", "www.facebook.com"], 4, 7)], "uncorroborated": []}
    result = score(SCENARIO, expected_events(SCENARIO), report, [], T0)
    assert (result.expected, result.found, result.missed, result.false_leaks) == (2, 2, 0, 0)
    assert result.max_window_error == 0


def test_late_and_long_event_shows_window_error() -> None:
    """A leak found one round late and closed one round late is found, with errors +1/+1."""
    report = {"leaks": [event(3, ["twitter.com"], 5, 8)], "uncorroborated": []}
    result = score(SCENARIO, expected_events(SCENARIO), report, [], T0)
    assert result.found == 1 and result.missed == 1
    (m,) = result.leaks.matches
    assert (m.start_error, m.end_error) == (1, 1)


def test_wrong_isp_is_a_false_leak() -> None:
    """A leak reported on an ISP that kept filtering is false, and the true one is missed."""
    report = {"leaks": [event(2, ["twitter.com"], 4, 7)], "uncorroborated": []}
    result = score(SCENARIO, expected_events(SCENARIO), report, [], T0)
    assert (result.found, result.false_leaks) == (0, 1)


def test_far_away_window_does_not_match() -> None:
    """An event on the right ISP and domain but in other rounds does not count as found."""
    expected = [ExpectedEvent("C", 3, "twitter.com", 2, 3, True)]
    found = to_rounds([event(3, ["twitter.com"], 6, 8)], T0, RS, 10)
    matching = match_events(expected, found)
    assert not matching.matches and len(matching.unmatched) == 1


def test_flapping_event_counts_one_false() -> None:
    """A leak split in two events: one matches, the other is a false leak."""
    report = {"leaks": [event(3, ["twitter.com"], 4, 5), event(3, ["twitter.com"], 6, 7)]}
    result = score(SCENARIO, [ExpectedEvent("C", 3, "twitter.com", 4, 7, True)], report, [], T0)
    assert (result.found, result.false_leaks) == (1, 1)


def row(
    isp: str, url: str, round_no: int, accessible: bool | None, vpn: bool = False
) -> MeasurementRow:
    return MeasurementRow(
        agent=f"{isp}/1",
        isp=isp,
        vpn=vpn,
        url=url,
        measured_at=T0 + (round_no - 1) * RS + 0.2,
        blocking={True: "ok", False: "dns", None: "site_down"}[accessible],
        accessible=accessible,
    )


def test_verdict_accuracy_uses_each_rounds_truth() -> None:
    """Verdicts are checked against the truth of their own round; outside rounds are ignored."""
    fb = "https://www.facebook.com/"
    rows = [
        row("C", fb, 3, False),  # right: still filtered
        row("C", fb, 4, True),  # right: lifted
        row("C", fb, 8, True),  # wrong: filtered again
        row("A", fb, 5, False),  # right
        row("A", fb, 11, True),  # after the run: ignored
        row("A", fb, 5, True, vpn=True),  # right: a VPN goes around the filter
    ]
    result = score(SCENARIO, expected_events(SCENARIO), {}, rows, T0)
    assert (result.verdicts.total, result.verdicts.correct) == (5, 4)
    assert result.verdicts.wrong[0]["round"] == 8


def test_json_has_the_contract_keys() -> None:
    """--json carries the keys design.md section 7 promises."""
    doc = score(SCENARIO, expected_events(SCENARIO), {}, [], T0).to_json()
    for key in (
        "expected",
        "found",
        "missed",
        "false_leaks",
        "window_error_rounds",
        "verdict_accuracy",
        "divergences_expected",
        "divergences_found",
        "divergences_wrong",
    ):
        assert key in doc


# Beeline never filters Twitter; Tele2 drops Facebook's connections 70 % of the time; the
# block of Facebook reaches Kcell only in round 6.
DIVERGING = two_sites(
    "d",
    "KZ",
    [
        {
            "name": "Kazakhtelecom",
            "asn": 9198,
            "censor": {"ip_block": ["facebook.com", "twitter.com"]},
        },
        {"name": "Beeline", "asn": 21299, "censor": {"ip_block": ["facebook.com"]}},
        {
            "name": "Tele2",
            "asn": 48503,
            "agents": 3,
            "censor": {"ip_block": ["facebook.com", "twitter.com"], "rates": {"ip_block": 0.7}},
        },
        {
            "name": "Kcell",
            "asn": 29355,
            "censor": {"ip_block": ["facebook.com", "twitter.com"]},
            "blocks_from_round": {"facebook.com": 6},
        },
    ],
)


def divergence(asn: int, domains: list[str], kind: str, share: float = 0.0) -> dict[str, Any]:
    """A collector divergence in the contract shape (the leak-event shape plus kind)."""
    return {**event(asn, domains, 1, None), "kind": kind, "blocked_share": share}


def test_divergences_match_by_asn_domain_and_kind() -> None:
    """Each expected divergence is found by a collector divergence of its AS, domain and
    kind, whatever its window; the JSON counts them."""
    expected = expected_divergences(DIVERGING)
    assert sorted((d.asn, d.domain, d.kind) for d in expected) == [
        (21299, "twitter.com", "unfiltered"),
        (29355, "www.facebook.com", "lagging"),
        (48503, "twitter.com", "partial"),
        (48503, "www.facebook.com", "partial"),
    ]
    report = {
        "leaks": [],
        "divergences": [
            divergence(21299, ["twitter.com"], "unfiltered"),
            divergence(29355, ["www.facebook.com"], "lagging"),
            divergence(48503, ["twitter.com", "www.facebook.com"], "partial", 0.69),
        ],
    }
    result = score(DIVERGING, expected_events(DIVERGING), report, [], T0, expected)
    doc = result.to_json()
    assert (doc["divergences_expected"], doc["divergences_found"]) == (4, 4)
    assert doc["divergences_wrong"] == 0 and doc["passed"] and doc["perfect"]
    assert {d["found_blocked_share"] for d in doc["found_divergences"]} == {0.0, 0.69}


def test_unexpected_or_wrongly_named_divergence_is_wrong() -> None:
    """A partial on an ISP that blocks every time is wrong, so is the right place with the
    wrong kind (which also misses the expected one); a repeat of a found one is not."""
    expected = expected_divergences(DIVERGING)
    report = {
        "divergences": [
            divergence(21299, ["twitter.com"], "unfiltered"),
            divergence(21299, ["twitter.com"], "unfiltered"),
            divergence(29355, ["www.facebook.com"], "unfiltered"),
            divergence(48503, ["twitter.com", "www.facebook.com"], "partial"),
            divergence(9198, ["www.facebook.com"], "partial", 0.95),
        ],
    }
    result = score(DIVERGING, expected_events(DIVERGING), report, [], T0, expected)
    doc = result.to_json()
    assert (doc["divergences_expected"], doc["divergences_found"]) == (4, 3)
    assert doc["divergences_wrong"] == 2 and not doc["passed"]
    assert {(w["asn"], w["kind"]) for w in doc["wrong_divergences"]} == {
        (29355, "unfiltered"),
        (9198, "partial"),
    }
    assert [(m["isp"], m["kind"]) for m in doc["missed_divergences"]] == [("Kcell", "lagging")]


def test_no_divergence_expected_and_none_found_passes() -> None:
    """A scenario without standing differences passes with no divergences at all; a leak
    reported as a divergence is wrong there."""
    clean = score(SCENARIO, expected_events(SCENARIO), {"leaks": []}, [], T0)
    assert clean.to_json()["divergences_expected"] == 0 and clean.divergences.wrong == ()
    report = {"divergences": [divergence(3, ["twitter.com"], "lagging")]}
    result = score(SCENARIO, expected_events(SCENARIO), report, [], T0)
    assert result.to_json()["divergences_wrong"] == 1
