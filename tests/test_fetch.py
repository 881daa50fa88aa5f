"""The fetch engine against a real aiohttp server on loopback (routes in test_fetch_app)."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import time
from pathlib import Path

import polars as pl
import pytest

from scfeeds._config import Limits, Retry, Timeout
from scfeeds._fetch import (
    AsyncFeedIngestor,
    ChunkRequest,
    FetchController,
    FetchReport,
    ProgressEvent,
    fetch,
    parse_retry_after,
    plan_chunks,
)
from scfeeds.exceptions import ConfigurationError, FetchFailures
from tests.test_fetch_app import SECRET, Server, body, serve, sha

FAST = Retry(4, backoff=0.01, max_backoff=0.05)


@pytest.fixture
async def server() -> Server:  # type: ignore[misc]
    async with serve() as s:
        yield s


def landed(dest: Path) -> dict[str, str]:
    """Relative path -> sha256 of every landed file (the .scfeeds folder excluded)."""
    return {
        p.relative_to(dest).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in dest.rglob("*")
        if p.is_file() and ".scfeeds" not in p.relative_to(dest).parts
    }


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def temp_files(dest: Path) -> list[Path]:
    return [p for p in dest.rglob("*") if p.suffix in (".part", ".tmp")]


async def test_lands_every_item_with_its_sha256(server: Server, tmp_path: Path) -> None:
    urls = [f"{server.url}/data/f{i}?n={1000 * (i + 1)}" for i in range(12)]
    report = await fetch(urls, tmp_path, limits=4, progress=None)

    assert isinstance(report, FetchReport)
    assert (report.succeeded, report.failed, report.unchanged) == (12, 0, 0)
    assert report.items.columns[:7] == [
        "url",
        "path",
        "status",
        "bytes",
        "sha256",
        "attempts",
        "error",
    ]
    expected = {f"f{i}": sha(f"f{i}", 1000 * (i + 1)) for i in range(12)}
    assert report.items["sha256"].to_list() == list(expected.values())
    files = landed(tmp_path)
    assert sorted(files.values()) == sorted(expected.values())
    assert report.bytes == sum(1000 * (i + 1) for i in range(12))
    assert report.latency_p50 is not None
    assert report.latency_p99 is not None
    assert report.latency_p50 <= report.latency_p99
    manifest = (tmp_path / ".scfeeds" / "manifest.jsonl").read_text().splitlines()
    assert len(manifest) == 12
    assert {json.loads(line)["sha256"] for line in manifest} == set(expected.values())
    assert temp_files(tmp_path) == []
    ok, failed = report
    assert ok.height == 12
    assert failed.height == 0


async def test_rerun_revalidates_with_304_and_skips_items_without_validator(
    server: Server, tmp_path: Path
) -> None:
    with_etag = [f"{server.url}/data/e{i}" for i in range(3)]
    no_validator = [f"{server.url}/cd/c{i}?filename=c{i}.txt" for i in range(2)]
    first = await fetch(with_etag + no_validator, tmp_path, progress=None)
    assert first.succeeded == 5
    hits_before = dict(server.state.hits)

    again = await fetch(with_etag + no_validator, tmp_path, progress=None)

    assert again.unchanged == 5
    assert again.succeeded == 0
    assert again.items["http_status"].to_list()[:3] == [304, 304, 304]
    # Conditional GETs went out for ETag'd items ...
    for i in range(3):
        assert server.state.hits[f"/data/e{i}"] == hits_before[f"/data/e{i}"] + 1
        assert server.state.headers[f"/data/e{i}"][-1]["If-None-Match"].startswith('"')
    # ... and nothing at all for complete items the server gave no validator for.
    for i in range(2):
        assert server.state.hits[f"/cd/c{i}"] == hits_before[f"/cd/c{i}"]
    assert again.requests == 3


async def test_resume_false_downloads_again(server: Server, tmp_path: Path) -> None:
    url = f"{server.url}/data/x"
    await fetch([url], tmp_path, progress=None)
    report = await fetch([url], tmp_path, progress=None, resume=False)
    assert report.succeeded == 1
    assert server.state.hits["/data/x"] == 2
    assert "If-None-Match" not in server.state.headers["/data/x"][-1]


async def test_retryable_statuses_are_retried_others_are_rows(
    server: Server, tmp_path: Path
) -> None:
    urls = [
        f"{server.url}/flaky/2/a",
        f"{server.url}/status/404",
        f"{server.url}/status/503",
        f"{server.url}/data/ok",
    ]
    report = await fetch(urls, tmp_path, retry=FAST, progress=None)

    rows = {
        r["url"].rsplit("/", 2)[-2] + "/" + r["url"].rsplit("/", 1)[-1]: r
        for r in report.items.to_dicts()
    }
    assert rows["2/a"]["status"] == "ok"
    assert rows["2/a"]["attempts"] == 3
    assert rows["status/404"]["status"] == "failed"
    assert rows["status/404"]["attempts"] == 1
    assert "HTTPStatusError" in rows["status/404"]["error"]
    assert rows["status/503"]["status"] == "failed"
    assert rows["status/503"]["attempts"] == 4
    assert rows["data/ok"]["status"] == "ok"
    assert server.state.hits["/status/503"] == 4
    assert report.failed == 2
    assert report.retried == 2 + 3
    with pytest.raises(FetchFailures, match="2 of 4 items failed"):
        report.raise_for_failures()


async def test_connection_reset_is_retried(server: Server, tmp_path: Path) -> None:
    report = await fetch([f"{server.url}/reset/r?n=3000"], tmp_path, retry=FAST, progress=None)
    assert report.succeeded == 1
    assert server.state.hits["/reset/r"] >= 2
    assert landed(tmp_path) == {"reset/r__n=3000": sha("r", 3000)}


async def test_truncated_body_resumes_with_range_and_if_range(
    server: Server, tmp_path: Path
) -> None:
    report = await fetch(
        [f"{server.url}/truncated/t?n=200000"], tmp_path, retry=FAST, progress=None
    )

    assert report.succeeded == 1
    assert report.items["attempts"][0] == 2
    second = server.state.headers["/truncated/t"][1]
    assert second["Range"] == "bytes=100000-"
    assert second["If-Range"].startswith('"')
    assert report.items["http_status"][0] == 206
    assert landed(tmp_path) == {"truncated/t__n=200000": sha("t", 200000)}
    assert temp_files(tmp_path) == []


@pytest.mark.parametrize("form", ["retry-after", "retry-after-date"])
async def test_retry_after_pauses_every_worker_of_the_host(
    server: Server, tmp_path: Path, form: str
) -> None:
    server.state.latency = 0.03
    # An HTTP-date has one-second resolution, so ask for 2 s to be sure of a real pause.
    secs = 1 if form == "retry-after" else 2
    urls = [f"{server.url}/{form}/{secs}/ra"] + [f"{server.url}/data/d{i}" for i in range(40)]
    report = await fetch(
        urls, tmp_path, limits=Limits(4, adaptive=False), retry=FAST, progress=None
    )

    assert report.succeeded == 41
    assert report.throttled == 1
    t429 = server.state.times[f"/{form}/{secs}/ra"][0]
    retry_at = server.state.times[f"/{form}/{secs}/ra"][1]
    others = sorted(t for k, ts in server.state.times.items() if k.startswith("/data/") for t in ts)
    # The 429 is answered ~latency after arrival; requests already sent may still arrive in
    # that window, but nothing new reaches the host until the pause is over.
    quiet = [t for t in others if t429 + 0.2 < t < retry_at - 0.05]
    assert quiet == []
    assert retry_at - t429 >= 0.9
    assert any(t > retry_at - 0.05 for t in others)


async def test_retry_after_beyond_the_cap_fails_the_item_fast(
    server: Server, tmp_path: Path
) -> None:
    t0 = time.monotonic()
    report = await fetch(
        [f"{server.url}/retry-after/3600/x"],
        tmp_path,
        retry=Retry(3, max_retry_after=5),
        progress=None,
    )
    assert time.monotonic() - t0 < 2
    assert report.failed == 1
    assert "max_retry_after" in report.items["error"][0]


def test_parse_retry_after_both_forms() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


async def test_secrets_never_reach_manifest_report_or_logs(
    server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    urls = [
        f"{server.url}/auth/a",
        f"{server.url}/auth/b?token=qs-s3cret-token&part=1",
        f"{server.url}/status/404?api_key=qs-s3cret-key",
        f"{server.url}/flaky/1/c?signature=qs-s3cret-sig",
    ]
    report = await fetch(
        urls, tmp_path, headers={"Authorization": SECRET}, retry=FAST, progress=None
    )

    assert report.succeeded == 3
    assert report.failed == 1
    assert server.state.headers["/auth/a"][0]["Authorization"] == SECRET  # it was sent
    texts = {
        "manifest": (tmp_path / ".scfeeds" / "manifest.jsonl").read_text(),
        "repr": repr(report),
        "html": report._repr_html_(),
        "items": report.items.write_csv(),
        "logs": caplog.text,
        "paths": "\n".join(landed(tmp_path)),
    }
    for where, text in texts.items():
        for secret in ("s3cret-token-value", "qs-s3cret"):
            assert secret not in text, f"{secret} leaked into {where}"
    assert "token=REDACTED" in texts["items"]
    assert "part=1" in texts["paths"]  # non-secret query still names the file


@pytest.mark.parametrize(
    "url_path",
    ["/data/..%2F..%2F..%2Fescape", "/data/%2e%2e", "/data/..%5C..%5Cescape", "/data/.hidden"],
)
async def test_url_paths_cannot_escape_dest(server: Server, tmp_path: Path, url_path: str) -> None:
    dest = tmp_path / "dest"
    report = await fetch([server.url + url_path], dest, progress=None)
    path = report.items["path"][0]
    assert report.items["status"][0] in ("ok", "failed")
    if path is not None:
        assert (dest / path).resolve().is_relative_to(dest.resolve())
        assert not any(part.startswith(".") for part in Path(path).parts)
    assert names(tmp_path) == ["dest"]


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("../../evil.txt", "evil.txt"),
        ("..\\\\..\\\\evil.bat", "evil.bat"),
        ("/etc/passwd", "passwd"),
        ("..", "_"),
        ("invoice 42.x12", "invoice_42.x12"),
    ],
)
async def test_content_disposition_names_are_sanitised(
    server: Server, tmp_path: Path, filename: str, expected: str
) -> None:
    dest = tmp_path / "dest"
    from urllib.parse import quote

    report = await fetch(
        [f"{server.url}/cd/x?n=10&filename={quote(filename)}"], dest, progress=None
    )
    assert report.succeeded == 1
    assert report.items["path"][0] == f"cd/{expected}"
    assert landed(dest) == {f"cd/{expected}": sha("x", 10)}
    assert names(tmp_path) == ["dest"]


async def test_max_bytes_fails_the_item_and_lands_nothing(server: Server, tmp_path: Path) -> None:
    report = await fetch(
        [f"{server.url}/data/big?n=50000", f"{server.url}/data/small?n=100"],
        tmp_path,
        max_bytes=10_000,
        progress=None,
    )
    assert report.items["status"].to_list() == ["failed", "ok"]
    assert "max_bytes" in report.items["error"][0]
    assert list(landed(tmp_path)) == ["data/small__n=100"]
    assert temp_files(tmp_path) == []


async def test_cancellation_leaves_no_temporary_files(server: Server, tmp_path: Path) -> None:
    urls = [f"{server.url}/slow/s{i}?n=100000&pace=0.02" for i in range(6)]
    task = asyncio.create_task(fetch(urls, tmp_path, limits=3, progress=None))
    await asyncio.sleep(0.4)
    assert list((tmp_path / ".scfeeds" / "partial").glob("*.part"))  # mid-transfer
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert temp_files(tmp_path) == []
    assert landed(tmp_path) == {}


async def test_per_attempt_deadline_cuts_off_a_trickle(server: Server, tmp_path: Path) -> None:
    t0 = time.monotonic()
    report = await fetch(
        [f"{server.url}/slow/t?n=100000&pace=0.01"],
        tmp_path,
        timeout=Timeout(5, item=0.3),
        retry=Retry(2, backoff=0.01),
        progress=None,
    )
    assert time.monotonic() - t0 < 3
    assert report.failed == 1
    assert "timeout" in report.items["error"][0]
    assert report.items["attempts"][0] == 2


async def test_live_max_at_once_change_is_observed(server: Server, tmp_path: Path) -> None:
    server.state.latency = 0.05
    ctl = FetchController()
    urls = [f"{server.url}/data/l{i}" for i in range(200)]
    task = asyncio.create_task(
        fetch(urls, tmp_path, limits=Limits(2, adaptive=False), controller=ctl, progress=None)
    )
    await asyncio.sleep(0.3)
    assert server.state.peak == 2
    assert ctl.max_at_once == 2
    assert set(ctl.host_limits().values()) == {2}
    ctl.set_max_at_once(12)
    await asyncio.sleep(0.4)
    assert server.state.peak == 12
    assert set(ctl.host_limits().values()) == {12}
    ctl.set_max_at_once(3)
    await asyncio.sleep(0.2)
    server.state.peak = 0
    await asyncio.sleep(0.3)
    assert 1 <= server.state.peak <= 3
    report = await task
    assert report.succeeded == 200
    assert report.concurrency == 3
    with pytest.raises(ConfigurationError, match="ceiling"):
        ctl.set_max_at_once(ctl.ceiling + 1)


async def test_aimd_lowers_the_limit_under_429_and_raises_it_when_healthy(
    server: Server, tmp_path: Path
) -> None:
    server.state.cap = 4
    ctl = FetchController()
    samples: list[int] = []

    async def sample() -> None:
        while True:
            samples.extend(ctl.host_limits().values())
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    urls = [f"{server.url}/limited/a{i}?t=0.02" for i in range(150)]
    report = await fetch(
        urls,
        tmp_path,
        limits=Limits(32),
        retry=Retry(10, backoff=0.01),
        controller=ctl,
        progress=None,
    )
    assert report.succeeded == 150
    assert report.throttled > 0
    low = min(samples)
    assert low <= 4  # halved from 32 down to the server's capacity
    n429_adaptive = server.state.n429

    # Healthy again: the limit climbs back while it is in use.
    server.state.cap = 1_000_000
    samples.clear()
    more = [f"{server.url}/limited/b{i}?t=0.02" for i in range(300)]
    ctl2 = FetchController()
    task = asyncio.create_task(
        fetch(more, tmp_path, limits=Limits(32), controller=ctl2, progress=None)
    )
    while not ctl2.host_limits():  # noqa: ASYNC110 - polling the engine from outside
        await asyncio.sleep(0.005)
    gate = next(iter(ctl2._hosts.values()))
    gate.on_congestion(started=-1.0)  # as if a 429 had arrived
    gate.on_congestion(started=-1.0)  # ignored: sent before the last decrease
    after_decrease = gate.limit
    assert after_decrease == 16
    report2 = await task
    assert report2.host_limits[next(iter(report2.host_limits))] > after_decrease
    sampler.cancel()

    # Fixed concurrency against the same cap draws far more 429s.
    server.state.cap = 4
    server.state.n429 = 0
    fixed = await fetch(
        [f"{server.url}/limited/c{i}?t=0.02" for i in range(150)],
        tmp_path,
        limits=Limits(32, adaptive=False),
        retry=Retry(30, backoff=0.01),
        progress=None,
    )
    assert fixed.succeeded == 150
    assert server.state.n429 > 2 * n429_adaptive


async def test_progress_events_are_throttled_and_end_with_finished(
    server: Server, tmp_path: Path
) -> None:
    server.state.latency = 0.02
    events: list[tuple[float, ProgressEvent]] = []
    urls = [f"{server.url}/data/p{i}" for i in range(60)]
    report = await fetch(
        urls, tmp_path, limits=2, progress=lambda e: events.append((time.monotonic(), e))
    )
    assert len(events) >= 2
    assert events[-1][1].finished
    assert events[-1][1].done == 60
    assert events[-1][1].total == 60
    assert not any(e.finished for _, e in events[:-1])
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(events[:-1])]  # the final one is immediate
    assert all(g >= 0.2 for g in gaps)
    assert events[-1][1].succeeded == report.succeeded
    dones = [e.done for _, e in events]
    assert dones == sorted(dones)


async def test_progress_object_with_update_close_and_attach(server: Server, tmp_path: Path) -> None:
    class Sink:
        def __init__(self) -> None:
            self.updates = 0
            self.closed: ProgressEvent | None = None
            self.controller: FetchController | None = None

        def attach(self, controller: FetchController) -> None:
            self.controller = controller

        def update(self, event: ProgressEvent) -> None:
            self.updates += 1

        def close(self, event: ProgressEvent) -> None:
            self.closed = event

    sink = Sink()
    await fetch([f"{server.url}/data/o"], tmp_path, progress=sink)
    assert sink.closed is not None
    assert sink.closed.finished
    assert sink.closed.succeeded == 1
    assert isinstance(sink.controller, FetchController)


async def test_listing_sources_verify_sha256(server: Server, tmp_path: Path) -> None:
    rows = [
        {"id": "a", "url": f"{server.url}/data/a?n=500", "sha256": sha("a", 500), "bytes": 500},
        {"id": "b", "url": f"{server.url}/data/b?n=500", "sha256": "0" * 64, "bytes": 500},
        {
            "id": "c",
            "url": f"{server.url}/data/c?n=500",
            "sha256": sha("c", 500),
            "bytes": 500,
            "path": "SUP001/po_lines/c.x12",
        },
    ]
    for sources in (rows, {"feeds": rows}, pl.DataFrame(rows, strict=False)):
        dest = tmp_path / type(sources).__name__
        report = await fetch(sources, dest, retry=FAST, progress=None)
        assert report.items["status"].to_list() == ["ok", "failed", "ok"]
        assert "listing says" in report.items["error"][1]
        assert report.items["path"][2] == "SUP001/po_lines/c.x12"
        assert landed(dest)["SUP001/po_lines/c.x12"] == sha("c", 500)


async def test_generators_and_duplicate_urls_land_once(server: Server, tmp_path: Path) -> None:
    def gen():  # a lazily consumed source
        for i in range(5):
            yield f"{server.url}/data/g{i % 3}"

    report = await fetch(gen(), tmp_path, progress=None)
    assert report.items.height == 5
    assert report.items["status"].to_list() == ["ok", "ok", "ok", "unchanged", "unchanged"]
    assert len(landed(tmp_path)) == 3
    assert sum(server.state.hits[f"/data/g{i}"] for i in range(3)) == 3


def test_plan_chunks_covers_the_feed_exactly() -> None:
    chunks = plan_chunks("http://h/v1/feeds/f1/lines?format=csv", total=1001, chunk_size=250)
    assert [(c.offset, c.limit) for c in chunks] == [
        (0, 250),
        (250, 250),
        (500, 250),
        (750, 250),
        (1000, 1),
    ]
    assert chunks[1].url == "http://h/v1/feeds/f1/lines?format=csv&offset=250&limit=250"
    assert chunks[4].path == "v1/feeds/f1/lines/000000001000.csv"
    assert plan_chunks("http://h/x", total=0, chunk_size=10) == []
    with pytest.raises(ConfigurationError, match="chunk_size"):
        plan_chunks("http://h/x", total=10, chunk_size=0)


async def test_chunk_requests_land_at_their_planned_paths(server: Server, tmp_path: Path) -> None:
    chunks = [
        ChunkRequest(url=f"{server.url}/data/k{i}", offset=i, limit=1, path=f"feed/{i:04d}.ndjson")
        for i in range(3)
    ]
    report = await fetch(chunks, tmp_path, progress=None)
    assert sorted(landed(tmp_path)) == ["feed/0000.ndjson", "feed/0001.ndjson", "feed/0002.ndjson"]
    assert report.succeeded == 3


def test_bad_arguments_say_how_to_fix_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="limits=20"):
        Limits.coerce("many")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="positive int"):
        Limits(0)
    with pytest.raises(ConfigurationError, match="not an http"):
        asyncio.run(fetch(["ftp://x/y"], tmp_path, progress=None))
    with pytest.raises(ConfigurationError, match="progress must be"):
        asyncio.run(fetch([], tmp_path, progress=42))


def test_option_shorthands() -> None:
    assert Limits(20) == Limits.coerce(20)
    assert repr(Limits(20)).startswith("Limits(max_at_once=20,")
    assert Limits.coerce(20).max_at_once == 20
    assert Limits.coerce(None) == Limits()
    assert Limits(8, max_per_host=4).host_ceiling == 4
    assert Retry.coerce(3).attempts == 3
    assert Retry.coerce(False).attempts == 1
    assert 429 in Retry().statuses
    assert 501 not in Retry().statuses
    t = Timeout.coerce(5)
    assert (t.connect, t.read) == (5.0, 5.0)
    assert Timeout(5, read=60).read == 60.0
    with pytest.raises(TypeError):
        Limits(1, 2)  # type: ignore[misc]
    with pytest.raises(AttributeError):
        Limits(1).max_at_once = 3  # type: ignore[misc]


async def test_seed_interface_lands_instead_of_buffering(server: Server, tmp_path: Path) -> None:
    urls = [f"{server.url}/data/s{i}?n=2000" for i in range(5)] + [f"{server.url}/status/404"]
    async with AsyncFeedIngestor(concurrency_limit=3, dest=tmp_path, retry=FAST) as ingestor:
        result = await ingestor.process_feed(urls, {"Authorization": SECRET}, "b1")
        assert len(ingestor.plan("http://h/v1/feeds/x/lines", 1200)) == 3
    assert (result.batch_id, result.success_count, result.error_count) == ("b1", 5, 1)
    assert result.processed_bytes == 10_000
    assert result.failed_records[0]["url"].endswith("/status/404")
    assert len(landed(tmp_path / "b1")) == 5
    assert body("s0", 2000) == (tmp_path / "b1" / "data" / "s0__n=2000").read_bytes()


async def test_max_per_host_caps_concurrency(server: Server, tmp_path: Path) -> None:
    server.state.latency = 0.03
    urls = [f"{server.url}/data/h{i}" for i in range(20)]
    report = await fetch(urls, tmp_path, limits=Limits(8, max_per_host=2), progress=None)
    assert report.succeeded == 20
    assert server.state.peak == 2


async def test_max_per_second_spaces_requests(server: Server, tmp_path: Path) -> None:
    urls = [f"{server.url}/data/r{i}" for i in range(50)]
    report = await fetch(urls, tmp_path, limits=Limits(8, max_per_second=20), progress=None)
    assert report.succeeded == 50
    times = sorted(t for k, ts in server.state.times.items() if k.startswith("/data/r") for t in ts)
    # aiolimiter lets a bucket's worth (20) through at once, then 20 per second: (50 - 20) / 20
    # = 1.5 s, with slack for a busy machine. Unlimited, 50 loopback requests take ~0.1 s.
    assert times[-1] - times[0] >= 1.2


async def test_tasks_stay_o_of_concurrency_not_of_sources(server: Server, tmp_path: Path) -> None:
    peak = 0
    stop = asyncio.Event()

    async def count() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, len(asyncio.all_tasks()))
            await asyncio.sleep(0.005)

    def sources():
        for i in range(600):
            yield f"{server.url}/data/t{i}?n=10"

    counter = asyncio.create_task(count())
    baseline = len(asyncio.all_tasks())
    report = await fetch(sources(), tmp_path, limits=4, progress=None)
    stop.set()
    await counter
    assert report.succeeded == 600
    # 4 workers + producer + heartbeat, plus the in-process server's tasks for 4 connections
    # (14 seen); one task per source would be 600.
    assert peak - baseline <= 24, peak - baseline
