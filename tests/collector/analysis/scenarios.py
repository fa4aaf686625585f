"""Hand-made measurement sets for the analysis tests: rows as the exports carry them, and a
plain reference aggregation of those rows into ``BucketCount``."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from collector.analysis.model import BucketCount

T0 = 1379289600.0  # 2013-09-16T00:00:00Z, the Monday of the story
HOUR = 3600.0
ACCESSIBLE = {"ok": 1, "site_down": None, "inconclusive": None}


@dataclass(frozen=True)
class Isp:
    """An ISP of a hand-made dataset and how many volunteers measure from it."""

    name: str
    asn: int
    agents: int
    cc: str = "IR"


# (isp, domain, bucket index, agent index) -> blocking value
Verdict = Callable[[Isp, str, int, int], str]


def make_rows(
    isps: Sequence[Isp],
    domains: Sequence[str],
    buckets: int,
    verdict: Verdict,
    bucket_s: float = HOUR,
    t0: float = T0,
) -> list[dict[str, object]]:
    """One measurement per agent, domain and bucket, a little after the bucket starts."""
    rows: list[dict[str, object]] = []
    for isp in isps:
        for agent in range(isp.agents):
            for domain in domains:
                for b in range(buckets):
                    blocking = verdict(isp, domain, b, agent)
                    rows.append(
                        {
                            "measurement_id": f"{isp.asn}-{domain}-{b:03d}-{agent}",
                            "measured_at": t0 + b * bucket_s + 0.5 + agent * 0.125,
                            "cc": isp.cc,
                            "asn": isp.asn,
                            "network_name": isp.name,
                            "agent": f"agent{isp.asn}x{agent}",
                            "url": f"https://{domain}/",
                            "domain": domain,
                            "blocking": blocking,
                            "accessible": ACCESSIBLE.get(blocking, 0),
                            "failure": None if blocking == "ok" else "connection_reset",
                            "blockpage": None,
                            "dns_answers": "192.0.2.1",
                            "http_status": 200 if blocking == "ok" else None,
                            "http_body_length": 1000 if blocking == "ok" else None,
                            "control_ok": 0 if blocking == "site_down" else 1,
                        }
                    )
    return rows


def reference_buckets(
    rows: Sequence[dict[str, object]],
    bucket_s: float,
    agent_name: Callable[[str], str] = str,
) -> list[BucketCount]:
    """The aggregation the store and compare must both match, written the obvious way
    (``agent_name``: how the source names agents, e.g. the store's pseudonyms)."""
    groups: dict[tuple[str, int, str, float], list[dict[str, object]]] = defaultdict(list)
    for row in rows:
        start = math.floor(float(row["measured_at"]) / bucket_s) * bucket_s  # type: ignore[arg-type]
        groups[(str(row["cc"]), int(row["asn"]), str(row["domain"]), start)].append(row)  # type: ignore[call-overload]
    out: list[BucketCount] = []
    for (cc, asn, domain, start), members in sorted(groups.items()):
        counts: dict[str, int] = defaultdict(int)
        for row in members:
            counts[str(row["blocking"])] += 1
        ok_ids = sorted(str(r["measurement_id"]) for r in members if r["blocking"] == "ok")
        out.append(
            BucketCount(
                cc=cc,
                asn=asn,
                network_name=max(str(r["network_name"] or "") for r in members),
                domain=domain,
                bucket_start=start,
                counts=dict(counts),
                agents=len({r["agent"] for r in members}),
                accessible_agent_ids=tuple(
                    sorted({agent_name(str(r["agent"])) for r in members if r["blocking"] == "ok"})
                ),
                example_ids=tuple(sorted({ok_ids[0], ok_ids[-1]})) if ok_ids else (),
            )
        )
    return out


# The Iranian ISPs of the stories and their real AS numbers.
IRAN_ASNS = {
    "TCI": 58224,
    "Shatel": 31549,
    "Irancell": 44244,
    "MCI": 197207,
    "Pars Online": 16322,
    "Rightel": 57218,
}


def iranian(name: str, agents: int) -> Isp:
    """The Iranian ISP ``name`` (a key of ``IRAN_ASNS``) with ``agents`` volunteers."""
    return Isp(name, IRAN_ASNS[name], agents)


FIVE_ISPS = tuple(iranian(name, 3) for name in ("TCI", "Shatel", "Irancell", "MCI", "Pars Online"))
STORY_DOMAINS = ("facebook.com", "twitter.com", "bbc.com", "wikipedia.org")


def story_verdict(isp: Isp, domain: str, b: int, agent: int) -> str:
    """Iran 2013: everyone blocks facebook, twitter and bbc and lets wikipedia through,
    except that Shatel lets facebook and twitter through in buckets 4 to 7."""
    if domain == "wikipedia.org":
        return "ok"
    if isp.asn == IRAN_ASNS["Shatel"] and domain in ("facebook.com", "twitter.com") and 4 <= b <= 7:
        return "ok"
    return "dns" if domain != "bbc.com" else "blockpage"


ECHO = Isp("Echo", 64605, 3)
NOISY_ISPS = (*FIVE_ISPS, ECHO)


def noisy_story(isp: Isp, domain: str, b: int, agent: int) -> str:
    """The 2013 story with every kind of finding, for equivalence tests over 12 hours:
    Shatel's lapse (facebook, twitter, hours 4-7); Echo never filters bbc.com and blocks
    twitter.com 70 % of the time; Irancell lets bbc.com through from hour 8 and the whole
    country lifts it from hour 10 (a lapse then lifted nationally); wikipedia.org is newly
    blocked from hour 6, by MCI only from hour 8 and by Pars Online from hour 10 (lagging)."""
    if domain == "wikipedia.org":
        start = {197207: 8, 16322: 10}.get(isp.asn, 6)
        return "tls" if b >= start else "ok"
    if domain == "bbc.com" and (b >= 10 or isp is ECHO or (isp.asn == 44244 and b >= 8)):
        return "ok"
    if isp is ECHO and domain == "twitter.com":
        return "ok" if (3 * b + agent) % 10 < 3 else "dns"
    return story_verdict(isp, domain, b, agent)


def blocked_everywhere_story(isp: Isp, domain: str, b: int, agent: int) -> str:
    """Domains no finding can come from: ``blocked.example`` blocked by every ISP (one
    agent's measurement inconclusive now and then), anything else open everywhere (down
    for everyone in hour 5)."""
    if domain == "blocked.example":
        return "inconclusive" if (b + agent) % 7 == 0 else "dns"
    return "site_down" if b == 5 else "ok"
