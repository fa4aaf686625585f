"""The lab's address plan and the censor rules it renders for each round."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess

from collector.netdb import NetDb
from lab.censor import hold_seconds, internet_nft, random_below, router_iptables, router_nft
from lab.netns import tool_path, topology
from lab.orchestrator import SWITCH_LEAD_S, agent_jitter, probe_timeout
from lab.plan import make_plan
from lab.scenario import builtin_scenario_path, load_scenario, scenario_from_mapping
from lab.servers import host_of, iran_blockpage
from lab.truth import censor_round
from tests.conftest import skip_or_fail_in_ci

SCENARIO = scenario_from_mapping(
    {
        "name": "t",
        "country": "IR",
        "round_seconds": 4,
        "rounds": 8,
        "sites": [
            {"url": "https://www.facebook.com/", "down": [3]},
            {"url": "http://www.bbc.com/persian"},
        ],
        "isps": [
            {
                "name": "TCI",
                "asn": 58224,
                "agents": 2,
                "vpn_agents": 1,
                "censor": {
                    "dns_inject": ["facebook.com"],
                    "sni_reset": ["facebook.com"],
                    "http_blockpage": ["bbc.com"],
                    "ip_block": ["facebook.com"],
                },
                "glitches": [{"from_round": 2, "to_round": 3, "lift": ["www.facebook.com"]}],
            },
            {"name": "Shatel", "asn": 31549, "agents": 1},
        ],
    }
)
PLAN = make_plan(SCENARIO)

# Kcell blocks Facebook's address 70 % of the time and resets Twitter's handshakes 40 % of
# the time; its block of BBC reaches it in round 5.
ROLLING = scenario_from_mapping(
    {
        "name": "r",
        "country": "KZ",
        "round_seconds": 4,
        "rounds": 8,
        "sites": [
            {"url": "https://www.facebook.com/"},
            {"url": "https://twitter.com/"},
            {"url": "https://www.bbc.com/"},
        ],
        "isps": [
            {
                "name": "Kcell",
                "asn": 29355,
                "agents": 2,
                "vpn_agents": 1,
                "censor": {
                    "ip_block": ["facebook.com", "bbc.com"],
                    "sni_reset": ["twitter.com"],
                    "rates": {"ip_block": 0.7, "sni_reset": 0.4},
                },
                "blocks_from_round": {"bbc.com": 5},
            },
            {"name": "Beeline", "asn": 21299, "censor": {"ip_block": ["facebook.com"]}},
        ],
    }
)
ROLLING_PLAN = make_plan(ROLLING)


def test_netdb_attributes_every_router_to_its_isp() -> None:
    """The collector's own netdb, fed the lab's table, maps each ISP's public address to it."""
    rows = [tuple(line.split("\t")) for line in PLAN.netdb_tsv().splitlines()]
    db = NetDb((a, b, int(asn), cc, name) for a, b, asn, cc, name in rows)
    for isp in PLAN.isps:
        assert db.lookup(isp.public_address) == {
            "asn": isp.asn,
            "cc": "IR",
            "network_name": isp.name,
        }
    assert db.lookup(PLAN.site("www.facebook.com").address)["asn"] == 32934


def test_addresses_are_unique_and_public_looking() -> None:
    """Sites and routers have distinct public-looking addresses; agents sit in CGNAT space."""
    public = [s.address for s in PLAN.sites] + [i.public_address for i in PLAN.isps]
    assert len(set(public)) == len(public)
    assert all(ipaddress.ip_address(a).is_global for a in public)
    assert all(
        ipaddress.ip_address(a.address) in ipaddress.ip_network("100.64.0.0/10")
        for a in PLAN.agents
    )


def test_vpn_agents_use_the_public_resolver() -> None:
    """Agents ask their ISP's resolver; a VPN agent asks the public one."""
    tci = PLAN.isp("TCI")
    assert [a.vpn for a in tci.agents] == [False, False, True]
    assert tci.agents[0].resolver == tci.agents[0].router_side
    assert tci.agents[2].resolver != tci.agents[2].router_side


def test_router_rules_follow_the_round() -> None:
    """ip_block drops the site's address, except in the rounds a glitch lifts it."""
    tci_plan, tci = PLAN.isp("TCI"), SCENARIO.isps[0]
    fb = PLAN.site("www.facebook.com").address
    assert fb in router_nft(PLAN, tci_plan, tci, censor_round(tci, 1))
    assert fb not in router_nft(PLAN, tci_plan, tci, censor_round(tci, 2))
    vpn = tci_plan.agents[2].address
    assert f"elements = {{ {vpn} }}" in router_nft(PLAN, tci_plan, tci, censor_round(tci, 1))


def test_sni_rules_exempt_lifted_names_first() -> None:
    """A lifted subdomain returns before the reset rule of its parent domain can match."""
    tci_plan, tci = PLAN.isp("TCI"), SCENARIO.isps[0]
    text = router_iptables(tci_plan, censor_round(tci, 2), first=False)
    assert text.index("--string www.facebook.com --algo bm -j RETURN") < text.index("tcp-reset")
    assert "-A FORWARD" not in text


def test_partial_ip_block_draws_once_per_agent_and_address() -> None:
    """An ip_block rate below 1 puts the addresses in ``sometimes``, drawn by ``numgen``
    once per (agent, address) and held in ``doomed`` or ``spared``; a full block does not."""
    kcell_plan, kcell = ROLLING_PLAN.isp("Kcell"), ROLLING.isps[0]
    fb = ROLLING_PLAN.site("www.facebook.com").address
    text = router_nft(ROLLING_PLAN, kcell_plan, kcell, censor_round(kcell, 1), hold_s=3)
    assert f"set sometimes {{ type ipv4_addr; elements = {{ {fb} }} }}" in text
    assert "set blocked { type ipv4_addr; }" in text
    assert "numgen random mod 1000000 < 700000 add @doomed { ip saddr . ip daddr } drop" in text
    assert text.index("@doomed drop") < text.index("@spared return") < text.index("numgen")
    assert "timeout 3s" in text
    beeline_plan, beeline = ROLLING_PLAN.isp("Beeline"), ROLLING.isps[1]
    full = router_nft(ROLLING_PLAN, beeline_plan, beeline, censor_round(beeline, 1))
    assert f"set blocked {{ type ipv4_addr; elements = {{ {fb} }} }}" in full
    assert "numgen" not in full


def test_block_reaches_its_isp_in_its_round() -> None:
    """``blocks_from_round``: BBC's address joins Kcell's filter in round 5, not before."""
    kcell_plan, kcell = ROLLING_PLAN.isp("Kcell"), ROLLING.isps[0]
    bbc = ROLLING_PLAN.site("www.bbc.com").address
    assert bbc not in router_nft(ROLLING_PLAN, kcell_plan, kcell, censor_round(kcell, 4))
    assert bbc in router_nft(ROLLING_PLAN, kcell_plan, kcell, censor_round(kcell, 5))


def test_partial_sni_reset_draws_once_per_agent_and_domain() -> None:
    """An SNI rate below 1: a ClientHello is reset with ``statistic`` probability unless the
    agent was judged for that domain within the hold, then it gets the same answer."""
    kcell_plan, kcell = ROLLING_PLAN.isp("Kcell"), ROLLING.isps[0]
    text = router_iptables(kcell_plan, censor_round(kcell, 1), first=True, hold_s=2)
    lines = [line for line in text.splitlines() if "twitter.com" in line]
    assert "--name fw_doomed_0 --rcheck --seconds 2 -j REJECT" in lines[0]
    assert "--name fw_spared_0 --rcheck --seconds 2 -j RETURN" in lines[1]
    assert "--probability 0.400000 -m recent --name fw_doomed_0 --set -j REJECT" in lines[2]
    assert "--name fw_spared_0 --set -j RETURN" in lines[3]
    vpn = kcell_plan.agents[2].address
    assert text.index(f"-s {vpn}/32 -j RETURN") < text.index("statistic")
    full = router_iptables(PLAN.isp("TCI"), censor_round(SCENARIO.isps[0], 1), first=False)
    assert "statistic" not in full and "recent" not in full


def test_hold_is_longer_than_a_measurement_and_shorter_than_a_round() -> None:
    """A draw holds past the end of a measurement (the probe timeout) and ends before the
    same agent's next measurement, however late in its round the agent's jitter puts it."""
    for rs in (2, 3, 4, 5, 10, 60, 3600):
        timeout, jitter = probe_timeout(rs), agent_jitter(rs)
        if rs >= 4:
            assert timeout <= hold_seconds(rs) < rs - jitter
        # a measurement ends before the censor switches to the next round's rules
        assert jitter + timeout < rs - SWITCH_LEAD_S
    assert random_below(0.7) == 700_000 and random_below(1e-9) == 1
    assert random_below(0.9999999) == 999_999


def test_down_sites_are_refused_in_their_rounds() -> None:
    """A site down in a round is refused by the internet in that round only."""
    fb = PLAN.site("www.facebook.com").address
    assert fb in internet_nft(PLAN, SCENARIO, 3)
    assert fb not in internet_nft(PLAN, SCENARIO, 4)


def test_topology_creates_each_namespace_once() -> None:
    """Every namespace of the plan is created once, the internet first."""
    topo = topology(PLAN)
    assert topo.namespaces[0] == "internet"
    assert len(set(topo.namespaces)) == len(topo.namespaces) == 1 + 2 + 4


def test_blockpage_is_the_iranian_iframe() -> None:
    """The blockpage body carries the iframe to the filtering server, as Iran's did."""
    assert b'<iframe src="http://10.10.34.34:80?' in iran_blockpage("10.10.34.34")


def test_host_header_is_read_without_port() -> None:
    """The transparent proxy reads the Host header, lower-cased and without the port."""
    assert (
        host_of(b"GET / HTTP/1.1\r\nUser-Agent: x\r\nHOST: WWW.BBC.com:80\r\n\r\n") == "www.bbc.com"
    )
    assert host_of(b"GET / HTTP/1.0\r\n\r\n") is None


def test_rules_are_valid_for_the_kernel_tools() -> None:
    """nft accepts every ruleset of the Iran scenario and of partial and rolling blocks
    (checked in a throwaway namespace)."""
    unshare = shutil.which("unshare", path=tool_path())
    nft = shutil.which("nft", path=tool_path())
    if unshare is None or nft is None:
        skip_or_fail_in_ci("unshare and nft are needed to check the rules")
    scenario = load_scenario(builtin_scenario_path())
    plan = make_plan(scenario)
    rulesets = [internet_nft(plan, scenario, 1)]
    for isp_plan, isp in zip(plan.isps, scenario.isps, strict=True):
        for r in (1, 5):
            rulesets.append(router_nft(plan, isp_plan, isp, censor_round(isp, r)))
    for isp_plan, isp in zip(ROLLING_PLAN.isps, ROLLING.isps, strict=True):
        for r in (1, 5):
            rulesets.append(router_nft(ROLLING_PLAN, isp_plan, isp, censor_round(isp, r)))
    for ruleset in rulesets:
        check = subprocess.run(
            [unshare, "--user", "--map-root-user", "--net", nft, "-c", "-f", "-"],
            input=ruleset.replace("delete table", "# delete table"),
            capture_output=True,
            text=True,
        )
        if check.returncode != 0 and "Operation not permitted" in check.stderr:
            skip_or_fail_in_ci(f"cannot use a user namespace here: {check.stderr.strip()}")
        assert check.returncode == 0, check.stderr


def test_sni_rules_are_valid_for_iptables_restore() -> None:
    """iptables-restore accepts the SNI chain with draws and holds (a throwaway namespace)."""
    unshare = shutil.which("unshare", path=tool_path())
    restore = shutil.which("iptables-restore", path=tool_path())
    if unshare is None or restore is None:
        skip_or_fail_in_ci("unshare and iptables-restore are needed to check the rules")
    kcell_plan, kcell = ROLLING_PLAN.isp("Kcell"), ROLLING.isps[0]
    rules = router_iptables(kcell_plan, censor_round(kcell, 1), first=True, hold_s=3)
    check = subprocess.run(
        [unshare, "--user", "--map-root-user", "--net", restore, "--noflush"],
        input=rules + rules.replace("-A FORWARD -p tcp --dport 443 -j FILTERWATCH_SNI\n", ""),
        capture_output=True,
        text=True,
    )
    if check.returncode != 0 and "Operation not permitted" in check.stderr:
        skip_or_fail_in_ci(f"cannot use a user namespace here: {check.stderr.strip()}")
    assert check.returncode == 0, check.stderr
