"""Beyond one machine: ingest and reconcile on a Dask ``distributed`` cluster.

Nothing here is imported unless a ``cluster=`` argument is given; dask is an extra
(``pip install scfeeds[dask]``), never a core dependency.

Ingest (``scfeeds._ingest`` uses :func:`shard_key`, :func:`client_of` and
:data:`MANIFEST_COLUMNS`): sources are split into shards by supplier (else by host), so per-host
limits and AIMD still hold inside each shard. Each shard runs the ordinary async pipeline inside
``asyncio.run`` in a *plain* function on a worker thread (an ``async def`` task would run on the
worker's own event loop and stall it) and returns a small manifest (urls, batch ids, sha256,
counts), never file bodies. Every shard commits to the same Delta lake (optimistic concurrency;
the ledger of content hashes makes a repeated shard harmless): when a worker dies, Dask re-runs
its tasks and the lake ends up the same, with no duplicate rows. With the lake on object storage
(``s3://bucket/prefix``, ``storage_options=`` or the workers' environment) the workers need no
shared file system; each lands its downloads in its own temporary folder.

Any other partitioned job (``reconcile(..., cluster=)``): :func:`map_on_cluster` runs one
task per part and returns the parts' results in order; the caller combines them. This module
knows nothing of the match.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

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


def client_of(cluster: Any) -> Any:
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
    client = client_of(cluster)
    futures = [client.submit(fn, *args, pure=False, retries=retries) for args in calls]
    results: list[T] = client.gather(futures)
    return results
