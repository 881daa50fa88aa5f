"""``scfeeds worker`` and ``scfeeds enqueue``: the service mode's two commands.

Nothing here imports redis or OpenTelemetry at module level, so registering the commands
costs nothing; the handlers import them and say which extra to install when they are missing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import urllib.request
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from scfeeds._config import DEFAULT_MAX_AT_ONCE

if TYPE_CHECKING:
    from scfeeds._service._job import Source
    from scfeeds._service._secrets import Secrets
    from scfeeds._service._worker import JobRunner

DEFAULT_QUEUE = "redis://127.0.0.1:6379/0"
logger = logging.getLogger("scfeeds.service")


def _queue_default() -> str:
    return os.environ.get("SCFEEDS_QUEUE", DEFAULT_QUEUE)


def _shown(url: str) -> str:
    """A Redis URL without its password, for logs."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _need_extra() -> None:
    try:
        import opentelemetry.sdk  # noqa: F401
        import redis  # noqa: F401
    except ImportError as exc:
        # builtin-raise: the CLI exits with this message
        raise SystemExit(
            f"scfeeds: service mode needs the 'service' extra ({exc.name} is missing): "
            "pip install 'scfeeds[service]'"
        ) from None


def add_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``worker``, ``enqueue`` and ``dead-letters`` on the ``scfeeds`` command's
    subparsers."""
    _add_worker(subparsers)
    _add_enqueue(subparsers)
    _add_dead_letters(subparsers)


def _add_worker(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "worker",
        help="service mode: ingest jobs from a Redis Stream (health, metrics, SIGTERM drain)",
        description="Consume ingest jobs from a Redis Stream consumer group and commit them to "
        "the lake; acknowledge each job only after its commit. Serves /livez, /readyz and "
        "/metrics. SIGTERM drains: readiness 503, running jobs get --drain-seconds, the rest "
        "are released unacknowledged for another worker. Bearer tokens come from "
        "SCFEEDS_TOKEN or a secrets file, never from jobs.",
    )
    _queue_args(p)
    p.add_argument("--lake", required=True, help="lake root (jobs may name sub-folders only)")
    p.add_argument(
        "--health-host",
        default="127.0.0.1",
        help="probe/metrics listener (0.0.0.0 in a pod; default 127.0.0.1)",
    )
    p.add_argument("--health-port", type=int, default=8081, help="0 picks a free port")
    p.add_argument("--concurrency", type=int, default=2, help="jobs at once (default 2)")
    p.add_argument(
        "--requests-per-job",
        type=int,
        default=DEFAULT_MAX_AT_ONCE,
        help=f"max HTTP requests at once within one job (default {DEFAULT_MAX_AT_ONCE})",
    )
    p.add_argument(
        "--drain-seconds",
        type=float,
        default=20.0,
        help="after SIGTERM, time running jobs get before they are cancelled "
        "(default 20, below Kubernetes' 30 s grace period)",
    )
    p.add_argument(
        "--claim-idle",
        type=float,
        default=30.0,
        help="seconds before a silent worker's job is reclaimed (default 30)",
    )
    p.add_argument(
        "--max-attempts",
        type=int,
        default=5,
        help="attempts before a job goes to the dead-letter stream (default 5)",
    )
    p.add_argument(
        "--secrets",
        default=None,
        help="JSON file of bearer tokens by host (default $SCFEEDS_SECRETS_FILE)",
    )
    p.add_argument(
        "--otel",
        choices=("none", "console", "otlp"),
        default=None,
        help="trace exporter (default $OTEL_TRACES_EXPORTER or none)",
    )
    p.add_argument(
        "--parse-pool",
        choices=("auto", "threads"),
        default="auto",
        help="auto: processes for XML, threads otherwise; threads: threads only",
    )
    p.add_argument(
        "--keep-landing",
        action="store_true",
        help="keep each job's raw downloads after it succeeded",
    )
    p.add_argument(
        "--runner",
        default=None,
        metavar="MODULE:FUNCTION",
        help="job runner `async (job, ctx) -> JobResult` (default: scfeeds ingest)",
    )
    p.add_argument("--log-level", default=os.environ.get("SCFEEDS_LOG_LEVEL", "INFO"))
    p.set_defaults(func=cmd_worker)


def _add_enqueue(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "enqueue",
        help="service mode: put ingest jobs on the Redis Stream",
        description="Enqueue ingest jobs. A portal root URL is expanded into its feed listing; "
        "sources are split into jobs of --per-job each. Prints one job id per line.",
    )
    _queue_args(p)
    p.add_argument("sources", nargs="+", help="portal root URL or feed URLs")
    p.add_argument("--lake", default=None, help="lake (inside the workers' lake root)")
    p.add_argument("--per-job", type=int, default=50, help="sources per job (default 50)")
    p.add_argument("--secrets", default=None, help="tokens for reading a portal listing")
    p.add_argument("--otel", choices=("none", "console", "otlp"), default=None)
    p.set_defaults(func=cmd_enqueue)


def _add_dead_letters(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "dead-letters",
        help="service mode: list dead-lettered jobs, or --replay them",
        description="Show the oldest jobs of the dead-letter stream (job id, attempts, reason); "
        "with --replay, put them back on the job stream as fresh jobs (attempt 1).",
    )
    _queue_args(p)
    p.add_argument("--count", type=int, default=100, help="at most this many (default 100)")
    p.add_argument("--replay", action="store_true", help="requeue them as fresh jobs")
    p.set_defaults(func=cmd_dead_letters)


def _queue_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--queue",
        default=_queue_default(),
        help=f"Redis URL (default $SCFEEDS_QUEUE or {DEFAULT_QUEUE})",
    )
    p.add_argument("--stream", default="scfeeds:jobs")
    p.add_argument("--group", default="scfeeds-workers")


def _setup_logging(level: str, secrets: Any) -> None:
    from scfeeds._service._secrets import RedactingFilter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


# -- worker --------------------------------------------------------------------------------


def cmd_worker(args: argparse.Namespace) -> int:
    _need_extra()
    from scfeeds._service._secrets import Secrets
    from scfeeds.exceptions import ConfigurationError

    try:
        secrets = Secrets.load(path=args.secrets)
    except ConfigurationError as exc:
        print(f"scfeeds worker: {exc}", file=sys.stderr)
        return 2
    _setup_logging(args.log_level, secrets)
    try:
        return asyncio.run(serve_worker(args, secrets))
    except ConfigurationError as exc:
        logger.error("%s", exc)
        return 2


async def serve_worker(args: argparse.Namespace, secrets: Secrets) -> int:
    """Run one worker with its health server until SIGTERM/SIGINT and the drain are over."""
    from scfeeds._service._health import HealthServer
    from scfeeds._service._metrics import ServiceMetrics
    from scfeeds._service._queue import JobQueue
    from scfeeds._service._tracing import Tracing
    from scfeeds._service._worker import Worker

    tracing = Tracing.configure(args.otel)
    metrics = ServiceMetrics()
    queue = JobQueue(args.queue, stream=args.stream, group=args.group)
    worker = Worker(
        queue,
        args.lake,
        runner=load_runner(args.runner) if args.runner else None,
        concurrency=args.concurrency,
        limits=args.requests_per_job,
        drain_seconds=args.drain_seconds,
        claim_idle=args.claim_idle,
        max_attempts=args.max_attempts,
        secrets=secrets,
        tracing=tracing,
        metrics=metrics,
        keep_landing=args.keep_landing,
        pool=args.parse_pool,
    )
    loop = asyncio.get_running_loop()

    def on_signal(signame: str) -> None:
        logger.info("%s received: draining (again to cancel running jobs now)", signame)
        worker.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    try:
        async with HealthServer(
            worker, metrics, host=args.health_host, port=args.health_port
        ) as health:
            logger.info(
                "worker %s: queue %s stream %s; health on %s (/livez /readyz /metrics)",
                worker.consumer,
                _shown(args.queue),
                args.stream,
                health.url,
            )
            await worker.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await queue.aclose()
        # flush spans last: the drain's cancellations are part of the trace
        await asyncio.to_thread(tracing.shutdown)
    return 0


def load_runner(spec: str) -> JobRunner:
    """``"package.module:function"`` -> the function (a custom job runner)."""
    import importlib

    from scfeeds.exceptions import ConfigurationError

    module, _, name = spec.partition(":")
    if not module or not name:
        raise ConfigurationError(f"--runner must look like package.module:function, not {spec!r}")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"cannot load runner {spec!r}: {exc}") from None
    if not callable(fn):
        raise ConfigurationError(f"runner {spec!r} is not callable")
    runner: JobRunner = fn
    return runner


# -- enqueue -------------------------------------------------------------------------------


class _KeepCredentialsAtHome(urllib.request.HTTPRedirectHandler):
    """urllib copies every header to a redirect's target, Authorization included; a
    redirect to another origin (scheme, host, port) gets none of the secret ones."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        from scfeeds._fetch._credentials import origin_of
        from scfeeds._redact import SECRET_HEADERS

        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and origin_of(newurl) != origin_of(req.full_url):
            for name in [h for h in new.headers if h.lower() in SECRET_HEADERS]:
                new.remove_header(name)
        return new


def _listing(url: str, headers: dict[str, str] | None) -> list[dict[str, Any]]:
    req = urllib.request.Request(f"{url.rstrip('/')}/v1/feeds", headers=headers or {})
    opener = urllib.request.build_opener(_KeepCredentialsAtHome)
    with opener.open(req, timeout=30) as resp:
        data: dict[str, Any] = json.load(resp)
    feeds: list[dict[str, Any]] = data["feeds"]
    return feeds


def expand_sources(sources: list[str], secrets: Secrets) -> list[Source]:
    """Portal roots become their listing rows; feed URLs stay as they are."""
    out: list[Source] = []
    for s in sources:
        parts = urlsplit(s)
        if parts.scheme in ("http", "https") and parts.path.rstrip("/") in ("", "/v1/feeds"):
            root = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
            out.extend(_listing(root, secrets.headers_for(root)))
        else:
            out.append(s)
    return out


def cmd_enqueue(args: argparse.Namespace) -> int:
    _need_extra()
    from scfeeds._service._job import JobError
    from scfeeds._service._secrets import Secrets

    secrets = Secrets.load(path=args.secrets)
    _setup_logging("WARNING", secrets)
    try:
        ids = asyncio.run(enqueue_sources(args, secrets))
    except JobError as exc:
        print(f"scfeeds enqueue: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # urllib's URLError/HTTPError and redis' connection errors
        print(f"scfeeds enqueue: {secrets.redact(str(exc))}", file=sys.stderr)
        return 1
    for job_id in ids:
        print(job_id)
    return 0


async def enqueue_sources(args: argparse.Namespace, secrets: Secrets) -> list[str]:
    from opentelemetry.trace import SpanKind

    from scfeeds._service._job import Job, split_jobs
    from scfeeds._service._queue import JobQueue
    from scfeeds._service._tracing import Tracing, inject_current

    tracing = Tracing.configure(args.otel, service_name="scfeeds-enqueue")
    sources = await asyncio.to_thread(expand_sources, args.sources, secrets)
    jobs = split_jobs(sources, per_job=args.per_job, lake=args.lake)
    try:
        with tracing.tracer.start_as_current_span(
            "scfeeds.enqueue", kind=SpanKind.PRODUCER, attributes={"scfeeds.jobs": len(jobs)}
        ):
            carrier = inject_current()
            jobs = [Job(id=j.id, sources=j.sources, lake=j.lake, trace=carrier) for j in jobs]
            async with JobQueue(args.queue, stream=args.stream, group=args.group) as queue:
                await queue.ensure_group()
                await queue.enqueue(jobs)
    finally:
        tracing.shutdown()
    return [j.id for j in jobs]


def cmd_dead_letters(args: argparse.Namespace) -> int:
    _need_extra()
    from scfeeds._service._queue import JobQueue

    async def go() -> list[str]:
        async with JobQueue(args.queue, stream=args.stream, group=args.group) as queue:
            if args.replay:
                await queue.ensure_group()
                return [f"replayed {i}" for i in await queue.replay_dead(args.count)]
            return [
                f"{f.get('id', '?')}\tattempt {f.get('attempt', '?')}\t{f.get('reason', '')}"
                for _, f in await queue.dead_letters(args.count)
            ]

    try:
        lines = asyncio.run(go())
    except OSError as exc:
        print(f"scfeeds dead-letters: {exc}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m scfeeds._service worker|enqueue ...`` (the same as ``scfeeds worker``)."""
    parser = argparse.ArgumentParser(prog="python -m scfeeds._service")
    sub = parser.add_subparsers(dest="command", required=True)
    add_cli(sub)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code
