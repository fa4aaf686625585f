"""The monitor's bucket cache: patches replace a range of one ISP's series, and it knows
which domains show a difference anywhere (the others hold no finding)."""

from __future__ import annotations

import dataclasses

from collector.analysis.model import BucketCount
from collector.monitor.series import SeriesCache


def bucket(
    asn: int, start: float, verdict: str, n: int = 2, domain: str = "d.example"
) -> BucketCount:
    return BucketCount(
        cc="IR",
        asn=asn,
        network_name=f"AS{asn}",
        domain=domain,
        bucket_start=start,
        counts={verdict: n},
        agents=n,
        accessible_agent_ids=tuple(f"a{i}" for i in range(n)) if verdict == "ok" else (),
        example_ids=(),
    )


def test_a_domain_blocked_alike_everywhere_shows_no_difference_until_one_isp_differs() -> None:
    """Every ISP blocking in every bucket: no difference. One ISP's bucket patched to
    accessible: a difference. Patched back: none again."""
    cache = SeriesCache()
    cache.load([bucket(asn, t * 60.0, "tls") for asn in (1, 2, 3) for t in range(5)])
    assert not cache.disagrees("IR", "d.example")
    cache.patch([("IR", 2, "d.example", 180.0, 240.0)], [bucket(2, 180.0, "ok")])
    assert cache.disagrees("IR", "d.example")
    cache.patch([("IR", 2, "d.example", 180.0, 240.0)], [bucket(2, 180.0, "dns")])
    assert not cache.disagrees("IR", "d.example")
    assert len(cache) == 15


def test_an_isp_with_both_verdicts_in_one_bucket_is_a_difference() -> None:
    """Accessible and blocked results of one ISP in one bucket count as a difference, and
    it leaves with the window."""
    cache = SeriesCache()
    mixed = dataclasses.replace(bucket(1, 0.0, "ok"), counts={"ok": 1, "tls": 1})
    cache.load([mixed, bucket(1, 60.0, "tls"), bucket(2, 60.0, "tls")])
    assert cache.disagrees("IR", "d.example")
    cache.evict(60.0)
    assert not cache.disagrees("IR", "d.example")
