"""Scoring the collector's leak events and verdicts against the ground truth."""

from __future__ import annotations

from typing import Any

from lab.report import iso
from lab.scenario import scenario_from_mapping
from lab.score import MeasurementRow, match_events, score, to_rounds
from lab.truth import ExpectedEvent, expected_events

RS = 5.0
T0 = 1_700_000_000.0  # a multiple of RS, as the lab's round 1 always is


def at(rounds_after_t0: int, rs: float) -> str:
    return iso(T0 + rounds_after_t0 * rs)


SCENARIO = scenario_from_mapping(
    {
        "name": "t",
        "country": "IR",
        "round_seconds": RS,
        "rounds": 10,
        "sites": [{"url": "https://www.facebook.com/"}, {"url": "https://twitter.com/"}],
        "isps": [
            {"name": "A", "asn": 1, "censor": {"dns_inject": ["facebook.com", "twitter.com"]}},
            {"name": "B", "asn": 2, "censor": {"dns_inject": ["facebook.com", "twitter.com"]}},
            {
                "name": "C",
                "asn": 3,
                "censor": {"dns_inject": ["facebook.com", "twitter.com"]},
                "glitches": [
                    {"from_round": 4, "to_round": 7, "lift": ["facebook.com", "twitter.com"]}
                ],
            },
        ],
    }
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
    ):
        assert key in doc
