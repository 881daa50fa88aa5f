"""Helpers for tests on the wire: an aiohttp application served in-process on loopback, a free
port, and the listing of a (simulated) supplier portal."""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web


@asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 (a free port, no access log); yields its base URL and stops
    it on exit."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (a server started later may still find it taken)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listing(url: str, token: str | None = None) -> list[dict[str, Any]]:
    """The feeds a portal at ``url`` lists (``GET /v1/feeds``, with ``token`` as bearer)."""
    req = urllib.request.Request(f"{url}/v1/feeds")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as resp:
        feeds: list[dict[str, Any]] = json.load(resp)["feeds"]
    return feeds
