"""The lab's network while it runs: namespaces, servers, resolvers and the censors.

``LabNetwork.build()`` makes the namespaces of ``lab.plan``, starts the sites, the
resolvers, the blockpage server, the transparent proxies and the alert receiver, and
applies round 1's censor rules; ``apply_round(r)`` switches every censor (and the sites
that are down) to round ``r``; ``close()`` stops them all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from lab import censor, servers
from lab.alerts import AlertReceiver
from lab.netns import LabError, Namespaces, build
from lab.plan import INTERNET_NS, PUBLIC_RESOLVER, LabPlan, make_plan
from lab.scenario import Scenario
from lab.truth import CensorRound, censor_round


class LabNetwork:
    """The namespaces of one scenario and everything listening in them."""

    def __init__(self, scenario: Scenario, tls_dir: Path, progress: Callable[[str], None]) -> None:
        self.scenario = scenario
        self.plan: LabPlan = make_plan(scenario)
        self.tls_dir = tls_dir  # where the lab's CA and certificates are written
        self.progress = progress
        self.hold_s = censor.hold_seconds(scenario.round_seconds)
        self.receiver = AlertReceiver()  # the webhook subscriber, in the lab's internet
        self._ns: Namespaces | None = None
        self._runners: list[web.AppRunner] = []
        self._dns_servers: list[servers.DnsServer] = []
        self._proxies: list[servers.TransparentProxy] = []
        self._router_states: dict[str, servers.RouterState] = {}
        self._applied_round = 0

    @property
    def ns(self) -> Namespaces:
        if self._ns is None:
            raise LabError("the lab's network is not built")
        return self._ns

    async def build(self) -> Namespaces:
        """Namespaces, links, addresses, routes, servers and the round-1 censors."""
        servers.quiet_connection_errors(asyncio.get_running_loop())
        Namespaces.prepare_mounts()
        ns = self._ns = Namespaces()
        topo = await build(ns, self.plan)
        self.progress(
            f"built {len(topo.namespaces)} network namespaces: the internet, "
            f"{len(self.plan.isps)} ISP routers, {len(self.plan.agents)} agents"
        )
        tls = servers.make_tls(self.plan, self.tls_dir)
        self._runners = await servers.start_http(ns, self.plan, tls)
        await self.receiver.start(ns)
        public = servers.PublicResolver(self.plan)
        await public.start(ns, INTERNET_NS, PUBLIC_RESOLVER)
        self._dns_servers.append(public)
        for isp_plan, isp in zip(self.plan.isps, self.scenario.isps, strict=True):
            state = servers.RouterState(censor_round(isp, 1), self.plan.blockpage_ip)
            self._router_states[isp.name] = state
            resolver = servers.IspResolver(self.plan, state)
            await resolver.start(ns, isp_plan.netns, "0.0.0.0")
            self._dns_servers.append(resolver)
            proxy = servers.TransparentProxy(ns, isp_plan.netns, state)
            await proxy.start()
            self._proxies.append(proxy)
        await self.apply_round(1, first=True)
        self.progress("sites, resolvers, blockpage server and censors are up")
        return ns

    async def apply_round(self, round_no: int, *, first: bool = False) -> None:
        """Switch every censor (and the sites that are down) to ``round_no``'s state."""
        ns = self.ns
        changes: list[str] = []
        jobs = []
        for isp_plan, isp in zip(self.plan.isps, self.scenario.isps, strict=True):
            state = censor_round(isp, round_no)
            holder = self._router_states[isp.name]
            if not first and state == holder.current:
                continue
            if not first:
                changes.append(
                    _change(isp.name, state, censor_round(isp, round_no, glitches=False))
                )
            holder.current = state
            jobs.append(
                ns.nft_apply(
                    isp_plan.netns,
                    censor.router_nft(self.plan, isp_plan, isp, state, hold_s=self.hold_s),
                )
            )
            jobs.append(
                ns.iptables_apply(
                    isp_plan.netns,
                    censor.router_iptables(isp_plan, state, first=first, hold_s=self.hold_s),
                )
            )
        down_now = self._sites_down(round_no)
        if first or down_now != self._sites_down(self._applied_round):
            if not first:
                changes.append("down: " + (", ".join(sorted(down_now)) or "none"))
            jobs.append(
                ns.nft_apply(INTERNET_NS, censor.internet_nft(self.plan, self.scenario, round_no))
            )
        await asyncio.gather(*jobs)
        self._applied_round = round_no
        if changes:
            self.progress(f"round {round_no}: " + "; ".join(changes))

    def _sites_down(self, round_no: int) -> set[str]:
        return {s.host for s in self.scenario.sites if self.scenario.site_down(s, round_no)}

    async def close(self) -> None:
        for d in self._dns_servers:
            d.close()
        for p in self._proxies:
            p.close()
        for runner in self._runners:
            await runner.cleanup()
        await self.receiver.close()
        if self._ns is not None:
            self._ns.close()


def _change(name: str, state: CensorRound, unglitched: CensorRound) -> str:
    """What changed in one ISP's censor at a round boundary, for the progress lines."""
    glitched = sorted(
        {d for rules in state.rules.values() for d in rules.lifted}
        - {d for rules in unglitched.rules.values() for d in rules.lifted}
    )
    words = [f"starts blocking {', '.join(state.starting)}"] if state.starting else []
    if glitched:
        words.append(f"lifts {', '.join(glitched)}")
    elif not any(rules.lifted for rules in state.rules.values()):
        words.append("filters fully")
    return f"{name} " + " and ".join(words or ["changes its rules"])
