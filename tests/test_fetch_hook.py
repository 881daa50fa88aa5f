"""fetch(on_item=...): every outcome is handed over as it happens, and a slow consumer slows
the fetch instead of letting landed files pile up."""

from __future__ import annotations

import asyncio
from pathlib import Path

import scfeeds
from scfeeds import portal


async def test_on_item_sees_every_outcome_and_backpressure_holds(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    async with portal.serve(tmp_path / "root", latency=0.0, access_log=False) as server:
        urls = [f"{server.url}/v1/blob/2048?seed={i}" for i in range(24)]
        urls.append(f"{server.url}/v1/feeds/no-such-feed")
        seen: list[scfeeds.FetchOutcome] = []
        consumer_free = asyncio.Event()
        landed_before_release = 0

        async def slow(row: scfeeds.FetchOutcome) -> None:
            nonlocal landed_before_release
            seen.append(row)
            if not consumer_free.is_set():
                landed_before_release = len(seen)
                await consumer_free.wait()

        async def release_later() -> None:
            await asyncio.sleep(0.5)
            consumer_free.set()

        releaser = asyncio.create_task(release_later())
        report = await scfeeds.fetch(
            urls, tmp_path / "dest", limits=3, progress=None, retry=False, on_item=slow
        )
        await releaser
    assert len(seen) == len(urls)
    assert {r.status for r in seen} == {"ok", "failed"}
    assert sorted(r.url for r in seen) == sorted(report.items["url"].to_list())
    assert sorted(r.index for r in seen) == list(range(len(urls)))
    assert all(r.source == urls[r.index] for r in seen)  # the caller's own source
    # while the consumer was blocked, at most one landed item per worker was handed over
    assert landed_before_release <= 3
