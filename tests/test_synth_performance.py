"""Synth with supplier performance: requested dates and 855s read back as written, and
OTIF and the scorecard on the world equal the answer key exactly."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import scfeeds
from scfeeds._synth.acks import OTIF_TRUTH_SCHEMA, SLIP_DAY, TRUTH_WINDOW
from scfeeds._synth.config import SynthConfig
from scfeeds.synth import generate, load_world

c = pl.col


@pytest.fixture(scope="module")
def world(make_world: Callable[..., Path]) -> Path:
    config = SynthConfig(performance=True, batch_pos=150)
    return make_world(seed=11, suppliers=4, pos=400, config=config)


def _truth(root: Path) -> pl.DataFrame:
    return pl.read_parquet(root / "world" / "otif_truth" / "*.parquet")


def _rel(frame: pl.DataFrame, root: Path) -> pl.DataFrame:
    return frame.with_columns(c("source").str.strip_prefix(f"{root}/"))


def test_855s_read_back_as_the_world_with_valid_envelopes(world: Path) -> None:
    res = scfeeds.read_x12(sorted(str(p) for p in world.glob("feeds/*/po_acks/*.x12")))
    assert res.errors.height == 0
    assert res.envelopes["valid"].all()
    assert set(res.envelopes["set_id"]) == {"855"}
    want = load_world(world, "po_acks").collect()
    assert_frame_equal(
        _rel(res.po_acks, world).sort("source", "position"), want.sort("source", "position")
    )
    # changed and rejected lines, both date qualifiers
    assert {"accepted", "changed", "rejected"} <= set(want["ack_status"])
    assert {"067", "068"} == set(want["date_qualifier"].drop_nulls())
    ack = res.acknowledgment()
    assert "AK1*PR*" in ack
    assert "AK5*R" not in ack


def test_requested_dates_read_back_from_every_format(world: Path) -> None:
    want = load_world(world, "po_lines").collect()
    assert want["requested_date"].null_count() == 0
    cat = pl.read_parquet(world / "catalog.parquet").filter(c("table") == "po_lines")
    parts = []
    for fmt, rows in cat.partition_by("format", as_dict=True).items():
        paths = [str(world / p) for p in rows["path"]]
        if fmt == ("x12",):
            parts.append(scfeeds.read_x12(paths).po_lines)
        elif fmt == ("xml",):
            parts.append(scfeeds.read_xml(paths, table="po_lines"))
        else:
            parts += [scfeeds.read_export(p, table="po_lines") for p in paths]
    assert {f for (f,) in cat.partition_by("format", as_dict=True)} >= {"x12", "csv", "xml"}
    got = _rel(pl.concat(parts, how="vertical"), world)
    keys = ["source", "position"]
    assert_frame_equal(
        got.select(*keys, "requested_date").sort(keys),
        want.select(*keys, "requested_date").sort(keys),
    )


def test_otif_on_the_world_equals_the_answer_key(world: Path) -> None:
    truth = _truth(world)
    assert truth.schema == OTIF_TRUTH_SCHEMA
    po = load_world(world, "po_lines")
    acks = load_world(world, "po_acks")
    res = scfeeds.otif(po, receipts=load_world(world, "receipts"), acks=acks, window=TRUTH_WINDOW)
    cols = list(OTIF_TRUTH_SCHEMA)
    cols.remove("ack_code")
    key = ["po_number", "line_number"]
    assert_frame_equal(res.lines.select(cols).sort(key), truth.select(cols).sort(key))
    # every timing class is in the key, so the comparison covers each branch
    assert set(truth["timing"]) == {"on_time", "early", "late", "not_delivered"}
    assert not truth["in_full"].all()


def test_scorecard_equals_the_answer_key_and_shows_the_slip(world: Path) -> None:
    truth = _truth(world)
    res = scfeeds.otif(
        load_world(world, "po_lines"),
        receipts=load_world(world, "receipts"),
        acks=load_world(world, "po_acks"),
        window=TRUTH_WINDOW,
    )
    card = res.scorecard(every="month")
    want = (
        truth.with_columns(period=c("requested_date").dt.truncate("1mo"))
        .group_by("supplier_id", "period")
        .agg(
            lines=pl.len(),
            on_time_lines=(c("timing") == "on_time").sum(),
            in_full_lines=c("in_full").sum(),
            otif_lines=c("otif").sum(),
            late_lines=(c("timing") == "late").sum(),
        )
        .sort("supplier_id", "period")
    )
    got = card.trend.select(want.columns).cast(want.schema)  # type: ignore[arg-type]
    assert_frame_equal(got, want)
    # SUP002 slips from SLIP_DAY on: its late share doubles at least
    cfg = SynthConfig()
    cut = cfg.start_date + dt.timedelta(days=SLIP_DAY)
    sup2 = res.lines.filter(c("supplier_id") == "SUP002")
    before = sup2.filter(c("po_date") < cut)["timing"].eq("late").mean()
    after = sup2.filter(c("po_date") >= cut)["timing"].eq("late").mean()
    assert isinstance(before, float)
    assert isinstance(after, float)
    assert after > 2 * before + 0.1


def test_performance_off_leaves_the_world_as_it_was(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", seed=5, suppliers=2, pos=30)
    b = generate(tmp_path / "b", seed=5, suppliers=2, pos=30, config=SynthConfig(performance=True))
    assert "po_acks" not in a.counts
    assert b.counts["po_acks"] == b.counts["po_lines"]
    assert not (tmp_path / "a" / "feeds" / "SUP001" / "po_acks").exists()
    # the asn, invoice and receipt feeds do not change with performance on
    for table in ("asn_lines", "invoice_lines", "receipts"):
        for f in (tmp_path / "a" / "feeds").glob(f"*/{table}/*"):
            assert f.read_bytes() == (tmp_path / "b" / f.relative_to(tmp_path / "a")).read_bytes()
    assert load_world(tmp_path / "a", "po_lines").collect()["requested_date"].null_count() > 0
