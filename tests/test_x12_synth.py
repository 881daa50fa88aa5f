"""Round trip: scfeeds.synth writes X12 -> read_x12 -> exactly the world's canonical rows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from scfeeds import synth
from scfeeds._x12 import read_x12, scan_x12
from scfeeds.schemas import TableName

TABLES: tuple[TableName, ...] = ("po_lines", "asn_lines", "invoice_lines")
KEY = ["source", "position"]


@pytest.fixture(scope="module")
def world(make_world: Callable[..., Path]) -> Path:
    return make_world(seed=11, suppliers=4, pos=80, formats=("x12",), damaged=True)


def _x12_files(dest: Path, table: str) -> list[str]:
    cat = pl.read_parquet(dest / "catalog.parquet")
    return cat.filter((pl.col("table") == table) & (pl.col("format") == "x12"))["path"].to_list()


@pytest.mark.parametrize("table", TABLES)
def test_read_x12_returns_the_world(
    world: Path, table: TableName, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(world)  # sources relative to the world root, as in world/*.parquet
    files = _x12_files(world, table)
    assert files
    res = read_x12(files)
    assert res.errors.height == 0, res.errors
    expected = synth.load_world(world, table).filter(pl.col("source").is_in(files)).collect()
    assert expected.height > 0
    assert_frame_equal(res.table(table).sort(KEY), expected.sort(KEY))


@pytest.mark.parametrize("slice_bytes", [1024, 4096, 1 << 20])
@pytest.mark.parametrize("table", TABLES)
def test_scan_x12_returns_the_world(
    world: Path, table: TableName, slice_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # tiny slices: many batches per file (this once tripped a polars 2.1 panic, see finish())
    monkeypatch.chdir(world)
    files = _x12_files(world, table)
    got = scan_x12(files, table=table, slice_bytes=slice_bytes).collect()
    expected = synth.load_world(world, table).filter(pl.col("source").is_in(files)).collect()
    assert_frame_equal(got.sort(KEY), expected.sort(KEY))


def test_damaged_files_report_the_rule_and_keep_good_records(
    world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(world)
    damaged = pl.read_parquet(world / "damaged.parquet").filter(pl.col("format") == "x12")
    assert set(damaged["rule"]) == {"SE01_COUNT", "GE02_CONTROL", "TRUNCATED"}
    for row in damaged.iter_rows(named=True):
        res = read_x12(row["path"])
        assert (row["rule"], row["position"]) in res.errors.select("code", "position").rows()
        assert res.table(row["table"]).height == row["good_records"]


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 10_000), pos=st.integers(1, 30))
def test_round_trip_any_seed(tmp_path_factory: pytest.TempPathFactory, seed: int, pos: int) -> None:
    dest = tmp_path_factory.mktemp("x12prop")
    synth.generate(dest, seed=seed, suppliers=4, pos=pos, formats=("x12",))
    for table in TABLES:
        files = _x12_files(dest, table)
        res = read_x12([dest / f for f in files], segments=False)
        assert res.errors.height == 0
        expected = (
            synth.load_world(dest, table)
            .filter(pl.col("source").is_in(files))
            .with_columns(source=pl.lit(str(dest) + "/") + pl.col("source"))
            .collect()
        )
        assert_frame_equal(res.table(table).sort(KEY), expected.sort(KEY))
