"""Service mode over a real redis-server and the real portal on loopback.

Worker processes are real (``python -m scfeeds._service worker``) where the test is about the
process: SIGKILL mid-job, SIGTERM drain with its probes and exit code. Elsewhere two
:class:`Worker` instances run on separate event loops in threads, so their outcomes, metrics
and spans can be observed in-process.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from scfeeds._lake import read_ledger, scan_lake
from scfeeds._service._health import HealthServer
from scfeeds._service._job import Job, JobError, split_jobs
from scfeeds._service._metrics import ServiceMetrics
from scfeeds._service._queue import JobQueue
from scfeeds._service._secrets import Secrets
from scfeeds._service._tracing import Tracing, inject_current
from scfeeds._service._worker import JobContext, JobResult, Worker
from scfeeds.portal import serve_in_thread
from tests.service_support import (
    ThreadWorker,
    wait_until,
)
from tests.web_support import listing

ROOT = Path(__file__).resolve().parents[1]
SUPPORT = "tests.service_support"


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(make_world: Callable[..., Path]) -> Path:
    return make_world(seed=11, suppliers=2, pos=12, formats=("csv", "x12"))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _with_queue(url: str, stream: str, fn: Any) -> Any:
    async with JobQueue(url, stream=stream) as q:
        await q.ensure_group()
        return await fn(q)


def enqueue(url: str, stream: str, jobs: list[Job]) -> None:
    run(_with_queue(url, stream, lambda q: q.enqueue(jobs)))


def stats(url: str, stream: str) -> Any:
    return run(_with_queue(url, stream, lambda q: q.stats()))


def dead(url: str, stream: str) -> list[tuple[str, dict[str, str]]]:
    return run(_with_queue(url, stream, lambda q: q.dead_letters()))  # type: ignore[no-any-return]


def ledger_size(lake: Path) -> int:
    try:
        return read_ledger(lake).height
    except Exception:  # being created right now
        return 0


def assert_lake_exactly_once(lake: Path, feeds: list[dict[str, Any]]) -> None:
    """Every distinct feed content committed once; the lake's rows are those commits' rows."""
    ledger = read_ledger(lake)
    shas = ledger["sha256"].to_list()
    assert len(shas) == len(set(shas)), "a content was committed under two batch ids"
    assert set(shas) == {f["sha256"] for f in feeds}
    frames = [
        scan_lake(lake, t).collect() for t in ("po_lines", "asn_lines", "invoice_lines", "receipts")
    ]
    total = sum(f.height for f in frames)
    assert total == int(ledger["rows"].sum()) > 0
    # no row twice (rows carry their source and position, so real duplicates would show)
    every = pl.concat(frames, how="diagonal_relaxed")
    assert every.unique().height == every.height


def worker_factory(url: str, stream: str, lake: Path, **kw: Any) -> Any:
    kw.setdefault("claim_idle", 2.0)
    kw.setdefault("block", 0.2)
    kw.setdefault("pool", "threads")
    kw.setdefault("stats_interval", 0.2)
    kw.setdefault("drain_seconds", 5.0)

    def make() -> Worker:
        return Worker(JobQueue(url, stream=stream), lake, **kw)

    return make


def stream_name(request: pytest.FixtureRequest) -> str:
    return f"test:{request.node.name}"


# -- job messages, metrics text, secrets (no server) ------------------------------------------


def test_job_message_round_trip_keeps_only_listing_keys() -> None:
    row = {"url": "http://127.0.0.1:1/v1/feeds/a", "format": "csv", "body": "x" * 10}
    job = Job(sources=["http://127.0.0.1:1/v1/feeds/b", row], lake="sub", trace={"a": "b"})
    back = Job.from_fields(job.to_fields())
    assert back.id == job.id
    assert back.lake == "sub"
    assert back.attempt == 1
    assert back.sources[1] == {"url": row["url"], "format": "csv"}  # the body never travels
    assert back.trace == {}  # only W3C keys survive
    nxt = back.retry(sources=back.sources[:1], error="boom")
    assert (nxt.id, nxt.attempt, nxt.last_error, len(nxt.sources)) == (job.id, 2, "boom", 1)


@pytest.mark.parametrize(
    ("source", "rule"),
    [
        ("file:///etc/passwd", "http"),
        ("http://user:pw@host/x", "credentials"),
        ("http://host/x?access_token=abc", "secret"),
        ({"format": "csv"}, "'url'"),
        (b"raw bytes", "expected a URL"),
    ],
)
def test_job_refuses_bodies_credentials_and_non_urls(source: Any, rule: str) -> None:
    with pytest.raises(JobError, match=rule):
        Job(sources=[source])


@pytest.mark.parametrize("job_id", ["..", ".hidden", "a/b", "", "x" * 129, "a\\b"])
def test_job_ids_are_path_safe(job_id: str) -> None:
    with pytest.raises(JobError, match="job id"):
        Job(id=job_id, sources=["http://127.0.0.1:1/a"])


@pytest.mark.parametrize(
    ("fields", "rule"),
    [
        ({"id": "x"}, "no 'job' field"),
        ({"job": "{not json"}, "not JSON"),
        ({"job": json.dumps({"v": 99})}, "version"),
        ({"job": json.dumps({"v": 1, "id": "x", "sources": "http://h/a"})}, "list"),
        ({"job": "x" * (1 << 21)}, "limit"),
    ],
)
def test_malformed_messages_name_the_rule(fields: dict[str, str], rule: str) -> None:
    with pytest.raises(JobError, match=rule):
        Job.from_fields(fields)


def test_split_jobs_and_oversized_job() -> None:
    urls = [f"http://127.0.0.1:1/v1/feeds/{i}" for i in range(7)]
    jobs = split_jobs(urls, per_job=3)
    assert [len(j.sources) for j in jobs] == [3, 3, 1]
    assert len({j.id for j in jobs}) == 3
    huge = Job(sources=[f"http://127.0.0.1:1/{'x' * 1000}/{i}" for i in range(1200)])
    with pytest.raises(JobError, match="pointers, not data"):
        huge.to_fields()


def test_metrics_text_format() -> None:
    m = ServiceMetrics()
    m.jobs.inc(outcome="succeeded")
    m.rows.inc(5, table='po"lines\n')
    m.job_seconds.observe(0.3)
    m.job_seconds.observe(700)
    text = m.render()
    assert "# TYPE scfeeds_jobs_total counter\n" in text
    assert 'scfeeds_jobs_total{outcome="succeeded"} 1\n' in text
    assert 'scfeeds_jobs_total{outcome="cancelled"} 0\n' in text
    assert 'scfeeds_lake_rows_total{table="po\\"lines\\n"} 5\n' in text
    assert 'scfeeds_job_duration_seconds_bucket{le="0.25"} 0\n' in text
    assert 'scfeeds_job_duration_seconds_bucket{le="0.5"} 1\n' in text
    assert 'scfeeds_job_duration_seconds_bucket{le="+Inf"} 2\n' in text
    assert "scfeeds_job_duration_seconds_count 2\n" in text
    for line in text.splitlines():  # every sample line is `name{labels} number`
        if not line.startswith("#"):
            assert re.fullmatch(r"[a-z_]+(\{.*\})? (-?[0-9.e+]+|\+Inf|NaN)", line), line
    with pytest.raises(ValueError, match="only goes up"):
        m.bytes.inc(-1)


def test_secrets_from_env_and_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": {"127.0.0.1:8080": "tok-host", "*": "tok-any"}}))
    s = Secrets.load(path=path, environ={"SCFEEDS_TOKEN": "tok-env"})
    assert s.token_for("http://127.0.0.1:8080/v1/feeds/a") == "tok-host"
    assert s.token_for("http://127.0.0.1:9/v1/feeds/a") == "tok-any"  # file wins over env
    assert "tok" not in repr(s)
    assert s.redact("Bearer tok-host failed") == "Bearer *** failed"
    path.write_text('{"tokens": {"h": "tok-123"')  # broken JSON must not be echoed
    with pytest.raises(ValueError, match="not valid JSON") as info:
        Secrets.load(path=path, environ={})
    assert "tok-123" not in str(info.value)


def test_import_scfeeds_does_not_import_service_dependencies() -> None:
    # the core never touches service mode; registering its commands costs no heavy import
    code = (
        "import sys, scfeeds; "
        "core = sorted(m for m in sys.modules if m.startswith('scfeeds._service')); "
        "import argparse, scfeeds._service, scfeeds.cli; "
        "scfeeds._service.add_cli(argparse.ArgumentParser().add_subparsers()); "
        "scfeeds.cli.build_parser(); "
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('redis', 'opentelemetry')); "
        "print(core, heavy); sys.exit(1 if core or heavy else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


# -- the queue ---------------------------------------------------------------------------------


def test_heartbeat_keeps_a_slow_job_and_release_hands_it_over(
    redis_url: str, request: pytest.FixtureRequest
) -> None:
    async def go() -> None:
        async with JobQueue(redis_url, stream=stream_name(request)) as q:
            await q.ensure_group()
            await q.enqueue([Job(sources=["http://127.0.0.1:1/a"])])
            (d,) = await q.read("a", count=5, block=0.1)
            assert d.deliveries == 1
            assert d.attempt == 1
            for _ in range(4):  # 0.4 s of work with a heartbeat every 0.1 s
                await asyncio.sleep(0.1)
                assert await q.touch("a", [d.msg_id]) == [d.msg_id]
            assert await q.reclaim("b", min_idle=0.3, count=5) == []  # alive: not stolen
            await asyncio.sleep(0.35)
            (again,) = await q.reclaim("b", min_idle=0.3, count=5)  # silent: reclaimed
            assert again.msg_id == d.msg_id
            assert again.deliveries == 2
            assert again.attempt == 2
            assert await q.touch("a", [d.msg_id]) == []  # a no longer owns it
            await q.release("b", [d.msg_id], idle=60)
            (third,) = await q.reclaim("c", min_idle=60, count=5)  # released: taken at once
            assert third.msg_id == d.msg_id
            s = await q.stats()
            assert (s.length, s.lag, s.pending) == (1, 0, 1)
            await q.ack(third)
            s = await q.stats()
            assert (s.length, s.lag, s.pending, s.dead) == (0, 0, 0, 0)

    run(go())


# -- workers, in-process -----------------------------------------------------------------------


def test_two_workers_land_every_job_exactly_once(
    redis_url: str, world: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    stream = stream_name(request)
    lake = tmp_path / "lake"
    with serve_in_thread(world, latency=0.05, access_log=False) as portal:
        feeds = listing(portal.url)
        jobs = split_jobs(feeds, per_job=2)
        a = ThreadWorker(worker_factory(redis_url, stream, lake, concurrency=1))
        b = ThreadWorker(worker_factory(redis_url, stream, lake, concurrency=1))
        with a, b:
            wait_until(lambda: a.worker.ready and b.worker.ready)  # both compete from the start
            enqueue(redis_url, stream, jobs)
            wait_until(lambda: len(a.worker.outcomes) + len(b.worker.outcomes) >= len(jobs), 40)
            wait_until(lambda: stats(redis_url, stream).length == 0, 5)
    done = [*a.worker.outcomes, *b.worker.outcomes]
    assert sorted(done) == sorted((j.id, "succeeded") for j in jobs)  # each once, all ok
    assert a.worker.outcomes
    assert b.worker.outcomes
    # every distinct content committed by exactly one of them (identical files share a batch)
    committed = sum(w.worker.metrics.sources.value(status="committed") for w in (a, b))
    assert committed == len({f["sha256"] for f in feeds})
    s = stats(redis_url, stream)
    assert (s.length, s.pending, s.dead) == (0, 0, 0)
    assert_lake_exactly_once(lake, feeds)
    assert not (lake / "_landing" / "jobs").exists() or not any(
        (lake / "_landing" / "jobs").iterdir()
    )  # each job's raw downloads removed once committed


def test_jobs_longer_than_the_claim_timeout_are_not_stolen(
    redis_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The heartbeat keeps a live worker's slow jobs: a peer polling with XAUTOCLAIM never
    takes them, so nothing runs twice."""
    stream = stream_name(request)
    runs: list[str] = []

    async def slow(job: Job, ctx: JobContext) -> JobResult:
        runs.append(job.id)
        await asyncio.sleep(1.5)  # 2.5 x the claim timeout
        return JobResult()

    jobs = [Job(sources=["http://127.0.0.1:1/a"]) for _ in range(2)]
    a = ThreadWorker(worker_factory(redis_url, stream, tmp_path, runner=slow, claim_idle=0.6))
    b = ThreadWorker(worker_factory(redis_url, stream, tmp_path, runner=slow, claim_idle=0.6))
    with a, b:
        wait_until(lambda: a.worker.ready and b.worker.ready)
        enqueue(redis_url, stream, jobs)
        wait_until(lambda: len(a.worker.outcomes) + len(b.worker.outcomes) >= 2)
        time.sleep(0.7)  # a late, wrong reclaim would show up here
    assert sorted(runs) == sorted(j.id for j in jobs)
    assert sorted([*a.worker.outcomes, *b.worker.outcomes]) == sorted(
        (j.id, "succeeded") for j in jobs
    )


def test_failing_job_is_retried_then_dead_lettered_and_replayed(
    redis_url: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from scfeeds._service._cli import main

    stream = stream_name(request)
    calls: list[int] = []

    async def boom(job: Job, ctx: JobContext) -> JobResult:
        calls.append(job.attempt)
        raise RuntimeError(f"parser exploded on attempt {job.attempt}")

    job = Job(sources=["http://127.0.0.1:1/v1/feeds/a"])
    enqueue(redis_url, stream, [job])
    w = ThreadWorker(worker_factory(redis_url, stream, tmp_path, runner=boom, max_attempts=3))
    with w:
        wait_until(lambda: len(w.worker.outcomes) == 3)
    assert calls == [1, 2, 3]
    assert [o for _, o in w.worker.outcomes] == ["failed", "failed", "dead_lettered"]
    ((_, entry),) = dead(redis_url, stream)
    assert entry["id"] == job.id
    assert entry["attempt"] == "3"
    assert "parser exploded on attempt 3" in entry["reason"]
    assert stats(redis_url, stream).length == 0
    # an operator lists the dead letters, then replays them once the cause is fixed
    base = ["--queue", redis_url, "--stream", stream]
    assert main(["dead-letters", *base]) == 0
    assert capsys.readouterr().out.startswith(f"{job.id}\tattempt 3\tfailed 3 times")
    assert main(["dead-letters", *base, "--replay"]) == 0
    assert capsys.readouterr().out == f"replayed {job.id}\n"
    assert dead(redis_url, stream) == []
    (again,) = run(_with_queue(redis_url, stream, lambda q: q.read("x", count=5, block=0.1)))
    assert again.job is not None
    assert (again.job.id, again.attempt, again.job.sources) == (job.id, 1, job.sources)


def test_redelivered_poison_job_is_dead_lettered_without_running(
    redis_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A job that kills its worker every time (OOM, segfault) is never acked: Redis counts
    its deliveries, and past max_attempts it goes to the dead-letter stream unrun."""
    stream = stream_name(request)
    ran: list[str] = []

    async def never(job: Job, ctx: JobContext) -> JobResult:
        ran.append(job.id)
        return JobResult()

    async def ghost_takes_it(q: JobQueue) -> None:
        await q.enqueue([Job(sources=["http://127.0.0.1:1/a"])])
        await q.read("ghost", count=1, block=0.1)  # delivered to a worker that then "died"
        await q._r.xadd(stream, {"id": "bad", "job": "{oops"})  # and a malformed message

    run(_with_queue(redis_url, stream, ghost_takes_it))
    w = ThreadWorker(
        worker_factory(redis_url, stream, tmp_path, runner=never, max_attempts=1, claim_idle=0.3)
    )
    with w:
        wait_until(lambda: len(w.worker.outcomes) == 2)
    assert ran == []
    assert sorted(o for _, o in w.worker.outcomes) == ["dead_lettered", "rejected"]
    reasons = sorted(e["reason"] for _, e in dead(redis_url, stream))
    assert reasons[0].startswith("gave up after 1 attempts (2 deliveries")
    assert reasons[1].startswith("rejected: job field is not JSON")


def test_job_lake_must_stay_inside_the_worker_lake(
    redis_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    stream = stream_name(request)
    job = Job(sources=["http://127.0.0.1:1/a"], lake="../elsewhere")
    enqueue(redis_url, stream, [job])
    w = ThreadWorker(worker_factory(redis_url, stream, tmp_path / "lake"))
    with w:
        wait_until(lambda: w.worker.outcomes)
    assert list(w.worker.outcomes) == [(job.id, "rejected")]
    assert "outside this worker's lake root" in dead(redis_url, stream)[0][1]["reason"]
    assert not (tmp_path / "elsewhere").exists()


class _Boom(Exception):
    """An error the worker does not expect (not a Redis or OS error)."""


class _FailingQueue(JobQueue):
    """A real queue whose ``read`` (the fetch loop) or ``stats`` (a background task) raises
    ``fail`` once the test sets it."""

    def __init__(self, url: str, *, stream: str, where: str) -> None:
        super().__init__(url, stream=stream)
        self.where = where
        self.fail: BaseException | None = None

    async def read(self, consumer: str, *, count: int, block: float) -> Any:
        if self.where == "read" and self.fail is not None:
            raise self.fail
        return await super().read(consumer, count=count, block=block)

    async def stats(self) -> Any:
        if self.where == "stats" and self.fail is not None:
            raise self.fail
        return await super().stats()


@pytest.mark.parametrize("where", ["read", "stats"])
def test_unexpected_error_ends_run_with_it_and_leaves_no_job_running_or_wrongly_acked(
    redis_url: str, tmp_path: Path, request: pytest.FixtureRequest, where: str
) -> None:
    """An error in the fetch loop (``read``) or a background task (``stats``) while jobs are
    in flight: ``run()`` raises that error itself, no task of the worker is left, the job
    that committed is acknowledged and the two that had not are cancelled, unacknowledged
    and released (a peer takes them at once)."""
    stream = stream_name(request)
    fast, slow1, slow2 = (Job(sources=[f"http://127.0.0.1:1/{n}"]) for n in ("f", "s1", "s2"))
    started: set[str] = set()
    cancelled: set[str] = set()

    async def runner(job: Job, ctx: JobContext) -> JobResult:
        started.add(job.id)
        if job.id == fast.id:
            return JobResult(committed=1)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.add(job.id)
            raise
        return JobResult()

    async def go() -> None:
        queue = _FailingQueue(redis_url, stream=stream, where=where)
        w = Worker(
            queue,
            tmp_path,
            runner=runner,
            concurrency=3,
            claim_idle=2.0,
            block=0.2,
            stats_interval=0.1,
        )
        await queue.ensure_group()
        await queue.enqueue([fast, slow1, slow2])
        boom = _Boom("unexpected")
        run_task = asyncio.create_task(w.run())
        for _ in range(1500):
            if started == {fast.id, slow1.id, slow2.id} and (fast.id, "succeeded") in w.outcomes:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError(f"jobs did not start: {started}, {list(w.outcomes)}")
        queue.fail = boom
        with pytest.raises(_Boom) as caught:
            await asyncio.wait_for(run_task, 20)
        assert caught.value is boom
        assert asyncio.all_tasks() == {asyncio.current_task()}  # nothing outlives run()
        assert cancelled == {slow1.id, slow2.id}
        assert sorted(w.outcomes) == sorted(
            [(fast.id, "succeeded"), (slow1.id, "cancelled"), (slow2.id, "cancelled")]
        )
        queue.fail = None
        s = await queue.stats()
        assert (s.length, s.pending, s.dead) == (2, 2, 0)  # only the committed job was acked
        # released, not left to time out: a peer reclaims both at once
        taken = await queue.reclaim("peer", min_idle=w.claim_idle, count=5)
        assert sorted(d.job.id for d in taken if d.job) == sorted([slow1.id, slow2.id])
        await queue.aclose()

    run(go())


class _LosesCancellation(JobQueue):
    """A real queue whose ``stats`` call, like a Redis command on Python 3.11 (its
    ``asyncio.wait_for`` drops a cancellation that races the reply), swallows the
    cancellation it gets and returns normally."""

    def __init__(self, url: str, *, stream: str) -> None:
        super().__init__(url, stream=stream)
        self.lost = 0

    async def stats(self) -> Any:
        try:
            await asyncio.Event().wait()  # a reply that is slow to come
        except asyncio.CancelledError:
            self.lost += 1
        return await super().stats()


def test_worker_stops_even_when_a_redis_call_loses_its_cancellation(
    redis_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A background task whose Redis call swallowed the cancellation still ends: ``run()``
    returns after ``stop()`` instead of waiting on it forever."""
    queue = _LosesCancellation(redis_url, stream=stream_name(request))

    async def go() -> None:
        w = Worker(queue, tmp_path, claim_idle=2.0, block=0.2, stats_interval=0.05)
        run_task = asyncio.create_task(w.run())
        for _ in range(1500):
            if w.ready:
                break
            await asyncio.sleep(0.01)
        w.stop()
        await asyncio.wait_for(run_task, 20)
        assert queue.lost == 1
        assert asyncio.all_tasks() == {asyncio.current_task()}
        await queue.aclose()

    run(go())


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _sample(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert m, f"{name} not in metrics"
    return float(m.group(1))


def test_metrics_and_spans_observed_in_process(
    redis_url: str, world: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider)
    stream = stream_name(request)
    lake = tmp_path / "lake"
    health: dict[str, str] = {}
    try:
        with serve_in_thread(world, latency=0.3, access_log=False) as portal:
            feeds = listing(portal.url)[:4]
            with provider.get_tracer("test").start_as_current_span("scheduler.enqueue") as parent:
                carrier = inject_current()
            job = Job(sources=feeds, trace=carrier)
            base = worker_factory(redis_url, stream, lake, tracing=tracing, limits=2)

            def make() -> Worker:
                w = base()
                real_run = w.run

                async def run_with_health() -> None:
                    async with HealthServer(w, w.metrics, port=0) as hs:
                        health["url"] = hs.url
                        await real_run()

                w.run = run_with_health  # type: ignore[method-assign]
                return w

            with ThreadWorker(make) as tw:
                url = wait_until(lambda: health.get("url"))
                wait_until(lambda: _get(f"{url}/readyz")[0] == 200)
                enqueue(redis_url, stream, [job])
                # while the job runs, its requests show up as in flight
                busy = wait_until(
                    lambda: (
                        (t := _get(f"{url}/metrics")[1])
                        and _sample(t, "scfeeds_requests_in_flight") >= 1
                        and t
                    )
                )
                assert _sample(busy, "scfeeds_jobs_in_flight") == 1
                wait_until(lambda: tw.worker.outcomes)
                text = wait_until(
                    lambda: (
                        (t := _get(f"{url}/metrics")[1])
                        and _sample(t, "scfeeds_queue_length") == 0
                        and t
                    )
                )
    finally:
        tracing.shutdown()
    assert list(tw.worker.outcomes) == [(job.id, "succeeded")]
    assert 'scfeeds_jobs_total{outcome="succeeded"} 1' in text
    assert _sample(text, "scfeeds_fetch_bytes_total") == sum(f["bytes"] for f in feeds)
    assert _sample(text, "scfeeds_jobs_in_flight") == 0
    assert _sample(text, "scfeeds_requests_in_flight") == 0
    assert _sample(text, "scfeeds_queue_pending") == 0
    assert _sample(text, "scfeeds_queue_up") == 1
    assert _sample(text, "scfeeds_event_loop_lag_hist_seconds_count") > 0
    assert _sample(text, "scfeeds_job_duration_seconds_count") == 1

    spans = exporter.get_finished_spans()
    (job_span,) = [s for s in spans if s.name == "scfeeds.job"]
    pctx = parent.get_span_context()
    assert job_span.parent is not None
    assert job_span.parent.span_id == pctx.span_id
    assert job_span.context.trace_id == pctx.trace_id
    assert job_span.attributes is not None
    assert job_span.attributes["scfeeds.job.id"] == job.id
    assert job_span.attributes["scfeeds.job.outcome"] == "succeeded"
    clients = [s for s in spans if s.kind == SpanKind.CLIENT]
    assert len(clients) >= len(feeds)
    assert all(
        c.parent is not None and c.parent.span_id == job_span.context.span_id for c in clients
    )


def test_tokens_reach_the_portal_but_not_logs_metrics_queue_or_spans(
    redis_url: str,
    world: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    token = "tok-SECRET-4f9a2c"
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider)
    stream = stream_name(request)
    caplog.set_level("DEBUG")
    try:
        with serve_in_thread(world, token=token, access_log=False) as portal:
            feeds = listing(portal.url, token)[:3]
            ok, denied = Job(sources=feeds), Job(sources=feeds[:2])
            enqueue(redis_url, stream, [ok])
            with_token = ThreadWorker(
                worker_factory(
                    redis_url,
                    stream,
                    tmp_path / "a",
                    secrets=Secrets({"*": token}),
                    tracing=tracing,
                )
            )
            with with_token:
                wait_until(lambda: with_token.worker.outcomes)
            metrics_a = with_token.worker.metrics.render()
            enqueue(redis_url, stream, [denied])
            without = ThreadWorker(
                worker_factory(redis_url, stream, tmp_path / "b", max_attempts=1)
            )
            with without:
                wait_until(lambda: without.worker.outcomes)
    finally:
        tracing.shutdown()
    assert list(with_token.worker.outcomes) == [(ok.id, "succeeded")]  # the token was sent
    assert list(without.worker.outcomes) == [(denied.id, "partial")]  # 401: nothing landed
    ((_, entry),) = dead(redis_url, stream)
    assert entry["reason"] == "2 of 2 source(s) failed to fetch"
    assert len(Job.from_fields(entry).sources) == 2

    async def dump(q: JobQueue) -> str:
        keys = await q._r.keys("*")
        parts = [repr(await q._r.xrange(k)) for k in keys if await q._r.type(k) == "stream"]
        return "".join(parts)

    everything = [
        caplog.text,
        metrics_a,
        without.worker.metrics.render(),
        run(_with_queue(redis_url, stream, dump)),
        repr(
            [
                (s.name, dict(s.attributes or {}), [dict(e.attributes or {}) for e in s.events])
                for s in exporter.get_finished_spans()
            ]
        ),
    ]
    assert "job " in caplog.text  # the worker did log
    for text in everything:
        assert token not in text


# -- worker processes: SIGKILL and SIGTERM -----------------------------------------------------


class WorkerProcess:
    """``python -m scfeeds._service worker`` with the test runner; stderr collected."""

    def __init__(self, redis_url: str, stream: str, lake: Path, *args: str, delay: float = 0):
        env = {**os.environ, "SCFEEDS_TEST_JOB_DELAY": str(delay), "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "scfeeds._service",
                "worker",
                "--queue",
                redis_url,
                "--stream",
                stream,
                "--lake",
                str(lake),
                "--health-port",
                "0",
                "--runner",
                f"{SUPPORT}:slow_runner",
                "--parse-pool",
                "threads",
                *args,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def health_url(self) -> str:
        def found() -> str | None:
            m = re.search(r"health on (http://\S+) ", self.log)
            assert self.proc.poll() is None, self.log
            return m.group(1) if m else None

        return str(wait_until(found, 20))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@pytest.fixture
def processes() -> Iterator[list[WorkerProcess]]:
    procs: list[WorkerProcess] = []
    yield procs
    for p in procs:
        p.close()


def test_killed_worker_job_is_reclaimed_and_finished_by_another(
    redis_url: str,
    world: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    processes: list[WorkerProcess],
) -> None:
    stream = stream_name(request)
    lake = tmp_path / "lake"
    with serve_in_thread(world, latency=0.15, access_log=False) as portal:
        feeds = listing(portal.url)
        job = Job(sources=feeds)
        enqueue(redis_url, stream, [job])
        victim = WorkerProcess(
            redis_url, stream, lake, "--claim-idle", "1", "--requests-per-job", "1"
        )
        processes.append(victim)
        wait_until(lambda: (lake / "_started" / job.id).exists(), 20)
        time.sleep(0.8)  # mid-job: some feeds landed, the rest still coming
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(5)
        assert ledger_size(lake) < len({f["sha256"] for f in feeds})  # truly mid-job
        s = stats(redis_url, stream)
        assert (s.length, s.pending) == (1, 1)  # not acknowledged: still the victim's
        t0 = time.monotonic()
        heir = ThreadWorker(worker_factory(redis_url, stream, lake, claim_idle=1.0))
        with heir:
            wait_until(lambda: heir.worker.outcomes, 30)
        assert time.monotonic() - t0 < 25
    assert list(heir.worker.outcomes) == [(job.id, "succeeded")]
    s = stats(redis_url, stream)
    assert (s.length, s.pending, s.dead) == (0, 0, 0)
    assert_lake_exactly_once(lake, feeds)


def test_sigterm_drains_in_flight_job_with_probes_and_exit_0(
    redis_url: str,
    world: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    processes: list[WorkerProcess],
) -> None:
    stream = stream_name(request)
    lake = tmp_path / "lake"
    with serve_in_thread(world, latency=0.02, access_log=False) as portal:
        feeds = listing(portal.url)[:3]
        job = Job(sources=feeds)
        w = WorkerProcess(redis_url, stream, lake, delay=1.5)
        processes.append(w)
        url = w.health_url()
        wait_until(lambda: _get(f"{url}/readyz")[0] == 200)
        enqueue(redis_url, stream, [job])
        wait_until(lambda: (lake / "_started" / job.id).exists(), 20)
        w.proc.send_signal(signal.SIGTERM)
        seen: list[tuple[int, int]] = []
        while w.proc.poll() is None:  # probe until the process is gone
            try:
                seen.append((_get(f"{url}/readyz")[0], _get(f"{url}/livez")[0]))
            except (urllib.error.URLError, ConnectionError):
                break  # the listener closes after the drain, just before exit
            time.sleep(0.05)
        assert w.proc.wait(25) == 0, w.log
    # from the signal on (the first probe may race it): not ready, yet alive, throughout
    draining = seen[[r for r, _ in seen].index(503) :]
    assert all(probe == (503, 200) for probe in draining), seen
    assert len(draining) >= 5  # the drain took a while and the probes answered all along
    assert "succeeded" in w.log
    assert "draining" in w.log
    s = stats(redis_url, stream)
    assert (s.length, s.pending) == (0, 0)  # finished within the deadline, acknowledged
    assert_lake_exactly_once(lake, feeds)


def test_sigterm_deadline_cancels_without_ack_and_a_peer_finishes(
    redis_url: str,
    world: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    processes: list[WorkerProcess],
) -> None:
    """Cancelled mid-download: not acknowledged, nothing partial in the lake, released at
    once to a peer, which downloads again (or resumes, for large bodies) and commits once."""
    stream = stream_name(request)
    lake = tmp_path / "lake"
    with serve_in_thread(world, slow_body=500, apply_to=("file",), access_log=False) as portal:
        feeds = sorted(listing(portal.url), key=lambda f: -f["bytes"])[:3]
        job = Job(sources=feeds)
        w = WorkerProcess(redis_url, stream, lake, "--drain-seconds", "0.5", "--claim-idle", "20")
        processes.append(w)
        w.health_url()
        enqueue(redis_url, stream, [job])
        wait_until(lambda: any(p.stat().st_size > 0 for p in lake.rglob("*.part")), 20)
        t0 = time.monotonic()
        w.proc.send_signal(signal.SIGTERM)
        assert w.proc.wait(15) == 0, w.log
        assert time.monotonic() - t0 < 5  # the deadline, not the slow downloads
        assert "cancelled 1 job(s), not acknowledged" in w.log
        s = stats(redis_url, stream)
        assert (s.length, s.pending) == (1, 1)
        assert ledger_size(lake) == 0
        # what a cancelled job leaves is the fetch engine's resume state, in its landing only
        left = [p.relative_to(lake).parts for p in lake.rglob("*") if p.is_file()]
        assert all(p[0] == "_started" or p[:2] == ("_landing", "jobs") for p in left), left
        assert not [p for p in left if p[0] == "_landing" and ".scfeeds" not in p]
        # released with a long idle time: a peer with the same 20 s timeout takes it at once
        portal.set_knobs(slow_body=None)
        t1 = time.monotonic()
        peer = ThreadWorker(worker_factory(redis_url, stream, lake, claim_idle=20.0))
        with peer:
            wait_until(lambda: peer.worker.outcomes, 20)
        assert time.monotonic() - t1 < 10
    assert list(peer.worker.outcomes) == [(job.id, "succeeded")]
    assert_lake_exactly_once(lake, feeds)


def test_cli_enqueue_expands_a_portal_and_splits_jobs(
    redis_url: str,
    world: Path,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from scfeeds._service._cli import main

    stream = stream_name(request)
    with serve_in_thread(world, access_log=False) as portal:
        n = len(listing(portal.url))
        code = main(
            ["enqueue", "--queue", redis_url, "--stream", stream, "--per-job", "5", portal.url]
        )
    assert code == 0
    ids = capsys.readouterr().out.split()
    assert len(ids) == -(-n // 5)
    s = stats(redis_url, stream)
    assert (s.length, s.lag) == (len(ids), len(ids))
    assert (
        main(
            ["enqueue", "--queue", redis_url, "--stream", stream, "http://127.0.0.1:1/a?token=abc"]
        )
        == 2
    )


def test_worker_without_redis_is_alive_but_not_ready(tmp_path: Path) -> None:
    from tests.service_support import free_port

    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    w = ThreadWorker(worker_factory(nowhere, "s", tmp_path))
    with w:
        wait_until(lambda: w.worker.metrics.redis_errors.value() >= 2)
        assert w.worker.readiness() == {
            "ready": False,
            "started": False,
            "redis": False,
            "draining": False,
        }
        t0 = time.monotonic()
    assert time.monotonic() - t0 < 3  # stop is prompt even while retrying the connection
    assert w.worker.readiness()["draining"] is True


def test_worker_recreates_a_vanished_stream_and_group(
    redis_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    stream = stream_name(request)

    async def ok(job: Job, ctx: JobContext) -> JobResult:
        return JobResult()

    w = ThreadWorker(worker_factory(redis_url, stream, tmp_path, runner=ok))
    with w:
        wait_until(lambda: w.worker.ready)
        run(_with_queue(redis_url, stream, lambda q: q._r.delete(stream)))  # a flush
        wait_until(lambda: not w.worker.ready)  # NOGROUP: not ready
        wait_until(lambda: w.worker.ready)  # recreated
        job = Job(sources=["http://127.0.0.1:1/a"])
        run(_with_queue(redis_url, stream, lambda q: q.enqueue([job])))
        wait_until(lambda: w.worker.outcomes)
    assert list(w.worker.outcomes) == [(job.id, "succeeded")]


def test_deploy_manifests_match_the_cli() -> None:
    """The Kubernetes example must parse with the real CLI and keep drain < grace period."""
    import argparse

    import yaml

    from scfeeds._service._cli import add_cli

    docs = list(yaml.safe_load_all((ROOT / "deploy" / "worker.yaml").read_text()))
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(container["args"])
    assert args.command == "worker"
    assert args.drain_seconds + 5 <= pod["terminationGracePeriodSeconds"]
    assert args.health_host == "0.0.0.0"
    (port,) = container["ports"]
    assert port["containerPort"] == args.health_port
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e for e in container["env"]}
    assert "SCFEEDS_SECRETS_FILE" in env
    assert "SCFEEDS_TOKEN" not in env
    (scaled,) = yaml.safe_load_all((ROOT / "deploy" / "keda.yaml").read_text())
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    triggers = scaled["spec"]["triggers"]
    assert {t["type"] for t in triggers} == {"redis-streams"}
    assert {(t["metadata"]["stream"], t["metadata"]["consumerGroup"]) for t in triggers} == {
        (args.stream, args.group)
    }
    assert any("lagCount" in t["metadata"] for t in triggers)


async def test_otlp_exporter_sends_job_spans_to_the_collector(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--otel otlp``: spans leave as OTLP/HTTP protobuf to OTEL_EXPORTER_OTLP_ENDPOINT."""
    from aiohttp import web

    received: list[tuple[str, str, bytes]] = []

    async def collect(request: web.Request) -> web.Response:
        received.append((request.path, request.content_type, await request.read()))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/v1/traces", collect)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    try:
        tracing = Tracing.configure("otlp")
        assert tracing.enabled
        with tracing.tracer.start_as_current_span("scfeeds.job"):
            pass
        await asyncio.to_thread(tracing.shutdown)  # flushes: the exporter posts from a thread
    finally:
        await runner.cleanup()
    ((path, ctype, body),) = received
    assert (path, ctype) == ("/v1/traces", "application/x-protobuf")
    assert b"scfeeds.job" in body
    assert b"scfeeds-worker" in body  # service.name of the resource
    with pytest.raises(ValueError, match="one of none, console, otlp"):
        Tracing.configure("jaeger")
