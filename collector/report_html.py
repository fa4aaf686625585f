"""One self-contained HTML page: the leak events and the divergences in words, and per
domain a heatmap of ISPs by time (share of accessible measurements) with the leak windows
outlined.

Inline CSS and SVG only: the file opens anywhere, offline, and loads nothing from outside.
"""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime

from collector.analysis import LeakEvent, Report, iso_utc
from collector.analysis.model import BLOCKED_METHODS, METHOD_NAMES, BucketCount
from collector.report_text import distinct_agents, divergence_sentence

MAX_DOMAINS = 12
MAX_COLUMNS = 240
CELL_H = 18
LABEL_W = 230
PLOT_W = 900

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;
max-width:1180px;color:#1d2430;background:#fbfbfc;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde1e6;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}
.sub{color:#5b6573;margin:0 0 16px}
.event{background:#fff;border:1px solid #dde1e6;border-left:5px solid #d9480f;border-radius:4px;
padding:8px 12px;margin:8px 0}
.event.unc{border-left-color:#868e96}
.event.div{border-left-color:#1c7ed6}
.event b{font-weight:600}.meta{color:#5b6573;font-size:13px}
table{border-collapse:collapse;background:#fff;font-size:13px}
th,td{border:1px solid #dde1e6;padding:3px 8px;text-align:right}
th{background:#f1f3f5}td.l,th.l{text-align:left}
.legend{display:flex;gap:14px;align-items:center;font-size:12px;color:#5b6573;margin:6px 0}
.sw{display:inline-block;width:14px;height:12px;vertical-align:middle;margin-right:4px;
border:1px solid #ccc}
svg text{font:11px system-ui,sans-serif;fill:#1d2430}
.none{color:#5b6573}
"""


def _colour(share: float | None) -> str:
    """Red for blocked, green for accessible, grey for no conclusive data."""
    if share is None:
        return "#e9ecef"
    red = (201, 42, 42)
    green = (47, 158, 68)
    mix = [round(r + (g - r) * share) for r, g in zip(red, green, strict=True)]
    return "#{:02x}{:02x}{:02x}".format(*mix)


def _event_html(event: LeakEvent, uncorroborated: bool) -> str:
    until = "is still going on" if event.end is None else f"ended {iso_utc(event.end)}"
    name = html.escape(event.network_name or "unnamed network")
    domains = ", ".join(f"<b>{html.escape(d)}</b>" for d in event.domains)
    examples = ", ".join(html.escape(i) for i in event.example_ids) or "-"
    lifted = ""
    if event.then_lifted_nationally_at is not None:
        lifted = (
            f" Then the rest of the country lifted it too, from"
            f" {iso_utc(event.then_lifted_nationally_at)}: the first ISP of a national"
            " unblocking, not a fault."
        )
    return (
        f'<div class="event{" unc" if uncorroborated else ""}">'
        f"<b>AS{event.asn} {name}</b> ({html.escape(event.cc)}) let through {domains}"
        f" from {iso_utc(event.start)}; the leak {until}.{lifted}"
        f'<div class="meta">{event.measurements} measurements,'
        f" {distinct_agents(event.agents)}, {event.accessible_rate:.0%} accessible, while"
        f" {event.isps_blocking} of {event.isps_measured} other ISPs blocked; before, it"
        f" blocked {event.blocked_share:.0%} of the time; confidence {event.confidence:.2f}."
        f" Example measurements: {examples}</div></div>"
    )


def _divergence_html(event: LeakEvent) -> str:
    examples = ", ".join(html.escape(i) for i in event.example_ids) or "-"
    return (
        f'<div class="event div"><b>{html.escape(event.kind)}</b>:'
        f" {html.escape(divergence_sentence(event))}."
        f'<div class="meta">{event.measurements} measurements,'
        f" {distinct_agents(event.agents)} saw it accessible"
        f" ({event.accessible_rate:.0%}). Example measurements: {examples}</div></div>"
    )


def _pick_domains(report: Report, buckets: Sequence[BucketCount]) -> list[str]:
    """Domains of events first, then the most blocked ones, up to MAX_DOMAINS."""
    chosen: list[str] = []
    for event in (*report.leaks, *report.uncorroborated, *report.divergences):
        for domain in event.domains:
            if domain not in chosen:
                chosen.append(domain)
    blocked: dict[str, int] = defaultdict(int)
    for b in buckets:
        blocked[b.domain] += sum(n for v, n in b.counts.items() if v in BLOCKED_METHODS)
    for domain, _ in sorted(blocked.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(chosen) >= MAX_DOMAINS:
            break
        if domain not in chosen:
            chosen.append(domain)
    return chosen[:MAX_DOMAINS]


def _heatmap(
    domain: str, buckets: Sequence[BucketCount], events: Sequence[LeakEvent], bucket_s: float
) -> str:
    mine = [b for b in buckets if b.domain == domain]
    if not mine:
        return '<p class="none">No measurements.</p>'
    isps = sorted({(b.cc, b.asn, b.network_name) for b in mine})
    first = min(b.bucket_start for b in mine)
    last = max(b.bucket_start for b in mine) + bucket_s
    count = max(1, round((last - first) / bucket_s))
    merge = -(-count // MAX_COLUMNS)  # a week of small buckets: several per column
    span = bucket_s * merge
    columns = -(-count // merge)
    cells: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0, 0])
    row_of = {(cc, asn): i for i, (cc, asn, _) in enumerate(isps)}
    for b in mine:
        col = min(columns - 1, int((b.bucket_start - first) // span))
        ok = b.counts.get("ok", 0)
        blocked = sum(n for v, n in b.counts.items() if v in BLOCKED_METHODS)
        cell = cells[(row_of[(b.cc, b.asn)], col)]
        cell[0] += ok
        cell[1] += ok + blocked
    cell_w = PLOT_W / columns
    height = len(isps) * CELL_H + 34
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{LABEL_W + PLOT_W + 10}"'
        f' height="{height}" role="img" aria-label="accessible share of {html.escape(domain)}'
        f' per ISP over time">'
    ]
    for row, (cc, asn, name) in enumerate(isps):
        label = html.escape(f"{cc} AS{asn} {name}"[:34])
        y = row * CELL_H + 13
        parts.append(f'<text x="{LABEL_W - 6}" y="{y}" text-anchor="end">{label}</text>')
    for (row, col), (ok, n) in sorted(cells.items()):
        share = ok / n if n else None
        x = LABEL_W + col * cell_w
        tip = "no conclusive data" if n == 0 else f"{ok}/{n} accessible"
        parts.append(
            f'<rect x="{x:.2f}" y="{row * CELL_H + 1}" width="{max(cell_w, 0.5):.2f}"'
            f' height="{CELL_H - 2}" fill="{_colour(share)}"><title>{tip}</title></rect>'
        )
    for event in events:
        if domain not in event.domains:
            continue
        event_row = row_of.get((event.cc, event.asn))
        if event_row is None:
            continue
        end = last if event.end is None else event.end
        x0 = LABEL_W + (event.start - first) / span * cell_w
        x1 = LABEL_W + (end - first) / span * cell_w
        parts.append(
            f'<rect x="{x0:.2f}" y="{event_row * CELL_H}" width="{max(x1 - x0, 2):.2f}"'
            f' height="{CELL_H}" fill="none" stroke="#111" stroke-width="2.5"'
            f' stroke-dasharray="{"" if event.end is not None else "6 3"}">'
            f"<title>leak {iso_utc(event.start)} - {iso_utc(end)}</title></rect>"
        )
    axis_y = len(isps) * CELL_H + 14
    for tick in range(5):
        t = first + (last - first) * tick / 4
        x = LABEL_W + PLOT_W * tick / 4
        anchor = "start" if tick == 0 else "end" if tick == 4 else "middle"
        stamp = datetime.fromtimestamp(t, UTC).strftime("%m-%d %H:%M:%S")
        parts.append(f'<text x="{x:.1f}" y="{axis_y}" text-anchor="{anchor}">{stamp}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(
    report: Report, buckets: Sequence[BucketCount], bucket_s: float, *, title: str = "filterwatch"
) -> str:
    """The whole report as one HTML document."""
    body: list[str] = []
    body.append(f"<h1>{html.escape(title)}</h1>")
    if buckets:
        start = min(b.bucket_start for b in buckets)
        end = max(b.bucket_start for b in buckets) + bucket_s
        body.append(
            f'<p class="sub">{iso_utc(start)} to {iso_utc(end)}, buckets of {bucket_s:g} s,'
            f" {len(report.isps)} ISPs.</p>"
        )
    body.append(f"<h2>Leaks ({len(report.leaks)})</h2>")
    body.extend(_event_html(e, False) for e in report.leaks)
    if not report.leaks:
        body.append('<p class="none">No ISP let through what the rest of its country blocks.</p>')
    body.append(f"<h2>Uncorroborated ({len(report.uncorroborated)})</h2>")
    body.append(
        '<p class="sub">Seen accessible by fewer distinct agents than the corroboration'
        " minimum: worth a look, not a finding.</p>"
    )
    body.extend(_event_html(e, True) for e in report.uncorroborated)
    body.append(f"<h2>Divergences ({len(report.divergences)})</h2>")
    body.append(
        '<p class="sub">Standing differences, not leaks: an ISP that never filtered what most'
        " others block, one that followed a new block later, or one that blocks only part"
        " of the time.</p>"
    )
    body.extend(_divergence_html(e) for e in report.divergences)
    body.append("<h2>Accessible share per ISP over time</h2>")
    body.append(
        '<div class="legend"><span><span class="sw" style="background:#c92a2a"></span>blocked'
        '</span><span><span class="sw" style="background:#2f9e44"></span>accessible</span>'
        '<span><span class="sw" style="background:#e9ecef"></span>no conclusive data</span>'
        '<span><span class="sw" style="background:none;border:2px solid #111"></span>leak'
        " window (dashed: ongoing)</span></div>"
    )
    events = (*report.leaks, *report.uncorroborated)
    for domain in _pick_domains(report, buckets):
        body.append(f"<h3>{html.escape(domain)}</h3>")
        body.append(_heatmap(domain, buckets, events, bucket_s))
    body.append("<h2>ISPs</h2>")
    head = "".join(f"<th>{m}</th>" for m in METHOD_NAMES)
    body.append(
        '<table><tr><th class="l">ISP</th><th>measurements</th><th>accessible share</th>'
        f'{head}<th class="l">leaked</th></tr>'
    )
    for row in report.isps:
        methods = "".join(f"<td>{row.methods.get(m, 0)}</td>" for m in METHOD_NAMES)
        body.append(
            f'<tr><td class="l">{html.escape(row.cc)} AS{row.asn}'
            f" {html.escape(row.network_name)}</td><td>{row.measurements}</td>"
            f"<td>{row.accessible_lower:.0%}&ndash;{row.accessible_upper:.0%}</td>{methods}"
            f'<td class="l">{html.escape(", ".join(row.leaking_domains)) or "-"}</td></tr>'
        )
    body.append("</table>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )
