"""855 acknowledgments (X12 and cXML ConfirmationRequest) through ingest into the lake."""

from __future__ import annotations

import datetime as dt
import json
import urllib.request
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import scfeeds
from scfeeds import portal, synth
from scfeeds._ingest import ingest
from scfeeds._lake import scan_lake
from scfeeds._synth.acks import TRUTH_WINDOW
from scfeeds._synth.config import SynthConfig
from scfeeds._validate import KNOWN_ACK_STATUSES
from scfeeds._x12._ack855 import ACK_STATUSES
from scfeeds.schemas import schema

FIXTURES = Path(__file__).parent / "fixtures"
c = pl.col


@pytest.fixture(scope="module")
def world(make_world: Callable[..., Path]) -> Path:
    return make_world(seed=5, pos=60, suppliers=3, config=SynthConfig(performance=True))


def _canonical(frame: pl.DataFrame) -> pl.DataFrame:
    # `source` differs on purpose: the lake records the URL or path given, the world a path
    keep = [col for col in frame.columns if col != "source"]
    return frame.select(keep).sort(keep, nulls_last=True)


def _local_sources(world: Path) -> list[scfeeds.Source]:
    catalog = pl.read_parquet(world / "catalog.parquet")
    return [
        scfeeds.Source(url=str(world / row["path"]), format=row["format"], table=row["table"])
        for row in catalog.iter_rows(named=True)
    ]


def _assert_acks_and_otif(lake: Path, world: Path) -> None:
    got = scan_lake(lake, "po_acks").collect()
    want = synth.load_world(world, "po_acks").collect()
    assert want.height > 0
    assert {"accepted", "changed", "rejected"} <= set(want["ack_status"])
    assert_frame_equal(_canonical(got), _canonical(want), check_column_order=False)
    assert scan_lake(lake, "po_acks", kind="quarantine").collect().height == 0
    # OTIF over the lake is the answer key
    truth = pl.read_parquet(world / "world" / "otif_truth" / "*.parquet")
    res = scfeeds.otif(
        scan_lake(lake, "po_lines"),
        receipts=scan_lake(lake, "receipts"),
        acks=scan_lake(lake, "po_acks"),
        window=TRUTH_WINDOW,
    )
    cols = [col for col in truth.columns if col != "ack_code"]
    key = ["po_number", "line_number"]
    assert_frame_equal(res.lines.select(cols).sort(key), truth.select(cols).sort(key))


def test_a_performance_world_from_local_files_lands_its_acks(tmp_path: Path, world: Path) -> None:
    sources = _local_sources(world)
    assert any(s.table == "po_acks" for s in sources)
    report = scfeeds.run(ingest(sources, tmp_path / "lake", progress=None, pool="threads"))
    assert set(report.batches["status"]) == {"committed"}
    assert report.n_errors == 0
    assert report.quarantined == 0
    _assert_acks_and_otif(tmp_path / "lake", world)


def test_a_performance_world_from_the_portal_lands_its_acks(tmp_path: Path, world: Path) -> None:
    with portal.serve_in_thread(world, latency=0.0, seed=1, access_log=False) as server:
        with urllib.request.urlopen(f"{server.url}/v1/feeds", timeout=30) as resp:
            feeds: list[dict[str, Any]] = json.load(resp)["feeds"]
        acks = [f for f in feeds if f.get("table") == "po_acks"]
        assert acks
        assert all(f["format"] == "x12" for f in acks)
        report = scfeeds.run(ingest(feeds, tmp_path / "lake", limits=4, progress=None))
    assert set(report.batches["status"]) == {"committed"}
    assert report.n_errors == 0
    _assert_acks_and_otif(tmp_path / "lake", world)
    sources = scan_lake(tmp_path / "lake", "po_acks").select("source").unique().collect()
    assert all(s.startswith(f"{server.url}/v1/feeds/") for s in sources["source"])


def test_a_cxml_confirmation_is_detected_and_its_bad_rows_quarantined(tmp_path: Path) -> None:
    doc = tmp_path / "confirm.xml"
    # the fixture plus one line whose ack status is none the lake accepts
    text = (FIXTURES / "xml" / "confirmation_detail_every_status.xml").read_text()
    text = text.replace(
        "    </ConfirmationRequest>",
        '      <ConfirmationItem lineNumber="6" quantity="1"><UnitOfMeasure>EA</UnitOfMeasure>'
        '<ConfirmationStatus type="requestToPay" quantity="1"><UnitOfMeasure>EA</UnitOfMeasure>'
        "</ConfirmationStatus></ConfirmationItem>\n    </ConfirmationRequest>",
    )
    doc.write_text(text)
    lake = tmp_path / "lake"
    # no format, no table: both come from the document
    report = scfeeds.run(ingest([scfeeds.Source(url=str(doc))], lake, progress=None))
    assert report.batches["status"].to_list() == ["committed"]
    good = scan_lake(lake, "po_acks").sort("line_number", "position").collect()
    assert good["line_number"].to_list() == ["1", "2", "2", "3", "4"]
    assert good["ack_status"].to_list() == [
        "accepted", "changed", "backordered", "rejected", "changed",
    ]  # fmt: skip
    assert good["promised_date"].to_list()[:3] == [
        dt.date(2026, 1, 20), dt.date(2026, 1, 18), dt.date(2026, 2, 10),
    ]  # fmt: skip
    assert good["qty_acked"].to_list()[0] == Decimal(10)
    assert set(good["source"]) == {str(doc)}
    quarantined = scan_lake(lake, "po_acks", kind="quarantine").collect()
    assert quarantined["line_number"].to_list() == ["6"]
    assert "UNKNOWN_ACK_STATUS" in quarantined["rule"].to_list()[0]
    errors = scan_lake(lake, "po_lines", kind="errors").collect()
    assert errors["rule"].to_list() == ["BAD_NUMBER"]  # line 5's quantity "seven"


def test_po_acks_rules() -> None:
    assert (*KNOWN_ACK_STATUSES, "unknown") == ACK_STATUSES
    base = {
        "source": "s", "position": "p", "supplier_id": "SUP1", "po_number": "PO1",
        "ack_date": dt.date(2026, 1, 5), "line_number": "1", "item_id": None, "ack_code": "IA",
        "ack_status": "accepted", "qty_acked": Decimal(3), "uom": "EA",
        "unit_price": Decimal("1.5"), "promised_date": None, "date_qualifier": None,
    }  # fmt: skip
    rows = [
        base,
        {**base, "qty_acked": Decimal(0), "ack_code": "IR", "ack_status": "rejected"},
        {**base, "qty_acked": None, "uom": None, "unit_price": None},
        {**base, "qty_acked": Decimal(-1)},
        {**base, "ack_code": "ZZ", "ack_status": "unknown"},
        {**base, "ack_status": None},
        {**base, "po_number": " "},
        {**base, "line_number": None},
        {**base, "unit_price": Decimal(-2)},
        {**base, "uom": "XX"},
    ]
    frame = pl.DataFrame(rows, schema=schema("po_acks"))
    good, failures = scfeeds.validate(frame, "po_acks")
    assert good.height == 3
    assert failures["rule"].to_list() == [
        "QTY_NEGATIVE", "UNKNOWN_ACK_STATUS", "REQUIRED", "REQUIRED", "REQUIRED",
        "PRICE_NEGATIVE", "UNKNOWN_UOM",
    ]  # fmt: skip


@pytest.mark.parametrize("page_format", ["ndjson", "csv"])
def test_the_portal_pages_acks_like_the_other_tables(
    tmp_path: Path, world: Path, page_format: str
) -> None:
    with portal.serve_in_thread(world, latency=0.0, seed=1, access_log=False) as server:
        with urllib.request.urlopen(f"{server.url}/v1/feeds", timeout=30) as resp:
            feeds: list[dict[str, Any]] = json.load(resp)["feeds"]
        acks = [f for f in feeds if f["table"] == "po_acks" and f["lines_url"]]
        assert acks
        sources = [
            scfeeds.Source(url=ch.url, format=page_format, table="po_acks", path=ch.path)
            for f in acks
            for ch in scfeeds.plan_chunks(
                f"{f['lines_url']}?format={page_format}", total=f["records"], chunk_size=11
            )
        ]
        assert len(sources) > len(acks)
        report = scfeeds.run(ingest(sources, tmp_path / "lake", progress=None, pool="threads"))
    assert report.n_errors == 0
    got = scan_lake(tmp_path / "lake", "po_acks").collect()
    want = synth.load_world(world, "po_acks").collect()
    assert_frame_equal(_canonical(got), _canonical(want), check_column_order=False)
