"""Small SVG charts drawn by scfeeds itself.

Why not bqplot or plotly: the widgets must render in a JupyterLab with no internet (no CDN) and
in a notebook saved to disk, without another heavy front-end extension. An SVG string inside an
``ipywidgets.HTML`` (or a ``_repr_html_``) is rendered by any front end, offline, and is saved
with the notebook as plain output.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from html import escape

#: Colour-blind-safe palette (Okabe-Ito), one colour per series in order.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442")

_FONT = 'font-family="sans-serif" font-size="10"'


def nice_ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """About ``n`` round tick values covering ``[lo, hi]`` (1, 2, 5 x 10^k steps)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0]
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(n, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    # First tick at or below lo, last at or above hi, so the data never leaves the axes.
    ticks = [math.floor(lo / step) * step]
    while ticks[-1] < hi - step * 1e-9:
        ticks.append(ticks[-1] + step)
    return [round(t, 12) for t in ticks]


def _fmt_tick(value: float) -> str:
    magnitude = abs(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if magnitude >= limit:
            return f"{value / limit:g}{suffix}"
    return f"{value:g}"


def line_chart(
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    title: str,
    x_label: str = "",
    y_label: str = "",
    width: int = 320,
    height: int = 170,
    y_min: float | None = 0.0,
    step: bool = False,
    y_format: Callable[[float], str] = _fmt_tick,
    colors: Mapping[str, str] | None = None,
) -> str:
    """An SVG line chart of one or more ``(x, y)`` series with axes, ticks and a legend.

    Parameters
    ----------
    series
        Name -> points. Empty series are listed in the legend but not drawn.
    y_min
        Lower end of the y axis; ``None`` fits it to the data.
    step
        Draw as a step function (the value holds until the next point), as for a limit.
    """
    plot = _Plot.fit(series, width=width, height=height, y_min=y_min)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f'<text x="{plot.left}" y="12" {_FONT} font-weight="bold">{escape(title)}</text>',
        *_axes(plot, y_format=y_format, x_label=x_label, y_label=y_label),
        *_marks(plot, series, step=step, colors=colors or {}),
        "</svg>",
    ]
    return "".join(out)


@dataclass(frozen=True)
class _Plot:
    """Where the plot area sits in the chart and the data ranges it spans."""

    width: int
    height: int
    x_lo: float
    x_hi: float
    y_lo: float
    y_hi: float
    y_ticks: list[float]
    left: int = 44
    right: int = 8
    top: int = 30
    bottom: int = 26

    @classmethod
    def fit(
        cls,
        series: Mapping[str, Sequence[tuple[float, float]]],
        *,
        width: int,
        height: int,
        y_min: float | None,
    ) -> _Plot:
        """Ranges that hold every finite point (y from ``y_min`` if given) on round ticks."""
        points = [p for pts in series.values() for p in pts if math.isfinite(p[1])]
        xs = [p[0] for p in points] or [0.0, 1.0]
        ys = [p[1] for p in points] or [0.0, 1.0]
        x_lo, x_hi = min(xs), max(xs)
        if x_hi <= x_lo:
            x_hi = x_lo + 1.0
        y_lo = min(ys) if y_min is None else min(y_min, min(ys))
        y_ticks = nice_ticks(y_lo, max(ys), 4)
        y_lo, y_hi = y_ticks[0], y_ticks[-1]
        if y_hi <= y_lo:
            y_hi = y_lo + 1.0
        return cls(width, height, x_lo, x_hi, y_lo, y_hi, y_ticks)

    @property
    def plot_w(self) -> int:
        return self.width - self.left - self.right

    @property
    def plot_h(self) -> int:
        return self.height - self.top - self.bottom

    def sx(self, x: float) -> float:
        return self.left + (x - self.x_lo) / (self.x_hi - self.x_lo) * self.plot_w

    def sy(self, y: float) -> float:
        return self.top + self.plot_h - (y - self.y_lo) / (self.y_hi - self.y_lo) * self.plot_h


def _axes(
    plot: _Plot, *, y_format: Callable[[float], str], x_label: str, y_label: str
) -> list[str]:
    """Grid lines and tick labels, the plot frame and the axis labels."""
    left, top, plot_w, plot_h = plot.left, plot.top, plot.plot_w, plot.plot_h
    out: list[str] = []
    for tick in plot.y_ticks:
        y = plot.sy(tick)
        out.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{left - 4}" y="{y + 3:.1f}" {_FONT} text-anchor="end">'
            f"{escape(y_format(tick))}</text>"
        )
    for tick in nice_ticks(plot.x_lo, plot.x_hi, 4):
        if plot.x_lo <= tick <= plot.x_hi:
            x = plot.sx(tick)
            out.append(
                f'<text x="{x:.1f}" y="{top + plot_h + 12}" {_FONT} text-anchor="middle">'
                f"{escape(_fmt_tick(tick))}</text>"
            )
    out.append(
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>'
    )
    if x_label:
        out.append(
            f'<text x="{left + plot_w}" y="{plot.height - 2}" {_FONT} text-anchor="end">'
            f"{escape(x_label)}</text>"
        )
    if y_label:
        out.append(
            f'<text x="{plot.width - plot.right}" y="12" {_FONT} text-anchor="end">'
            f"{escape(y_label)}</text>"
        )
    return out


def _marks(
    plot: _Plot,
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    step: bool,
    colors: Mapping[str, str],
) -> list[str]:
    """Each series as a line (a dot when it has one point) and its legend entry."""
    out: list[str] = []
    legend_x = float(plot.left)
    for i, (name, pts) in enumerate(series.items()):
        color = colors.get(name, PALETTE[i % len(PALETTE)])
        finite = [(x, y) for x, y in pts if math.isfinite(y)]
        coords: list[str] = []
        for j, (x, y) in enumerate(finite):
            if step and j:
                coords.append(f"{plot.sx(x):.1f},{plot.sy(finite[j - 1][1]):.1f}")
            coords.append(f"{plot.sx(x):.1f},{plot.sy(y):.1f}")
        if len(coords) == 1:
            out.append(
                f'<circle cx="{coords[0].split(",")[0]}" cy="{coords[0].split(",")[1]}" '
                f'r="2" fill="{color}"/>'
            )
        elif coords:
            out.append(
                f'<polyline fill="none" stroke="{color}" stroke-width="1.5" '
                f'points="{" ".join(coords)}"><title>{escape(name)}</title></polyline>'
            )
        # Legend on its own line under the title, in series order.
        out.append(
            f'<rect x="{legend_x:.0f}" y="17" width="6" height="6" fill="{color}"/>'
            f'<text x="{legend_x + 8:.0f}" y="24" {_FONT}>{escape(name)}</text>'
        )
        legend_x += 16 + 6 * len(name)
    return out


def _blend(value: float) -> str:
    """White -> deep blue for ``value`` in [0, 1]."""
    value = min(max(value, 0.0), 1.0)
    lo, hi = (247, 251, 255), (8, 48, 107)
    r, g, b = (round(a + (z - a) * value) for a, z in zip(lo, hi, strict=True))
    return f"#{r:02x}{g:02x}{b:02x}"


def heatmap(
    rows: Sequence[str],
    cols: Sequence[str],
    values: Sequence[Sequence[float | None]],
    *,
    title: str,
    row_label: str,
    col_label: str,
    fmt: Callable[[float], str] = _fmt_tick,
    marks: Mapping[tuple[int, int], str] | None = None,
    highlight: tuple[int, int] | None = None,
    cell: int = 46,
) -> str:
    """An SVG heatmap: ``values[i][j]`` is the cell of ``rows[i]`` x ``cols[j]``.

    ``None`` cells are grey (not measured). ``marks`` puts a short tag under a cell's value
    (e.g. ``"429"`` where the server throttled); ``highlight`` outlines the recommended cell.
    """
    left, top = 62, 42
    width = left + cell * len(cols) + 8
    height = top + cell * len(rows) + 8
    finite = [v for row in values for v in row if v is not None and math.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    span = (hi - lo) or 1.0
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f'<text x="2" y="12" {_FONT} font-weight="bold">{escape(title)}</text>',
        f'<text x="{left}" y="26" {_FONT}>{escape(col_label)} →</text>',
        f'<text x="2" y="{top - 4}" {_FONT}>{escape(row_label)} ↓</text>',
    ]
    for j, name in enumerate(cols):
        out.append(
            f'<text x="{left + j * cell + cell / 2:.0f}" y="{top - 2}" {_FONT} '
            f'text-anchor="middle">{escape(name)}</text>'
        )
    for i, name in enumerate(rows):
        y = top + i * cell
        out.append(
            f'<text x="{left - 4}" y="{y + cell / 2 + 3:.0f}" {_FONT} text-anchor="end">'
            f"{escape(name)}</text>"
        )
        for j, value in enumerate(values[i]):
            x = left + j * cell
            if value is None or not math.isfinite(value):
                fill, text, ink = "#e0e0e0", "–", "#333"
            else:
                share = (value - lo) / span
                fill, text = _blend(0.1 + 0.85 * share), fmt(value)
                ink = "#fff" if share > 0.55 else "#111"
            out.append(
                f'<rect x="{x}" y="{y}" width="{cell - 2}" height="{cell - 2}" fill="{fill}">'
                f"<title>{escape(name)} x {escape(cols[j])}: {escape(text)}</title></rect>"
                f'<text x="{x + cell / 2 - 1:.0f}" y="{y + cell / 2 + 1:.0f}" {_FONT} '
                f'text-anchor="middle" fill="{ink}">{escape(text)}</text>'
            )
            tag = (marks or {}).get((i, j))
            if tag:
                out.append(
                    f'<text x="{x + cell / 2 - 1:.0f}" y="{y + cell - 8}" font-family='
                    f'"sans-serif" font-size="8" text-anchor="middle" fill="#D55E00">'
                    f"{escape(tag)}</text>"
                )
    if highlight is not None:
        i, j = highlight
        out.append(
            f'<rect x="{left + j * cell - 1}" y="{top + i * cell - 1}" width="{cell}" '
            f'height="{cell}" fill="none" stroke="#D55E00" stroke-width="3"/>'
        )
    out.append("</svg>")
    return "".join(out)


def bars(
    items: Sequence[tuple[str, float]],
    *,
    title: str,
    fmt: Callable[[float], str] = _fmt_tick,
    width: int = 320,
) -> str:
    """Horizontal bars, one per ``(label, value)``, scaled to the largest value."""
    left, bar_h, top = 90, 18, 20
    height = top + len(items) * (bar_h + 6) + 4
    largest = max((v for _, v in items), default=1.0) or 1.0
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f'<text x="2" y="12" {_FONT} font-weight="bold">{escape(title)}</text>',
    ]
    span = width - left - 70
    for i, (label, value) in enumerate(items):
        y = top + i * (bar_h + 6)
        w = max(1.0, value / largest * span)
        color = PALETTE[i % len(PALETTE)]
        out.append(
            f'<text x="{left - 4}" y="{y + 13}" {_FONT} text-anchor="end">{escape(label)}</text>'
            f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}"/>'
            f'<text x="{left + w + 4:.1f}" y="{y + 13}" {_FONT}>{escape(fmt(value))}</text>'
        )
    out.append("</svg>")
    return "".join(out)
