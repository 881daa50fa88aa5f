"""Beyond one machine: ingest and reconcile on a Dask ``distributed`` cluster.

Nothing here is imported unless a ``cluster=`` argument is given; dask is an extra
(``pip install scfeeds[dask]``), never a core dependency.

Ingest: sources are split into shards by supplier (else by host), so per-host limits and
AIMD still hold inside each shard. Each shard runs the ordinary async pipeline inside
``asyncio.run`` in a *plain* function on a worker thread (an ``async def`` task would run on the
worker's own event loop and stall it) and returns a small manifest (urls, batch ids, sha256,
counts), never file bodies. Every shard commits to the same Delta lake (optimistic
concurrency; the ledger of content hashes makes a repeated shard harmless): when a worker dies,
Dask re-runs its tasks and the lake ends up the same, with no duplicate rows. With the lake on
object storage (``s3://bucket/prefix``, ``storage_options=`` or the workers' environment) the
workers need no shared file system; each lands its downloads in its own temporary folder.

Reconcile: matching never crosses suppliers, so the lake is reconciled one supplier per task.
The only cross-supplier fact, "this PO number belongs to another supplier"
(``SUPPLIER_MISMATCH``), is kept by giving each partition the foreign PO lines its documents
refer to and keeping only its own supplier's rows of the result.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import polars as pl

from scfeeds._lake import is_remote, lake_snapshot, lake_uri, scan_lake
from scfeeds.exceptions import ConfigurationError

MANIFEST_COLUMNS = (
    "url",
    "path",
    "format",
    "table",
    "sha256",
    "batch",
    "status",
    "rows",
    "quarantined",
    "errors",
    "parse_seconds",
    "error",
)


def _client(cluster: Any) -> Any:
    """A ``distributed.Client`` from a client, a cluster object, or a scheduler address."""
    try:
        from distributed import Client
    except ImportError as exc:  # pragma: no cover - the extra is installed in tests
        raise ConfigurationError(
            "cluster= needs dask's distributed scheduler: pip install 'scfeeds[dask]'"
        ) from exc
    if isinstance(cluster, Client):
        return cluster
    if isinstance(cluster, str) or hasattr(cluster, "scheduler_address"):
        return Client(cluster)  # type: ignore[no-untyped-call]
    raise ConfigurationError(
        f"cluster must be a distributed.Client, a cluster or a scheduler address, not {cluster!r}"
    )


def shard_key(source: Mapping[str, Any]) -> str:
    """Supplier if the listing says, else the host: one shard per supplier endpoint."""
    supplier = source.get("supplier_id")
    if supplier:
        return f"supplier={supplier}"
    return f"host={urlsplit(str(source['url'])).netloc or 'local'}"


def _ingest_shard(
    sources: list[dict[str, Any]], lake: str, options: dict[str, Any]
) -> dict[str, Any]:
    """Runs on a worker: the normal pipeline in its own event loop; returns a small manifest."""
    from scfeeds._ingest import Source, _landing_dir, ingest

    items = [Source(**s) for s in sources]
    shard = options.pop("shard", None)
    if options.get("landing") is None and shard is not None:
        options["landing"] = str(_landing_dir(lake, None) / shard)
    # Threads only: worker processes are daemonic and may not start a process pool.
    report = asyncio.run(ingest(items, lake, pool="threads", **options))
    return {
        "batches": report.batches.select(MANIFEST_COLUMNS).to_dicts(),
        "rows": dict(report.rows),
        "fetch_seconds": report.fetch_seconds,
        "parse_seconds": report.parse_seconds,
    }


async def ingest_on_cluster(
    sources: Sequence[Any],
    lake: str | os.PathLike[str],
    *,
    cluster: Any,
    retries: int = 2,
    **options: Any,
) -> Any:
    """Run :func:`scfeeds.ingest` shard by shard on a Dask cluster (see module docstring)."""
    import time

    from scfeeds._ingest import BATCH_SCHEMA, IngestReport

    t0 = time.perf_counter()
    client = await asyncio.to_thread(_client, cluster)
    shards: dict[str, list[dict[str, Any]]] = {}
    for s in sources:
        row = {
            k: getattr(s, k) for k in ("url", "format", "table", "supplier_id", "path", "sha256")
        }
        shards.setdefault(shard_key(row), []).append(row)
    root = lake_uri(lake)
    futures = []
    for key, members in sorted(shards.items()):
        digest = hashlib.sha256(repr((key, [r["url"] for r in members], root)).encode()).hexdigest()
        # each shard its own landing folder (fetch manifests are per process): in the lake
        # folder, or for an object-store lake in the worker's temporary folder
        shard = hashlib.sha256(key.encode()).hexdigest()[:16]
        futures.append(
            client.submit(
                _ingest_shard,
                members,
                root,
                {**options, "landing": None, "shard": shard},
                key=f"scfeeds-ingest-{digest[:16]}",
                retries=retries,
                pure=False,
            )
        )
    manifests: list[dict[str, Any]] = await asyncio.to_thread(client.gather, futures)
    records = [b for m in manifests for b in m["batches"]]
    rows: dict[str, int] = {}
    for m in manifests:
        for t, n in m["rows"].items():
            rows[t] = rows.get(t, 0) + n
    batches = (
        pl.DataFrame(records, schema=BATCH_SCHEMA) if records else pl.DataFrame(schema=BATCH_SCHEMA)
    )
    return IngestReport(
        lake=root if is_remote(lake) else Path(lake),
        batches=batches.sort("url"),
        fetch=None,
        elapsed=time.perf_counter() - t0,
        fetch_seconds=sum(m["fetch_seconds"] for m in manifests),
        parse_seconds=sum(m["parse_seconds"] for m in manifests),
        rows=rows,
        storage_options=options.get("storage_options"),
    )


# -- reconcile ------------------------------------------------------------------------------


def lake_suppliers(
    lake: str | os.PathLike[str],
    *,
    snapshot: Mapping[str, int] | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> list[str]:
    """Suppliers with any PO, ASN or invoice line in the lake."""
    frames = [
        scan_lake(lake, t, snapshot=snapshot, storage_options=storage_options)
        .select("supplier_id")
        .unique()
        for t in ("po_lines", "asn_lines", "invoice_lines")
    ]
    found = pl.concat(pl.collect_all(frames)).drop_nulls().unique().sort("supplier_id")
    return [str(s) for s in found["supplier_id"]]


KINDS = ("lines", "invoices", "exceptions")


def _reconcile_partition(
    lake: str,
    supplier: str,
    out: str | None,
    tolerances: Any,
    conversions: pl.DataFrame | None,
    snapshot: Mapping[str, int] | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Runs on a worker: one supplier's match, written to ``out/<kind>/part-<supplier>``
    (``out=None``: returned as frames, for a lake on object storage)."""
    from scfeeds._reconcile import reconcile

    def scan(table: str) -> pl.LazyFrame:
        return scan_lake(lake, table, snapshot=snapshot, storage_options=storage_options)

    mine = pl.col("supplier_id") == supplier
    asn = scan("asn_lines").filter(mine)
    inv = scan("invoice_lines").filter(mine)
    po_all = scan("po_lines")
    refs = pl.concat([asn.select("po_number"), inv.select("po_number")]).unique()
    # own PO lines, and the foreign ones this supplier's documents point at
    po = pl.concat([po_all.filter(mine), po_all.filter(~mine).join(refs, on="po_number")])
    receipts_all = scan("receipts")
    own_pos = po_all.filter(mine).select("po_number").unique()
    receipts = pl.concat(
        [
            receipts_all.filter(mine),
            receipts_all.filter(pl.col("supplier_id").is_null()).join(own_pos, on="po_number"),
        ]
    )
    has_receipts = receipts_all.select(pl.len()).collect().item() > 0
    rec = reconcile(
        po,
        asn,
        inv,
        receipts=receipts if has_receipts else None,
        tolerances=tolerances,
        conversions=conversions,
    ).collect()
    counts: dict[str, Any] = {"supplier": supplier, "received_from": rec.received_from}
    safe = hashlib.sha256(supplier.encode()).hexdigest()[:16]
    for kind in KINDS:
        frame = getattr(rec, kind).filter(mine).collect()
        if out is None:
            counts[kind] = frame.height
            counts[f"frame_{kind}"] = frame
            continue
        dest = Path(out) / kind / f"part-{safe}.parquet"
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp")
        frame.write_parquet(tmp)
        os.replace(tmp, dest)
        counts[kind] = frame.height
    return counts


def reconcile_lake(
    lake: str | os.PathLike[str],
    *,
    cluster: Any = None,
    out: str | os.PathLike[str] | None = None,
    tolerances: Any = None,
    conversions: pl.DataFrame | None = None,
    snapshot: Mapping[str, int] | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> Any:
    """Reconcile a lake one supplier at a time, on a Dask cluster or in this process.

    Parameters
    ----------
    lake
        A lake written by :func:`scfeeds.ingest`.
    cluster
        A ``distributed.Client``, a cluster or a scheduler address; ``None`` runs the
        partitions here, one after the other (memory bounded by the largest supplier).
    out
        Folder for the per-supplier results (default ``lake/_reconcile``); rewritten whole.
        For a lake on object storage the default is no folder: the workers return their
        (per-supplier) results to this process.
    tolerances, conversions
        As for :func:`scfeeds.reconcile`.
    snapshot
        ``{table: version}`` from :func:`scfeeds.lake_snapshot`: every partition reads exactly
        these versions (default: a snapshot taken when the call starts, so that all workers
        read the same lake even while ingests go on).
    storage_options
        Object-store options for delta-rs (see :func:`scfeeds.scan_lake`).

    Returns
    -------
    Reconciliation
        Its ``lines``, ``invoices`` and ``exceptions`` scan the per-supplier Parquet files;
        ``summary()`` combines them. The rows equal a single-machine ``reconcile`` of the
        whole lake.
    """
    import shutil

    from scfeeds._reconcile import Reconciliation, Tolerances
    from scfeeds._reconcile._engine import Plan
    from scfeeds._reconcile._result import _Job

    root = lake_uri(lake)
    opts = dict(storage_options) if storage_options else None
    dest: Path | None = None
    if out is not None or not is_remote(lake):
        dest = Path(out) if out is not None else Path(root) / "_reconcile"
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
    where = str(dest) if dest is not None else None
    if snapshot is None:
        snapshot = lake_snapshot(root, storage_options=opts)
    snapshot = dict(snapshot)
    suppliers = lake_suppliers(root, snapshot=snapshot, storage_options=opts)
    if cluster is None:
        results = [
            _reconcile_partition(root, s, where, tolerances, conversions, snapshot, opts)
            for s in suppliers
        ]
    else:
        client = _client(cluster)
        futures = [
            client.submit(
                _reconcile_partition,
                root,
                s,
                where,
                tolerances,
                conversions,
                snapshot,
                opts,
                pure=False,
                retries=2,
            )
            for s in suppliers
        ]
        results = client.gather(futures)

    received: Literal["receipts", "asn"] = (
        "receipts" if any(r["received_from"] == "receipts" for r in results) else "asn"
    )

    def frames() -> dict[str, pl.LazyFrame]:
        if dest is None:
            return {kind: pl.concat([r[f"frame_{kind}"] for r in results]).lazy() for kind in KINDS}
        return {kind: pl.scan_parquet(sorted((dest / kind).glob("*.parquet"))) for kind in KINDS}

    if not suppliers:
        from scfeeds._reconcile import reconcile
        from scfeeds.schemas import empty

        rec = reconcile(empty("po_lines"), empty("asn_lines"), empty("invoice_lines"))
        return dataclasses.replace(rec, inputs=snapshot)

    def run(engine: Any) -> Plan:
        f = frames()
        lines, invoices, exceptions = pl.collect_all([f[k] for k in KINDS])
        return Plan(
            lines=lines, invoices=invoices, exceptions=exceptions, received_from=received, stages={}
        )

    f = frames()
    return Reconciliation(
        lines=f["lines"],
        invoices=f["invoices"],
        exceptions=f["exceptions"],
        received_from=received,
        tolerances=tolerances if tolerances is not None else Tolerances(),
        _job=_Job(run),
        inputs=snapshot,
    )
