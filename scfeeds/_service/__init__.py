"""Service mode: the ingest engine as a long-running worker behind a Redis Stream.

::

    scfeeds enqueue ─XADD─> stream "scfeeds:jobs" ─XREADGROUP/XAUTOCLAIM─> Worker (× N pods)
                                    │                                      │ ingest -> lake
                                    └─ dead-letter stream <── poison jobs  │ XACK after commit
                                                                           └ /livez /readyz /metrics

Pieces (each its own module): ``_job`` (the message: pointers, never bodies or tokens),
``_queue`` (consumer group, reclaim, requeue, dead letters), ``_worker`` (the loop, drain),
``_health`` (aiohttp.web side server), ``_metrics`` (Prometheus text), ``_tracing``
(OpenTelemetry), ``_secrets`` (tokens from the environment), ``_cli`` (``scfeeds worker``,
``scfeeds enqueue``, ``scfeeds dead-letters``).

Needs the ``service`` extra (redis, opentelemetry). Nothing in ``scfeeds`` imports this
package: the notebook path never pays for it. Names are loaded lazily, so ``scfeeds.cli`` can
register the commands (``_cli.add_cli``) without importing redis or OpenTelemetry.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scfeeds._service._cli import add_cli
    from scfeeds._service._health import HealthServer
    from scfeeds._service._job import Job, JobError, split_jobs
    from scfeeds._service._metrics import ServiceMetrics
    from scfeeds._service._queue import Delivery, JobQueue, QueueStats
    from scfeeds._service._secrets import Secrets
    from scfeeds._service._tracing import Tracing
    from scfeeds._service._worker import (
        JobContext,
        JobResult,
        JobRunner,
        Worker,
        ingest_runner,
    )

_WHERE = {
    "add_cli": "_cli",
    "HealthServer": "_health",
    "Job": "_job",
    "JobError": "_job",
    "split_jobs": "_job",
    "ServiceMetrics": "_metrics",
    "Delivery": "_queue",
    "JobQueue": "_queue",
    "QueueStats": "_queue",
    "Secrets": "_secrets",
    "Tracing": "_tracing",
    "JobContext": "_worker",
    "JobResult": "_worker",
    "JobRunner": "_worker",
    "Worker": "_worker",
    "ingest_runner": "_worker",
}

__all__ = [
    "Delivery",
    "HealthServer",
    "Job",
    "JobContext",
    "JobError",
    "JobQueue",
    "JobResult",
    "JobRunner",
    "QueueStats",
    "Secrets",
    "ServiceMetrics",
    "Tracing",
    "Worker",
    "add_cli",
    "ingest_runner",
    "split_jobs",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"scfeeds._service.{_WHERE[name]}"), name)
    # builtin-raise: the module __getattr__ protocol (hasattr, import machinery)
    raise AttributeError(f"module 'scfeeds._service' has no attribute {name!r}")
