"""``parse_batch``: many documents of any format in one call, one error contract."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from scfeeds import _parse
from scfeeds._parse import Job, parse_batch, parse_file
from scfeeds.schemas import ERRORS, schema


@pytest.fixture(scope="module")
def world(make_world: Callable[..., Path]) -> Path:
    return make_world(seed=4, suppliers=3, pos=30, formats=("x12", "xml", "csv"), damaged=True)


def _jobs(world: Path) -> list[Job]:
    catalog = pl.read_parquet(world / "catalog.parquet")
    damaged = pl.read_parquet(world / "damaged.parquet")
    rows = [
        *catalog.filter(pl.col("table") != "receipts").select("path", "table").iter_rows(),
        *damaged.select("path", "table").iter_rows(),
    ]
    random.Random(6).shuffle(rows)
    # provenance names that are not the paths (as a fetched URL would be)
    return [Job(world / p, source=f"https://supplier.test/{p}", table=t) for p, t in rows]


def _expected(jobs: list[Job]) -> tuple[dict[str, pl.DataFrame], list[pl.DataFrame]]:
    def fmt(j: Job) -> str:
        return _parse.guess_format(str(j.path)) or ""

    ordered = [
        *(j for j in jobs if fmt(j) == "x12"),
        *(j for j in jobs if fmt(j) == "xml"),
        *(j for j in jobs if fmt(j) not in ("x12", "xml")),
    ]
    parts: dict[str, list[pl.DataFrame]] = {}
    errors = []
    for j in ordered:
        got = parse_file(j.path, table=j.table, source=j.source)
        for t, f in got.tables.items():
            parts.setdefault(t, []).append(f)
        err = got.errors
        if fmt(j) == "xml" and j.source is not None:
            # the batch names the document as given in messages too (provenance set once)
            err = err.with_columns(
                pl.col("message").str.replace_all(str(j.path), j.source, literal=True)
            )
        errors.append(err)
    return {t: pl.concat(v) for t, v in parts.items()}, errors


def _same_errors(got: pl.DataFrame, want: list[pl.DataFrame]) -> None:
    # per document the same rows in the same order; documents grouped by format
    exp = pl.concat(want)
    key = ["source", "position", "rule", "message"]
    assert_frame_equal(got.sort(key), exp.sort(key))
    for src in exp["source"].unique():
        assert_frame_equal(got.filter(pl.col("source") == src), exp.filter(pl.col("source") == src))


def test_batch_equals_one_call_per_document(world: Path) -> None:
    jobs = _jobs(world)
    tables, errors = parse_batch(jobs)
    want_tables, want_errors = _expected(jobs)
    assert set(tables) == set(want_tables)
    for t, frame in tables.items():
        assert frame.schema == schema(t)
        assert_frame_equal(frame, want_tables[t])
        assert frame["source"].str.starts_with("https://supplier.test/").all()
    assert errors.schema == pl.Schema(ERRORS)
    assert "code" not in errors.columns
    _same_errors(errors, want_errors)


def test_damaged_documents_give_their_own_rows(world: Path) -> None:
    jobs = _jobs(world)
    damaged = pl.read_parquet(world / "damaged.parquet")
    tables, errors = parse_batch(jobs)
    for d in damaged.iter_rows(named=True):
        name = f"https://supplier.test/{d['path']}"
        mine = errors.filter(pl.col("source") == name)
        assert d["rule"] in mine["rule"].to_list(), (d, mine)
        assert d["position"] in mine["position"].to_list(), (d, mine)
        delivered = tables[d["table"]].filter(pl.col("source") == name).height
        assert delivered == d["good_records"], d
    # every catalogued document is delivered in full
    catalog = pl.read_parquet(world / "catalog.parquet").filter(pl.col("table") != "receipts")
    for c in catalog.iter_rows(named=True):
        name = f"https://supplier.test/{c['path']}"
        assert tables[c["table"]].filter(pl.col("source") == name).height == c["records"], c


def test_a_reader_failure_costs_one_document_at_a_time(
    world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = _jobs(world)

    def broken(items: Any) -> Any:
        raise RuntimeError("reader bug")

    monkeypatch.setattr(_parse, "_x12_batch", broken)
    tables, errors = parse_batch(jobs)
    want_tables, want_errors = _expected(jobs)
    for t, frame in tables.items():
        assert_frame_equal(frame, want_tables[t])
    _same_errors(errors, want_errors)


def test_missing_file_is_an_error_row(world: Path, tmp_path: Path) -> None:
    jobs = _jobs(world)[:5]
    gone = Job(tmp_path / "gone.x12", source="https://supplier.test/gone.x12")
    tables, errors = parse_batch([*jobs[:2], gone, *jobs[2:]])
    row = errors.filter(pl.col("source") == gone.source).row(0, named=True)
    assert row["rule"] == "READER_FAILED"
    assert sum(f.height for f in tables.values()) > 0
