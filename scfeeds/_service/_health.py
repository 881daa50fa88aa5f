"""The worker's side server: ``/livez``, ``/readyz`` and ``/metrics`` on aiohttp.web.

It runs on the worker's own event loop, so ``/livez`` answering *is* the liveness check: a loop
blocked by a runaway CPU task stops answering and the kubelet restarts the pod. ``/readyz``
says whether this worker takes jobs (503 while starting, when Redis is unreachable, and while
draining after SIGTERM). ``/metrics`` is the Prometheus text format.

Started with an ``AppRunner`` rather than ``web.run_app``: ``run_app`` owns the signals and
closes the listener before shutdown hooks run, so the probes would fail during the drain. Here
the listener stays open until the worker has drained; the CLI does its own signal handling.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol

from aiohttp import web

from scfeeds._service._metrics import CONTENT_TYPE


class _Probed(Protocol):
    def readiness(self) -> dict[str, bool]: ...


class _Rendered(Protocol):
    def render(self) -> str: ...


class HealthServer:
    """``async with HealthServer(worker, metrics, port=8081) as hs: ...`` (``hs.port``).

    Parameters
    ----------
    worker
        Anything with ``readiness() -> {"ready": bool, ...}``.
    metrics
        Anything with ``render() -> str`` (Prometheus text).
    host, port
        Where to listen; ``port=0`` picks a free port (read it from ``.port``). In a pod, bind
        ``0.0.0.0`` so the kubelet can reach the probes.
    """

    def __init__(
        self, worker: _Probed, metrics: _Rendered, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.worker = worker
        self.metrics = metrics
        self.host = host
        self.port = port
        app = web.Application()
        app.router.add_get("/livez", self._livez)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        # a probe must not wait on a slow client at exit: one second of grace is plenty
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )

    async def _livez(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        state = self.worker.readiness()
        return web.json_response(state, status=200 if state.get("ready") else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.render().encode(), headers={"Content-Type": CONTENT_TYPE}
        )

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        addresses = self._runner.addresses
        if addresses:
            self.port = int(addresses[0][1])

    async def close(self) -> None:
        await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
