"""A route-by-path aiohttp.web server for the fetch tests (no tests in here).

Each route shows one behaviour: ``/data/{name}?n=`` (ETag, Last-Modified, Range/If-Range,
304), ``/status/{code}``, ``/flaky/{k}/{name}`` (k x 503 first), ``/retry-after/{s}/{name}``
and ``/retry-after-date/{s}/{name}`` (one 429 first), ``/reset/{name}`` (connection dropped
once), ``/truncated/{name}`` (half the body once), ``/slow/{name}`` (trickles), ``/cd/{name}``
(Content-Disposition from ``?filename=``), ``/limited/{name}`` (429 above ``app["cap"]``
requests in flight), ``/auth/{name}`` (needs ``Authorization: Bearer s3cret``).
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from tests.web_support import serve_app

SECRET = "Bearer s3cret-token-value"


def body(name: str, n: int) -> bytes:
    """Deterministic bytes for a name: the test can compute the expected sha256."""
    seed = hashlib.sha256(name.encode()).digest()
    reps = n // len(seed) + 1
    return (seed * reps)[:n]


def sha(name: str, n: int) -> str:
    return hashlib.sha256(body(name, n)).hexdigest()


class State:
    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.times: dict[str, list[float]] = defaultdict(list)
        self.headers: dict[str, list[dict[str, str]]] = defaultdict(list)
        self.in_flight = 0
        self.peak = 0
        self.cap = 1_000_000
        self.latency = 0.0
        self.n429 = 0


STATE = web.AppKey("state", State)


def _etag(name: str, n: int) -> str:
    return f'"{sha(name, n)[:16]}"'


LAST_MODIFIED = email.utils.formatdate(1_700_000_000, usegmt=True)


async def _serve_data(request: web.Request, name: str, n: int) -> web.StreamResponse:
    data = body(name, n)
    etag = _etag(name, n)
    headers = {"ETag": etag, "Last-Modified": LAST_MODIFIED, "Accept-Ranges": "bytes"}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    rng = request.headers.get("Range")
    if_range = request.headers.get("If-Range")
    if rng and rng.startswith("bytes=") and (if_range is None or if_range == etag):
        start = int(rng[6:].split("-")[0])
        headers["Content-Range"] = f"bytes {start}-{n - 1}/{n}"
        return web.Response(status=206, body=data[start:], headers=headers)
    return web.Response(body=data, headers=headers)


def make_app() -> web.Application:
    app = web.Application()
    state = State()
    app[STATE] = state

    @web.middleware
    async def track(request: web.Request, handler: Any) -> web.StreamResponse:
        key = request.path
        state.hits[key] += 1
        state.times[key].append(time.monotonic())
        state.headers[key].append(dict(request.headers))
        state.in_flight += 1
        state.peak = max(state.peak, state.in_flight)
        try:
            if state.latency:
                await asyncio.sleep(state.latency)
            return await handler(request)
        finally:
            state.in_flight -= 1

    app.middlewares.append(track)

    def n_of(request: web.Request) -> int:
        return int(request.query.get("n", "1000"))

    async def data(request: web.Request) -> web.StreamResponse:
        return await _serve_data(request, request.match_info["name"], n_of(request))

    async def status(request: web.Request) -> web.StreamResponse:
        return web.Response(status=int(request.match_info["code"]), text="nope")

    async def flaky(request: web.Request) -> web.StreamResponse:
        if state.hits[request.path] <= int(request.match_info["k"]):
            return web.Response(status=503, text="busy")
        return await _serve_data(request, request.match_info["name"], n_of(request))

    async def retry_after(request: web.Request) -> web.StreamResponse:
        secs = int(request.match_info["s"])
        if state.hits[request.path] == 1:
            state.n429 += 1
            return web.Response(status=429, headers={"Retry-After": str(secs)})
        return await _serve_data(request, request.match_info["name"], n_of(request))

    async def retry_after_date(request: web.Request) -> web.StreamResponse:
        secs = int(request.match_info["s"])
        if state.hits[request.path] == 1:
            state.n429 += 1
            when = email.utils.formatdate(time.time() + secs, usegmt=True)
            return web.Response(status=429, headers={"Retry-After": when})
        return await _serve_data(request, request.match_info["name"], n_of(request))

    async def reset(request: web.Request) -> web.StreamResponse:
        if state.hits[request.path] == 1:
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)
        return await _serve_data(request, request.match_info["name"], n_of(request))

    async def truncated(request: web.Request) -> web.StreamResponse:
        name, n = request.match_info["name"], n_of(request)
        if state.hits[request.path] == 1:
            resp = web.StreamResponse(headers={"ETag": _etag(name, n), "Accept-Ranges": "bytes"})
            resp.content_length = n
            await resp.prepare(request)
            await resp.write(body(name, n)[: n // 2])
            await asyncio.sleep(0.01)
            assert request.transport is not None
            request.transport.abort()
            return resp
        return await _serve_data(request, name, n)

    async def slow(request: web.Request) -> web.StreamResponse:
        # Trickles ``step`` bytes every ``pace`` seconds; honours Range/If-Range.
        name, n = request.match_info["name"], n_of(request)
        etag = _etag(name, n)
        start, status = 0, 200
        headers = {"ETag": etag, "Accept-Ranges": "bytes"}
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        rng = request.headers.get("Range")
        if rng and request.headers.get("If-Range") == etag:
            start, status = int(rng[6:].split("-")[0]), 206
            headers["Content-Range"] = f"bytes {start}-{n - 1}/{n}"
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = n - start
        await resp.prepare(request)
        data = body(name, n)
        step = int(request.query.get("step", "100"))
        pace = float(request.query.get("pace", "0.05"))
        for i in range(start, n, step):
            await resp.write(data[i : i + step])
            await asyncio.sleep(pace)
        return resp

    async def cd(request: web.Request) -> web.StreamResponse:
        name, n = request.match_info["name"], n_of(request)
        filename = request.query["filename"]
        return web.Response(
            body=body(name, n),
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    async def limited(request: web.Request) -> web.StreamResponse:
        if state.in_flight > state.cap:
            state.n429 += 1
            return web.Response(status=429, text="slow down")
        await asyncio.sleep(float(request.query.get("t", "0.02")))
        return await _serve_data(request, request.match_info["name"], n_of(request))

    async def auth(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != SECRET:
            return web.Response(status=401)
        return await _serve_data(request, request.match_info["name"], n_of(request))

    app.router.add_get("/data/{name}", data)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/flaky/{k}/{name}", flaky)
    app.router.add_get("/retry-after/{s}/{name}", retry_after)
    app.router.add_get("/retry-after-date/{s}/{name}", retry_after_date)
    app.router.add_get("/reset/{name}", reset)
    app.router.add_get("/truncated/{name}", truncated)
    app.router.add_get("/slow/{name}", slow)
    app.router.add_get("/cd/{name}", cd)
    app.router.add_get("/limited/{name}", limited)
    app.router.add_get("/auth/{name}", auth)
    return app


class Server:
    def __init__(self, url: str, state: State) -> None:
        self.url = url
        self.state = state


@asynccontextmanager
async def serve() -> AsyncIterator[Server]:
    app = make_app()
    async with serve_app(app) as url:
        yield Server(url, app[STATE])
