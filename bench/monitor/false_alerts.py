"""False alerts and alert latency of the monitor on the lab's scenarios, simulated.

    .venv/bin/python -m bench.monitor.false_alerts --runs 2000 --seed 1
    .venv/bin/python -m bench.monitor.false_alerts --runs 200 --scenario partial-then-lapse
    .venv/bin/python -m bench.monitor.false_alerts --scenario probabilistic-blocking --run 17 -v

What the lab's monitor sees, without the lab's network: for each scenario file
(lab/scenarios/*.yaml, read with lab.scenario and lab.plan, so its ISPs, agents, rounds,
rates, glitches, rolling blocks and down sites are the real ones), each agent measures
every site once per round, each active censor method blocking each measurement with its
rate, drawn independently (lab.truth's model); VPN agents see the internet. As in the lab
(lab/orchestrator.py), the agents measure for two or three rounds before round 1 (the
censors as in round 1), rounds are the monitor's buckets, and an agent's results of a
round arrive together, 0.1-0.45 of a round into it. The monitor passes every
lab.alerts.MONITOR_INTERVAL_S, and each pass that has new data analyses, per domain that
shows a difference, every bucket so far (the bucket still filling included) with the
collector's own ``analyse``: exactly what the monitor's pass computes.

Counted per scenario, over ``--runs`` draws:

- *false alert*: a run in which some pass shows a lapse (an alert goes out when it is first
  seen; a later retraction does not unsend it) that is not a true leak: another ISP or
  domain, a window that does not overlap the true one (one round of slack each side, as
  lab.alerts scores it), or a lapse shown before the true leak began;
- *latency*: per true leak (lab.truth), the rounds from its start to the first pass that
  shows it; *late* when more than two, *missed* when no pass does;
- *final*: the analysis of rounds 1..N once the run is over (what ``collector leaks``
  answers and tests/lab scores): runs whose leaks, windows or divergences are not exactly
  the truth's (windows within one round at each end, two against a partial baseline).

Each run draws from its own seed (``--seed`` and the run's number), so any run can be
looked at again alone with ``--run``. Pure computation: no store, no network.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.analysis import AnalysisParams, BucketCount, LeakEvent, analyse
from lab.alerts import MONITOR_INTERVAL_S
from lab.plan import make_plan
from lab.scenario import BUILTIN_DIR, Method, Scenario, load_scenario
from lab.score import (
    found_divergences,
    match_divergences,
    match_events,
    to_rounds,
)
from lab.truth import (
    ExpectedEvent,
    blocking_methods,
    expected_divergences,
    expected_events,
    partially_blocked,
)

ROOT = Path(__file__).resolve().parents[2]

T0 = 1_800_000_000.0  # round 1 starts here (a multiple of every lab round length)
VERDICT: dict[Method, str] = {
    "dns_inject": "dns",
    "ip_block": "tcp_ip",
    "sni_reset": "tls",
    "http_blockpage": "blockpage",
}
ARRIVAL = (0.1, 0.45)  # when in its round an agent's results arrive, as a share of it
WARMUP = (2, 3)  # rounds the agents measure before round 1


@dataclass(frozen=True, slots=True)
class Measurement:
    arrival: float
    agent: str
    asn: int
    network_name: str
    domain: str
    bucket: float
    verdict: str


def draw_run(scenario: Scenario, rng: random.Random) -> list[Measurement]:
    """Every measurement of one lab run of ``scenario``, in order of arrival."""
    plan = make_plan(scenario)
    rs = scenario.round_seconds
    warmup = rng.choice(WARMUP)
    out: list[Measurement] = []
    for isp, isp_plan in zip(scenario.isps, plan.isps, strict=True):
        for agent in isp_plan.agents:
            for r in range(1 - warmup, scenario.rounds + 1):
                state = max(r, 1)  # before round 1 the censors are as in round 1
                start = T0 + (r - 1) * rs
                arrival = start + rng.uniform(*ARRIVAL) * rs
                for site in scenario.sites:
                    verdict = "ok"
                    if r >= 1 and scenario.site_down(site, r):
                        verdict = "site_down"
                    elif not agent.vpn:
                        for method in blocking_methods(isp, site, state):
                            if rng.random() < isp.censor.rates.of(method):
                                verdict = VERDICT[method]
                                break
                    out.append(
                        Measurement(
                            arrival, agent.name, isp.asn, isp.name, site.host, start, verdict
                        )
                    )
    out.sort(key=lambda m: (m.arrival, m.agent, m.domain))
    return out


class Buckets:
    """The counts so far per (domain, asn, bucket), as the store's SQL gives them."""

    def __init__(self, cc: str) -> None:
        self.cc = cc
        self._counts: dict[tuple[str, int, float], dict[str, int]] = {}
        self._agents: dict[tuple[str, int, float], set[str]] = {}
        self._ok: dict[tuple[str, int, float], set[str]] = {}
        self._names: dict[int, str] = {}
        self._built: dict[tuple[str, int, float], BucketCount] = {}

    def add(self, m: Measurement) -> None:
        key = (m.domain, m.asn, m.bucket)
        counts = self._counts.setdefault(key, {})
        counts[m.verdict] = counts.get(m.verdict, 0) + 1
        self._agents.setdefault(key, set()).add(m.agent)
        if m.verdict == "ok":
            self._ok.setdefault(key, set()).add(m.agent)
        self._names[m.asn] = m.network_name
        self._built.pop(key, None)

    def _bucket(self, key: tuple[str, int, float]) -> BucketCount:
        built = self._built.get(key)
        if built is None:
            domain, asn, start = key
            ok = tuple(sorted(self._ok.get(key, ())))
            built = self._built[key] = BucketCount(
                cc=self.cc,
                asn=asn,
                network_name=self._names[asn],
                domain=domain,
                bucket_start=start,
                counts=dict(self._counts[key]),
                agents=len(self._agents[key]),
                accessible_agent_ids=ok,
                example_ids=(f"{ok[0]}@{start}",) if ok else (),
            )
        return built

    def differs(self, domain: str) -> bool:
        """Whether any bucket of ``domain`` shows a difference (an ISP with both verdicts,
        or ISPs that do not agree): the monitor analyses only such domains."""
        states: dict[float, set[str]] = {}
        for (d, _, start), counts in self._counts.items():
            if d != domain:
                continue
            ok = counts.get("ok", 0)
            blocked = sum(n for v, n in counts.items() if v not in ("ok", "site_down"))
            if ok and blocked:
                return True
            if ok or blocked:
                states.setdefault(start, set()).add("ok" if ok else "blocked")
        return any(len(s) > 1 for s in states.values())

    def of(self, domain: str, since: float = -math.inf) -> list[BucketCount]:
        return [self._bucket(k) for k in self._counts if k[0] == domain and k[2] >= since]


@dataclass(slots=True)
class RunResult:
    false_alerts: list[dict[str, Any]] = field(default_factory=list)
    latencies: dict[tuple[str, int], float | None] = field(default_factory=dict)
    final_problems: list[str] = field(default_factory=list)


def _rounds_of(event: LeakEvent, rs: float, current_round: int) -> tuple[int, int]:
    start = math.floor((event.start - T0) / rs + 1e-6) + 1
    if event.end is None:
        return start, current_round
    return start, max(start, math.ceil((event.end - T0) / rs - 1e-6))


def _true_leak(
    event: LeakEvent, domain: str, rounds: tuple[int, int], expected: Sequence[ExpectedEvent]
) -> ExpectedEvent | None:
    for e in expected:
        if (
            e.corroborated
            and e.asn == event.asn
            and e.domain == domain
            and rounds[0] <= e.end_round + 1
            and rounds[1] >= e.start_round - 1
        ):
            return e
    return None


def simulate(
    scenario: Scenario, rng: random.Random, params: AnalysisParams, *, verbose: bool = False
) -> RunResult:
    """One run: the monitor's passes over the data as it arrives, and the final analysis."""
    rs = scenario.round_seconds
    expected = expected_events(scenario)
    result = RunResult()
    for e in expected:
        if e.corroborated:
            result.latencies[(e.domain, e.asn)] = None
    measurements = draw_run(scenario, rng)
    buckets = Buckets(scenario.country)
    domains = sorted({s.host for s in scenario.sites})
    i = 0
    while i < len(measurements):
        # everything that has arrived by the next pass
        pass_at = math.ceil(measurements[i].arrival / MONITOR_INTERVAL_S) * MONITOR_INTERVAL_S
        while i < len(measurements) and measurements[i].arrival <= pass_at:
            buckets.add(measurements[i])
            i += 1
        current = math.floor((pass_at - T0) / rs) + 1
        for domain in domains:
            if not buckets.differs(domain):
                continue
            report = analyse(buckets.of(domain), rs, params)
            for event in report.leaks:
                rounds = _rounds_of(event, rs, current)
                true = _true_leak(event, domain, rounds, expected)
                if true is None or pass_at < T0 + (true.start_round - 1) * rs:
                    alert = {
                        "asn": event.asn,
                        "domain": domain,
                        "rounds": list(rounds),
                        "seen_in_round": current,
                    }
                    if all(
                        (a["asn"], a["domain"], a["rounds"])
                        != (alert["asn"], alert["domain"], alert["rounds"])
                        for a in result.false_alerts
                    ):
                        result.false_alerts.append(alert)
                        if verbose:
                            print(f"  false alert at round {current}: {alert}")
                    continue
                key = (true.domain, true.asn)
                if result.latencies.get(key) is None:
                    start = T0 + (true.start_round - 1) * rs
                    result.latencies[key] = (pass_at - start) / rs
                    if verbose:
                        print(f"  alert at round {current}: {key} {result.latencies[key]:.2f}")
    result.final_problems = _final(scenario, buckets, params, expected)
    return result


def _final(
    scenario: Scenario,
    buckets: Buckets,
    params: AnalysisParams,
    expected: Sequence[ExpectedEvent],
) -> list[str]:
    """What is wrong with the analysis of rounds 1..N (``collector leaks`` in the lab)."""
    rs = scenario.round_seconds
    everything = [b for s in scenario.sites for b in buckets.of(s.host, since=T0)]
    report = analyse(everything, rs, params).to_json(with_isps=False)
    found = to_rounds(report["leaks"], T0, rs, scenario.rounds)
    matching = match_events([e for e in expected if e.corroborated], found)
    problems = [f"missed {m.isp} {m.domain} {m.start_round}-{m.end_round}" for m in matching.missed]
    problems += [f"false leak AS{f.asn} {f.domain} {f.start_round}" for f in matching.unmatched]
    for m in matching.matches:
        isp = next(i for i in scenario.isps if i.asn == m.expected.asn)
        site = next(s for s in scenario.sites if s.host == m.expected.domain)
        tolerance = 2 if partially_blocked(isp, site, max(1, m.expected.start_round - 1)) else 1
        if abs(m.start_error) > tolerance or abs(m.end_error) > tolerance:
            problems.append(
                f"window of {m.expected.isp} {m.expected.domain}: start {m.start_error:+d},"
                f" end {m.end_error:+d} rounds"
            )
    divergences = match_divergences(
        expected_divergences(scenario), found_divergences(report["divergences"])
    )
    problems += [f"divergence missed {d.isp} {d.domain} {d.kind}" for d in divergences.missed]
    problems += [f"divergence wrong AS{d.asn} {d.domain} {d.kind}" for d in divergences.wrong]
    return problems


def _quantiles(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)

    def q(share: float) -> float:
        return round(ordered[min(len(ordered) - 1, math.floor(share * len(ordered)))], 2)

    return {
        "min": round(ordered[0], 2),
        "median": round(statistics.median(ordered), 2),
        "p90": q(0.9),
        "p99": q(0.99),
        "max": round(ordered[-1], 2),
    }


def run_scenario(
    path: Path, runs: Sequence[int], seed: int, params: AnalysisParams, verbose: bool
) -> dict[str, Any]:
    scenario = load_scenario(path)
    started = time.perf_counter()
    false_runs: list[int] = []
    final_runs: list[int] = []
    final_kinds: Counter[str] = Counter()
    latencies: dict[str, list[float]] = {}
    late: Counter[str] = Counter()
    late_runs: list[int] = []
    missed: Counter[str] = Counter()
    examples: list[dict[str, Any]] = []
    for run in runs:
        rng = random.Random(f"{seed}/{scenario.name}/{run}")
        if verbose:
            print(f"{scenario.name} run {run}:")
        result = simulate(scenario, rng, params, verbose=verbose)
        if result.false_alerts:
            false_runs.append(run)
            if len(examples) < 5:
                examples.append({"run": run, "alerts": result.false_alerts})
        if result.final_problems:
            final_runs.append(run)
            final_kinds.update(p.split(" AS")[0].split(" of ")[0] for p in result.final_problems)
            if verbose:
                print(f"  final: {result.final_problems}")
        for (domain, asn), latency in result.latencies.items():
            name = f"AS{asn} {domain}"
            if latency is None:
                missed[name] += 1
                continue
            latencies.setdefault(name, []).append(latency)
            if latency > 2:
                late[name] += 1
                late_runs.append(run)
    leaks = {
        name: {
            "alerted": len(values),
            "late": late[name],
            "missed": missed[name],
            "rounds_to_alert": _quantiles(values) if values else None,
        }
        for name, values in sorted(latencies.items())
    }
    for name in missed:
        leaks.setdefault(
            name, {"alerted": 0, "late": 0, "missed": missed[name], "rounds_to_alert": None}
        )
    return {
        "scenario": scenario.name,
        "runs": len(runs),
        "false_alert_runs": len(false_runs),
        "false_alert_run_ids": false_runs[:20],
        "false_alert_examples": examples,
        "leaks": leaks,
        "late_run_ids": late_runs[:20],
        "final_wrong_runs": len(final_runs),
        "final_wrong_run_ids": final_runs[:20],
        "final_problems": dict(final_kinds),
        "seconds": round(time.perf_counter() - started, 1),
    }


def _line(doc: dict[str, Any]) -> str:
    parts = [
        f"{doc['scenario']:<24} runs {doc['runs']:>5}",
        f"false alerts {doc['false_alert_runs']:>3}",
        f"final wrong {doc['final_wrong_runs']:>3}",
    ]
    for name, leak in doc["leaks"].items():
        q = leak["rounds_to_alert"]
        spread = "" if q is None else f" rounds {q['min']}/{q['median']}/{q['p99']}/{q['max']}"
        parts.append(f"{name}: late {leak['late']} missed {leak['missed']}{spread}")
    parts.append(f"{doc['seconds']} s")
    return " | ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2000, help="draws per scenario")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--scenario",
        action="append",
        help="a scenario name or file (repeatable; default: every shipped scenario)",
    )
    parser.add_argument("--run", type=int, help="only this run (to look at one draw again)")
    parser.add_argument("--json", type=Path, help="also write the results there")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    names = args.scenario or sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))
    paths = [Path(n) if n.endswith(".yaml") else BUILTIN_DIR / f"{n}.yaml" for n in names]
    runs = [args.run] if args.run is not None else list(range(args.runs))
    params = AnalysisParams()
    print(
        f"lines: scenario | runs with a false alert | runs whose final analysis is wrong |"
        f" per true leak: late (> 2 rounds), missed, rounds to alert min/median/p99/max"
        f"  (seed {args.seed})"
    )
    docs = []
    for path in paths:
        doc = run_scenario(path, runs, args.seed, params, args.verbose)
        docs.append(doc)
        print(_line(doc), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"seed": args.seed, "scenarios": docs}, indent=2) + "\n")
    bad = sum(d["false_alert_runs"] + d["final_wrong_runs"] for d in docs)
    bad += sum(leak["late"] + leak["missed"] for d in docs for leak in d["leaks"].values())
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
