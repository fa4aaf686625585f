"""Leak events, divergences and the per-ISP table in words and columns, for a terminal."""

from __future__ import annotations

from collector.analysis import IspRow, LeakEvent, Report, iso_utc
from collector.analysis.model import LAGGING, METHOD_NAMES, UNFILTERED


def distinct_agents(n: int) -> str:
    return f"{n} distinct agent{'' if n == 1 else 's'}"


def describe_event(event: LeakEvent) -> list[str]:
    """A lapse in two to four lines a person can read aloud."""
    until = "and is still going on" if event.end is None else f"until {iso_utc(event.end)}"
    name = event.network_name or "unnamed network"
    lines = [
        f"AS{event.asn} {name} ({event.cc}): {', '.join(event.domains)} accessible"
        f" from {iso_utc(event.start)} {until}",
        f"    {event.measurements} measurements, {distinct_agents(event.agents)},"
        f" {event.accessible_rate:.0%} accessible; {event.isps_blocking} of"
        f" {event.isps_measured} other ISPs blocked; before, it blocked"
        f" {event.blocked_share:.0%} of the time; confidence {event.confidence:.2f}",
    ]
    if event.then_lifted_nationally_at is not None:
        lines.append(
            f"    then the rest of the country lifted it too, from"
            f" {iso_utc(event.then_lifted_nationally_at)}: the first ISP of a national"
            " unblocking, not a fault"
        )
    lines.append(f"    examples: {', '.join(event.example_ids) or '-'}")
    return lines


def divergence_sentence(event: LeakEvent) -> str:
    """A divergence in one sentence: "Echo (AS64605) has never filtered x.example, which 4
    of 5 other ISPs block"."""
    isp = f"{event.network_name or 'an unnamed network'} (AS{event.asn})"
    domains = ", ".join(event.domains)
    others = f"{event.isps_blocking} of {event.isps_measured} other ISPs"
    since = iso_utc(event.start)
    until = "" if event.end is None else f" until {iso_utc(event.end)}"
    if event.kind == UNFILTERED:
        return f"{isp} has never filtered {domains}, which {others} block (from {since}{until})"
    if event.kind == LAGGING:
        began = "has not yet begun" if event.end is None else f"began at {iso_utc(event.end)}"
        return f"{isp} lagged in blocking {domains}: {others} blocked it from {since}; it {began}"
    return (
        f"{isp} blocks {domains} only {event.blocked_share:.0%} of the time, which {others}"
        f" block (from {since}{until})"
    )


def describe_divergence(event: LeakEvent) -> list[str]:
    return [
        f"{event.kind.upper()}: {divergence_sentence(event)}",
        f"    {event.measurements} measurements, {distinct_agents(event.agents)} saw it"
        f" accessible ({event.accessible_rate:.0%}); examples:"
        f" {', '.join(event.example_ids) or '-'}",
    ]


def events_text(report: Report) -> str:
    lines = [f"Leaks: {len(report.leaks)}"]
    for event in report.leaks:
        lines.extend("  " + line for line in describe_event(event))
    lines.append(f"Uncorroborated (too few distinct agents): {len(report.uncorroborated)}")
    for event in report.uncorroborated:
        lines.extend("  " + line for line in describe_event(event))
    lines.append(f"Divergences (standing differences, not leaks): {len(report.divergences)}")
    for event in report.divergences:
        lines.extend("  " + line for line in describe_divergence(event))
    return "\n".join(lines) + "\n"


def _isp_line(row: IspRow) -> list[str]:
    share = f"{row.accessible_lower:.0%}-{row.accessible_upper:.0%}"
    return [
        row.cc,
        f"AS{row.asn}",
        row.network_name[:24],
        str(row.measurements),
        share,
        *(str(row.methods.get(m, 0)) for m in METHOD_NAMES),
        str(row.site_down + row.inconclusive),
        ", ".join(row.leaking_domains) or "-",
    ]


def isps_text(report: Report) -> str:
    header = ["CC", "ASN", "NETWORK", "MEASURED", "ACCESSIBLE", "DNS", "TCP", "TLS", "HTTP",
              "BLOCKPAGE", "UNCLEAR", "LEAKED"]  # fmt: skip
    table = [header, *(_isp_line(row) for row in report.isps)]
    widths = [max(len(r[i]) for r in table) for i in range(len(header) - 1)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in table
    ]
    note = "ACCESSIBLE: Wilson interval of the accessible share (site_down/inconclusive excluded)"
    return "ISPs\n" + "\n".join(lines) + "\n" + note + "\n"


def compare_text(report: Report) -> str:
    return isps_text(report) + "\n" + events_text(report)
