"""The exceptions report (one self-contained HTML page) and workbook (XLSX) of a reconciliation.

Rendering only: everything here reads the frames of a :class:`~scfeeds.Reconciliation` and
writes a file. The page works offline (no CDN, no network at all: a Content-Security-Policy
forbids it); its small sort and filter script is inline and allowed by its hash only. Every
value is HTML-escaped; every text cell of the workbook is formula-safe (:mod:`scfeeds._cells`).

Money at risk is shown per currency (never summed across currencies) with two decimals and
thousands separators. An exception row's currency is its invoice's, else the supplier's most
frequent invoice currency; ``currency=`` overrides both.
"""

from __future__ import annotations

import base64
import hashlib
import html
import os
import re
from collections.abc import Iterable, Sequence
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlsplit

import polars as pl

from scfeeds._cells import safe_frame, xlsx_workbook
from scfeeds._reconcile._engine import PRECEDENCE

if TYPE_CHECKING:
    import xlsxwriter

    from scfeeds._reconcile._result import Reconciliation

#: What each exception code means, one line each (shown in the report and the workbook).
CODE_MEANING: Final[dict[str, str]] = {
    "DUPLICATE_INVOICE": "same supplier, same normalised invoice number as an earlier invoice",
    "DUPLICATE_SUSPECT": "invoice number one edit away from another, same total, dates close",
    "NO_PO_REFERENCE": "document line whose PO or PO line does not exist",
    "SUPPLIER_MISMATCH": "the PO exists, but under another supplier",
    "UOM_MISMATCH": "a quantity in a unit that cannot be converted to the PO line's unit",
    "INVOICED_NOT_RECEIVED": "billed, nothing received",
    "OVER_INVOICED": "billed more than received",
    "OVER_ORDERED": "billed more than ordered",
    "PRICE_VARIANCE": "invoice unit price differs from the PO price beyond tolerance",
    "NOT_SHIPPED": "ordered, nothing received",
    "SHORT_SHIPPED": "received less than ordered",
    "OVER_SHIPPED": "received more than ordered",
    "NOT_INVOICED": "received, never billed",
}

# (column of the exceptions frame, heading, kind) in display order.
_COLUMNS: Final[tuple[tuple[str, str, str], ...]] = (
    ("code", "Code", "text"),
    ("supplier_id", "Supplier", "text"),
    ("currency", "Currency", "text"),
    ("amount_at_risk", "Amount at risk", "money"),
    ("variance_amount", "Amount variance", "money"),
    ("variance_qty", "Qty variance", "qty"),
    ("po_number", "PO", "text"),
    ("line_number", "Line", "text"),
    ("item_id", "Item", "text"),
    ("invoice_number", "Invoice", "text"),
    ("shipment_id", "Shipment", "text"),
    ("document", "Document", "text"),
    ("position", "Position", "text"),
    ("level", "Level", "text"),
    ("tolerance_pct", "Tolerance %", "pct"),
    ("tolerance_abs", "Tolerance", "money"),
    ("source", "Source", "text"),
)
_CENT: Final = Decimal("0.01")


# -- the rows ------------------------------------------------------------------------------------


def document_name(source: str | None) -> str | None:
    """A readable name for a row's ``source``: the file name of a path or URL (decoded, no
    query), e.g. ``http://127.0.0.1:8080/v1/feeds/inv_00001.csv?x=1`` -> ``inv_00001.csv``."""
    if source is None:
        return None
    parts = urlsplit(source)
    path = parts.path if parts.scheme and len(parts.scheme) > 1 else source
    name = PurePosixPath(unquote(path).replace("\\", "/")).name
    return name or source


def display_source(source: str | None) -> str | None:
    """``source`` without what must not travel in a report: a URL's user info, query and
    fragment (tokens live there); paths unchanged."""
    if source is None:
        return None
    parts = urlsplit(source)
    if parts.scheme in ("http", "https", "s3", "gs", "az", "abfs", "file") and parts.netloc:
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        return f"{parts.scheme}://{host}{parts.path}"
    return source


def exception_rows(rec: Reconciliation, *, currency: str | None = None) -> pl.DataFrame:
    """Every exception row with ``document`` (readable source name) and ``currency`` added,
    largest amount at risk first (then code precedence, supplier, PO, line)."""
    exc = rec.exceptions.collect()
    if currency is not None:
        cur = exc.with_columns(currency=pl.lit(currency, pl.String))
    else:
        inv = (
            rec.invoices.select("supplier_id", "invoice_number", "currency")
            .filter(pl.col("currency").is_not_null())
            .collect()
        )
        per_invoice = inv.unique(["supplier_id", "invoice_number"], keep="first")
        per_supplier = (
            inv.group_by("supplier_id", "currency")
            .agg(n=pl.len())
            .sort("n", "currency", descending=[True, False])
            .unique("supplier_id", keep="first")
            .select("supplier_id", _sup_currency="currency")
        )
        cur = (
            exc.join(
                per_invoice, on=["supplier_id", "invoice_number"], how="left", nulls_equal=False
            )
            .join(per_supplier, on="supplier_id", how="left")
            .with_columns(currency=pl.coalesce("currency", "_sup_currency"))
            .drop("_sup_currency")
        )
    sources = cur["source"].drop_nulls().unique().to_list()
    names = {s: document_name(s) for s in sources}
    shown = {s: display_source(s) for s in sources}
    rank = {c: i for i, c in enumerate(PRECEDENCE)}
    return (
        cur.with_columns(
            document=pl.col("source").replace_strict(names, default=None, return_dtype=pl.String),
            source=pl.col("source").replace_strict(shown, default=None, return_dtype=pl.String),
            _rank=pl.col("code").cast(pl.String).replace_strict(rank, default=len(rank)),
        )
        .sort(
            ["amount_at_risk", "_rank", "supplier_id", "po_number", "line_number"],
            descending=[True, False, False, False, False],
            nulls_last=True,
            maintain_order=True,
        )
        .drop("_rank")
        .select([c for c, _, _ in _COLUMNS])
    )


def _exposure(rows: pl.DataFrame, by: Sequence[str]) -> pl.DataFrame:
    """Money at risk per ``by`` group, each PO line counted once (its largest exception, as a
    line's ``amount_at_risk``) plus every invoice / ASN / receipt level exception."""
    line = rows.filter(pl.col("level") == "line")
    per_line = line.group_by(*by, "po_number", "line_number").agg(
        pl.col("amount_at_risk").max().alias("risk")
    )
    other = rows.filter(pl.col("level") != "line").select(*by, risk="amount_at_risk")
    risk = (
        pl.concat([per_line.select(*by, "risk"), other])
        .group_by(*by)
        .agg(amount_at_risk=pl.col("risk").sum())
    )
    counts = rows.group_by(*by).agg(
        exceptions=pl.len(),
        po_lines=pl.struct("po_number", "line_number").filter(pl.col("level") == "line").n_unique(),
        invoices=pl.col("invoice_number").filter(pl.col("level") == "invoice").n_unique(),
    )
    return counts.join(risk, on=list(by), how="left", nulls_equal=True).sort(
        "amount_at_risk", *by, descending=[True, *([False] * len(by))], nulls_last=True
    )


def by_supplier(rows: pl.DataFrame) -> pl.DataFrame:
    """``supplier_id``, ``currency``, ``exceptions``, ``po_lines``, ``invoices``,
    ``amount_at_risk`` (each PO line once), largest first."""
    return _exposure(rows, ["supplier_id", "currency"])


def by_code(rows: pl.DataFrame) -> pl.DataFrame:
    """``code``, ``level``, ``currency``, ``exceptions``, ``amount_at_risk`` (every row: a line
    can count under several codes), in code precedence."""
    rank = {c: i for i, c in enumerate(PRECEDENCE)}
    return (
        rows.group_by("code", "level", "currency")
        .agg(exceptions=pl.len(), amount_at_risk=pl.col("amount_at_risk").sum())
        .with_columns(_r=pl.col("code").replace_strict(rank, default=len(rank)))
        .sort("_r", "level", "currency", nulls_last=True)
        .drop("_r")
    )


def totals(rows: pl.DataFrame) -> pl.DataFrame:
    """``currency``, ``exceptions``, ``amount_at_risk`` (each PO line once) over all rows."""
    return _exposure(rows, ["currency"]).select("currency", "exceptions", "amount_at_risk")


# -- formatting ----------------------------------------------------------------------------------


def money(value: Decimal | None, currency: str | None = None) -> str:
    """``Decimal('-1234.5678'), 'USD'`` -> ``'USD -1,234.57'`` (half up to the cent)."""
    if value is None:
        return ""
    text = f"{value.quantize(_CENT, rounding=ROUND_HALF_UP):,.2f}"
    return f"{currency} {text}" if currency else text


def quantity(value: Decimal | None) -> str:
    """``Decimal('1200.5000')`` -> ``'1,200.5'``: separators, no trailing zeros."""
    if value is None:
        return ""
    text = f"{value.normalize():,f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def percent(value: Decimal | None) -> str:
    return "" if value is None else f"{quantity(value)} %"


def _cell(value: Any, kind: str, currency: str | None) -> str:
    if kind == "money":
        return money(value, currency)
    if kind == "qty":
        return quantity(value)
    if kind == "pct":
        return percent(value)
    return "" if value is None else str(value)


# -- HTML ----------------------------------------------------------------------------------------

CSS: Final = """
:root{--b:#d0d7de;--h:#f6f8fa;--t:#1f2328;--m:#59636e;--a:#0969da}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Liberation Sans",sans-serif;
color:var(--t);margin:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.meta{color:var(--m);margin:0 0 16px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:12px 0}
.card{border:1px solid var(--b);border-radius:6px;padding:10px 14px;min-width:180px}
.card b{display:block;font-size:20px;font-variant-numeric:tabular-nums}
.grid{display:flex;flex-wrap:wrap;gap:32px;align-items:flex-start}
.wrap{overflow:auto;max-width:100%}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid var(--b);padding:4px 8px;text-align:left;white-space:nowrap}
th{background:var(--h);position:sticky;top:0;z-index:1}
td.n,th.n{text-align:right}
tbody tr:nth-child(even){background:#fbfcfd}
tr.pick{cursor:pointer}tr.pick:hover{background:#eef4ff}
th button{all:unset;cursor:pointer;font-weight:600}
th button:focus-visible{outline:2px solid var(--a)}
th[aria-sort=ascending] button::after{content:" \\25B2"}
th[aria-sort=descending] button::after{content:" \\25BC"}
.filters{display:flex;flex-wrap:wrap;gap:12px;align-items:end;margin:8px 0 10px}
.filters label{display:flex;flex-direction:column;font-size:12px;color:var(--m)}
.filters input,.filters select{font:inherit;padding:3px 6px;min-width:140px}
.muted{color:var(--m)}
#exc-wrap{max-height:80vh}
td.pos{max-width:16em;overflow:hidden;text-overflow:ellipsis}
.grid section{max-width:640px}
"""

# Sort and filter, offline. Rows are rendered on the server; the script only hides and
# reorders them, so the page is complete (and printable) without it.
_JS: Final = """
(function () {
  "use strict";
  var table = document.getElementById("exc");
  var body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  var text = null;
  var q = document.getElementById("f-text");
  var sup = document.getElementById("f-supplier");
  var code = document.getElementById("f-code");
  var min = document.getElementById("f-min");
  var shown = document.getElementById("shown");
  function lowerText(r) { return r.textContent.toLowerCase(); }
  function apply() {
    if (text === null) { text = new Map(rows.map(function (r) { return [r, lowerText(r)]; })); }
    var t = q.value.trim().toLowerCase();
    var s = sup.value, c = code.value, m = parseFloat(min.value), n = 0;
    for (var i = 0; i < rows.length; i++) {
      var r = rows[i];
      var ok = (!s || r.getAttribute("data-supplier") === s) &&
        (!c || r.getAttribute("data-code") === c) &&
        (isNaN(m) || parseFloat(r.getAttribute("data-risk") || "0") >= m) &&
        (!t || text.get(r).indexOf(t) >= 0);
      r.hidden = !ok;
      if (ok) { n++; }
    }
    shown.textContent = n.toLocaleString("en-US");
  }
  var timer = 0;
  function later() { clearTimeout(timer); timer = setTimeout(apply, 120); }
  q.addEventListener("input", later);
  min.addEventListener("input", later);
  sup.addEventListener("change", apply);
  code.addEventListener("change", apply);
  document.getElementById("f-reset").addEventListener("click", function () {
    q.value = ""; sup.value = ""; code.value = ""; min.value = ""; apply();
  });
  function sortBy(th) {
    var idx = th.cellIndex, num = th.getAttribute("data-kind") !== "text";
    var was = th.getAttribute("aria-sort");
    var dir = was === "descending" ? "ascending" : (was === "ascending" ? "descending" :
      (num ? "descending" : "ascending"));
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) {
      h.removeAttribute("aria-sort");
    });
    th.setAttribute("aria-sort", dir);
    var keyed = rows.map(function (r, i) {
      var td = r.cells[idx], v = td.getAttribute("data-v");
      var k = num ? (v === null || v === "" ? null : parseFloat(v)) : td.textContent.toLowerCase();
      if (k === "") { k = null; }
      return { r: r, i: i, k: k };
    });
    var sign = dir === "ascending" ? 1 : -1;
    keyed.sort(function (a, b) {
      if (a.k === b.k) { return a.i - b.i; }
      if (a.k === null) { return 1; }
      if (b.k === null) { return -1; }
      return (a.k < b.k ? -1 : 1) * sign;
    });
    var frag = document.createDocumentFragment();
    rows = keyed.map(function (k) { frag.appendChild(k.r); return k.r; });
    body.appendChild(frag);
  }
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
    var b = th.querySelector("button");
    if (b) { b.addEventListener("click", function () { sortBy(th); }); }
  });
  Array.prototype.forEach.call(document.querySelectorAll("tr[data-pick]"), function (tr) {
    tr.addEventListener("click", function () {
      var sel = document.getElementById(tr.getAttribute("data-pick"));
      sel.value = tr.getAttribute("data-value");
      apply();
      table.scrollIntoView();
    });
  });
})();
"""


def tolerance_text(tol: Any) -> str:
    """``Tolerances`` in words: ``short ship exact, ..., price 1 %, ...``."""
    parts: list[str] = []
    for check in ("short_ship", "over_ship", "over_invoice", "over_order", "price"):
        pct = getattr(tol, f"{check}_pct", None)
        abs_ = getattr(tol, f"{check}_abs", None)
        if pct is None and abs_ is None:
            limit = "unlimited"
        elif (pct == 0 and abs_ is None) or (abs_ == 0 and pct is None):
            limit = "exact"
        else:
            limit = " and ".join(
                s for s in (percent(pct) if pct is not None else "", quantity(abs_)) if s
            )
        parts.append(f"{check.replace('_', ' ')} {limit}")
    overrides = getattr(tol, "overrides", None)
    if isinstance(overrides, pl.DataFrame) and overrides.height:
        parts.append(f"overrides for {overrides.height} supplier(s)")
    return ", ".join(parts)


def esc(value: Any) -> str:
    """``value`` as HTML text (quotes escaped; ``None`` is empty)."""
    return html.escape("" if value is None else str(value), quote=True)


def html_table(
    headings: Iterable[tuple[str, bool]], body_rows: Iterable[str], *, attrs: str = ""
) -> str:
    head = "".join(
        f'<th class="n">{esc(h)}</th>' if n else f"<th>{esc(h)}</th>" for h, n in headings
    )
    return (
        f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>{''.join(body_rows)}</tbody></table>"
    )


def num_td(text: str) -> str:
    return f'<td class="n">{esc(text)}</td>'


def _merge_currencies(frame: pl.DataFrame, keys: list[str]) -> dict[tuple[Any, ...], Any]:
    """One entry per ``keys`` (first-seen order): counts added up, money listed per currency."""
    out: dict[tuple[Any, ...], Any] = {}
    for r in frame.iter_rows(named=True):
        g = out.setdefault(
            tuple(r[k] for k in keys), {"exceptions": 0, "po_lines": 0, "invoices": 0, "money": []}
        )
        for n in ("exceptions", "po_lines", "invoices"):
            g[n] += r.get(n) or 0
        g["money"].append(money(r["amount_at_risk"], r["currency"]))
    return out


def _summary_html(rows: pl.DataFrame) -> str:
    parts: list[str] = []
    tot = totals(rows)
    cards = [f'<div class="card">Exceptions<b>{rows.height:,}</b></div>']
    for t in tot.iter_rows(named=True):
        label = f"Money at risk ({t['currency']})" if t["currency"] else "Money at risk"
        cards.append(
            f'<div class="card">{esc(label)}<b>{esc(money(t["amount_at_risk"], t["currency"]))}</b>'
            f'<span class="muted">{t["exceptions"]:,} exceptions</span></div>'
        )
    parts.append(f'<div class="cards">{"".join(cards)}</div>')

    sup_rows = [
        f'<tr class="pick" data-pick="f-supplier" data-value="{esc(key[0])}" '
        f'title="show only this supplier"><td>{esc(key[0])}</td>'
        + num_td(f"{g['exceptions']:,}")
        + num_td(f"{g['po_lines']:,}")
        + num_td(f"{g['invoices']:,}")
        + num_td(" · ".join(g["money"]))
        + "</tr>"
        for key, g in _merge_currencies(by_supplier(rows), ["supplier_id"]).items()
    ]
    code_rows = [
        f'<tr class="pick" data-pick="f-code" data-value="{esc(key[0])}" '
        f'title="{esc(CODE_MEANING.get(str(key[0]), ""))}"><td>{esc(key[0])}</td>'
        f"<td>{esc(key[1])}</td>"
        + num_td(f"{g['exceptions']:,}")
        + num_td(" · ".join(g["money"]))
        + "</tr>"
        for key, g in _merge_currencies(by_code(rows), ["code", "level"]).items()
    ]
    parts.append('<div class="grid"><section><h2>Money at risk by supplier</h2>')
    parts.append(
        html_table(
            [
                ("Supplier", False),
                ("Exceptions", True),
                ("PO lines", True),
                ("Invoices", True),
                ("At risk", True),
            ],
            sup_rows,
        )
    )
    parts.append(
        '<p class="muted">Each PO line counted once (its largest exception), plus every '
        "invoice-level exception. Click a row to filter.</p></section>"
    )
    parts.append("<section><h2>Money at risk by exception code</h2>")
    parts.append(
        html_table(
            [("Code", False), ("Level", False), ("Exceptions", True), ("At risk", True)],
            code_rows,
        )
    )
    parts.append(
        '<p class="muted">Every exception row (a line can count under several codes). '
        "Hover a code for its meaning; click to filter.</p></section></div>"
    )
    return "".join(parts)


def _exceptions_html(rows: pl.DataFrame) -> str:
    heads = []
    for col, heading, kind in _COLUMNS:
        if col in ("currency", "source"):
            continue
        cls = ' class="n"' if kind != "text" else ""
        sort = ' aria-sort="descending"' if col == "amount_at_risk" else ""
        heads.append(
            f'<th{cls} data-kind="{kind}"{sort}><button type="button">{esc(heading)}</button></th>'
        )
    body: list[str] = []
    for r in rows.iter_rows(named=True):
        cur = r["currency"]
        risk = r["amount_at_risk"]
        cells: list[str] = []
        for col, _heading, kind in _COLUMNS:
            if col in ("currency", "source"):
                continue
            value = r[col]
            if kind == "text":
                if col == "document" and r["source"] is not None:
                    cells.append(f'<td title="{esc(r["source"])}">{esc(value)}</td>')
                elif col == "position" and value is not None:
                    cells.append(f'<td class="pos" title="{esc(value)}">{esc(value)}</td>')
                else:
                    cells.append(f"<td>{esc(value)}</td>")
            else:
                v = "" if value is None else str(value)
                cells.append(f'<td class="n" data-v="{esc(v)}">{esc(_cell(value, kind, cur))}</td>')
        body.append(
            f'<tr data-supplier="{esc(r["supplier_id"])}" data-code="{esc(r["code"])}" '
            f'data-risk="{esc("" if risk is None else risk)}">{"".join(cells)}</tr>'
        )
    return f"<thead><tr>{''.join(heads)}</tr></thead><tbody>{''.join(body)}</tbody>"


def _options(values: Iterable[Any]) -> str:
    return "".join(f'<option value="{esc(v)}">{esc(v)}</option>' for v in values if v is not None)


def render_html(
    rec: Reconciliation, *, title: str | None = None, currency: str | None = None
) -> str:
    """The report page as a string (see :meth:`Reconciliation.to_html`)."""
    rows = exception_rows(rec, currency=currency)
    page_title = title or "Three-way match exceptions"
    tol = rec.tolerances
    meta = (
        f"{rows.height:,} exceptions; received quantities from "
        f"{'receipts' if rec.received_from == 'receipts' else 'ASNs (no receipts given)'}; "
        f"tolerances: {tolerance_text(tol)}"
    )
    codes = [c for c in PRECEDENCE if c in set(rows["code"].to_list())]
    suppliers = sorted(rows["supplier_id"].drop_nulls().unique().to_list())
    script_hash = base64.b64encode(hashlib.sha256(_JS.encode("utf-8")).digest()).decode("ascii")
    csp = (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        f"script-src 'sha256-{script_hash}'"
    )
    filters = (
        '<div class="filters" role="search">'
        '<label>Search<input id="f-text" type="search" placeholder="any text" '
        'autocomplete="off"></label>'
        f'<label>Supplier<select id="f-supplier"><option value="">all</option>'
        f"{_options(suppliers)}</select></label>"
        f'<label>Code<select id="f-code"><option value="">all</option>'
        f"{_options(codes)}</select></label>"
        '<label>At risk at least<input id="f-min" type="number" min="0" step="any" '
        'inputmode="decimal"></label>'
        '<button id="f-reset" type="button">Reset</button>'
        f'<span class="muted">showing <b id="shown">{rows.height:,}</b> of {rows.height:,}</span>'
        "</div>"
    )
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{esc(csp)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(page_title)}</title><style>{CSS}</style></head><body>"
        f'<h1>{esc(page_title)}</h1><p class="meta">{esc(meta)}</p>'
        f"{_summary_html(rows)}"
        f"<h2>Exceptions</h2>{filters}"
        f'<div class="wrap" id="exc-wrap"><table id="exc">{_exceptions_html(rows)}</table></div>'
        '<p class="muted">Amounts in each row\'s currency, rounded half up to the cent. '
        "Document: the file the evidence is in (hover for its full source); position: row, "
        "segment or XPath within it. Click a heading to sort.</p>"
        f"<script>{_JS}</script></body></html>\n"
    )


def write_html(
    rec: Reconciliation,
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    currency: str | None = None,
) -> Path:
    """Write :func:`render_html` to ``path`` (folders created) and return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_html(rec, title=title, currency=currency), encoding="utf-8")
    return target


# -- XLSX ----------------------------------------------------------------------------------------

_MONEY_FMT: Final = "#,##0.00"
_HEADINGS: Final = {c: h for c, h, _ in _COLUMNS}
_KINDS: Final = {c: k for c, _, k in _COLUMNS}
_BAD_SHEET_CHARS: Final = re.compile(r"[\[\]:*?/\\']")


def sheet_frame(
    frame: pl.DataFrame, headings: dict[str, str]
) -> tuple[pl.DataFrame, dict[str, str]]:
    """Decimals as doubles (exact to the cent and far beyond for amounts below 1e11), text
    formula-safe, columns renamed to headings; with the number format of each numeric column."""
    formats: dict[str, str] = {}
    exprs: list[pl.Expr] = []
    for col, dtype in frame.schema.items():
        name = headings.get(col, col)
        kind = _KINDS.get(col, "money" if col == "amount_at_risk" else "text")
        if isinstance(dtype, pl.Decimal):
            exprs.append(pl.col(col).cast(pl.Float64).alias(name))
            if kind == "qty":
                whole = frame[col].drop_nulls().cast(pl.Float64)
                integral = bool((whole == whole.round(0)).all())
                formats[name] = "#,##0" if integral else "#,##0.00##"
            elif kind == "pct":
                formats[name] = '0.00" %"'
            else:
                formats[name] = _MONEY_FMT
        elif dtype.is_integer():
            exprs.append(pl.col(col).alias(name))
            formats[name] = "#,##0"
        else:
            exprs.append(pl.col(col).alias(name))
    out = safe_frame(frame.select(exprs))
    return out, formats


def write_table(
    wb: xlsxwriter.Workbook,
    worksheet: str,
    frame: pl.DataFrame,
    formats: dict[str, str],
    *,
    position: tuple[int, int] | None = None,
) -> None:
    """``frame`` as a formatted table (house style, autofilter, autofit) on ``worksheet``: a
    sheet of its own with a frozen header row, or at ``position`` on a shared sheet."""
    placement: dict[str, Any] = (
        {"freeze_panes": (1, 0)} if position is None else {"position": position}
    )
    frame.write_excel(
        wb,
        worksheet=worksheet,
        column_formats=formats,  # type: ignore[arg-type]
        table_style={"style": "Table Style Medium 2"},
        autofilter=True,
        autofit=True,
        **placement,
    )


def _sheet_name(code: str, used: set[str]) -> str:
    base = _BAD_SHEET_CHARS.sub("_", code)[:31] or "sheet"
    name, n = base, 1
    while name.lower() in used:
        n += 1
        name = f"{base[: 31 - len(str(n)) - 1]}~{n}"
    used.add(name.lower())
    return name


def write_excel(
    rec: Reconciliation,
    path: str | os.PathLike[str],
    *,
    currency: str | None = None,
) -> Path:
    """Write the workbook (see :meth:`Reconciliation.to_excel`) and return the path."""
    rows = exception_rows(rec, currency=currency)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    wb = xlsx_workbook(target)
    try:
        bold = wb.add_format({"bold": True, "font_size": 14})
        note = wb.add_format({"italic": True, "font_color": "#59636e"})
        ws = wb.add_worksheet("Summary")
        ws.write_string(0, 0, "Three-way match exceptions", bold)
        ws.write_string(
            1,
            0,
            f"{rows.height:,} exceptions; money at risk per currency, each PO line counted once "
            "per supplier, every row per code.",
            note,
        )
        row = 3
        blocks: list[tuple[str, pl.DataFrame]] = [
            ("Totals", totals(rows)),
            ("By supplier", by_supplier(rows)),
            (
                "By exception code",
                by_code(rows).with_columns(
                    meaning=pl.col("code").replace_strict(CODE_MEANING, default="")
                ),
            ),
        ]
        headings = {
            **_HEADINGS,
            "exceptions": "Exceptions",
            "po_lines": "PO lines",
            "invoices": "Invoices",
            "amount_at_risk": "Amount at risk",
            "meaning": "Meaning",
        }
        for label, block in blocks:
            ws.write_string(row, 0, label, wb.add_format({"bold": True}))
            frame, formats = sheet_frame(block, headings)
            write_table(wb, "Summary", frame, formats, position=(row + 1, 0))
            row += frame.height + 4
        sheets: list[tuple[str, pl.DataFrame]] = [("Exceptions", rows)]
        used = {"summary", "exceptions"}
        for code in PRECEDENCE:
            part = rows.filter(pl.col("code") == code)
            if part.height:
                sheets.append((_sheet_name(code, used), part))
        for name, part in sheets:
            write_table(wb, name, *sheet_frame(part, _HEADINGS))
    finally:
        wb.close()
    return target
