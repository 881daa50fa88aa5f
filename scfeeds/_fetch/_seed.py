"""The seed's interface (``AsyncFeedIngestor`` / ``BatchResult``) on top of :func:`fetch`."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self, TypedDict

from scfeeds._config import Limits, Retry, Timeout
from scfeeds._fetch._engine import fetch
from scfeeds._fetch._plan import ChunkRequest, Source, plan_chunks
from scfeeds._fetch._report import FetchReport
from scfeeds.exceptions import ConfigurationError


class FailedRecord(TypedDict):
    """One failed item of a batch (its URL redacted)."""

    url: str
    error: str | None
    attempts: int


@dataclass(frozen=True, kw_only=True)
class BatchResult:
    """The seed's result record, plus the full :class:`FetchReport`.

    ``failed_records`` lists ``{"url", "error", "attempts"}`` per failed item (secrets
    redacted); ``processed_bytes`` counts body bytes received in this batch.
    """

    batch_id: str
    success_count: int
    error_count: int
    failed_records: list[FailedRecord]
    processed_bytes: int
    report: FetchReport = field(repr=False)


class AsyncFeedIngestor:
    """The seed's ingestor, rebuilt on the streaming engine.

    Where the seed held every payload in memory (``await resp.read()``), this lands each one
    in ``dest`` and keeps only counters. Use as an async context manager.

    Parameters
    ----------
    concurrency_limit
        ``max_at_once`` of the underlying fetch.
    chunk_size
        Records per page for :meth:`plan` (paged feeds).
    dest
        Landing directory; each batch goes to ``dest/<batch_id>/``.
    retry, timeout, adaptive
        As in :func:`scfeeds.fetch` / :class:`Limits`.

    Examples
    --------
    >>> async def main(urls):  # doctest: +SKIP
    ...     async with AsyncFeedIngestor(concurrency_limit=20, dest="landing") as ingestor:
    ...         result = await ingestor.process_feed(urls, {"Authorization": "Bearer …"}, "b1")
    ...     return result.success_count
    """

    def __init__(
        self,
        concurrency_limit: int = 20,
        chunk_size: int = 500,
        *,
        dest: str | os.PathLike[str] = "landing",
        retry: Retry | int | bool | None = None,
        timeout: Timeout | float | None = None,
        adaptive: bool = True,
    ) -> None:
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ConfigurationError(f"chunk_size must be a positive int, got {chunk_size!r}")
        self.limits = Limits(concurrency_limit, adaptive=adaptive)
        self.chunk_size = chunk_size
        self.dest = Path(dest)
        self.retry = retry
        self.timeout = timeout
        self._open = False

    async def __aenter__(self) -> Self:
        self._open = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Each batch opens and closes its own session inside fetch(): nothing outlives a call.
        self._open = False

    def plan(self, feed_url: str, total: int) -> list[ChunkRequest]:
        """Page requests for a paged feed, ``chunk_size`` records each."""
        return plan_chunks(feed_url, total=total, chunk_size=self.chunk_size)

    async def process_feed(
        self,
        feed_urls: Iterable[Source],
        headers: Mapping[str, str] | None = None,
        batch_id: str = "batch",
    ) -> BatchResult:
        """Fetch one batch into ``dest/<batch_id>/`` and summarise it as the seed did."""
        if not self._open:
            raise ConfigurationError(
                "use AsyncFeedIngestor as `async with AsyncFeedIngestor(...) as ingestor:`"
            )
        report = await fetch(
            feed_urls,
            self.dest / batch_id,
            limits=self.limits,
            retry=self.retry,
            timeout=self.timeout,
            headers=headers,
            progress=None,
        )
        failures = [
            FailedRecord(url=r["url"], error=r["error"], attempts=r["attempts"])
            for r in report.failures.select("url", "error", "attempts").iter_rows(named=True)
        ]
        return BatchResult(
            batch_id=batch_id,
            success_count=report.succeeded + report.unchanged,
            error_count=report.failed,
            failed_records=failures,
            processed_bytes=report.bytes,
            report=report,
        )
