"""Small supplier exports are read by one in-memory query, not the streaming engine."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from scfeeds._exports import read_export, scan_export


@pytest.fixture(scope="module")
def csvs(make_world: Callable[..., Path]) -> list[Path]:
    dest = make_world(seed=2, suppliers=3, pos=20, formats=("csv",), faults="none")
    return sorted((dest / "feeds").glob("*/po_lines/*.csv"))


def test_small_export_does_not_start_the_streaming_engine(
    csvs: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = [0]
    real = pl.LazyFrame.collect_batches

    def counted(self: pl.LazyFrame, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pl.LazyFrame, "collect_batches", counted)
    rows, errors = read_export(csvs, table="po_lines", errors="collect")
    assert rows.height > 0
    assert errors.filter(~pl.col("rule").is_in(["UNKNOWN_COLUMNS"])).height == 0
    assert calls[0] == 0


def test_small_export_rows_equal_the_streamed_rows(csvs: list[Path]) -> None:
    # the same rows whether read in one query or streamed in small batches
    eager = read_export(csvs, table="po_lines", errors="collect").rows
    streamed = pl.concat(
        scan_export(csvs, table="po_lines").collect_batches(chunk_size=7), how="vertical"
    )
    assert_frame_equal(eager, streamed)
