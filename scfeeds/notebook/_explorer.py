"""ExceptionsExplorer: filter a reconciliation's exceptions, select one, see the lines behind it.

Filters (supplier, code, minimum amount at risk) narrow the exception rows, listed largest
amount first with money as the exceptions report shows it (:mod:`scfeeds._report`: two
decimals, separators, currency). Selecting a row shows its PO line, the ASN, receipt and
invoice lines of that PO line (matched on ``supplier_id, po_number, line_number`` as
:func:`scfeeds.reconcile` matches them; an invoice-level row shows its invoice's lines), and
the raw document behind the row's evidence (``source`` / ``position``): the X12 segments
around the line's segment, the cXML element at its XPath, or the CSV / XLSX row.
"""

from __future__ import annotations

import csv
import io
import itertools
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import ipywidgets as widgets
import polars as pl

from scfeeds._report import exception_rows, money, quantity
from scfeeds.exceptions import (
    ConfigurationError,
    ExportError,
    ScfeedsError,
    X12Error,
    XMLError,
)
from scfeeds.notebook import _format as fmt

if TYPE_CHECKING:
    from scfeeds._reconcile._result import Reconciliation

_ALL: Final = "(all)"
_KEY: Final = ("supplier_id", "po_number", "line_number")
#: Segments shown before and after the row's own segment.
_CONTEXT: Final = 4
# Columns shown per document kind (those present in the frame given).
_SHOWN: Final[dict[str, tuple[str, ...]]] = {
    "po": (
        "po_number",
        "line_number",
        "item_id",
        "qty_ordered",
        "uom",
        "unit_price",
        "currency",
        "po_date",
        "source",
        "position",
    ),
    "asn": (
        "shipment_id",
        "line_number",
        "item_id",
        "qty_shipped",
        "uom",
        "ship_date",
        "source",
        "position",
    ),
    "receipts": (
        "line_number",
        "item_id",
        "qty_received",
        "uom",
        "receipt_date",
        "location",
        "source",
        "position",
    ),
    "invoices": (
        "invoice_number",
        "line_number",
        "item_id",
        "qty_invoiced",
        "uom",
        "unit_price",
        "line_amount",
        "currency",
        "invoice_date",
        "source",
        "position",
    ),
}
_TITLES: Final = {
    "po": "PO line",
    "asn": "ASN lines",
    "receipts": "Receipts",
    "invoices": "Invoice lines",
}
_MONEY: Final = frozenset({"unit_price", "line_amount"})
_QTY: Final = frozenset({"qty_ordered", "qty_shipped", "qty_received", "qty_invoiced"})


@dataclass(frozen=True)
class Detail:
    """What the explorer shows for the selected row: the row, its document lines per kind
    (``po``, ``asn``, ``receipts``, ``invoices``) and the raw document text."""

    row: dict[str, Any]
    lines: dict[str, pl.DataFrame]
    raw: str


def _frame(value: pl.DataFrame | pl.LazyFrame | None) -> pl.DataFrame | None:
    if value is None:
        return None
    return value.collect() if isinstance(value, pl.LazyFrame) else value


class ExceptionsExplorer:
    """Filter, list and open the exception rows of a reconciliation.

    Parameters
    ----------
    rec
        The :class:`~scfeeds.Reconciliation` (collected or not).
    po, asn, invoices, receipts
        The frames the match read (any may be omitted: its lines are then not shown).
    root
        Directory that relative ``source`` paths are resolved against (the world or feed
        root); absolute paths are read as they are.
    currency
        Overrides every row's currency, as in :meth:`Reconciliation.to_html`.
    limit
        Most rows listed at once (the largest amounts first); the count says how many match.

    The widgets are attributes: ``supplier``, ``code``, ``min_amount`` (filters), ``table``
    (the rows; its value is the selected row's index in :attr:`rows`), ``detail_html``.
    """

    def __init__(
        self,
        rec: Reconciliation,
        *,
        po: pl.DataFrame | pl.LazyFrame | None = None,
        asn: pl.DataFrame | pl.LazyFrame | None = None,
        invoices: pl.DataFrame | pl.LazyFrame | None = None,
        receipts: pl.DataFrame | pl.LazyFrame | None = None,
        root: str | Path | None = None,
        currency: str | None = None,
        limit: int = 500,
    ) -> None:
        self.all_rows = exception_rows(rec, currency=currency).with_row_index("_row")
        self.frames = {
            name: frame
            for name, frame in (
                ("po", _frame(po)),
                ("asn", _frame(asn)),
                ("receipts", _frame(receipts)),
                ("invoices", _frame(invoices)),
            )
            if frame is not None
        }
        self.root = Path(root) if root is not None else None
        self.limit = limit
        suppliers = sorted(self.all_rows["supplier_id"].drop_nulls().unique().to_list())
        codes = sorted(self.all_rows["code"].cast(pl.String).drop_nulls().unique().to_list())
        self.supplier = widgets.Dropdown(
            options=[_ALL, *suppliers], value=_ALL, description="supplier"
        )
        self.code = widgets.Dropdown(options=[_ALL, *codes], value=_ALL, description="code")
        self.min_amount = widgets.FloatText(value=0.0, description="min at risk")
        self.count = widgets.HTML()
        self.table = widgets.Select(options=[], rows=12, layout=widgets.Layout(width="100%"))
        self.detail_html = widgets.HTML()
        for w in (self.supplier, self.code, self.min_amount):
            w.observe(self._on_filter, names="value")
        self.table.observe(self._on_select, names="value")
        self.box = widgets.VBox(
            [
                widgets.HBox([self.supplier, self.code, self.min_amount]),
                self.count,
                self.table,
                self.detail_html,
            ]
        )
        self.rows = self.all_rows.head(0)
        self.detail: Detail | None = None
        self._handle: Any = None
        self._on_filter({})

    # -- filtering and selection -----------------------------------------------------------

    def _on_filter(self, _change: dict[str, Any]) -> None:
        rows = self.all_rows
        if self.supplier.value != _ALL:
            rows = rows.filter(pl.col("supplier_id") == self.supplier.value)
        if self.code.value != _ALL:
            rows = rows.filter(pl.col("code").cast(pl.String) == self.code.value)
        if self.min_amount.value:
            floor = Decimal(str(self.min_amount.value))
            rows = rows.filter(pl.col("amount_at_risk") >= floor)
        self.rows = rows
        shown = rows.head(self.limit)
        self.count.value = f"<b>{len(rows):,}</b> of {len(self.all_rows):,} exception rows" + (
            f" (largest {len(shown):,} listed)" if len(shown) < len(rows) else ""
        )
        self.detail = None
        self.detail_html.value = ""
        self.table.options = [
            (self._label(r), i) for i, r in enumerate(shown.iter_rows(named=True))
        ]
        self.table.value = None
        fmt.update_shown(self._handle, self)

    @staticmethod
    def _label(r: dict[str, Any]) -> str:
        line = f"/{r['line_number']}" if r["line_number"] is not None else ""
        where = " ".join(str(r[c]) for c in ("document", "position") if r[c] is not None)
        return (
            f"{r['code']:<22} {r['supplier_id'] or '':<8} "
            f"{money(r['amount_at_risk'], r['currency']):>18}  "
            f"PO {r['po_number'] or '?'}{line}  {where}"
        )

    def select(self, index: int) -> Detail:
        """Select the ``index``-th listed row (as clicking it does) and return its detail."""
        self.table.value = index
        assert self.detail is not None
        return self.detail

    def _on_select(self, change: dict[str, Any]) -> None:
        index = change["new"]
        if index is None:
            return
        row = self.rows.row(int(index), named=True)
        self.detail = Detail(row, self._lines(row), self._raw(row))
        self.detail_html.value = self._detail_html(self.detail)
        fmt.update_shown(self._handle, self)

    def _lines(self, row: dict[str, Any]) -> dict[str, pl.DataFrame]:
        out: dict[str, pl.DataFrame] = {}
        for name, frame in self.frames.items():
            if row["line_number"] is not None and all(c in frame.columns for c in _KEY):
                cond = [pl.col(c) == row[c] for c in _KEY]
                if name == "invoices" and row["level"] == "invoice" and row["invoice_number"]:
                    cond = [
                        pl.col("supplier_id") == row["supplier_id"],
                        pl.col("invoice_number") == row["invoice_number"],
                    ]
            elif name == "invoices" and row["invoice_number"] is not None:
                cond = [
                    pl.col("supplier_id") == row["supplier_id"],
                    pl.col("invoice_number") == row["invoice_number"],
                ]
            elif name == "po" and row["po_number"] is not None:
                cond = [
                    pl.col("supplier_id") == row["supplier_id"],
                    pl.col("po_number") == row["po_number"],
                ]
            else:
                continue
            cols = [c for c in _SHOWN[name] if c in frame.columns]
            out[name] = frame.filter(*cond).select(cols)
        return out

    # -- the raw document ------------------------------------------------------------------

    def _path(self, source: str | None) -> Path | None:
        if not source or "://" in source:
            return None
        path = Path(source)
        if not path.is_absolute() and self.root is not None:
            path = self.root / path
        return path if path.is_file() else None

    def _raw(self, row: dict[str, Any]) -> str:
        source, position = row["source"], row["position"]
        path = self._path(source)
        if path is None or not position:
            return f"(source not readable here: {source or 'none'})"
        try:
            if position.startswith("segment "):
                return x12_context(path.read_text("utf-8", "replace"), int(position.split()[1]))
            if position.startswith("/"):
                return xml_element(path, position)
            if position.startswith("row "):
                return table_row(path, int(position.split()[1]))
        except (OSError, ValueError, ET.ParseError, ScfeedsError) as exc:
            return f"(could not read {path.name}: {exc})"
        return f"(position {position!r} not understood)"

    # -- display ---------------------------------------------------------------------------

    def _detail_html(self, d: Detail) -> str:
        r = d.row
        head = (
            f"<b>{escape(str(r['code']))}</b> · {escape(str(r['supplier_id']))} · "
            f"at risk {escape(money(r['amount_at_risk'], r['currency']))} · "
            f"variance {escape(money(r['variance_amount'], r['currency']))} / "
            f"qty {escape(quantity(r['variance_qty']))}"
        )
        parts = [f"<div>{head}</div>"]
        for name, frame in d.lines.items():
            parts.append(f"<h4 style='margin:8px 0 2px'>{_TITLES[name]} ({len(frame)})</h4>")
            parts.append(_html_table(frame))
        where = " ".join(escape(str(r[c])) for c in ("document", "position") if r[c])
        parts.append(f"<h4 style='margin:8px 0 2px'>Raw document: {where}</h4>")
        parts.append(
            "<pre style='font-size:12px;background:#f6f8fa;padding:6px;overflow-x:auto'>"
            f"{escape(d.raw)}</pre>"
        )
        return "".join(parts)

    def static_html(self) -> str:
        """The explorer's state as plain HTML (filters, count, listed rows, detail): the
        ``text/html`` of its display, shown where the widget cannot render."""
        filters = (
            f"supplier {escape(str(self.supplier.value))} · code {escape(str(self.code.value))}"
            f" · min at risk {self.min_amount.value:,.2f}"
        )
        listed = "\n".join(escape(label) for label, _ in itertools.islice(self.table.options, 20))
        return fmt.static_html(
            f"<div style='font-family:monospace;font-size:12px'>{filters}</div>"
            f"<div>{self.count.value}</div><pre style='font-size:12px'>{listed}</pre>"
            f"{self.detail_html.value}"
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        plain = f"ExceptionsExplorer({len(self.rows)} of {len(self.all_rows)} rows)"
        return fmt.mimebundle(self.box, plain, self.static_html(), **kwargs)

    def show(self) -> None:
        """Display the explorer; the output saved with the notebook follows its state."""
        self._handle = fmt.show(self)


def _html_table(frame: pl.DataFrame) -> str:
    if frame.is_empty():
        return "<div style='color:#59636e'>none</div>"
    head = "".join(
        f"<th style='text-align:left;padding:0 8px'>{escape(c)}</th>" for c in frame.columns
    )
    body = []
    for r in frame.iter_rows(named=True):
        cells = []
        for c, v in r.items():
            if c in _MONEY:
                text, align = money(v, r.get("currency")), "right"
            elif c in _QTY:
                text, align = quantity(v), "right"
            else:
                text, align = ("" if v is None else str(v)), "left"
            cells.append(f"<td style='text-align:{align};padding:0 8px'>{escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        "<table style='border-collapse:collapse;font-size:12px'>"
        f"<tr>{head}</tr>{''.join(body)}</table>"
    )


def x12_segments(text: str) -> list[str]:
    """The segments of an X12 file, in order (ISA = segment 1), without terminators."""
    body = text.lstrip()
    if not body.startswith("ISA") or len(body) < 106:
        raise X12Error(
            "not an X12 interchange (no ISA header): pass the text of an X12 file, which "
            "starts with a 106-character ISA segment",
            position="segment 1",
            rule="ISA",
        )
    terminator = body[105]
    return [s.strip("\r\n") for s in body.split(terminator) if s.strip()]


def x12_context(text: str, ordinal: int, context: int = _CONTEXT) -> str:
    """Segments ``ordinal - context .. ordinal + context`` of an X12 file, numbered, the
    ``ordinal``-th (1-based, ISA = 1) marked with ``>``."""
    segments = x12_segments(text)
    if not 1 <= ordinal <= len(segments):
        raise X12Error(
            f"segment {ordinal} is past the end ({len(segments)} segments): the file changed "
            "since its rows were read; read it again, or pass an ordinal from 1 to "
            f"{len(segments)}",
            position=f"segment {ordinal}",
        )
    lo, hi = max(1, ordinal - context), min(len(segments), ordinal + context)
    return "\n".join(
        f"{'>' if n == ordinal else ' '} {n:>5}  {segments[n - 1]}" for n in range(lo, hi + 1)
    )


def xml_element(path: Path, xpath: str) -> str:
    """The element of a cXML file at ``xpath`` (``/cXML/a/b[2]``), as indented XML text."""
    root = ET.parse(path).getroot()
    steps = [s for s in xpath.split("/") if s]
    if not steps or steps[0].split("[")[0] != root.tag:
        raise ConfigurationError(
            f"{xpath} does not start at the root element <{root.tag}>: pass an XPath that "
            f"starts with /{root.tag}"
        )
    element = root.find("/".join(steps[1:])) if len(steps) > 1 else root
    if element is None:
        raise XMLError(
            f"no element at {xpath} in {path.name}: the file changed since its rows were "
            "read; read it again",
            source=str(path),
            position=xpath,
        )
    ET.indent(element)
    return ET.tostring(element, encoding="unicode").strip()


def table_row(path: Path, n: int) -> str:
    """The header and the ``n``-th data row (1-based) of a CSV or XLSX export, one
    ``column: value`` per line."""
    header: Sequence[Any]
    found: Sequence[Any] | None
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        from scfeeds._exports import _read_sheet  # size-checked, every cell as text

        sheet = _read_sheet(path, path.name)
        if sheet.height == 0:
            raise ExportError(
                f"{path.name} is empty: the file changed since its rows were read; read it again",
                source=str(path),
            )
        header = sheet.row(0)
        found = sheet.row(n) if n < sheet.height else None
    else:
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = raw.decode("cp1252", "replace")  # exports from older ERPs
        try:
            dialect: Any = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|")
        except csv.Error:
            dialect = csv.excel
        reader = csv.reader(io.StringIO(text, newline=""), dialect)
        header = next(reader)
        found = next(itertools.islice(reader, n - 1, None), None)
    if found is None:
        raise ExportError(
            f"row {n} is past the end of {path.name}: the file changed since its rows were "
            "read; read it again",
            source=str(path),
            position=f"row {n}",
        )
    return "\n".join(f"{h}: {'' if v is None else v}" for h, v in zip(header, found, strict=False))
