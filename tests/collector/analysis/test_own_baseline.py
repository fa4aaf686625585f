"""Each ISP judged against its own history as well as the country: lapses, divergences and
the traps of real-world noise, on hand-made measurement sets (exact events asserted)."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import cast

import pytest

from collector.analysis import AnalysisParams, Report, analyse, iso_utc
from tests.collector.analysis.scenarios import HOUR, T0, Isp, make_rows, reference_buckets

Verdict = Callable[[Isp, str, int, int], str]
ROUND = 5.0  # the lab's rounds, one bucket each
ALPHA, BRAVO, CHARLIE, DELTA = (
    Isp("Alpha", 64601, 3),
    Isp("Bravo", 64602, 3),
    Isp("Charlie", 64603, 2),
    Isp("Delta", 64604, 3),
)
ECHO = Isp("Echo", 64605, 3)
COUNTRY = (ALPHA, BRAVO, CHARLIE, DELTA, ECHO)


def at(bucket: int, width: float = ROUND) -> str:
    return iso_utc(T0 + bucket * width)


def run(
    verdict: Verdict,
    isps: tuple[Isp, ...] = COUNTRY,
    buckets: int = 20,
    domains: tuple[str, ...] = ("x.example",),
    width: float = ROUND,
    params: AnalysisParams | None = None,
) -> Report:
    rows = make_rows(isps, domains, buckets, verdict, bucket_s=width)
    return analyse(reference_buckets(rows, width), width, params)


def spans(events) -> list[tuple[int, tuple[str, ...], str, str | None]]:  # type: ignore[no-untyped-def]
    return [(e.asn, e.domains, e.to_json()["start"], e.to_json()["end"]) for e in events]


def kinds(report: Report) -> list[tuple[int, tuple[str, ...], str]]:
    return [(d.asn, d.domains, d.kind) for d in report.divergences]


def probabilistic(seed: int, rate: float = 0.7, stop: range = range(0)) -> Verdict:
    """Echo drops each connection with probability ``rate`` (drawn once per measurement),
    except in the buckets of ``stop``, where its filter stops completely; everyone else
    blocks every time."""
    rnd = random.Random(seed)
    draws: dict[tuple[str, int, int], float] = {}

    def verdict(isp: Isp, domain: str, b: int, agent: int) -> str:
        if isp.asn != ECHO.asn:
            return "tcp_ip"
        if b in stop:
            return "ok"
        draw = draws.setdefault((domain, b, agent), rnd.random())
        return "tcp_ip" if draw < rate else "ok"

    return verdict


# --- probabilistic blocking -----------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("agents", [2, 3])
def test_probabilistic_blocker_is_partial_not_a_leak(seed: int, agents: int) -> None:
    """An ISP that drops 70 % of connections, lab-like (5 s rounds, 20 rounds), shows 2 of 3
    or 2 of 2 accessible now and then: no leak, no uncorroborated event, one `partial`
    divergence over the whole data with its blocked share."""
    isps = (*COUNTRY[:4], Isp("Echo", ECHO.asn, agents))
    report = run(probabilistic(seed), isps=isps)
    assert (report.leaks, report.uncorroborated) == ((), ())
    assert kinds(report) == [(ECHO.asn, ("x.example",), "partial")]
    divergence = report.divergences[0].to_json()
    assert (divergence["start"], divergence["end"]) == (at(0), None)
    assert 0.5 < divergence["blocked_share"] < 0.9
    assert "baseline_blocked_share" not in divergence


def test_probabilistic_blocker_over_two_days_of_ten_minute_buckets() -> None:
    """The issue's export: 10-minute buckets, 3 agents per ISP, two days; a 70 % blocker
    gave more than ten leaks on one site. Now: none, and one partial divergence."""
    report = run(probabilistic(11), buckets=288, width=600.0)
    assert (report.leaks, report.uncorroborated) == ((), ())
    assert kinds(report) == [(ECHO.asn, ("x.example",), "partial")]


@pytest.mark.parametrize("seed", range(6))
def test_probabilistic_blocker_that_stops_completely_is_one_lapse(seed: int) -> None:
    """The same 70 % blocker whose filter stops completely for five rounds: exactly one
    lapse, its window within two buckets, its baseline the ISP's own blocked share."""
    report = run(probabilistic(seed, stop=range(8, 13)))
    assert len(report.leaks) == 1, spans(report.leaks)
    lapse = report.leaks[0]
    assert lapse.asn == ECHO.asn and lapse.kind == "lapse"
    assert abs((lapse.start - T0) / ROUND - 8) <= 2
    assert lapse.end is not None and abs((lapse.end - T0) / ROUND - 13) <= 2
    assert 0.5 < lapse.to_json()["baseline_blocked_share"] < 0.95
    assert report.uncorroborated == ()


def test_clean_lapse_is_exact_and_says_its_baseline() -> None:
    """A full blocker that lets two agents of two through in rounds 4-8: the lapse's window
    is exact to the bucket, its baseline blocked share 1, no national lift."""

    def verdict(isp: Isp, domain: str, b: int, agent: int) -> str:
        return "ok" if isp is CHARLIE and 4 <= b <= 8 else "dns"

    report = run(verdict, buckets=12)
    assert spans(report.leaks) == [(CHARLIE.asn, ("x.example",), at(4), at(9))]
    event = report.leaks[0].to_json()
    assert event["kind"] == "lapse"
    assert event["baseline_blocked_share"] == 1.0
    assert event["then_lifted_nationally_at"] is None
    assert report.divergences == ()


def test_lapse_one_round_after_the_data_starts() -> None:
    """One round of history is enough for a full blocker whose two agents then see the site
    for three rounds (the lab's two-leaks scenario): exact window."""
    isps = tuple(Isp(n, 64610 + i, 2) for i, n in enumerate(("TCI", "Irancell", "MCI", "Shatel")))

    def verdict(isp: Isp, domain: str, b: int, agent: int) -> str:
        return "ok" if isp.asn == 64610 and 1 <= b <= 3 else "dns"

    report = run(verdict, isps=isps, buckets=10)
    assert spans(report.leaks) == [(64610, ("x.example",), at(1), at(4))]


# --- never filtered -------------------------------------------------------------------------


def test_never_filtering_isp_is_unfiltered_not_a_leak() -> None:
    """An ISP that never filters two sites the four others block: no leak "from the start of
    the data", one `unfiltered` divergence naming both sites (same kind, same window)."""

    def verdict(isp: Isp, domain: str, b: int, agent: int) -> str:
        return "ok" if isp is ECHO or domain == "open.example" else "blockpage"

    report = run(verdict, domains=("x.example", "y.example", "open.example"))
    assert (report.leaks, report.uncorroborated) == ((), ())
    assert kinds(report) == [(ECHO.asn, ("x.example", "y.example"), "unfiltered")]
    event = report.divergences[0].to_json()
    assert (event["start"], event["end"], event["blocked_share"]) == (at(0), None, 0.0)
    assert (event["isps_blocking"], event["isps_measured"]) == (4, 4)


def test_unfiltered_domains_with_different_windows_stay_apart() -> None:
    """Divergences share an event only when kind and window agree: a site the country stops
    blocking halfway is its own `unfiltered` divergence, with its end."""

    def verdict(isp: Isp, domain: str, b: int, agent: int) -> str:
        if isp is ECHO or (domain == "y.example" and b >= 10):
            return "ok"
        return "dns"

    report = run(verdict, domains=("x.example", "y.example"))
    assert spans(report.divergences) == [
        (ECHO.asn, ("x.example",), at(0), None),
        (ECHO.asn, ("y.example",), at(0), at(10)),
    ]
    assert {d.kind for d in report.divergences} == {"unfiltered"}


# --- rolling block --------------------------------------------------------------------------


def test_rolling_block_is_lagging_not_a_leak() -> None:
    """A new block reaches the ISPs one after another (rounds 4, 5, 6, 8, 11): no leak; the
    ISPs that followed after most others are `lagging` for the rounds they lagged."""
    starts = {ALPHA.asn: 4, BRAVO.asn: 5, CHARLIE.asn: 6, DELTA.asn: 8, ECHO.asn: 11}

    def verdict(isp: Isp, domain: str, b: int, agent: int) -> str:
        return "tls" if b >= starts[isp.asn] else "ok"

    report = run(verdict)
    assert (report.leaks, report.uncorroborated) == ((), ())
    # Delta: most of its 4 others block from round 6 (3 of 4); Echo: from round 6 too.
    assert spans(report.divergences) == [
        (DELTA.asn, ("x.example",), at(6), at(8)),
        (ECHO.asn, ("x.example",), at(6), at(11)),
    ]
    assert {d.kind for d in report.divergences} == {"lagging"}
    assert all(d.to_json()["blocked_share"] == 0.0 for d in report.divergences)


def test_isp_open_when_the_data_starts_then_blocking_is_lagging() -> None:
    """Without a history of its own an ISP cannot lapse: one that is open when the data
    starts, while the others already block, and blocks from round 5 is lagging, not a leak
    "from the start of the data"."""

    def verdict(isp: Isp, domain: str, b: int, agent: int) -> str:
        return "ok" if isp is ECHO and b < 5 else "dns"

    report = run(verdict)
    assert (report.leaks, report.uncorroborated) == ((), ())
    assert spans(report.divergences) == [(ECHO.asn, ("x.example",), at(0), at(5))]
    assert report.divergences[0].kind == "lagging"


def test_block_that_never_reaches_an_isp_is_unfiltered() -> None:
    """A block that begins inside the data and never reaches Echo: Echo never blocked the
    site while most others did, so it is `unfiltered` from when they began, still going on."""

    def verdict(isp: Isp, domain: str, b: int, agent: int) -> str:
        return "dns" if b >= 6 and isp is not ECHO else "ok"

    report = run(verdict)
    assert report.leaks == ()
    assert spans(report.divergences) == [(ECHO.asn, ("x.example",), at(6), None)]
    assert report.divergences[0].kind == "unfiltered"


# --- national lift soon after ---------------------------------------------------------------


def test_lapse_followed_by_a_national_lift_says_so() -> None:
    """Charlie opens a blocked site at hour 4; the rest of the country follows from hour 7:
    a lapse (the first of the national unblocking) whose event says when the country
    lifted it."""

    def verdict(isp: Isp, domain: str, b: int, agent: int) -> str:
        return "ok" if b >= 7 or (isp is CHARLIE and b >= 4) else "dns"

    report = run(verdict, buckets=16, width=HOUR)
    assert spans(report.leaks) == [(CHARLIE.asn, ("x.example",), at(4, HOUR), at(7, HOUR))]
    assert report.leaks[0].to_json()["then_lifted_nationally_at"] == at(7, HOUR)
    assert report.divergences == ()


def test_national_lift_more_than_a_day_later_is_not_linked() -> None:
    """The same, but the country lifts 30 hours after the lapse began: past the 24 h of
    ``national_lift_within_s``, so the event does not claim it; a shorter window is a
    parameter."""

    def verdict(isp: Isp, domain: str, b: int, agent: int) -> str:
        return "ok" if b >= 34 or (isp is CHARLIE and b >= 4) else "dns"

    report = run(verdict, buckets=40, width=HOUR)
    assert [e.then_lifted_nationally_at for e in report.leaks] == [None]
    wide = run(
        verdict, buckets=40, width=HOUR, params=AnalysisParams(national_lift_within_s=40 * HOUR)
    )
    assert [e.to_json()["then_lifted_nationally_at"] for e in wide.leaks] == [at(34, HOUR)]


def test_a_brief_country_wide_opening_is_not_a_national_lift() -> None:
    """One hour in which every ISP lets the site through, inside a lapse, is no national
    lift: the country blocks again the hour after."""

    def verdict(isp: Isp, domain: str, b: int, agent: int) -> str:
        return "ok" if b == 6 or (isp is CHARLIE and 4 <= b <= 9) else "dns"

    report = run(verdict, buckets=16, width=HOUR)
    assert spans(report.leaks) == [(CHARLIE.asn, ("x.example",), at(4, HOUR), at(10, HOUR))]
    assert report.leaks[0].then_lifted_nationally_at is None


# --- agents: one agent, a VPN volunteer, agents offline ---------------------------------------


def test_single_agent_isp_lapse_is_uncorroborated() -> None:
    """An ISP with one volunteer whose filter lifts for five rounds: uncorroborated, with
    its window; never a leak."""
    isps = (ALPHA, BRAVO, Isp("Rightel", 57218, 1))

    def verdict(isp: Isp, domain: str, b: int, agent: int) -> str:
        return "ok" if isp.asn == 57218 and 2 <= b <= 6 else "dns"

    report = run(verdict, isps=isps, buckets=10)
    assert report.leaks == ()
    assert spans(report.uncorroborated) == [(57218, ("x.example",), at(2), at(7))]


def test_single_agent_isp_that_never_filters_is_no_divergence() -> None:
    """One volunteer who always sees the site may be a VPN: a divergence needs at least two
    distinct agents, like a leak."""
    isps = (ALPHA, BRAVO, Isp("Solo", 64699, 1))

    def verdict(isp: Isp, domain: str, b: int, agent: int) -> str:
        return "ok" if isp.asn == 64699 else "dns"

    report = run(verdict, isps=isps)
    assert (report.leaks, report.uncorroborated, report.divergences) == ((), (), ())


def test_vpn_volunteer_is_neither_partial_nor_a_lapse() -> None:
    """One agent of Echo's three sees everything open (a VPN): Echo's blocked share is a
    stable two thirds, but it comes from that one agent, so there is no `partial`, and no
    leak or uncorroborated event either."""

    def verdict(isp: Isp, domain: str, b: int, agent: int) -> str:
        return "ok" if isp is ECHO and agent == 0 else "dns"

    report = run(verdict)
    assert (report.leaks, report.uncorroborated, report.divergences) == ((), (), ())


def test_vpn_volunteer_alone_while_the_others_are_offline() -> None:
    """The VPN volunteer's two companions go offline for hours: the volunteer alone is one
    agent's word (Wilson bound over agents), so nothing is reported."""

    def verdict(isp: Isp, domain: str, b: int, agent: int) -> str:
        if isp is ECHO and agent > 0 and 6 <= b <= 14:
            return "inconclusive"  # offline: no conclusive result
        return "ok" if isp is ECHO and agent == 0 else "dns"

    report = run(verdict, width=HOUR)
    assert (report.leaks, report.uncorroborated, report.divergences) == ((), (), ())


def test_lapse_across_hours_of_agents_offline_is_one_event() -> None:
    """A lapse that goes on while Echo's agents are offline for five hours stays one event;
    its window is where the data shows it, and the gap neither ends nor splits it."""
    rows = make_rows(
        COUNTRY,
        ("x.example",),
        20,
        lambda isp, d, b, a: "ok" if isp is ECHO and 4 <= b <= 14 else "dns",
        bucket_s=HOUR,
    )
    rows = [
        r
        for r in rows
        if not (r["asn"] == ECHO.asn and 7 <= (cast(float, r["measured_at"]) - T0) // HOUR <= 11)
    ]
    report = analyse(reference_buckets(rows, HOUR), HOUR)
    assert spans(report.leaks) == [(ECHO.asn, ("x.example",), at(4, HOUR), at(15, HOUR))]


def test_isp_offline_for_hours_then_blocking_again_is_nothing() -> None:
    """A full blocker whose agents are offline for hours and come back still blocking: no
    event of any kind, for it or for the others (whose consensus counts who measured)."""
    rows = make_rows(COUNTRY, ("x.example",), 20, lambda isp, d, b, a: "dns", bucket_s=HOUR)
    rows = [
        r
        for r in rows
        if not (r["asn"] == ECHO.asn and 3 <= (cast(float, r["measured_at"]) - T0) // HOUR <= 12)
    ]
    report = analyse(reference_buckets(rows, HOUR), HOUR)
    assert (report.leaks, report.uncorroborated, report.divergences) == ((), (), ())


# --- a site down everywhere -----------------------------------------------------------------


def test_site_down_everywhere_is_nothing() -> None:
    """A blocked site down everywhere for hours (site_down for every ISP) and an open one
    down too: no leak, no divergence."""

    def verdict(isp: Isp, domain: str, b: int, agent: int) -> str:
        if 5 <= b <= 10:
            return "site_down"
        return "dns" if domain == "x.example" else "ok"

    report = run(verdict, domains=("x.example", "open.example"))
    assert (report.leaks, report.uncorroborated, report.divergences) == ((), (), ())


def test_site_down_inside_a_lapse_neither_ends_nor_splits_it() -> None:
    """Echo's lapse goes on across hours where the site is down everywhere: one event."""

    def verdict(isp: Isp, domain: str, b: int, agent: int) -> str:
        if 8 <= b <= 10:
            return "site_down"
        return "ok" if isp is ECHO and 4 <= b <= 13 else "dns"

    report = run(verdict, width=HOUR)
    assert spans(report.leaks) == [(ECHO.asn, ("x.example",), at(4, HOUR), at(14, HOUR))]


# --- late data ------------------------------------------------------------------------------


def test_late_data_lands_in_its_own_bucket() -> None:
    """A batch that arrives late (its rows last in the input, and one bucket delivered
    twice, half then the rest) gives the same answer as the data in order."""

    def verdict(isp: Isp, domain: str, b: int, agent: int) -> str:
        return "ok" if isp is ECHO and 4 <= b <= 8 else "dns"

    rows = make_rows(COUNTRY, ("x.example",), 12, verdict, bucket_s=HOUR)
    expected = analyse(reference_buckets(rows, HOUR), HOUR).dumps(with_isps=True)
    late = [
        r for r in rows if r["asn"] == ECHO.asn and cast(str, r["measurement_id"]).endswith("-0")
    ]
    on_time = [r for r in rows if r not in late]
    # the store and compare fold repeated keys: buckets of the late batch come separately
    buckets = reference_buckets(on_time, HOUR) + reference_buckets(late, HOUR)
    assert analyse(buckets, HOUR).dumps(with_isps=True) == expected


# --- filters narrow the answer, not the evidence --------------------------------------------


def test_asn_and_domain_select_the_answer_not_the_evidence() -> None:
    """``asn`` and ``domain`` give exactly the events of that AS and domain that the whole
    answer holds, and only its ISP rows: the comparison still uses every ISP."""

    def verdict(isp: Isp, domain: str, b: int, agent: int) -> str:
        if isp is CHARLIE and domain == "y.example" and 4 <= b <= 8:
            return "ok"
        if isp is ECHO and domain == "x.example":
            return "ok"
        return "dns"

    rows = make_rows(COUNTRY, ("x.example", "y.example"), 12, verdict, bucket_s=HOUR)
    buckets = reference_buckets(rows, HOUR)
    whole = analyse(buckets, HOUR)
    assert [e.asn for e in whole.leaks] == [CHARLIE.asn]
    assert [e.asn for e in whole.divergences] == [ECHO.asn]
    only_charlie = analyse(buckets, HOUR, asn=CHARLIE.asn)
    assert only_charlie.leaks == whole.leaks
    assert only_charlie.divergences == ()
    assert [row.asn for row in only_charlie.isps] == [CHARLIE.asn]
    only_x = analyse(buckets, HOUR, domain="x.example")
    assert (only_x.leaks, only_x.divergences) == ((), whole.divergences)
    assert all(row.measurements == 12 * row_agents(row.asn) for row in only_x.isps)


def row_agents(asn: int) -> int:
    return next(isp.agents for isp in COUNTRY if isp.asn == asn)


# --- a busy network: a bucket of failed measurements ------------------------------------------


def test_one_round_of_failures_gives_a_never_filtering_isp_no_lapse() -> None:
    """Both agents of a never-filtering ISP fail in round 7 (timeouts count as blocked):
    that is no blocking habit to lapse from, so the open rounds after it are no leak; the
    ISP stays unfiltered."""
    isps = tuple(Isp(n, 64620 + i, 2) for i, n in enumerate(("Ros", "MTS", "Bee", "ER")))

    def verdict(isp: Isp, domain: str, b: int, agent: int) -> str:
        if isp.asn == 64623:
            return "tcp_ip" if b == 7 else "ok"
        return "tls"

    report = run(verdict, isps=isps, buckets=10)
    assert (report.leaks, report.uncorroborated) == ((), ())
    assert kinds(report) == [(64623, ("x.example",), "unfiltered")]


def test_one_round_of_failures_inside_a_lag_keeps_it_lagging() -> None:
    """A rolling block where the late ISP's two agents both fail once while it still lags:
    still one lagging span, to its real end."""
    isps = tuple(Isp(n, 64630 + i, 2) for i, n in enumerate(("TT", "TC", "VF", "SO")))
    starts = {64630: 3, 64631: 3, 64632: 3, 64633: 9}

    def verdict(isp: Isp, domain: str, b: int, agent: int) -> str:
        if isp.asn == 64633 and b == 5:
            return "tcp_ip"
        return "dns" if b >= starts[isp.asn] else "ok"

    report = run(verdict, isps=isps, buckets=12)
    assert report.leaks == ()
    assert spans(report.divergences) == [(64633, ("x.example",), at(3), at(9))]
    assert report.divergences[0].kind == "lagging"


def test_a_round_of_timeouts_everywhere_is_no_divergence() -> None:
    """An open site times out for most ISPs in one round (a busy network): the ISP whose
    agents got through that round is not `unfiltered`."""

    def verdict(isp: Isp, domain: str, b: int, agent: int) -> str:
        return "tcp_ip" if b == 4 and isp is not ECHO else "ok"

    report = run(verdict, buckets=10)
    assert (report.leaks, report.uncorroborated, report.divergences) == ((), (), ())
