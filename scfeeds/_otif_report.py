"""The supplier scorecard as one self-contained HTML page and as a workbook (XLSX).

Rendering only: everything here reads a :class:`~scfeeds.Scorecard` and writes a file. The page
shares the exceptions report's look and number formatting (:mod:`scfeeds._report`); it needs no
script and loads nothing (a Content-Security-Policy forbids any fetch). Every value is
HTML-escaped; every text cell of the workbook is formula-safe (:mod:`scfeeds._cells`).
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import polars as pl

from scfeeds._cells import xlsx_workbook
from scfeeds._report import (
    CSS,
    esc,
    html_table,
    money,
    num_td,
    percent,
    quantity,
    sheet_frame,
    write_table,
)

if TYPE_CHECKING:
    from scfeeds._otif import Scorecard

# (column of Scorecard.suppliers / .trend, heading, kind) in display order.
_COLUMNS: Final[tuple[tuple[str, str, str], ...]] = (
    ("supplier_id", "Supplier", "text"),
    ("period", "Period", "text"),
    ("score", "Score", "rate"),
    ("otif_rate", "OTIF", "rate"),
    ("on_time_rate", "On time", "rate"),
    ("in_full_rate", "In full", "rate"),
    ("fill_rate", "Fill rate", "rate"),
    ("lines", "Lines", "count"),
    ("otif_lines", "OTIF lines", "count"),
    ("on_time_lines", "On-time lines", "count"),
    ("in_full_lines", "In-full lines", "count"),
    ("late_lines", "Late", "count"),
    ("early_lines", "Early", "count"),
    ("not_delivered_lines", "Not delivered", "count"),
    ("qty_ordered", "Qty ordered", "qty"),
    ("qty_filled", "Qty filled", "qty"),
    ("mean_days_late", "Mean days late", "days"),
    ("mean_lead_time_days", "Mean lead time (days)", "days"),
    ("value_late", "Value late", "money"),
)
HEADINGS: Final = {c: h for c, h, _ in _COLUMNS}
_KINDS: Final = {c: k for c, _, k in _COLUMNS}
_RATE_FMT: Final = "0.0%"
_DAYS_FMT: Final = "0.0"
_PAGE_CSS: Final = """
td.bad{color:#b42318;font-weight:600}
caption{caption-side:bottom;text-align:left;color:var(--m);padding-top:6px}
"""


def rate(value: float | None) -> str:
    """``0.8125`` -> ``'81.3 %'`` (one decimal; empty for None)."""
    if value is None:
        return ""
    return percent(Decimal(str(round(value * 100, 1))))


def _cell(value: Any, kind: str) -> str:
    if value is None:
        return ""
    if kind == "rate":
        return rate(float(value))
    if kind == "count":
        return f"{int(value):,}"
    if kind == "qty":
        return quantity(value)
    if kind == "days":
        return f"{float(value):,.1f}"
    if kind == "money":
        return money(value)
    return str(value)


def _sort_value(value: Any) -> str:
    return "" if value is None else str(value)


def _supplier_rows(frame: pl.DataFrame, columns: list[str], worst: float | None) -> list[str]:
    out: list[str] = []
    for row in frame.iter_rows(named=True):
        cells: list[str] = []
        for col in columns:
            kind = _KINDS[col]
            text = _cell(row[col], kind)
            if kind == "text":
                cells.append(f"<td>{esc(text)}</td>")
            elif col == "score" and worst is not None and row[col] is not None:
                cls = "n bad" if row[col] < worst else "n"
                cells.append(f'<td class="{cls}">{esc(text)}</td>')
            else:
                cells.append(num_td(text))
        out.append(f"<tr>{''.join(cells)}</tr>")
    return out


def _trend_table(trend: pl.DataFrame, measure: str) -> str:
    """Suppliers down, periods across, ``measure`` (a rate) in the cells with its line count."""
    if trend.height == 0:
        return '<p class="muted">No lines were due in the period.</p>'
    periods = sorted(trend["period"].unique().to_list())
    by: dict[tuple[Any, Any], dict[str, Any]] = {
        (r["supplier_id"], r["period"]): r for r in trend.iter_rows(named=True)
    }
    suppliers = sorted({r["supplier_id"] for r in by.values()}, key=_sort_value)
    body: list[str] = []
    for sup in suppliers:
        cells = [f"<td>{esc(sup)}</td>"]
        for p in periods:
            r = by.get((sup, p))
            if r is None:
                cells.append('<td class="n muted"></td>')
                continue
            title = f"{r['lines']:,} line(s) due, {r['otif_lines']:,} OTIF"
            cells.append(
                f'<td class="n" title="{esc(title)}">{esc(_cell(r[measure], "rate"))}</td>'
            )
        body.append(f"<tr>{''.join(cells)}</tr>")
    headings = [("Supplier", False), *((str(p), True) for p in periods)]
    return f'<div class="wrap">{html_table(headings, body)}</div>'


def render_html(card: Scorecard, *, title: str | None = None) -> str:
    """The scorecard page as a string (see :meth:`Scorecard.to_html`)."""
    page_title = title or "Supplier scorecard"
    sup = card.suppliers
    span = f"{card.start or 'the first'} to {card.end or 'the last'} target date"
    meta = f"{sup.height:,} supplier(s); lines due from {span}"
    if card.context:
        meta += f"; {card.context}"
    lines = int(sup["lines"].sum()) if sup.height else 0
    cards_html = ""
    if lines:
        total = {k: int(sup[f"{k}_lines"].sum()) / lines for k in ("otif", "on_time", "in_full")}
        ordered = float(sup["qty_ordered"].cast(pl.Float64).sum())
        filled = float(sup["qty_filled"].cast(pl.Float64).sum())
        cards = [
            ("Lines due", f"{lines:,}"),
            ("OTIF", rate(total["otif"])),
            ("On time", rate(total["on_time"])),
            ("In full", rate(total["in_full"])),
            ("Fill rate", rate(filled / ordered) if ordered else ""),
        ]
        cards_html = (
            '<div class="cards">'
            + "".join(f'<div class="card">{esc(k)}<b>{esc(v)}</b></div>' for k, v in cards)
            + "</div>"
        )
    columns = [c for c, _, _ in _COLUMNS if c in sup.columns]
    # worst first: the analyst's question is who to call
    ranked = sup.sort("score", "supplier_id", nulls_last=True)
    mean = sup["score"].mean() if sup.height else None
    worst = float(mean) * 0.9 if isinstance(mean, int | float) else None
    headings = [(HEADINGS[c], _KINDS[c] != "text") for c in columns]
    suppliers_html = html_table(
        headings,
        _supplier_rows(ranked, columns, worst),
        attrs=' id="suppliers"',
    )
    every = "week (Monday)" if card.every == "week" else "month"
    csp = "default-src 'none'; style-src 'unsafe-inline'"
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{esc(csp)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(page_title)}</title><style>{CSS}{_PAGE_CSS}</style></head><body>"
        f'<h1>{esc(page_title)}</h1><p class="meta">{esc(meta)}</p>'
        f"{cards_html}"
        f'<h2>Suppliers, lowest score first</h2><div class="wrap">{suppliers_html}</div>'
        '<p class="muted">Score: the weighted mean of the named rates. Red: a score more than '
        "10 % below the suppliers' mean. Value late: ordered quantity x PO price of the late "
        "lines, in the PO lines' currency.</p>"
        f"<h2>OTIF rate per {esc(every)} the lines were due</h2>"
        f"{_trend_table(card.trend, 'otif_rate')}"
        '<p class="muted">Hover a cell for its line count; an empty cell: nothing due.</p>'
        "</body></html>\n"
    )


def write_html(card: Scorecard, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """Write :func:`render_html` to ``path`` (folders created) and return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_html(card, title=title), encoding="utf-8")
    return target


def _sheet(frame: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, str]]:
    columns = [c for c, _, _ in _COLUMNS if c in frame.columns]
    out, formats = sheet_frame(frame.select(columns), HEADINGS)
    for col in columns:
        kind = _KINDS[col]
        if kind == "rate":
            formats[HEADINGS[col]] = _RATE_FMT
        elif kind == "days":
            formats[HEADINGS[col]] = _DAYS_FMT
    return out, formats


def write_excel(card: Scorecard, path: str | os.PathLike[str]) -> Path:
    """Write the workbook (see :meth:`Scorecard.to_excel`) and return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    wb = xlsx_workbook(target)
    try:
        sheets = (
            ("Scorecard", card.suppliers.sort("score", "supplier_id", nulls_last=True)),
            ("Trend", card.trend.sort("supplier_id", "period")),
        )
        for name, part in sheets:
            write_table(wb, name, *_sheet(part))
    finally:
        wb.close()
    return target
