"""Async fetch engine: plan, limiter, workers, landing + manifest, report, progress.

Public names are re-exported from :mod:`scfeeds`; import them from there.
"""

from scfeeds._fetch._engine import fetch, parse_retry_after
from scfeeds._fetch._limiter import FetchController
from scfeeds._fetch._plan import ChunkRequest, plan_chunks, redact_url
from scfeeds._fetch._report import FetchReport, ProgressEvent
from scfeeds._fetch._seed import AsyncFeedIngestor, BatchResult

__all__ = [
    "AsyncFeedIngestor",
    "BatchResult",
    "ChunkRequest",
    "FetchController",
    "FetchReport",
    "ProgressEvent",
    "fetch",
    "parse_retry_after",
    "plan_chunks",
    "redact_url",
]
