"""The match engine's stages, each on its own: keys, quantities, statuses and exceptions."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import polars as pl
import pytest

from scfeeds._reconcile import Tolerances, _stages
from scfeeds._reconcile._engine import PO
from scfeeds._reconcile._stages import (
    Run,
    build,
    convert_quantities,
    document_lines,
    exception_rows,
    invoice_documents,
    invoice_results,
    key_lookup,
    line_statuses,
    line_sums,
    match_keys,
    po_lines,
    prepare,
    unmatched_documents,
)
from scfeeds._reconcile._uom import factor_table
from tests.test_reconcile import _frame, bill, po_line, ship

D = Decimal


def _inputs(
    po: list[dict[str, Any]], asn: list[dict[str, Any]], inv: list[dict[str, Any]]
) -> _stages.Inputs:
    return prepare(
        _frame("po_lines", po), _frame("asn_lines", asn), _frame("invoice_lines", inv), None
    )


def _run() -> Run:
    return Run.of(Tolerances(), "in-memory")


def _matched(
    inputs: _stages.Inputs, *, exact: bool | None = None
) -> tuple[Run, pl.LazyFrame, _stages.Lookup, _stages.Invoices, pl.DataFrame]:
    run = _run()
    lines = po_lines(run, inputs.po)
    lookup = key_lookup(run, lines, exact=exact)
    invoices = invoice_documents(run, inputs.invoice)
    long = match_keys(document_lines(inputs, invoices), lookup)
    return run, lines, lookup, invoices, long.sort("_kind", "_row").collect()


# -- keys ---------------------------------------------------------------------------------


def test_po_lines_keep_the_first_row_of_a_repeated_key_and_number_them() -> None:
    inputs = _inputs([po_line("1", qty=10), po_line("01", qty=99), po_line("2")], [], [])
    lines = po_lines(_run(), inputs.po).collect()
    assert lines["_po"].to_list() == [0, 1]
    assert lines["_row"].to_list() == [0, 2]
    assert lines["_o"].to_list() == [10 * 10_000, 10 * 10_000]


@pytest.mark.parametrize("exact", [True, False], ids=["strings", "hashes"])
def test_key_matching_by_line_number_then_lowest_line_of_the_item(exact: bool) -> None:
    po = [po_line("1"), po_line("2", item_id="BOLT"), po_line("3", item_id="BOLT")]
    asn = [ship("0002"), ship(None, item_id="BOLT"), ship("9"), ship("1", po_number="P404")]
    *_, lookup, _, long = _matched(_inputs(po, asn, []), exact=exact)
    assert lookup.exact is exact
    # line "0002" is line 2; no line number: item BOLT's lowest line (2); line 9 and an
    # unknown PO: no PO line
    assert long["_po"].to_list() == [1, 1, None, None]


def test_key_lookup_uses_hashes_unless_two_keys_share_one() -> None:
    lines = po_lines(_run(), _inputs([po_line("1"), po_line("2")], [], []).po)
    lookup = key_lookup(_run(), lines)
    assert not lookup.exact
    assert lookup.frame.collect_schema().names() == ["_h", "_h2", "_po"]


def test_string_key_fallback_gives_the_same_result() -> None:
    po = _frame("po_lines", [po_line("1"), po_line("2", item_id="BOLT"), po_line("3")])
    asn = _frame("asn_lines", [ship("1"), ship(None, item_id="BOLT", qty=4), ship("9")])
    inv = _frame("invoice_lines", [bill("1"), bill("2", qty=12), bill("3", po_number="P404")])

    def plan(exact: bool | None) -> Any:
        return build(
            po, asn, inv, receipts=None, tol=Tolerances(), conversions=None, exact_keys=exact
        )

    hashed, exact = plan(None), plan(True)
    assert exact.lines.equals(hashed.lines)
    assert exact.exceptions.equals(hashed.exceptions)
    assert sorted(exact.exceptions["code"].to_list()) == [
        "NOT_SHIPPED",
        "NO_PO_REFERENCE",
        "NO_PO_REFERENCE",
        "OVER_INVOICED",
        "OVER_ORDERED",
        "SHORT_SHIPPED",
    ]


# -- quantities ---------------------------------------------------------------------------


def _converted(asn: list[dict[str, Any]], conversions: pl.DataFrame | None = None) -> pl.DataFrame:
    run, lines, _, _, long = _matched(_inputs([po_line("1", qty=24)], asn, []))
    factors = factor_table(conversions).lazy()
    return convert_quantities(run, long.lazy(), lines, factors).sort("_row").collect()


def test_quantities_in_the_po_unit_as_raw8() -> None:
    conv = _converted(
        [
            ship("1", qty=5),
            ship("1", qty=1, uom="DZ"),
            ship("1", qty=3, uom=" ea "),
            ship("1", 2, uom="CS"),
        ]
    )
    # EA as is; 1 DZ = 12 EA (standard); " ea " is EA once normalised; no factor for CS
    assert conv["_q"].to_list() == [5 * 10**8, 12 * 10**8, 3 * 10**8, None]
    assert conv["_bad"].to_list() == [False, False, False, True]


def test_item_conversions_convert_what_the_standard_table_cannot() -> None:
    pack = pl.DataFrame(
        {"item_id": ["ITEM1"], "from_uom": ["CS"], "to_uom": ["EA"], "factor": [D(24)]},
        schema_overrides={"factor": pl.Decimal(18, 4)},
    )
    conv = _converted([ship("1", qty=2, uom="CS")], pack)
    assert conv["_q"].to_list() == [48 * 10**8]
    assert not conv["_bad"].any()


def test_line_sums_leave_out_duplicate_invoices() -> None:
    inputs = _inputs(
        [po_line("1")],
        [ship("1", qty=4), ship("1", qty=6, shipment_id="SH2")],
        [bill("1", qty=10), bill("1", qty=10, invoice_number="inv-1a")],
    )
    run, lines, _, _, long = _matched(inputs)
    conv = convert_quantities(run, long.lazy(), lines, factor_table(None).lazy())
    sums = line_sums(run, conv)
    row = sums.lines.row(0, named=True)
    assert (row["_shipped"], row["_invoiced"]) == (10 * 10**8, 10 * 10**8)
    assert (row["n_shipments"], row["n_invoices"], row["_n_dup"]) == (2, 1, 1)
    assert sums.unmatched.height == 0
    assert {"sums", "match", "lookup", "po lines"} <= set(run.timings)


# -- statuses and exceptions ----------------------------------------------------------------


def _through_lines(inputs: _stages.Inputs) -> tuple[Run, Any, Any, pl.LazyFrame, Any]:
    run, lines, _, invoices, long = _matched(inputs)
    conv = convert_quantities(run, long.lazy(), lines, factor_table(None).lazy())
    sums = line_sums(run, conv)
    unmatched = unmatched_documents(run, sums.unmatched, inputs, lines)
    result = line_statuses(run, lines, sums.lines, receipts_given=False, compact=False)
    inv = invoice_results(run, invoices, sums.per_invoice, unmatched, lines)
    return run, result, inv, unmatched, lines


def test_line_statuses_and_compact_values() -> None:
    inputs = _inputs(
        [po_line("1", qty=10), po_line("2", qty=10)], [ship("1", qty=6)], [bill("1", qty=6)]
    )
    run, lines, *_, long = _matched(inputs)
    conv = convert_quantities(run, long.lazy(), lines, factor_table(None).lazy())
    sums = line_sums(run, conv)
    public = line_statuses(run, lines, sums.lines, receipts_given=False, compact=False)
    assert public.frame["status"].cast(pl.String).to_list() == ["SHORT_SHIPPED", "NOT_SHIPPED"]
    assert public.frame["qty_received"].to_list() == [D(6), D(0)]
    assert public.flagged.height == 2
    compact = line_statuses(run, lines, sums.lines, receipts_given=False, compact=True)
    assert compact.frame.columns == list(_stages.LINE_VALUES)
    assert compact.frame["_row"].to_list() == [0, 1]


def test_unmatched_documents_tell_a_foreign_po_from_no_po() -> None:
    other = po_line("1", supplier_id="S2", po_number="P2")
    inputs = _inputs(
        [po_line("1"), other], [], [bill("1", po_number="P2"), bill("1", po_number="P404")]
    )
    *_, unmatched, _ = _through_lines(inputs)
    assert unmatched.collect()["code"].to_list() == ["SUPPLIER_MISMATCH", "NO_PO_REFERENCE"]


def test_exception_rows_carry_their_evidence_in_order() -> None:
    inputs = _inputs(
        [po_line("1", qty=10), po_line("2")],
        [ship("1", qty=6), ship("2")],
        [bill("1", qty=6, price=3), bill("7", invoice_number="INV-2")],
    )
    run, result, inv, unmatched, _ = _through_lines(inputs)
    evidence = {**inputs.documents, PO: inputs.po}
    exc = exception_rows(run, result.flagged, inv, unmatched, evidence)
    got = exc.select("code", "level", "line_number", "shipment_id", "invoice_number").rows()
    assert got == [
        ("PRICE_VARIANCE", "line", "1", "SH1", "INV-000001A"),
        ("SHORT_SHIPPED", "line", "1", "SH1", "INV-000001A"),
        ("NOT_INVOICED", "line", "2", "SH1", None),
        ("NO_PO_REFERENCE", "invoice", "7", None, "INV-2"),
    ]
    assert exc["amount_at_risk"].to_list() == [D(6), D(8), D(20), D(20)]
    assert "exceptions" in run.timings
