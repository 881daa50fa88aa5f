"""An interrupted fetch says so: "interrupted", not failed; partial bodies kept and resumed with
Range by the next run; one line instead of a traceback; no empty manifest left behind."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest

from scfeeds._fetch import fetch
from scfeeds.portal import blob_sha256, serve_in_thread
from tests.progress_support import Events, progress_event

SIZE = 4 * 2**20  # above RESUME_MIN_BYTES: resumable across runs


def partials(dest: Path) -> dict[str, int]:
    found = (dest / ".scfeeds" / "partial").glob("*.part")
    return {p.stem: p.stat().st_size for p in found}


async def until(check: Any) -> None:
    """Poll ``check`` (files on disk, a server in another thread: nothing to wait on)."""
    async with asyncio.timeout(20.0):
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_an_interrupt_is_interrupted_keeps_bodies_and_the_next_run_resumes(
    tmp_path: Path,
) -> None:
    (tmp_path / "root").mkdir()
    dest = tmp_path / "dest"
    with serve_in_thread(tmp_path / "root", slow_body=1_000_000, access_log=False) as portal:
        urls = [f"{portal.url}/v1/blob/{SIZE}?seed={i}" for i in range(3)]
        events = Events()
        task = asyncio.create_task(fetch(urls, dest, limits=3, progress=events))
        await until(lambda: len(partials(dest)) == 3 and min(partials(dest).values()) > 2**18)
        task.cancel()
        with pytest.raises(asyncio.CancelledError) as info:
            await task

        # One line, for IPython's display of a top-level await and as a note elsewhere.
        lines = info.value._render_traceback_()  # type: ignore[attr-defined]
        assert len(lines) == 1
        assert lines[0].startswith("fetch interrupted after ")
        assert "0 of 3 items landed, 3 interrupted" in lines[0]
        assert "3 partial bodies" in lines[0]
        assert "resumes them with Range" in lines[0]
        assert info.value.__notes__ == lines
        last = events.seen[-1]
        assert last.finished
        assert (last.interrupted, last.failed, last.done) == (3, 0, 0)

        kept = partials(dest)
        assert len(kept) == 3
        assert all(0 < n < SIZE for n in kept.values())
        assert not (dest / ".scfeeds" / "manifest.jsonl").exists()  # nothing landed

        portal.set_knobs(slow_body=None)
        portal.reset_stats()
        again = Events()
        report = await fetch(urls, dest, limits=3, progress=again)
        assert portal_statuses(portal) == {"206": 3}
    # Bytes progress counts what is on disk, the resumed heads included.
    assert again.seen[-1].bytes_present == again.seen[-1].bytes_total == 3 * SIZE
    assert (report.succeeded, report.failed) == (3, 0)
    assert report.bytes == 3 * SIZE - sum(kept.values())  # only the missing tails
    for i, path in enumerate(report.items["path"].to_list()):
        digest = hashlib.sha256((dest / path).read_bytes()).hexdigest()
        assert digest == blob_sha256(SIZE, seed=i)
    assert partials(dest) == {}


def portal_statuses(portal: Any) -> dict[str, int]:
    by_status: dict[str, int] = portal.stats()["by_status"]
    return by_status


async def test_an_interrupt_before_any_byte_leaves_nothing_behind(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    dest = tmp_path / "dest"
    with serve_in_thread(tmp_path / "root", latency=5.0, access_log=False) as portal:
        task = asyncio.create_task(
            fetch([f"{portal.url}/v1/blob/1000?seed=1"], dest, progress=None)
        )
        await until(lambda: portal.stats()["requests"] >= 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError) as info:
            await task
    line = info.value._render_traceback_()[0]  # type: ignore[attr-defined]
    assert "0 of 1 items landed, 1 interrupted" in line
    assert "partial" not in line
    assert not (dest / ".scfeeds").exists()


def test_the_progress_widget_shows_interrupted_not_failed() -> None:
    pytest.importorskip("ipywidgets")
    from scfeeds.notebook import FetchProgress

    progress = FetchProgress(total=8, show=False)
    progress.close(
        progress_event(
            total=8,
            done=5,
            succeeded=5,
            bytes=30 * 2**20,
            elapsed=2.0,
            throughput_bps=15e6,
            concurrency=8,
            finished=True,
            interrupted=3,
        )
    )
    assert progress.status == "interrupted"
    assert "3 interrupted" in progress.text()
    assert "interrupted in" in progress.text()
    assert progress.bar.bar_style == "warning"


def test_a_top_level_await_in_ipython_prints_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest
) -> None:
    """What a notebook cell shows when its ``await fetch(...)`` is interrupted."""
    interactiveshell = pytest.importorskip("IPython.core.interactiveshell")
    (tmp_path / "root").mkdir()
    shell = interactiveshell.InteractiveShell.instance()
    request.addfinalizer(interactiveshell.InteractiveShell.clear_instance)  # no shell leaks
    with serve_in_thread(tmp_path / "root", slow_body=500_000, access_log=False) as portal:
        shell.user_ns.update(url=f"{portal.url}/v1/blob/{SIZE}?seed=2", dest=tmp_path / "d")
        shell.run_cell(
            "import asyncio\n"
            "from scfeeds._fetch import fetch\n"
            "async def interrupted():\n"
            "    task = asyncio.create_task(fetch([url], dest, progress=None))\n"
            "    await asyncio.sleep(0.5)\n"
            "    task.cancel()\n"
            "    await task\n"
        )
        capsys.readouterr()
        result = shell.run_cell("await interrupted()")
    out = capsys.readouterr()
    assert isinstance(result.error_in_exec, asyncio.CancelledError)
    shown = [line for line in (out.out + out.err).splitlines() if line.strip()]
    assert len(shown) == 1, shown
    assert shown[0].startswith("fetch interrupted after ")
    assert "Traceback" not in out.out + out.err
