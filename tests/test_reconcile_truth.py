"""The match against synth's answer key: every injected fault, nothing else."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from scfeeds._reconcile import reconcile
from scfeeds.synth import generate, load_truth, load_world

KEYS = [
    "code",
    "level",
    "supplier_id",
    "po_number",
    "line_number",
    "item_id",
    "invoice_number",
    "shipment_id",
]


@pytest.fixture(scope="module", params=[11, 2026])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp(f"synth{request.param}")
    generate(dest, seed=request.param, pos=150)
    return dest


def _frames(dest: Path) -> dict[str, pl.LazyFrame]:
    return {t: load_world(dest, t) for t in ("po_lines", "asn_lines", "invoice_lines", "receipts")}


def _compare(got: pl.DataFrame, truth: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    want = truth.select(KEYS).unique()
    have = got.select(KEYS).unique()
    false_pos = have.join(want, on=KEYS, how="anti", nulls_equal=True)
    missed = want.join(have, on=KEYS, how="anti", nulls_equal=True)
    return false_pos, missed


@pytest.mark.parametrize("with_receipts", [True, False], ids=["receipts", "asn-as-receipt"])
def test_precision_and_recall_are_exact(world: Path, with_receipts: bool) -> None:
    w = _frames(world)
    conversions = pl.read_parquet(world / "world" / "conversions.parquet")
    rec = reconcile(
        w["po_lines"],
        w["asn_lines"],
        w["invoice_lines"],
        receipts=w["receipts"] if with_receipts else None,
        conversions=conversions,
    )
    exc = rec.exceptions.collect()
    truth = load_truth(world)
    assert truth.height > 0
    # every fault kind of the contract is exercised
    assert set(truth["code"]) >= {"DUPLICATE_INVOICE", "PRICE_VARIANCE", "UOM_MISMATCH"}
    false_pos, missed = _compare(exc, truth)
    assert false_pos.height == 0, f"flagged but not injected:\n{false_pos}"
    assert missed.height == 0, f"injected but not flagged:\n{missed}"
    assert exc.height == exc.select(KEYS).unique().height  # one row per exception

    lines = rec.lines.collect()
    assert lines.height == w["po_lines"].select(pl.len()).collect().item()
    faulty = truth.filter(pl.col("level") == "line").select("po_number", "line_number").unique()
    clean = lines.join(faulty, on=["po_number", "line_number"], how="anti")
    assert set(clean["status"]) <= {"MATCHED", "DUPLICATE_INVOICE", "DUPLICATE_SUSPECT"}


def test_pack_sizes_need_the_conversions(world: Path) -> None:
    w = _frames(world)
    rec = reconcile(w["po_lines"], w["asn_lines"], w["invoice_lines"], receipts=w["receipts"])
    false_pos, _ = _compare(rec.exceptions.collect(), load_truth(world))
    # without the item factors, CS lines cannot be converted: only UOM_MISMATCH appears extra
    assert set(false_pos["code"]) == {"UOM_MISMATCH"}
