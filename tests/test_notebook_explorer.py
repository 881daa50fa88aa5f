"""scfeeds.notebook.ExceptionsExplorer driven from Python: filters, selection, the lines and the
raw document behind a row, on a synthetic world's files on disk."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import scfeeds
from scfeeds import Reconciliation, reconcile, synth
from scfeeds._report import exception_rows, money
from scfeeds.exceptions import ConfigurationError, ExportError, X12Error, XMLError
from scfeeds.notebook import ExceptionsExplorer
from scfeeds.notebook._explorer import table_row, x12_context, xml_element
from scfeeds.schemas import TableName


class World:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.frames = {
            t: synth.load_world(root, t).collect()
            for t in ("po_lines", "asn_lines", "invoice_lines", "receipts")
        }
        self.rec: Reconciliation = reconcile(
            self.frames["po_lines"],
            self.frames["asn_lines"],
            self.frames["invoice_lines"],
            receipts=self.frames["receipts"],
            conversions=pl.read_parquet(root / "world" / "conversions.parquet"),
        ).collect()

    def frame(self, table: TableName) -> pl.DataFrame:
        return self.frames[table]

    def explorer(self) -> ExceptionsExplorer:
        return ExceptionsExplorer(
            self.rec,
            po=self.frames["po_lines"],
            asn=self.frames["asn_lines"].lazy(),
            invoices=self.frames["invoice_lines"],
            receipts=self.frames["receipts"],
            root=self.root,
        )


@pytest.fixture(scope="module")
def world(make_world: Callable[..., Path]) -> World:
    return World(make_world(seed=11, pos=20, suppliers=2))


def select_where(ex: ExceptionsExplorer, predicate: pl.Expr) -> tuple[dict[str, Any], Any]:
    """Select the first listed row matching ``predicate``; its row and detail."""
    listed = ex.rows.head(ex.limit).with_row_index("_i").filter(predicate)
    assert len(listed), "the world has no such exception row"
    row = listed.row(0, named=True)
    return row, ex.select(row["_i"])


def test_filters_list_exactly_the_matching_rows_largest_first(world: World) -> None:
    ex = world.explorer()
    everything = exception_rows(world.rec)
    assert len(ex.rows) == len(everything)
    top = everything.group_by("supplier_id", "code").len().sort("len", descending=True).row(0)
    supplier, code = top[0], str(top[1])
    amounts = everything.filter((pl.col("supplier_id") == supplier) & (pl.col("code") == code))[
        "amount_at_risk"
    ].sort()
    floor = amounts[len(amounts) // 2]  # the median: some rows pass, some do not
    ex.supplier.value = supplier
    ex.code.value = code
    ex.min_amount.value = float(floor)
    expected = everything.filter(
        (pl.col("supplier_id") == supplier)
        & (pl.col("code") == code)
        & (pl.col("amount_at_risk") >= floor)
    )
    assert 0 < len(ex.rows) == len(expected) < len(amounts) + 1
    assert len(ex.table.options) == len(expected)
    shown = ex.rows["amount_at_risk"].to_list()
    assert shown == sorted(shown, reverse=True)
    assert all(a >= floor for a in shown)
    first = ex.rows.row(0, named=True)
    label = ex.table.options[0][0]
    # money as the report writes it: two decimals, separators, currency
    assert money(first["amount_at_risk"], first["currency"]) in label
    assert f"<b>{len(expected):,}</b>" in ex.count.value
    ex.code.value = "(all)"
    ex.supplier.value = "(all)"
    ex.min_amount.value = 0.0
    assert len(ex.rows) == len(everything)


def test_x12_invoice_row_shows_its_po_line_invoice_lines_and_segments(world: World) -> None:
    ex = world.explorer()
    row, detail = select_where(
        ex,
        pl.col("position").str.starts_with("segment ")
        & pl.col("source").str.contains("/invoice_lines/")
        & pl.col("line_number").is_not_null(),
    )
    key = {c: row[c] for c in ("supplier_id", "po_number", "line_number")}
    po_line = detail.lines["po"]
    assert len(po_line) == 1
    assert po_line.row(0, named=True)["po_number"] == row["po_number"]
    assert po_line.row(0, named=True)["line_number"] == row["line_number"]
    expected = world.frame("invoice_lines").filter(*[pl.col(c) == v for c, v in key.items()])
    assert len(detail.lines["invoices"]) == len(expected) > 0
    assert sorted(detail.lines["invoices"]["position"].to_list()) == sorted(
        expected["position"].to_list()
    )
    for table, name in (("asn_lines", "asn"), ("receipts", "receipts")):
        n = world.frame(table).filter(*[pl.col(c) == v for c, v in key.items()]).height
        assert len(detail.lines[name]) == n
    # the raw segments: the marked one is the line's own segment, as read_x12 reads it
    ordinal = int(row["position"].split()[1])
    segments = scfeeds.read_x12(world.root / row["source"]).segments
    own = segments.filter(pl.col("segment") == ordinal).row(0, named=True)
    marked = [ln for ln in detail.raw.splitlines() if ln.startswith(">")]
    assert len(marked) == 1
    assert f" {ordinal}  {own['segment_id']}" in marked[0]
    assert all(e in marked[0] for e in own["elements"] if e)
    assert len(detail.raw.splitlines()) > 3  # segments around it too
    # and the widget shows it
    assert own["segment_id"] in ex.detail_html.value
    assert row["po_number"] in ex.detail_html.value


def test_cxml_row_shows_the_element_at_its_xpath(world: World) -> None:
    ex = world.explorer()
    row, detail = select_where(
        ex,
        pl.col("position").str.starts_with("/cXML/") & pl.col("line_number").is_not_null(),
    )
    element = ET.fromstring(detail.raw)
    assert element.tag == row["position"].rsplit("/", 1)[1].split("[")[0]
    line = world.frame("invoice_lines" if "/invoice_lines/" in row["source"] else "asn_lines")
    own = line.filter(pl.col("source") == row["source"], pl.col("position") == row["position"])
    assert len(own) == 1
    # the element is that line's: its line number is an attribute of it
    assert str(int(own["line_number"][0])) in element.attrib.values()


def test_csv_row_shows_the_header_and_that_row(world: World) -> None:
    ex = world.explorer()
    row, detail = select_where(
        ex, pl.col("position").str.starts_with("row ") & pl.col("source").str.ends_with(".csv")
    )
    raw = (world.root / row["source"]).read_bytes()
    lines = raw.decode("utf-8", "replace").splitlines()
    header, data_line = lines[0], lines[int(row["position"].split()[1])]
    sep = max(",;\t|", key=header.count)
    expected = [f"{h}: {v}" for h, v in zip(header.split(sep), data_line.split(sep), strict=True)]
    shown = detail.raw.splitlines()
    assert len(shown) == len(expected)
    for got, want in zip(shown, expected, strict=True):  # same column, same value
        if "\ufffd" not in want:
            assert got == want.replace('"', "")
    assert row["po_number"] in detail.raw


def test_invoice_level_row_shows_the_invoice_lines(world: World) -> None:
    ex = world.explorer()
    row, detail = select_where(ex, pl.col("level") == "invoice")
    expected = world.frame("invoice_lines").filter(
        pl.col("supplier_id") == row["supplier_id"],
        pl.col("invoice_number") == row["invoice_number"],
    )
    assert len(detail.lines["invoices"]) == len(expected) > 0


def test_static_snapshot_carries_the_filters_rows_and_detail(world: World) -> None:
    ex = world.explorer()
    ex.min_amount.value = 100.0
    row, _ = select_where(ex, pl.col("amount_at_risk") >= Decimal(100))
    bundle = ex._repr_mimebundle_()
    html = bundle["text/html"]
    assert 'class="scfeeds-static"' in html
    assert "min at risk 100.00" in html
    assert money(row["amount_at_risk"], row["currency"]) in html
    assert "Raw document" in html
    assert f"{len(ex.rows)} of {len(ex.all_rows)}" in bundle["text/plain"]


def test_unreadable_source_says_so(world: World) -> None:
    ex = ExceptionsExplorer(world.rec)  # no root: relative sources cannot be read
    detail = ex.select(0)
    assert detail.raw.startswith("(source not readable here")
    assert detail.lines == {}


def test_xlsx_row_shows_that_rows_cells(world: World) -> None:
    ex = world.explorer()
    row, detail = select_where(
        ex, pl.col("position").str.starts_with("row ") & pl.col("source").str.ends_with(".xlsx")
    )
    sheet = pl.read_excel(
        world.root / row["source"], engine="calamine", has_header=False, infer_schema_length=0
    )
    n = int(row["position"].split()[1])
    expected = [
        f"{h}: {'' if v is None else v}" for h, v in zip(sheet.row(0), sheet.row(n), strict=True)
    ]
    assert detail.raw.splitlines() == expected
    assert any(row["po_number"] in line for line in expected)


def test_raw_document_helpers_raise_scfeeds_errors_that_say_what_to_do(tmp_path: Path) -> None:
    isa = (
        "ISA*00*          *00*          *ZZ*BUYER          *ZZ*SUP            "
        "*240101*1200*U*00401*000000001*0*P*>~"
    )
    text = isa + "GS*PO*BUYER*SUP*20240101*1200*1*X*004010~"
    with pytest.raises(X12Error, match=r"not an X12 interchange.*ISA segment"):
        x12_context("GS*PO~", 1)
    with pytest.raises(X12Error, match=r"segment 9 is past the end.*read it again") as past:
        x12_context(text, 9)
    assert past.value.position == "segment 9"
    doc = tmp_path / "doc.xml"
    doc.write_text("<cXML><Header/></cXML>")
    with pytest.raises(ConfigurationError, match="starts with /cXML"):
        xml_element(doc, "/Other/Header")
    with pytest.raises(XMLError, match=r"no element at /cXML/Request.*read it again"):
        xml_element(doc, "/cXML/Request")
    export = tmp_path / "export.csv"
    export.write_text("PO,Line\nPO-1,1\n")
    assert table_row(export, 1) == "PO: PO-1\nLine: 1"
    with pytest.raises(ExportError, match=r"row 2 is past the end of export\.csv.*read it again"):
        table_row(export, 2)
