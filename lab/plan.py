"""The lab's address plan: which namespace holds which address. Pure.

Every address lives only inside the lab's own network namespaces, which have no route to
the host or the internet; public-looking addresses are used where the real internet has
public ones, so that the probes and the collector see the same kinds of addresses they
would see there (a bogon is then a real sign of injection).

- The *internet* namespace holds the sites (one /24 per site, named after the site's real
  operator when the lab knows it), the public resolver, the collector and the blockpage
  server at the scenario's ``blockpage_ip``.
- Each ISP has a router namespace with a public /24 (``5.52.k.0/24``: the router is
  ``.1``, the internet's end of the link ``.254``); agents behind it get a /30 each from
  ``100.64.k.0/24`` (carrier-grade NAT space) and are masqueraded behind ``.1``.
- The IP-to-ASN table the collector reads is made from this plan, so the collector
  attributes each agent to its ISP's AS exactly as it would with a real table.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from lab.scenario import Scenario

INTERNET_NS = "internet"
PUBLIC_RESOLVER = "45.9.0.53"
COLLECTOR_ADDRESS = "45.9.1.80"
COLLECTOR_PORT = 8470
ISP_RESOLVER_PORT = 53
PROXY_PORT = 3128

# Operators of well-known sites: (AS number, name). Only labels for the lab's netdb.
_KNOWN_OPERATORS: dict[str, tuple[int, str]] = {
    "facebook.com": (32934, "FACEBOOK"),
    "instagram.com": (32934, "FACEBOOK"),
    "whatsapp.com": (32934, "FACEBOOK"),
    "twitter.com": (13414, "TWITTER"),
    "x.com": (13414, "TWITTER"),
    "youtube.com": (15169, "GOOGLE"),
    "google.com": (15169, "GOOGLE"),
    "bbc.com": (2818, "BBC"),
    "bbc.co.uk": (2818, "BBC"),
    "wikipedia.org": (14907, "WIKIMEDIA"),
    "telegram.org": (62041, "TELEGRAM"),
}


@dataclass(frozen=True, slots=True)
class SitePlan:
    url: str
    host: str
    address: str
    asn: int
    operator: str


@dataclass(frozen=True, slots=True)
class AgentPlan:
    name: str  # "TCI/1", "TCI/vpn1"
    isp: str
    vpn: bool
    netns: str
    address: str  # inside the ISP's access network
    router_side: str  # the router's end of the agent's link
    router_ifname: str  # the link's name in the router namespace

    @property
    def resolver(self) -> str:
        """The resolver the agent is configured with: its ISP's, or the public one on a VPN."""
        return PUBLIC_RESOLVER if self.vpn else self.router_side


@dataclass(frozen=True, slots=True)
class IspPlan:
    name: str
    asn: int
    index: int
    netns: str  # the router's namespace
    public_net: str  # the ISP's public /24
    public_address: str  # the router's address, which agents are masqueraded behind
    internet_side: str  # the internet's end of the router's link
    internet_ifname: str  # the link's name in the internet namespace
    agents: tuple[AgentPlan, ...]


@dataclass(frozen=True, slots=True)
class LabPlan:
    country: str
    blockpage_ip: str
    sites: tuple[SitePlan, ...]
    isps: tuple[IspPlan, ...]

    @property
    def agents(self) -> tuple[AgentPlan, ...]:
        return tuple(a for isp in self.isps for a in isp.agents)

    def site(self, host: str) -> SitePlan:
        for s in self.sites:
            if s.host == host:
                return s
        raise KeyError(host)

    def isp(self, name: str) -> IspPlan:
        for i in self.isps:
            if i.name == name:
                return i
        raise KeyError(name)

    def netdb_rows(self) -> list[tuple[str, str, int, str, str]]:
        """Rows of the collector's IP-to-ASN table: range start, end, AS, country, name."""
        rows: list[tuple[str, str, int, str, str]] = []
        for isp in self.isps:
            net = ipaddress.IPv4Network(isp.public_net)
            rows.append((str(net[0]), str(net[-1]), isp.asn, self.country, isp.name))
        for site in self.sites:
            net = ipaddress.IPv4Network(site.address + "/24", strict=False)
            rows.append((str(net[0]), str(net[-1]), site.asn, "US", site.operator))
        rows.append(("45.9.0.0", "45.9.1.255", 64511, "NL", "LAB-INFRASTRUCTURE"))
        rows.sort(key=lambda r: int(ipaddress.IPv4Address(r[0])))
        return rows

    def netdb_tsv(self) -> str:
        return "".join(
            f"{a}\t{b}\t{asn}\t{cc}\t{name}\n" for a, b, asn, cc, name in self.netdb_rows()
        )


def _operator(host: str, index: int) -> tuple[int, str]:
    for domain, operator in _KNOWN_OPERATORS.items():
        if host == domain or host.endswith("." + domain):
            return operator
    return 64496 + index % 16, f"LAB-HOSTING-{index + 1}"


def make_plan(scenario: Scenario) -> LabPlan:
    """The address plan for ``scenario``; the same scenario always gets the same plan (of
    at most ``MAX_SITES`` sites and ``MAX_ISPS`` ISPs: the loader has checked)."""
    sites = []
    for i, site in enumerate(scenario.sites):
        asn, operator = _operator(site.host, i)
        sites.append(
            SitePlan(site.url, site.host, f"45.{10 + i // 200}.{i % 200}.10", asn, operator)
        )
    isps = []
    for k, isp in enumerate(scenario.isps):
        agents = []
        names = [(f"{isp.name}/{j + 1}", False) for j in range(isp.agents)]
        names += [(f"{isp.name}/vpn{j + 1}", True) for j in range(isp.vpn_agents)]
        for j, (name, vpn) in enumerate(names):
            base = 4 * j
            agents.append(
                AgentPlan(
                    name=name,
                    isp=isp.name,
                    vpn=vpn,
                    netns=f"isp{k}-a{j}",
                    address=f"100.64.{k}.{base + 2}",
                    router_side=f"100.64.{k}.{base + 1}",
                    router_ifname=f"lan{j}",
                )
            )
        isps.append(
            IspPlan(
                name=isp.name,
                asn=isp.asn,
                index=k,
                netns=f"isp{k}",
                public_net=f"5.52.{k}.0/24",
                public_address=f"5.52.{k}.1",
                internet_side=f"5.52.{k}.254",
                internet_ifname=f"isp{k}",
                agents=tuple(agents),
            )
        )
    return LabPlan(scenario.country, scenario.blockpage_ip, tuple(sites), tuple(isps))
