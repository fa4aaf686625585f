"""Lab scenarios: the YAML contract of design.md section 7, loaded strictly.

A scenario says what to build (sites, ISPs, their censors, agents) and, through its
censors, glitches and ``down`` rounds, implies the ground truth the lab scores against.
``load_scenario`` goes through ``shared.config.load_config`` (unknown keys and wrong types
name the key and the file) and then checks what spans several keys or needs the exact key
in its message: round numbers inside ``1..rounds``, unique ISP names and AS numbers, unique
site hosts, and ``blocks_from_round`` domains that the ISP's censor lists.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from shared.config import config_from_mapping, load_config, require
from shared.errors import ConfigError

Method = Literal["dns_inject", "sni_reset", "http_blockpage", "ip_block"]
METHODS: tuple[Method, ...] = ("dns_inject", "sni_reset", "http_blockpage", "ip_block")

# What the lab's address plan (lab/plan.py) has room for.
MAX_SITES = 200
MAX_ISPS = 100
# Address ranges of the lab's own plan (lab/plan.py): the scenario's blockpage must be elsewhere.
LAB_RANGES = ("45.0.0.0/8", "5.52.0.0/16", "100.64.0.0/10")

_DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")


def _check_domain(key: str, domain: str) -> None:
    require(
        bool(_DOMAIN_RE.match(domain)),
        key,
        f"{domain!r} is not a lower-case domain name like facebook.com",
    )


def domain_matches(host: str, domain: str) -> bool:
    """True when ``host`` is ``domain`` or one of its subdomains."""
    return host == domain or host.endswith("." + domain)


@dataclass(frozen=True, slots=True)
class Site:
    """A target site hosted in the lab's internet; ``down`` rounds make it fail everywhere."""

    url: str
    down: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        require(
            parts.scheme in ("http", "https"),
            "url",
            f"{self.url!r}: only http:// and https:// sites can be hosted",
        )
        require(
            bool(parts.hostname) and parts.port is None and parts.username is None,
            "url",
            f"{self.url!r}: expected a host name without port or user",
        )
        _check_domain("url", parts.hostname or "")

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def https(self) -> bool:
        return self.url.startswith("https://")


@dataclass(frozen=True, slots=True)
class Rates:
    """Per method, the probability that the censor blocks one connection (``ip_block``),
    query (``dns_inject``), handshake (``sni_reset``) or request (``http_blockpage``) of a
    listed domain; drawn independently each time, 1 (always) by default; each inside (0, 1]."""

    dns_inject: float = 1.0
    sni_reset: float = 1.0
    http_blockpage: float = 1.0
    ip_block: float = 1.0

    def __post_init__(self) -> None:
        for method in METHODS:
            rate = self.of(method)
            require(
                math.isfinite(rate) and 0 < rate <= 1,
                method,
                f"{rate:g} is not a probability in (0, 1] (1 blocks every time)",
            )

    def of(self, method: Method) -> float:
        result: float = getattr(self, method)
        return result


@dataclass(frozen=True, slots=True)
class Censor:
    """What an ISP's censor blocks, by method; each domain matches its subdomains too."""

    dns_inject: tuple[str, ...] = ()
    sni_reset: tuple[str, ...] = ()
    http_blockpage: tuple[str, ...] = ()
    ip_block: tuple[str, ...] = ()
    rates: Rates = Rates()

    def __post_init__(self) -> None:
        for method in METHODS:
            for domain in getattr(self, method):
                _check_domain(method, domain)

    def domains(self, method: Method) -> tuple[str, ...]:
        result: tuple[str, ...] = getattr(self, method)
        return result

    def lists(self, domain: str) -> bool:
        """True when some method lists ``domain``, a parent of it or one of its subdomains."""
        return any(
            domain_matches(domain, d) or domain_matches(d, domain)
            for method in METHODS
            for d in self.domains(method)
        )


@dataclass(frozen=True, slots=True)
class Glitch:
    """The filter lifted for ``lift`` domains from ``from_round`` to ``to_round`` inclusive;
    with ``methods``, only those methods are lifted."""

    from_round: int
    to_round: int
    lift: tuple[str, ...]
    methods: tuple[Method, ...] | None = None

    def __post_init__(self) -> None:
        require(self.from_round >= 1, "from_round", "must be at least 1")
        require(self.to_round >= self.from_round, "to_round", "must not be before from_round")
        require(bool(self.lift), "lift", "must name at least one domain")
        for domain in self.lift:
            _check_domain("lift", domain)
        require(
            self.methods is None or bool(self.methods),
            "methods",
            "when given, must name at least one method",
        )

    def covers(self, round_no: int) -> bool:
        return self.from_round <= round_no <= self.to_round


@dataclass(frozen=True, slots=True)
class Isp:
    """One ISP: its AS, its agents (behind its censor), its VPN agents (around it).

    ``blocks_from_round`` maps a domain to the round from which this ISP's censor applies
    to it (and its subdomains), by every method that lists it: a block rolling out. The
    loader checks the domains and rounds.
    """

    name: str
    asn: int
    agents: int = 2
    censor: Censor = Censor()
    glitches: tuple[Glitch, ...] = ()
    vpn_agents: int = 0
    blocks_from_round: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require(
            bool(_NAME_RE.match(self.name)),
            "name",
            f"{self.name!r}: use letters, digits, spaces, . _ - (max 64)",
        )
        require(1 <= self.asn < 2**32, "asn", f"{self.asn} is not an AS number")
        require(self.agents >= 0, "agents", "must not be negative")
        require(self.vpn_agents >= 0, "vpn_agents", "must not be negative")
        require(self.agents + self.vpn_agents >= 1, "agents", "an ISP needs at least one agent")
        require(self.agents + self.vpn_agents <= 60, "agents", "at most 60 agents per ISP")


@dataclass(frozen=True, slots=True)
class Scenario:
    """A whole lab run: the country, its sites and ISPs, and how long to measure."""

    name: str
    country: str
    round_seconds: float
    rounds: int
    sites: tuple[Site, ...]
    isps: tuple[Isp, ...]
    blockpage_ip: str = "10.10.34.34"
    description: str = ""

    def __post_init__(self) -> None:
        require(
            bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", self.name)),
            "name",
            f"{self.name!r}: use letters, digits, . _ - (max 64)",
        )
        require(
            bool(re.fullmatch(r"[A-Z]{2}", self.country)),
            "country",
            f"{self.country!r}: expected two upper-case letters",
        )
        require(2 <= self.round_seconds <= 3600, "round_seconds", "must be between 2 and 3600")
        require(1 <= self.rounds <= 1000, "rounds", "must be between 1 and 1000")
        require(bool(self.sites), "sites", "at least one site is needed")
        require(len(self.sites) <= MAX_SITES, "sites", f"the lab hosts at most {MAX_SITES} sites")
        require(bool(self.isps), "isps", "at least one ISP is needed")
        require(len(self.isps) <= MAX_ISPS, "isps", f"the lab builds at most {MAX_ISPS} ISPs")
        try:
            ip = ipaddress.IPv4Address(self.blockpage_ip)
        except ValueError:
            raise ConfigError(
                "", "blockpage_ip", f"{self.blockpage_ip!r} is not an IPv4 address"
            ) from None
        require(
            not (ip.is_loopback or ip.is_multicast or ip.is_unspecified),
            "blockpage_ip",
            f"{self.blockpage_ip} cannot be used in the lab",
        )
        for net in LAB_RANGES:
            require(
                ip not in ipaddress.IPv4Network(net),
                "blockpage_ip",
                f"{self.blockpage_ip} is inside {net}, which the lab uses itself",
            )

    def site_down(self, site: Site, round_no: int) -> bool:
        return round_no in site.down


def _cross_checks(scenario: Scenario, source: str) -> None:
    """Rules that span several keys; each error names the first offending key."""
    hosts: dict[str, int] = {}
    for i, site in enumerate(scenario.sites):
        if site.host in hosts:
            raise ConfigError(
                source, f"sites[{i}].url", f"host {site.host} is already site {hosts[site.host]}"
            )
        hosts[site.host] = i
        for j, r in enumerate(site.down):
            if not 1 <= r <= scenario.rounds:
                raise ConfigError(
                    source, f"sites[{i}].down[{j}]", f"round {r} is not in 1..{scenario.rounds}"
                )
    names: dict[str, int] = {}
    asns: dict[int, int] = {}
    for i, isp in enumerate(scenario.isps):
        if isp.name.lower() in names:
            raise ConfigError(
                source, f"isps[{i}].name", f"{isp.name} is already isps[{names[isp.name.lower()]}]"
            )
        names[isp.name.lower()] = i
        if isp.asn in asns:
            raise ConfigError(
                source, f"isps[{i}].asn", f"AS{isp.asn} is already isps[{asns[isp.asn]}]"
            )
        asns[isp.asn] = i
        for j, glitch in enumerate(isp.glitches):
            if glitch.to_round > scenario.rounds:
                raise ConfigError(
                    source,
                    f"isps[{i}].glitches[{j}].to_round",
                    f"round {glitch.to_round} is after the last round {scenario.rounds}",
                )
        for domain, r in isp.blocks_from_round.items():
            key = f"isps[{i}].blocks_from_round.{domain}"
            try:
                _check_domain(key, domain)
            except ConfigError as exc:
                raise ConfigError(source, exc.key, exc.problem) from None
            if not 1 <= r <= scenario.rounds:
                raise ConfigError(source, key, f"round {r} is not in 1..{scenario.rounds}")
            if not isp.censor.lists(domain):
                raise ConfigError(
                    source, key, f"{isp.name}'s censor does not list {domain} (by any method)"
                )


def scenario_from_mapping(data: object, source: str = "<scenario>") -> Scenario:
    """A checked ``Scenario`` from already parsed YAML; ``ConfigError`` names the key."""
    scenario = config_from_mapping(Scenario, data, source)
    _cross_checks(scenario, source)
    return scenario


def load_scenario(path: Path | str) -> Scenario:
    """Read and check the scenario file at ``path``; ``ConfigError`` names the file and key."""
    scenario = load_config(Scenario, path)
    _cross_checks(scenario, str(path))
    return scenario


BUILTIN_DIR = Path(__file__).resolve().parent / "scenarios"


def builtin_scenario_path(name: str = "iran-2013") -> Path:
    """Where a scenario shipped with filterwatch lives."""
    return BUILTIN_DIR / f"{name}.yaml"
