"""scan_x12: lazy, many files, projection and predicate pushdown."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from scfeeds._x12 import read_x12, scan_x12
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


def test_projection_builds_only_what_is_asked() -> None:
    got = scan_x12(GLOB, table="po_lines").select("po_number", "qty_ordered").collect()
    full = read_x12(GLOB).po_lines.select("po_number", "qty_ordered")
    assert_frame_equal(got, full)


def test_predicates_filter_rows_and_skip_files() -> None:
    lf = scan_x12(GLOB, table="po_lines")
    only = lf.filter(pl.col("po_number") == "PO-OK").select("source").collect()
    assert only.height == 5
    assert only["source"].n_unique() == 5
    by_source = lf.filter(pl.col("source").str.ends_with("newline_terminator.x12")).collect()
    assert by_source["po_number"].to_list() == ["PO-1"]


def test_head_stops_early_and_count() -> None:
    lf = scan_x12(GLOB, table="po_lines")
    assert lf.head(2).collect().height == 2
    assert lf.select(pl.len()).collect().item() == read_x12(GLOB).po_lines.height


def test_bad_table_and_missing_files_raise_at_call() -> None:
    with pytest.raises(ConfigurationError, match="no table"):
        scan_x12(GLOB, table="receipts")
    with pytest.raises(ConfigurationError, match="no file matches"):
        scan_x12(str(FIX / "none-*.x12"))
