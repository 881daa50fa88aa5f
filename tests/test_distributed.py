"""Ingest and reconcile on a real Dask LocalCluster (worker processes) against the portal."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import scfeeds
from scfeeds import portal, synth
from scfeeds._lake import read_ledger, scan_lake
from tests.lake_support import S3, commit_frames
from tests.web_support import listing

distributed = pytest.importorskip("distributed", reason="the dask extra is not installed")

pytestmark = [
    pytest.mark.slow,
    # distributed's own shutdown noise (closed comms, restarted workers) is not ours to fix
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning:distributed"),
]

TABLES = ("po_lines", "asn_lines", "invoice_lines", "receipts")


@pytest.fixture(scope="module")
def world(make_world: Callable[..., Path]) -> Path:
    return make_world(seed=5, pos=48, suppliers=4)


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        worker_dashboard_address=None,
        silence_logs=40,
    )
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


@pytest.fixture(params=["local", "s3"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """Where a test's lakes live: ``where(name) -> (lake, storage_options)``."""
    if request.param == "local":
        return lambda name: (str(tmp_path / name), None)
    server: S3 = request.getfixturevalue("s3")
    return lambda name: (server.new_lake(), server.options())


def lake_frame(lake: Any, table: str, opts: dict[str, str] | None = None) -> pl.DataFrame:
    frame = scan_lake(lake, table, storage_options=opts).collect().drop("source")
    return frame.sort(frame.columns, nulls_last=True)


def world_frame(world: Path, table: str) -> pl.DataFrame:
    frame = synth.load_world(world, table).collect().drop("source")
    return frame.sort(frame.columns, nulls_last=True)


def test_distributed_ingest_lands_the_same_lake(
    tmp_path: Path, world: Path, client: Any, where: Any
) -> None:
    dist, opts = where("dist")
    with portal.serve_in_thread(world, latency=0.005, access_log=False) as server:
        feeds = listing(server.url)
        report = scfeeds.run(
            scfeeds.ingest(feeds, dist, cluster=client, storage_options=opts, batch_seconds=0.2)
        )
        local = scfeeds.run(scfeeds.ingest(feeds, tmp_path / "local", progress=None))
    assert report.batches.height == len(feeds)
    assert set(report.batches["status"]) == {"committed"}
    assert report.rows == local.rows
    for table in TABLES:
        assert_frame_equal(lake_frame(dist, table, opts), lake_frame(tmp_path / "local", table))
        assert_frame_equal(lake_frame(dist, table, opts), world_frame(world, table))
    if opts is None:  # shards are per supplier: one landing folder each
        assert len(list((Path(dist) / "_landing").iterdir())) == 4


def ledger_size(lake: Path) -> int:
    try:
        return read_ledger(lake).height
    except Exception:  # being created right now
        return 0


def test_a_worker_killed_mid_run_changes_nothing(tmp_path: Path, world: Path, client: Any) -> None:
    lake = tmp_path / "lake"
    pids = list(client.run(os.getpid).values())
    result: dict[str, Any] = {}
    with portal.serve_in_thread(world, latency=0.2, access_log=False) as server:
        feeds = listing(server.url)

        def go() -> None:
            try:
                result["report"] = scfeeds.run(
                    scfeeds.ingest(feeds, lake, cluster=client, limits=2)
                )
            except BaseException as exc:  # pragma: no cover - reported below
                result["error"] = exc

        runner = threading.Thread(target=go)
        runner.start()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and ledger_size(lake) < 4:
            time.sleep(0.05)
        assert ledger_size(lake) < len(feeds), "finished before the kill"
        os.kill(pids[0], signal.SIGKILL)
        runner.join(timeout=240)
    assert not runner.is_alive()
    assert "error" not in result, result.get("error")
    for table in TABLES:
        assert_frame_equal(lake_frame(lake, table), world_frame(world, table))
    client.wait_for_workers(2, timeout=60)


def test_distributed_reconcile_equals_local(world: Path, client: Any, where: Any) -> None:
    lake, opts = where("lake")
    files = [str(p) for p in sorted((world / "feeds").rglob("*")) if p.is_file()]
    scfeeds.run(scfeeds.ingest(files, lake, progress=None, pool="threads", storage_options=opts))
    conversions = pl.read_parquet(world / "world" / "conversions.parquet")
    local = scfeeds.reconcile(
        *(
            scan_lake(lake, t, storage_options=opts)
            for t in ("po_lines", "asn_lines", "invoice_lines")
        ),
        receipts=scan_lake(lake, "receipts", storage_options=opts),
        conversions=conversions,
    )
    # small parts: several tasks, spread over both workers
    dist = scfeeds.reconcile(
        lake, cluster=client, conversions=conversions, storage_options=opts, partition_lines=50
    )
    for kind in ("lines", "invoices", "exceptions"):
        a = getattr(dist, kind).collect()
        b = getattr(local, kind).collect()
        assert a.height == b.height > 0, kind
        assert_frame_equal(a.sort(a.columns, nulls_last=True), b.sort(b.columns, nulls_last=True))
    assert repr(dist.summary()) == repr(local.summary())
    # and the same again without a cluster (partitions run here, one after the other)
    here = scfeeds.reconcile(lake, conversions=conversions, storage_options=opts)
    assert repr(here.summary()) == repr(local.summary())


def test_supplier_mismatch_survives_partitioning(tmp_path: Path) -> None:
    from decimal import Decimal

    from scfeeds.schemas import schema

    def frame(table: str, rows: list[dict[str, Any]]) -> pl.DataFrame:
        full = [dict.fromkeys(schema(table)) | {"source": "hand"} | r for r in rows]  # type: ignore[arg-type]
        return pl.DataFrame(full, schema=schema(table))  # type: ignore[arg-type]

    po = frame(
        "po_lines",
        [
            {
                "supplier_id": "A",
                "po_number": "PA1",
                "line_number": "1",
                "item_id": "X",
                "qty_ordered": Decimal(10),
                "uom": "EA",
                "unit_price": Decimal("2.5"),
                "currency": "USD",
            },
            {
                "supplier_id": "B",
                "po_number": "PB1",
                "line_number": "1",
                "item_id": "Y",
                "qty_ordered": Decimal(4),
                "uom": "EA",
                "unit_price": Decimal(3),
                "currency": "USD",
            },
        ],
    )
    asn = frame(
        "asn_lines",
        [
            {
                "supplier_id": "A",
                "shipment_id": "S1",
                "po_number": "PA1",
                "line_number": "1",
                "item_id": "X",
                "qty_shipped": Decimal(10),
                "uom": "EA",
            },
            {
                "supplier_id": "B",
                "shipment_id": "S2",
                "po_number": "PB1",
                "line_number": "1",
                "item_id": "Y",
                "qty_shipped": Decimal(4),
                "uom": "EA",
            },
        ],
    )
    inv = frame(
        "invoice_lines",
        [
            {
                "supplier_id": "A",
                "invoice_number": "I1",
                "po_number": "PA1",
                "line_number": "1",
                "item_id": "X",
                "qty_invoiced": Decimal(10),
                "uom": "EA",
                "unit_price": Decimal("2.5"),
                "line_amount": Decimal(25),
                "currency": "USD",
            },
            # supplier A bills against B's PO
            {
                "supplier_id": "A",
                "invoice_number": "I2",
                "po_number": "PB1",
                "line_number": "1",
                "item_id": "Y",
                "qty_invoiced": Decimal(4),
                "uom": "EA",
                "unit_price": Decimal(3),
                "line_amount": Decimal(12),
                "currency": "USD",
            },
        ],
    )
    commit_frames(tmp_path, {"po_lines": po, "asn_lines": asn, "invoice_lines": inv}, source="hand")
    local = scfeeds.reconcile(po, asn, inv).exceptions.collect()
    dist = scfeeds.reconcile(tmp_path).exceptions.collect()
    assert "SUPPLIER_MISMATCH" in local["code"].to_list()
    assert_frame_equal(
        dist.drop("source", "position").sort(
            dist.drop("source", "position").columns, nulls_last=True
        ),
        local.drop("source", "position").sort(
            local.drop("source", "position").columns, nulls_last=True
        ),
    )
