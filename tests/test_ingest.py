"""The ingest pipeline end to end against the real simulated portal on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import scfeeds
from scfeeds import portal, synth
from scfeeds._ingest import ingest
from scfeeds._lake import compact_lake, read_ledger, scan_lake
from tests.lake_support import S3, write_850s, x12_850
from tests.web_support import listing

TABLES = ("po_lines", "asn_lines", "invoice_lines", "receipts")
# Business columns: `source` differs on purpose (the lake records the URL, the world a path).
NOT_COMPARED = ("source",)


@pytest.fixture(scope="module")
def world(make_world: Callable[..., Path]) -> Path:
    return make_world(seed=11, pos=40, suppliers=3, damaged=True)


@pytest.fixture(scope="module")
def served(world: Path) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    with portal.serve_in_thread(world, latency=0.005, seed=1, access_log=False) as server:
        yield server.url, listing(server.url)


def ledger_size(lake: Path) -> int:
    try:
        return read_ledger(lake).height
    except Exception:  # the table is being created right now
        return 0


def canonical(frame: pl.DataFrame) -> pl.DataFrame:
    keep = [c for c in frame.columns if c not in NOT_COMPARED]
    return frame.select(keep).sort(keep, nulls_last=True)


def assert_lake_equals_world(lake: Path, world: Path) -> None:
    for table in TABLES:
        got = scan_lake(lake, table).collect()
        want = synth.load_world(world, table).collect()
        assert_frame_equal(canonical(got), canonical(want), check_column_order=False)


def test_lake_holds_exactly_the_world(tmp_path: Path, world: Path, served: Any) -> None:
    url, feeds = served
    report = scfeeds.run(ingest(feeds, tmp_path / "lake", limits=8, progress=None))
    assert report.batches.height == len(feeds)
    assert set(report.batches["status"]) == {"committed"}
    assert report.n_errors == 0
    assert report.quarantined == 0
    assert set(report.batches["format"]) == {"x12", "csv", "xlsx", "xml"}
    assert_lake_equals_world(tmp_path / "lake", world)
    # provenance: every row names the URL it came from
    sources = scan_lake(tmp_path / "lake", "po_lines").select("source").unique().collect()
    assert all(s.startswith(f"{url}/v1/feeds/") for s in sources["source"])


def test_ingesting_twice_gives_the_same_lake(tmp_path: Path, world: Path, served: Any) -> None:
    _, feeds = served
    lake = tmp_path / "lake"
    scfeeds.run(ingest(feeds, lake, limits=8, progress=None))
    files_before = sorted(p.relative_to(lake) for p in lake.rglob("*.parquet"))
    again = scfeeds.run(ingest(feeds, lake, limits=8, progress=None))
    assert set(again.batches["status"]) == {"already_committed"}
    assert sorted(p.relative_to(lake) for p in lake.rglob("*.parquet")) == files_before
    assert_lake_equals_world(lake, world)


def test_damaged_files_report_errors_and_keep_good_rows(tmp_path: Path, world: Path) -> None:
    damaged = pl.read_parquet(world / "damaged.parquet")
    sources = [
        scfeeds.Source(url=str(world / row["path"]), format=row["format"], table=row["table"])
        for row in damaged.iter_rows(named=True)
    ]
    report = scfeeds.run(ingest(sources, tmp_path / "lake", progress=None, pool="threads"))
    errors = scan_lake(tmp_path / "lake", "po_lines", kind="errors").collect()
    for row in damaged.iter_rows(named=True):
        path = str(world / row["path"])
        mine = errors.filter(pl.col("source") == path)
        assert row["rule"] in mine["rule"].to_list(), (row["path"], mine)
        delivered = report.batches.filter(pl.col("url") == path)["rows"].item()
        assert delivered == row["good_records"], row["path"]


def test_a_killed_ingest_resumes_without_loss_or_duplicates(tmp_path: Path, world: Path) -> None:
    lake = tmp_path / "lake"
    with portal.serve_in_thread(world, latency=0.15, seed=2, access_log=False) as server:
        feeds = listing(server.url)
        script = tmp_path / "ingest_child.py"
        script.write_text(
            textwrap.dedent(
                f"""
                import json, scfeeds
                if __name__ == "__main__":
                    feeds = json.loads({json.dumps(json.dumps(feeds))})
                    scfeeds.run(scfeeds.ingest(feeds, {str(lake)!r}, limits=2,
                                               workers=1, progress=None, pool="threads"))
                """
            )
        )
        child = subprocess.Popen([sys.executable, str(script)])
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and ledger_size(lake) < 3:
                time.sleep(0.05)
            assert child.poll() is None, "the child finished before it could be killed"
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.wait(timeout=30)
        partial = ledger_size(lake)
        assert 3 <= partial < len(feeds)
        report = scfeeds.run(ingest(feeds, lake, limits=8, progress=None))
    statuses = report.batches["status"].value_counts()
    assert dict(statuses.iter_rows()).get("already_committed", 0) >= partial
    assert_lake_equals_world(lake, world)


def test_parsing_lag_makes_fetching_wait(
    tmp_path: Path, world: Path, served: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one slow parse worker, landed-but-unparsed files stay bounded (backpressure)."""
    import scfeeds._ingest as ingest_mod

    _, feeds = served
    lake = tmp_path / "lake"
    landing = tmp_path / "landing"
    real = ingest_mod._process_many
    backlog: list[int] = []

    def slow(jobs: list[Any], lake_: str, opts: Any) -> list[dict[str, Any]]:
        time.sleep(0.05)
        landed = sum(1 for p in landing.rglob("*") if p.is_file() and ".scfeeds" not in p.parts)
        backlog.append(landed - ledger_size(lake))
        return real(jobs, lake_, opts)

    monkeypatch.setattr(ingest_mod, "_process_many", slow)
    at_once = 4
    scfeeds.run(
        ingest(
            feeds[:30],
            lake,
            landing=landing,
            workers=1,
            parse_group=1,
            limits=at_once,
            progress=None,
            pool="threads",
        )
    )
    # the queue (2 x workers), one landed file held by each fetch worker, the one being
    # parsed, the one waiting for a free worker
    assert max(backlog) <= 2 * 1 + at_once + 2, backlog
    # and fetching did run ahead of parsing (the bound is not vacuous)
    assert max(backlog) >= 2, backlog
    assert ledger_size(lake) == 30


def test_bearer_token_never_reaches_the_lake_or_the_report(tmp_path: Path, world: Path) -> None:
    token = "s3cr3t-token-value-123"
    with portal.serve_in_thread(world, token=token, access_log=False) as server:
        feeds = listing(server.url, token)[:6]
        report = scfeeds.run(
            ingest(
                feeds,
                tmp_path / "lake",
                headers={"Authorization": f"Bearer {token}"},
                progress=None,
                pool="threads",
            )
        )
    assert report.committed == 6
    assert token not in repr(report)
    assert token not in report._repr_html_()
    for path in (tmp_path / "lake").rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path


def test_without_the_token_nothing_lands_and_failures_are_rows(tmp_path: Path, world: Path) -> None:
    with portal.serve_in_thread(world, token="t0k3n", access_log=False) as server:
        feeds = listing(server.url, "t0k3n")[:3]
        report = scfeeds.run(ingest(feeds, tmp_path / "lake", progress=None, retry=False))
    assert report.batches["status"].to_list() == ["fetch_failed"] * 3
    assert all("401" in e for e in report.batches["error"])
    assert scan_lake(tmp_path / "lake", "po_lines").collect().height == 0


@pytest.mark.parametrize("page_format", ["ndjson", "csv"])
def test_paged_line_items_land_like_whole_files(
    tmp_path: Path, world: Path, served: Any, page_format: str
) -> None:
    _, feeds = served
    tabular = [f for f in feeds if f["lines_url"] and f["table"] == "po_lines"]
    assert tabular
    sources = [
        scfeeds.Source(url=c.url, format=page_format, table="po_lines", path=c.path)
        for f in tabular
        for c in scfeeds.plan_chunks(
            f"{f['lines_url']}?format={page_format}", total=f["records"], chunk_size=7
        )
    ]
    assert len(sources) > len(tabular)  # several pages per feed
    report = scfeeds.run(ingest(sources, tmp_path / "lake", progress=None, pool="threads"))
    assert report.n_errors == 0
    got = scan_lake(tmp_path / "lake", "po_lines").collect()
    paths = {f["url"].rsplit("/", 1)[-1] for f in tabular}
    want = (
        synth.load_world(world, "po_lines")
        .collect()
        .join(
            pl.read_parquet(world / "catalog.parquet").select("id", "path"),
            left_on="source",
            right_on="path",
        )
        .filter(pl.col("id").is_in(paths))
        .drop("id")
    )
    assert_frame_equal(canonical(got), canonical(want), check_column_order=False)
    assert all("/lines?" in s for s in got["source"].unique())


def test_a_page_with_a_bad_value_reports_it_and_keeps_the_rest(tmp_path: Path) -> None:
    from scfeeds.schemas import schema

    page = tmp_path / "page.ndjson"
    rows = [
        dict.fromkeys(schema("po_lines"))
        | {
            "supplier_id": "SUP001",
            "po_number": "PO1",
            "line_number": str(i),
            "item_id": "X",
            "qty_ordered": q,
            "po_date": "2026-11-02",
            "description": "widget",
            "uom": "EA",
            "unit_price": "1.50",
            "currency": "USD",
        }
        for i, q in enumerate(["2", "two", "3"], start=1)
    ]
    page.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    report = scfeeds.run(
        ingest(
            [scfeeds.Source(url=str(page), format="ndjson", table="po_lines")],
            tmp_path / "lake",
            progress=None,
        )
    )
    assert report.n_errors == 1
    errors = scan_lake(tmp_path / "lake", "po_lines", kind="errors").collect()
    assert errors.select("position", "rule").row(0) == ("row 2", "BAD_VALUE")
    assert "qty_ordered=two" in errors["message"][0]
    got = scan_lake(tmp_path / "lake", "po_lines").collect()
    assert sorted(got["line_number"]) == ["1", "3"]


def test_a_portal_root_url_ingests_its_whole_listing(
    tmp_path: Path, world: Path, served: Any
) -> None:
    url, feeds = served
    report = scfeeds.run(ingest(url, tmp_path / "lake", progress=None))
    assert report.batches.height == len(feeds)
    assert_lake_equals_world(tmp_path / "lake", world)


# -- micro-batches, concurrent writers, kill -9, hostile supplier ids ---------------------------

CHILD = """
import json, sys, scfeeds
if __name__ == "__main__":
    paths, lake, opts = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    report = scfeeds.run(scfeeds.ingest(paths, lake, progress=None, pool="threads", workers=2,
                                        batch_docs=4, batch_seconds=0.05,
                                        storage_options=opts or None))
    print(json.dumps({"committed": report.committed, "rows": sum(report.rows.values())}))
"""


def run_concurrent_ingests(
    tmp_path: Path, lake: str, paths: list[str], n: int, opts: dict[str, str] | None
) -> list[dict[str, Any]]:
    """``n`` processes ingest the same documents (each in its own order) into one lake."""
    import random

    script = tmp_path / "child.py"
    script.write_text(CHILD)
    procs = []
    for i in range(n):
        mine = paths[:]
        random.Random(i).shuffle(mine)
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), json.dumps(mine), lake, json.dumps(opts or {})],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    return outs


def assert_exact(lake: str, want_rows: int, docs: int, opts: dict[str, str] | None) -> None:
    got = scan_lake(lake, "po_lines", storage_options=opts).collect()
    assert got.height == want_rows
    assert got.select("source", "position").n_unique() == want_rows  # no row twice
    assert read_ledger(lake, storage_options=opts)["batch"].n_unique() == docs
    assert read_ledger(lake, storage_options=opts).height == docs
    # after compaction, a reader without scfeeds sees exactly the same rows
    compact_lake(lake, storage_options=opts)
    raw = pl.read_delta(f"{lake}/po_lines", storage_options=opts)
    assert raw.height == want_rows


@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 4])
def test_concurrent_ingests_into_one_local_lake_are_exact(tmp_path: Path, n: int) -> None:
    paths, lines = write_850s(tmp_path / "docs", 24, seed=n)
    lake = str(tmp_path / "lake")
    outs = run_concurrent_ingests(tmp_path, lake, paths, n, None)
    assert sum(o["committed"] for o in outs) == 24  # each document committed by one writer
    assert sum(o["rows"] for o in outs) == lines
    assert_exact(lake, lines, 24, None)


@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 4])
def test_concurrent_ingests_into_one_s3_lake_are_exact(tmp_path: Path, s3: S3, n: int) -> None:
    paths, lines = write_850s(tmp_path / "docs", 16, seed=10 + n)
    lake = s3.new_lake()
    outs = run_concurrent_ingests(tmp_path, lake, paths, n, s3.options())
    assert sum(o["committed"] for o in outs) == 16
    assert_exact(lake, lines, 16, s3.options())


KILLED_CHILD = """
import json, sys, time, pathlib, scfeeds
import scfeeds._lake as lake_mod
if __name__ == "__main__":
    paths, lake, marker = json.loads(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3])
    real = lake_mod._commit_ledger
    calls = []
    def slow_ledger(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # data of the third micro-batch committed, its ledger not yet
            marker.write_text("now")
            time.sleep(60)
        return real(*args, **kwargs)
    lake_mod._commit_ledger = slow_ledger
    scfeeds.run(scfeeds.ingest(paths, lake, progress=None, pool="threads", workers=1,
                               batch_docs=3, batch_seconds=30))
"""


def test_kill_9_between_data_and_ledger_then_rerun_is_exact(tmp_path: Path) -> None:
    paths, lines = write_850s(tmp_path / "docs", 15, seed=3)
    lake = tmp_path / "lake"
    script = tmp_path / "child.py"
    script.write_text(KILLED_CHILD)
    marker = tmp_path / "marker"
    child = subprocess.Popen(
        [sys.executable, str(script), json.dumps(paths), str(lake), str(marker)]
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not marker.exists() and child.poll() is None:
            time.sleep(0.02)
        assert marker.exists(), "the child never reached its third ledger commit"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    ledgered = read_ledger(lake).height
    assert ledgered == 6  # two micro-batches of three documents
    raw = pl.read_delta(str(lake / "po_lines")).height
    visible = scan_lake(lake, "po_lines").collect().height
    assert raw > visible  # the third micro-batch's rows are in the table, not committed
    report = scfeeds.run(ingest(paths, lake, progress=None, pool="threads"))
    assert report.batches.filter(pl.col("status") == "already_committed").height == 6
    got = scan_lake(lake, "po_lines").collect()
    assert got.height == lines
    assert got.select("source", "position").n_unique() == lines
    compact_lake(lake)  # the dead attempt's rows belong to documents ledgered since: dropped
    assert pl.read_delta(str(lake / "po_lines")).height == lines


def test_the_same_bytes_twice_in_one_run_commit_once(tmp_path: Path) -> None:
    import random

    body, lines = x12_850(0, random.Random(1))
    a, b = tmp_path / "a.x12", tmp_path / "b.x12"
    a.write_bytes(body)
    b.write_bytes(body)
    report = scfeeds.run(ingest([str(a), str(b)], tmp_path / "lake", progress=None))
    assert sorted(report.batches["status"]) == ["already_committed", "committed"]
    assert scan_lake(tmp_path / "lake", "po_lines").collect().height == lines
    assert sum(report.rows.values()) == lines


def test_a_supplier_id_that_looks_like_a_path_is_quarantined_data(tmp_path: Path) -> None:
    import random

    from scfeeds.schemas import schema

    work = tmp_path / "work"
    work.mkdir()
    hostile = ["../../../../../../ESCAPED", "a/b", "SUP\x01"]
    rows = [
        dict.fromkeys(schema("po_lines"))
        | {
            "supplier_id": s,
            "po_number": "PO1",
            "line_number": str(i),
            "item_id": "X",
            "qty_ordered": "2",
            "po_date": "2026-11-02",
            "uom": "EA",
            "unit_price": "1.50",
            "currency": "USD",
        }
        for i, s in enumerate(["SUP001", *hostile], start=1)
    ]
    page = work / "page.ndjson"
    page.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    x12 = work / "hostile.x12"
    x12.write_bytes(x12_850(0, random.Random(2), supplier="../../ESCAPED2")[0])
    lake = work / "lake"
    report = scfeeds.run(
        ingest(
            [scfeeds.Source(url=str(page), format="ndjson", table="po_lines"), str(x12)],
            lake,
            progress=None,
        )
    )
    assert report.committed == 2
    good = scan_lake(lake, "po_lines").collect()
    assert good["supplier_id"].to_list() == ["SUP001"]
    quarantined = scan_lake(lake, "po_lines", kind="quarantine").collect()
    assert set(quarantined["rule"]) == {"SUPPLIER_ID_INVALID"}
    # a control character is refused by the reader itself (an error row, never stored)
    assert set(hostile) - {"SUP\x01"} | {"../../ESCAPED2"} == set(quarantined["supplier_id"])
    errors = report.errors().collect()
    assert "CONTROL_CHARACTER" in set(errors["rule"])
    assert "not a valid supplier id" in quarantined["message"][0]
    # nothing was written outside the lake; no file or folder is named after the ids
    assert sorted(p.name for p in work.iterdir()) == ["hostile.x12", "lake", "page.ndjson"]
    assert not list(tmp_path.parent.rglob("ESCAPED*"))
    assert not [p for p in lake.rglob("*") if "ESCAPED" in p.name or p.name == "b"]
