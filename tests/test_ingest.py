"""The ingest pipeline end to end against the real simulated portal on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import scfeeds
from scfeeds import portal, synth
from scfeeds._ingest import ingest
from scfeeds._lake import commits, scan_lake

TABLES = ("po_lines", "asn_lines", "invoice_lines", "receipts")
# Business columns: `source` differs on purpose (the lake records the URL, the world a path).
NOT_COMPARED = ("source",)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("world")
    synth.generate(dest, seed=11, pos=40, suppliers=3, damaged=True)
    return dest


@pytest.fixture(scope="module")
def served(world: Path) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    with portal.serve_in_thread(world, latency=0.005, seed=1, access_log=False) as server:
        yield server.url, listing(server.url)


def listing(url: str, token: str | None = None) -> list[dict[str, Any]]:
    req = urllib.request.Request(f"{url}/v1/feeds")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as resp:
        feeds: list[dict[str, Any]] = json.load(resp)["feeds"]
    return feeds


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
            while time.monotonic() < deadline and len(list(commits(lake))) < 3:
                time.sleep(0.05)
            assert child.poll() is None, "the child finished before it could be killed"
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.wait(timeout=30)
        partial = len(list(commits(lake)))
        assert 3 <= partial < len(feeds)
        report = scfeeds.run(ingest(feeds, lake, limits=8, progress=None))
    statuses = report.batches["status"].value_counts()
    assert dict(statuses.iter_rows()).get("already_committed", 0) >= partial
    assert_lake_equals_world(lake, world)
    assert not list(lake.rglob("*.tmp"))


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

    def slow(jobs: list[Any], lake_: str) -> list[dict[str, Any]]:
        time.sleep(0.05)
        landed = sum(1 for p in landing.rglob("*") if p.is_file() and ".scfeeds" not in p.parts)
        backlog.append(landed - len(list(commits(lake))))
        return real(jobs, lake_)

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
    # the queue (2 x workers), one landed file held by each fetch worker, the one being parsed
    assert max(backlog) <= 2 * 1 + at_once + 1, backlog
    # and fetching did run ahead of parsing (the bound is not vacuous)
    assert max(backlog) >= 2, backlog
    assert len(list(commits(lake))) == 30


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
