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
``scfeeds enqueue``).

Needs the ``service`` extra (redis, opentelemetry). Nothing in ``scfeeds`` imports this
package: the notebook path never pays for it.
"""

from scfeeds._service._cli import add_cli
from scfeeds._service._health import HealthServer
from scfeeds._service._job import Job, JobError, split_jobs
from scfeeds._service._metrics import ServiceMetrics
from scfeeds._service._queue import Delivery, JobQueue, QueueStats
from scfeeds._service._secrets import Secrets
from scfeeds._service._tracing import Tracing
from scfeeds._service._worker import JobContext, JobResult, JobRunner, Worker, ingest_runner

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
