"""The traps that made the monitor alert partial blockers' noise as lapses: the analysis run
on every prefix of the data, as the monitor's passes see it (the bucket still filling
included), on tables drawn from bench/monitor/false_alerts.py's simulated lab runs.

A table row is one bucket of the partial blocker Echo, one letter per agent in the order
their results arrive: ``o`` accessible, ``x`` blocked. Four other ISPs block every time."""

from __future__ import annotations

import pytest

from collector.analysis import analyse
from tests.collector.analysis.scenarios import T0, Isp, make_rows, reference_buckets

ROUND = 4.0
OTHERS = (Isp("Alpha", 64601, 2), Isp("Bravo", 64602, 2), Isp("Charlie", 64603, 2))
ECHO_ASN = 64605


def passes(table: str) -> list[tuple[int, int, list[tuple[int, int | None]]]]:
    """Per monitor pass (after each arrival): (bucket, agents of it arrived, Echo's lapses
    as (first bucket, end bucket or None))."""
    buckets = table.split()
    echo = Isp("Echo", ECHO_ASN, len(buckets[0]))

    def verdict(isp: Isp, domain: str, b: int, agent: int) -> str:
        if isp.asn == ECHO_ASN and buckets[b][agent] == "o":
            return "ok"
        return "tcp_ip"

    rows = sorted(make_rows((*OTHERS, echo), ("x.example",), len(buckets), verdict, ROUND), key=_at)
    out = []
    for i in range(1, len(rows) + 1):
        if rows[i - 1]["asn"] != ECHO_ASN:
            continue  # a pass after each of Echo's arrivals is enough
        bucket = _bucket(rows[i - 1])
        arrived = len([r for r in rows[:i] if r["asn"] == ECHO_ASN and _bucket(r) == bucket])
        report = analyse(reference_buckets(rows[:i], ROUND), ROUND)
        lapses = [
            (
                round((e.start - T0) / ROUND),
                None if e.end is None else round((e.end - T0) / ROUND),
            )
            for e in report.leaks
            if e.asn == ECHO_ASN
        ]
        out.append((bucket, arrived, lapses))
    return out


def _at(row: dict[str, object]) -> float:
    return float(str(row["measured_at"]))


def _bucket(row: dict[str, object]) -> int:
    return int((_at(row) - T0) // ROUND)


# Each a 70 % blocker's chance run that an earlier detector alerted as a lapse.
NOISE = {
    # four agents; two blocked buckets, then a mixed rise: against a short clean history
    # (no agent through yet) the binomial test under a share near 0 called it a lapse
    "mixed rise after a short clean history": (
        "xxxx xxxx oxoo xxox xoxo ooox ooxx xxox ooxo xxxo oxxx oooo oxxx xxox xoxx xxxx"
    ),
    # four agents; one bucket of all four through after a clean start
    "one open bucket after a clean start": "xxxx oooo xxxx xxoo xoxo xxxo xxox ooxx xxxx",
    # four agents; mixed buckets against a baseline that happened to show 17 % through
    "mixed rise against a partial baseline": (
        "xxxx xxxo xxxx xxxx xxxx oxox xxox ooxo oxxo oooo xxox xoox xxxx xxxx xxox xxxo"
    ),
    # four agents; every agent through in two buckets running (0.3^8 = 7e-5 a pair)
    "two open buckets of four agents": (
        "oxxo xxxx xxxx oxox xxxx xxxo xxox xxxo xoox xxoo xoxo xoox xoxo xoxx xoxo xxxx"
        " xxxo oxxx oxxo oooo oooo ooxo oxxx"
    ),
    # seven agents; 6 of 7 then 5 of 7 through
    "mixed rise of seven agents": (
        "oxxxoxx xooxxox xxoxoxx xxxxxxo oxxxxxx xoxxxxo xxxoxxx oooooxo oxoooox xxoxoxo"
        " xxxoxxx xxxxxxx"
    ),
    # seven agents; all through in one bucket, then the first two of the next bucket
    # (still filling): two buckets "of every agent through" for a moment
    "an open bucket, then a filling one": (
        "xxxxxoo xoxxxxx xoxxoxo xxxxxxx ooooooo ooxxxxo oxxxoxx xxxooxx oxxxxox xoxxoox"
    ),
}


@pytest.mark.parametrize("table", NOISE.values(), ids=list(NOISE))
def test_partial_blockers_chance_run_alerts_nothing(table: str) -> None:
    """No pass over the growing data shows a lapse: the filter never stopped (mixed buckets,
    a single open bucket, or open buckets of fewer agents than a stop needs)."""
    shown = [(b, n, lapses) for b, n, lapses in passes(table) if lapses]
    assert shown == []


# (table, first and last bucket of the stop)
STOPS = {
    # partial-then-lapse: Kcell (7 agents, 70 %) stops in buckets 11-16
    "seven agents": (
        "xxxxxoo xoxxxxx xoxxoxo xxxxxxx ooooooo ooxxxxo oxxxoxx xxxooxx oxxxxox xoxxoox"
        " xxoooxx ooooooo ooooooo ooooooo ooooooo ooooooo ooooooo xoxxxox xxxooxo xxxxxxx",
        11,
        16,
    ),
    # a full blocker of two agents whose filter stops in buckets 4-7
    "a full blocker of two agents": ("xx xx xx xx oo oo oo oo xx xx xx", 4, 7),
}


@pytest.mark.parametrize(("table", "first", "last"), STOPS.values(), ids=list(STOPS))
def test_filter_that_stops_alerts_in_its_second_bucket(table: str, first: int, last: int) -> None:
    """A filter that stops completely is shown once its second bucket has most of its agents
    in (within two rounds of its start), never before it starts, and the analysis of the
    whole data dates it within one bucket."""
    history = passes(table)
    shown = [(b, n) for b, n, lapses in history if lapses]
    assert shown and shown[0][0] in (first, first + 1)
    agents = len(table.split()[0])
    assert shown[0] <= (first + 1, agents)
    assert all(b >= first for b, _ in shown)
    final = history[-1][2]
    assert len(final) == 1
    start, end = final[0]
    assert abs(start - first) <= 1 and end is not None and abs(end - (last + 1)) <= 1
