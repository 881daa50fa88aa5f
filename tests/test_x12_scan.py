"""scan_x12: lazy, many files, projection and predicate pushdown."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from scfeeds._x12 import _reader, _tables, read_x12, scan_x12
from scfeeds.exceptions import ConfigurationError
from scfeeds.schemas import schema

FIX = Path(__file__).parent / "fixtures" / "x12"
GLOB = str(FIX / "*.x12")


def test_scan_equals_read_over_a_glob() -> None:
    lf = scan_x12(GLOB, table="po_lines")
    assert isinstance(lf, pl.LazyFrame)
    assert lf.collect_schema() == schema("po_lines")
    assert_frame_equal(lf.collect(), read_x12(GLOB).po_lines)


@pytest.mark.parametrize("table", ["asn_lines", "invoice_lines"])
def test_other_tables(table: str) -> None:
    got = scan_x12(GLOB, table=table).collect()  # type: ignore[arg-type]
    assert_frame_equal(got, read_x12(GLOB).table(table))  # type: ignore[arg-type]


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the files the reader opens (it reads files only through ``_open``)."""
    names: list[str] = []
    real = _reader._open

    def counting(data: bytes | Path) -> object:
        if isinstance(data, Path):
            names.append(data.name)
        return real(data)

    monkeypatch.setattr(_reader, "_open", counting)
    return names


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The optional per-table builds run: PID descriptions, N1 supplier and CUR currency."""
    ran: list[str] = []
    for owner, name in (
        (_tables, "_descriptions"),
        (_tables._Piece, "supplier"),
        (_tables._Piece, "currency"),
    ):
        real = getattr(owner, name)

        def counting(*args: object, _real: object = real, _name: str = name) -> object:
            ran.append(_name)
            return _real(*args)  # type: ignore[operator]

        monkeypatch.setattr(owner, name, counting)
    return ran


def test_projection_builds_only_what_is_asked(lookups: list[str]) -> None:
    got = scan_x12(GLOB, table="po_lines").select("po_number", "qty_ordered").collect()
    assert lookups == []  # no description, supplier or currency asked: none built
    full = scan_x12(GLOB, table="po_lines").collect()
    assert set(lookups) == {"_descriptions", "supplier", "currency"}
    assert_frame_equal(got, full.select("po_number", "qty_ordered"))
    assert_frame_equal(got, read_x12(GLOB).po_lines.select("po_number", "qty_ordered"))


def test_predicates_filter_rows_and_skip_files(opened: list[str]) -> None:
    lf = scan_x12(GLOB, table="po_lines")
    only = lf.filter(pl.col("po_number") == "PO-OK").select("source").collect()
    assert only.height == 5
    assert only["source"].n_unique() == 5
    every = len(opened)
    assert every == len(list(FIX.glob("*.x12")))  # a predicate on data reads every file
    opened.clear()
    by_source = lf.filter(pl.col("source").str.ends_with("newline_terminator.x12")).collect()
    assert by_source["po_number"].to_list() == ["PO-1"]
    assert opened == ["newline_terminator.x12"]  # a predicate on source alone skips the rest


def test_head_stops_early_and_count(opened: list[str]) -> None:
    # small batches (a few files each), so that stopping early can be seen
    lf = scan_x12(GLOB, table="po_lines", slice_bytes=1024)
    assert lf.head(2).collect().height == 2
    early = len(opened)
    assert lf.select(pl.len()).collect().item() == read_x12(GLOB).po_lines.height
    every = len(list(FIX.glob("*.x12")))
    assert len(opened) == early + 2 * every  # the count and read_x12 read every file
    assert 0 < early < every // 2


def test_bad_table_and_missing_files_raise_at_call() -> None:
    with pytest.raises(ConfigurationError, match="no table"):
        scan_x12(GLOB, table="receipts")
    with pytest.raises(ConfigurationError, match="no file matches"):
        scan_x12(str(FIX / "none-*.x12"))
