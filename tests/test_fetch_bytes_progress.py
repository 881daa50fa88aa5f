"""Progress in bytes as well as items: a bar that moves while a few large files arrive."""

from __future__ import annotations

from pathlib import Path

import pytest

from scfeeds._fetch import fetch
from scfeeds.portal import blob_sha256, serve_in_thread
from tests.progress_support import Events, progress_event

SIZE = 3 * 2**20


async def test_bytes_move_before_the_first_item_is_done(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    with serve_in_thread(tmp_path / "root", slow_body=4_000_000, access_log=False) as portal:
        urls = [f"{portal.url}/v1/blob/{SIZE}?seed={i}" for i in range(3)]
        events = Events()
        report = await fetch(urls, tmp_path / "d", limits=3, progress=events)
    assert report.succeeded == 3
    early = [e for e in events.seen if e.done == 0 and e.bytes_present > 0]
    assert early, "no event showed bytes arriving before the first item was done"
    # Three responses at once: every Content-Length is known, the total is exact.
    assert any(e.bytes_total == 3 * SIZE for e in early)
    shares = [e.bytes_present / e.bytes_total for e in early if e.bytes_total]
    assert max(shares) > 0.2
    assert shares == sorted(shares)
    last = events.seen[-1]
    assert (last.bytes_present, last.bytes_total, last.done) == (3 * SIZE, 3 * SIZE, 3)


async def test_a_listing_gives_the_total_before_any_response(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    with serve_in_thread(tmp_path / "root", latency=0.3, access_log=False) as portal:
        rows = [
            {
                "url": f"{portal.url}/v1/blob/{1000 * (i + 1)}?seed={i}",
                "bytes": 1000 * (i + 1),
                "sha256": blob_sha256(1000 * (i + 1), seed=i),
            }
            for i in range(4)
        ]
        events = Events()
        await fetch(rows, tmp_path / "d", limits=2, progress=events)
    first = events.seen[0]
    assert first.bytes_present == 0
    assert first.bytes_total == 10_000
    assert events.seen[-1].bytes_present == 10_000


def test_an_unknown_size_is_estimated_from_the_known_ones() -> None:
    from scfeeds._fetch._engine import _Engine

    engine = _Engine.__new__(_Engine)
    engine.sizes, engine.first_index = {}, {}
    engine.stats = type("S", (), {"total": None, "bytes_expected": 0})()  # type: ignore[assignment]
    assert engine._bytes_total() is None
    engine.first_index = {f"k{i}": i for i in range(4)}
    engine._expect("k0", 100)
    engine._expect("k1", 300)
    engine._expect("k1", 999)  # known once
    assert engine._bytes_total() == 800  # two of four known: 200 on average
    engine.stats.total = 4
    engine._expect("k2", 50)
    engine._expect("k3", 50)
    assert engine._bytes_total() == 500  # every size known: exact


def test_the_widget_bar_follows_bytes_when_they_are_known() -> None:
    pytest.importorskip("ipywidgets")
    from scfeeds.notebook import FetchProgress

    progress = FetchProgress(total=8, show=False)
    progress.update(
        progress_event(
            total=8,
            bytes=30 * 2**20,
            elapsed=3.0,
            throughput_bps=10 * 2**20,
            concurrency=8,
            in_flight=8,
            bytes_present=30 * 2**20,
            bytes_total=32 * 2**20,
        )
    )
    assert (progress.bar.value, progress.bar.max) == (938, 1000)
    text = progress.text()
    assert "30.0 MiB of 32.0 MiB" in text
    assert "ETA 0.2s" in text  # 2 MiB left at 10 MiB/s, though no item is done yet
