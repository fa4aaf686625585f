"""The lab's inner orchestrator: runs inside the sandbox of ``lab.netns.sandbox_command``.

``python -m lab.orchestrator --run-dir D --scenario F`` builds the namespaces, the servers
and the censors, starts a real ``filterwatch collector serve`` in the lab internet,
enrolls real ``filterwatch agent run`` processes the way volunteers do (``collector
enroll-code`` then ``agent enroll``), waits until every agent has uploaded once, then
drives the rounds on the lab's clock, switching censor rules just before each round
boundary. At the end it asks the collector for its leak events (``collector leaks
--json``) and reads every stored verdict through the collector's store opened read-only,
scores them against the ground truth, writes ``result.json`` and prints the report.

The network lives in ``lab.network``, the collector and the agents in ``lab.programs``;
here is what ties them to the lab's clock and to the score.

It is PID 1 of the lab's PID namespace: when it exits, every process of the lab dies
with it and the namespaces vanish.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from collector.store.base import StoredVerdict
from lab import report
from lab.alerts import alerts_text, score_alerts
from lab.netns import LabError, Namespaces
from lab.network import LabNetwork
from lab.plan import AgentPlan, LabPlan
from lab.programs import READY_TIMEOUT_S, LabAgents, LabCollector, Launcher, RunPaths
from lab.scenario import Scenario, load_scenario
from lab.score import MeasurementRow, divergence_json, score
from lab.truth import ExpectedEvent, expected_divergences, expected_events
from shared.errors import ConfigError, FilterwatchError

SWITCH_LEAD_S = 0.3  # censor rules change this long before a round starts
# Rounds of every agent the collector holds before round 1. With round 1 they are the three
# buckets of blocking habit a lapse needs (docs/analysis.md, ``baseline_min_blocking``), so
# a leak that starts in round 2 can be alerted within two rounds. An agent's first round
# comes at once and the next at the following boundary, unless the first overran it: then
# a bucket is empty and, without this wait, round 2's leak had only two buckets behind it.
HISTORY_ROUNDS = 2


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
    """One lab run: its network, its collector and its agents, and the rounds on the lab's
    clock; ``await lab.close()`` stops everything."""

    def __init__(self, scenario: Scenario, paths: RunPaths, progress: Progress) -> None:
        self.scenario = scenario
        self.paths = paths
        self.progress = progress
        self.network = LabNetwork(scenario, paths.collector, progress)
        self.plan: LabPlan = self.network.plan
        self.timeout_s = probe_timeout(scenario.round_seconds)
        launcher = Launcher(self.network, paths)
        self.collector = LabCollector(launcher, paths, scenario, progress)
        self.agents = LabAgents(
            launcher,
            paths,
            progress,
            interval_s=scenario.round_seconds,
            jitter_s=agent_jitter(scenario.round_seconds),
            timeout_s=self.timeout_s,
        )

    @property
    def hold_s(self) -> float:
        """How long the censors keep a flow blocked (lab/censor.py)."""
        return self.network.hold_s

    async def build_network(self) -> Namespaces:
        """Namespaces, links, addresses, routes, servers and the round-1 censors."""
        self.paths.make()
        return await self.network.build()

    async def start_programs(self) -> None:
        """The collector, then the agents, enrolled with one code as volunteers are, until
        each has measured and uploaded once."""
        alerting = self.network.receiver.collector_config(self.scenario.round_seconds)
        await self.collector.start(timeout_s=self.timeout_s, alerting=alerting)
        await self.agents.enroll(await self.collector.enroll_code(uses=len(self.plan.agents)))
        await self.agents.start()
        await self.wait_history()

    async def wait_history(self) -> None:
        """Until the collector holds ``HISTORY_ROUNDS`` buckets of every agent's round (each
        site measured), so that round 1 is not the start of an ISP's history."""
        rs = self.scenario.round_seconds
        sites = len(self.plan.sites)
        deadline = time.monotonic() + HISTORY_ROUNDS * rs + READY_TIMEOUT_S
        while True:
            stored = await self.collector.verdicts(0.0, time.time() + rs)
            per_bucket = Counter((v.agent_id, math.floor(v.measured_at / rs)) for v in stored)
            rounds = Counter(agent_id for (agent_id, _), n in per_bucket.items() if n >= sites)
            short = sorted(
                agent.name for a, agent in self.agents.by_id.items() if rounds[a] < HISTORY_ROUNDS
            )
            if not short:
                break
            if time.monotonic() > deadline:
                raise LabError(
                    f"agents {', '.join(short)} did not upload {HISTORY_ROUNDS} rounds "
                    f"in time; see {self.paths.logs}"
                )
            await asyncio.sleep(0.25)
        self.progress(f"the collector holds {HISTORY_ROUNDS} rounds of every agent before round 1")

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
            await self.network.apply_round(r)
        await _sleep_until(t0 + self.scenario.rounds * rs)
        return t0

    def rounds_end(self, t0: float) -> float:
        """The end of the last round of a run whose round 1 starts at ``t0``."""
        return t0 + self.scenario.rounds * self.scenario.round_seconds

    async def wait_uploads(self, t0: float) -> int:
        """Until every measurement of rounds 1..N is stored, or a round's time has passed."""
        end = self.rounds_end(t0)
        wanted = len(self.plan.agents) * len(self.plan.sites) * self.scenario.rounds
        deadline = time.monotonic() + self.scenario.round_seconds + self.timeout_s + 5
        stored = 0
        while time.monotonic() < deadline:
            stored = len(await self.collector.verdicts(t0, end))
            if stored >= wanted:
                break
            await asyncio.sleep(0.5)
        self.progress(
            f"{stored} of {wanted} measurements of rounds 1-{self.scenario.rounds} are stored"
        )
        return stored

    async def measurement_rows(self, t0: float) -> list[MeasurementRow]:
        """The stored verdicts of rounds 1..N, as scoring reads them."""
        stored = await self.collector.verdicts(t0, self.rounds_end(t0))
        return measurement_rows(stored, self.agents.by_id)

    async def leaks(self, t0: float) -> dict[str, Any]:
        """The collector's leak events of rounds 1..N (``collector leaks --json``)."""
        return await self.collector.leaks(t0, self.rounds_end(t0))

    async def close(self) -> None:
        await self.agents.stop()
        await self.collector.stop()
        await self.network.close()


def measurement_rows(
    stored: Iterable[StoredVerdict], agents: Mapping[str, AgentPlan]
) -> list[MeasurementRow]:
    """What scoring needs of each stored verdict of the lab's own agents."""
    return [
        MeasurementRow(
            agent.name, agent.isp, agent.vpn, v.url, v.measured_at, v.blocking, v.accessible
        )
        for v in stored
        if (agent := agents.get(v.agent_id)) is not None
    ]


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
        await lab.start_programs()
        setup_s = time.time() - started
        t0 = await lab.run_rounds()
        await lab.wait_uploads(t0)
        await lab.agents.stop()
        found = await lab.leaks(t0)
        rows = await lab.measurement_rows(t0)
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
        "expected_leaks": [_expected_json(e) for e in expected if e.corroborated],
        "expected_uncorroborated": [_expected_json(e) for e in expected if not e.corroborated],
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
    doc["alerts"] = score_alerts(
        scenario, expected, result.leaks.matches, lab.network.receiver.alerts, t0
    )
    paths.result.write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def _expected_json(e: ExpectedEvent) -> dict[str, Any]:
    return {"isp": e.isp, "asn": e.asn, "domain": e.domain, "rounds": [e.start_round, e.end_round]}


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
