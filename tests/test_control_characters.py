"""A NUL or another C0 control character in a CSV field: an error row, never lake data.

TAB, LF and CR stay legal (a quoted description may span lines, RFC 4180); any other C0
character rejects the record (``CONTROL_CHARACTER``) and the rest of the file is delivered.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

import scfeeds
from scfeeds._exports import read_export
from scfeeds._ingest import ingest
from scfeeds._lake import scan_lake
from scfeeds._parse import parse_file
from scfeeds.schemas import schema

FIXTURE = (
    Path(__file__).parent / "fixtures" / "exports" / "acme_po_nul_escape_and_multiline_fields.csv"
)


def test_export_rows_with_control_characters_are_error_rows_naming_row_and_column() -> None:
    rows, errors = read_export(FIXTURE, table="po_lines", errors="collect")
    assert rows["line_number"].to_list() == ["1", "4"]
    assert rows["description"][1] == "Two-line\r\ndescription\twith a tab"
    assert errors.select("source", "position", "rule").rows() == [
        (str(FIXTURE), "row 2", "CONTROL_CHARACTER"),
        (str(FIXTURE), "row 3", "CONTROL_CHARACTER"),
    ]
    assert "Item #: 'SKU\ufffd2' holds a control character" in errors["message"][0]
    assert "Description: 'Bolt\ufffd[31m'" in errors["message"][1]
    assert not any("\x00" in m or "\x1b" in m for m in errors["message"])


def test_control_characters_never_reach_the_lake(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    report = scfeeds.run(
        ingest([scfeeds.Source(url=str(FIXTURE), table="po_lines")], lake, progress=None)
    )
    assert report.n_errors == 2
    got = scan_lake(lake, "po_lines").collect()
    assert sorted(got["line_number"]) == ["1", "4"]
    text = got.select(pl.col(pl.String)).rows()
    assert not any("\x00" in v or "\x1b" in v for row in text for v in row if v)
    errors = scan_lake(lake, "po_lines", kind="errors").collect()
    assert sorted(errors.select("position", "rule").rows()) == [
        ("row 2", "CONTROL_CHARACTER"),
        ("row 3", "CONTROL_CHARACTER"),
    ]


def _page_rows() -> list[dict[str, str | None]]:
    return [
        dict.fromkeys(schema("po_lines"))
        | {
            "supplier_id": "SUP001",
            "po_number": po,
            "line_number": str(i),
            "item_id": "X",
            "qty_ordered": "2",
            "po_date": "2026-11-02",
            "uom": "EA",
            "unit_price": "1.50",
            "currency": "USD",
        }
        for i, po in enumerate(["PO1", "PO\x002", "PO3"], start=1)
    ]


def test_portal_pages_with_a_nul_keep_the_other_rows(tmp_path: Path) -> None:
    ndjson = tmp_path / "page.ndjson"
    ndjson.write_text("\n".join(json.dumps(r) for r in _page_rows()) + "\n")
    csv = tmp_path / "page.csv"
    pl.DataFrame(_page_rows(), schema=dict.fromkeys(schema("po_lines"), pl.String)).write_csv(csv)
    for path, fmt in ((ndjson, "ndjson"), (csv, "csv")):
        parsed = parse_file(path, fmt=fmt, table="po_lines")  # type: ignore[arg-type]
        assert parsed.tables["po_lines"]["po_number"].to_list() == ["PO1", "PO3"], fmt
        assert parsed.errors.select("position", "rule").rows() == [("row 2", "CONTROL_CHARACTER")]
        assert "po_number: 'PO\ufffd2'" in parsed.errors["message"][0]
