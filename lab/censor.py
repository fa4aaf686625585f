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
- ``ip_block``: packets to the listed sites' addresses are dropped, so connects time out.

VPN agents' traffic is masqueraded like everyone's (the collector sees the ISP) but is
exempt from every rule, as a VPN tunnel would be. Rule text is pure and rebuilt whole at
each round boundary: ``nft -f`` and ``iptables-restore`` apply it atomically.
"""

from __future__ import annotations

from collections.abc import Iterable

from lab.plan import PROXY_PORT, IspPlan, LabPlan
from lab.scenario import Isp, Scenario
from lab.truth import CensorRound

NFT_TABLE = "filterwatch_lab"
SNI_CHAIN = "FILTERWATCH_SNI"


def _set(name: str, addresses: Iterable[str]) -> str:
    elements = sorted(set(addresses))
    body = (
        f"type ipv4_addr; elements = {{ {', '.join(elements)} }}" if elements else "type ipv4_addr;"
    )
    return f"  set {name} {{ {body} }}\n"


def router_nft(plan: LabPlan, isp_plan: IspPlan, isp: Isp, state: CensorRound) -> str:
    """The router's whole nft ruleset for one round (replaces the previous one atomically)."""
    vpn = [a.address for a in isp_plan.agents if a.vpn]
    blocked_ips = [s.address for s in plan.sites if state.blocks("ip_block", s.host)]
    proxied = bool(isp.censor.http_blockpage)
    lines = [
        f"table ip {NFT_TABLE}\n",
        f"delete table ip {NFT_TABLE}\n",
        f"table ip {NFT_TABLE} {{\n",
        _set("vpn", vpn),
        _set("blocked", blocked_ips),
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
        "  chain forward {\n",
        "    type filter hook forward priority filter; policy accept;\n",
        "    ip saddr @vpn accept\n",
        "    ip daddr @blocked drop\n",
        "  }\n",
        # The transparent proxy connects from the router itself: the same blocks apply.
        "  chain output {\n",
        "    type filter hook output priority filter; policy accept;\n",
        "    ip daddr @blocked drop\n",
        "  }\n",
        "}\n",
    ]
    return "".join(lines)


def router_iptables(isp_plan: IspPlan, state: CensorRound, *, first: bool) -> str:
    """iptables-restore input (with --noflush) that rewrites the SNI chain for one round."""
    rules = state.rules["sni_reset"]
    lines = ["*filter\n", f":{SNI_CHAIN} - [0:0]\n"]
    if first:
        lines.append(f"-A FORWARD -p tcp --dport 443 -j {SNI_CHAIN}\n")
    if rules.domains:
        for agent in isp_plan.agents:
            if agent.vpn:
                lines.append(f"-A {SNI_CHAIN} -s {agent.address}/32 -j RETURN\n")
        for domain in rules.lifted:
            lines.append(f"-A {SNI_CHAIN} -m string --string {domain} --algo bm -j RETURN\n")
        for domain in rules.domains:
            lines.append(
                f"-A {SNI_CHAIN} -p tcp -m string --string {domain} --algo bm "
                "-j REJECT --reject-with tcp-reset\n"
            )
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
