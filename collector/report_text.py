"""Leak events and the per-ISP table in words and columns, for a terminal."""

from __future__ import annotations

from collector.analysis import IspRow, LeakEvent, Report, iso_utc
from collector.analysis.model import METHOD_NAMES


def describe_event(event: LeakEvent) -> list[str]:
    """An event in two or three lines a person can read aloud."""
    until = "and is still going on" if event.end is None else f"until {iso_utc(event.end)}"
    name = event.network_name or "unnamed network"
    return [
        f"AS{event.asn} {name} ({event.cc}): {', '.join(event.domains)} accessible"
        f" from {iso_utc(event.start)} {until}",
        f"    {event.measurements} measurements, {event.agents} agent(s) at once,"
        f" {event.accessible_rate:.0%} accessible; {event.isps_blocking} of"
        f" {event.isps_measured} other ISPs blocked; confidence {event.confidence:.2f}",
        f"    examples: {', '.join(event.example_ids) or '-'}",
    ]


def events_text(report: Report) -> str:
    lines = [f"Leaks: {len(report.leaks)}"]
    for event in report.leaks:
        lines.extend("  " + line for line in describe_event(event))
    lines.append(f"Uncorroborated (too few distinct agents): {len(report.uncorroborated)}")
    for event in report.uncorroborated:
        lines.extend("  " + line for line in describe_event(event))
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
