"""Publishable charts as standalone SVG, made on the server. Pure: data in, text out.

Each chart carries what a reader of a post needs without the page around it: AS numbers
and names, a UTC time axis, a legend, and a caption naming the collector and the window.
They use presentation attributes only (no ``style``), so they pass the dashboard's
Content-Security-Policy inline, and nothing external (fonts are generic families), so the
same file is a download and the source of the PNG the browser draws from it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from markupsafe import escape

from collector.dashboard.data import IspSeries, SeriesPoint

# Viridis in 11 steps (0 % to 100 % accessible): perceptually even and readable with every
# common colour-vision deficiency; the share is always written next to it too.
SCALE: tuple[str, ...] = (
    "#440154",
    "#482475",
    "#414487",
    "#355f8d",
    "#2a788e",
    "#21918c",
    "#22a884",
    "#44bf70",
    "#7ad151",
    "#bddf26",
    "#fde725",
)
NO_DATA = "#d9d9d9"
ISP_COLOUR = "#d55e00"  # Okabe-Ito vermillion and blue: told apart by every reader
COUNTRY_COLOUR = "#0072b2"
FONT = "DejaVu Sans, Verdana, Arial, sans-serif"
WIDTH = 1200


def colour(share: float | None) -> str:
    if share is None:
        return NO_DATA
    return SCALE[min(10, max(0, math.floor(share * 10 + 0.5)))]


def utc(epoch: float, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime(fmt)


@dataclass(frozen=True, slots=True)
class Outline:
    asn: int
    start: float
    end: float | None  # None: ongoing
    label: str


def _tick_step(span: float) -> float:
    for step in (600, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400):
        if span / step <= 8:
            return float(step)
    return 14 * 86400.0


def _time_axis(
    parts: list[str], x0: float, width: float, since: float, until: float, y: float
) -> None:
    span = until - since
    step = _tick_step(span)
    fmt = "%m-%d %H:%M" if step < 86400 else "%Y-%m-%d"
    tick = math.ceil(since / step) * step
    parts.append(
        f'<line x1="{x0:.1f}" y1="{y:.1f}" x2="{x0 + width:.1f}" y2="{y:.1f}" stroke="#333"/>'
    )
    while tick <= until:
        x = x0 + (tick - since) / span * width
        parts.append(
            f'<line x1="{x:.1f}" y1="{y:.1f}" x2="{x:.1f}" y2="{y + 5:.1f}" stroke="#333"/>'
            f'<text x="{x:.1f}" y="{y + 18:.1f}" text-anchor="middle">{utc(tick, fmt)}</text>'
        )
        tick += step
    parts.append(
        f'<text x="{x0 + width:.1f}" y="{y + 34:.1f}" text-anchor="end" fill="#555">'
        "time (UTC)</text>"
    )


def _open(width: int, height: int, label: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}"'
        f' font-family="{FONT}" font-size="13">',
        f"<title>{escape(label)}</title>",
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
    ]


def _legend(parts: list[str], x: float, y: float) -> None:
    parts.append(f'<text x="{x:.1f}" y="{y + 12:.1f}">accessible share:</text>')
    x += 120
    for i, fill in enumerate(SCALE):
        parts.append(
            f'<rect x="{x + i * 30:.1f}" y="{y:.1f}" width="30" height="14" fill="{fill}"/>'
        )
        if i % 5 == 0:
            parts.append(
                f'<text x="{x + i * 30 + 15:.1f}" y="{y + 28:.1f}" text-anchor="middle"'
                f' font-size="11">{i * 10}%</text>'
            )
    x += 11 * 30 + 16
    parts.append(
        f'<rect x="{x:.1f}" y="{y:.1f}" width="14" height="14" fill="{NO_DATA}"/>'
        f'<text x="{x + 20:.1f}" y="{y + 12:.1f}">no conclusive data</text>'
    )
    x += 160
    parts.append(
        f'<rect x="{x:.1f}" y="{y:.1f}" width="28" height="14" fill="none" stroke="#000"'
        f' stroke-width="2.5"/><text x="{x + 36:.1f}" y="{y + 12:.1f}">leak window'
        " (dashed: still open)</text>"
    )


def heatmap_svg(
    *,
    cc: str,
    domain: str,
    rows: Sequence[IspSeries],
    outlines: Sequence[Outline],
    since: float,
    until: float,
    bucket_s: float,
    caption: str,
) -> str:
    """ISPs by time, each bucket coloured by its accessible share; leak windows outlined."""
    label_w, row_h, top = 300.0, 24.0, 70.0
    plot_w = WIDTH - label_w - 20
    height = int(top + max(1, len(rows)) * row_h + 110)
    title = f"{domain} in {cc}: accessible share per ISP, per {_bucket_words(bucket_s)}"
    parts = _open(WIDTH, height, title)
    parts.append(f'<text x="20" y="28" font-size="18" font-weight="bold">{escape(title)}</text>')
    _legend(parts, 20, 40)
    span = until - since
    cell_w = plot_w * bucket_s / span
    row_of: dict[int, int] = {}
    for r, series in enumerate(rows):
        row_of[series.asn] = r
        y = top + r * row_h
        parts.append(
            f'<text x="{label_w - 8:.1f}" y="{y + row_h * 0.68:.1f}" text-anchor="end">'
            f"{escape(series.label)}</text>"
            f'<rect x="{label_w:.1f}" y="{y + 1:.1f}" width="{plot_w:.1f}" height="{row_h - 2:.1f}"'
            f' fill="{NO_DATA}"/>'
        )
        for p in series.points:
            if p.bucket_start < since or p.bucket_start >= until:
                continue
            x = label_w + (p.bucket_start - since) / span * plot_w
            share = p.share
            tip = (
                "no conclusive data"
                if share is None
                else f"{share:.0%} accessible ({p.ok} of {p.conclusive})"
            )
            parts.append(
                f'<rect x="{x:.2f}" y="{y + 1:.1f}" width="{cell_w + 0.05:.2f}"'
                f' height="{row_h - 2:.1f}" fill="{colour(share)}"><title>{escape(series.label)}'
                f" {utc(p.bucket_start)} UTC: {tip}</title></rect>"
            )
    for o in outlines:
        row = row_of.get(o.asn)
        if row is None:
            continue
        start = max(o.start, since)
        end = min(until if o.end is None else o.end, until)
        x0 = label_w + (start - since) / span * plot_w
        x1 = label_w + (end - since) / span * plot_w
        dash = ' stroke-dasharray="7 4"' if o.end is None else ""
        parts.append(
            f'<rect x="{x0:.2f}" y="{top + row * row_h:.1f}" width="{max(x1 - x0, 3):.2f}"'
            f' height="{row_h:.1f}" fill="none" stroke="#000" stroke-width="3"{dash}>'
            f"<title>{escape(o.label)}</title></rect>"
        )
    axis_y = top + max(1, len(rows)) * row_h + 6
    _time_axis(parts, label_w, plot_w, since, until, axis_y)
    parts.append(
        f'<text x="20" y="{height - 16}" font-size="12" fill="#333">{escape(caption)}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def evidence_svg(
    *,
    title: str,
    isp: IspSeries | None,
    others: Sequence[IspSeries],
    start: float,
    end: float | None,
    since: float,
    until: float,
    bucket_s: float,
    caption: str,
) -> str:
    """The ISP's accessible share per bucket against the rest of the country's, with the
    event's window shaded."""
    height = 675
    left, right, top, bottom = 80.0, 40.0, 90.0, 120.0
    plot_w = WIDTH - left - right
    plot_h = height - top - bottom
    span = until - since
    parts = _open(WIDTH, height, title)
    parts.append(f'<text x="20" y="30" font-size="18" font-weight="bold">{escape(title)}</text>')

    def x_of(t: float) -> float:
        return left + (t - since) / span * plot_w

    def y_of(share: float) -> float:
        return top + (1 - share) * plot_h

    shade_end = until if end is None else min(end, until)
    parts.append(
        f'<rect x="{x_of(max(start, since)):.1f}" y="{top:.1f}"'
        f' width="{max(x_of(shade_end) - x_of(max(start, since)), 2):.1f}" height="{plot_h:.1f}"'
        f' fill="#f0e442" fill-opacity="0.35"><title>the event</title></rect>'
    )
    for pct in range(0, 101, 25):
        y = y_of(pct / 100)
        parts.append(
            f'<line x1="{left:.1f}" y1="{y:.1f}" x2="{left + plot_w:.1f}" y2="{y:.1f}"'
            f' stroke="#ccc"/><text x="{left - 8:.1f}" y="{y + 4:.1f}" text-anchor="end">'
            f"{pct}%</text>"
        )
    parts.append(
        f'<text x="20" y="{top + plot_h / 2:.1f}" transform="rotate(-90 20 {top + plot_h / 2:.1f})"'
        ' text-anchor="middle">accessible share</text>'
    )
    country = _pooled(others)
    lines = [
        (country, COUNTRY_COLOUR, ' stroke-dasharray="8 5"', "the other ISPs of the country"),
    ]
    if isp is not None:
        lines.append((list(isp.points), ISP_COLOUR, "", isp.label))
    for points, stroke, dash, name in lines:
        coords = [
            (x_of(p.bucket_start + bucket_s / 2), y_of(share), p, share)
            for p in points
            if (share := p.share) is not None and since <= p.bucket_start < until
        ]
        if coords:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _, _ in coords)
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{stroke}" stroke-width="3"{dash}/>'
            )
        for x, y, p, share in coords:
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{stroke}"><title>{escape(name)}'
                f" {utc(p.bucket_start)} UTC: {share:.0%} ({p.ok} of {p.conclusive})</title>"
                "</circle>"
            )
    _time_axis(parts, left, plot_w, since, until, top + plot_h)
    legend_y = height - 62
    x = left
    for _, stroke, dash, name in lines:
        parts.append(
            f'<line x1="{x:.1f}" y1="{legend_y:.1f}" x2="{x + 36:.1f}" y2="{legend_y:.1f}"'
            f' stroke="{stroke}" stroke-width="3"{dash}/>'
            f'<text x="{x + 44:.1f}" y="{legend_y + 4:.1f}">{escape(name)}</text>'
        )
        x += 60 + 8 * len(name)
    parts.append(
        f'<rect x="{x:.1f}" y="{legend_y - 7:.1f}" width="28" height="14" fill="#f0e442"'
        f' fill-opacity="0.35"/><text x="{x + 36:.1f}" y="{legend_y + 4:.1f}">the event</text>'
    )
    parts.append(
        f'<text x="20" y="{height - 20}" font-size="12" fill="#333">{escape(caption)}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def _pooled(others: Sequence[IspSeries]) -> list[SeriesPoint]:
    """The other ISPs' measurements pooled per bucket."""
    sums: dict[float, list[int]] = {}
    for series in others:
        for p in series.points:
            cell = sums.setdefault(p.bucket_start, [0, 0])
            cell[0] += p.ok
            cell[1] += p.conclusive
    return [SeriesPoint(t, ok, n) for t, (ok, n) in sorted(sums.items())]


def _bucket_words(bucket_s: float) -> str:
    if bucket_s % 86400 == 0:
        n = int(bucket_s // 86400)
        return "day" if n == 1 else f"{n} days"
    if bucket_s % 3600 == 0:
        n = int(bucket_s // 3600)
        return "hour" if n == 1 else f"{n} hours"
    if bucket_s % 60 == 0:
        n = int(bucket_s // 60)
        return "minute" if n == 1 else f"{n} minutes"
    return f"{bucket_s:g} s"
