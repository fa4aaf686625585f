"""The lab's report for people: what the collector found, what was true, the score. Pure."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def iso(epoch: float) -> str:
    """``2013-09-16T10:00:05Z`` (whole seconds: the lab's rounds start on whole seconds)."""
    return datetime.fromtimestamp(math.floor(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def clock(epoch: float) -> str:
    return datetime.fromtimestamp(math.floor(epoch), UTC).strftime("%H:%M:%SZ")


def _short_time(text: str | None) -> str:
    if text is None:
        return "the end of the run (still open)"
    return text.split("T", 1)[-1] if "T" in text else text


def _round_of(text: str, start: str, round_seconds: float, *, end: bool) -> int:
    t = datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    t0 = datetime.fromisoformat(start.replace("Z", "+00:00")).timestamp()
    if end:
        return math.ceil((t - t0) / round_seconds - 1e-6)
    return math.floor((t - t0) / round_seconds + 1e-6) + 1


def _and(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _rounds_words(event: dict[str, Any], doc: dict[str, Any]) -> str:
    """An event's window in the run's rounds: "rounds 4-8", or open-ended."""
    start_round = _round_of(event["start"], doc["round_1_start"], doc["round_seconds"], end=False)
    if event.get("end") is None:
        return f"from round {start_round} to the end of the run"
    end_round = _round_of(event["end"], doc["round_1_start"], doc["round_seconds"], end=True)
    return f"rounds {start_round}-{end_round}"


def _event_line(event: dict[str, Any], doc: dict[str, Any]) -> str:
    rounds = _rounds_words(event, doc)
    confidence = event.get("confidence")
    conf = f", confidence {confidence:.2f}" if isinstance(confidence, int | float) else ""
    return (
        f"{event.get('network_name') or 'AS' + str(event['asn'])} (AS{event['asn']}) let through "
        f"{_and(list(event['domains']))} from {_short_time(event['start'])} to "
        f"{_short_time(event.get('end'))} ({rounds}), seen by {event.get('agents', '?')} "
        f"distinct agent(s){conf}"
    )


_KIND_WORDS = {
    "unfiltered": "has never filtered {d}",
    "lagging": "lagged behind the country in blocking {d}",
    "partial": "blocks {d} only part of the time",
}


def _divergence_line(event: dict[str, Any], doc: dict[str, Any]) -> str:
    name = event.get("network_name") or "AS" + str(event["asn"])
    kind = str(event.get("kind"))
    words = _KIND_WORDS.get(kind, f"differs ({kind}) on {{d}}")
    share = event.get("blocked_share")
    detail = (
        f", blocked in {share * 100:.0f}% of measurements"
        if kind == "partial" and isinstance(share, int | float)
        else ""
    )
    blocking, measured = event.get("isps_blocking"), event.get("isps_measured")
    others = (
        f", which {blocking} of {measured} other ISPs block"
        if isinstance(blocking, int) and isinstance(measured, int)
        else ""
    )
    rounds = _rounds_words(event, doc)
    return (
        f"{kind.upper()}: {name} (AS{event['asn']}) "
        + words.format(d=_and(list(event["domains"])))
        + f"{others}{detail} ({rounds})"
    )


def _expected_divergence_line(e: dict[str, Any]) -> str:
    d = e["domain"]
    what = {
        "unfiltered": f"never filters {d}",
        "lagging": f"lags behind the country in blocking {d}",
        "partial": f"blocks {d} only {e['blocked_share'] * 100:.0f}% of the time",
    }.get(e["kind"], f"differs on {d}")
    return (
        f"  {e['isp']} (AS{e['asn']}) {what} in rounds "
        f"{e['rounds'][0]}-{e['rounds'][1]}: expected as {e['kind']}"
    )


def _missing(doc: dict[str, Any]) -> str:
    wanted = doc.get("measurements_expected")
    if not wanted or doc["measurements_scored"] >= wanted:
        return ""
    return f" ({wanted - doc['measurements_scored']} of {wanted} never arrived)"


def render(doc: dict[str, Any], *, demo: bool = False, kept: Path | None = None) -> str:
    """The text ``filterwatch lab run`` and ``filterwatch demo`` print."""
    agents = sum(i["agents"] + i["vpn_agents"] for i in doc["isps"])
    lines = [
        f"Scenario {doc['scenario']}: {doc['rounds']} rounds of {doc['round_seconds']:g}s from "
        f"{doc['round_1_start']}, {len(doc['isps'])} ISPs, {agents} agents, "
        f"{len(doc['sites'])} sites.",
        "",
        "What the collector found:",
    ]
    if doc["leaks"]:
        lines += [f"  LEAK: {_event_line(e, doc)}" for e in doc["leaks"]]
    else:
        lines.append("  no leaks")
    if doc["uncorroborated"]:
        lines.append("  Not corroborated (too few agents to call it a leak):")
        lines += [f"    {_event_line(e, doc)}" for e in doc["uncorroborated"]]
    if doc.get("divergences"):
        lines.append("  Standing differences (divergences, not leaks):")
        lines += [f"    {_divergence_line(e, doc)}" for e in doc["divergences"]]
    lines += ["", "What really happened (the scenario's ground truth):"]
    if doc["expected_leaks"]:
        for e in doc["expected_leaks"]:
            lines.append(
                f"  {e['isp']} (AS{e['asn']}) leaked {e['domain']} "
                f"in rounds {e['rounds'][0]}-{e['rounds'][1]}"
            )
    else:
        lines.append("  no ISP leaked")
    for e in doc["expected_uncorroborated"]:
        lines.append(
            f"  {e['isp']} (AS{e['asn']}, too few agents) let {e['domain']} through in rounds "
            f"{e['rounds'][0]}-{e['rounds'][1]}: expected as uncorroborated"
        )
    lines += [_expected_divergence_line(e) for e in doc.get("expected_divergences", [])]
    accuracy = doc["verdict_accuracy"]
    errors = doc["window_error_rounds"]
    window = (
        "window error (found - true, in rounds): "
        + "; ".join(
            f"{w['isp']} {w['domain']} start {w['start']:+d} end {w['end']:+d}" for w in errors
        )
        if errors
        else "window error: none to measure"
    )
    lines += [
        "",
        "Score:",
        f"  expected leaks {doc['expected']}, found {doc['found']}, missed {doc['missed']}, "
        f"false {doc['false_leaks']}",
        f"  {window}",
        f"  uncorroborated: expected {doc['uncorroborated_expected']}, "
        f"found {doc['uncorroborated_found']}",
        f"  divergences: expected {doc.get('divergences_expected', 0)}, "
        f"found {doc.get('divergences_found', 0)}, wrong {doc.get('divergences_wrong', 0)}"
        + "".join(
            f"; wrong: {w['kind']} {w['domain']} on AS{w['asn']}"
            for w in doc.get("wrong_divergences", [])
        )
        + "".join(
            f"; missed: {m['kind']} {m['domain']} on {m['isp']}"
            for m in doc.get("missed_divergences", [])
        ),
        "  verdict accuracy: "
        + (
            "no measurements"
            if accuracy is None
            else f"{accuracy * 100:.1f}% of {doc['measurements_scored']} measurements"
        )
        + _missing(doc),
        f"  run time {doc['total_seconds']:.0f}s (set-up {doc['setup_seconds']:.0f}s)",
    ]
    load = doc.get("load_average")
    if accuracy is not None and accuracy < 0.95 and load:
        lines.append(
            f"  note: {(1 - accuracy) * 100:.0f}% of the verdicts are wrong and the load average "
            f"was {max(load):g}: on a machine this busy the probes time out, so this score "
            "says more about the machine than about the collector"
        )
    if kept is not None:
        lines += [
            "",
            f"Kept in {kept}:",
            f"  collector database  {kept / 'collector' / 'filterwatch.sqlite3'}",
            f"  collector config    {kept / 'collector' / 'collector.yaml'}",
            f"  logs                {kept / 'logs'}",
            f"  this result (JSON)  {kept / 'result.json'}",
            "  e.g. filterwatch collector leaks --config "
            f"{kept / 'collector' / 'collector.yaml'} --bucket {doc['round_seconds']:g}s",
        ]
    if demo:
        lines += [
            "",
            "Where to look next:",
            "  filterwatch demo --keep         keep the collector's database and logs",
            "  filterwatch lab run lab/scenarios/two-leaks.yaml   another scenario",
            '  README.md, "The lab" and "The demo"   how the lab censors and scores',
        ]
    return "\n".join(lines)
