"""The worker loop: take jobs from the queue, run them through the engine, acknowledge.

Life of a job on one worker::

    XREADGROUP / XAUTOCLAIM ──> checks ──> span ──> runner (ingest: fetch -> parse -> lake)
          │                       │                      │
          │             malformed / too many             ├─ returned, all sources in ──> XACK
          │             attempts: dead-letter            ├─ returned, some failed ─────> requeue the
          │                                              │                               failed ones
          │                                              ├─ raised ───> requeue (attempt + 1),
          │                                              │              dead-letter after N
          └── heartbeat keeps our PEL entries fresh      └─ cancelled by drain ──> not acked:
                                                                        released for a peer

At-least-once: a job is acknowledged only after the runner returned, i.e. after its documents
are in the lake's ledger. Whatever kills a worker before that (SIGKILL, OOM, a lost node)
leaves the job pending; a peer's ``XAUTOCLAIM`` takes it after ``claim_idle`` seconds and runs
it again. Running a job twice is harmless: the ledger records each document's content hash, so
a re-run skips what is committed and commits the rest once (Delta transactions, optimistic
concurrency between workers).

Drain (``stop()``, wired to SIGTERM by the CLI): readiness goes false, no new jobs are read,
running jobs get ``drain_seconds`` to finish, the rest are cancelled *without* acknowledgement
and released so a peer picks them up at once. Cancelling a job cannot leave partial rows in the
lake: a micro-batch is visible only once its ledger commit (the last of its Delta transactions)
exists.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from scfeeds._config import DEFAULT_MAX_AT_ONCE
from scfeeds._fetch._progress import ProgressSink
from scfeeds._fetch._report import ProgressEvent
from scfeeds._service._job import Job, Source, describe, source_url
from scfeeds._service._metrics import ServiceMetrics
from scfeeds._service._queue import Delivery, JobQueue
from scfeeds._service._secrets import Secrets
from scfeeds._service._tracing import Tracing, extract
from scfeeds.exceptions import ConfigurationError, sole_error

logger = logging.getLogger("scfeeds.service")

Outcome = Literal["succeeded", "partial", "failed", "cancelled", "dead_lettered", "rejected"]


@dataclass(frozen=True, kw_only=True)
class JobResult:
    """What a runner reports back. ``failed`` are the sources to try again."""

    committed: int = 0
    failed: tuple[Source, ...] = ()
    rows: Mapping[str, int] = field(default_factory=dict)
    sources: Mapping[str, int] = field(default_factory=dict)  # status -> count


@dataclass(frozen=True, kw_only=True)
class JobContext:
    """What the worker hands a runner besides the job."""

    lake: Path
    landing: Path
    secrets: Secrets
    progress: ProgressSink
    limits: int
    pool: Literal["auto", "threads"]


JobRunner = Callable[[Job, JobContext], Awaitable[JobResult]]


async def ingest_runner(job: Job, ctx: JobContext) -> JobResult:
    """Run a job through :func:`scfeeds._ingest.ingest` (the default runner).

    Sources are grouped by the token their host needs, so each supplier's bearer token goes
    only to that supplier; each group is one ``ingest`` call into the same lake.
    """
    from scfeeds._ingest import ingest

    groups: dict[str | None, list[Source]] = {}
    for s in job.sources:
        groups.setdefault(ctx.secrets.token_for(source_url(s)), []).append(s)
    by_url = {source_url(s): s for s in job.sources}
    committed, failed = 0, []
    rows: dict[str, int] = {}
    statuses: dict[str, int] = {}
    for token, sources in groups.items():
        report = await ingest(
            list(sources),
            ctx.lake,
            limits=ctx.limits,
            headers={"Authorization": f"Bearer {token}"} if token else None,
            progress=ctx.progress,
            landing=ctx.landing,
            pool=ctx.pool,
        )
        committed += report.committed
        for table, n in report.rows.items():
            rows[table] = rows.get(table, 0) + n
        for rec in report.batches.select("url", "status").iter_rows(named=True):
            statuses[rec["status"]] = statuses.get(rec["status"], 0) + 1
            if rec["status"] == "fetch_failed":
                failed.append(by_url.get(rec["url"], rec["url"]))
    return JobResult(committed=committed, failed=tuple(failed), rows=rows, sources=statuses)


class _Progress:
    """Fetch progress of one job -> the worker's request and byte metrics."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self.metrics = metrics
        self.in_flight = 0
        self._bytes = 0

    def update(self, event: ProgressEvent) -> None:
        if event.stage != "fetch":  # the parse stage counts the same bytes again, as parsed
            return
        self.in_flight = event.in_flight
        n = event.bytes
        # each fetch call of a job starts counting again from zero
        delta = n - self._bytes if n >= self._bytes else n
        if delta > 0:
            self.metrics.bytes.inc(delta)
        self._bytes = n

    def close(self, event: ProgressEvent) -> None:
        self.update(event)
        self.in_flight = 0
        self._bytes = 0


class _JobScope:
    """The jobs one :meth:`Worker.run` started: on leaving it, none is still running.

    A job is *cancellable* until its runner returned; after that its documents are committed
    and it is acknowledging, so it is let finish (up to ``grace`` seconds) rather than run
    again. :meth:`close` cancels the cancellable ones, waits for the rest and awaits every task,
    on whatever path ``run()`` leaves by (drain deadline, second stop, an unexpected error, an
    outside cancellation); the caller releases the cancelled jobs' messages for a peer.
    """

    def __init__(self) -> None:
        self.tasks: dict[asyncio.Task[None], Delivery] = {}
        self._cancellable: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self.tasks)

    def start(self, d: Delivery, job: Coroutine[object, object, None]) -> None:
        task = asyncio.create_task(job, name=f"scfeeds-job-{d.msg_id}")
        self.tasks[task] = d
        self._cancellable.add(task)
        task.add_done_callback(self._forget)

    def committed(self, task: asyncio.Task[Any] | None) -> None:
        """The runner of ``task`` returned: from now on it is let finish, not cancelled."""
        if task is not None:
            self._cancellable.discard(task)

    def deliveries(self) -> list[Delivery]:
        return list(self.tasks.values())

    def _forget(self, task: asyncio.Task[None]) -> None:
        self.tasks.pop(task, None)
        self._cancellable.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("job task crashed: %s", describe(task.exception()))

    async def close(self, grace: float = 10.0) -> list[str]:
        """Cancel the running jobs that have not committed, let the others finish for up to
        ``grace`` seconds (then cancel them too: a committed job run again is harmless),
        and return the message ids of the jobs cancelled before commit. Returns only when
        every job task has finished."""
        running = {t: d for t, d in self.tasks.items() if not t.done()}
        early = {t for t in running if t in self._cancellable}
        await _cancel_until_done(early)
        acking = set(running) - early
        if acking:
            _, late = await asyncio.wait(acking, timeout=grace)
            for t in late:
                logger.warning(
                    "%s still acknowledging after %.0f s; cancelled", t.get_name(), grace
                )
            await _cancel_until_done(late)
        return [running[t].msg_id for t in early]


async def _cancel_until_done(tasks: Iterable[asyncio.Task[None]], every: float = 0.5) -> None:
    """Cancel ``tasks`` and wait until all have finished, cancelling again every ``every`` s.

    Once is not always enough on Python 3.11: ``asyncio.wait_for`` (which redis-py awaits on
    every command it sends) drops a cancellation that arrives as its inner future completes
    (fixed in 3.12, where ``wait_for`` is built on ``asyncio.timeout``); the task then runs on.
    """
    pending = {t for t in tasks if not t.done()}
    while pending:
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=every)


async def _until(event: asyncio.Event) -> None:
    await event.wait()


async def _wait_any(
    tasks: Iterable[asyncio.Task[None]], event: asyncio.Event, seconds: float | None = None
) -> None:
    """Wait until one of ``tasks`` is done, ``event`` is set or ``seconds`` pass (built on
    ``asyncio.wait``, which never loses a cancellation of the caller; see
    :func:`_cancel_until_done`)."""
    waiter = asyncio.create_task(_until(event))
    try:
        await asyncio.wait([*tasks, waiter], timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter


def default_consumer_name() -> str:
    """``host-pid-random``: unique per process, readable in ``XINFO CONSUMERS``.

    In Kubernetes set ``SCFEEDS_CONSUMER`` to the pod name (downward API).
    """
    return os.environ.get("SCFEEDS_CONSUMER") or (
        f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    )


class Worker:
    """Consume jobs from a :class:`JobQueue` and run them until :meth:`stop`.

    Parameters
    ----------
    queue
        The job stream.
    lake
        Lake root. A job may name a lake only inside this folder.
    runner
        ``async (job, ctx) -> JobResult``; default :func:`ingest_runner`.
    concurrency
        Jobs run at once by this worker (each job's requests are bounded by ``limits``).
    limits
        ``max_at_once`` for each job's fetch.
    drain_seconds
        After :meth:`stop`, how long running jobs may take before they are cancelled (keep it
        below Kubernetes' ``terminationGracePeriodSeconds`` minus a few seconds).
    claim_idle
        Seconds a delivered job may sit without a heartbeat before a peer reclaims it. The
        heartbeat runs every third of this, so live workers never lose their jobs.
    max_attempts
        A job seen for the ``max_attempts + 1``-th time (requeues plus redeliveries) goes to
        the dead-letter stream instead of running again.
    block
        Longest wait of one ``XREADGROUP`` (seconds): also how fast an idle worker notices
        ``stop``.
    keep_landing
        Keep each job's raw downloads (``lake/_landing/jobs/<job id>``) after it succeeded;
        by default they are removed once the lake holds the parsed rows.
    """

    def __init__(
        self,
        queue: JobQueue,
        lake: str | os.PathLike[str],
        *,
        runner: JobRunner | None = None,
        concurrency: int = 2,
        limits: int = DEFAULT_MAX_AT_ONCE,
        drain_seconds: float = 20.0,
        claim_idle: float = 30.0,
        max_attempts: int = 5,
        block: float = 1.0,
        consumer: str | None = None,
        secrets: Secrets | None = None,
        tracing: Tracing | None = None,
        metrics: ServiceMetrics | None = None,
        keep_landing: bool = False,
        pool: Literal["auto", "threads"] = "auto",
        stats_interval: float = 2.0,
    ) -> None:
        if concurrency < 1:
            raise ConfigurationError(f"concurrency must be >= 1, got {concurrency}")
        if drain_seconds < 0 or claim_idle <= 0 or block <= 0:
            raise ConfigurationError("drain_seconds >= 0, claim_idle > 0 and block > 0")
        if max_attempts < 1:
            raise ConfigurationError(f"max_attempts must be >= 1, got {max_attempts}")
        self.queue = queue
        self.lake = Path(lake).resolve()
        self.runner: JobRunner = runner or ingest_runner
        self.concurrency = concurrency
        self.limits = limits
        self.drain_seconds = drain_seconds
        self.claim_idle = claim_idle
        self.max_attempts = max_attempts
        self.block = block
        self.consumer = consumer or default_consumer_name()
        self.secrets = secrets or Secrets()
        self.tracing = tracing or Tracing(None)
        self.metrics = metrics or ServiceMetrics()
        self.keep_landing = keep_landing
        self.pool = pool
        self.stats_interval = stats_interval
        # (job id, outcome) of the latest jobs, for callers and tests; bounded for long runs
        self.outcomes: collections.deque[tuple[str, Outcome]] = collections.deque(maxlen=10_000)
        self._progress: set[_Progress] = set()
        self._stop_requested = 0
        self._stop: asyncio.Event | None = None
        self._hurry: asyncio.Event | None = None
        self._closing: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._redis_ok = False
        self._jobs = _JobScope()
        self.metrics.requests_in_flight.set_function(
            lambda: sum(p.in_flight for p in self._progress)
        )

    # -- state -----------------------------------------------------------------------------

    @property
    def draining(self) -> bool:
        return self._stop_requested > 0

    @property
    def ready(self) -> bool:
        """Taking jobs: started, Redis answering, not draining."""
        return self._started and self._redis_ok and not self.draining

    def readiness(self) -> dict[str, bool]:
        return {
            "ready": self.ready,
            "started": self._started,
            "redis": self._redis_ok,
            "draining": self.draining,
        }

    def stop(self) -> None:
        """Begin draining (safe from a signal handler or another thread). A second call
        cancels running jobs at once instead of waiting ``drain_seconds``."""
        self._stop_requested += 1
        self.metrics.draining.set(1)
        self.metrics.ready.set(0)
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._signal_events()
        else:
            loop.call_soon_threadsafe(self._signal_events)

    def _signal_events(self) -> None:
        if self._stop is not None:
            self._stop.set()
        if self._stop_requested > 1 and self._hurry is not None:
            self._hurry.set()

    # -- main loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Consume until :meth:`stop`, then drain. Returns when no job is running.

        Jobs and background tasks run in scopes: on every way out (drain, a second stop, an
        unexpected error in the loop or a background task, cancellation from outside) each
        job has either finished and been acknowledged or been cancelled unacknowledged and
        released for a peer, and no task of this worker outlives the call. An unexpected
        error ends the call with that error (not wrapped in an exception group).
        """
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._hurry = asyncio.Event()
        self._closing = asyncio.Event()
        if self._stop_requested:
            self._signal_events()
        try:
            async with asyncio.TaskGroup() as background:
                tasks = [
                    background.create_task(self._watch_loop_lag(), name="scfeeds-loop-lag"),
                    background.create_task(self._poll_stats(), name="scfeeds-queue-stats"),
                    background.create_task(self._heartbeat(), name="scfeeds-heartbeat"),
                ]
                try:
                    await self._start()
                    self._update_ready()
                    await self._consume()
                    await self._drain()
                finally:
                    # the background loops also return at their next step once this is set,
                    # so a cancellation lost inside a Redis call cannot keep them alive
                    self._closing.set()
                    await self._close_jobs()
                for t in tasks:
                    t.cancel()
        except BaseExceptionGroup as group:
            raise sole_error(group) from None
        finally:
            self.metrics.ready.set(0)
            logger.info("worker %s stopped", self.consumer)

    async def _close_jobs(self) -> None:
        """Leave no job running: cancel (unacknowledged) and release what is still running."""
        cancelled = await self._jobs.close()
        if cancelled:
            logger.warning(
                "worker stopping: cancelled %d job(s), not acknowledged; released for redelivery",
                len(cancelled),
            )
            await self._release(cancelled)

    async def _start(self) -> None:
        from redis.exceptions import RedisError

        assert self._stop is not None
        delay = 0.2
        while not self._stop.is_set():
            try:
                await self.queue.ensure_group()
                self._redis_ok = True
                break
            except (RedisError, OSError) as exc:
                self.metrics.redis_errors.inc()
                logger.warning("queue not reachable (%s); retrying in %.1f s", describe(exc), delay)
                await self._sleep_or_stop(delay)
                delay = min(delay * 2, 5.0)
        self._started = True
        self.lake.mkdir(parents=True, exist_ok=True)
        logger.info(
            "worker %s consuming %s (group %s), lake %s, concurrency %d",
            self.consumer,
            self.queue.stream,
            self.queue.group,
            self.lake,
            self.concurrency,
        )

    def _update_ready(self) -> None:
        self.metrics.ready.set(1 if self.ready else 0)

    async def _sleep_or_stop(self, seconds: float) -> None:
        assert self._stop is not None
        await _wait_any((), self._stop, seconds)

    async def _pause(self, seconds: float) -> bool:
        """Sleep in a background loop; False once the worker is closing (the loop returns)."""
        assert self._closing is not None
        await _wait_any((), self._closing, seconds)
        return not self._closing.is_set()

    async def _consume(self) -> None:
        from redis.exceptions import RedisError

        assert self._stop is not None
        reclaim_every = min(max(self.claim_idle / 4, 0.05), 5.0)
        next_reclaim = 0.0
        delay = 0.2
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            free = self.concurrency - len(self._jobs)
            if free <= 0:
                await _wait_any(self._jobs.tasks, self._stop)
                continue
            try:
                deliveries: list[Delivery] = []
                if loop.time() >= next_reclaim:
                    next_reclaim = loop.time() + reclaim_every
                    deliveries = await self.queue.reclaim(
                        self.consumer, min_idle=self.claim_idle, count=free
                    )
                    for d in deliveries:
                        logger.info(
                            "reclaimed job %s (delivery %d)",
                            d.job.id if d.job else d.msg_id,
                            d.deliveries,
                        )
                if not deliveries:
                    block = min(self.block, max(next_reclaim - loop.time(), 0.01))
                    deliveries = await self.queue.read(self.consumer, count=free, block=block)
                self._redis_ok = True
                delay = 0.2
            except (RedisError, OSError) as exc:
                self._redis_ok = False
                self._update_ready()
                self.metrics.redis_errors.inc()
                logger.warning("queue read failed (%s); retrying in %.1f s", describe(exc), delay)
                await self._sleep_or_stop(delay)
                delay = min(delay * 2, 5.0)
                if "NOGROUP" in str(exc):
                    # the stream or its group vanished (failover to an empty replica, a flush):
                    # recreate them, or this worker would wait forever on a group nobody makes
                    with contextlib.suppress(RedisError, OSError):
                        await self.queue.ensure_group()
                        logger.warning("recreated stream %s and group", self.queue.stream)
                continue
            finally:
                self._update_ready()
            if self._stop.is_set() and deliveries:
                # read raced with stop: hand these back untouched, a peer takes them at once
                await self._release([d.msg_id for d in deliveries])
                break
            for d in deliveries:
                self._jobs.start(d, self._handle(d))

    async def _drain(self) -> None:
        """Give running jobs ``drain_seconds`` (cut short by a second stop); the rest are
        cancelled and released by :meth:`_close_jobs`."""
        assert self._hurry is not None
        if not self._jobs:
            return
        logger.info(
            "draining: %d job(s) running, up to %.1f s", len(self._jobs), self.drain_seconds
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_seconds
        while self._jobs and not self._hurry.is_set():
            left = deadline - loop.time()
            if left <= 0:
                break
            await _wait_any(self._jobs.tasks, self._hurry, seconds=left)

    async def _release(self, msg_ids: list[str]) -> None:
        from redis.exceptions import RedisError

        try:
            await self.queue.release(self.consumer, msg_ids, idle=self.claim_idle)
        except (RedisError, OSError) as exc:  # they will be reclaimed after claim_idle anyway
            self.metrics.redis_errors.inc()
            logger.warning("could not release %d job(s): %s", len(msg_ids), describe(exc))

    # -- one job ---------------------------------------------------------------------------

    def _job_lake(self, job: Job) -> Path:
        if job.lake is None:
            return self.lake
        path = Path(job.lake)
        resolved = (path if path.is_absolute() else self.lake / path).resolve()
        if resolved != self.lake and self.lake not in resolved.parents:
            raise ConfigurationError(
                f"job lake {job.lake!r} is outside this worker's lake root {self.lake}"
            )
        return resolved

    def _record(self, job_id: str, outcome: Outcome) -> None:
        self.metrics.jobs.inc(outcome=outcome)
        self.outcomes.append((job_id, outcome))

    async def _handle(self, d: Delivery) -> None:
        """One job: admit it, run it in its span, then acknowledge, requeue or dead-letter.
        Its raw downloads are removed once it succeeded (unless ``keep_landing``)."""
        admitted = await self._admit(d)
        if admitted is None:
            return
        job, lake = admitted
        landing = lake / "_landing" / "jobs" / job.id  # ids are checked path-safe (Job)
        progress = _Progress(self.metrics)
        ctx = JobContext(
            lake=lake,
            landing=landing,
            secrets=self.secrets,
            progress=progress,
            limits=self.limits,
            pool=self.pool,
        )
        t0 = time.perf_counter()
        with self._span(d, job) as span:
            result = await self._run_job(d, job, ctx, progress, span, t0)
            if result is None or not await self._settle(d, job, span, result, t0):
                return
        if not self.keep_landing:
            await asyncio.to_thread(shutil.rmtree, landing, True)

    async def _dead_letter(self, d: Delivery, job_id: str, reason: str, outcome: Outcome) -> None:
        await self._finish(lambda: self.queue.dead_letter(d, reason=reason, consumer=self.consumer))
        self._record(job_id, outcome)

    async def _admit(self, d: Delivery) -> tuple[Job, Path] | None:
        """The job and its lake, or ``None`` once a malformed, exhausted or misdirected job
        has been dead-lettered."""
        if d.job is None:
            logger.error("job message %s rejected: %s", d.msg_id, d.error)
            await self._dead_letter(
                d, d.fields.get("id", d.msg_id), f"rejected: {d.error}", "rejected"
            )
            return None
        job = d.job
        if d.attempt > self.max_attempts:
            reason = (
                f"gave up after {d.attempt - 1} attempts ({d.deliveries} deliveries of this "
                f"message); last error: {job.last_error or 'worker died or was cancelled'}"
            )
            logger.error("job %s dead-lettered: %s", job.id, reason)
            await self._dead_letter(d, job.id, reason, "dead_lettered")
            return None
        try:
            return job, self._job_lake(job)
        except ConfigurationError as exc:
            reason = f"rejected: {exc}"
            logger.error("job %s %s", job.id, reason)
            await self._dead_letter(d, job.id, reason, "rejected")
            return None

    def _span(self, d: Delivery, job: Job) -> AbstractContextManager[trace.Span]:
        """The job's consumer span, a child of the span that enqueued it."""
        attrs: dict[str, str | int] = {
            "scfeeds.job.id": job.id,
            "scfeeds.job.attempt": d.attempt,
            "scfeeds.job.sources": len(job.sources),
            "messaging.system": "redis",
            "messaging.operation.type": "process",
            "messaging.destination.name": self.queue.stream,
            "messaging.consumer.group.name": self.queue.group,
            "messaging.message.id": d.msg_id,
            "messaging.message.delivery_count": d.deliveries,
        }
        return self.tracing.tracer.start_as_current_span(
            "scfeeds.job",
            context=extract(job.trace),
            kind=SpanKind.CONSUMER,
            attributes=attrs,
            record_exception=False,
            set_status_on_exception=False,
        )

    async def _run_job(
        self,
        d: Delivery,
        job: Job,
        ctx: JobContext,
        progress: _Progress,
        span: trace.Span,
        t0: float,
    ) -> JobResult | None:
        """The runner's result, or ``None`` once its failure has been requeued or
        dead-lettered. A cancellation (drain) propagates: the job is not acknowledged."""
        task = asyncio.current_task()
        self._progress.add(progress)
        self.metrics.jobs_in_flight.inc()
        logger.info("job %s started: %d source(s), attempt %d", job.id, len(job.sources), d.attempt)
        try:
            result = await self.runner(job, ctx)
        except asyncio.CancelledError:
            span.set_attribute("scfeeds.job.outcome", "cancelled")
            span.set_status(Status(StatusCode.ERROR, "cancelled by drain"))
            self._record(job.id, "cancelled")
            logger.warning("job %s cancelled (not acknowledged)", job.id)
            raise
        except Exception as exc:
            err = self.secrets.redact(describe(exc))
            span.set_status(Status(StatusCode.ERROR, err))
            span.add_event(
                "exception", {"exception.type": type(exc).__name__, "exception.message": err}
            )
            self._jobs.committed(task)
            await self._after_failure(d, job, span, err)
            return None
        finally:
            self.metrics.jobs_in_flight.dec()
            self._progress.discard(progress)
            self.metrics.job_seconds.observe(time.perf_counter() - t0)
        # the runner returned: its documents are in the lake's ledger; acknowledge
        # even if a drain deadline passes, so a finished job is not run again
        self._jobs.committed(task)
        return result

    async def _settle(
        self, d: Delivery, job: Job, span: trace.Span, result: JobResult, t0: float
    ) -> bool:
        """Count what the runner did and acknowledge it (True), or requeue the sources that
        failed (False)."""
        for status, n in result.sources.items():
            self.metrics.sources.inc(n, status=status)
        for table, n in result.rows.items():
            self.metrics.rows.inc(n, table=table)
        span.set_attribute("scfeeds.job.committed", result.committed)
        span.set_attribute("scfeeds.job.failed_sources", len(result.failed))
        if result.failed:
            await self._after_partial(d, job, span, result)
            return False
        await self._finish(lambda: self.queue.ack(d))
        span.set_attribute("scfeeds.job.outcome", "succeeded")
        self._record(job.id, "succeeded")
        logger.info(
            "job %s succeeded in %.2f s: %d batch(es) committed",
            job.id,
            time.perf_counter() - t0,
            result.committed,
        )
        return True

    async def _after_failure(self, d: Delivery, job: Job, span: trace.Span, err: str) -> None:
        if d.attempt >= self.max_attempts:
            logger.error("job %s failed on its last attempt %d: %s", job.id, d.attempt, err)
            await self._finish(
                lambda: self.queue.dead_letter(
                    d,
                    reason=f"failed {d.attempt} times; last error: {err}",
                    consumer=self.consumer,
                    job=job.retry(error=err),
                )
            )
            span.set_attribute("scfeeds.job.outcome", "dead_lettered")
            self._record(job.id, "dead_lettered")
            return
        logger.warning("job %s failed (attempt %d), requeued: %s", job.id, d.attempt, err)
        await self._finish(lambda: self.queue.requeue(d, job.retry(error=err)))
        span.set_attribute("scfeeds.job.outcome", "failed")
        self._record(job.id, "failed")

    async def _after_partial(
        self, d: Delivery, job: Job, span: trace.Span, result: JobResult
    ) -> None:
        err = f"{len(result.failed)} of {len(job.sources)} source(s) failed to fetch"
        nxt = job.retry(sources=result.failed, error=err)
        if d.attempt >= self.max_attempts:
            logger.error("job %s: %s on its last attempt; dead-lettered", job.id, err)
            await self._finish(
                lambda: self.queue.dead_letter(d, reason=err, consumer=self.consumer, job=nxt)
            )
        else:
            logger.warning("job %s: %s; requeued those", job.id, err)
            await self._finish(lambda: self.queue.requeue(d, nxt))
        span.set_attribute("scfeeds.job.outcome", "partial")
        self._record(job.id, "partial")

    async def _finish(self, op: Callable[[], Awaitable[object]]) -> None:
        """Run an ack/requeue/dead-letter; if Redis fails, the job stays pending and is
        reclaimed and re-run later (idempotent), so an error here is logged, not raised."""
        from redis.exceptions import RedisError

        for attempt in range(3):
            try:
                await op()
                return
            except (RedisError, OSError) as exc:
                self.metrics.redis_errors.inc()
                logger.warning("queue update failed (%s), try %d/3", describe(exc), attempt + 1)
                await asyncio.sleep(0.2 * 2**attempt)

    # -- background ------------------------------------------------------------------------

    async def _watch_loop_lag(self, interval: float = 0.25) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            if not await self._pause(interval):
                return
            lag = max(0.0, loop.time() - t - interval)
            self.metrics.loop_lag.set(lag)
            self.metrics.loop_lag_hist.observe(lag)

    async def _poll_stats(self) -> None:
        from redis.exceptions import RedisError

        last_prune = 0.0
        while True:
            try:
                s = await self.queue.stats()
                m = self.metrics
                m.queue_up.set(1)
                m.queue_length.set(s.length)
                m.queue_lag.set(s.lag if s.lag is not None else s.length - s.pending)
                m.queue_pending.set(s.pending)
                m.queue_dead.set(s.dead)
                m.queue_consumers.set(s.consumers)
                if time.monotonic() - last_prune > 600:
                    last_prune = time.monotonic()
                    gone = await self.queue.prune_consumers(keep=self.consumer, idle=3600)
                    if gone:
                        logger.info("removed %d idle consumer(s) from the group", len(gone))
            except (RedisError, OSError) as exc:
                self.metrics.queue_up.set(0)
                self.metrics.redis_errors.inc()
                logger.debug("queue stats failed: %s", describe(exc))
            if not await self._pause(self.stats_interval):
                return

    async def _heartbeat(self) -> None:
        from redis.exceptions import RedisError

        while await self._pause(self.claim_idle / 3):
            ids = [d.msg_id for d in self._jobs.deliveries()]
            if not ids:
                continue
            try:
                await self.queue.touch(self.consumer, ids)
            except (RedisError, OSError) as exc:
                self.metrics.redis_errors.inc()
                logger.warning("heartbeat failed: %s", describe(exc))
