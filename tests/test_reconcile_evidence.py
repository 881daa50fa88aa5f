"""Exception rows name their documents, summaries add up, credit memos net out."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from scfeeds._cxml import read_xml
from scfeeds._reconcile import Reconciliation, reconcile
from scfeeds._validate import validate
from scfeeds._x12 import read_x12
from scfeeds.schemas import TableName
from tests.test_reconcile import DAY, bill, po_line, ship
from tests.test_reconcile import _frame as frame

D = Decimal


def _run(
    po: list[dict[str, Any]], asn: list[dict[str, Any]], inv: list[dict[str, Any]]
) -> Reconciliation:
    def prov(table: TableName, rows: list[dict[str, Any]], name: str) -> pl.DataFrame:
        return frame(table, rows).with_columns(
            source=pl.lit(name), position=pl.format("row {}", pl.int_range(1, pl.len() + 1))
        )

    return reconcile(
        prov("po_lines", po, "po.csv"),
        prov("asn_lines", asn, "asn.csv"),
        prov("invoice_lines", inv, "inv.csv"),
    )


def test_every_exception_names_a_document_and_its_po_line() -> None:
    po = [po_line("1"), po_line("2"), po_line("3"), po_line("4")]
    asn = [ship("2"), ship("3", qty=4, shipment_id="SH9")]
    inv = [bill("3", qty=4), bill("4", qty=3, invoice_number="INV-7")]
    exc = _run(po, asn, inv).exceptions.collect()
    by = {(r["code"], r["line_number"]): r for r in exc.iter_rows(named=True)}
    # nothing shipped or billed: the PO line itself is the document
    assert by[("NOT_SHIPPED", "1")]["source"] == "po.csv"
    assert by[("NOT_SHIPPED", "1")]["position"] == "row 1"
    # shipped, never billed: the shipment that delivered it
    row = by[("NOT_INVOICED", "2")]
    assert (row["shipment_id"], row["source"], row["position"]) == ("SH1", "asn.csv", "row 1")
    # short shipped: the shipment, and the invoice of the line as well
    row = by[("SHORT_SHIPPED", "3")]
    assert (row["shipment_id"], row["invoice_number"]) == ("SH9", "INV-000001A")
    # billed, nothing received: the invoice line
    row = by[("INVOICED_NOT_RECEIVED", "4")]
    assert (row["invoice_number"], row["source"], row["position"]) == ("INV-7", "inv.csv", "row 2")
    for r in exc.iter_rows(named=True):
        assert r["source"] is not None
        assert r["position"] is not None
        assert r["po_source"] == "po.csv"
        assert r["po_position"] == f"row {r['line_number']}"


def test_a_suspect_pair_is_reported_with_both_numbers() -> None:
    inv = [
        bill(invoice_number="INV-000041", line_amount=D(20)),
        bill(invoice_number="INV-000014", invoice_date=DAY.replace(day=4), line_amount=D(20)),
    ]
    exc = _run([po_line()], [ship()], inv).exceptions.collect()
    row = exc.filter(pl.col("code") == "DUPLICATE_SUSPECT").row(0, named=True)
    assert (row["invoice_number"], row["related_invoice_number"]) == ("INV-000014", "INV-000041")
    assert (row["source"], row["position"]) == ("inv.csv", "row 2")
    assert (row["po_source"], row["po_position"]) == ("po.csv", "row 1")


def test_summary_counts_money_once_per_line() -> None:
    # line 1: billed, never shipped -> NOT_SHIPPED and INVOICED_NOT_RECEIVED on one line
    po = [po_line("1", qty=10, price=3), po_line("2", qty=10, price=2)]
    asn = [ship("2", qty=6)]
    inv = [bill("1", qty=10, price=3), bill("2", qty=6, price=2)]
    rec = _run(po, asn, inv)
    lines = rec.lines.collect()
    per_line = lines["amount_at_risk"].sum()
    assert per_line == D(30) + D(8)
    summary = rec.summary()
    line_status = summary.by_status.filter(pl.col("level") == "line")
    line_codes = summary.by_code.filter(pl.col("level") == "line")
    assert line_status["amount_at_risk"].sum() == per_line
    assert line_codes["amount_at_risk"].sum() == per_line
    totals = summary.totals.filter(pl.col("level") == "line").row(0, named=True)
    assert (totals["count"], totals["with_exceptions"], totals["amount_at_risk"]) == (
        2,
        2,
        per_line,
    )
    # the overlap is shown, labelled, not hidden: both codes carry the line's 30 as exposure
    exposure = dict(zip(line_codes["code"], line_codes["exposure"], strict=True))
    assert exposure["NOT_SHIPPED"] == D(30)
    assert exposure["INVOICED_NOT_RECEIVED"] == D(30)
    once = dict(zip(line_codes["code"], line_codes["amount_at_risk"], strict=True))
    assert once["INVOICED_NOT_RECEIVED"] == D(30)
    assert once["NOT_SHIPPED"] == D(0)
    assert "each line once" in repr(summary)
    assert "overlapping" in summary._repr_html_()


@pytest.mark.parametrize(
    ("credit", "expected"),
    [
        (-2, ("MATCHED", D(10))),  # over-billed by 2, credited 2
        (-12, ("NOT_INVOICED", D(0))),  # the whole invoice credited: received, not billed
    ],
)
def test_credit_memo_nets_against_the_invoiced_quantity(
    credit: int, expected: tuple[str, Decimal]
) -> None:
    inv = [
        bill("1", qty=12, price=2),
        bill("1", qty=credit, price=2, invoice_number="CM-1", invoice_date=DAY.replace(day=9)),
    ]
    lines = _run([po_line("1", qty=10, price=2)], [ship("1", qty=10)], inv).lines.collect()
    status, qty = lines.select(pl.col("status").cast(pl.String), "qty_invoiced").row(0)
    assert (status, qty) == expected


def _x12_810(number: str, qty: int, *, credit: bool) -> bytes:
    big = f"BIG*20260310*{number}**P1" + ("***CR" if credit else "")
    body = [big, "N1*SE*Supplier*92*S1", f"IT1*1*{qty}*EA*2.00**BP*ITEM1", f"TDS*{qty * 200}"]
    segs = [
        "ISA*00*          *00*          *ZZ*S1             *ZZ*BUYER          *260310*1200*U*00401"
        "*000000001*0*P*>",
        "GS*IN*S1*BUYER*20260310*1200*1*X*004010",
        "ST*810*0001",
        *body,
        f"SE*{len(body) + 2}*0001",
        "GE*1*1",
        "IEA*1*000000001",
    ]
    return ("~".join(segs) + "~").encode()


def _cxml_invoice(number: str, qty: int, *, credit: bool) -> bytes:
    from scfeeds._cxml import to_cxml

    inv = frame(
        "invoice_lines",
        [bill("1", qty=-qty if credit else qty, price=2, invoice_number=number, supplier_id="S1")],
    )
    return to_cxml(inv, table="invoice_lines", payload_id=number, timestamp="t")


@pytest.mark.parametrize("fmt", ["x12", "cxml"])
def test_credit_memos_read_from_feeds_net_out(fmt: str, tmp_path: Path) -> None:
    """An invoice billing 12 of 10 and a credit memo for 2, read from real documents (810
    BIG07 = CR with a positive IT102; cXML purpose="creditMemo"): the line matches."""
    if fmt == "x12":
        inv = read_x12([_x12_810("INV-1", 12, credit=False), _x12_810("INV-2", 2, credit=True)])
        lines = inv.invoice_lines
    else:
        paths = []
        for number, qty, credit in (("INV-1", 12, False), ("INV-2", 2, True)):
            path = tmp_path / f"{number}.xml"
            path.write_bytes(_cxml_invoice(number, qty, credit=credit))
            paths.append(path)
        lines = read_xml(paths, table="invoice_lines")
    assert sorted(lines["qty_invoiced"].to_list()) == [D(-2), D(12)]
    good, failures = validate(lines, "invoice_lines")
    assert failures.height == 0  # a credit memo is a document, not a quarantined row
    rec = reconcile(
        frame("po_lines", [po_line("1", qty=10)]), frame("asn_lines", [ship("1")]), good
    )
    line = rec.lines.collect().row(0, named=True)
    assert (line["status"], line["qty_invoiced"], line["n_invoices"]) == ("MATCHED", D(10), 2)
    assert rec.exceptions.collect().height == 0


def test_summary_shows_every_row() -> None:
    po = [po_line("1", supplier_id=f"S{k:02d}", po_number=f"P{k}") for k in range(1, 41)]
    summary = _run(po, [], []).summary()
    assert summary.by_supplier.height == 40
    text = repr(summary)
    assert all(f"S{k:02d}" in text for k in range(1, 41))
    assert "…" not in text
    assert all(f"S{k:02d}" in summary._repr_html_() for k in range(1, 41))
