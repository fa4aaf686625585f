"""A lab-like dataset for the dashboard: the Iran 2013 story, written through the store's
public interface (agents enrolled with codes, measurements inserted as validated ones).

Five ISPs with their real AS numbers block Facebook, Twitter and YouTube with forged DNS
answers and TLS resets and BBC Persian with the iframe blockpage; Shatel lets Facebook and
Twitter through for the last five hours (an open leak, two volunteers), Rightel has one
volunteer who sees Facebook (unconfirmed, and a blind spot). Buckets are hours counted
back from now, so that coverage and "open" mean what they say.
"""

from __future__ import annotations

import math
import time
import uuid

from collector.auth import hash_enroll_code, hash_secret, new_agent_id, new_agent_token
from collector.store.base import Store
from shared.schema import Blocking, Measurement
from tests.collector.analysis.scenarios import IRAN_ASNS, Isp, iranian

HOUR = 3600.0
HOURS = 24
LEAK_HOURS = 5
DOMAINS = ("www.facebook.com", "twitter.com", "www.youtube.com", "www.bbc.com", "en.wikipedia.org")
BLOCKPAGE_IP = "10.10.34.34"


VOLUNTEERS = {"TCI": 3, "Irancell": 2, "MCI": 2, "Shatel": 2, "Pars Online": 2, "Rightel": 1}
ISPS = tuple(iranian(name, agents) for name, agents in VOLUNTEERS.items())
SHATEL = IRAN_ASNS["Shatel"]
RIGHTEL = IRAN_ASNS["Rightel"]
MCI = IRAN_ASNS["MCI"]


def current_bucket(now: float | None = None) -> float:
    now = time.time() if now is None else now
    return math.floor(now / HOUR) * HOUR


def _verdict(isp: Isp, domain: str, hours_ago: int) -> Blocking:
    if domain == "en.wikipedia.org":
        return Blocking.OK
    if (
        isp.asn == SHATEL
        and domain in ("www.facebook.com", "twitter.com")
        and hours_ago <= LEAK_HOURS
    ):
        return Blocking.OK
    if isp.asn == RIGHTEL and domain == "www.facebook.com" and hours_ago <= 4:
        return Blocking.OK
    if domain == "www.bbc.com":
        return Blocking.BLOCKPAGE
    return Blocking.DNS if isp.asn % 2 == 0 else Blocking.TLS


def measurement(isp: Isp, domain: str, blocking: Blocking, at: float, version: str) -> Measurement:
    """A measurement with the facts an agent reports for this verdict."""
    url = f"https://{domain}/" if domain != "www.bbc.com" else "http://www.bbc.com/persian"
    ok = blocking is Blocking.OK
    answers = [BLOCKPAGE_IP] if blocking is Blocking.DNS else ["93.184.216.34"]
    tls_failure = "connection_reset" if blocking is Blocking.TLS else None
    return Measurement(
        id=str(uuid.uuid4()),
        measured_at=at,
        url=url,
        domain=domain,
        blocking=blocking,
        accessible=ok if blocking is not Blocking.SITE_DOWN else None,
        network={"asn": isp.asn, "cc": isp.cc, "network_name": isp.name},
        failure=None if ok else ("connection_reset" if tls_failure else None),
        blockpage="ir-iframe-10.10.34.34"
        if blocking in (Blocking.BLOCKPAGE, Blocking.DNS)
        else None,
        dns={"resolver": "system", "query": domain, "answers": answers},
        tls=None if url.startswith("http:") else {"sni": domain, "failure": tls_failure},
        http={
            "url": url,
            "status": 200 if ok or blocking is Blocking.BLOCKPAGE else None,
            "title": "Welcome" if ok else None,
            "failure": None if ok or blocking is Blocking.BLOCKPAGE else "connection_reset",
        },
        control={"http": {"url": url, "status": 200, "failure": None}},
        agent_version=version,
    )


async def enroll_agents(store: Store) -> dict[int, list[str]]:
    """Agents enrolled the way volunteers are (a one-time code each): ASN -> agent ids."""
    out: dict[int, list[str]] = {}
    for isp in ISPS:
        for _ in range(isp.agents):
            code = uuid.uuid4().hex
            await store.add_enroll_code(hash_enroll_code(code), "IR", 1, None)
            agent_id = new_agent_id()
            made = await store.redeem_enroll_code(
                hash_enroll_code(code), time.time(), agent_id, hash_secret(new_agent_token())
            )
            assert made is not None
            out.setdefault(isp.asn, []).append(agent_id)
    return out


async def fill(store: Store, now: float | None = None) -> dict[int, list[str]]:
    """The story's last 24 hours and the current one so far (MCI has not measured YouTube
    in it yet: ``mci_starts_leaking`` does). The current hour is there so that coverage
    still counts everyone when a test runs across the turn of an hour."""
    agents = await enroll_agents(store)
    now = time.time() if now is None else now
    now_bucket = current_bucket(now)
    for isp in ISPS:
        for i, agent_id in enumerate(agents[isp.asn]):
            batch = []
            for hours_ago in range(HOURS, -1, -1):
                start = now_bucket - hours_ago * HOUR
                for d, domain in enumerate(DOMAINS):
                    if hours_ago == 0 and isp.asn == MCI and domain == "www.youtube.com":
                        continue
                    offset: float = 600 + 30 * i + d
                    if hours_ago == 0:  # in the past, inside the current hour
                        offset = (now - start) * 0.5 * (1 + (30 * i + d) / 200)
                    verdict = _verdict(isp, domain, hours_ago)
                    batch.append(measurement(isp, domain, verdict, start + offset, "0.1.0"))
            outcome = await store.insert_measurements(
                agent_id, uuid.uuid4().hex, batch, time.time()
            )
            assert outcome.accepted == len(batch)
    return agents


async def mci_starts_leaking(store: Store, agents: dict[int, list[str]]) -> None:
    """In the current bucket MCI lets YouTube through (both volunteers) while the others
    still block it; Shatel's leak goes on."""
    now = time.time()
    at = max(current_bucket(now) + 0.5, now - 5)
    for isp in ISPS:
        for agent_id in agents[isp.asn]:
            # The others measure YouTube again too: the consensus is there even if the hour
            # turned since ``fill``.
            youtube = Blocking.OK if isp.asn == MCI else _verdict(isp, "www.youtube.com", 1)
            batch = [measurement(isp, "www.youtube.com", youtube, at, "0.1.1")]
            if isp.asn == SHATEL:
                for domain in ("www.facebook.com", "twitter.com"):
                    batch.append(measurement(isp, domain, Blocking.OK, at, "0.1.1"))
            await store.insert_measurements(agent_id, uuid.uuid4().hex, batch, time.time())
