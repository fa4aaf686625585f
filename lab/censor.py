"""The censors: kernel rules of each ISP router, rendered from the round's censor state.

Each method is done the way real national filters do it, with real kernel filtering:

- ``dns_inject``: the router hijacks every DNS packet from its (non-VPN) agents to its own
  resolver (nft ``redirect`` of udp and tcp port 53), which answers ``blockpage_ip`` for
  the listed domains and their subdomains (``lab.servers.IspResolver``).
- ``sni_reset``: an iptables ``string`` match on forwarded packets to port 443 answers a
  ClientHello carrying a listed name with a TCP reset (nft cannot match a string at a
  variable offset). Lifted subdomains are exempted by ``RETURN`` rules placed first.
- ``http_blockpage``: forwarded tcp/80 is redirected to a transparent proxy in the router
  that reads the Host header and answers the blockpage or passes the request on to the
  original destination (``lab.servers.TransparentProxy``).
- ``ip_block``: packets from the agents to the listed sites' addresses are dropped as they
  enter the router (before the HTTP redirect), so connects time out.

A method with a rate below 1 blocks each new connection (``ip_block``: nft ``numgen
random``) or handshake (``sni_reset``: iptables ``statistic --mode random``) with that
probability, and the resolver and the proxy draw per query and request. One measurement
opens several connections to its site (TCP, TLS, then HTTP), so the kernel rules hold a
draw for ``hold_s`` seconds per (agent, site) - an nft set with timeouts for addresses, an
iptables ``recent`` list per domain for SNI - and the measurement's later connections share
its fate: the share of blocked measurements is the rate, and draws are independent across
agents and rounds (``hold_seconds`` is below the round and above the probe timeout).

VPN agents' traffic is masqueraded like everyone's (the collector sees the ISP) but is
exempt from every rule, as a VPN tunnel would be. Rule text is pure and rebuilt whole at
each round boundary: ``nft -f`` and ``iptables-restore`` apply it atomically.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from lab.plan import PROXY_PORT, IspPlan, LabPlan
from lab.scenario import Isp, Scenario
from lab.truth import CensorRound

NFT_TABLE = "filterwatch_lab"
SNI_CHAIN = "FILTERWATCH_SNI"
RANDOM_SCALE = 1_000_000  # nft draws ``numgen random mod RANDOM_SCALE``


def hold_seconds(round_seconds: float) -> int:
    """How long a draw holds for one (agent, site): longer than a measurement (the probe
    timeout is half a round) and shorter than a round, in whole seconds."""
    return max(1, math.floor(round_seconds * 0.75))


def random_below(rate: float) -> int:
    """The ``numgen random mod RANDOM_SCALE < N`` bound that blocks with ``rate``."""
    return max(1, min(RANDOM_SCALE - 1, round(rate * RANDOM_SCALE)))


def _set(name: str, addresses: Iterable[str]) -> str:
    elements = sorted(set(addresses))
    body = (
        f"type ipv4_addr; elements = {{ {', '.join(elements)} }}" if elements else "type ipv4_addr;"
    )
    return f"  set {name} {{ {body} }}\n"


def _pairs(name: str, hold_s: int) -> str:
    return (
        f"  set {name} {{ type ipv4_addr . ipv4_addr; flags dynamic, timeout; "
        f"timeout {hold_s}s; }}\n"
    )


def router_nft(
    plan: LabPlan, isp_plan: IspPlan, isp: Isp, state: CensorRound, *, hold_s: int = 3
) -> str:
    """The router's whole nft ruleset for one round (replaces the previous one atomically).

    With an ``ip_block`` rate below 1, the listed addresses go to the set ``sometimes``: a
    new (agent, address) pair is drawn once and held in ``doomed`` or ``spared`` for
    ``hold_s`` seconds.
    """
    vpn = [a.address for a in isp_plan.agents if a.vpn]
    listed = [s.address for s in plan.sites if state.blocks("ip_block", s.host)]
    rate = state.rate("ip_block")
    always, sometimes = (listed, []) if rate >= 1 else ([], listed)
    proxied = bool(isp.censor.http_blockpage)
    lines = [
        f"table ip {NFT_TABLE}\n",
        f"delete table ip {NFT_TABLE}\n",
        f"table ip {NFT_TABLE} {{\n",
        _set("vpn", vpn),
        _set("blocked", always),
        _set("sometimes", sometimes),
        _pairs("doomed", hold_s),
        _pairs("spared", hold_s),
        # ip_block, as packets of the agents enter the router (before the HTTP redirect,
        # so that proxied connections are judged once, by their agent).
        "  chain ip_block {\n",
        "    type filter hook prerouting priority mangle; policy accept;\n",
        '    iifname "wan" return\n',
        "    ip saddr @vpn return\n",
        "    ip daddr @blocked drop\n",
    ]
    if sometimes:
        lines += [
            "    ip daddr != @sometimes return\n",
            "    ip saddr . ip daddr @doomed drop\n",
            "    ip saddr . ip daddr @spared return\n",
            f"    numgen random mod {RANDOM_SCALE} < {random_below(rate)} "
            "add @doomed { ip saddr . ip daddr } drop\n",
            "    add @spared { ip saddr . ip daddr }\n",
        ]
    lines += [
        "  }\n",
        "  chain prerouting {\n",
        "    type nat hook prerouting priority dstnat; policy accept;\n",
        '    iifname "wan" return\n',
        "    ip saddr @vpn return\n",
        # Agents cannot bypass the ISP's resolver: every DNS packet goes to the router's own.
        "    meta l4proto { tcp, udp } th dport 53 redirect to :53\n",
    ]
    if proxied:
        lines.append(f"    tcp dport 80 redirect to :{PROXY_PORT}\n")
    lines += [
        "  }\n",
        "  chain postrouting {\n",
        "    type nat hook postrouting priority srcnat; policy accept;\n",
        '    oifname "wan" masquerade\n',
        "  }\n",
        # The transparent proxy connects from the router itself: a full block applies there
        # too (a partial one was drawn for the agent's own connection, in ip_block).
        "  chain output {\n",
        "    type filter hook output priority filter; policy accept;\n",
        "    ip daddr @blocked drop\n",
        "  }\n",
        "}\n",
    ]
    return "".join(lines)


def router_iptables(isp_plan: IspPlan, state: CensorRound, *, first: bool, hold_s: int = 3) -> str:
    """iptables-restore input (with --noflush) that rewrites the SNI chain for one round.

    With a ``sni_reset`` rate below 1, each listed domain has two ``recent`` lists of agent
    addresses (``fw_doomed_<i>``, ``fw_spared_<i>``): a ClientHello naming the domain is
    judged by a draw (``statistic``) unless the agent was judged in the last ``hold_s``
    seconds, and then gets the same answer.
    """
    rules = state.rules["sni_reset"]
    reset = "-j REJECT --reject-with tcp-reset"
    lines = ["*filter\n", f":{SNI_CHAIN} - [0:0]\n"]
    if first:
        lines.append(f"-A FORWARD -p tcp --dport 443 -j {SNI_CHAIN}\n")
    if rules.domains:
        for agent in isp_plan.agents:
            if agent.vpn:
                lines.append(f"-A {SNI_CHAIN} -s {agent.address}/32 -j RETURN\n")
        for domain in rules.lifted:
            lines.append(f"-A {SNI_CHAIN} -m string --string {domain} --algo bm -j RETURN\n")
        for i, domain in enumerate(rules.domains):
            match = f"-A {SNI_CHAIN} -p tcp -m string --string {domain} --algo bm"
            if rules.rate >= 1:
                lines.append(f"{match} {reset}\n")
                continue
            doomed, spared = f"fw_doomed_{i}", f"fw_spared_{i}"
            lines += [
                f"{match} -m recent --name {doomed} --rcheck --seconds {hold_s} {reset}\n",
                f"{match} -m recent --name {spared} --rcheck --seconds {hold_s} -j RETURN\n",
                f"{match} -m statistic --mode random --probability {rules.rate:.6f} "
                f"-m recent --name {doomed} --set {reset}\n",
                f"{match} -m recent --name {spared} --set -j RETURN\n",
            ]
    lines.append("COMMIT\n")
    return "".join(lines)


def internet_nft(plan: LabPlan, scenario: Scenario, round_no: int) -> str:
    """The internet's ruleset for one round: sites that are down refuse every connection."""
    down = [
        plan.site(site.host).address
        for site in scenario.sites
        if scenario.site_down(site, round_no)
    ]
    return (
        f"table ip {NFT_TABLE}\n"
        f"delete table ip {NFT_TABLE}\n"
        f"table ip {NFT_TABLE} {{\n" + _set("down", down) + "  chain input {\n"
        "    type filter hook input priority filter; policy accept;\n"
        "    meta l4proto tcp ip daddr @down reject with tcp reset\n"
        "  }\n"
        "}\n"
    )
