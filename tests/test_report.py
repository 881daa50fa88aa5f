"""The exceptions report (HTML) and workbook (XLSX), and formula-safe cells in every CSV/XLSX."""

from __future__ import annotations

import ast
import base64
import csv
import datetime as dt
import hashlib
import io
import re
from collections.abc import Callable, Sequence
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import openpyxl
import polars as pl
import pytest

from scfeeds._cells import FORMULA_START, safe_frame, safe_text
from scfeeds._exports import read_export, write_export
from scfeeds._reconcile import PRECEDENCE, Reconciliation, reconcile
from scfeeds._report import display_source, document_name, money, quantity
from scfeeds.schemas import TableName, schema
from tests.synth_support import reconcile_world

ROOT = Path(__file__).resolve().parent.parent
HOSTILE_NUMBERS = (
    '=HYPERLINK("http://x","y")',
    "+cmd|' /C calc'!A0",
    "@SUM(1+1)",
    "-2+3",
    "\t=1+1",
    "\r=1+1",
)
SCRIPT = '<script>alert("x")</script>'
ATTR = '"><img src=x onerror=alert(1)>'
SOURCE = "http://127.0.0.1:9/v1/feeds/feeds.S1.invoice_lines.inv%201.csv?access_token=s3cret"


def frame(table: TableName, rows: Sequence[dict[str, Any]]) -> pl.DataFrame:
    full = schema(table)
    cols = {c: [r.get(c) for r in rows] for c in full}
    return pl.DataFrame({c: pl.Series(c, v, dtype=full[c], strict=False) for c, v in cols.items()})


def po(supplier: str, number: str, line: str, qty: str, price: str, **kw: Any) -> dict[str, Any]:
    return {
        "supplier_id": supplier,
        "po_number": number,
        "line_number": line,
        "item_id": kw.pop("item_id", f"ITEM{line}"),
        "qty_ordered": Decimal(qty),
        "uom": "EA",
        "unit_price": Decimal(price),
        "currency": "EUR",
        **kw,
    }


def bill(supplier: str, invoice: str, po_number: str, qty: str, price: str) -> dict[str, Any]:
    return {
        "supplier_id": supplier,
        "invoice_number": invoice,
        "invoice_date": dt.date(2026, 3, 2),
        "po_number": po_number,
        "line_number": "1",
        "item_id": "ITEM1",
        "qty_invoiced": Decimal(qty),
        "uom": "EA",
        "unit_price": Decimal(price),
        "line_amount": Decimal(qty) * Decimal(price),
        "currency": "EUR",
        "source": SOURCE,
        "position": "row 7",
    }


@pytest.fixture(scope="module")
def hostile() -> Reconciliation:
    """NOT_SHIPPED lines (one with a script as item id, one under a supplier id that breaks
    out of an attribute, one worth 1,234,567.80) and invoices whose numbers are formulas,
    each billed to a PO that does not exist (NO_PO_REFERENCE carries the number)."""
    pos = frame(
        "po_lines",
        [
            po("S1", "P1", "1", "10", "2", item_id=SCRIPT),
            po("S1", "P2", "1", "1000", "1234.5678"),
            po(ATTR, "P3", "1", "1", "0.125"),
        ],
    )
    invoices = frame(
        "invoice_lines",
        [bill("S1", n, f"NOPE{i}", "1", "10") for i, n in enumerate(HOSTILE_NUMBERS)],
    )
    return reconcile(pos, frame("asn_lines", []), invoices).collect()


@pytest.fixture(scope="module")
def world(make_world: Callable[..., Path]) -> Reconciliation:
    return reconcile_world(make_world(seed=11, pos=50, suppliers=3))


class Page(HTMLParser):
    """Rows of the exceptions table (cells' text and attributes), scripts, and every tag."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.rows: list[dict[str, Any]] = []
        self.scripts: list[str] = []
        self.in_exc = False
        self.in_script = False
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "table":
            self.in_exc = a.get("id") == "exc"
        elif tag == "script":
            self.in_script = True
            self.scripts.append("")
        elif self.in_exc and tag == "tr" and "data-code" in a:
            self.rows.append({"attrs": a, "cells": [], "titles": []})
        elif self.in_exc and tag == "td" and self.rows:
            self.cell = []
            self.rows[-1]["titles"].append(a.get("title"))

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.in_exc = False
        elif tag == "script":
            self.in_script = False
        elif tag == "td" and self.cell is not None:
            self.rows[-1]["cells"].append("".join(self.cell))
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.in_script:
            self.scripts[-1] += data
        elif self.cell is not None:
            self.cell.append(data)


def xlsx_text(value: str) -> str:
    """How openpyxl reads back a string xlsxwriter wrote: control characters as ``_xHHHH_``."""
    return re.sub(r"[\x00-\x08\x0b-\x1f]", lambda m: f"_x{ord(m.group()):04X}_", value)


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


# -- HTML ----------------------------------------------------------------------------------------


def test_html_lists_every_exception_row_largest_first(
    world: Reconciliation, tmp_path: Path
) -> None:
    exc = world.exceptions.collect()
    assert exc.height > 20  # more than polars' repr ever showed
    out = world.to_html(tmp_path / "sub" / "report.html")
    page = parse(out)
    assert len(page.rows) == exc.height
    got = sorted((r["attrs"]["data-code"], r["attrs"]["data-supplier"]) for r in page.rows)
    assert got == sorted(zip(exc["code"].to_list(), exc["supplier_id"].to_list(), strict=True))
    risks = [Decimal(r["attrs"]["data-risk"]) for r in page.rows]
    assert risks == sorted(risks, reverse=True)
    text = out.read_text(encoding="utf-8")
    assert f"of {exc.height:,}</span>" in text
    for code in set(exc["code"].to_list()):
        assert f'<option value="{code}">' in text


def test_html_header_has_money_at_risk_per_supplier_and_code(
    world: Reconciliation, tmp_path: Path
) -> None:
    exc = world.exceptions.collect()
    text = world.to_html(tmp_path / "r.html").read_text(encoding="utf-8")
    currency = world.invoices.select("currency").collect()["currency"].drop_nulls()[0]
    # Per code: the sum of every row of that code, formatted with currency and separators.
    code = exc["code"].value_counts(sort=True)["code"][0]
    for cur, rows in _by_currency(world, code):
        assert money(rows, cur) in text, (code, cur)
    # Per supplier, each PO line once: with one exception per line the plain sum of rows.
    for sup in exc["supplier_id"].unique().to_list():
        assert f'data-pick="f-supplier" data-value="{sup}"' in text
    assert re.search(rf"{currency} \d{{1,3}}(,\d{{3}})*\.\d\d<", text)
    assert "Money at risk by exception code" in text


def _by_currency(rec: Reconciliation, code: str) -> list[tuple[str, Decimal]]:
    from scfeeds._report import exception_rows

    rows = exception_rows(rec).filter(pl.col("code") == code)
    sums = rows.group_by("currency").agg(pl.col("amount_at_risk").sum())
    return [(c, Decimal(v)) for c, v in sums.iter_rows()]


def test_html_money_two_decimals_separators_currency(
    hostile: Reconciliation, tmp_path: Path
) -> None:
    page = parse(hostile.to_html(tmp_path / "r.html"))
    rows = [r["cells"] for r in page.rows if r["attrs"]["data-code"] == "NOT_SHIPPED"]
    big = next(c for c in rows if "P2" in c)
    assert "EUR 1,234,567.80" in big  # 1000 x 1234.5678 = 1234567.8; S1 bills in EUR
    small = next(c for c in rows if "P3" in c)
    assert "0.13" in small  # 0.125 rounds half up; no invoice of that supplier: no currency
    assert "-1,000" in big  # quantity variance with separators, no trailing zeros
    assert money(Decimal("-1234.565"), "USD") == "USD -1,234.57"
    assert money(None) == ""
    assert quantity(Decimal("1200.5000")) == "1,200.5"
    assert quantity(Decimal("24.0000")) == "24"


def test_html_escapes_hostile_text_and_runs_only_its_own_script(
    hostile: Reconciliation, tmp_path: Path
) -> None:
    out = hostile.to_html(tmp_path / "r.html", title="<b>Q1</b>")
    text = out.read_text(encoding="utf-8")
    assert SCRIPT not in text
    assert ATTR not in text
    assert "<b>Q1</b>" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text
    page = parse(out)
    assert len(page.scripts) == 1
    assert not any(t == "img" for t, _ in page.tags)
    # The hostile values come back intact as text.
    cells = [c.replace("\r\n", "\n").replace("\r", "\n") for r in page.rows for c in r["cells"]]
    assert SCRIPT in cells
    assert {r["attrs"]["data-supplier"] for r in page.rows} == {"S1", ATTR}
    for number in HOSTILE_NUMBERS:
        assert number.replace("\r", "\n") in cells
    # Offline: no external resource, and the policy admits only the inline script's hash.
    assert not any(k in ("src", "href") for _, a in page.tags for k in a)
    csp = next(
        a["content"] for t, a in page.tags if a.get("http-equiv") == "Content-Security-Policy"
    )
    assert csp is not None
    assert "default-src 'none'" in csp
    digest = base64.b64encode(hashlib.sha256(page.scripts[0].encode()).digest()).decode()
    assert f"'sha256-{digest}'" in csp


def test_html_evidence_is_a_document_name_and_position(
    hostile: Reconciliation, tmp_path: Path
) -> None:
    page = parse(hostile.to_html(tmp_path / "r.html"))
    row = next(r for r in page.rows if r["attrs"]["data-code"] == "NO_PO_REFERENCE")
    assert "feeds.S1.invoice_lines.inv 1.csv" in row["cells"]
    assert "row 7" in row["cells"]
    assert "http://127.0.0.1:9/v1/feeds/feeds.S1.invoice_lines.inv%201.csv" in row["titles"]
    assert "s3cret" not in (tmp_path / "r.html").read_text(encoding="utf-8")


def test_document_name_and_display_source() -> None:
    assert document_name("feeds/SUP001/invoice_lines/inv_00001_01.csv") == "inv_00001_01.csv"
    assert document_name(r"C:\feeds\810_00001.x12") == "810_00001.x12"
    assert document_name("s3://bucket/a/b.xml?versionId=3") == "b.xml"
    assert document_name(None) is None
    assert display_source("https://u:pw@host:8443/a/b.csv?key=k#f") == "https://host:8443/a/b.csv"
    assert display_source("feeds/a.csv") == "feeds/a.csv"


# -- XLSX ----------------------------------------------------------------------------------------


def test_workbook_sheets_tables_frozen_header_and_money_formats(
    world: Reconciliation, tmp_path: Path
) -> None:
    exc = world.exceptions.collect()
    path = world.to_excel(tmp_path / "x" / "exceptions.xlsx")
    wb = openpyxl.load_workbook(path)
    codes = [c for c in PRECEDENCE if c in set(exc["code"].to_list())]
    assert wb.sheetnames == ["Summary", "Exceptions", *codes]
    for name in ["Exceptions", *codes]:
        ws = wb[name]
        assert ws.freeze_panes == "A2", name
        (table,) = ws.tables.values()
        assert table.autoFilter is not None
        assert table.autoFilter.ref == table.ref
        header = [c.value for c in ws[1]]
        assert header[:4] == ["Code", "Supplier", "Currency", "Amount at risk"]
        want = exc if name == "Exceptions" else exc.filter(pl.col("code") == name)
        assert ws.max_row - 1 == want.height, name
        risk = [ws.cell(row=i, column=4) for i in range(2, ws.max_row + 1)]
        assert all(c.number_format == "#,##0.00" for c in risk)
        assert sorted(round(c.value, 4) for c in risk) == sorted(
            float(v) for v in want["amount_at_risk"]
        )
        if name != "Exceptions":
            assert {ws.cell(row=i, column=1).value for i in range(2, ws.max_row + 1)} == {name}
    summary = wb["Summary"]
    assert summary["A1"].value == "Three-way match exceptions"
    assert len(summary.tables) == 3
    texts = [c.value for row in summary.iter_rows() for c in row if isinstance(c.value, str)]
    assert "By supplier" in texts
    assert "By exception code" in texts
    money_cells = [
        c for row in summary.iter_rows() for c in row if isinstance(c.value, float | int)
    ]
    assert any(c.number_format == "#,##0.00" for c in money_cells)


def test_workbook_never_holds_a_formula(hostile: Reconciliation, tmp_path: Path) -> None:
    path = hostile.to_excel(tmp_path / "h.xlsx")
    wb = openpyxl.load_workbook(path)
    seen: set[str] = set()
    for ws in wb.worksheets:
        for row in ws.iter_rows():
            for c in row:
                assert c.data_type != "f", (ws.title, c.coordinate, c.value)
                if isinstance(c.value, str):
                    assert not c.value.startswith(FORMULA_START), (ws.title, c.value)
                    seen.add(c.value)
    for number in HOSTILE_NUMBERS:
        assert "'" + xlsx_text(number) in seen
    assert SCRIPT in seen  # text, not markup, in a workbook
    assert not any("s3cret" in v for v in seen)


# -- formula-safe CSV and every writer -----------------------------------------------------------


def test_safe_text_follows_owasp() -> None:
    for number in HOSTILE_NUMBERS:
        assert safe_text(number) == "'" + number
    for fine in ("INV-000042K", "4500000001", "", "a=b", " =1"):
        assert safe_text(fine) == fine
    df = pl.DataFrame(
        {
            "s": [*HOSTILE_NUMBERS, "ok", None],
            "n": [-1.5] * len(HOSTILE_NUMBERS) + [2.0, None],
            "l": [["=a", "b"]] * (len(HOSTILE_NUMBERS) + 2),
        }
    )
    out = safe_frame(df)
    assert out["s"].to_list() == ["'" + n for n in HOSTILE_NUMBERS] + ["ok", None]
    assert out["n"].to_list() == df["n"].to_list()  # numbers untouched
    assert out["l"][0] == "'=a;b"


def test_exceptions_csv_never_starts_a_formula(hostile: Reconciliation, tmp_path: Path) -> None:
    from scfeeds.cli import _write_report

    _write_report(hostile, tmp_path / "exceptions.html")
    with (tmp_path / "exceptions.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == hostile.exceptions.collect().height
    invoices = {r["invoice_number"] for r in rows if r["invoice_number"]}
    assert invoices == {"'" + n for n in HOSTILE_NUMBERS}
    for r in rows:
        for col, value in r.items():
            if col not in ("variance_qty", "variance_amount"):
                assert not value.startswith(FORMULA_START), (col, value)
    # Numbers stay numbers: a negative variance is not quoted.
    assert any(r["variance_qty"].startswith("-") for r in rows)


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_supplier_export_writer_is_formula_safe(fmt: str, tmp_path: Path) -> None:
    rows = [po("S1", n, str(i + 1), "1", "-2") for i, n in enumerate(HOSTILE_NUMBERS)]
    out = tmp_path / f"po.{fmt}"
    write_export(frame("po_lines", rows), out, table="po_lines", preset="acme", fmt=fmt)
    if fmt == "csv":
        text = out.read_bytes().decode("utf-8-sig")
        values = {c for line in csv.reader(io.StringIO(text, newline="")) for c in line}
    else:
        ws = openpyxl.load_workbook(out).active
        assert ws is not None
        values = set()
        for row in ws.iter_rows():
            for c in row:
                assert c.data_type != "f"
                if isinstance(c.value, str):
                    values.add(c.value)
    for number in HOSTILE_NUMBERS:
        assert "'" + (xlsx_text(number) if fmt == "xlsx" else number) in values
    # Reading the export back drops exactly the guard: the round trip is exact.
    assert read_export(out, table="po_lines")["po_number"].to_list() == list(HOSTILE_NUMBERS)


def test_every_csv_and_xlsx_writer_goes_through_the_cells_module() -> None:
    """A new writer of CSV/XLSX in the package must use scfeeds._cells (or be listed here)."""
    writers = re.compile(
        r"\.write_csv\(|\.write_excel\(|\.to_csv\(|csv\.(Dict)?[wW]riter\(|xlsxwriter\.Workbook\("
    )
    offenders = []
    for path in sorted((ROOT / "scfeeds").rglob("*.py")):
        if path.name == "_cells.py":
            continue
        text = path.read_text(encoding="utf-8")
        if writers.search(text):
            imports = {
                node.module
                for node in ast.walk(ast.parse(text))
                if isinstance(node, ast.ImportFrom)
            }
            if "scfeeds._cells" not in imports:
                offenders.append(path.relative_to(ROOT).as_posix())
    assert offenders == []
