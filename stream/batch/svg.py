"""Tiny inline-SVG charts for the HTML report: lines and step histograms, nothing else.

Why not matplotlib: the report needs four simple charts, and inline SVG keeps the file
self-contained (no image files, no scripts, no network), sharp at any zoom, and adds no
heavy dependency to the scorer's image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

WIDTH, HEIGHT = 560, 340
LEFT, RIGHT, TOP, BOTTOM = 58, 16, 34, 46
MAX_POINTS = 800


@dataclass(frozen=True, slots=True)
class Series:
    """One line: its legend label, points and colour (dashed for a second model)."""

    label: str
    x: Sequence[float]
    y: Sequence[float]
    color: str
    dashed: bool = False


def _thin(xs: Sequence[float], ys: Sequence[float]) -> list[tuple[float, float]]:
    """At most MAX_POINTS points, always keeping the first and the last."""
    n = len(xs)
    step = max(1, math.ceil(n / MAX_POINTS))
    keep = list(range(0, n, step))
    if keep and keep[-1] != n - 1:
        keep.append(n - 1)
    return [(xs[i], ys[i]) for i in keep]


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        return [low]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _label(value: float, is_time: bool, span: float) -> str:
    if is_time:
        fmt = "%m-%d %H:%M" if span < 3 * 86400 else "%Y-%m-%d"
        return datetime.fromtimestamp(value, tz=UTC).strftime(fmt)
    return f"{value:g}"


def line_chart(
    title: str, series: Sequence[Series], x_label: str, y_label: str,
    x_range: tuple[float, float] | None = None, y_range: tuple[float, float] | None = None,
    diagonal: bool = False, x_is_time: bool = False,
) -> str:
    """An SVG line chart with axes, ticks, a legend and an optional y = x reference line."""
    xs = [x for s in series for x in s.x]
    ys = [y for s in series for y in s.y]
    if not xs:
        return _empty(title)
    x0, x1 = x_range or (min(xs), max(xs))
    y0, y1 = y_range or (min(ys), max(ys))
    if x1 <= x0:
        x1 = x0 + 1.0
    if y1 <= y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return TOP + ph - (y - y0) / (y1 - y0) * ph

    parts = [_frame(title, x_label, y_label)]
    for tick in _ticks(x0, x1):
        parts.append(f'<line x1="{px(tick):.1f}" y1="{TOP}" x2="{px(tick):.1f}" '
                     f'y2="{TOP + ph}" class="grid"/>'
                     f'<text x="{px(tick):.1f}" y="{TOP + ph + 16}" text-anchor="middle">'
                     f"{escape(_label(tick, x_is_time, x1 - x0))}</text>")
    for tick in _ticks(y0, y1):
        parts.append(f'<line x1="{LEFT}" y1="{py(tick):.1f}" x2="{LEFT + pw}" '
                     f'y2="{py(tick):.1f}" class="grid"/>'
                     f'<text x="{LEFT - 6}" y="{py(tick) + 4:.1f}" text-anchor="end">'
                     f"{tick:g}</text>")
    if diagonal:
        parts.append(f'<line x1="{px(x0):.1f}" y1="{py(y0):.1f}" x2="{px(x1):.1f}" '
                     f'y2="{py(y1):.1f}" class="diag"/>')
    for i, s in enumerate(series):
        points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in _thin(s.x, s.y))
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        parts.append(f'<polyline points="{points}" fill="none" stroke="{s.color}" '
                     f'stroke-width="2"{dash}/>')
        ly = TOP + 14 + 16 * i
        lx = LEFT + pw - 34 - 6.2 * max(len(t.label) for t in series)  # right-aligned block
        parts.append(f'<line x1="{lx:.0f}" y1="{ly - 4}" x2="{lx + 22:.0f}" '
                     f'y2="{ly - 4}" stroke="{s.color}" stroke-width="2"{dash}/>'
                     f'<text x="{lx + 28:.0f}" y="{ly}">{escape(s.label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def histogram(title: str, series: Sequence[Series], x_label: str, y_label: str) -> str:
    """Step outlines of binned values (x = bin starts, bins of equal width), overlaid."""
    stepped = []
    for s in series:
        if not s.x:
            continue
        width = s.x[1] - s.x[0] if len(s.x) > 1 else 1.0
        xs: list[float] = []
        ys: list[float] = []
        for x, y in zip(s.x, s.y, strict=True):
            xs += [x, x + width]
            ys += [y, y]
        stepped.append(Series(s.label, xs, ys, s.color, s.dashed))
    top = max((max(s.y) for s in stepped), default=1.0) or 1.0
    return line_chart(title, stepped, x_label, y_label, x_range=(0.0, 1.0),
                      y_range=(0.0, top * 1.05))


def _frame(title: str, x_label: str, y_label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
            f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(title)}">'
            f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" class="bg"/>'
            f'<text x="{WIDTH / 2}" y="20" text-anchor="middle" class="title">'
            f"{escape(title)}</text>"
            f'<text x="{LEFT + (WIDTH - LEFT - RIGHT) / 2}" y="{HEIGHT - 8}" '
            f'text-anchor="middle">{escape(x_label)}</text>'
            f'<text x="14" y="{TOP + (HEIGHT - TOP - BOTTOM) / 2}" text-anchor="middle" '
            f'transform="rotate(-90 14 {TOP + (HEIGHT - TOP - BOTTOM) / 2})">'
            f"{escape(y_label)}</text>")


def _empty(title: str) -> str:
    return (_frame(title, "", "") + f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" '
            'text-anchor="middle">no labelled data</text></svg>')


STYLE = """
svg { font: 11px system-ui, sans-serif; margin: 6px; }
svg .bg { fill: #fff; stroke: #ddd; }
svg .title { font-size: 13px; font-weight: 600; }
svg .grid { stroke: #eee; }
svg .diag { stroke: #bbb; stroke-dasharray: 3 3; }
"""
