"""In-memory buffering vs streaming to disk, profiled side by side.

The seed's downloader read every response with ``await resp.read()`` and kept the bodies in a
list until the end, so its heap grows with the feed. ``scfeeds.fetch`` streams each body to a
temporary file in 64 KiB pieces, so its heap is bounded by ``max_at_once`` x piece size, however
large the feed. :func:`compare_buffering` runs both over the same sources under memray and
shows the two peaks and heap curves together.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import polars as pl

from scfeeds._fetch._engine import fetch
from scfeeds._fetch._plan import ChunkRequest
from scfeeds.exceptions import ConfigurationError
from scfeeds.notebook import _format as fmt
from scfeeds.notebook import _svg
from scfeeds.notebook._memory import MemoryProfile, MemoryProfiler


async def buffer_in_memory(
    urls: Sequence[str],
    *,
    max_at_once: int = 8,  # as compare_buffering's default: whole bodies are held at once
    headers: Mapping[str, str] | None = None,
) -> list[bytes]:
    """The seed's style: ``await resp.read()`` of every URL, all bodies held in a list.

    Kept as the baseline the comparison measures against; do not use it for real work.
    """
    gate = asyncio.Semaphore(max_at_once)
    async with aiohttp.ClientSession(headers=dict(headers or {})) as session:

        async def get(url: str) -> bytes:
            async with gate, session.get(url) as resp:
                resp.raise_for_status()
                return await resp.read()

        return list(await asyncio.gather(*(get(url) for url in urls)))


class BufferingComparison(NamedTuple):
    """Both profiles of :func:`compare_buffering`; displays them side by side."""

    buffered: MemoryProfile
    streamed: MemoryProfile
    bytes: int

    @property
    def ratio(self) -> float:
        """Buffered peak / streamed peak (how many times more heap buffering needs)."""
        return self.buffered.peak_bytes / max(self.streamed.peak_bytes, 1)

    def frame(self) -> pl.DataFrame:
        """One row per strategy: peak heap, allocations, seconds, bytes fetched."""
        return pl.DataFrame(
            {
                "strategy": ["in-memory buffering", "streaming to disk"],
                "peak_heap_bytes": [self.buffered.peak_bytes, self.streamed.peak_bytes],
                "allocations": [
                    self.buffered.total_allocations,
                    self.streamed.total_allocations,
                ],
                "seconds": [self.buffered.seconds, self.streamed.seconds],
                "bytes_fetched": [self.bytes, self.bytes],
            }
        )

    def text(self) -> str:
        """The two peaks and their ratio in one line."""
        return (
            f"{fmt.size(self.bytes)} fetched: in-memory buffering peak heap "
            f"{fmt.size(self.buffered.peak_bytes)}, streaming peak heap "
            f"{fmt.size(self.streamed.peak_bytes)} ({self.ratio:.1f}x less)"
        )

    def _repr_html_(self) -> str:
        mib = 2**20
        bars = _svg.bars(
            [
                ("buffered", self.buffered.peak_bytes / mib),
                ("streamed", self.streamed.peak_bytes / mib),
            ],
            title="peak heap (MiB)",
            fmt=lambda v: f"{v:.1f} MiB",
        )
        curves = _svg.line_chart(
            {
                "buffered": [
                    (t, b / mib) for t, b in self.buffered.heap.select("t_s", "heap_bytes").rows()
                ],
                "streamed": [
                    (t, b / mib) for t, b in self.streamed.heap.select("t_s", "heap_bytes").rows()
                ],
            },
            title="heap over time",
            x_label="s",
            y_label="MiB",
            width=360,
        )
        return (
            f"<div class='scfeeds-compare'><p><b>{escape(self.text())}</b></p>"
            f"<div style='display:flex;gap:16px;flex-wrap:wrap'>{bars}{curves}</div>"
            f"<details><summary>top allocation sites</summary>"
            f"<p>in-memory buffering</p>{self.buffered.sites_html()}"
            f"<p>streaming</p>{self.streamed.sites_html()}</details></div>"
        )

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(self.text())


async def compare_buffering(
    sources: Sequence[str | ChunkRequest],
    *,
    # not DEFAULT_MAX_AT_ONCE: buffering holds up to max_at_once whole bodies at once, and a
    # comparison on a notebook's few-GiB kernel is meant to show the gap, not fill the kernel
    max_at_once: int = 8,
    headers: Mapping[str, str] | None = None,
    profiler: MemoryProfiler | None = None,
) -> BufferingComparison:
    """Fetch ``sources`` twice under memray: buffered in memory, then streamed to disk.

    Parameters
    ----------
    sources
        URLs or ``plan_chunks(...)`` pages (e.g. a large portal feed's lines, or
        ``/v1/blob/{n}`` URLs).
    max_at_once
        Concurrency of both runs (the same for a fair comparison).
    headers
        Sent with every request (a bearer token; never shown).
    profiler
        The :class:`MemoryProfiler` to use (default: a new one).

    memray tracks the whole process: serve the feed from another process
    (``scfeeds.portal.serve_in_process`` or a real server), or the server's own buffers are
    counted in both peaks.

    Returns
    -------
    BufferingComparison
        ``buffered`` and ``streamed`` profiles; displays peaks and heap curves side by side.

    Examples
    --------
    In a notebook::

        with serve_in_process(world) as portal:
            urls = [f"{portal.url}/v1/blob/{2**21}?seed={i}" for i in range(32)]
            await compare_buffering(urls, max_at_once=8)
    """
    urls = [s.url if isinstance(s, ChunkRequest) else s for s in sources]
    if not urls:
        raise ConfigurationError(
            "compare_buffering needs at least one source: pass the URLs or ChunkRequests to fetch"
        )
    profiler = profiler or MemoryProfiler()

    async def buffered() -> int:
        bodies = await buffer_in_memory(urls, max_at_once=max_at_once, headers=headers)
        return sum(len(b) for b in bodies)

    buffered_profile = await profiler.arun(buffered(), label="in-memory buffering")
    dest = Path(tempfile.mkdtemp(prefix="scfeeds-compare-"))
    try:
        streamed_profile = await profiler.arun(
            fetch(
                urls,
                dest,
                limits=max_at_once,
                headers=headers,
                progress=None,
                resume=False,
            ),
            label="streaming to disk",
        )
    finally:
        shutil.rmtree(dest, ignore_errors=True)
    total = int(buffered_profile.result)
    return BufferingComparison(buffered_profile, streamed_profile, total)
