"""Three-way match: each rule, each tolerance boundary, units, fallbacks and duplicates."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import polars as pl
import pytest

from scfeeds._reconcile import (
    LINE_CODES,
    PRECEDENCE,
    ReconcileWarning,
    Reconciliation,
    ReconciliationSummary,
    Tolerances,
    normalize_invoice_number,
    normalize_invoice_number_py,
    reconcile,
)
from scfeeds.exceptions import ConfigurationError
from scfeeds.schemas import TableName, schema

D = Decimal
DAY = dt.date(2026, 3, 2)

Make = Callable[[TableName, Sequence[dict[str, Any]]], pl.DataFrame | pl.LazyFrame]

DEFAULTS: dict[TableName, dict[str, Any]] = {
    "po_lines": {"supplier_id": "S1", "po_number": "P1", "uom": "EA", "currency": "USD"},
    "asn_lines": {"supplier_id": "S1", "shipment_id": "SH1", "po_number": "P1", "uom": "EA"},
    "invoice_lines": {
        "supplier_id": "S1",
        "invoice_number": "INV-000001A",
        "invoice_date": DAY,
        "po_number": "P1",
        "uom": "EA",
        "currency": "USD",
    },
    "receipts": {"supplier_id": "S1", "po_number": "P1", "uom": "EA"},
}


def _frame(table: TableName, rows: Sequence[dict[str, Any]]) -> pl.DataFrame:
    full = schema(table)
    data = [{**DEFAULTS[table], **row} for row in rows]
    if table == "invoice_lines":
        for row in data:
            if "line_amount" not in row and row.get("qty_invoiced") is not None:
                row["line_amount"] = D(str(row["qty_invoiced"])) * D(str(row["unit_price"]))
    cols = {c: [r.get(c) for r in data] for c in full}
    return pl.DataFrame({c: pl.Series(c, v, dtype=full[c], strict=False) for c, v in cols.items()})


@pytest.fixture(params=["DataFrame", "LazyFrame"])
def make(request: pytest.FixtureRequest) -> Make:
    """Builds canonical frames; every test runs with eager and with lazy inputs."""
    if request.param == "DataFrame":
        return _frame
    return lambda table, rows: _frame(table, rows).lazy()


def po_line(line: str = "1", qty: float = 10, price: float = 2, **kw: Any) -> dict[str, Any]:
    return {
        "line_number": line,
        "item_id": f"ITEM{line}",
        "qty_ordered": qty,
        "unit_price": price,
        **kw,
    }


def ship(line: str | None = "1", qty: float = 10, **kw: Any) -> dict[str, Any]:
    return {"line_number": line, "item_id": f"ITEM{line}", "qty_shipped": qty, **kw}


def bill(line: str = "1", qty: float = 10, price: float = 2, **kw: Any) -> dict[str, Any]:
    return {
        "line_number": line,
        "item_id": f"ITEM{line}",
        "qty_invoiced": qty,
        "unit_price": price,
        **kw,
    }


def run(
    make: Make,
    po: Sequence[dict[str, Any]],
    asn: Sequence[dict[str, Any]] = (),
    inv: Sequence[dict[str, Any]] = (),
    **kw: Any,
) -> Reconciliation:
    receipts = kw.pop("receipts", None)
    if receipts is not None:
        kw["receipts"] = make("receipts", receipts)
    return reconcile(make("po_lines", po), make("asn_lines", asn), make("invoice_lines", inv), **kw)


def status(rec: Reconciliation, line: str = "1", po: str = "P1") -> tuple[str, list[str]]:
    row = (
        rec.lines.filter((pl.col("po_number") == po) & (pl.col("line_number") == line))
        .select("status", "flags")
        .collect()
    )
    assert row.height == 1
    return row["status"][0], list(row["flags"][0])


def codes(rec: Reconciliation) -> list[str]:
    return sorted(rec.exceptions.select("code").collect()["code"].to_list())


# -- each rule ---------------------------------------------------------------------------


def test_clean_line_is_matched_and_raises_nothing(make: Make) -> None:
    rec = run(make, [po_line()], [ship()], [bill()])
    assert status(rec) == ("MATCHED", [])
    assert codes(rec) == []
    line = rec.lines.collect().row(0, named=True)
    assert line["qty_received"] == D(10)
    assert line["invoiced_amount"] == D(20)
    assert line["received_from"] == "asn"
    assert (line["n_shipments"], line["n_invoices"]) == (1, 1)


@pytest.mark.parametrize(
    ("shipped", "invoiced", "expected"),
    [
        (None, None, ["NOT_SHIPPED"]),
        (6, 6, ["SHORT_SHIPPED"]),
        (6, 10, ["OVER_INVOICED", "SHORT_SHIPPED"]),
        (13, 10, ["OVER_SHIPPED"]),
        (10, None, ["NOT_INVOICED"]),
        (10, 12, ["OVER_INVOICED", "OVER_ORDERED"]),
        (None, 10, ["INVOICED_NOT_RECEIVED", "NOT_SHIPPED"]),
    ],
)
def test_quantity_rules(
    make: Make, shipped: int | None, invoiced: int | None, expected: list[str]
) -> None:
    asn = [ship(qty=shipped)] if shipped is not None else []
    inv = [bill(qty=invoiced)] if invoiced is not None else []
    rec = run(make, [po_line(qty=10)], asn, inv)
    assert codes(rec) == expected
    got_status, flags = status(rec)
    assert sorted(flags) == expected
    # the primary status is the first flag in the documented precedence
    assert got_status == min(expected, key=PRECEDENCE.index)


def test_price_variance_both_directions(make: Make) -> None:
    po = [po_line("1", price=10), po_line("2", price=10)]
    asn = [ship("1"), ship("2")]
    inv = [bill("1", price=12), bill("2", price=8)]
    rec = run(make, po, asn, inv)
    exc = rec.exceptions.collect().sort("line_number")
    assert exc["code"].to_list() == ["PRICE_VARIANCE", "PRICE_VARIANCE"]
    assert exc["variance_amount"].to_list() == [D(20), D(-20)]
    assert exc["amount_at_risk"].to_list() == [D(20), D(20)]
    assert exc["invoice_number"].to_list() == ["INV-000001A", "INV-000001A"]
    assert exc["tolerance_pct"].to_list() == [D(1), D(1)]
    line = rec.lines.filter(pl.col("line_number") == "1").collect().row(0, named=True)
    assert line["invoice_unit_price"] == D(12)
    assert line["price_variance"] == D(20)


def test_partial_documents_are_summed(make: Make) -> None:
    asn = [ship(qty=4, shipment_id="A"), ship(qty=6, shipment_id="B"), ship(qty=0, shipment_id="B")]
    inv = [bill(qty=3, invoice_number="INV-000001A"), bill(qty=7, invoice_number="INV-000777Q")]
    rec = run(make, [po_line(qty=10)], asn, inv)
    assert status(rec) == ("MATCHED", [])
    row = rec.lines.collect().row(0, named=True)
    assert (row["n_shipments"], row["n_invoices"]) == (2, 2)
    assert row["qty_invoiced"] == D(10)


# -- tolerance boundaries ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("received", "tolerances", "expected"),
    [
        # exactly at the limit -> within tolerance; just over -> flagged
        ("90", Tolerances(short_ship_pct=10), "MATCHED_WITHIN_TOLERANCE"),
        ("89.9999", Tolerances(short_ship_pct=10), "SHORT_SHIPPED"),
        ("97", Tolerances(short_ship_pct=None, short_ship_abs=3), "MATCHED_WITHIN_TOLERANCE"),
        ("96.9999", Tolerances(short_ship_pct=None, short_ship_abs=3), "SHORT_SHIPPED"),
        ("110", Tolerances(over_ship_pct=10), "MATCHED_WITHIN_TOLERANCE"),
        ("110.0001", Tolerances(over_ship_pct=10), "OVER_SHIPPED"),
        # null = unlimited, 0 = exact
        ("500", Tolerances(over_ship_pct=None, over_ship_abs=None), "MATCHED_WITHIN_TOLERANCE"),
        ("100.0001", Tolerances(over_ship_pct=0), "OVER_SHIPPED"),
        ("99.9999", Tolerances(short_ship_pct=0), "SHORT_SHIPPED"),
        ("1", Tolerances(short_ship_pct=None), "MATCHED_WITHIN_TOLERANCE"),
    ],
)
def test_shipping_tolerance_boundaries(
    make: Make, received: str, tolerances: Tolerances, expected: str
) -> None:
    qty = D(received)
    # invoice what was received (at most what was ordered): only the shipping checks can fire
    billed = min(qty, D(100))
    rec = run(make, [po_line(qty=100)], [ship(qty=qty)], [bill(qty=billed)], tolerances=tolerances)
    assert status(rec)[0] == expected


@pytest.mark.parametrize(
    ("invoiced", "tolerances", "expected"),
    [
        ("102", Tolerances(over_invoice_pct=2, over_order_pct=2), []),
        (
            "102.0001",
            Tolerances(over_invoice_pct=2, over_order_pct=2),
            ["OVER_INVOICED", "OVER_ORDERED"],
        ),
        ("105", Tolerances(over_invoice_pct=None, over_invoice_abs=5, over_order_pct=None), []),
        (
            "105.0001",
            Tolerances(over_invoice_pct=None, over_invoice_abs=5, over_order_pct=None),
            ["OVER_INVOICED"],
        ),
        ("150", Tolerances(over_invoice_pct=None, over_order_pct=None), []),
    ],
)
def test_billing_tolerance_boundaries(
    make: Make, invoiced: str, tolerances: Tolerances, expected: list[str]
) -> None:
    qty = D(invoiced)
    rec = run(
        make,
        [po_line(qty=100, price=1)],
        [ship(qty=100)],
        [bill(qty=qty, price=1)],
        tolerances=tolerances,
    )
    assert codes(rec) == expected


@pytest.mark.parametrize(
    ("billed", "pct", "abs_", "flagged"),
    [
        # beyond both limits when both are set: 6 % / 6.00 is beyond 5 % but not beyond 10.00
        ("106", 5, 10, False),
        ("111", 5, 10, True),
        ("110", 5, 10, False),  # 10 % and exactly 10.00: not beyond the absolute limit
        ("110.0001", 5, 10, True),
        ("89", 5, 10, True),  # under-billing beyond both is a variance too
        # one limit set: that one decides
        ("105", 5, None, False),
        ("105.0001", 5, None, True),
        ("100.5", None, "0.5", False),
        ("100.5001", None, "0.5", True),
        # no limit set: unlimited
        ("300", None, None, False),
        # 0 is exact
        ("100.0001", 0, None, True),
    ],
)
def test_price_tolerance_beyond_both(
    make: Make, billed: str, pct: int | None, abs_: str | None, flagged: bool
) -> None:
    rec = run(
        make,
        [po_line(qty=10, price=10)],
        [ship(qty=10)],
        [bill(qty=10, price=10, line_amount=D(billed))],
        tolerances=Tolerances(price_pct=pct, price_abs=abs_),
    )
    assert ("PRICE_VARIANCE" in codes(rec)) is flagged
    if not flagged and D(billed) != 100:
        assert status(rec)[0] == "MATCHED_WITHIN_TOLERANCE"


def test_per_supplier_overrides(make: Make) -> None:
    po = [po_line(supplier_id="S1", price=10), po_line(supplier_id="S2", price=10, po_number="P2")]
    asn = [ship(supplier_id="S1"), ship(supplier_id="S2", po_number="P2")]
    inv = [
        bill(supplier_id="S1", price=11),
        bill(supplier_id="S2", price=11, po_number="P2", invoice_number="INV-000009Q"),
    ]
    overrides = pl.DataFrame({"supplier_id": ["S1"], "price_pct": [20.0]})
    rec = run(make, po, asn, inv, tolerances=Tolerances(price_pct=5, overrides=overrides))
    exc = rec.exceptions.collect()
    assert exc.select("code", "supplier_id").rows() == [("PRICE_VARIANCE", "S2")]
    assert exc["tolerance_pct"][0] == D(5)
    assert status(rec, po="P1")[0] == "MATCHED_WITHIN_TOLERANCE"

    # a null in the overrides frame unsets the limit for that supplier: unlimited
    unset = pl.DataFrame(
        {"supplier_id": ["S2"], "price_pct": [None]},
        schema={"supplier_id": pl.String, "price_pct": pl.Float64},
    )
    rec = run(make, po, asn, inv, tolerances=Tolerances(price_pct=5, overrides=unset))
    assert codes(rec) == ["PRICE_VARIANCE"]  # S1 keeps the default 5 %, S2 is unlimited
    assert rec.exceptions.collect()["supplier_id"].to_list() == ["S1"]


# -- units -------------------------------------------------------------------------------


def test_units_compare_trimmed_and_case_blind(make: Make) -> None:
    rec = run(make, [po_line(qty=10)], [ship(qty=10, uom=" ea")], [bill(qty=10, uom="Ea")])
    assert status(rec) == ("MATCHED", [])


def test_standard_dozen_converts_to_each(make: Make) -> None:
    rec = run(make, [po_line(qty=24)], [ship(qty=2, uom="DZ")], [bill(qty=24)])
    assert status(rec) == ("MATCHED", [])
    assert rec.lines.collect()["qty_shipped"][0] == D(24)


def test_each_converts_to_dozen_without_rounding_drift(make: Make) -> None:
    # twelve shipments of 1 EA against 1 DZ: 12 x 1/12 must be exactly 1
    asn = [ship(qty=1, uom="EA", shipment_id=f"S{i}") for i in range(12)]
    rec = run(make, [po_line(qty=1, uom="DZ", price=12)], asn, [bill(qty=1, uom="DZ", price=12)])
    assert status(rec) == ("MATCHED", [])


def test_case_with_item_factor_and_chained_units(make: Make) -> None:
    conversions = pl.DataFrame(
        {
            "item_id": ["ITEM1", "ITEM2"],
            "from_uom": ["CS", "CS"],
            "to_uom": ["EA", "EA"],
            "factor": [D(24), D(24)],
        }
    )
    po = [po_line("1", qty=48, price=1), po_line("2", qty=4, uom="DZ", price=12)]
    # line 1: 2 CS = 48 EA; line 2: 2 CS = 48 EA = 4 DZ (CS -> EA -> DZ)
    asn = [ship("1", qty=2, uom="cs"), ship("2", qty=2, uom="CS")]
    inv = [bill("1", qty=2, uom="CS", price=24), bill("2", qty=2, uom="CS", price=24)]
    rec = run(make, po, asn, inv, conversions=conversions)
    assert codes(rec) == []
    assert rec.lines.sort("line_number").collect()["qty_invoiced"].to_list() == [D(48), D(4)]


def test_impossible_conversion_is_uom_mismatch_only(make: Make) -> None:
    # the invoice is in boxes nobody defined: no NOT_INVOICED / OVER_* from the missing qty
    rec = run(make, [po_line(qty=10)], [ship(qty=10)], [bill(qty=2, uom="BX", price=10)])
    # no conversions given: one warning says why, with the count
    with pytest.warns(ReconcileWarning, match=r"^1 document line\(s\) use a unit"):
        assert codes(rec) == ["UOM_MISMATCH"]
    assert status(rec) == ("UOM_MISMATCH", ["UOM_MISMATCH"])
    exc = rec.exceptions.collect().row(0, named=True)
    assert (exc["level"], exc["invoice_number"], exc["amount_at_risk"]) == (
        "line",
        "INV-000001A",
        D(20),
    )
    assert rec.lines.collect()["qty_invoiced"][0] == D(0)


def test_unconvertible_shipment_suppresses_receipt_checks(make: Make) -> None:
    rec = run(make, [po_line(qty=10)], [ship(qty=1, uom="PL")], [bill(qty=10)])
    with pytest.warns(ReconcileWarning, match="conversions="):
        assert codes(rec) == ["UOM_MISMATCH"]
    assert rec.exceptions.collect()["shipment_id"][0] == "SH1"


# -- matching ----------------------------------------------------------------------------


def test_line_number_leading_zeros_do_not_count(make: Make) -> None:
    rec = run(make, [po_line("0010")], [ship("10")], [bill("010")])
    assert status(rec, line="10") == ("MATCHED", [])


def test_fallback_to_item_when_the_document_has_no_line_number(make: Make) -> None:
    po = [po_line("1"), po_line("2", item_id="BOLT"), po_line("3", item_id="BOLT")]
    asn = [ship(None, item_id="ITEM1"), ship(None, item_id="BOLT", qty=10), ship("3")]
    inv = [bill("1"), bill("2"), bill("3")]
    rec = run(make, po, asn, inv)
    # the item on two lines goes to the lowest-numbered one
    assert codes(rec) == []


def test_unknown_item_without_line_is_no_po_reference(make: Make) -> None:
    rec = run(make, [po_line()], [ship(), ship(None, item_id="NOPE", shipment_id="SH9")], [bill()])
    exc = rec.exceptions.collect().row(0, named=True)
    assert (exc["code"], exc["level"], exc["shipment_id"], exc["item_id"]) == (
        "NO_PO_REFERENCE",
        "asn",
        "SH9",
        "NOPE",
    )


def test_missing_po_missing_line_and_supplier_mismatch(make: Make) -> None:
    inv = [
        bill(),
        bill(po_number="P404", invoice_number="INV-000002B"),
        bill("9", invoice_number="INV-000003C"),
        bill(supplier_id="S2", invoice_number="INV-000004D"),
    ]
    rec = run(make, [po_line()], [ship()], inv)
    exc = rec.exceptions.collect().sort("invoice_number")
    assert exc.select("code", "level", "invoice_number").rows() == [
        ("NO_PO_REFERENCE", "invoice", "INV-000002B"),
        ("NO_PO_REFERENCE", "invoice", "INV-000003C"),
        ("SUPPLIER_MISMATCH", "invoice", "INV-000004D"),
    ]
    assert exc["amount_at_risk"].to_list() == [D(20)] * 3
    invoices = rec.invoices.collect().sort("invoice_number")
    assert invoices["status"].to_list() == [
        "MATCHED",
        "NO_PO_REFERENCE",
        "NO_PO_REFERENCE",
        "SUPPLIER_MISMATCH",
    ]


def test_receipts_decide_received_when_given(make: Make) -> None:
    receipts = [{"line_number": "1", "item_id": "ITEM1", "qty_received": 7}]
    rec = run(make, [po_line(qty=10)], [ship(qty=10)], [bill(qty=7)], receipts=receipts)
    assert rec.received_from == "receipts"
    row = rec.lines.collect().row(0, named=True)
    assert (row["qty_shipped"], row["qty_received"], row["received_from"]) == (
        D(10),
        D(7),
        "receipts",
    )
    assert status(rec)[0] == "SHORT_SHIPPED"
    # without receipts the ASN stands in and the line matches
    rec = run(make, [po_line(qty=10)], [ship(qty=10)], [bill(qty=10)])
    assert rec.lines.collect()["received_from"][0] == "asn"


def test_each_po_line_once_first_key_wins(make: Make) -> None:
    po = [po_line("1", qty=10), po_line("01", qty=99), po_line("2")]
    rec = run(make, po, [ship("1"), ship("2")], [bill("1"), bill("2")])
    lines = rec.lines.collect()
    assert lines.height == 2
    assert lines.filter(pl.col("line_number") == "1")["qty_ordered"][0] == D(10)


# -- duplicates --------------------------------------------------------------------------


def test_exact_and_rekeyed_duplicates_are_excluded_from_sums(make: Make) -> None:
    inv = [
        bill(invoice_number="INV-000042K", source="a.x12"),
        bill(invoice_number="INV-000042K", source="b.x12"),  # exact copy, later source
        bill(invoice_number="inv42k", source="c.csv", invoice_date=DAY + dt.timedelta(days=30)),
    ]
    rec = run(make, [po_line()], [ship()], inv)
    exc = rec.exceptions.collect().sort("source")
    assert exc.select("code", "invoice_number", "source").rows() == [
        ("DUPLICATE_INVOICE", "INV-000042K", "b.x12"),
        ("DUPLICATE_INVOICE", "inv42k", "c.csv"),
    ]
    line = rec.lines.collect().row(0, named=True)
    assert line["qty_invoiced"] == D(10)
    assert line["status"] == "DUPLICATE_INVOICE"
    assert line["n_invoices"] == 1
    invoices = rec.invoices.collect().sort("source")
    assert invoices["duplicate_of"].to_list() == [None, "INV-000042K", "INV-000042K"]


def test_original_is_the_earliest_invoice_date(make: Make) -> None:
    inv = [
        bill(invoice_number="INV-7", invoice_date=DAY + dt.timedelta(days=2), source="a"),
        bill(invoice_number="INV-0007", invoice_date=DAY, source="z"),
    ]
    rec = run(make, [po_line()], [ship()], inv)
    assert rec.exceptions.collect()["invoice_number"].to_list() == ["INV-7"]


@pytest.mark.parametrize(
    ("number", "days", "amount", "suspect"),
    [
        ("INV-000042X", 3, "20", True),  # substitution
        ("INV-0000421K", 3, "20", True),  # insertion
        ("INV-00004K", 3, "20", True),  # deletion
        ("INV-000042X", 7, "20", True),  # dates exactly 7 days apart
        ("INV-000042X", 8, "20", False),
        ("INV-000042X", 1, "20.0001", False),  # the same total, exactly, by default
        ("INV-000024K", 1, "20", True),  # transposition of two neighbours
        ("INV-0000K24", 1, "20", False),  # 2 and K swapped across the 4
        ("INV-000043X", 1, "20", False),  # two changes
    ],
)
def test_duplicate_suspect(make: Make, number: str, days: int, amount: str, suspect: bool) -> None:
    inv = [
        bill(invoice_number="INV-000042K", line_amount=D(20)),
        bill(
            invoice_number=number,
            invoice_date=DAY + dt.timedelta(days=days),
            line_amount=D(amount),
        ),
    ]
    rec = run(make, [po_line()], [ship()], inv, tolerances=Tolerances(price_pct=None))
    got = codes(rec)
    if suspect:
        assert got == ["DUPLICATE_SUSPECT"]
        exc = rec.exceptions.collect().row(0, named=True)
        assert exc["invoice_number"] == number
        # the suspect is on hold: not summed, so the line is not over-invoiced
        assert rec.lines.collect()["qty_invoiced"][0] == D(10)
        assert (
            rec.invoices.filter(pl.col("invoice_number") == number).collect()["suspect_of"][0]
            == "INV-000042K"
        )
    else:
        assert "DUPLICATE_SUSPECT" not in got
        assert rec.lines.collect()["qty_invoiced"][0] == D(20)


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("INV-000042K", "inv42k"),
        ("inv42k", "inv42k"),
        ("Inv 0042-k", "inv42k"),
        ("INV-000", "inv0"),
        ("00A00B007", "0a0b7"),
        ("", ""),
    ],
)
def test_invoice_number_normalisation(raw: str, normalized: str) -> None:
    assert normalize_invoice_number_py(raw) == normalized
    got = pl.select(normalize_invoice_number(pl.lit(raw))).item()
    assert got == normalized


# -- results -----------------------------------------------------------------------------


def test_exception_rows_carry_keys_variance_and_tolerance(make: Make) -> None:
    rec = run(
        make,
        [po_line(qty=10, price=3)],
        [ship(qty=7)],
        [bill(qty=7, price=3)],
        tolerances=Tolerances(short_ship_pct=5, short_ship_abs=1),
    )
    exc = rec.exceptions.collect().row(0, named=True)
    assert exc == {
        "code": "SHORT_SHIPPED",
        "level": "line",
        "supplier_id": "S1",
        "po_number": "P1",
        "line_number": "1",
        "item_id": "ITEM1",
        # the documents behind it: the shipment and the invoice of the line
        "invoice_number": "INV-000001A",
        "shipment_id": "SH1",
        "source": None,
        "position": None,
        "variance_qty": D(-3),
        "variance_amount": D(-9),
        "amount_at_risk": D(9),
        "tolerance_pct": D(5),
        "tolerance_abs": D(1),
        "po_source": None,
        "po_position": None,
        "related_invoice_number": None,
    }


def test_summary_counts_and_renders(make: Make) -> None:
    po = [po_line("1"), po_line("2"), po_line("3", supplier_id="S2", po_number="P2")]
    asn = [ship("1"), ship("2", qty=5)]
    inv = [bill("1"), bill("2", qty=5)]
    rec = run(make, po, asn, inv)
    summary = rec.summary()
    assert isinstance(summary, ReconciliationSummary)
    lines = summary.by_status.filter(pl.col("level") == "line")
    assert dict(zip(lines["status"], lines["count"], strict=True)) == {
        "SHORT_SHIPPED": 1,
        "NOT_SHIPPED": 1,
        "MATCHED": 1,
    }
    sup = summary.by_supplier.sort("supplier_id")
    assert sup["lines"].to_list() == [2, 1]
    assert sup["lines_with_exceptions"].to_list() == [1, 1]
    assert sup["line_amount_at_risk"].to_list() == [D(10), D(20)]
    assert "SHORT_SHIPPED" in repr(summary)
    assert "<table" in summary._repr_html_()
    assert "NOT_SHIPPED" in summary._repr_html_()


def test_frames_are_lazy_and_computed_once(make: Make) -> None:
    rec = run(make, [po_line()], [ship()], [bill()])
    assert isinstance(rec.lines, pl.LazyFrame)
    assert isinstance(rec.exceptions, pl.LazyFrame)
    assert set(rec.lines.collect_schema().names()) >= {"status", "flags", "qty_received"}
    first = rec.timings()
    assert rec.timings() == first  # the match ran once, later reads reuse it
    eager = rec.collect(engine="in-memory")
    assert eager.lines.collect().equals(rec.lines.collect())
    assert "Reconciliation(" in repr(rec)


def test_line_codes_cover_the_contract() -> None:
    assert set(LINE_CODES) == {
        "UOM_MISMATCH",
        "INVOICED_NOT_RECEIVED",
        "OVER_INVOICED",
        "OVER_ORDERED",
        "PRICE_VARIANCE",
        "NOT_SHIPPED",
        "SHORT_SHIPPED",
        "OVER_SHIPPED",
        "NOT_INVOICED",
    }


# -- misuse ------------------------------------------------------------------------------


def test_missing_column_names_the_column_and_table() -> None:
    po = _frame("po_lines", [po_line()]).drop("unit_price")
    with pytest.raises(ConfigurationError, match=r"po is missing column\(s\) \['unit_price'\]"):
        reconcile(po, _frame("asn_lines", []), _frame("invoice_lines", []))


def test_not_a_frame_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="must be a polars DataFrame or LazyFrame"):
        reconcile({"a": 1}, _frame("asn_lines", []), _frame("invoice_lines", []))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"price_pct": -1}, "must be >= 0"),
        ({"price_pct": "abc"}, "must be a number or None"),
        ({"duplicate_days": -2}, "duplicate_days"),
        ({"overrides": pl.DataFrame({"supplier": ["S1"]})}, "needs a 'supplier_id' column"),
        ({"overrides": pl.DataFrame({"supplier_id": ["S1"], "prize_pct": [1]})}, "unknown columns"),
        (
            {"overrides": pl.DataFrame({"supplier_id": ["S1", "S1"], "price_pct": [1, 2]})},
            "more than once",
        ),
        ({"overrides": pl.DataFrame({"supplier_id": ["S1"], "price_pct": [-1]})}, "negative"),
    ],
)
def test_tolerances_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Tolerances(**kwargs)


def test_tolerances_are_frozen_keyword_only_decimals() -> None:
    tol = Tolerances(price_pct=0.1)
    assert tol.price_pct == D("0.1")
    with pytest.raises(AttributeError):
        tol.price_pct = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        Tolerances(1)  # type: ignore[misc]
    assert Tolerances.exact().price_pct == 0
    assert tol.replace(price_abs=5).price_abs == D(5)


def test_bad_conversions_frame() -> None:
    with pytest.raises(ConfigurationError, match="missing columns"):
        reconcile(
            _frame("po_lines", [po_line()]),
            _frame("asn_lines", []),
            _frame("invoice_lines", []),
            conversions=pl.DataFrame({"item_id": ["A"]}),
        )


def test_from_frames_round_trip(make: Make) -> None:
    rec = run(make, [po_line()], [ship(qty=4)], [bill(qty=4)]).collect()
    again = Reconciliation.from_frames(
        rec.lines.collect(),
        rec.invoices.collect(),
        rec.exceptions.collect(),
        received_from=rec.received_from,
    )
    assert again.lines.collect().equals(rec.lines.collect())
    assert again.summary().by_status.equals(rec.summary().by_status)


def test_partitioned_run_gives_the_same_rows(make: Make) -> None:
    po = [po_line(str(n), supplier_id=f"S{n}", po_number=f"P{n}") for n in range(1, 7)]
    asn = [ship(str(n), supplier_id=f"S{n}", po_number=f"P{n}", qty=n) for n in range(1, 7)]
    inv = [
        bill(str(n), supplier_id=f"S{n}", po_number=f"P{n}", invoice_number=f"INV-{n}{n}{n}")
        for n in range(1, 7)
    ]
    # another supplier's PO: found even though it sits in another partition
    inv.append(bill("1", supplier_id="S2", po_number="P1", invoice_number="INV-999"))
    frames = (make("po_lines", po), make("asn_lines", asn), make("invoice_lines", inv))
    whole = reconcile(*frames)
    parts = reconcile(*frames, partition_lines=2)
    assert "combine" in parts.timings()  # three parts, combined
    assert "combine" not in whole.timings()
    assert parts.lines.collect().equals(whole.lines.collect())
    assert parts.invoices.collect().equals(whole.invoices.collect())
    assert parts.exceptions.collect().equals(whole.exceptions.collect())
    assert "SUPPLIER_MISMATCH" in parts.exceptions.collect()["code"].to_list()
    assert parts.summary().by_supplier.height == 6
