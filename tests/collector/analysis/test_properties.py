"""Properties of the whole analysis on random noisy data (Hypothesis): the order of the
input, how the data is split into files, and the --asn filter never change the events."""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from collector.analysis import analyse
from collector.compare.count import bucket_counts
from collector.compare.read import export_files, read_exports
from collector.exports import write_export
from collector.filters import Filters
from collector.store.queries import iso_measured_at
from tests.collector.analysis.scenarios import T0, reference_buckets

WIDTH = 5.0
ASNS = (64601, 64602, 64603, 64604)
VERDICTS = ("ok", "dns", "tls", "tcp_ip", "site_down", "inconclusive")


@st.composite
def noisy_rows(draw: st.DrawFn) -> list[dict[str, object]]:
    """Lab-like rounds (one bucket each) for four ISPs of 1-3 agents and two domains: each
    ISP blocks each domain with its own rate, with stretches where its filter stops, and
    some rounds missing (agents offline) or inconclusive."""
    rounds = draw(st.integers(4, 16))
    rows: list[dict[str, object]] = []
    for asn in ASNS:
        agents = draw(st.integers(1, 3))
        for domain in ("x.example", "y.example"):
            rate = draw(st.sampled_from([0.0, 0.7, 1.0, 1.0]))
            stop = draw(st.tuples(st.integers(0, rounds), st.integers(0, 5)))
            seed = draw(st.integers(0, 2**16))
            rnd = random.Random(seed)
            for b in range(rounds):
                for agent in range(agents):
                    noise = rnd.random()
                    if noise < 0.05:
                        continue  # offline
                    if noise < 0.1:
                        blocking = rnd.choice(("site_down", "inconclusive"))
                    elif stop[0] <= b < stop[0] + stop[1] or rnd.random() >= rate:
                        blocking = "ok"
                    else:
                        blocking = rnd.choice(("dns", "tls", "tcp_ip"))
                    rows.append(
                        {
                            "measurement_id": f"{asn}-{domain}-{b:03d}-{agent}",
                            "measured_at": T0 + b * WIDTH + 0.25 + agent * 0.5,
                            "cc": "IR",
                            "asn": asn,
                            "network_name": f"ISP {asn}",
                            "agent": f"a{asn}-{agent}",
                            "url": f"https://{domain}/",
                            "domain": domain,
                            "blocking": blocking,
                            "accessible": None if blocking in VERDICTS[4:] else blocking == "ok",
                            "failure": None,
                            "blockpage": None,
                            "dns_answers": None,
                            "http_status": None,
                            "http_body_length": None,
                            "control_ok": True,
                        }
                    )
    return rows


def answer(rows: list[dict[str, object]], **select: object) -> dict[str, Any]:
    return analyse(reference_buckets(rows, WIDTH), WIDTH, **select).to_json(with_isps=True)  # type: ignore[arg-type]


@settings(max_examples=80, deadline=None)
@given(noisy_rows(), st.randoms(use_true_random=False))
def test_input_order_never_changes_the_answer(rows, rnd: random.Random) -> None:  # type: ignore[no-untyped-def]
    """Shuffled measurements, and shuffled buckets, give the same answer."""
    expected = answer(rows)
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    buckets = reference_buckets(shuffled, WIDTH)
    rnd.shuffle(buckets)
    assert analyse(buckets, WIDTH).to_json(with_isps=True) == expected


@settings(max_examples=80, deadline=None)
@given(noisy_rows(), st.sampled_from(ASNS))
def test_asn_filter_never_changes_the_events_of_the_isps_that_remain(rows, asn: int) -> None:  # type: ignore[no-untyped-def]
    """Selecting one AS gives exactly its events (lapses, uncorroborated, divergences) and
    its ISP row from the whole answer: the other ISPs stay the evidence."""
    whole = answer(rows)
    narrowed = answer(rows, asn=asn)
    for part in ("leaks", "uncorroborated", "divergences", "isps"):
        assert narrowed[part] == [e for e in whole[part] if e["asn"] == asn]


@settings(max_examples=25, deadline=None)
@given(noisy_rows(), st.integers(2, 4), st.randoms(use_true_random=False))
def test_splitting_the_data_into_several_files_never_changes_the_answer(  # type: ignore[no-untyped-def]
    rows, parts: int, rnd: random.Random
) -> None:
    """The measurements written as several export files (any split, some rows in two of
    them, mixed formats) and read by compare give the answer of the rows in one piece."""
    expected = json.dumps(answer(rows), sort_keys=True)
    shares: list[list[dict[str, object]]] = [[] for _ in range(parts)]
    for row in rows:
        shares[rnd.randrange(parts)].append(row)
        if rnd.random() < 0.1:
            shares[rnd.randrange(parts)].append(row)  # also in another file: counted once
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, share in enumerate(shares):
            fmt = ("csv", "jsonl", "parquet")[i % 3]
            path = Path(tmp) / f"part{i}.{fmt}"
            exported = [{**r, "measured_at": iso_measured_at(r["measured_at"])} for r in share]  # type: ignore[arg-type]
            write_export([exported], fmt, path)
            files.append([path])
        table = read_exports([export_files(f) for f in files])
    buckets = bucket_counts(table, Filters(bucket_s=WIDTH))
    got = analyse(buckets, WIDTH).to_json(with_isps=True)
    assert json.dumps(got, sort_keys=True) == expected
