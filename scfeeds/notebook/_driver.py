"""FeedDriver: the tuner's link to the real fetch engine, for any paged feed.

It pages through ``feed_url`` (``?offset=&limit=``, e.g. the portal's ``lines_url``) with
``scfeeds.fetch`` and a :class:`~scfeeds._fetch._limiter.FetchController`, which is what lets a
slider change the running fetch's ``max_at_once`` and lets the charts read the per-host AIMD
limit. Pages are planned lazily from an async generator, so a chunk-size change applies to the
pages not yet requested. Each pass lands in a fresh temporary directory that is deleted after
the pass: the tuner measures transfer, it does not keep data.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from scfeeds._config import Limits, Retry, Timeout
from scfeeds._fetch._engine import fetch
from scfeeds._fetch._limiter import FetchController
from scfeeds._fetch._plan import ChunkRequest, plan_chunks
from scfeeds._fetch._report import NO_PROGRESS, ProgressEvent
from scfeeds.exceptions import ConfigurationError
from scfeeds.notebook._metrics import Probe
from scfeeds.notebook._tuner import RunPlan


def _add(base: ProgressEvent, event: ProgressEvent, *, total: int | None) -> ProgressEvent:
    elapsed = base.elapsed + event.elapsed
    nbytes = base.bytes + event.bytes
    return ProgressEvent(
        total=total,
        done=base.done + event.done,
        succeeded=base.succeeded + event.succeeded,
        failed=base.failed + event.failed,
        unchanged=base.unchanged + event.unchanged,
        retried=base.retried + event.retried,
        throttled=base.throttled + event.throttled,
        bytes=nbytes,
        elapsed=elapsed,
        throughput_bps=nbytes / elapsed if elapsed > 0 else 0.0,
        concurrency=event.concurrency,
        in_flight=event.in_flight,
        finished=False,
    )


def page_request(feed_url: str, *, offset: int, limit: int) -> ChunkRequest:
    """The page ``[offset, offset + limit)`` of a paged feed, as ``plan_chunks`` would plan it.

    ``plan_chunks`` cuts a feed into equal pages; the tuner's pages change size while it runs,
    so each is planned on its own (same URL and landing-path scheme).
    """
    (first,) = plan_chunks(feed_url, total=limit, chunk_size=limit)
    parts = urlsplit(first.url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "offset"]
    query.insert(len(query) - 1, ("offset", str(offset)))
    directory, name = first.path.rsplit("/", 1)
    suffix = name.split(".", 1)[1]
    return ChunkRequest(
        url=urlunsplit(parts._replace(query=urlencode(query))),
        offset=offset,
        limit=limit,
        path=f"{directory}/{offset:012d}.{suffix}",
    )


class FeedDriver:
    """Runs ``scfeeds.fetch`` over a paged feed for :class:`ConcurrencyTuner`.

    Parameters
    ----------
    feed_url
        The paged endpoint (``offset``/``limit`` query parameters), e.g. a portal feed's
        ``lines_url``.
    total
        Records in the feed (the listing's ``records``).
    headers, retry, timeout
        Passed to ``fetch`` (``headers`` may carry the bearer token; it is never shown).
    adaptive
        Let the engine's AIMD move each host's limit below the ceiling (the point of the
        "AIMD limit" chart); ``False`` keeps the limit where the slider puts it.
    max_limit
        Highest ``max_at_once`` a slider may set (sizes the connection pool).
    """

    def __init__(
        self,
        feed_url: str,
        *,
        total: int,
        headers: Mapping[str, str] | None = None,
        retry: Retry | int | None = None,
        timeout: Timeout | float | None = None,
        adaptive: bool = True,
        max_limit: int = 256,
    ) -> None:
        if not isinstance(total, int) or total < 1:
            raise ConfigurationError(
                f"total must be an int >= 1 (records in the feed), got {total!r}: "
                "pass the feed's record count"
            )
        plan_chunks(feed_url, total=1, chunk_size=1)  # validates the URL, with its message
        self.feed_url = feed_url
        self.total = total
        self.headers = dict(headers or {})
        self.retry = retry
        self.timeout = timeout
        self.adaptive = adaptive
        self.max_limit = max_limit
        self.controller: FetchController | None = None
        self._max_at_once: int | None = None
        self._last_limit: int | None = None

    def __repr__(self) -> str:
        # headers are left out on purpose: they may carry a token.
        return f"FeedDriver({self.feed_url!r}, total={self.total})"

    def set_max_at_once(self, n: int) -> None:
        """Change the running pass's limit now, and the limit of passes to come."""
        self._max_at_once = n
        ctl = self.controller
        if ctl is not None and ctl.running:
            ctl.set_max_at_once(n)

    def take_latencies(self) -> list[float]:
        """Latencies (request to last byte) of requests completed since the last call."""
        ctl = self.controller
        return [] if ctl is None else ctl.take_latencies()

    def smoothed_rtt(self) -> float | None:
        """The running pass's smoothed round-trip time (seconds, worst host), if known."""
        ctl = self.controller
        if ctl is None or not ctl.running:
            return None
        # host() is the engine's accessor of a host's gate; every name here already has one.
        rtts = [ctl.host(name).srtt for name in ctl.host_limits()]
        known = [r for r in rtts if r is not None]
        return max(known) if known else None

    def current_limit(self) -> int | None:
        """The effective limit (the AIMD limit, capped by the ceiling) of the running pass,
        or where the last pass ended; ``None`` before any pass."""
        ctl = self.controller
        if ctl is None:
            return self._last_limit
        return ctl.concurrency

    async def _pages(
        self, plan: RunPlan, start: int, budget: int | None
    ) -> AsyncIterator[ChunkRequest]:
        offset, planned = start, 0
        while offset < self.total and (budget is None or planned < budget):
            size = max(1, plan.chunk_size())
            if budget is not None:
                size = min(size, budget - planned)
            size = min(size, self.total - offset)
            yield page_request(self.feed_url, offset=offset, limit=size)
            offset += size
            planned += size

    async def run(self, plan: RunPlan, probe: Probe) -> None:
        """Fetch ``plan.records`` records (pass after pass; forever if ``None``)."""
        self._max_at_once = plan.max_at_once
        remaining = plan.records
        base = NO_PROGRESS  # progress summed over passes (each fetch counts from zero)
        workdir = Path(tempfile.mkdtemp(prefix="scfeeds-tuner-"))
        try:
            pass_no = 0
            while remaining is None or remaining > 0:
                pass_no += 1
                budget = None if remaining is None else min(remaining, self.total)
                ctl = FetchController(ceiling=self.max_limit)
                ctl.set_max_at_once(min(self._max_at_once or plan.max_at_once, self.max_limit))
                self.controller = ctl
                frozen = base

                def forward(event: ProgressEvent, frozen: ProgressEvent = frozen) -> None:
                    probe.on_event(_add(frozen, event, total=None))

                dest = workdir / f"pass-{pass_no}"
                report = await fetch(
                    self._pages(plan, 0, budget),
                    dest,
                    limits=Limits(ctl.max_at_once, adaptive=self.adaptive),
                    retry=self.retry,
                    timeout=self.timeout,
                    headers=self.headers,
                    progress=forward,
                    resume=False,
                    controller=ctl,
                )
                self._last_limit = ctl.concurrency
                for seconds in self.take_latencies():
                    probe.on_latency(seconds)
                quantiles = (report.latency_p50, report.latency_p90, report.latency_p99)
                if None not in quantiles:
                    probe.pass_latency = quantiles  # type: ignore[assignment]
                last = probe.event
                if isinstance(last, ProgressEvent):
                    base = dataclasses.replace(last, in_flight=0)
                shutil.rmtree(dest, ignore_errors=True)
                if remaining is not None:
                    remaining -= budget or 0
        finally:
            self.controller = None
            shutil.rmtree(workdir, ignore_errors=True)
