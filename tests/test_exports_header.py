"""Export headers: the canonical column names themselves are a layout, and ``columns=`` is
accepted either way round (canonical -> header, or header -> canonical as polars' rename)."""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from scfeeds import read_export, scan_export
from scfeeds.exceptions import ConfigurationError, ExportError
from scfeeds.schemas import COLUMNS

DATA = Path(__file__).resolve().parents[1] / "data" / "world"
FIXTURES = Path(__file__).parent / "fixtures" / "exports"
RECEIPTS_TSV = FIXTURES / "custom_tab_separated_receipts.tsv"
# canonical -> the headers of RECEIPTS_TSV
RECEIPTS_HEADERS = {
    "location": "Warehouse",
    "po_number": "PO",
    "line_number": "PO Line",
    "item_id": "Material",
    "qty_received": "Received Qty",
    "uom": "Unit",
    "receipt_date": "GR Date",
}


def _canonical(table: str) -> pl.DataFrame:
    """Canonical rows of ``table`` (the committed sample world), business columns only."""
    frame = pl.read_parquet(DATA / table / "part-00000.parquet")
    return frame.select(list(COLUMNS[table]))  # type: ignore[index]


@pytest.mark.parametrize("table", ["po_lines", "invoice_lines", "receipts"])
@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_a_header_of_canonical_names_is_read(tmp_path: Path, table: str, fmt: str) -> None:
    want = _canonical(table)
    path = tmp_path / f"{table}.{fmt}"
    if fmt == "csv":
        want.write_csv(path)
    else:
        want.write_excel(path)
    for given in (None, table):  # found by its header, or named
        got = read_export(path, table=given)  # type: ignore[arg-type]
        assert got["source"].unique().to_list() == [str(path)]
        assert_frame_equal(got.select(want.columns), want)


def test_canonical_header_with_a_preset_takes_the_preset_dialect(tmp_path: Path) -> None:
    path = tmp_path / "po.csv"
    path.write_text(
        "supplier_id;po_number;po_date;line_number;item_id;description;qty_ordered;uom;"
        "unit_price;currency\n"
        "SUP9;4500000001;15.01.2026;1;A-1;Bolt;1.234,5;EA;12,50;EUR\n"
    )
    got = read_export(path, table="po_lines", preset="globex")  # decimal comma, dd.mm.yyyy
    assert got["qty_ordered"].cast(pl.String).to_list() == ["1234.5000"]
    assert got["unit_price"].cast(pl.String).to_list() == ["12.5000"]
    assert got["po_date"].cast(pl.String).to_list() == ["2026-01-15"]


def test_a_header_that_matches_nothing_still_names_what_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "po.csv"
    path.write_text("po_number,colour\n4500000001,red\n")
    with pytest.raises(ExportError) as info:
        scan_export(path, table="po_lines")
    assert info.value.rule == "MISSING_COLUMNS"
    assert "line_number" in str(info.value)


def _receipts(columns: dict[str, str]) -> pl.DataFrame:
    return read_export(RECEIPTS_TSV, table="receipts", preset="globex", columns=columns, fmt="csv")


def test_columns_is_read_either_way_round_and_says_which(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="scfeeds.exports"):
        forward = _receipts(RECEIPTS_HEADERS)
        assert "canonical -> header" in caplog.text
        caplog.clear()
        backward = _receipts({header: canon for canon, header in RECEIPTS_HEADERS.items()})
        assert "header -> canonical" in caplog.text
    assert forward.height > 0
    assert forward["qty_received"].null_count() == 0
    assert_frame_equal(forward, backward)


def test_columns_identity_mapping_is_fine(tmp_path: Path) -> None:
    want = _canonical("receipts")
    path = tmp_path / "receipts.csv"
    want.write_csv(path)
    got = read_export(path, table="receipts", columns={c: c for c in want.columns})
    assert_frame_equal(got.select(want.columns), want)


@pytest.mark.parametrize(
    ("columns", "says"),
    [
        ({"qty_received": "uom", "uom": "qty_received"}, "ambiguous"),
        ({"PO": "po_number", "Material": "item id"}, "neither side"),
        ({"PO": "po_number", "Order": "po_number"}, "several headers to po_number"),
    ],
    ids=["both-canonical", "neither", "two-headers-one-column"],
)
def test_columns_that_cannot_be_oriented_are_a_clear_error(
    columns: dict[str, str], says: str
) -> None:
    with pytest.raises(ConfigurationError, match=says) as info:
        scan_export(RECEIPTS_TSV, table="receipts", columns=columns, fmt="csv")
    if says == "neither side":
        assert "PO, Material" in str(info.value)  # the keys that are not canonical
        assert "item id" in str(info.value)  # and the values


def test_explicit_columns_mapping_with_a_preset_dialect() -> None:
    rows = read_export(
        RECEIPTS_TSV,
        table="receipts",
        preset="globex",  # decimal comma, dd.mm.yyyy
        columns=RECEIPTS_HEADERS,
        fmt="csv",
    )
    assert rows.row(0, named=True) | {"source": None} == {
        "source": None,
        "position": "row 1",
        "interchange_control": None,
        "group_control": None,
        "set_control": None,
        "supplier_id": None,  # not in the file: null
        "po_number": "4500001",
        "line_number": "10",
        "item_id": "SKU-1",
        "qty_received": Decimal("1200.5"),
        "uom": "EA",
        "receipt_date": dt.date(2026, 1, 15),
        "location": "DC-EAST",
    }
