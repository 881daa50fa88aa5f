"""Async fetch engine: plan, limiter, workers, landing + manifest, report, progress.

Public names are re-exported from :mod:`scfeeds`; import them from there.

Live control (for a tuning widget or any code on the fetch's event loop)::

    ctl = FetchController()                      # optionally FetchController(ceiling=256)
    task = asyncio.create_task(fetch(sources, "landing", limits=16, controller=ctl))
    ctl.set_max_at_once(48)                      # observed by the running fetch within 0.25 s
    ctl.max_at_once, ctl.concurrency, ctl.in_flight
    ctl.host_limits()                            # {"127.0.0.1:8080": 31}: the AIMD limit per host
    ctl.take_latencies()                         # seconds of requests finished since last call

A progress object passed as ``progress=`` may define ``attach(controller)``; it is called with
the controller of the fetch before the first event, so a widget can show and move the limit
without the caller wiring it.
"""

from scfeeds._fetch._credentials import Credentials
from scfeeds._fetch._engine import fetch, parse_retry_after
from scfeeds._fetch._limiter import FetchController
from scfeeds._fetch._plan import ChunkRequest, plan_chunks, redact_url
from scfeeds._fetch._report import FetchOutcome, FetchReport, ProgressEvent
from scfeeds._fetch._seed import AsyncFeedIngestor, BatchResult

__all__ = [
    "AsyncFeedIngestor",
    "BatchResult",
    "ChunkRequest",
    "Credentials",
    "FetchController",
    "FetchOutcome",
    "FetchReport",
    "ProgressEvent",
    "fetch",
    "parse_retry_after",
    "plan_chunks",
    "redact_url",
]
