"""The `scfeeds` command: help reads well, and the demo runs the whole job."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import openpyxl
import polars as pl

from scfeeds.cli import build_parser


def test_help_lists_every_subcommand() -> None:
    text = build_parser().format_help()
    for cmd in (
        "demo",
        "synth",
        "portal",
        "fetch",
        "ingest",
        "reconcile",
        "x12",
        "worker",
        "enqueue",
    ):
        assert f"\n    {cmd}" in text, cmd


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scfeeds.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def test_demo_runs_end_to_end_and_writes_the_report(tmp_path: Path) -> None:
    out = run_cli(
        "demo", "--dest", str(tmp_path / "demo"), "--pos", "60", "--suppliers", "3", cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert "4/4 reconciliation" in out.stdout
    assert "NOT_SHIPPED" in out.stdout
    report = tmp_path / "demo" / "exceptions.html"
    assert report.exists()
    exceptions = pl.read_csv(tmp_path / "demo" / "exceptions.csv")
    assert exceptions.height > 0
    assert "code" in exceptions.columns
    # Every exception row is in the page (not the first 500, not polars' repr).
    assert report.read_text().count("<tr data-supplier=") == exceptions.height
    workbook = openpyxl.load_workbook(tmp_path / "demo" / "exceptions.xlsx", read_only=True)
    assert workbook.sheetnames[:2] == ["Summary", "Exceptions"]


def test_synth_then_reconcile_from_the_command_line(tmp_path: Path) -> None:
    out = run_cli("synth", str(tmp_path / "w"), "--seed", "3", "--pos", "20", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    feeds = sorted((tmp_path / "w" / "feeds").rglob("*.x12"))
    assert feeds
    out = run_cli("ingest", *map(str, feeds), "--lake", str(tmp_path / "lake"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "ingested" in out.stdout
    out = run_cli("reconcile", "--lake", str(tmp_path / "lake"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "by supplier" in out.stdout


def test_x12_reports_a_broken_envelope_and_writes_the_997(tmp_path: Path) -> None:
    from scfeeds import synth

    synth.generate(tmp_path / "w", seed=2, pos=20, suppliers=2, damaged=["x12_bad_se_count"])
    damaged = pl.read_parquet(tmp_path / "w" / "damaged.parquet").row(0, named=True)
    out = run_cli(
        "x12",
        str(tmp_path / "w" / damaged["path"]),
        "--ack",
        str(tmp_path / "ack.997"),
        cwd=tmp_path,
    )
    assert out.returncode == 1, out.stderr
    assert f"{damaged['position']}: SE01_COUNT" in out.stdout
    import scfeeds

    ack = scfeeds.read_x12((tmp_path / "ack.997").read_bytes())
    assert set(ack.envelopes["set_id"]) == {"997"}
    ak5 = ack.segments.filter(pl.col("segment_id") == "AK5")["elements"].list.first()
    assert "R" in ak5.to_list()  # the damaged set is rejected
