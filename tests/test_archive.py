"""Hostile XLSX workbooks: refused before calamine unpacks them; a reader panic is an error row.

The workbooks are built here, part by part, with :mod:`zipfile`: a zip bomb (a worksheet that
is a long run of zeros), a grid from A1 to XFD1048576 (calamine asks for 512 GiB and the
process aborts), a cell reference that overflows calamine's arithmetic (a real Rust panic),
and a member that lies about its size.
"""

from __future__ import annotations

import struct
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import psutil
import pytest

from scfeeds._archive import ArchiveLimits, check_xlsx, is_reader_panic
from scfeeds._exports import read_export, write_export
from scfeeds._parse import parse_file
from scfeeds.exceptions import ConfigurationError, ExportError
from scfeeds.schemas import empty

SHEET = "xl/worksheets/sheet1.xml"
_NS = "http://schemas.openxmlformats.org"
PARTS = {
    "[Content_Types].xml": (
        f'<Types xmlns="{_NS}/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/'
        'vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/xl/workbook.xml" ContentType="application/'
        'vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
        '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/'
        'vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>'
    ),
    "_rels/.rels": (
        f'<Relationships xmlns="{_NS}/package/2006/relationships"><Relationship Id="rId1" '
        f'Type="{_NS}/officeDocument/2006/relationships/officeDocument" '
        'Target="xl/workbook.xml"/></Relationships>'
    ),
    "xl/workbook.xml": (
        f'<workbook xmlns="{_NS}/spreadsheetml/2006/main" '
        f'xmlns:r="{_NS}/officeDocument/2006/relationships"><sheets>'
        '<sheet name="Export" sheetId="1" r:id="rId1"/></sheets></workbook>'
    ),
    "xl/_rels/workbook.xml.rels": (
        f'<Relationships xmlns="{_NS}/package/2006/relationships"><Relationship Id="rId1" '
        f'Type="{_NS}/officeDocument/2006/relationships/worksheet" '
        'Target="worksheets/sheet1.xml"/></Relationships>'
    ),
}
HEADER_ROW = (
    '<row r="1">'
    + "".join(
        f'<c r="{col}1" t="inlineStr"><is><t>{name}</t></is></c>'
        for col, name in zip(
            "ABCDEF", ("PO Number", "Line", "Item", "Qty", "UOM", "Unit Price"), strict=True
        )
    )
    + "</row>"
)
PO_COLUMNS = {
    "po_number": "PO Number",
    "line_number": "Line",
    "item_id": "Item",
    "qty_ordered": "Qty",
    "uom": "UOM",
    "unit_price": "Unit Price",
}


def sheet_xml(rows: str) -> bytes:
    return (
        f'<worksheet xmlns="{_NS}/spreadsheetml/2006/main"><sheetData>'
        f"{HEADER_ROW}{rows}</sheetData></worksheet>"
    ).encode()


def workbook(path: Path, sheet: bytes | Iterator[bytes]) -> Path:
    """A minimal workbook; a sheet given as chunks is streamed (memory stays flat)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in PARTS.items():
            zf.writestr(name, text)
        if isinstance(sheet, bytes):
            zf.writestr(SHEET, sheet)
        else:
            with zf.open(SHEET, "w", force_zip64=True) as out:
                for chunk in sheet:
                    out.write(chunk)
    return path


def zeros_sheet(mib: int) -> Iterator[bytes]:
    """A worksheet whose one cell holds ``mib`` MiB of zeros (packs about 1000:1)."""
    head, tail = sheet_xml('<row r="2"><c r="A2"><v>').split(b"<v>")
    yield head + b"<v>"
    block = b"0" * (1 << 20)
    for _ in range(mib):
        yield block
    yield b"</v></c></row>" + tail


def good_row(n: int = 2) -> str:
    cells = zip("ABCDEF", ("4500001", "1", "SKU-1", "3", "EA", "2.5"), strict=True)
    return (
        f'<row r="{n}">'
        + "".join(f'<c r="{c}{n}" t="inlineStr"><is><t>{v}</t></is></c>' for c, v in cells)
        + "</row>"
    )


def collect(path: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    rows, errors = read_export(path, table="po_lines", columns=PO_COLUMNS, errors="collect")
    return rows, errors


def peak_rss_while(fn: object) -> tuple[object, int]:
    """Run ``fn()`` and return its result and the highest RSS growth seen (sampled)."""
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = base
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = fn()  # type: ignore[operator]
    finally:
        done.set()
        sampler.join()
    return result, max(peak, proc.memory_info().rss) - base


def test_a_minimal_hand_built_workbook_reads(tmp_path: Path) -> None:
    path = workbook(tmp_path / "ok.xlsx", sheet_xml(good_row()))
    rows, errors = collect(path)
    assert rows["po_number"].to_list() == ["4500001"]
    assert errors.height == 0


def test_zip_bomb_is_refused_from_the_central_directory_with_flat_memory(tmp_path: Path) -> None:
    # 300 MiB of zeros pack to ~0.3 MB: the 2 MB -> 2 GiB workbook, scaled down.
    bomb = workbook(tmp_path / "bomb.xlsx", zeros_sheet(300))
    assert bomb.stat().st_size < 1 << 20
    (rows, errors), grown = peak_rss_while(lambda: collect(bomb))  # type: ignore[misc]
    assert rows.height == 0
    assert errors.select("source", "position", "rule").rows() == [
        (str(bomb), f"member {SHEET}", "ARCHIVE_TOO_LARGE")
    ]
    assert "at most 268435456" in errors["message"][0]
    assert grown < 64 << 20, f"RSS grew by {grown >> 20} MiB"


def test_member_packed_beyond_the_ratio_is_refused(tmp_path: Path) -> None:
    bomb = workbook(tmp_path / "ratio.xlsx", zeros_sheet(40))  # under the size bound
    rows, errors = collect(bomb)
    assert errors.select("position", "rule").rows() == [(f"member {SHEET}", "ARCHIVE_RATIO")]
    assert rows.height == 0
    # with a generous ratio bound, the worksheet scan still refuses 40 MiB of one cell text
    # (a cell holds at most 32,767 characters), reading one chunk at a time
    with pytest.raises(ExportError, match="without markup") as info:
        check_xlsx(bomb, "ratio.xlsx", ArchiveLimits(max_ratio=5000))
    assert info.value.position == f"member {SHEET}"


def test_grid_from_a1_to_xfd1048576_is_refused_not_an_abort(tmp_path: Path) -> None:
    # calamine would allocate 17 billion cells for these two cells: "memory allocation of
    # 549755813888 bytes failed", SIGABRT, the whole ingest gone.
    far = '<row r="2"><c r="XFD1048576"><v>1</v></c></row>'
    path = workbook(tmp_path / "far.xlsx", sheet_xml(far))
    rows, errors = collect(path)
    assert rows.height == 0
    assert errors.select("position", "rule").rows() == [(f"member {SHEET}", "SHEET_TOO_LARGE")]
    assert "1048576 rows x 16384 columns" in errors["message"][0]
    parsed = parse_file(path, table="po_lines")
    assert parsed.errors.select("source", "rule").rows() == [(str(path), "SHEET_TOO_LARGE")]


@pytest.mark.parametrize(
    "ref", ["XFD00000001048576", "ZZZZ1048576", "A99999999999"], ids=["zeros", "4-letters", "big"]
)
def test_cell_references_that_hide_their_size_are_read_for_what_they_are(
    tmp_path: Path, ref: str
) -> None:
    path = workbook(
        tmp_path / "hidden.xlsx", sheet_xml(f'<row r="2"><c r="{ref}"><v>1</v></c></row>')
    )
    with pytest.raises(ExportError) as info:
        check_xlsx(path, "hidden.xlsx")
    assert info.value.rule == "SHEET_TOO_LARGE"


def test_cells_without_references_count_by_row(tmp_path: Path) -> None:
    # no r= on the cells: calamine places them one after the other, so the width counts
    wide = '<row r="2">' + "<c><v>1</v></c>" * 40 + "</row>"
    path = workbook(tmp_path / "wide.xlsx", sheet_xml(wide + '<row r="1048576"/>'))
    with pytest.raises(ExportError, match="1048576 rows x 40 columns"):
        check_xlsx(path, "wide.xlsx")
    check_xlsx(path, "wide.xlsx", ArchiveLimits(max_cells=1048576 * 40))


def test_a_long_shared_string_repeated_in_many_cells_is_refused(tmp_path: Path) -> None:
    """The variant that panics calamine ("byte array offset overflow"): one 32 KB shared
    string in 20,000 cells is 640 MB of text in one column, from a workbook of 100 KB."""
    path = tmp_path / "shared.xlsx"
    cells = "".join(f'<row r="{n}"><c r="A{n}" t="s"><v>0</v></c></row>' for n in range(2, 20_002))
    workbook(path, sheet_xml(cells))
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(
            "xl/sharedStrings.xml",
            f'<sst xmlns="{_NS}/spreadsheetml/2006/main" count="1" uniqueCount="1">'
            f"<si><t>{'x' * 32_000}</t></si></sst>",
        )
    assert path.stat().st_size < 200_000
    rows, errors = collect(path)
    assert rows.height == 0
    assert errors.select("position", "rule").rows() == [(f"member {SHEET}", "SHEET_TOO_LARGE")]
    assert "repeats shared strings into" in errors["message"][0]
    check_xlsx(path, "shared.xlsx", ArchiveLimits(max_text=1 << 30))  # within a larger bound


def test_a_member_that_lies_about_its_size_is_refused(tmp_path: Path) -> None:
    path = workbook(tmp_path / "liar.xlsx", sheet_xml(good_row() * 200))
    data = bytearray(path.read_bytes())
    name = SHEET.encode()
    # declare 1 KiB unpacked in the local header (offset 22) and central directory (offset 24)
    for sig, offset, name_at in ((b"PK\x03\x04", 22, 30), (b"PK\x01\x02", 24, 46)):
        at = data.find(sig)
        while data[at + name_at : at + name_at + len(name)] != name:
            at = data.find(sig, at + 4)
        struct.pack_into("<I", data, at + offset, 1024)
    path.write_bytes(bytes(data))
    with pytest.raises(ExportError) as info:
        check_xlsx(path, "liar.xlsx")
    assert (info.value.rule, info.value.position) == ("XLSX_SYNTAX", f"member {SHEET}")


def test_calamine_panic_is_an_error_row_for_that_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real Rust panic: calamine computes the grid of this reference and overflows
    # ("capacity overflow", pyo3_runtime.PanicException). The grid check would refuse the
    # file first; lift it to let the file reach calamine.
    monkeypatch.setenv("SCFEEDS_XLSX_MAX_CELLS", "1e30")
    bad = '<row r="2"><c r="ZZZZZZZ99999999999"><v>1</v></c></row>'
    path = workbook(tmp_path / "panic.xlsx", sheet_xml(bad))
    good = workbook(tmp_path / "good.xlsx", sheet_xml(good_row()))
    rows, errors = read_export([path, good], table="po_lines", columns=PO_COLUMNS, errors="collect")
    assert rows["source"].to_list() == [str(good)]  # the batch goes on
    assert errors.select("source", "position", "rule").rows() == [
        (str(path), "file", "READER_PANIC")
    ]
    assert "PanicException" in errors["message"][0]
    with pytest.raises(ExportError) as info:
        read_export(path, table="po_lines", columns=PO_COLUMNS, errors="raise")
    assert info.value.rule == "READER_PANIC"
    parsed = parse_file(path, table="po_lines", source="https://example.test/panic.xlsx")
    assert parsed.errors.select("source", "rule").rows() == [
        ("https://example.test/panic.xlsx", "READER_PANIC")
    ]


def test_parse_file_turns_any_native_panic_into_an_error_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one boundary every reader is called through: a BaseException that is not an
    Exception (polars' own PanicException class here, raised for real) becomes a row;
    Ctrl-C and interpreter exit still go through."""
    import scfeeds._parse as parse

    x12 = tmp_path / "doc.x12"
    x12.write_bytes(b"ISA*00*")
    panic = pl.exceptions.PanicException
    assert not issubclass(panic, Exception)
    assert is_reader_panic(panic("x"))

    def panics(path: Path) -> object:
        raise panic("byte array offset overflow")

    monkeypatch.setattr(parse, "_parse_x12", panics)
    out = parse_file(x12)
    assert out.errors.select("source", "position", "rule").rows() == [
        (str(x12), "file", "READER_PANIC")
    ]
    assert "byte array offset overflow" in out.errors["message"][0]
    for stop in (KeyboardInterrupt, SystemExit):

        def stops(path: Path, stop: type[BaseException] = stop) -> object:
            raise stop()

        monkeypatch.setattr(parse, "_parse_x12", stops)
        with pytest.raises(stop):
            parse_file(x12)


def test_real_exports_pass_the_checks(tmp_path: Path) -> None:
    import datetime as dt
    from decimal import Decimal

    po = pl.concat(
        [
            empty("po_lines"),
            pl.DataFrame(
                {
                    "supplier_id": ["SUP001"] * 3,
                    "po_number": ["4500001"] * 3,
                    "po_date": [dt.date(2026, 1, 15)] * 3,
                    "line_number": ["1", "2", "3"],
                    "item_id": ["SKU-1", "SKU-2", "SKU-3"],
                    "description": ["Widget"] * 3,
                    "qty_ordered": [Decimal("12")] * 3,
                    "uom": ["EA"] * 3,
                    "unit_price": [Decimal("2.5")] * 3,
                    "currency": ["EUR"] * 3,
                }
            ),
        ],
        how="diagonal_relaxed",
    )
    out = tmp_path / "po.xlsx"
    write_export(po, out, table="po_lines", preset="acme", fmt="xlsx")
    # header + 3 rows; columns A-J count as 26 (no reference past Z: the bound is from above)
    check_xlsx(out, "po.xlsx", ArchiveLimits(max_cells=4 * 26))
    with pytest.raises(ExportError, match="4 rows x 26 columns"):
        check_xlsx(out, "po.xlsx", ArchiveLimits(max_cells=4 * 26 - 1))
    assert read_export(out, table="po_lines").height == 3


def test_limits_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCFEEDS_XLSX_MAX_UNPACKED_MB", "8")
    monkeypatch.setenv("SCFEEDS_XLSX_MAX_RATIO", "50")
    limits = ArchiveLimits.from_env()
    assert (limits.max_unpacked, limits.max_ratio) == (8 << 20, 50.0)
    monkeypatch.setenv("SCFEEDS_XLSX_MAX_CELLS", "lots")
    with pytest.raises(ConfigurationError, match="SCFEEDS_XLSX_MAX_CELLS"):
        ArchiveLimits.from_env()


@pytest.mark.parametrize(
    ("rows", "bound"),
    [
        ('<row r="5"><c r="A5"/><c r="A7"/></row>', "7 rows"),  # a cell below its row
        ('<row r="9"><c r="A9"/></row><row r="3"><c r="B3"/></row>', "9 rows"),  # out of order
        ('<row r="10"><c r="A99"/></row>', "99 rows"),  # same digits as nothing seen yet
        ('<row r="99"><c r="A10"/></row>', "99 rows"),
        ('<row r="2"><c r="AB2"/><c r="C2"/></row>', "28 columns"),
    ],
    ids=["below", "out-of-order", "longer", "shorter", "past-z"],
)
def test_grid_bound_reads_references_beyond_the_rows_seen(
    tmp_path: Path, rows: str, bound: str
) -> None:
    path = workbook(tmp_path / "grid.xlsx", sheet_xml(rows))
    with pytest.raises(ExportError, match=bound):
        check_xlsx(path, "grid.xlsx", ArchiveLimits(max_cells=1))
