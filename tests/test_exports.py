"""Supplier portal exports: writer dialects, reader mess handling, round trips."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from scfeeds._exports import write_export
from scfeeds.exceptions import ConfigurationError
from scfeeds.schemas import empty


def _po(**overrides: list[object]) -> pl.DataFrame:
    data: dict[str, list[object]] = {
        "supplier_id": ["SUP001", "SUP001"],
        "po_number": ["4500001", "4500001"],
        "po_date": [dt.date(2026, 1, 15), dt.date(2026, 1, 15)],
        "line_number": ["1", "2"],
        "item_id": ["SKU-1", "SKU-2"],
        "description": ["Widget, große", None],
        "qty_ordered": [Decimal("1200"), Decimal("1234567.125")],
        "uom": ["EA", "CS"],
        "unit_price": [Decimal("2.5"), Decimal("-1000.0001")],
        "currency": ["EUR", "EUR"],
    }
    data.update(overrides)
    return pl.concat([empty("po_lines"), pl.DataFrame(data)], how="diagonal_relaxed")


def test_write_csv_globex_dialect_is_latin1_semicolon_decimal_comma(tmp_path: Path) -> None:
    out = tmp_path / "po.csv"
    write_export(_po(), out, table="po_lines", preset="globex", fmt="csv")
    lines = out.read_bytes().decode("latin-1").splitlines()
    assert lines[0].split(";")[-1] == "Währung"
    assert "Währung".encode("latin-1") in out.read_bytes()  # one byte per umlaut, no UTF-8
    assert lines[1] == "SUP001;4500001;15.01.2026;1;SKU-1;Widget, große;1.200;EA;2,50;EUR"
    assert lines[2] == "SUP001;4500001;15.01.2026;2;SKU-2;;1.234.567,125;CS;-1.000,0001;EUR"


def test_write_csv_acme_quotes_fields_holding_the_thousands_comma(tmp_path: Path) -> None:
    out = tmp_path / "po.csv"
    write_export(_po(), out, table="po_lines", preset="acme", fmt="csv")
    lines = out.read_text("utf-8").splitlines()
    assert lines[1].endswith('01/15/2026,1,SKU-1,"Widget, große","1,200",EA,2.50,EUR')
    assert '"1,234,567.125",CS,"-1,000.0001",EUR' in lines[2]


def test_write_csv_initech_has_utf8_bom(tmp_path: Path) -> None:
    out = tmp_path / "po.csv"
    write_export(_po(), out, table="po_lines", preset="initech", fmt="csv")
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbfsupplier,po_no,po_dt,")
    assert b"2026-01-15,1,SKU-1" in raw


def test_write_csv_latin1_refuses_characters_outside_the_code_page(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="latin-1"):
        write_export(
            _po(description=["snowman ☃", None]),
            tmp_path / "po.csv",
            table="po_lines",
            preset="globex",
            fmt="csv",
        )


def test_write_xlsx_holds_numbers_and_dates_as_typed_cells(tmp_path: Path) -> None:
    out = tmp_path / "po.xlsx"
    write_export(_po(), out, table="po_lines", preset="acme", fmt="xlsx")
    typed = pl.read_excel(out, engine="calamine")
    assert typed.schema["Qty Ordered"] == pl.Float64
    assert typed.schema["PO Date"] == pl.Date
    assert typed["Unit Price"].to_list() == [2.5, -1000.0001]


def test_write_export_rejects_unknown_preset_and_missing_columns(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="unknown export preset"):
        write_export(_po(), tmp_path / "x.csv", table="po_lines", preset="nope", fmt="csv")
    with pytest.raises(ConfigurationError, match="uom"):
        write_export(
            _po().drop("uom"), tmp_path / "x.csv", table="po_lines", preset="acme", fmt="csv"
        )
