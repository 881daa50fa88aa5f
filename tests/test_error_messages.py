"""Errors frames read well in a table: the file is in ``source``, the message says what."""

from __future__ import annotations

from pathlib import Path

import pytest

from scfeeds._cxml import read_xml
from scfeeds._exports import read_export
from scfeeds.exceptions import ExportError, ParseError, XMLError

PO_CSV = (
    "Vendor ID,PO Number,PO Date,Line,Item #,Description,Qty Ordered,UOM,Unit Price,Currency\n"
    "SUP001,4500000001,01/15/2026,1,SKU-1,Widget,10,EA,2.50,USD\n"
    "SUP001,4500000001,01/15/2026,2,SKU-2,Gadget,ten,EA,2.50,USD\n"
)
BROKEN_CXML = (
    '<?xml version="1.0"?>\n<cXML payloadID="1" timestamp="2026-01-01T00:00:00">'
    '<Header></Header><Request><OrderRequest><OrderRequestHeader orderID="P1">'
    "</OrderRequest></Request></cXML>"
)


def test_export_error_rows_keep_the_path_in_its_own_column(tmp_path: Path) -> None:
    path = tmp_path / "po_export.csv"
    path.write_text(PO_CSV, encoding="utf-8")
    rows, errors = read_export(path, table="po_lines", errors="collect")
    assert rows.height == 1
    (err,) = errors.to_dicts()
    assert err["source"].endswith("po_export.csv")
    assert err["position"] == "row 2"
    assert err["rule"] == "BAD_NUMBER"
    assert not err["message"].startswith(err["source"])
    assert str(tmp_path) not in err["message"]
    # Raised, the error still names file and row.
    with pytest.raises(ExportError, match=r"po_export\.csv: row 2: "):
        read_export(path, table="po_lines", errors="raise")


def test_export_file_level_error_row_message_starts_with_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "nonsense.csv"
    path.write_text("a,b,c\n1,2,3\n", encoding="utf-8")
    _, errors = read_export(path, table="po_lines", errors="collect")
    (err,) = errors.to_dicts()
    assert err["rule"] == "MISSING_COLUMNS"
    assert err["message"].startswith("no header row matches"), err["message"]


def test_xml_syntax_error_row_message_starts_with_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "po_0001.xml"
    path.write_text(BROKEN_CXML, encoding="utf-8")
    _, errors = read_xml(path, table="po_lines", errors="collect")
    (err,) = errors.filter(errors["rule"] == "XML_SYNTAX").to_dicts()
    assert err["source"].endswith("po_0001.xml")
    assert err["message"].startswith("line 2, column "), err["message"]
    with pytest.raises(XMLError, match=r"po_0001\.xml: /cXML"):
        read_xml(path, table="po_lines", errors="raise")


def test_parse_error_detail_drops_only_its_own_source() -> None:
    exc = ParseError("a/b.csv: bad header", source="a/b.csv")
    assert exc.detail == "bad header"
    assert str(exc) == "a/b.csv: bad header"
    assert ParseError("other: x", source="a/b.csv").detail == "other: x"
    assert ParseError("no source").detail == "no source"
