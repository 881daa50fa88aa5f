"""A notebook opened in JupyterLab without running it shows its widgets' final state.

Executes a small notebook as ``notebooks/_build.py`` does (nbclient, widget state stored),
opens it in a real JupyterLab in headless Chromium and runs nothing: the progress bar and the
tuner must show their last numbers and charts (their ``text/html`` snapshot), not
``FetchProgress('fetch')`` as text. A screenshot is kept in ``.artifacts/``.

Needs Debian's ``chromium``; skips, saying so, only when ``/usr/bin/chromium`` is missing.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent.parent / ".artifacts"

if not CHROMIUM.exists():
    pytest.skip(
        "real-browser test needs Chromium at /usr/bin/chromium (apt-get install chromium)",
        allow_module_level=True,
    )

from playwright.sync_api import sync_playwright  # noqa: E402
from test_jupyterlab import CHROMIUM_ARGS, free_port, write_settings  # noqa: E402

NAME = "saved_widgets.ipynb"
CELLS = [
    """
import asyncio
from scfeeds._fetch._report import ProgressEvent
from scfeeds.notebook import ConcurrencyTuner, FetchProgress
from scfeeds.notebook._metrics import Probe

progress = FetchProgress(total=12, description="feeds")
common = dict(total=12, failed=0, unchanged=0, retried=3, throttled=1, bytes=7 * 2**20,
              elapsed=2.5, throughput_bps=2.8 * 2**20, concurrency=4, in_flight=0)
progress.update(ProgressEvent(done=5, succeeded=5, finished=False, **common))
progress.close(ProgressEvent(done=12, succeeded=12, finished=True, **common))
""",
    """
class Pages:
    '''A driver that completes `limit` pages every 10 ms.'''

    limit = 0

    async def run(self, plan, probe: Probe) -> None:
        self.limit = plan.max_at_once
        done = 0
        while done * plan.chunk_size() < plan.records:
            await asyncio.sleep(0.01)
            done += self.limit
            probe.on_latency(0.01 * self.limit)
            probe.on_event(ProgressEvent(total=None, done=done, succeeded=done, failed=0,
                unchanged=0, retried=0, throttled=0, bytes=done * 4000, elapsed=done / 100,
                throughput_bps=4e5, concurrency=self.limit, in_flight=self.limit,
                finished=False))

    def set_max_at_once(self, n: int) -> None:
        self.limit = n

    def current_limit(self) -> int:
        return self.limit


tuner = ConcurrencyTuner(Pages(), max_at_once=6, chunk_size=100, interval=0.05)
tuner.start(records=20_000)
await tuner.wait()
tuner
""",
]


@contextmanager
def running_lab(base: Path, notebook: str) -> Iterator[str]:
    """JupyterLab on 127.0.0.1 serving ``base/root``; yields the URL that opens ``notebook``."""
    root = base / "root"
    write_settings(base / "settings")
    port, token = free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "JUPYTERLAB_SETTINGS_DIR": str(base / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces"),
        "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
        "JUPYTER_CONFIG_DIR": str(base / "config"),
    }
    log = (base / "jupyterlab.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            "--LabApp.news_url=",
            "--LabApp.extension_manager=readonly",
            *(["--allow-root"] if os.geteuid() == 0 else []),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=root,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "JupyterLab did not start:\n" + (base / "jupyterlab.log").read_text()
                    ) from None
                time.sleep(0.25)
        yield f"{url}/lab/tree/{notebook}?token={token}"
    finally:
        if process.poll() is None:  # stop the server we started, by its PID
            process.send_signal(signal.SIGINT)
            time.sleep(0.3)
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("lab")
    (base / "root").mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c.strip()) for c in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    NotebookClient(nb, timeout=300, kernel_name="python3", store_widget_state=True).execute()
    nbformat.write(nb, base / "root" / NAME)
    with running_lab(base, NAME) as url:
        yield url


def test_widgets_show_their_final_state_without_running(lab: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(lab)
            page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
            snapshots = page.locator(".jp-OutputArea-output .scfeeds-static")
            snapshots.nth(1).wait_for(timeout=30_000)
            progress, tuner = snapshots.nth(0), snapshots.nth(1)
            page.screenshot(path=str(ARTIFACTS / "jupyterlab-saved-widgets.png"), full_page=True)
            text = progress.inner_text()
            assert "feeds: 12/12 items" in text
            assert "done in" in text
            assert "max_at_once 6 · chunk size 100" in tuner.inner_text()
            assert "finished" in tuner.inner_text()
            charts = tuner.locator("img[src^='data:image/svg+xml']")
            assert charts.count() >= 4
            assert all(
                charts.nth(i).evaluate("e => e.complete && e.naturalWidth > 0")
                for i in range(charts.count())
            )
            tuner.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "jupyterlab-saved-tuner.png"))
            outputs = page.locator(".jp-OutputArea-output").all_inner_texts()
            assert not any(o.strip().startswith("FetchProgress(") for o in outputs)
        finally:
            browser.close()
