"""The command's errors: one line naming the file and what to do, never a traceback; ``x12
--ack`` with nothing to acknowledge says so and writes nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scfeeds._x12 import read_x12

FIXTURES = Path(__file__).parent / "fixtures" / "x12"


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scfeeds.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "names", "says"),
    [
        (["x12", "missing.x12"], "missing.x12", "pass an X12 file"),
        (["x12", "missing.x12", "--ack", "out.997"], "missing.x12", "no such file"),
        (["x12", "inbound/*.x12"], "inbound/*.x12", "no file matches"),
        (["reconcile", "--lake", "nolake"], "nolake", "scfeeds ingest SOURCES --lake nolake"),
        (["ingest", "missing.csv", "--lake", "lake"], "missing.csv", "existing files"),
        (["portal", "nodir", "--port", "0"], "nodir", "not a directory"),
    ],
    ids=["x12", "x12-ack", "x12-glob", "reconcile-lake", "ingest", "portal"],
)
def test_a_missing_path_is_one_line_naming_it(
    tmp_path: Path, args: list[str], names: str, says: str
) -> None:
    out = run_cli(*args, cwd=tmp_path)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"scfeeds {args[0]}: ")
    assert names in lines[0]
    assert says in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written on the way


def test_reconcile_with_a_missing_conversions_file(tmp_path: Path) -> None:
    (tmp_path / "lake").mkdir()
    out = run_cli("reconcile", "--lake", "lake", "--conversions", "conv.parquet", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1
    assert "conv.parquet: no such file" in out.stderr


def test_an_unwritable_ack_path_is_one_line(tmp_path: Path) -> None:
    source = FIXTURES / "newline_terminator.x12"
    out = run_cli("x12", str(source), "--ack", "no/such/folder/out.997", cwd=tmp_path)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1
    assert "no/such/folder/out.997: no such file or directory (check the path)" in out.stderr


def test_ack_with_nothing_to_acknowledge_says_so_and_writes_nothing(tmp_path: Path) -> None:
    # a 997 (functional group FA) is never acknowledged in turn
    inbound = read_x12(FIXTURES / "newline_terminator.x12")
    assert inbound.errors.height == 0
    ack = inbound.acknowledgment()
    assert ack.startswith("ISA")
    (tmp_path / "in.997").write_bytes(ack.encode("latin-1"))
    out = run_cli("x12", "in.997", "--ack", "out.997", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "nothing to acknowledge" in out.stdout
    assert "out.997 not written" in out.stdout
    assert "997 written" not in out.stdout
    assert not (tmp_path / "out.997").exists()

    # and a file with something to acknowledge still gets its 997
    out = run_cli("x12", str(FIXTURES / "newline_terminator.x12"), "--ack", "out.997", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "997 written to out.997" in out.stdout
    assert (tmp_path / "out.997").read_text(encoding="latin-1").startswith("ISA")
