"""The Delta lake: commit protocol, committed-only reads, time travel, maintenance, S3."""

from __future__ import annotations

import datetime as dt
import errno
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import deltalake
import polars as pl
import pytest
from polars.testing import assert_frame_equal

import scfeeds
from scfeeds._lake import (
    BATCH_COL,
    LEDGER,
    DocumentCommit,
    LakeWriteError,
    _append,
    batch_id,
    commit_micro_batch,
    compact_lake,
    data_files,
    lake_history,
    lake_snapshot,
    read_ledger,
    scan_lake,
    vacuum_lake,
)
from scfeeds.exceptions import ConfigurationError
from scfeeds.schemas import schema
from tests.lake_support import S3


def po_rows(n: int, *, supplier: str | None = "SUP001", source: str = "feed.csv") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "source": [source] * n,
            "position": [f"row {i + 1}" for i in range(n)],
            "interchange_control": [None] * n,
            "group_control": [None] * n,
            "set_control": [None] * n,
            "supplier_id": [supplier] * n,
            "po_number": [f"PO{i // 3}" for i in range(n)],
            "po_date": [None] * n,
            "line_number": [str(i % 3 + 1) for i in range(n)],
            "item_id": [f"ITEM{i}" for i in range(n)],
            "description": ["widget"] * n,
            "qty_ordered": [Decimal(i + 1) for i in range(n)],
            "uom": ["EA"] * n,
            "unit_price": [Decimal("1.2345")] * n,
            "currency": ["USD"] * n,
            "requested_date": [None] * n,
        },
        schema=schema("po_lines"),
    )


def commit(lake: Any, batch: str, rows: pl.DataFrame, **kw: Any) -> set[str]:
    """One micro-batch holding one document with ``rows``."""
    return commit_micro_batch(
        lake,
        documents=[
            DocumentCommit(
                batch=batch,
                source="u",
                sha256="s",
                format="csv",
                table="po_lines",
                rows=rows.height,
            )
        ],
        tables={"po_lines": rows.with_columns(pl.lit(batch).alias(BATCH_COL))},
        quarantine={},
        errors=None,
        **kw,
    )


def test_batch_id_is_deterministic_and_salted() -> None:
    assert batch_id("ab" * 32) == batch_id("ab" * 32)
    assert batch_id("ab" * 32) != batch_id("ab" * 32, salt="csv:po_lines")
    assert batch_id("ab" * 32) != batch_id("cd" * 32)


def test_committed_rows_are_delta_tables_any_reader_can_read(tmp_path: Path) -> None:
    rows = po_rows(7)
    assert commit(tmp_path, "b1", rows) == {"b1"}
    got = scan_lake(tmp_path, "po_lines").collect()
    assert_frame_equal(got.sort("item_id"), rows.sort("item_id"))
    # without scfeeds: polars and deltalake read the same rows (plus the two protocol columns)
    raw = pl.read_delta(str(tmp_path / "po_lines"))
    assert raw.height == 7
    assert {BATCH_COL, "_txn"} <= set(raw.columns)
    assert deltalake.DeltaTable(str(tmp_path / LEDGER)).version() >= 1
    assert read_ledger(tmp_path)["batch"].to_list() == ["b1"]


def test_the_same_document_twice_is_ledgered_once_and_its_rows_kept_once(tmp_path: Path) -> None:
    rows = po_rows(5)
    assert commit(tmp_path, "b1", rows) == {"b1"}
    assert commit(tmp_path, "b1", rows) == set()  # another attempt lost: its rows deleted again
    assert scan_lake(tmp_path, "po_lines").collect().height == 5
    assert pl.read_delta(str(tmp_path / "po_lines")).height == 5
    assert read_ledger(tmp_path).height == 1


def test_rows_without_a_ledger_entry_are_invisible_and_compaction_drops_them(
    tmp_path: Path,
) -> None:
    commit(tmp_path, "b1", po_rows(3))
    # a writer killed between its data commit and its ledger commit
    orphan = po_rows(4).with_columns(
        pl.lit("b2").alias(BATCH_COL), pl.lit("0000000000001-dead").alias("_txn")
    )
    _append(tmp_path, "po_lines", orphan, None)
    assert pl.read_delta(str(tmp_path / "po_lines")).height == 7
    assert scan_lake(tmp_path, "po_lines").collect().height == 3
    # a young orphan may belong to a live writer: kept within the grace period
    compact_lake(tmp_path, grace=dt.timedelta(days=365 * 100))
    assert pl.read_delta(str(tmp_path / "po_lines")).height == 7
    report = compact_lake(tmp_path)
    assert report.tables["po_lines"]["uncommitted_rows_deleted"] == 4
    assert pl.read_delta(str(tmp_path / "po_lines")).height == 3
    assert scan_lake(tmp_path, "po_lines").collect().height == 3


def test_a_supplier_id_that_looks_like_a_path_stays_data(tmp_path: Path) -> None:
    lake = tmp_path / "deep" / "lake"
    odd = ["../../../../../../ESCAPED", "a/b", "..", "/etc/passwd"]
    rows = pl.concat([po_rows(1, supplier=s) for s in odd])
    commit(lake, "b1", rows)
    got = scan_lake(lake, "po_lines").collect()
    assert sorted(got["supplier_id"]) == sorted(odd)
    outside = [p for p in tmp_path.rglob("*") if lake not in p.parents and p != lake]
    assert outside == [tmp_path / "deep"]
    names = [p.name for p in lake.rglob("*")]
    assert not any("ESCAPED" in n or "passwd" in n for n in names)


def test_partial_micro_batch_fails_over_to_the_re_run(tmp_path: Path) -> None:
    """Data of table 1 committed, killed before the ledger: the re-run's rows are exact."""
    rows = po_rows(6)
    _append(
        tmp_path,
        "po_lines",
        rows.with_columns(pl.lit("b1").alias(BATCH_COL), pl.lit("0000000000002-x").alias("_txn")),
        None,
    )
    assert commit(tmp_path, "b1", rows) == {"b1"}
    assert scan_lake(tmp_path, "po_lines").collect().height == 6
    compact_lake(tmp_path)  # the old attempt's rows belong to a ledgered document: dropped
    assert pl.read_delta(str(tmp_path / "po_lines")).height == 6


def test_time_travel_by_version_time_and_snapshot(tmp_path: Path) -> None:
    commit(tmp_path, "b1", po_rows(3))
    snap = lake_snapshot(tmp_path)
    v1 = snap["po_lines"]
    time.sleep(0.05)
    between = dt.datetime.now(dt.UTC)
    time.sleep(0.05)
    commit(tmp_path, "b2", po_rows(5, source="other.csv"))
    assert scan_lake(tmp_path, "po_lines").collect().height == 8
    assert scan_lake(tmp_path, "po_lines", version=v1).collect().height == 3
    assert scan_lake(tmp_path, "po_lines", as_of=between).collect().height == 3
    assert scan_lake(tmp_path, "po_lines", snapshot=snap).collect().height == 3
    before = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    assert scan_lake(tmp_path, "po_lines", as_of=before).collect().height == 0
    with pytest.raises(ConfigurationError, match="at most one"):
        scan_lake(tmp_path, "po_lines", version=1, snapshot=snap)
    history = lake_history(tmp_path, "po_lines")
    assert history["version"].to_list()[0] == lake_snapshot(tmp_path)["po_lines"]


def test_compaction_keeps_every_row_and_cuts_files_and_vacuum_keeps_readers(
    tmp_path: Path,
) -> None:
    for i in range(6):
        commit(tmp_path, f"b{i}", po_rows(4, source=f"f{i}.csv"))
    before = scan_lake(tmp_path, "po_lines").collect()
    files_before = dict(data_files(tmp_path))["po_lines"]
    assert files_before == 6
    snap = lake_snapshot(tmp_path)
    compact_lake(tmp_path)
    assert dict(data_files(tmp_path))["po_lines"] == 1
    after = scan_lake(tmp_path, "po_lines").collect()
    assert_frame_equal(after.sort("source", "item_id"), before.sort("source", "item_id"))
    # the version read before compaction is still readable until vacuum removes its files
    assert scan_lake(tmp_path, "po_lines", snapshot=snap).collect().height == 24
    vacuum_lake(tmp_path, retention=dt.timedelta(0))
    on_disk = list((tmp_path / "po_lines").glob("*.parquet"))
    assert len(on_disk) == 1
    assert scan_lake(tmp_path, "po_lines").collect().height == 24


def test_quarantine_and_errors_tables(tmp_path: Path) -> None:
    bad = po_rows(1).with_columns(
        rule=pl.lit("QTY_NOT_POSITIVE"),
        rules=pl.lit(["QTY_NOT_POSITIVE"]),
        message=pl.lit("qty must be > 0"),
    )
    commit_micro_batch(
        tmp_path,
        documents=[DocumentCommit(batch="b", source="u", sha256="s", format="x12", table=None)],
        tables={"po_lines": po_rows(4).with_columns(pl.lit("b").alias(BATCH_COL))},
        quarantine={"po_lines": bad.with_columns(pl.lit("b").alias(BATCH_COL))},
        errors=pl.DataFrame(
            {
                "source": ["u"],
                "position": ["segment 9"],
                "rule": ["SE01_COUNT"],
                "message": ["SE01 says 8"],
                BATCH_COL: ["b"],
            }
        ),
    )
    assert scan_lake(tmp_path, "po_lines", kind="quarantine").collect()["rule"].to_list() == [
        "QTY_NOT_POSITIVE"
    ]
    errors = scan_lake(tmp_path, "po_lines", kind="errors").collect()
    assert errors.columns == ["source", "position", "rule", "message"]
    assert errors["rule"].to_list() == ["SE01_COUNT"]


def test_empty_lake_reads_as_empty_canonical_frames(tmp_path: Path) -> None:
    for table in ("po_lines", "asn_lines", "invoice_lines", "receipts"):
        frame = scan_lake(tmp_path, table).collect()
        assert frame.height == 0
        assert frame.schema == schema(table)  # type: ignore[arg-type]
    errors = scan_lake(tmp_path, "po_lines", kind="errors").collect()
    assert errors.columns == ["source", "position", "rule", "message"]
    quarantine = scan_lake(tmp_path, "po_lines", kind="quarantine").collect()
    assert {"rule", "message", "po_number"} <= set(quarantine.columns)
    with pytest.raises(ConfigurationError, match="kind must be"):
        scan_lake(tmp_path, "po_lines", kind="everything")
    with pytest.raises(ConfigurationError, match="unknown table"):
        scan_lake(tmp_path, "orders")


def test_disk_full_during_a_commit_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device (os error 28)")

    monkeypatch.setattr(deltalake, "write_deltalake", full)
    with pytest.raises(LakeWriteError, match="no space left on device") as info:
        commit(tmp_path, "b1", po_rows(2))
    assert info.value.errno == errno.ENOSPC
    assert str(tmp_path) in str(info.value)


def test_a_lake_on_s3_commits_reads_travels_and_compacts(s3: S3) -> None:
    lake = s3.new_lake()
    opts = s3.options()
    commit(lake, "b1", po_rows(3), storage_options=opts)
    v1 = lake_snapshot(lake, storage_options=opts)["po_lines"]
    commit(lake, "b2", po_rows(5, source="x.csv"), storage_options=opts)
    commit(lake, "b2", po_rows(5, source="x.csv"), storage_options=opts)  # a repeat: no rows
    assert scan_lake(lake, "po_lines", storage_options=opts).collect().height == 8
    assert scan_lake(lake, "po_lines", version=v1, storage_options=opts).collect().height == 3
    raw = pl.read_delta(f"{lake}/po_lines", storage_options=opts)
    assert raw.height == 8
    compact_lake(lake, storage_options=opts)
    assert dict(data_files(lake, storage_options=opts))["po_lines"] == 1
    assert scan_lake(lake, "po_lines", storage_options=opts).collect().height == 8
    assert any(k.startswith("lake/_ledger/_delta_log/") for k in s3.keys(lake))


def test_public_names() -> None:
    assert scfeeds.scan_lake is scan_lake
    assert scfeeds.lake_snapshot is lake_snapshot
    assert scfeeds.compact_lake is compact_lake
    assert scfeeds.vacuum_lake is vacuum_lake


def test_cli_lake_compact_vacuum_history(tmp_path: Path) -> None:
    import subprocess
    import sys

    for i in range(4):
        commit(tmp_path, f"b{i}", po_rows(3, source=f"f{i}.csv"))

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "scfeeds.cli", "lake", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    out = cli("compact", str(tmp_path))
    assert "po_lines: uncommitted rows deleted 0, files removed 4, files added 1" in out
    assert "vacuum" not in out
    out = cli("vacuum", str(tmp_path), "--retention-hours", "0")
    assert "po_lines: files deleted 4" in out
    out = cli("history", str(tmp_path), "--table", "po_lines")
    assert "OPTIMIZE" in out
    assert "WRITE" in out
    assert scan_lake(tmp_path, "po_lines").collect().height == 12


def test_cli_says_disk_full_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from scfeeds.cli import main
    from tests.lake_support import write_850s

    paths, _ = write_850s(tmp_path / "docs", 2)

    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device (os error 28)")

    monkeypatch.setattr(deltalake, "write_deltalake", full)
    code = main(["ingest", *paths, "--lake", str(tmp_path / "lake")])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("scfeeds: no space left on device writing the lake at ")
    assert str(tmp_path / "lake") in err[0]


def test_an_s3_lake_takes_its_credentials_from_the_environment(
    s3: S3, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = s3.new_lake()
    for key, value in s3.options().items():
        monkeypatch.setenv(key, value)
    commit(lake, "b1", po_rows(4))
    assert scan_lake(lake, "po_lines").collect().height == 4
    assert lake_snapshot(lake)["po_lines"] >= 0


def test_the_reconcile_command_reads_an_s3_lake(
    s3: S3, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from scfeeds.cli import main

    lake = s3.new_lake()
    for key, value in s3.options().items():
        monkeypatch.setenv(key, value)
    commit(lake, "b1", po_rows(4))
    assert main(["reconcile", "--lake", lake]) == 0  # not refused as "no such lake"
    assert "by supplier" in capsys.readouterr().out


def test_a_reconciliation_pinned_to_a_snapshot_reproduces(tmp_path: Path) -> None:
    from tests.lake_support import write_850s

    lake = tmp_path / "lake"
    first, _ = write_850s(tmp_path / "a", 4, seed=1)
    scfeeds.run(scfeeds.ingest(first, lake, progress=None, pool="threads"))
    snap = lake_snapshot(lake)
    before = repr(scfeeds.reconcile(lake, snapshot=snap).summary())
    more, _ = write_850s(tmp_path / "b", 3, seed=2, start=100)
    scfeeds.run(scfeeds.ingest(more, lake, progress=None, pool="threads"))
    now = repr(scfeeds.reconcile(lake).summary())
    assert now != before  # the lake moved on
    assert repr(scfeeds.reconcile(lake, snapshot=snap).summary()) == before


def test_a_reconciliation_records_the_versions_it_read(tmp_path: Path) -> None:
    from tests.lake_support import write_850s

    lake = tmp_path / "lake"
    first, _ = write_850s(tmp_path / "a", 4, seed=1)
    scfeeds.run(scfeeds.ingest(first, lake, progress=None, pool="threads"))
    rec = scfeeds.reconcile(lake)
    assert rec.inputs == lake_snapshot(lake)
    lines = rec.lines.select(pl.len()).collect().item()
    more, _ = write_850s(tmp_path / "b", 3, seed=2, start=100)
    scfeeds.run(scfeeds.ingest(more, lake, progress=None, pool="threads"))
    assert lake_snapshot(lake) != rec.inputs  # the lake moved on
    # the versions it recorded read exactly its PO lines again
    again = scfeeds.scan_lake(lake, "po_lines", snapshot=rec.inputs).select(pl.len()).collect()
    assert again.item() == lines
    assert scfeeds.reconcile(lake, snapshot=rec.inputs).inputs == rec.inputs
