"""Ground truth implied by a scenario (design.md section 7). Pure.

A site is *blocked* on an ISP in a round when an active method of that ISP's censor blocks
it: ``dns_inject`` and ``ip_block`` affect every site, ``sni_reset`` only https:// sites
(there is no ClientHello otherwise) and ``http_blockpage`` only http:// sites. A method is
active for a domain unless a glitch lifts it or the ISP's ``blocks_from_round`` for it is
still to come. A method with a rate below 1 still blocks for the country's majority: the
site is then *partially* blocked there when no active method with rate 1 blocks it too.

Each (ISP, site) is judged against the rest of the country ("most others": more than half
of the other measured ISPs block the site in that round, which is not down) and against its
own first block in the data (the first round its censor blocks the site):

- a *leak* (lapse): a round after the ISP's first block in which it does not block the site
  while most others do - its filter lapsed, by a glitch;
- ``lagging``: rounds before the ISP's first block in which most others block the site -
  its block started later (also when it was open at the start of the data while the others
  already blocked: without a block of its own there is no lapse);
- ``unfiltered``: the ISP never blocks the site in the data while most others block it (in
  some round): its censor never lists it, whenever the country began;
- ``partial``: the ISP blocks the site only by methods with rates below 1 in at least
  ``PARTIAL_MIN_ROUNDS`` rounds in which most others block it (a stable share, against a
  country that blocks).

VPN agents' results are not their ISP's. An ISP with fewer non-VPN agents than the
corroboration minimum cannot show anything corroborated: its lapses are expected as
uncorroborated findings, and no divergence is expected of it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

from lab.scenario import METHODS, Isp, Method, Scenario, Site, domain_matches

CORROBORATION_MIN = 2  # distinct agents the collector needs to call a leak (its default)
PARTIAL_MIN_ROUNDS = 3  # rounds of partial blocking against a blocking country: a stable share

DivergenceKind = Literal["unfiltered", "lagging", "partial"]
DIVERGENCE_KINDS: tuple[DivergenceKind, ...] = ("unfiltered", "lagging", "partial")


@dataclass(frozen=True, slots=True)
class MethodRules:
    """One method of one ISP's censor in one round: what it blocks, minus what is lifted
    (by a glitch, or because its ``blocks_from_round`` is still to come), and how often."""

    domains: tuple[str, ...]
    lifted: tuple[str, ...]
    rate: float = 1.0

    def blocks(self, host: str) -> bool:
        """True when this method is active for ``host`` (whatever its rate)."""
        return any(domain_matches(host, d) for d in self.domains) and not any(
            domain_matches(host, d) for d in self.lifted
        )


@dataclass(frozen=True, slots=True)
class CensorRound:
    """Every method of one ISP's censor as it stands in one round."""

    rules: dict[Method, MethodRules]
    # Domains whose block starts this round: words for the progress lines, not a rule.
    starting: tuple[str, ...] = field(default=(), compare=False)

    def blocks(self, method: Method, host: str) -> bool:
        return self.rules[method].blocks(host)

    def rate(self, method: Method) -> float:
        return self.rules[method].rate

    def draw(self, method: Method, host: str, rng: random.Random) -> bool:
        """Whether this one query or request for ``host`` is blocked: an independent draw
        at the method's rate when the method is active for it."""
        rules = self.rules[method]
        return rules.blocks(host) and (rules.rate >= 1 or rng.random() < rules.rate)


def censor_round(isp: Isp, round_no: int, *, glitches: bool = True) -> CensorRound:
    """The state of ``isp``'s censor during ``round_no`` (glitches applied unless told)."""
    pending = [d for d, start in isp.blocks_from_round.items() if round_no < start]
    starting = tuple(sorted(d for d, start in isp.blocks_from_round.items() if start == round_no))
    rules: dict[Method, MethodRules] = {}
    for method in METHODS:
        lifted: list[str] = list(pending)
        for glitch in isp.glitches if glitches else ():
            if glitch.covers(round_no) and (glitch.methods is None or method in glitch.methods):
                lifted.extend(glitch.lift)
        rules[method] = MethodRules(
            isp.censor.domains(method), tuple(sorted(set(lifted))), isp.censor.rates.of(method)
        )
    return CensorRound(rules, starting if round_no > 1 else ())


def blocking_methods(isp: Isp, site: Site, round_no: int) -> tuple[Method, ...]:
    """The methods of ``isp``'s censor that block ``site`` in ``round_no`` (any rate)."""
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
    """Blocked on ``isp`` in ``round_no``, if only sometimes (a method with a rate below 1)."""
    return bool(blocking_methods(isp, site, round_no))


def blocked_share(isp: Isp, site: Site, round_no: int) -> float:
    """The share of measurements of ``site`` on ``isp`` that are blocked in ``round_no``.

    Each active method draws once per measurement (the lab's censors hold a connection's
    fate for the rest of the measurement, see lab/censor.py), independently of the others.
    """
    open_share = 1.0
    for method in blocking_methods(isp, site, round_no):
        open_share *= 1.0 - isp.censor.rates.of(method)
    return 1.0 - open_share


def partially_blocked(isp: Isp, site: Site, round_no: int) -> bool:
    """Blocked in ``round_no`` only by methods whose rates are below 1."""
    methods = blocking_methods(isp, site, round_no)
    return bool(methods) and all(isp.censor.rates.of(m) < 1 for m in methods)


def measured_isps(scenario: Scenario) -> tuple[Isp, ...]:
    """ISPs whose own (non-VPN) agents measure: the ones a country baseline is made of."""
    return tuple(isp for isp in scenario.isps if isp.agents > 0)


def others_block(scenario: Scenario, isp: Isp, site: Site, round_no: int) -> bool:
    """True when ``site`` is up in ``round_no`` and most other measured ISPs block it."""
    if scenario.site_down(site, round_no):
        return False
    others = [o for o in measured_isps(scenario) if o.name != isp.name]
    if not others:
        return False
    blocking = sum(1 for o in others if blocked(o, site, round_no))
    return blocking * 2 > len(others)


def first_block(scenario: Scenario, isp: Isp, site: Site) -> int | None:
    """The first round in which ``isp`` blocks ``site`` (glitches applied), or None."""
    for r in range(1, scenario.rounds + 1):
        if blocked(isp, site, r):
            return r
    return None


def lapses(scenario: Scenario, isp: Isp, site: Site, round_no: int) -> bool:
    """True when ``site`` is open on ``isp`` in ``round_no`` while most other ISPs block it,
    after ``isp`` itself blocked it in an earlier round of the data."""
    if isp.agents == 0 or blocked(isp, site, round_no):
        return False
    start = first_block(scenario, isp, site)
    if start is None or round_no < start:
        return False
    return others_block(scenario, isp, site, round_no)


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


@dataclass(frozen=True, slots=True)
class ExpectedDivergence:
    """A standing difference of one ISP on one site; scored by (AS, domain, kind).

    ``rounds`` are the first and last round it shows in (for information); ``blocked_share``
    is the ISP's own blocked share then (the rate's effect, for ``partial``).
    """

    isp: str
    asn: int
    domain: str
    kind: DivergenceKind
    start_round: int
    end_round: int
    blocked_share: float


def _divergences_of(scenario: Scenario, isp: Isp, site: Site) -> list[ExpectedDivergence]:
    found: list[ExpectedDivergence] = []

    def add(kind: DivergenceKind, rounds: list[int], share: float) -> None:
        found.append(
            ExpectedDivergence(isp.name, isp.asn, site.host, kind, rounds[0], rounds[-1], share)
        )

    up = [r for r in range(1, scenario.rounds + 1) if not scenario.site_down(site, r)]
    majority = [r for r in up if others_block(scenario, isp, site, r)]
    start = first_block(scenario, isp, site)
    if start is None:
        if majority:
            add("unfiltered", majority, 0.0)
    else:
        lag = [r for r in majority if r < start]
        if lag:
            add("lagging", lag, 0.0)
    partial = [r for r in majority if partially_blocked(isp, site, r)]
    if len(partial) >= PARTIAL_MIN_ROUNDS:
        add("partial", partial, max(blocked_share(isp, site, r) for r in partial))
    return found


def expected_divergences(
    scenario: Scenario, corroboration_min: int = CORROBORATION_MIN
) -> tuple[ExpectedDivergence, ...]:
    """Every divergence the collector should name; none for ISPs with too few agents."""
    found: list[ExpectedDivergence] = []
    for isp in scenario.isps:
        if isp.agents < corroboration_min:
            continue
        for site in scenario.sites:
            found.extend(_divergences_of(scenario, isp, site))
    return tuple(found)


def expected_accessible(
    scenario: Scenario, isp: Isp, vpn: bool, site: Site, round_no: int
) -> frozenset[bool | None]:
    """The ``accessible`` values a correct verdict may have for one agent, site and round.

    A down site gives ``None`` (site_down); behind a censor that also blocks it, a verdict
    that names the block (``False``) is right too. A VPN agent sees what the internet sees.
    Behind a censor that blocks only sometimes, either verdict can be right.
    """
    censored = not vpn and blocked(isp, site, round_no)
    sometimes = censored and partially_blocked(isp, site, round_no)
    if scenario.site_down(site, round_no):
        return frozenset({None, False}) if censored else frozenset({None})
    if sometimes:
        return frozenset({False, True})
    return frozenset({False}) if censored else frozenset({True})
