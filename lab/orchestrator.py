"""The lab's inner orchestrator: runs inside the sandbox of ``lab.netns.sandbox_command``.

``python -m lab.orchestrator --run-dir D --scenario F`` builds the namespaces, the servers
and the censors, starts a real ``filterwatch collector serve`` in the lab internet,
enrolls real ``filterwatch agent run`` processes the way volunteers do (``collector
enroll-code`` then ``agent enroll``), waits until every agent has uploaded once, then
drives the rounds on the lab's clock, switching censor rules just before each round
boundary. At the end it asks the collector for its leak events (``collector leaks
--json``), scores them and every stored verdict against the ground truth, writes
``result.json`` and prints the report.

It is PID 1 of the lab's PID namespace: when it exits, every process of the lab dies
with it and the namespaces vanish.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from aiohttp import web

from agent.state import load_credentials, load_status
from lab import censor, report, servers
from lab.alerts import AlertReceiver, alerts_text, score_alerts
from lab.netns import LabError, Namespaces, build, tool_path
from lab.plan import (
    COLLECTOR_ADDRESS,
    COLLECTOR_PORT,
    INTERNET_NS,
    PUBLIC_RESOLVER,
    AgentPlan,
    LabPlan,
    make_plan,
)
from lab.scenario import Scenario, load_scenario
from lab.score import MeasurementRow, divergence_json, score
from lab.truth import CensorRound, censor_round, expected_divergences, expected_events
from shared.errors import ConfigError, FilterwatchError

SWITCH_LEAD_S = 0.3  # censor rules change this long before a round starts
READY_TIMEOUT_S = 60.0


def probe_timeout(round_seconds: float) -> float:
    """The agents' one deadline per measurement: short enough that a dropped connection
    (which costs the whole timeout) ends well inside its round."""
    return max(1.5, min(8.0, round_seconds * 0.5))


def agent_jitter(round_seconds: float) -> float:
    """How late in its round an agent may start measuring: spreads the agents' work over
    the first fifth of the round (on a busy machine a burst of every agent at once costs
    timeouts), keeps each measurement clear of the next rule switch, and keeps the gap
    between an agent's measurements longer than the censors' hold (lab/censor.py)."""
    room = round_seconds - SWITCH_LEAD_S - probe_timeout(round_seconds) - 0.2
    return round(max(0.0, min(round_seconds * 0.2, room)), 3)


@dataclass(frozen=True, slots=True)
class RunPaths:
    root: Path

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def collector(self) -> Path:
        return self.root / "collector"

    @property
    def collector_config(self) -> Path:
        return self.collector / "collector.yaml"

    @property
    def database(self) -> Path:
        return self.collector / "filterwatch.sqlite3"

    @property
    def agents(self) -> Path:
        return self.root / "agents"

    @property
    def result(self) -> Path:
        return self.root / "result.json"

    def agent_dir(self, agent: AgentPlan) -> Path:
        return self.agents / agent.name.replace("/", "-").replace(" ", "_")


class Progress:
    """One line per step on standard error, with the time since the start."""

    def __init__(self, stream: TextIO, quiet: bool = False) -> None:
        self.stream = stream
        self.quiet = quiet
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:
        if not self.quiet:
            elapsed = time.monotonic() - self.started
            print(f"[lab {elapsed:5.1f}s] {message}", file=self.stream, flush=True)


class Lab:
    """One lab run from namespaces to score; ``await lab.close()`` stops everything."""

    def __init__(self, scenario: Scenario, paths: RunPaths, progress: Progress) -> None:
        self.scenario = scenario
        self.plan: LabPlan = make_plan(scenario)
        self.paths = paths
        self.progress = progress
        self.ns: Namespaces | None = None
        self.runners: list[web.AppRunner] = []
        self.dns_servers: list[servers.DnsServer] = []
        self.proxies: list[servers.TransparentProxy] = []
        self.router_states: dict[str, servers.RouterState] = {}
        self.collector: asyncio.subprocess.Process | None = None
        self.agents: dict[str, asyncio.subprocess.Process] = {}
        self.agent_ids: dict[str, AgentPlan] = {}
        self.applied_round = 0
        self.timeout_s = probe_timeout(scenario.round_seconds)
        self.hold_s = censor.hold_seconds(scenario.round_seconds)
        self.receiver = AlertReceiver()  # the webhook subscriber, in the lab's internet

    # --- building --------------------------------------------------------------------------

    async def build_network(self) -> Namespaces:
        """Namespaces, links, addresses, routes, servers and the round-1 censors."""
        for d in (
            self.paths.logs,
            self.paths.collector,
            self.paths.agents,
            self.paths.root / "home",
        ):
            d.mkdir(parents=True, exist_ok=True)
        servers.quiet_connection_errors(asyncio.get_running_loop())
        Namespaces.prepare_mounts()
        ns = self.ns = Namespaces()
        topo = await build(ns, self.plan)
        self.progress(
            f"built {len(topo.namespaces)} network namespaces: the internet, "
            f"{len(self.plan.isps)} ISP routers, {len(self.plan.agents)} agents"
        )
        tls = servers.make_tls(self.plan, self.paths.collector)
        self.runners = await servers.start_http(ns, self.plan, tls)
        await self.receiver.start(ns)
        public = servers.PublicResolver(self.plan)
        await public.start(ns, INTERNET_NS, PUBLIC_RESOLVER)
        self.dns_servers.append(public)
        for isp_plan, isp in zip(self.plan.isps, self.scenario.isps, strict=True):
            state = servers.RouterState(censor_round(isp, 1), self.plan.blockpage_ip)
            self.router_states[isp.name] = state
            resolver = servers.IspResolver(self.plan, state)
            await resolver.start(ns, isp_plan.netns, "0.0.0.0")
            self.dns_servers.append(resolver)
            proxy = servers.TransparentProxy(ns, isp_plan.netns, state)
            await proxy.start()
            self.proxies.append(proxy)
        await self.apply_round(1, first=True)
        self.progress("sites, resolvers, blockpage server and censors are up")
        return ns

    async def apply_round(self, round_no: int, *, first: bool = False) -> None:
        """Switch every censor (and the sites that are down) to ``round_no``'s state."""
        assert self.ns is not None
        changes: list[str] = []
        jobs = []
        for isp_plan, isp in zip(self.plan.isps, self.scenario.isps, strict=True):
            state = censor_round(isp, round_no)
            holder = self.router_states[isp.name]
            if not first and state == holder.current:
                continue
            if not first:
                changes.append(
                    _change(isp.name, state, censor_round(isp, round_no, glitches=False))
                )
            holder.current = state
            jobs.append(
                self.ns.nft_apply(
                    isp_plan.netns,
                    censor.router_nft(self.plan, isp_plan, isp, state, hold_s=self.hold_s),
                )
            )
            jobs.append(
                self.ns.iptables_apply(
                    isp_plan.netns,
                    censor.router_iptables(isp_plan, state, first=first, hold_s=self.hold_s),
                )
            )
        down_now = {s.host for s in self.scenario.sites if self.scenario.site_down(s, round_no)}
        down_before = {
            s.host for s in self.scenario.sites if self.scenario.site_down(s, self.applied_round)
        }
        if first or down_now != down_before:
            if not first:
                changes.append("down: " + (", ".join(sorted(down_now)) or "none"))
            jobs.append(
                self.ns.nft_apply(
                    INTERNET_NS, censor.internet_nft(self.plan, self.scenario, round_no)
                )
            )
        await asyncio.gather(*jobs)
        self.applied_round = round_no
        if changes:
            self.progress(f"round {round_no}: " + "; ".join(changes))

    # --- the collector and the agents --------------------------------------------------------

    def _env(self) -> dict[str, str]:
        home = self.paths.root / "home"
        # Only what the programs need: nothing of the caller's environment leaks into the
        # lab but the interpreter's module path, when one is set.
        extra = {k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ}
        return {
            **extra,
            "PATH": tool_path(),
            "HOME": str(home),
            "XDG_DATA_HOME": str(home / "data"),
            "XDG_CONFIG_HOME": str(home / "config"),
            "TMPDIR": str(home),
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
        }

    async def _spawn(
        self, netns: str, args: Sequence[str], log_name: str
    ) -> asyncio.subprocess.Process:
        assert self.ns is not None
        # A small local file, opened once per process start: handed to the child as is.
        log = open(self.paths.logs / log_name, "ab")  # noqa: SIM115, ASYNC230
        try:
            return await asyncio.create_subprocess_exec(
                *self.ns.exec_prefix(netns),
                sys.executable,
                "-m",
                "filterwatch",
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self._env(),
                start_new_session=True,
            )
        finally:
            log.close()

    async def _filterwatch(self, netns: str, args: Sequence[str], what: str) -> str:
        """Run one filterwatch command to completion in ``netns``; its standard output."""
        assert self.ns is not None
        proc = await asyncio.create_subprocess_exec(
            *self.ns.exec_prefix(netns),
            sys.executable,
            "-m",
            "filterwatch",
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self._env(),
            start_new_session=True,
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise LabError(
                f"{what} failed (exit {proc.returncode}): "
                + err.decode(errors="replace").strip()[-2000:]
            )
        return out.decode()

    def write_collector_files(self, ca_file: Path) -> None:
        c = self.paths.collector
        (c / "netdb.tsv").write_text(self.plan.netdb_tsv())
        targets = {self.scenario.country: [s.url for s in self.scenario.sites]}
        (c / "targets.yaml").write_text(json.dumps(targets, indent=2) + "\n")
        config = {
            "listen": {"host": COLLECTOR_ADDRESS, "port": COLLECTOR_PORT},
            "database": {"sqlite_path": str(self.paths.database)},
            "netdb_path": str(c / "netdb.tsv"),
            "targets_path": str(c / "targets.yaml"),
            "control": {
                "resolver": PUBLIC_RESOLVER,
                "ca_file": str(ca_file),
                "timeout_s": self.timeout_s,
            },
            "logging": {"json": True, "level": "info"},
            **self.receiver.collector_config(self.scenario.round_seconds),
        }
        self.paths.collector_config.write_text(json.dumps(config, indent=2) + "\n")

    async def start_collector(self) -> None:
        self.write_collector_files(self.paths.collector / "lab-ca.pem")
        self.collector = await self._spawn(
            INTERNET_NS,
            ["collector", "serve", "--config", str(self.paths.collector_config)],
            "collector.log",
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.collector.returncode is not None:
                raise LabError(
                    f"the collector exited at start; see {self.paths.logs / 'collector.log'}"
                )
            if await self._collector_healthy():
                self.progress(f"collector up (SQLite {self.paths.database.name})")
                return
            await asyncio.sleep(0.2)
        raise LabError(
            "the collector did not answer /healthz within 30s; "
            f"see {self.paths.logs / 'collector.log'}"
        )

    async def _collector_healthy(self) -> bool:
        assert self.ns is not None
        loop = asyncio.get_running_loop()
        sock = self.ns.make_socket(INTERNET_NS)
        try:
            async with asyncio.timeout(2):
                await loop.sock_connect(sock, (COLLECTOR_ADDRESS, COLLECTOR_PORT))
                await loop.sock_sendall(sock, b"GET /healthz HTTP/1.0\r\nHost: collector\r\n\r\n")
                answer = await loop.sock_recv(sock, 256)
            return answer.startswith(b"HTTP/1.") and b" 200 " in answer.split(b"\r\n", 1)[0] + b" "
        except (OSError, TimeoutError):
            return False
        finally:
            sock.close()

    def agent_config(self, agent: AgentPlan) -> dict[str, Any]:
        return {
            "collector_url": f"http://{COLLECTOR_ADDRESS}:{COLLECTOR_PORT}",
            "state_dir": str(self.paths.agent_dir(agent)),
            "interval_s": self.scenario.round_seconds,
            "jitter_s": agent_jitter(self.scenario.round_seconds),
            "shutdown_grace_s": 2,
            "probes": {
                "timeout_s": self.timeout_s,
                "resolver": agent.resolver,
                "system_resolver": False,
                "ca_file": str(self.paths.collector / "lab-ca.pem"),
            },
            "logging": {"json": True, "level": "info"},
        }

    async def enroll_agents(self) -> None:
        """One enrollment code for the country, traded by each agent from its own network."""
        agents = self.plan.agents
        out = await self._filterwatch(
            INTERNET_NS,
            [
                "collector",
                "enroll-code",
                "--config",
                str(self.paths.collector_config),
                "--country",
                self.scenario.country,
                "--uses",
                str(len(agents)),
                "--expires",
                "1h",
            ],
            "collector enroll-code",
        )
        code = out.strip().splitlines()[0].strip()
        limit = asyncio.Semaphore(4)

        async def enroll(agent: AgentPlan) -> None:
            directory = self.paths.agent_dir(agent)
            directory.mkdir(parents=True, exist_ok=True)
            config = directory / "agent.yaml"
            config.write_text(json.dumps(self.agent_config(agent), indent=2) + "\n")
            async with limit:
                await self._filterwatch(
                    agent.netns,
                    [
                        "agent",
                        "enroll",
                        "--collector",
                        f"http://{COLLECTOR_ADDRESS}:{COLLECTOR_PORT}",
                        "--code",
                        code,
                        "--config",
                        str(config),
                        "--state-dir",
                        str(directory),
                    ],
                    f"agent enroll ({agent.name})",
                )

        await asyncio.gather(*(enroll(a) for a in agents))
        for agent in agents:
            self.agent_ids[load_credentials(self.paths.agent_dir(agent)).agent_id] = agent
        self.progress(f"enrolled {len(agents)} agents with one code, as volunteers do")

    async def start_agents(self) -> None:
        for agent in self.plan.agents:
            directory = self.paths.agent_dir(agent)
            self.agents[agent.name] = await self._spawn(
                agent.netns,
                ["agent", "run", "--config", str(directory / "agent.yaml")],
                f"agent-{directory.name}.log",
            )
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        """Until every agent has measured and uploaded once (its status file says so)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        pending = set(self.agents)
        while pending:
            for name in list(pending):
                proc = self.agents[name]
                if proc.returncode is not None:
                    raise LabError(
                        f"agent {name} exited (status {proc.returncode}); see {self.paths.logs}"
                    )
                agent = next(a for a in self.plan.agents if a.name == name)
                status = await asyncio.to_thread(load_status, self.paths.agent_dir(agent))
                if status.last_upload_at is not None:
                    pending.discard(name)
            if not pending:
                break
            if time.monotonic() > deadline:
                raise LabError(
                    f"agents {', '.join(sorted(pending))} did not upload "
                    f"within {READY_TIMEOUT_S:.0f}s; "
                    f"see {self.paths.logs}"
                )
            await asyncio.sleep(0.25)
        self.progress(f"all {len(self.agents)} agents measured and uploaded a warm-up round")

    # --- rounds ------------------------------------------------------------------------------

    async def run_rounds(self) -> float:
        """Drive rounds 1..N; returns the start of round 1 (a multiple of round_seconds)."""
        rs = self.scenario.round_seconds
        t0 = (math.floor((time.time() + 1.0) / rs) + 1) * rs
        self.progress(
            f"round 1 of {self.scenario.rounds} starts at {report.clock(t0)} "
            f"({self.scenario.round_seconds:g}s rounds)"
        )
        for r in range(2, self.scenario.rounds + 1):
            await _sleep_until(t0 + (r - 1) * rs - SWITCH_LEAD_S)
            await self.apply_round(r)
        await _sleep_until(t0 + self.scenario.rounds * rs)
        return t0

    async def wait_uploads(self, t0: float) -> int:
        """Until every measurement of rounds 1..N is stored, or a round's time has passed."""
        end = t0 + self.scenario.rounds * self.scenario.round_seconds
        wanted = len(self.plan.agents) * len(self.plan.sites) * self.scenario.rounds
        deadline = time.monotonic() + self.scenario.round_seconds + self.timeout_s + 5
        stored = 0
        while time.monotonic() < deadline:
            stored = await asyncio.to_thread(self._count, t0, end)
            if stored >= wanted:
                break
            await asyncio.sleep(0.5)
        self.progress(
            f"{stored} of {wanted} measurements of rounds 1-{self.scenario.rounds} are stored"
        )
        return stored

    def _count(self, t0: float, end: float) -> int:
        with contextlib.closing(
            sqlite3.connect(f"file:{self.paths.database}?mode=ro", uri=True, timeout=10)
        ) as db:
            row = db.execute(
                "SELECT count(*) FROM measurements WHERE measured_at >= ? AND measured_at < ?",
                (t0, end),
            ).fetchone()
        return int(row[0])

    def measurement_rows(self, t0: float) -> list[MeasurementRow]:
        end = t0 + self.scenario.rounds * self.scenario.round_seconds
        with contextlib.closing(
            sqlite3.connect(f"file:{self.paths.database}?mode=ro", uri=True, timeout=10)
        ) as db:
            found = db.execute(
                "SELECT agent_id, url, measured_at, blocking, accessible FROM measurements "
                "WHERE measured_at >= ? AND measured_at < ?",
                (t0, end),
            ).fetchall()
        rows = []
        for agent_id, url, measured_at, blocking, accessible in found:
            agent = self.agent_ids.get(agent_id)
            if agent is None:
                continue
            rows.append(
                MeasurementRow(
                    agent=agent.name,
                    isp=agent.isp,
                    vpn=agent.vpn,
                    url=url,
                    measured_at=float(measured_at),
                    blocking=blocking,
                    accessible=None if accessible is None else bool(accessible),
                )
            )
        return rows

    async def leaks(self, t0: float) -> dict[str, Any]:
        """The collector's answer to ``filterwatch collector leaks --json`` for the run."""
        end = t0 + self.scenario.rounds * self.scenario.round_seconds
        out = await self._filterwatch(
            INTERNET_NS,
            [
                "collector",
                "leaks",
                "--json",
                "--config",
                str(self.paths.collector_config),
                "--bucket",
                f"{self.scenario.round_seconds:g}s",
                "--since",
                report.iso(t0),
                "--until",
                report.iso(end),
                "--cc",
                self.scenario.country,
            ],
            "collector leaks",
        )
        doc = json.loads(out)
        if not isinstance(doc, dict):
            raise LabError("collector leaks --json did not print a JSON object")
        return doc

    # --- stopping ----------------------------------------------------------------------------

    async def stop_agents(self) -> None:
        await _stop_all(list(self.agents.values()))

    async def close(self) -> None:
        await self.stop_agents()
        if self.collector is not None:
            await _stop_all([self.collector])
        for d in self.dns_servers:
            d.close()
        for p in self.proxies:
            p.close()
        for runner in self.runners:
            await runner.cleanup()
        await self.receiver.close()
        if self.ns is not None:
            self.ns.close()


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


async def _stop_all(procs: list[asyncio.subprocess.Process], grace_s: float = 5.0) -> None:
    live = [p for p in procs if p.returncode is None]
    for p in live:
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(grace_s):
            await asyncio.gather(*(p.wait() for p in live))
    except TimeoutError:
        for p in live:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
        await asyncio.gather(*(p.wait() for p in live))


async def _sleep_until(when: float) -> None:
    delay = when - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


async def run_lab(
    scenario: Scenario, scenario_path: Path, paths: RunPaths, progress: Progress
) -> dict[str, Any]:
    """The whole run; returns the result document (also written to result.json)."""
    started = time.time()
    load_before = os.getloadavg()[0]
    lab = Lab(scenario, paths, progress)
    try:
        await lab.build_network()
        await lab.start_collector()
        await lab.enroll_agents()
        await lab.start_agents()
        setup_s = time.time() - started
        t0 = await lab.run_rounds()
        await lab.wait_uploads(t0)
        await lab.stop_agents()
        found = await lab.leaks(t0)
        rows = await asyncio.to_thread(lab.measurement_rows, t0)
    finally:
        await lab.close()
    expected = expected_events(scenario)
    divergences = expected_divergences(scenario)
    result = score(scenario, expected, found, rows, t0, divergences)
    doc: dict[str, Any] = {
        "scenario": scenario.name,
        "scenario_file": str(scenario_path),
        **result.to_json(),
        "leaks": found.get("leaks", []),
        "uncorroborated": found.get("uncorroborated", []),
        "divergences": found.get("divergences", []),
        "expected_leaks": [
            {"isp": e.isp, "asn": e.asn, "domain": e.domain, "rounds": [e.start_round, e.end_round]}
            for e in expected
            if e.corroborated
        ],
        "expected_uncorroborated": [
            {"isp": e.isp, "asn": e.asn, "domain": e.domain, "rounds": [e.start_round, e.end_round]}
            for e in expected
            if not e.corroborated
        ],
        "expected_divergences": [divergence_json(d) for d in divergences],
        "round_seconds": scenario.round_seconds,
        "rounds": scenario.rounds,
        "round_1_start": report.iso(t0),
        "isps": [
            {"name": i.name, "asn": i.asn, "agents": i.agents, "vpn_agents": i.vpn_agents}
            for i in scenario.isps
        ],
        "sites": [s.url for s in scenario.sites],
        "measurements_expected": len(lab.plan.agents) * len(scenario.sites) * scenario.rounds,
        "setup_seconds": round(setup_s, 1),
        # The lab runs on the wall clock: on a machine this busy, probes time out.
        "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "total_seconds": round(time.time() - started, 1),
    }
    doc["alerts"] = score_alerts(scenario, expected, result.leaks.matches, lab.receiver.alerts, t0)
    paths.result.write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lab.orchestrator")
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--scenario", type=Path, required=True)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--demo", action="store_true")
    args = parser.parse_args(argv)
    progress = Progress(sys.stderr)
    try:
        scenario = load_scenario(args.scenario)
    except ConfigError as exc:
        print(f"filterwatch: {exc}", file=sys.stderr)
        return 2
    paths = RunPaths(args.run_dir)

    async def guarded() -> dict[str, Any]:
        # asyncio.run turns SIGINT into a clean cancellation of this task; SIGTERM takes
        # the same path, so that a stopped run still stops its agents and collector.
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, os.kill, os.getpid(), signal.SIGINT)
        return await run_lab(scenario, args.scenario, paths, progress)

    try:
        doc = asyncio.run(guarded())
    except KeyboardInterrupt:
        print(
            "filterwatch lab: interrupted; everything the lab started is stopped", file=sys.stderr
        )
        return 130
    except (FilterwatchError, OSError) as exc:
        print(f"filterwatch lab: {exc}", file=sys.stderr)
        return 1
    if args.keep:
        doc["run_dir"] = str(paths.root)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(report.render(doc, demo=args.demo, kept=paths.root if args.keep else None))
        if doc.get("alerts"):
            print(alerts_text(doc))
    return 0 if doc["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
