"""Ground truth implied by a scenario (design.md section 7). Pure.

A site is blocked on an ISP in a round when an active method of that ISP's censor blocks
it: ``dns_inject`` and ``ip_block`` affect every site, ``sni_reset`` only https:// sites
(there is no ClientHello otherwise) and ``http_blockpage`` only http:// sites. A site
leaks on an ISP in a round when it is not down, most of the *other* measured ISPs block it
and this ISP does not. An ISP with fewer non-VPN agents than the corroboration minimum
cannot show a leak: its lapses are expected as uncorroborated findings instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.scenario import METHODS, Isp, Method, Scenario, Site, domain_matches

CORROBORATION_MIN = 2  # distinct agents the collector needs to call a leak (its default)


@dataclass(frozen=True, slots=True)
class MethodRules:
    """One method of one ISP's censor in one round: what it blocks, minus what is lifted."""

    domains: tuple[str, ...]
    lifted: tuple[str, ...]

    def blocks(self, host: str) -> bool:
        return any(domain_matches(host, d) for d in self.domains) and not any(
            domain_matches(host, d) for d in self.lifted
        )


@dataclass(frozen=True, slots=True)
class CensorRound:
    """Every method of one ISP's censor as it stands in one round."""

    rules: dict[Method, MethodRules]

    def blocks(self, method: Method, host: str) -> bool:
        return self.rules[method].blocks(host)


def censor_round(isp: Isp, round_no: int) -> CensorRound:
    """The state of ``isp``'s censor during ``round_no`` (glitches applied)."""
    rules: dict[Method, MethodRules] = {}
    for method in METHODS:
        lifted: list[str] = []
        for glitch in isp.glitches:
            if glitch.covers(round_no) and (glitch.methods is None or method in glitch.methods):
                lifted.extend(glitch.lift)
        rules[method] = MethodRules(isp.censor.domains(method), tuple(sorted(set(lifted))))
    return CensorRound(rules)


def blocking_methods(isp: Isp, site: Site, round_no: int) -> tuple[Method, ...]:
    """The methods of ``isp``'s censor that block ``site`` in ``round_no``."""
    state = censor_round(isp, round_no)
    found: list[Method] = []
    for method in METHODS:
        if method == "sni_reset" and not site.https:
            continue
        if method == "http_blockpage" and site.https:
            continue
        if state.blocks(method, site.host):
            found.append(method)
    return tuple(found)


def blocked(isp: Isp, site: Site, round_no: int) -> bool:
    return bool(blocking_methods(isp, site, round_no))


def measured_isps(scenario: Scenario) -> tuple[Isp, ...]:
    """ISPs whose own (non-VPN) agents measure: the ones a country baseline is made of."""
    return tuple(isp for isp in scenario.isps if isp.agents > 0)


def lapses(scenario: Scenario, isp: Isp, site: Site, round_no: int) -> bool:
    """True when ``site`` is open on ``isp`` in ``round_no`` while most other ISPs block it."""
    if isp.agents == 0 or scenario.site_down(site, round_no):
        return False
    if blocked(isp, site, round_no):
        return False
    others = [o for o in measured_isps(scenario) if o.name != isp.name]
    if not others:
        return False
    blocking = sum(1 for o in others if blocked(o, site, round_no))
    return blocking * 2 > len(others)


@dataclass(frozen=True, slots=True)
class ExpectedEvent:
    """A run of consecutive rounds in which one ISP lets one site through."""

    isp: str
    asn: int
    domain: str  # the site's host
    start_round: int
    end_round: int  # inclusive
    corroborated: bool  # False: the ISP has too few agents; expected as uncorroborated


def expected_events(
    scenario: Scenario, corroboration_min: int = CORROBORATION_MIN
) -> tuple[ExpectedEvent, ...]:
    """Every expected leak (and uncorroborated lapse) of the scenario, one per ISP and site."""
    events: list[ExpectedEvent] = []
    for isp in scenario.isps:
        corroborated = isp.agents >= corroboration_min
        for site in scenario.sites:
            start: int | None = None
            for r in range(1, scenario.rounds + 2):
                leaking = r <= scenario.rounds and lapses(scenario, isp, site, r)
                if leaking and start is None:
                    start = r
                elif not leaking and start is not None:
                    events.append(
                        ExpectedEvent(isp.name, isp.asn, site.host, start, r - 1, corroborated)
                    )
                    start = None
    return tuple(events)


def expected_accessible(
    scenario: Scenario, isp: Isp, vpn: bool, site: Site, round_no: int
) -> frozenset[bool | None]:
    """The ``accessible`` values a correct verdict may have for one agent, site and round.

    A down site gives ``None`` (site_down); behind a censor that also blocks it, a verdict
    that names the block (``False``) is right too. A VPN agent sees what the internet sees.
    """
    censored = not vpn and blocked(isp, site, round_no)
    if scenario.site_down(site, round_no):
        return frozenset({None, False}) if censored else frozenset({None})
    return frozenset({False}) if censored else frozenset({True})
