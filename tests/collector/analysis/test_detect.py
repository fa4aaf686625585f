"""The leak detector on hand-made measurement sets: each case asserts the exact events."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.analysis import AnalysisParams, Report, analyse
from collector.analysis.stats import wilson_bounds
from collector.compare.count import ArrowBucketCounter
from collector.filters import Filters
from tests.collector.analysis.scenarios import (
    FIVE_ISPS,
    HOUR,
    STORY_DOMAINS,
    T0,
    Isp,
    make_rows,
    reference_buckets,
    story_verdict,
)


def at(bucket: int, width: float = HOUR) -> str:
    from collector.analysis import iso_utc

    return iso_utc(T0 + bucket * width)


def run(
    verdict: Callable[[Isp, str, int, int], str],
    isps: Sequence[Isp] = FIVE_ISPS,
    buckets: int = 12,
    domains: Sequence[str] = ("facebook.com",),
    width: float = HOUR,
) -> Report:
    rows = make_rows(isps, domains, buckets, verdict, bucket_s=width)
    return analyse(reference_buckets(rows, width), width)


def windows(events) -> list[tuple[int, tuple[str, ...], str, str | None]]:  # type: ignore[no-untyped-def]
    return [(e.asn, e.domains, e.to_json()["start"], e.to_json()["end"]) for e in events]


def blocked_except(leaks: dict[int, range]) -> Callable[[Isp, str, int, int], str]:
    """Every ISP blocks, except ISPs in ``leaks`` during their range of buckets."""

    def verdict(isp: Isp, domain: str, b: int, agent: int) -> str:
        return "ok" if b in leaks.get(isp.asn, range(0)) else "tls"

    return verdict


def test_story_of_2013_is_one_event_with_both_domains() -> None:
    """One ISP accessible for facebook.com and twitter.com for four hours while four others
    block gives exactly one event naming that ISP, both domains, and the hours."""
    report = run(story_verdict, domains=STORY_DOMAINS)
    assert windows(report.leaks) == [
        (31549, ("facebook.com", "twitter.com"), at(4), at(8)),
    ]
    event = report.leaks[0].to_json()
    assert event["network_name"] == "Shatel"
    assert event["measurements"] == 24
    assert event["agents"] == 3
    assert event["accessible_rate"] == 1.0
    assert (event["isps_blocking"], event["isps_measured"]) == (4, 4)
    assert event["example_measurement_ids"][0] == "31549-facebook.com-004-0"
    assert report.uncorroborated == ()


CASES: list[tuple[str, Callable[[Isp, str, int, int], str], tuple[Isp, ...], list, list]] = [  # type: ignore[type-arg]
    (
        "a volunteer on a VPN in a blocking ISP",
        lambda isp, d, b, agent: "ok" if (isp.asn, agent) == (58224, 0) else "dns",
        FIVE_ISPS,
        [],
        [],
    ),
    (
        "a site down everywhere",
        lambda isp, d, b, agent: "site_down" if 3 <= b <= 8 else "dns",
        FIVE_ISPS,
        [],
        [],
    ),
    (
        "a flaky ISP alternating bucket by bucket",
        lambda isp, d, b, agent: (
            "ok" if isp.asn == 44244 and 2 <= b <= 8 and b % 2 == 0 else "tcp_ip"
        ),
        FIVE_ISPS,
        [(44244, ("facebook.com",), at(2), at(9))],
        [],
    ),
    (
        "an ISP with only one agent",
        blocked_except({7777: range(3, 8)}),
        (*FIVE_ISPS, Isp("Solo", 7777, 1)),
        [],
        [(7777, ("facebook.com",), at(3), at(8))],
    ),
    (
        "two ISPs leaking at different times",
        blocked_except({58224: range(2, 5), 197207: range(7, 10)}),
        FIVE_ISPS,
        [(58224, ("facebook.com",), at(2), at(5)), (197207, ("facebook.com",), at(7), at(10))],
        [],
    ),
    (
        "a leak still open at the end of the data",
        blocked_except({16322: range(9, 12)}),
        FIVE_ISPS,
        [(16322, ("facebook.com",), at(9), None)],
        [],
    ),
    (
        "a leak that ends one bucket before the data does",
        blocked_except({16322: range(8, 11)}),
        FIVE_ISPS,
        [(16322, ("facebook.com",), at(8), at(11))],
        [],
    ),
    (
        "a whole country that stops blocking is no leak",
        lambda isp, d, b, agent: "ok" if b >= 6 else "dns",
        FIVE_ISPS,
        [],
        [],
    ),
]


@pytest.mark.parametrize(
    ("verdict", "isps", "leaks", "uncorroborated"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_exact_events(verdict, isps, leaks, uncorroborated) -> None:  # type: ignore[no-untyped-def]
    """Each hand-made measurement set gives exactly the expected leaks and uncorroborated events."""
    report = run(verdict, isps=isps)
    assert windows(report.leaks) == leaks
    assert windows(report.uncorroborated) == uncorroborated


def test_lab_rounds_of_five_seconds_with_two_agents() -> None:
    """With 5 s buckets, two agents both ok open a leak in the first glitch round and the
    event ends with the last glitch round, to the bucket."""
    isps = (Isp("TCI", 58224, 3), Isp("Shatel", 31549, 2), Isp("MCI", 197207, 3))
    report = run(blocked_except({31549: range(4, 9)}), isps=isps, buckets=12, width=5.0)
    assert windows(report.leaks) == [(31549, ("facebook.com",), at(4, 5.0), at(9, 5.0))]


def test_isp_table_counts_methods_and_bounds_the_share() -> None:
    """The per-ISP table gives the method mix and a Wilson interval, not a raw ratio."""
    report = run(story_verdict, domains=STORY_DOMAINS)
    shatel = next(row for row in report.isps if row.asn == 31549)
    # 12 buckets x 3 agents x 4 domains; facebook+twitter ok for 4 buckets, wikipedia always
    assert (shatel.measurements, shatel.accessible, shatel.blocked) == (144, 60, 84)
    assert shatel.methods == {"dns": 48, "tcp": 0, "tls": 0, "http": 0, "blockpage": 36}
    assert shatel.accessible_lower == pytest.approx(wilson_bounds(60, 144, 1.0)[0])
    assert shatel.accessible_lower < 60 / 144 < shatel.accessible_upper
    assert shatel.leaking_domains == ("facebook.com", "twitter.com")
    assert [row.asn for row in report.isps] == sorted(row.asn for row in report.isps)


def test_min_agents_is_configurable() -> None:
    """Asking for three corroborating agents moves a two-agent leak to uncorroborated."""
    isps = (Isp("TCI", 58224, 3), Isp("Shatel", 31549, 2))
    rows = make_rows(isps, ("twitter.com",), 8, blocked_except({31549: range(2, 4)}))
    report = analyse(reference_buckets(rows, HOUR), HOUR, AnalysisParams(min_agents=3))
    assert report.leaks == ()
    assert windows(report.uncorroborated) == [(31549, ("twitter.com",), at(2), at(4))]


def test_wilson_bounds_allow_two_of_two_but_not_one_of_three() -> None:
    """At z = 1 two of two agents clear the 0.5 opening bound; one VPN agent of three does not."""
    assert wilson_bounds(2, 2, 1.0)[0] > 0.5
    assert wilson_bounds(1, 3, 1.0)[0] < 0.25
    assert wilson_bounds(0, 0, 1.0) == (0.0, 1.0)


ROW_STRATEGY = st.lists(
    st.tuples(
        st.sampled_from([58224, 31549, 44244]),
        st.integers(0, 1),  # agent
        st.sampled_from(["facebook.com", "twitter.com"]),
        st.integers(0, 7),  # bucket
        st.sampled_from(["ok", "ok", "dns", "tls", "site_down", "inconclusive"]),
    ),
    max_size=120,
)


@settings(max_examples=60, deadline=None)
@given(ROW_STRATEGY, st.randoms(use_true_random=False))
def test_order_of_measurements_never_changes_the_output(spec, rnd: random.Random) -> None:  # type: ignore[no-untyped-def]
    """Shuffling the input measurements gives byte-identical JSON."""
    rows = [
        {
            "measurement_id": f"m{i}",
            "measured_at": T0 + b * HOUR + i,
            "cc": "IR",
            "asn": asn,
            "network_name": f"AS{asn}",
            "agent": f"{asn}-{agent}",
            "url": f"https://{domain}/",
            "domain": domain,
            "blocking": blocking,
        }
        for i, (asn, agent, domain, b, blocking) in enumerate(spec)
    ]
    expected = analyse(reference_buckets(rows, HOUR), HOUR).dumps(with_isps=True)
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    buckets = reference_buckets(shuffled, HOUR)
    rnd.shuffle(buckets)
    assert analyse(buckets, HOUR).dumps(with_isps=True) == expected
    # and through compare's own aggregation (Arrow), fed the shuffled rows in slices
    counter = ArrowBucketCounter(Filters(bucket_s=HOUR), flush_rows=7)
    for start in range(0, len(shuffled), 5):
        counter.add(normalised_table(shuffled[start : start + 5]))
    assert analyse(counter.buckets(), HOUR).dumps(with_isps=True) == expected
    json.loads(expected)


def normalised_table(rows: list[dict[str, object]]) -> pa.Table:
    """Rows as compare holds them after reading an export."""
    return pa.table(
        {
            "measurement_id": pa.array([r["measurement_id"] for r in rows], pa.string()),
            "measured_at": pa.array([r["measured_at"] for r in rows], pa.float64()),
            "cc": pa.array([r["cc"] for r in rows], pa.string()),
            "asn": pa.array([r["asn"] for r in rows], pa.int64()),
            "network_name": pa.array([r["network_name"] for r in rows], pa.string()),
            "agent": pa.array([r["agent"] for r in rows], pa.string()),
            "domain": pa.array([r["domain"] for r in rows], pa.string()),
            "blocking": pa.array([r["blocking"] for r in rows], pa.string()),
        }
    )


def test_vpn_volunteer_with_many_rounds_per_bucket_is_one_agent() -> None:
    """A VPN volunteer measuring every 5 minutes in a two-agent ISP is still one agent of two
    in each hourly bucket, so it opens no leak and no uncorroborated event."""
    isps = (Isp("TCI", 58224, 2), Isp("Shatel", 31549, 2), Isp("MCI", 197207, 2))

    def verdict(isp: Isp, domain: str, b: int, agent: int) -> str:
        return "ok" if (isp.asn, agent) == (58224, 0) else "dns"

    rows = make_rows(isps, ("facebook.com",), 12 * 12, verdict, bucket_s=300.0)
    report = analyse(reference_buckets(rows, HOUR), HOUR)
    assert (report.leaks, report.uncorroborated) == ((), ())


def test_one_bucket_where_the_country_does_not_block_neither_splits_nor_weakens() -> None:
    """A bucket inside a leak where every ISP lets the site through does not split the
    event, and the event's baseline is the one of the buckets that showed the leak."""

    def verdict(isp: Isp, domain: str, b: int, agent: int) -> str:
        if b == 4 or (isp.asn == 44244 and 2 <= b <= 7):
            return "ok"
        return "dns"

    report = run(verdict)
    assert windows(report.leaks) == [(44244, ("facebook.com",), at(2), at(8))]
    event = report.leaks[0]
    assert (event.isps_blocking, event.isps_measured) == (4, 4)


def test_event_agents_counts_distinct_agents_over_the_whole_event() -> None:
    """An ISP of four volunteers, three of whom see the site each hour but not the same
    three, gives one event whose `agents` is four: distinct over the event, not per hour."""
    isps = (*FIVE_ISPS[:4], Isp("Rightel", 57218, 4))

    def verdict(isp: Isp, domain: str, b: int, agent: int) -> str:
        if isp.asn == 57218 and 3 <= b <= 6:
            return "tls" if agent == b % 4 else "ok"
        return "tls"

    report = run(verdict, isps=isps)
    assert windows(report.leaks) == [(57218, ("facebook.com",), at(3), at(7))]
    assert report.leaks[0].to_json()["agents"] == 4
