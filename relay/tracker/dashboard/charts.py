"""Charts drawn on the server as SVG, in the page itself.

Server-side SVG needs no JavaScript (the Content-Security-Policy allows none), no
vendored library to keep up to date, and draws the same in every browser, printed, and
with scripts off. Colours come from CSS classes (``dashboard.css``), so light and dark
mode apply to charts too; every chart has its numbers in a table beside it.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH, HEIGHT = 960, 240
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 12, 28


@dataclass
class Series:
    label: str
    css: str  # a class of dashboard.css: s-open, s-open-all, s-click, …
    values: list[int]
    dashed: bool = False


def buckets(start: float, end: float, size: int) -> list[float]:
    """The bucket starts from ``start`` to ``end`` (at most 400)."""
    first = math.floor(start / size) * size
    count = max(1, min(400, math.ceil((end - first) / size)))
    return [first + i * size for i in range(count)]


def _nice_max(value: int) -> int:
    if value <= 4:
        return 4
    magnitude = 10 ** int(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        top = int(step * magnitude)
        if top >= value:
            return top
    return value


def label_time(ts: float, size: int) -> str:
    t = dt.datetime.fromtimestamp(ts, dt.UTC)
    return t.strftime("%d %b %H:%M") if size < 86400 else t.strftime("%d %b")


def line_chart(times: Sequence[float], series: Sequence[Series], size: int,
               title: str) -> Markup:
    """A line chart of ``series`` over the bucket starts ``times`` (UTC)."""
    n = len(times)
    top = _nice_max(max((max(s.values) for s in series if s.values), default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(i: int) -> float:
        return LEFT + (plot_w * (i + 0.5) / n if n else 0)

    def y(v: int) -> float:
        return TOP + plot_h - plot_h * v / top

    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'aria-label="{escape(title)}">']
    for i in range(5):
        value = top * i // 4
        yy = y(value)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" '
                     f'y1="{yy:.1f}" y2="{yy:.1f}"/>')
        parts.append(f'<text class="axis" x="{LEFT - 6}" y="{yy + 4:.1f}" '
                     f'text-anchor="end">{value}</text>')
    if n:
        for i in sorted({0, n // 2, n - 1}):
            anchor = "start" if i == 0 else "end" if i == n - 1 else "middle"
            parts.append(f'<text class="axis" x="{x(i):.1f}" y="{HEIGHT - 8}" '
                         f'text-anchor="{anchor}">{escape(label_time(times[i], size))}</text>')
    for s in series:
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(s.values))
        dash = " dashed" if s.dashed else ""
        parts.append(f'<polyline class="line {escape(s.css)}{dash}" points="{points}">'
                     f"<title>{escape(s.label)}</title></polyline>")
        if n <= 60:
            for i, v in enumerate(s.values):
                if v:
                    parts.append(f'<circle class="dot {escape(s.css)}" cx="{x(i):.1f}" '
                                 f'cy="{y(v):.1f}" r="2.5"><title>{escape(s.label)} '
                                 f"{escape(label_time(times[i], size))}: {v}</title></circle>")
    parts.append("</svg>")
    return Markup("".join(parts))


def bar(value: float, css: str = "") -> Markup:
    """A small horizontal bar for a rate from 0 to 1 (SVG: no inline style needed)."""
    width = max(0.0, min(1.0, value)) * 100
    return Markup(f'<svg class="bar {escape(css)}" viewBox="0 0 100 6" '
                  f'preserveAspectRatio="none" aria-hidden="true">'
                  f'<rect class="bar-bg" width="100" height="6"/>'
                  f'<rect class="bar-fg" width="{width:.1f}" height="6"/></svg>')
