"""The lake's commit protocol: idempotent batches, nothing visible before its commit record."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from scfeeds._lake import COMMITS, batch_id, commit_batch, commits, is_committed, scan_lake
from scfeeds.exceptions import ConfigurationError
from scfeeds.schemas import schema


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


def test_batch_id_is_deterministic_and_salted() -> None:
    assert batch_id("ab" * 32) == batch_id("ab" * 32)
    assert batch_id("ab" * 32) != batch_id("ab" * 32, salt="csv:po_lines")
    assert batch_id("ab" * 32) != batch_id("cd" * 32)


def test_commit_twice_gives_the_same_lake(tmp_path: Path) -> None:
    rows = po_rows(7)
    for _ in range(2):
        commit_batch(
            tmp_path,
            batch="b1",
            source="u",
            sha256="s",
            tables={"po_lines": rows},
            quarantine={},
            errors=None,
        )
    got = scan_lake(tmp_path, "po_lines").collect()
    assert_frame_equal(got.sort("item_id"), rows.sort("item_id"))
    assert len(list(commits(tmp_path))) == 1


def test_files_without_a_commit_record_are_invisible(tmp_path: Path) -> None:
    commit_batch(
        tmp_path,
        batch="b1",
        source="u",
        sha256="s",
        tables={"po_lines": po_rows(3)},
        quarantine={},
        errors=None,
    )
    commit_batch(
        tmp_path,
        batch="b2",
        source="v",
        sha256="t",
        tables={"po_lines": po_rows(5)},
        quarantine={},
        errors=None,
    )
    # simulate a batch interrupted after its data files but before its commit record
    (tmp_path / COMMITS / "b2.json").unlink()
    assert not is_committed(tmp_path, "b2")
    assert scan_lake(tmp_path, "po_lines").collect().height == 3


def test_partitions_by_supplier_and_keeps_null_suppliers(tmp_path: Path) -> None:
    rows = pl.concat([po_rows(2, supplier="SUP001"), po_rows(3, supplier=None)])
    commit = commit_batch(
        tmp_path,
        batch="b",
        source="u",
        sha256="s",
        tables={"po_lines": rows},
        quarantine={},
        errors=None,
    )
    assert sorted(commit.files) == [
        "po_lines/supplier_id=SUP001/part-b.parquet",
        "po_lines/supplier_id=__null__/part-b.parquet",
    ]
    got = scan_lake(tmp_path, "po_lines").collect()
    assert got.schema == schema("po_lines")
    assert got["supplier_id"].null_count() == 3


def test_no_temporary_files_left(tmp_path: Path) -> None:
    commit_batch(
        tmp_path,
        batch="b",
        source="u",
        sha256="s",
        tables={"po_lines": po_rows(4)},
        quarantine={
            "po_lines": po_rows(1).with_columns(
                rule=pl.lit("QTY_POSITIVE"), message=pl.lit("qty must be > 0")
            )
        },
        errors=pl.DataFrame(
            {
                "source": ["u"],
                "position": ["segment 9"],
                "rule": ["SE01_COUNT"],
                "message": ["SE01 says 8"],
            }
        ),
    )
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    assert scan_lake(tmp_path, "po_lines", kind="quarantine").collect()["rule"].to_list() == [
        "QTY_POSITIVE"
    ]
    assert scan_lake(tmp_path, "po_lines", kind="errors").collect()["rule"].to_list() == [
        "SE01_COUNT"
    ]


def test_empty_lake_reads_as_empty_canonical_frames(tmp_path: Path) -> None:
    for table in ("po_lines", "asn_lines", "invoice_lines", "receipts"):
        frame = scan_lake(tmp_path, table).collect()
        assert frame.height == 0
        assert frame.schema == schema(table)  # type: ignore[arg-type]


def test_unknown_table_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="unknown table"):
        scan_lake(tmp_path, "orders")


def test_a_rewrite_clears_temporaries_left_by_a_killed_writer(tmp_path: Path) -> None:
    target = tmp_path / "po_lines" / "supplier_id=SUP001" / "part-b.parquet"
    target.parent.mkdir(parents=True)
    stale = target.parent / f".{target.name}.abc123.tmp"
    stale.write_bytes(b"half a parquet file")
    commit_batch(
        tmp_path,
        batch="b",
        source="u",
        sha256="s",
        tables={"po_lines": po_rows(2)},
        quarantine={},
        errors=None,
    )
    assert not stale.exists()
    assert target.exists()


def test_an_empty_lake_has_empty_errors_and_quarantine_with_their_columns(tmp_path: Path) -> None:
    errors = scan_lake(tmp_path, "po_lines", kind="errors").collect()
    assert errors.columns == ["source", "position", "rule", "message"]
    quarantine = scan_lake(tmp_path, "po_lines", kind="quarantine").collect()
    assert {"rule", "message", "po_number"} <= set(quarantine.columns)
    with pytest.raises(ConfigurationError, match="kind must be"):
        scan_lake(tmp_path, "po_lines", kind="everything")
