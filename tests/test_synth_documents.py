"""``synth.generate(layout="documents")``: the same world, one file per document as suppliers
send them; the lake of that world equals the answer key and the lake of the default layout."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import scfeeds
from scfeeds import synth
from scfeeds._ingest import ingest
from scfeeds._lake import scan_lake
from scfeeds.exceptions import ConfigurationError
from scfeeds.schemas import COLUMNS

TABLES = ("po_lines", "asn_lines", "invoice_lines", "receipts")
WORLD = {"seed": 5, "pos": 120, "suppliers": 4}


@pytest.fixture(scope="module")
def worlds(make_world: Callable[..., Path]) -> dict[str, Path]:
    return {layout: make_world(layout=layout, **WORLD) for layout in ("files", "documents")}


def _business(frame: pl.DataFrame, table: str) -> pl.DataFrame:
    cols = list(COLUMNS[table])  # type: ignore[index]
    return frame.select(cols).sort(cols, nulls_last=True)


def _ingest_local(world: Path, lake: Path) -> scfeeds.IngestReport:
    catalog = pl.read_parquet(world / "catalog.parquet")
    sources = [
        scfeeds.Source(url=str(world / row["path"]), format=row["format"], table=row["table"])
        for row in catalog.iter_rows(named=True)
    ]
    return scfeeds.run(ingest(sources, lake, progress=None, pool="threads"))


def test_one_file_per_document(worlds: dict[str, Path]) -> None:
    files = pl.read_parquet(worlds["files"] / "catalog.parquet")
    docs = pl.read_parquet(worlds["documents"] / "catalog.parquet")
    assert docs.height > files.height
    for table, key in (("po_lines", "po_number"), ("invoice_lines", "invoice_number")):
        world = synth.load_world(worlds["documents"], table).collect()
        for fmt in ("x12", "xml"):
            per_file = (
                world.filter(pl.col("source").str.ends_with(f".{fmt}"))
                .group_by("source")
                .agg(pl.col(key).n_unique())
            )
            assert per_file.height > 0, (table, fmt)
            assert per_file[key].max() == 1, (table, fmt)
    # exports: one per supplier, table and day
    exports = synth.load_world(worlds["documents"], "receipts").collect()
    days = exports.group_by("source").agg(pl.col("receipt_date").n_unique())
    assert days["receipt_date"].max() == 1
    # a resent daily export is a file of its own bytes (an ingest drops content it holds)
    resent = docs.filter(pl.col("path").str.contains("_resend"))
    assert {"csv", "xlsx"} <= set(resent["format"])
    assert docs["sha256"].n_unique() == docs.height
    x12 = docs.filter(pl.col("format") == "x12")
    assert x12["bytes"].max() < files.filter(pl.col("format") == "x12")["bytes"].max()


def test_same_world_and_answer_key(worlds: dict[str, Path]) -> None:
    for table in TABLES:
        a = synth.load_world(worlds["files"], table).collect()
        b = synth.load_world(worlds["documents"], table).collect()
        assert a.height > 0
        assert_frame_equal(_business(a, table), _business(b, table))
    for name in ("truth.parquet", "world/conversions.parquet"):
        assert_frame_equal(
            pl.read_parquet(worlds["files"] / name), pl.read_parquet(worlds["documents"] / name)
        )


def test_lake_of_documents_equals_the_world_and_the_files_lake(
    worlds: dict[str, Path], tmp_path: Path
) -> None:
    lakes = {}
    for layout, world in worlds.items():
        lake = tmp_path / layout
        report = _ingest_local(world, lake)
        assert report.n_errors == 0
        lakes[layout] = lake
    world = worlds["documents"]
    formats = set(pl.read_parquet(world / "catalog.parquet")["format"])
    assert formats == {"x12", "csv", "xlsx", "xml"}
    for table in TABLES:
        got = scan_lake(lakes["documents"], table).collect()
        want = synth.load_world(world, table).collect()
        # every provenance column but the path the world names relative to its root
        keep = [c for c in want.columns if c != "source"]
        assert_frame_equal(
            got.select(keep).sort(keep, nulls_last=True),
            want.select(keep).sort(keep, nulls_last=True),
        )
        assert set(got["source"]) == {str(world / s) for s in want["source"].unique()}
        other = scan_lake(lakes["files"], table).collect()
        assert_frame_equal(_business(got, table), _business(other, table))


def test_unknown_layout_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="layout"):
        synth.generate(tmp_path, layout="pages", pos=5)  # type: ignore[arg-type]
