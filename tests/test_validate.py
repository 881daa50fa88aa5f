"""Validation: each rule pinned, null keys, eager and lazy, failures that say why."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from scfeeds._validate import FAILURE_COLUMNS, ValidationResult, validate
from scfeeds.exceptions import ConfigurationError, ValidationError
from scfeeds.schemas import TableName, empty, schema

DATES = (dt.date(2000, 1, 1), dt.date(2030, 12, 31))

_BASE: dict[TableName, dict[str, Any]] = {
    "po_lines": {
        "supplier_id": "SUP001",
        "po_number": "4500001",
        "po_date": dt.date(2026, 1, 15),
        "line_number": "1",
        "item_id": "SKU-1",
        "description": "Widget",
        "qty_ordered": Decimal("10"),
        "uom": "EA",
        "unit_price": Decimal("2.5"),
        "currency": "USD",
    },
    "asn_lines": {
        "supplier_id": "SUP001",
        "shipment_id": "SH-1",
        "ship_date": dt.date(2026, 1, 16),
        "po_number": "4500001",
        "line_number": "1",
        "item_id": "SKU-1",
        "qty_shipped": Decimal("10"),
        "uom": "EA",
        "pack_id": "000123",
        "carrier": "UPSN",
        "tracking": "1Z",
    },
    "invoice_lines": {
        "supplier_id": "SUP001",
        "invoice_number": "INV-1",
        "invoice_date": dt.date(2026, 1, 31),
        "po_number": "4500001",
        "line_number": "1",
        "item_id": "SKU-1",
        "qty_invoiced": Decimal("3"),
        "uom": "EA",
        "unit_price": Decimal("0.3333"),
        "line_amount": Decimal("1.00"),  # 0.9999: within a cent
        "currency": "EUR",
    },
    "receipts": {
        "supplier_id": None,
        "po_number": "4500001",
        "line_number": "1",
        "item_id": "SKU-1",
        "qty_received": Decimal("10"),
        "uom": "EA",
        "receipt_date": dt.date(2026, 1, 17),
        "location": "DC-EAST",
    },
}


def _rows(table: TableName, *changes: dict[str, Any]) -> pl.DataFrame:
    """One good row, then one row per change (each a variation of the good row)."""
    rows = [{**_BASE[table]}, *({**_BASE[table], **c} for c in changes)]
    for i, row in enumerate(rows, start=1):
        row.update(source="feeds/f.csv", position=f"row {i}")
    frame = pl.DataFrame(rows, schema_overrides=dict(schema(table)))
    return pl.concat([empty(table), frame], how="diagonal").cast(dict(schema(table)))  # type: ignore[arg-type]


def _distinct_lines(frame: pl.DataFrame) -> pl.DataFrame:
    # Keep keys distinct so that only the rule under test fires.
    if "line_number" not in frame.columns:
        return frame
    return frame.with_columns(
        line_number=pl.when(pl.col("line_number").is_null())
        .then(None)
        .otherwise(pl.int_range(1, pl.len() + 1).cast(pl.String))
    )


def _run(frame: pl.DataFrame, table: TableName, lazy: bool) -> tuple[pl.DataFrame, pl.DataFrame]:
    good, failures = validate(frame.lazy() if lazy else frame, table, dates=DATES)
    if lazy:
        assert isinstance(good, pl.LazyFrame)
        assert isinstance(failures, pl.LazyFrame)
        return good.collect(), failures.collect()
    assert isinstance(good, pl.DataFrame)
    assert isinstance(failures, pl.DataFrame)
    return good, failures


CASES: list[tuple[TableName, dict[str, Any], str, str]] = [
    ("po_lines", {"po_number": None}, "REQUIRED", "po_number is missing"),
    ("po_lines", {"item_id": "   "}, "REQUIRED", "item_id is missing"),
    ("po_lines", {"line_number": None}, "REQUIRED", "line_number is missing"),
    ("po_lines", {"qty_ordered": Decimal("0")}, "QTY_NOT_POSITIVE", "qty_ordered 0.0000"),
    ("asn_lines", {"qty_shipped": Decimal("-1")}, "QTY_NOT_POSITIVE", "is not above 0"),
    (
        "invoice_lines",
        {"qty_invoiced": Decimal("0"), "line_amount": Decimal("0")},
        "QTY_ZERO",
        "is 0",
    ),
    ("receipts", {"qty_received": Decimal("-1")}, "QTY_NEGATIVE", "qty_received -1.0000"),
    ("po_lines", {"unit_price": Decimal("-0.01")}, "PRICE_NEGATIVE", "unit_price -0.0100"),
    ("po_lines", {"uom": "EACH"}, "UNKNOWN_UOM", "uom 'EACH' is not a known X12 unit"),
    ("invoice_lines", {"uom": "ea"}, "UNKNOWN_UOM", "'ea'"),  # codes are upper case
    ("po_lines", {"currency": "US$"}, "BAD_CURRENCY", "currency 'US$' is not an ISO 4217"),
    ("invoice_lines", {"currency": "XYZ"}, "BAD_CURRENCY", "'XYZ'"),  # 3 letters, not ISO
    ("po_lines", {"po_date": dt.date(1900, 1, 1)}, "DATE_OUT_OF_RANGE", "po_date 1900-01-01"),
    ("asn_lines", {"ship_date": dt.date(2206, 1, 1)}, "DATE_OUT_OF_RANGE", "2206-01-01"),
    (
        "invoice_lines",
        {"line_amount": Decimal("1.02")},
        "AMOUNT_MISMATCH",
        "line_amount 1.0200 != qty_invoiced 3.0000 x unit_price 0.3333",
    ),
]


@pytest.mark.parametrize("lazy", [False, True], ids=["DataFrame", "LazyFrame"])
@pytest.mark.parametrize(
    ("table", "change", "rule", "message"), CASES, ids=[f"{c[2]}-{c[0]}" for c in CASES]
)
def test_each_rule_flags_exactly_the_bad_row(
    table: TableName, change: dict[str, Any], rule: str, message: str, lazy: bool
) -> None:
    frame = _distinct_lines(_rows(table, change))
    good, failures = _run(frame, table, lazy)
    assert good["position"].to_list() == ["row 1"]
    assert failures["position"].to_list() == ["row 2"]
    assert failures["rule"].to_list() == [rule]
    assert failures["rules"].to_list() == [[rule]]
    assert message in failures["message"][0]


@pytest.mark.parametrize("lazy", [False, True], ids=["DataFrame", "LazyFrame"])
def test_failures_keep_original_values_and_provenance(lazy: bool) -> None:
    frame = _distinct_lines(_rows("po_lines", {"uom": "XX", "qty_ordered": Decimal("-5")}))
    good, failures = _run(frame, "po_lines", lazy)
    assert good.schema == schema("po_lines")
    assert list(failures.schema) == [*schema("po_lines"), *FAILURE_COLUMNS]
    row = failures.row(0, named=True)
    assert (row["source"], row["position"]) == ("feeds/f.csv", "row 2")
    assert (row["uom"], row["qty_ordered"]) == ("XX", Decimal("-5"))  # as they came in
    # first rule in reporting order, every rule listed, one sentence each
    assert row["rule"] == "QTY_NOT_POSITIVE"
    assert row["rules"] == ["QTY_NOT_POSITIVE", "UNKNOWN_UOM"]
    assert row["message"].count(";") == 1


def test_credit_memo_lines_are_documents_not_failures() -> None:
    frame = _rows(
        "invoice_lines", {"qty_invoiced": Decimal("-3"), "line_amount": Decimal("-1.0")}
    ).with_columns(line_number=pl.Series(["1", "2"]))
    good, failures = validate(frame, "invoice_lines")
    assert failures.height == 0
    assert good["qty_invoiced"].to_list() == [Decimal("3"), Decimal("-3")]


def test_asn_and_invoice_lines_may_lack_line_numbers_po_lines_may_not() -> None:
    for table in ("asn_lines", "invoice_lines"):
        frame = _rows(table, {"line_number": None, "item_id": "SKU-2"}).with_columns(
            line_number=pl.lit(None, pl.String)
        )
        good, failures = _run(frame, table, lazy=False)
        assert (good.height, failures.height) == (2, 0), table
    po = _rows("po_lines", {"line_number": None})
    _, failures = _run(po, "po_lines", lazy=False)
    assert failures["rules"].to_list() == [["REQUIRED"]]


def test_invoice_without_po_number_flows_to_the_match_engine() -> None:
    good, failures = _run(_rows("invoice_lines", {"po_number": None, "line_number": "2"}),
                          "invoice_lines", lazy=False)  # fmt: skip
    assert (good.height, failures.height) == (2, 0)


def test_currency_may_be_null_but_not_blank_or_lower_case() -> None:
    frame = _distinct_lines(_rows("po_lines", {"currency": None}, {"currency": "usd"}))
    good, failures = _run(frame, "po_lines", lazy=False)
    assert good["position"].to_list() == ["row 1", "row 2"]
    assert failures["rule"].to_list() == ["BAD_CURRENCY"]


@pytest.mark.parametrize("lazy", [False, True], ids=["DataFrame", "LazyFrame"])
def test_duplicate_key_within_a_file_keeps_the_first(lazy: bool) -> None:
    frame = _rows("po_lines", {"line_number": "1"}, {"line_number": "1", "source": "other.csv"})
    frame = frame.with_columns(
        line_number=pl.lit("1"),
        source=pl.Series(["a.csv", "a.csv", "b.csv"]),
    )
    good, failures = _run(frame, "po_lines", lazy)
    assert good["source"].to_list() == ["a.csv", "b.csv"]  # another file is not a duplicate
    assert failures.select("source", "position", "rule").rows() == [
        ("a.csv", "row 2", "DUPLICATE_KEY")
    ]


def test_duplicate_key_treats_null_keys_as_equal() -> None:
    frame = _rows("asn_lines", {}).with_columns(
        line_number=pl.lit(None, pl.String), pack_id=pl.lit(None, pl.String)
    )
    _, failures = _run(frame, "asn_lines", lazy=False)
    assert failures["rule"].to_list() == ["DUPLICATE_KEY"]


def test_equal_receipts_are_not_duplicates() -> None:
    frame = _rows("receipts", {})
    good, failures = _run(frame, "receipts", lazy=False)
    assert (good.height, failures.height) == (2, 0)


def test_money_is_compared_exactly() -> None:
    # 0.1 + 0.2 style float error would put 3 x 0.3333 next to 1.00 either side of a cent;
    # Decimal(18, 4) arithmetic is exact: 0.9999 vs 1.0100 is 0.0101 apart.
    frame = _distinct_lines(_rows("invoice_lines", {"line_amount": Decimal("1.0099")},
                                  {"line_amount": Decimal("1.0100")}))  # fmt: skip
    _, failures = _run(frame, "invoice_lines", lazy=False)
    assert failures.select("position", "rule").rows() == [("row 3", "AMOUNT_MISMATCH")]


def test_wrong_dtype_is_cast_or_reported() -> None:
    frame = _distinct_lines(_rows("po_lines", {}, {}))
    frame = frame.with_columns(qty_ordered=pl.Series(["10", "ten", "3.5"]))
    good, failures = _run(frame, "po_lines", lazy=False)
    assert good["qty_ordered"].to_list() == [Decimal("10"), Decimal("3.5")]
    assert good.schema == schema("po_lines")
    assert failures["rule"].to_list() == ["BAD_TYPE"]


def test_on_error_raise_names_counts_and_the_first_failure() -> None:
    frame = _distinct_lines(_rows("po_lines", {"uom": "XX"}, {"uom": "YY"}))
    with pytest.raises(ValidationError, match=r"2 po_lines row\(s\).*2 UNKNOWN_UOM.*row 2"):
        validate(frame, "po_lines", on_error="raise", dates=DATES)
    good, failures = validate(frame.head(1).lazy(), "po_lines", on_error="raise", dates=DATES)
    assert (good.collect().height, failures.collect().height) == (1, 0)


def test_result_unpacks_and_misuse_is_a_configuration_error() -> None:
    result = validate(empty("asn_lines"), "asn_lines")
    assert isinstance(result, ValidationResult)
    good, failures = result
    assert_frame_equal(good, empty("asn_lines"))
    assert failures.height == 0
    with pytest.raises(ConfigurationError, match="unknown table"):
        validate(empty("po_lines"), "orders")  # type: ignore[call-overload]
    with pytest.raises(ConfigurationError, match="on_error"):
        validate(empty("po_lines"), "po_lines", on_error="drop")  # type: ignore[call-overload]
    with pytest.raises(ConfigurationError, match="uom"):
        validate(empty("po_lines").drop("uom"), "po_lines")


def test_a_clean_synth_world_validates_without_failures(tmp_path: Path) -> None:
    from scfeeds import synth

    synth.generate(tmp_path, seed=4, pos=80, formats=("x12", "csv"))
    for table in ("po_lines", "asn_lines", "invoice_lines", "receipts"):
        world = synth.load_world(tmp_path, table)
        good, failures = validate(world, table)
        assert failures.collect().height == 0, table
        assert good.collect().height == world.select(pl.len()).collect().item()


def test_every_table_spec_names_columns_of_its_own_table() -> None:
    from scfeeds.schemas import COLUMNS, SPECS, TABLES

    assert set(SPECS) == set(TABLES)
    for table, spec in SPECS.items():
        named = {spec.quantity, spec.date, *spec.required, *spec.key, *spec.match, *spec.export}
        assert named <= set(COLUMNS[table]), (table, named - set(COLUMNS[table]))
