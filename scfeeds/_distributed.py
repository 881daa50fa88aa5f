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

Any other partitioned job (``reconcile(..., cluster=)``): :func:`map_on_cluster` runs one
task per part and returns the parts' results in order; the caller combines them. This module
knows nothing of the match.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import polars as pl

from scfeeds._lake import is_remote, lake_uri
from scfeeds.exceptions import ConfigurationError

T = TypeVar("T")

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


# -- any partitioned job ---------------------------------------------------------------------


def map_on_cluster(
    cluster: object,
    fn: Callable[..., T],
    calls: Sequence[tuple[object, ...]],
    *,
    retries: int = 2,
) -> list[T]:
    """``[fn(*args) for args in calls]``, one task per call on the cluster, results in order.

    ``fn`` must be a top-level function (workers import it by name) and its arguments and
    results picklable. A task whose worker dies is run again (up to ``retries`` times): ``fn``
    must be safe to repeat.
    """
    client = _client(cluster)
    futures = [client.submit(fn, *args, pure=False, retries=retries) for args in calls]
    results: list[T] = client.gather(futures)
    return results
