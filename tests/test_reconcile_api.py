"""One reconcile: frames or a lake, in parts or whole, here or on a cluster; honest laziness."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

import scfeeds
from scfeeds._lake import lake_snapshot
from scfeeds._reconcile import reconcile
from scfeeds._reconcile._engine import Plan
from scfeeds._reconcile._result import _Job
from scfeeds.exceptions import ConfigurationError
from tests.lake_support import commit_frames
from tests.test_reconcile import _frame, bill, po_line, ship


def _frames() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    po = [po_line(str(n), supplier_id=f"S{n}", po_number=f"P{n}") for n in range(1, 5)]
    asn = [ship(str(n), supplier_id=f"S{n}", po_number=f"P{n}", qty=n) for n in range(1, 5)]
    inv = [bill(str(n), supplier_id=f"S{n}", po_number=f"P{n}", qty=n) for n in range(1, 5)]
    return _frame("po_lines", po), _frame("asn_lines", asn), _frame("invoice_lines", inv)


def _scans(folder: Path) -> list[pl.LazyFrame]:
    """The three input frames written to Parquet in ``folder`` and scanned back."""
    scans = []
    for name, frame in zip(("po", "asn", "inv"), _frames(), strict=True):
        frame.write_parquet(folder / f"{name}.parquet")
        scans.append(pl.scan_parquet(folder / f"{name}.parquet"))
    return scans


def _lake(tmp_path: Path) -> Path:
    lake = tmp_path / "lake"
    tables = ("po_lines", "asn_lines", "invoice_lines")
    commit_frames(lake, dict(zip(tables, _frames(), strict=True)), source="s")
    return lake


def test_a_lake_gives_the_rows_of_its_frames(tmp_path: Path) -> None:
    lake = _lake(tmp_path)
    by_frames = reconcile(*_frames())
    for parts in (500_000, 1):
        rec = reconcile(lake, partition_lines=parts)
        assert rec.received_from == "asn"  # no receipts in the lake: the ASN stands in
        assert rec.inputs == lake_snapshot(lake)
        for kind in ("lines", "invoices", "exceptions"):
            got = getattr(rec, kind).collect()
            want = getattr(by_frames, kind).collect()
            assert got.drop("source", strict=False).equals(want.drop("source", strict=False))
    assert scfeeds.reconcile(str(lake)).lines.collect().height == 4


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda f, lake: reconcile(f[0]), "needs the asn and invoice frames"),  # type: ignore[call-overload]
        (lambda f, lake: reconcile(f[0], f[1]), "needs the asn and invoice frames"),  # type: ignore[call-overload]
        (lambda f, lake: reconcile(lake, f[1], f[2]), "drop asn, invoice"),  # type: ignore[call-overload]
        (lambda f, lake: reconcile(*f, snapshot={}), "apply to a lake"),  # type: ignore[call-overload]
        (lambda f, lake: reconcile(*f, partition_lines=0), "partition_lines must be >= 1"),
        (lambda f, lake: reconcile(42, f[1], f[2]), "po must be a polars DataFrame"),  # type: ignore[call-overload]
    ],
    ids=["po-alone", "no-invoice", "lake-and-frames", "lake-option", "parts", "not-a-frame"],
)
def test_a_mixed_up_call_says_what_to_do(tmp_path: Path, call: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        call(_frames(), tmp_path)  # type: ignore[operator]


def test_results_are_lazy_until_collected() -> None:
    ran: list[str] = []
    rec = reconcile(*_frames())
    job = rec._job
    real = job._run

    def spy(engine: str) -> Plan:
        ran.append(engine)
        return real(engine)  # type: ignore[arg-type]

    job._run = spy  # type: ignore[method-assign]
    assert ran == []  # building the result ran nothing
    rec.lines.collect()
    rec.exceptions.collect()
    assert ran == ["auto"]  # once, shared by every frame


def test_collect_runs_again_on_another_engine() -> None:
    engines: list[str] = []
    plan = reconcile(*_frames()).collect()._job.plan()

    def run(engine: str) -> Plan:
        engines.append(engine)
        return plan

    job = _Job(run)  # type: ignore[arg-type]
    job.plan()
    job.plan()
    job.plan("auto")
    assert engines == ["auto"]
    job.plan("streaming")
    job.plan()  # the kept result, whatever engine it ran on
    job.plan("in-memory")
    assert engines == ["auto", "streaming", "in-memory"]


def test_without_a_cluster_dask_is_never_imported(tmp_path: Path) -> None:
    lake = _lake(tmp_path)
    code = (
        "import sys, scfeeds\n"
        f"rec = scfeeds.reconcile({str(lake)!r}, partition_lines=1)\n"
        "assert rec.lines.collect().height == 4\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_partitioned_run_makes_the_public_lines_on_demand() -> None:
    rec = reconcile(*_frames(), partition_lines=1)
    # the parts keep a few integers per line; decimals and strings are made when asked for
    assert isinstance(rec._job.plan().lines, pl.LazyFrame)
    whole = reconcile(*_frames()).lines.collect()
    assert rec.lines.select("status").collect().equals(whole.select("status"))
    assert rec.lines.collect().equals(whole)
    assert rec.collect().lines.collect().equals(whole)


def test_a_streaming_partitioned_run_splits_the_inputs_once(tmp_path: Path) -> None:
    scans = _scans(tmp_path)
    whole = reconcile(*_frames()).collect()
    split = reconcile(*scans, partition_lines=1).collect(engine="streaming")
    assert "split inputs" in split.timings()
    for kind in ("lines", "invoices", "exceptions"):
        assert getattr(split, kind).collect().equals(getattr(whole, kind).collect()), kind


def test_a_streaming_partitioned_run_keeps_its_parts_on_disk_until_the_result_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    scans = _scans(tmp_path)
    split = reconcile(*scans, partition_lines=1).collect(engine="streaming")
    kept = list((tmp_path / "tmp").glob("scfeeds-reconcile-results-*/*/exceptions.parquet"))
    assert len(kept) > 1  # one folder per part, read by the result's frames
    assert isinstance(split._job.plan().exceptions, pl.LazyFrame)
    assert split.exceptions.collect().height > 0
    del split
    gc.collect()
    assert list((tmp_path / "tmp").iterdir()) == []


def test_the_frames_of_a_streaming_partitioned_result_outlive_the_result(tmp_path: Path) -> None:
    import gc

    scans = _scans(tmp_path)
    whole = reconcile(*_frames()).collect()
    # only the frames are kept: the reconciliation that made them is gone
    frames = {
        kind: getattr(reconcile(*scans, partition_lines=1).collect(engine="streaming"), kind)
        for kind in ("lines", "invoices", "exceptions")
    }
    gc.collect()
    for kind, frame in frames.items():
        assert frame.collect().equals(getattr(whole, kind).collect()), kind
