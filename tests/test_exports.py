"""Supplier portal exports: writer dialects, reader mess handling, round trips."""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from scfeeds._exports import ExportResult, ExportWarning, read_export, scan_export, write_export
from scfeeds._presets import PRESETS
from scfeeds.exceptions import ConfigurationError, ExportError
from scfeeds.schemas import COLUMNS, TABLES, TableName, empty, schema


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
    assert lines[0].split(";")[-2:] == ["Währung", "Wunschtermin"]
    assert "Währung".encode("latin-1") in out.read_bytes()  # one byte per umlaut, no UTF-8
    assert lines[1] == "SUP001;4500001;15.01.2026;1;SKU-1;Widget, große;1.200;EA;2,50;EUR;"
    assert lines[2] == "SUP001;4500001;15.01.2026;2;SKU-2;;1.234.567,125;CS;-1.000,0001;EUR;"


def test_write_csv_acme_quotes_fields_holding_the_thousands_comma(tmp_path: Path) -> None:
    out = tmp_path / "po.csv"
    write_export(_po(), out, table="po_lines", preset="acme", fmt="csv")
    lines = out.read_text("utf-8").splitlines()
    assert lines[1].endswith('01/15/2026,1,SKU-1,"Widget, große","1,200",EA,2.50,EUR,')
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


# -- reading: round trips ---------------------------------------------------------------------
FIXTURES = Path(__file__).parent / "fixtures" / "exports"


def _expected(frame: pl.DataFrame, source: str) -> pl.DataFrame:
    return frame.with_columns(
        source=pl.lit(source),
        position=pl.format("row {}", pl.int_range(1, pl.len() + 1)),
    ).cast(dict(schema(_table_of(frame))))  # type: ignore[arg-type]


# The tables supplier exports carry (855 acknowledgments come as X12 or cXML only).
EXPORT_TABLES: tuple[TableName, ...] = tuple(t for t in TABLES if t != "po_acks")


def _table_of(frame: pl.DataFrame) -> TableName:
    return next(t for t in TABLES if list(schema(t)) == frame.columns)


def _sample(table: TableName) -> pl.DataFrame:
    """Two rows of every table with awkward but legal values."""
    values: dict[str, list[object]] = {
        "supplier_id": ["SUP001", "SUP001"],
        "po_number": ["4500001", "PO-7"],
        "shipment_id": ["SH-1", "SH-1"],
        "invoice_number": ["INV-000042K", "INV-000042K"],
        "po_date": [dt.date(2026, 1, 15), dt.date(2025, 12, 31)],
        "ship_date": [dt.date(2026, 1, 16), dt.date(2026, 1, 16)],
        "invoice_date": [dt.date(2026, 1, 31), dt.date(2026, 1, 31)],
        "receipt_date": [dt.date(2026, 1, 17), None],
        "line_number": ["1", "10"],
        "item_id": ["SKU-1", "00042"],  # leading zeros are part of an item id: kept
        "description": ['Widget; große, "deluxe"', None],
        "uom": ["EA", "CS"],
        "unit_price": [Decimal("1234.5"), Decimal("0.0001")],
        "line_amount": [Decimal("1234567.5"), Decimal("0.0024")],
        "currency": ["EUR", "USD"],
        "pack_id": ["000123456789012345", None],
        "carrier": ["UPSN", "UPSN"],
        "tracking": ["1Z999", None],
        "location": ["DC-EAST", "DC-WEST"],
        "requested_date": [dt.date(2026, 2, 1), None],
    }
    qty = {"qty_ordered", "qty_shipped", "qty_invoiced", "qty_received"}
    data = {
        c: ([Decimal("1000"), Decimal("24.125")] if c in qty else values[c]) for c in COLUMNS[table]
    }
    frame = pl.DataFrame(data, schema=COLUMNS[table])
    return pl.concat([empty(table), frame], how="diagonal").cast(dict(schema(table)))  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("table", EXPORT_TABLES)
def test_round_trip_every_table_preset_and_format(
    tmp_path: Path, table: TableName, preset: str, fmt: str
) -> None:
    frame = _sample(table)
    path = tmp_path / f"{table}.{fmt}"
    write_export(frame, path, table=table, preset=preset, fmt=fmt)  # type: ignore[arg-type]
    # No table, no preset: both are recognised from the header row.
    assert_frame_equal(read_export(path), _expected(frame, str(path)))


_text = (
    st.text(
        alphabet=st.characters(codec="latin-1", exclude_categories=("Cc", "Cs", "Zl", "Zp")),
        min_size=1,
        max_size=12,
    )
    .map(str.strip)
    .filter(bool)
)
_code = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-", min_size=1, max_size=10)
_decimal = st.decimals(
    min_value=Decimal("-99999999.9999"),
    max_value=Decimal("99999999.9999"),
    places=4,
    allow_nan=False,
    allow_infinity=False,
)
_date = st.dates(min_value=dt.date(1990, 1, 1), max_value=dt.date(2099, 12, 31))


@st.composite
def _po_frames(draw: st.DrawFn) -> pl.DataFrame:
    n = draw(st.integers(min_value=1, max_value=6))
    col = lambda s: draw(st.lists(s, min_size=n, max_size=n))  # noqa: E731
    opt = lambda s: col(st.none() | s)  # noqa: E731
    data = {
        "supplier_id": col(_code),
        "po_number": col(_code),
        "po_date": opt(_date),
        "line_number": col(st.integers(1, 99999).map(str)),
        "item_id": col(_code),
        "description": opt(_text),
        "qty_ordered": opt(_decimal),
        "uom": col(st.sampled_from(["EA", "CS", "BX", "LB"])),
        "unit_price": opt(_decimal),
        "currency": col(st.sampled_from(["USD", "EUR", "GBP"])),
        "requested_date": opt(_date),
    }
    return pl.concat(
        [empty("po_lines"), pl.DataFrame(data, schema=COLUMNS["po_lines"])], how="diagonal"
    )


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(frame=_po_frames(), preset=st.sampled_from(sorted(PRESETS)))
def test_property_csv_round_trip_is_exact(tmp_path: Path, frame: pl.DataFrame, preset: str) -> None:
    path = tmp_path / "po.csv"
    write_export(frame, path, table="po_lines", preset=preset, fmt="csv")
    assert_frame_equal(
        read_export(path, table="po_lines", preset=preset), _expected(frame, str(path))
    )


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(frame=_po_frames(), preset=st.sampled_from(sorted(PRESETS)))
def test_property_xlsx_round_trip_is_exact(
    tmp_path: Path, frame: pl.DataFrame, preset: str
) -> None:
    path = tmp_path / "po.xlsx"
    write_export(frame, path, table="po_lines", preset=preset, fmt="xlsx")
    assert_frame_equal(read_export(path, table="po_lines"), _expected(frame, str(path)))


# -- reading: hand-written real-world mess -------------------------------------------------------


def _collect(name: str, **kwargs: object) -> ExportResult:
    return read_export(FIXTURES / name, errors="collect", **kwargs)  # type: ignore[call-overload, no-any-return]


def test_title_lines_blank_rows_repeated_header_and_totals_row_are_skipped_and_reported() -> None:
    rows, errors = _collect("acme_po_title_blank_repeated_header_totals.csv")
    assert rows["position"].to_list() == ["row 1", "row 3", "row 5"]  # rows after the header
    assert rows["line_number"].to_list() == ["10", "20", "1"]  # "0010" -> "10"
    assert rows["qty_ordered"].to_list() == [Decimal("1200"), Decimal("24"), Decimal("10")]
    assert rows["unit_price"].to_list() == [Decimal("2.5"), Decimal("1000"), Decimal("0.0125")]
    assert rows["uom"].to_list() == ["EA", "CS", "EA"]  # "ea" upper-cased
    assert rows["description"].to_list() == ["Widget, large", "Total care kit", "Bolt M8"]
    assert rows["po_date"].to_list()[2] == dt.date(2026, 1, 16)
    assert errors.select("position", "rule").rows() == [
        ("row 4", "REPEATED_HEADER"),
        ("row 6", "TOTALS_ROW"),
    ]


def test_latin1_semicolon_decimal_comma_and_thousands_dots() -> None:
    rows, errors = _collect("globex_invoice_latin1_semicolon_decimal_comma.csv")
    assert rows["item_id"].to_list() == ["ÄRM-01", "Öse-7"]
    assert rows["qty_invoiced"].to_list() == [Decimal("1500"), Decimal("2")]
    assert rows["unit_price"].to_list() == [Decimal("1.25"), Decimal("10")]
    assert rows["line_amount"].to_list() == [Decimal("1875"), Decimal("20")]
    assert rows["invoice_date"].to_list() == [dt.date(2026, 1, 31)] * 2
    assert errors["rule"].to_list() == ["TOTALS_ROW"]  # "Summe" row


def test_utf8_bom_crlf_and_asn_without_line_numbers() -> None:
    rows, errors = _collect("initech_asn_bom_crlf_no_line_numbers.csv")
    assert errors.height == 0
    assert rows["supplier_id"].to_list() == ["SUP003", "SUP003"]  # no BOM glued to the header
    assert rows["line_number"].to_list() == [None, None]
    assert rows["tracking"].to_list() == ["1Z999AA10123456784"] * 2  # no trailing \r
    assert rows["qty_shipped"].to_list() == [Decimal("12"), Decimal("3.5")]


def test_unparseable_cells_are_reported_with_row_and_rule_and_good_rows_still_flow() -> None:
    rows, errors = _collect("acme_po_bad_number_and_bad_date.csv")
    assert rows["line_number"].to_list() == ["1", "5"]
    assert errors.select("position", "rule").rows() == [
        ("row 2", "BAD_DATE"),
        ("row 3", "BAD_NUMBER"),
        ("row 4", "BAD_NUMBER"),  # "1,2,3" is not a thousands grouping
    ]
    assert "'five'" in errors["message"][1]
    assert errors["source"].to_list() == [str(FIXTURES / "acme_po_bad_number_and_bad_date.csv")] * 3


def test_bad_rows_warn_by_default_and_raise_on_request() -> None:
    path = FIXTURES / "acme_po_bad_number_and_bad_date.csv"
    with pytest.warns(ExportWarning, match=r"1 BAD_DATE, 2 BAD_NUMBER"):
        rows = read_export(path)
    assert rows.height == 2
    with pytest.warns(ExportWarning, match="BAD_DATE"):
        lazy_rows = scan_export(path).collect()
    assert lazy_rows.height == 2
    with pytest.raises(ExportError) as info:
        read_export(path, errors="raise")
    assert (info.value.rule, info.value.position) == ("BAD_DATE", "row 2")
    assert info.value.source == str(path)


def test_unknown_columns_warn_and_are_ignored() -> None:
    path = FIXTURES / "acme_po_unknown_column.csv"
    with pytest.warns(ExportWarning, match="Buyer Notes"):
        rows = read_export(path)
    assert rows.columns == list(schema("po_lines"))
    assert _collect("acme_po_unknown_column.csv").errors["rule"].to_list() == ["UNKNOWN_COLUMNS"]


def test_missing_required_column_names_column_file_and_rule() -> None:
    path = FIXTURES / "acme_po_missing_qty_column.csv"
    with pytest.raises(ExportError, match=r"qty_ordered \('Qty Ordered'\)") as info:
        scan_export(path)
    assert info.value.rule == "MISSING_COLUMNS"
    assert info.value.source == str(path)
    assert str(path) in str(info.value)
    rows, errors = _collect("acme_po_missing_qty_column.csv")
    assert rows.height == 0
    assert errors["rule"].to_list() == ["MISSING_COLUMNS"]


def test_accounting_negatives_currency_symbols_and_date_spellings() -> None:
    rows, errors = _collect("acme_po_accounting_negatives_symbols_and_date_spellings.csv")
    assert errors.height == 0
    assert rows["qty_ordered"].to_list() == [Decimal("-2"), Decimal("-3"), Decimal("1")]
    assert rows["unit_price"].to_list() == [Decimal("1200"), Decimal("9.99"), Decimal("0.5")]
    assert rows["po_date"].to_list() == [dt.date(2026, 1, 15)] * 3
    assert rows["currency"].to_list() == ["USD"] * 3


def test_latin1_byte_after_the_first_64k_is_still_decoded(tmp_path: Path) -> None:
    # The encoding is decided over the whole file, not the sniffed head: a portal that writes
    # an umlaut on row 2,000 must not crash the read or turn it into mojibake.
    frame = pl.concat([_sample("po_lines")] * 1500)
    frame = frame.with_columns(
        line_number=pl.int_range(1, pl.len() + 1).cast(pl.String),
        description=pl.when(pl.int_range(pl.len()) == 2999)
        .then(pl.lit("Überlänge"))
        .otherwise(pl.lit("plain")),
    )
    path = tmp_path / "po.csv"
    write_export(frame, path, table="po_lines", preset="globex", fmt="csv")
    assert path.stat().st_size > 100_000
    rows = read_export(path)
    assert rows["description"][-1] == "Überlänge"
    assert rows.height == 3000


def test_scan_export_pushes_down_projection_predicate_and_limit(tmp_path: Path) -> None:
    frame = pl.concat([_sample("po_lines")] * 50).with_columns(
        line_number=pl.int_range(1, pl.len() + 1).cast(pl.String)
    )
    for i in range(2):
        write_export(frame, tmp_path / f"po_{i}.csv", table="po_lines", preset="acme", fmt="csv")
    lf = scan_export(str(tmp_path / "po_*.csv"))
    out = lf.filter(pl.col("qty_ordered") > 100).select("source", "line_number").collect()
    assert out.height == 100  # 50 rows per file hold qty 1000
    assert out["source"].n_unique() == 2
    assert lf.head(7).collect().height == 7


def test_xlsx_mess_title_row_serial_dates_numeric_ids_and_totals(tmp_path: Path) -> None:
    import xlsxwriter

    path = tmp_path / "mess.xlsx"
    wb = xlsxwriter.Workbook(str(path))
    ws = wb.add_worksheet("PO Export")
    ws.write_row(0, 0, ["ACME portal export"])
    header = list(PRESETS["acme"].header("po_lines").values())
    ws.write_row(2, 0, header)
    # a date typed as a plain number (Excel serial 46037 = 2026-01-15), numeric line and item
    ws.write_row(3, 0, ["SUP001", "4500001", 46037, 10, 12345, "Widget", 1200, "EA", 2.5, "USD"])
    ws.write_row(
        4,
        0,
        ["SUP001", "4500001", "01/15/2026", "0020", "SKU-2", None, "1,200.50", "EA", 0.1, "USD"],
    )
    ws.write_row(5, 0, ["Total", None, None, None, None, None, 2400.5])
    wb.close()
    rows, errors = read_export(path, errors="collect")
    assert rows["po_date"].to_list() == [dt.date(2026, 1, 15)] * 2
    assert rows["line_number"].to_list() == ["10", "20"]
    assert rows["item_id"].to_list() == ["12345", "SKU-2"]
    assert rows["qty_ordered"].to_list() == [Decimal("1200"), Decimal("1200.5")]
    assert rows["unit_price"].to_list() == [Decimal("2.5"), Decimal("0.1")]
    assert rows["position"].to_list() == ["row 1", "row 2"]
    assert errors.select("position", "rule").rows() == [("row 3", "TOTALS_ROW")]


def test_broken_xlsx_is_an_export_error_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "broken.xlsx"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ExportError) as info:
        read_export(path, table="po_lines")
    assert info.value.rule == "XLSX_SYNTAX"
    rows, errors = read_export(path, table="po_lines", errors="collect")
    assert (rows.height, errors["rule"].to_list()) == (0, ["XLSX_SYNTAX"])


def test_reading_options_misuse_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="table="):
        scan_export(FIXTURES / "acme_po_unknown_column.csv", columns={"po_number": "PO Number"})
    with pytest.raises(ConfigurationError, match="no file matches"):
        scan_export(str(tmp_path / "*.csv"))
    with pytest.raises(ConfigurationError, match="errors="):
        read_export(FIXTURES / "acme_po_unknown_column.csv", errors="ignore")  # type: ignore[call-overload]


def test_no_warning_for_a_clean_file(tmp_path: Path) -> None:
    path = tmp_path / "po.csv"
    write_export(_sample("po_lines"), path, table="po_lines", preset="initech", fmt="csv")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_export(path).height == 2


def test_totals_word_only_counts_where_the_document_key_belongs(tmp_path: Path) -> None:
    path = tmp_path / "po.csv"
    path.write_text(
        "Vendor ID,PO Number,PO Date,Line,Item #,Description,Qty Ordered,UOM,Unit Price,Currency\n"
        "SUM,4500001,01/15/2026,1,TOTAL,Total care kit,5,EA,1.00,USD\n"
        ",Grand Total:,,,,,5,,,\n",
        encoding="utf-8",
    )
    rows, errors = read_export(path, errors="collect")
    assert rows.select("supplier_id", "item_id").rows() == [("SUM", "TOTAL")]
    assert errors.select("position", "rule").rows() == [("row 2", "TOTALS_ROW")]


# -- synth world -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synth_world(make_world: Callable[..., Path]) -> Path:
    return make_world(seed=11, suppliers=6, pos=60, formats=("csv", "xlsx"), damaged=True)


def test_every_synth_export_reads_back_as_the_world(
    synth_world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scfeeds import synth

    monkeypatch.chdir(synth_world)  # world sources are paths relative to the root
    catalog = pl.read_parquet("catalog.parquet").filter(pl.col("format").is_in(["csv", "xlsx"]))
    assert set(catalog["format"]) == {"csv", "xlsx"}
    assert catalog["table"].n_unique() == 4
    for row in catalog.iter_rows(named=True):
        table: TableName = row["table"]
        world = synth.load_world(synth_world, table).filter(pl.col("source") == row["path"])
        rows, errors = read_export(row["path"], errors="collect")  # preset and table detected
        assert errors.height == 0, errors.rows()
        assert_frame_equal(rows, world.collect(), check_row_order=False)
        assert rows.height == row["records"]


def test_synth_damaged_export_is_reported_with_the_catalogued_rule(
    synth_world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scfeeds import synth

    monkeypatch.chdir(synth_world)
    damaged = synth.load_damaged(synth_world).filter(pl.col("format") == "csv")
    assert damaged.height >= 1
    for row in damaged.iter_rows(named=True):
        rows, errors = read_export(row["path"], errors="collect")
        assert rows.height == row["good_records"]
        assert errors["rule"].to_list() == [row["rule"]]
        assert errors["position"].to_list() == [row["position"]]
        assert "po_number" in errors["message"][0]


def test_missing_optional_column_reads_as_null_and_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "po.csv"
    path.write_text(
        "Vendor ID,PO Number,PO Date,Line,Item #,Qty Ordered,UOM,Unit Price,Currency\n"
        "SUP001,4500001,01/15/2026,1,SKU-1,5,EA,1.00,USD\n",
        encoding="utf-8",
    )
    with pytest.warns(ExportWarning, match="Description"):
        rows = read_export(path)
    assert rows["description"].to_list() == [None]
    assert rows["qty_ordered"].to_list() == [Decimal("5")]
    _, errors = read_export(path, errors="collect")
    assert errors["rule"].to_list() == ["MISSING_OPTIONAL_COLUMNS"]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_quoted_newlines_and_quotes_survive_and_rows_count_records(
    tmp_path: Path, preset: str
) -> None:
    frame = _sample("po_lines").with_columns(
        description=pl.Series(['two\nlines, "quoted"; x', "plain"])
    )
    path = tmp_path / "po.csv"
    write_export(frame, path, table="po_lines", preset=preset, fmt="csv")
    rows = read_export(path)
    assert rows["description"].to_list() == ['two\nlines, "quoted"; x', "plain"]
    assert rows["position"].to_list() == ["row 1", "row 2"]  # records, not physical lines
