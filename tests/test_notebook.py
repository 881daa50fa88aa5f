"""scfeeds.notebook: the widgets' Python side, driven without a browser.

The fetch-facing tests use the real engine against the simulated portal on loopback; the
tuner's control logic is also checked against a fake driver whose behaviour is exact.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from IPython.lib.pretty import pretty

from scfeeds._fetch._engine import fetch
from scfeeds._fetch._plan import ChunkRequest, plan_chunks
from scfeeds._runner import run
from scfeeds.notebook import (
    ConcurrencyTuner,
    FeedDriver,
    FetchProgress,
    Probe,
    RunPlan,
    SweepResult,
    _svg,
    auto_progress,
    recommend,
)
from scfeeds.notebook._driver import page_request
from scfeeds.notebook._progress import eta_seconds
from scfeeds.portal import serve_in_thread
from tests.progress_support import progress_event as event


@pytest.fixture(scope="module")
def feed_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("portal")
    n = 6000
    pl.DataFrame({"po_number": [f"PO{i:06d}" for i in range(n)], "qty": list(range(n))}).write_csv(
        root / "orders.csv"
    )
    return root


@pytest.fixture
def portal(feed_root: Path) -> Iterator[tuple[str, dict[str, object]]]:
    with serve_in_thread(feed_root, latency=0.02, access_log=False) as p:
        with urllib.request.urlopen(p.url + "/v1/feeds") as resp:
            feed = json.load(resp)["feeds"][0]
        yield p.url, feed


# -- progress --------------------------------------------------------------------------


def test_progress_shows_every_number_and_an_eta() -> None:
    progress = FetchProgress(total=100, show=False)
    progress.update(
        event(
            done=25,
            bytes=3 * 2**20,
            elapsed=5.0,
            throughput_bps=2**20,
            retried=3,
            throttled=2,
            concurrency=6,
            in_flight=5,
        )
    )
    text = progress.text()
    for part in (
        "25/100 items",
        "3.0 MiB",
        "1.0 MiB/s",
        "3 retried",
        "2 throttled (429)",
        "0 failed",
        "concurrency 6 (5 in flight)",
        "ETA 15.0s",
    ):
        assert part in text
    assert progress.bar.value == 25
    assert progress.bar.max == 100
    assert progress.bar.bar_style == "info"
    assert 'data-status="running"' in progress.stats.value


def test_progress_green_when_done_red_and_sticky_when_anything_failed() -> None:
    ok = FetchProgress(total=10, show=False)
    ok.close(event(total=10, done=10, succeeded=10, finished=True, elapsed=1.0))
    assert (ok.status, ok.bar.bar_style) == ("done", "success")
    assert ok.bar.value == 10

    bad = FetchProgress(total=10, show=False)
    bad.update(event(total=10, done=3, failed=1, elapsed=0.5))
    assert (bad.status, bad.bar.bar_style) == ("failed", "danger")
    bad.close(event(total=10, done=10, succeeded=9, failed=1, finished=True, elapsed=1.0))
    assert (bad.status, bad.bar.bar_style) == ("failed", "danger")
    assert "1 failed" in bad.text()
    assert "failed in 1.0s" in bad.text()
    assert 'data-status="failed"' in bad.stats.value


def test_progress_redraws_at_most_max_rate_and_keeps_the_newest_event() -> None:
    progress = FetchProgress(total=10_000, show=False, max_rate=10)
    now = [0.0]
    progress._clock = lambda: now[0]
    for i in range(5000):
        now[0] = i * 0.001  # 1000 events per second for 5 s
        progress.update(event(total=10_000, done=i))
    # 10 redraws per second at most, the first event included: 50 over 5 s, not 5000.
    assert progress.renders == 50
    assert progress.last_event is not None
    assert progress.last_event.done == 4999
    progress.close(event(total=10_000, done=10_000, finished=True))
    assert progress.renders == 51
    assert progress.bar.value == 10_000


async def test_progress_trailing_redraw_shows_the_last_event_after_a_stall() -> None:
    progress = FetchProgress(total=10, show=False, max_rate=20)
    progress.update(event(total=10, done=1))
    progress.update(event(total=10, done=7))  # coalesced: too soon after the first
    assert progress.bar.value == 1
    await asyncio.sleep(0.2)
    assert progress.bar.value == 7
    assert progress.renders == 2


def test_progress_text_fallbacks() -> None:
    progress = FetchProgress(total=5, description="orders", show=False)
    label = progress._repr_mimebundle_()["text/plain"]
    progress.update(event(total=5, done=2, elapsed=1.0))
    # text/plain of the display is a stable label: nbval compares it on every re-run.
    assert progress._repr_mimebundle_()["text/plain"] == label == "FetchProgress('orders', total=5)"
    assert "application/vnd.jupyter.widget-view+json" in progress._repr_mimebundle_()
    assert pretty(progress) == progress.text()
    assert pretty(progress).startswith("orders: 2/5 items")


def test_eta_unknown_without_total_or_progress() -> None:
    assert eta_seconds(event(total=None, done=5, elapsed=1.0)) is None
    assert eta_seconds(event(done=0, elapsed=1.0)) is None
    assert eta_seconds(event(done=50, elapsed=2.0)) == pytest.approx(2.0)


def test_auto_progress_displays_and_returns_the_sink(capsys: pytest.CaptureFixture[str]) -> None:
    progress = auto_progress(total=3, description="landing")
    assert isinstance(progress, FetchProgress)
    assert progress.total == 3
    # Outside a kernel IPython's display prints repr(): the live text.
    assert "<FetchProgress landing: waiting for the first event>" in capsys.readouterr().out


async def test_progress_driven_by_a_real_fetch_with_failures(
    portal: tuple[str, dict[str, object]], tmp_path: Path
) -> None:
    url, _feed = portal
    good = [f"{url}/v1/blob/{1000 + i}" for i in range(6)]
    missing = [f"{url}/v1/feeds/no-such-feed"]
    progress = FetchProgress(show=False)
    report = await fetch(good + missing, tmp_path, progress=progress, retry=1, limits=3)
    assert report.failed == 1
    assert report.succeeded == 6
    assert progress.closed
    assert progress.status == "failed"
    assert progress.bar.bar_style == "danger"
    assert progress.text().startswith("fetch: 7/7 items")


def test_progress_works_through_scfeeds_run_from_sync_code(
    portal: tuple[str, dict[str, object]], tmp_path: Path
) -> None:
    url, _feed = portal
    progress = FetchProgress(show=False)
    report = run(
        fetch([f"{url}/v1/blob/{2000 + i}" for i in range(4)], tmp_path, progress=progress)
    )
    assert report.succeeded == 4
    assert progress.status == "done"
    assert progress.bar.bar_style == "success"
    assert progress.bar.value == 4


# -- tuner with a fake driver ----------------------------------------------------------


@dataclass
class FakeDriver:
    """Completes ``limit`` pages of ``chunk`` records every 10 ms; latency grows with the limit."""

    limit: int | None = None
    calls: list[int] | None = None
    fail_with: Exception | None = None
    page_bytes: int = 1000

    async def run(self, plan: RunPlan, probe: Probe) -> None:
        self.limit = plan.max_at_once
        if self.fail_with is not None:
            raise self.fail_with
        done = nbytes = records = 0
        elapsed = 0.0
        while plan.records is None or records < plan.records:
            await asyncio.sleep(0.01)
            elapsed += 0.01
            done += self.limit
            records += self.limit * plan.chunk_size()
            nbytes += self.limit * self.page_bytes
            for _ in range(self.limit):
                probe.on_latency(0.01 * self.limit)
            probe.on_event(
                event(
                    total=None,
                    done=done,
                    bytes=nbytes,
                    elapsed=elapsed,
                    concurrency=self.limit,
                    in_flight=self.limit,
                )
            )

    def set_max_at_once(self, n: int) -> None:
        self.calls = [*(self.calls or []), n]
        self.limit = n

    def current_limit(self) -> int | None:
        return self.limit


async def test_slider_move_changes_the_running_limit_immediately() -> None:
    driver = FakeDriver()
    tuner = ConcurrencyTuner(driver, max_at_once=2, interval=0.05)
    tuner.start()
    task = tuner.task
    assert task is not None
    for _ in range(500):  # until the first sample was drawn under the initial limit
        if tuner.probe is not None and tuner.probe.samples:
            break
        await asyncio.sleep(0.01)
    assert tuner.running
    assert driver.limit == 2
    assert tuner.button.description == "Stop"
    tuner.limit_slider.value = 12  # what a browser slider move does to the model
    assert driver.calls == [12]
    assert driver.limit == 12
    await asyncio.sleep(0.12)
    await tuner.stop()
    assert task.done()
    assert not tuner.running
    frame = tuner.samples()
    assert frame.height >= 3
    assert frame["limit"].to_list()[0] == 2
    assert frame["limit"].to_list()[-1] == 12
    assert frame["max_at_once"].to_list()[-1] == 12
    assert tuner.button.description == "Start"
    assert "stopped" in tuner.status.value
    assert "<svg" in tuner.charts.value
    assert "AIMD limit" in tuner.charts.value


async def test_chunk_slider_applies_to_pages_not_yet_planned() -> None:
    sizes: list[int] = []

    class Recording(FakeDriver):
        async def run(self, plan: RunPlan, probe: Probe) -> None:
            for _ in range(3):
                sizes.append(plan.chunk_size())
                await asyncio.sleep(0.02)

    tuner = ConcurrencyTuner(Recording(), chunk_size=500, chunk_sizes=[500, 2000])
    tuner.start()
    await asyncio.sleep(0.01)
    tuner.chunk_slider.value = 2000
    await tuner.wait()
    assert sizes[0] == 500
    assert sizes[-1] == 2000


async def test_button_starts_and_stops_the_background_fetch() -> None:
    tuner = ConcurrencyTuner(FakeDriver(), interval=0.05)
    tuner.button.click()
    await asyncio.sleep(0.05)
    assert tuner.running
    tuner.button.click()
    await asyncio.sleep(0.05)
    assert not tuner.running
    assert "stopped" in tuner.status.value


async def test_a_failing_fetch_is_shown_not_lost() -> None:
    tuner = ConcurrencyTuner(FakeDriver(fail_with=RuntimeError("portal down")), interval=0.05)
    tuner.start()
    await tuner.wait()
    assert isinstance(tuner.last_error, RuntimeError)
    assert "portal down" in tuner.status.value
    assert "error" in tuner.status.value


def test_start_needs_a_running_loop_and_valid_settings() -> None:
    with pytest.raises(ValueError, match=r"max_at_once must be in 1\.\.max_limit=64"):
        ConcurrencyTuner(FakeDriver(), max_at_once=65)
    with pytest.raises(RuntimeError, match="no running event loop"):
        ConcurrencyTuner(FakeDriver()).start()


def test_probe_cuts_intervals_into_rates_and_latency_quantiles() -> None:
    now = [0.0]
    probe = Probe(clock=lambda: now[0])
    now[0] = 1.0
    probe.on_event(event(done=10, bytes=10_000, throttled=2, in_flight=4))
    for ms in range(1, 101):
        probe.on_latency(ms / 1000)
    first = probe.sample(limit=8, max_at_once=8, chunk_size=100)
    assert (first.t, first.throughput_bps, first.items_per_s) == (1.0, 10_000, 10)
    assert first.p50 == pytest.approx(0.0505)
    assert first.p90 == pytest.approx(0.0901)
    assert first.throttled == 2
    now[0] = 3.0
    probe.on_event(event(done=30, bytes=50_000, throttled=2, in_flight=4))
    probe.srtt = 0.07  # no per-request latencies this interval: the live smoothed RTT
    second = probe.sample(limit=4, max_at_once=8, chunk_size=100)
    assert (second.throughput_bps, second.items_per_s, second.throttled) == (20_000, 10, 0)
    assert second.p50 == 0.07
    assert math.isnan(second.p90)
    probe.srtt = None
    now[0] = 4.0
    probe.on_event(event(done=50, bytes=60_000, in_flight=5))
    third = probe.sample(limit=4, max_at_once=8, chunk_size=100)
    assert third.p50 == pytest.approx(5 / 20)  # Little's law: 5 in flight / 20 items per s
    assert probe.frame().height == 3
    assert probe.frame()["limit"].to_list() == [8, 4, 4]


# -- the knee ---------------------------------------------------------------------------


def sweep_rows(points: list[tuple[int, int, float, float, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "max_at_once": c,
                "chunk_size": k,
                "throughput_bps": t,
                "p90_s": p90,
                "throttled": thr,
                "failed": 0,
            }
            for c, k, t, p90, thr in points
        ]
    )


def test_knee_is_best_throughput_before_429s() -> None:
    rows = sweep_rows(
        [
            (1, 500, 1.0, 0.02, 0),
            (4, 500, 3.5, 0.02, 0),
            (8, 500, 4.0, 0.03, 0),
            (16, 500, 4.6, 0.03, 7),  # faster, but the server throttled it
        ]
    )
    knee = recommend(rows)
    assert knee is not None
    assert knee["max_at_once"] == 8


def test_knee_stops_before_latency_rises() -> None:
    rows = sweep_rows([(1, 500, 1.0, 0.02, 0), (8, 500, 4.0, 0.03, 0), (16, 500, 4.5, 0.09, 0)])
    knee = recommend(rows, latency_rise=2.0)
    assert knee is not None
    assert knee["max_at_once"] == 8


def test_knee_prefers_fewer_requests_in_flight_when_throughput_ties() -> None:
    rows = sweep_rows([(4, 500, 4.0, 0.02, 0), (8, 500, 4.1, 0.02, 0), (16, 500, 4.15, 0.02, 0)])
    knee = recommend(rows, tolerance=0.05)
    assert knee is not None
    assert knee["max_at_once"] == 4


def test_knee_without_a_healthy_point_is_the_least_throttled() -> None:
    rows = sweep_rows([(4, 500, 4.0, 0.02, 9), (8, 500, 5.0, 0.02, 3)])
    knee = recommend(rows)
    assert knee is not None
    assert knee["max_at_once"] == 8
    assert recommend(rows.clear()) is None


async def test_sweep_with_fake_driver_returns_frame_knee_and_charts() -> None:
    class Saturating(FakeDriver):
        # Throughput grows up to 4 in flight; beyond, requests only queue (latency rises).
        async def run(self, plan: RunPlan, probe: Probe) -> None:
            self.limit = plan.max_at_once
            await asyncio.sleep(0.02)
            pages = min(self.limit, 4) * 5
            for _ in range(pages):
                probe.on_latency(0.01 * max(1.0, self.limit / 4))
            probe.on_event(event(done=pages, bytes=pages * 1000, elapsed=0.02))

    tuner = ConcurrencyTuner(Saturating())
    result = await tuner.sweep(concurrency=[1, 2, 4, 16], chunk_sizes=[100, 400], records=10)
    assert isinstance(result, SweepResult)
    results, knee = result
    assert results.shape == (8, 12)
    assert set(results["chunk_size"]) == {100, 400}
    assert knee is not None
    assert knee["max_at_once"] == 4
    html = result._repr_html_()
    assert "recommended: max_at_once=4" in html
    assert html.count("<svg") == 2


async def test_sweep_progress_line_names_each_point_before_it_runs() -> None:
    seen: list[tuple[int, int, str, str]] = []

    class Watching(FakeDriver):
        async def run(self, plan: RunPlan, probe: Probe) -> None:
            steps = tuner.sweep_progress
            assert steps is not None
            # the line already names this point, and counts the points before it as done
            seen.append((plan.max_at_once, steps.bar.value, steps.current, steps.label.value))
            await asyncio.sleep(0.01)
            probe.on_event(event(done=5, bytes=5000, elapsed=0.01))

    tuner = ConcurrencyTuner(Watching())
    result = await tuner.sweep(
        concurrency=[1, 2, 8], chunk_sizes=[100, 400], records=10, progress=False
    )
    steps = tuner.sweep_progress
    assert steps is not None
    assert [s[0] for s in seen] == [1, 2, 8, 1, 2, 8]
    assert [s[1] for s in seen] == [0, 1, 2, 3, 4, 5]
    assert seen[4][2] == "max_at_once=2, chunk size=400"
    assert "5/6 · max_at_once=2, chunk size=400" in seen[4][3]
    assert steps.done == steps.bar.value == steps.bar.max == 6
    assert steps.bar.bar_style == "success"
    assert steps.history[-1].startswith(f"6/6 · {result.text()}")
    assert "elapsed" in steps.history[-1]
    assert 'class="scfeeds-static"' in steps._repr_mimebundle_()["text/html"]


async def test_sweep_progress_shows_a_stopped_sweep() -> None:
    class Failing(FakeDriver):
        async def run(self, plan: RunPlan, probe: Probe) -> None:
            if plan.max_at_once == 4:
                raise asyncio.CancelledError
            probe.on_event(event(done=1, bytes=100, elapsed=0.01))

    tuner = ConcurrencyTuner(Failing())
    with pytest.raises(asyncio.CancelledError):
        await tuner.sweep(concurrency=[1, 2, 4, 8], records=10, progress=False)
    steps = tuner.sweep_progress
    assert steps is not None
    assert steps.done == 2
    assert steps.bar.bar_style == "warning"
    assert steps.history[-1].startswith("2/4 · stopped")


def test_sweep_progress_is_a_bar_in_a_terminal() -> None:
    # a child process on a pseudo-terminal: the sweep draws a tqdm bar on stderr
    import os
    import pty

    code = (
        "import asyncio\n"
        "from scfeeds.notebook import ConcurrencyTuner\n"
        "class D:\n"
        "    async def run(self, plan, probe):\n"
        "        await asyncio.sleep(0.01)\n"
        "    def set_max_at_once(self, n): pass\n"
        "    def current_limit(self): return None\n"
        "asyncio.run(ConcurrencyTuner(D()).sweep(concurrency=[1, 2, 3], records=1))\n"
    )
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.execv(sys.executable, [sys.executable, "-c", code])
    out = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out.decode(errors="replace")
    text = out.decode(errors="replace")
    assert "sweep" in text
    assert "3/3" in text
    assert "max_at_once=3" in text


# -- tuner against the real engine and portal -------------------------------------------


def probe_done(tuner: ConcurrencyTuner) -> int:
    event = tuner.probe.event if tuner.probe is not None else None
    return 0 if event is None else event.done


async def test_feed_driver_slider_changes_the_engine_limit_while_fetching(
    portal: tuple[str, dict[str, object]],
) -> None:
    _url, feed = portal
    records = feed["records"]
    assert isinstance(records, int)
    driver = FeedDriver(str(feed["lines_url"]), total=records)
    tuner = ConcurrencyTuner(driver, max_at_once=2, chunk_size=100, chunk_sizes=[100], interval=0.1)
    tuner.start()
    for _ in range(100):
        await asyncio.sleep(0.02)
        if driver.controller is not None and driver.controller.running:
            break
    assert driver.controller is not None
    assert driver.controller.max_at_once == 2
    tuner.limit_slider.value = 9
    ctl = driver.controller
    assert ctl is not None
    assert ctl.max_at_once == 9
    for _ in range(200):  # until progress under the new limit was seen (seconds on a busy CI)
        await asyncio.sleep(0.05)
        if probe_done(tuner) > 0 and len(tuner.probe.samples) >= 2:  # type: ignore[union-attr]
            break
    await tuner.stop()
    frame = tuner.samples()
    assert frame["done"].max() > 0  # type: ignore[operator]
    assert frame["throughput_bps"].max() > 0  # type: ignore[operator]
    assert 9 in frame["max_at_once"].to_list()


async def test_feed_driver_sweep_measures_real_transfers(
    portal: tuple[str, dict[str, object]],
) -> None:
    _url, feed = portal
    records = feed["records"]
    assert isinstance(records, int)
    tuner = ConcurrencyTuner(FeedDriver(str(feed["lines_url"]), total=records))
    results, knee = await tuner.sweep(concurrency=[1, 4], chunk_sizes=[100], records=2000)
    assert results["records"].to_list() == [2000, 2000]
    assert (results["throughput_bps"] > 0).all()
    # 20 pages of 100 records, 20 ms latency each: one at a time takes >= 400 ms, four at a
    # time ideally 100 ms (the margin absorbs a busy machine).
    one, four = results.sort("max_at_once")["seconds"].to_list()
    assert one >= 0.4
    assert four < one
    assert not math.isnan(results["p90_s"][0])
    assert results["p90_s"][0] >= 0.02
    assert knee is not None


@pytest.mark.parametrize(
    "url", ["http://h/v1/feeds/a/lines", "http://h/v1/feeds/a/lines?format=csv"]
)
def test_page_request_matches_plan_chunks(url: str) -> None:
    for page in plan_chunks(url, total=2300, chunk_size=500):
        assert page_request(url, offset=page.offset, limit=page.limit) == page


async def test_feed_driver_lands_every_record_once_when_chunk_size_changes_mid_pass(
    portal: tuple[str, dict[str, object]],
) -> None:
    _url, feed = portal
    records = feed["records"]
    assert isinstance(records, int)
    sizes = iter([700, 700, 300] + [1000] * 100)
    seen: list[tuple[int, int]] = []
    driver = FeedDriver(str(feed["lines_url"]), total=records)
    real_pages = driver._pages

    async def spy(plan: RunPlan, start: int, budget: int | None) -> AsyncIterator[ChunkRequest]:
        async for page in real_pages(plan, start, budget):
            seen.append((page.offset, page.limit))
            yield page

    driver._pages = spy  # type: ignore[method-assign]
    probe = Probe()
    await driver.run(RunPlan(max_at_once=3, chunk_size=lambda: next(sizes), records=records), probe)
    # Pages tile the feed exactly: no gap, no overlap, whatever sizes were asked for.
    assert seen[:3] == [(0, 700), (700, 700), (1400, 300)]
    assert sum(limit for _, limit in seen) == records
    assert all(a + n == b for (a, n), (b, _) in itertools.pairwise(seen))
    assert probe.event is not None
    assert probe.event.failed == 0
    assert probe.event.done == len(seen)


# -- charts and the import boundary ------------------------------------------------------


def test_nice_ticks_cover_the_data() -> None:
    for lo, hi in [(0, 1.37), (0, 1_450_000), (3, 3), (0.002, 0.061)]:
        ticks = _svg.nice_ticks(lo, hi)
        assert ticks[0] <= lo
        assert ticks[-1] >= hi
        assert len(ticks) >= 2


def test_line_chart_skips_nan_and_escapes_labels() -> None:
    svg = _svg.line_chart({"p<50>": [(0, math.nan), (1, 2.0), (2, 3.0)]}, title="a & b")
    assert svg.startswith("<svg")
    assert "a &amp; b" in svg
    assert "p&lt;50&gt;" in svg
    assert svg.count("<polyline") == 1
    assert "nan" not in svg


def test_import_scfeeds_does_not_import_widgets_or_memray() -> None:
    code = (
        "import sys, scfeeds, scfeeds._fetch._engine;"
        "bad = [m for m in ('ipywidgets', 'memray', 'scfeeds.notebook') if m in sys.modules];"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
