"""Helpers for the service-mode tests (no tests here): a Redis server, worker threads, runners.

``slow_runner`` is importable by a worker subprocess (``--runner tests.service_support:...``)
so the kill and drain tests can run the real CLI process with a job that is slow on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from scfeeds._service._job import Job
from scfeeds._service._worker import JobContext, JobResult, ingest_runner
from tests.web_support import free_port


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """A throwaway ``redis-server`` on loopback (no persistence), stopped by PID."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError(
            "redis-server not found: apt-get install redis-server (./dev test installs it as root)"
        )
    import redis

    for _ in range(5):  # the port picked can be taken in between; try another
        port = free_port()
        proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 5
        up = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                up = bool(client.ping())
                break
            except redis.exceptions.ConnectionError:
                time.sleep(0.02)
        client.close()
        if up:
            break
        proc.kill()
        proc.wait()
    else:
        raise RuntimeError("could not start redis-server")
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until(cond: Callable[[], Any], timeout: float = 15.0, every: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout} s")


class ThreadWorker:
    """A :class:`Worker` on its own event loop in a thread (as if it were another process,
    but observable in-process: its outcomes, metrics and spans)."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self.worker: Any = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        async def go() -> None:
            self.worker = self._make()
            self._ready.set()
            try:
                await self.worker.run()
            finally:
                await self.worker.queue.aclose()

        try:
            asyncio.run(go())
        except BaseException as exc:
            self.error = exc
            self._ready.set()

    def __enter__(self) -> ThreadWorker:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        self._thread.join(30)
        if self._thread.is_alive() and self.worker is not None:
            # teardown only: a drain still waiting after 30 s on a loaded machine is cut short
            # the way an operator's second signal does (the drain itself is tested on real
            # processes); a worker that ignores that too still fails here
            self.worker.stop()
            self._thread.join(60)
        assert not self._thread.is_alive(), "worker thread did not stop"
        if self.error is not None:
            raise self.error

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def slow_runner(job: Job, ctx: JobContext) -> JobResult:
    """The real ingest, after a pause of ``SCFEEDS_TEST_JOB_DELAY`` seconds (default 0):
    long enough for a test to kill or drain the worker while the job is in flight.

    A marker file ``<lake>/_started/<job id>`` says the job began (the test waits on it).
    """
    started = ctx.lake / "_started"
    started.mkdir(parents=True, exist_ok=True)
    (started / job.id).write_text(str(os.getpid()))
    await asyncio.sleep(float(os.environ.get("SCFEEDS_TEST_JOB_DELAY", "0")))
    return await ingest_runner(job, ctx)
