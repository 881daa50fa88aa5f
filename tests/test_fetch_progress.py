"""progress="auto": a tqdm bar on a terminal, one summary line otherwise, never ipywidgets."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import pty
import struct
import sys
import termios
import textwrap
from pathlib import Path

import pytest

from scfeeds._fetch import fetch
from tests.test_fetch_app import serve


async def test_auto_without_a_terminal_logs_one_summary_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.INFO, logger="scfeeds.fetch")
    async with serve() as server:
        server.state.latency = 0.02
        urls = [f"{server.url}/data/a{i}" for i in range(30)]
        await fetch(urls, tmp_path, limits=2, progress="auto")
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out == ""
    lines = [r.getMessage() for r in caplog.records if r.name == "scfeeds.fetch"]
    assert lines == [
        "fetch finished: 30 items, 30 ok, 0 unchanged, 0 failed, 0.0 MB in "
        + lines[0].rsplit(" in ", 1)[1]
    ]


async def test_auto_on_a_terminal_draws_a_tqdm_bar(tmp_path: Path) -> None:
    async with serve() as server:
        server.state.latency = 0.02
        code = textwrap.dedent(
            """
            import asyncio, sys
            from scfeeds._fetch import fetch
            urls = [f"{sys.argv[1]}/data/t{i}" for i in range(40)]
            asyncio.run(fetch(urls, sys.argv[2], limits=2, progress="auto"))
            """
        )
        leader, follower = pty.openpty()
        # A real terminal has a size; tqdm sizes its bar from it.
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, server.url, str(tmp_path), stderr=follower
        )
        os.close(follower)
        await asyncio.wait_for(proc.wait(), 60)
        output = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        os.close(leader)
    text = output.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "40/40" in text
    assert "item" in text
    assert "429=0" in text


def test_importing_the_engine_does_not_import_widgets() -> None:
    code = "import sys, scfeeds._fetch, scfeeds._runner; print('ipywidgets' in sys.modules)"
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


async def test_a_failing_progress_callback_does_not_fail_the_fetch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    def broken(event: object) -> None:
        nonlocal calls
        calls += 1
        raise ZeroDivisionError("a bug in the user's callback")

    async with serve() as server:
        server.state.latency = 0.02
        report = await fetch(
            [f"{server.url}/data/b{i}" for i in range(30)], tmp_path, limits=2, progress=broken
        )
    assert report.succeeded == 30
    assert calls == 1  # dropped after the first failure
    assert "progress disabled" in caplog.text


async def test_the_sink_is_closed_when_the_fetch_is_cancelled(tmp_path: Path) -> None:
    closed = []

    class Sink:
        def update(self, event: object) -> None:
            pass

        def close(self, event: object) -> None:
            closed.append(event)

    async with serve() as server:
        urls = [f"{server.url}/slow/s{i}?n=100000&pace=0.02" for i in range(4)]
        task = asyncio.create_task(fetch(urls, tmp_path, progress=Sink()))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(closed) == 1
