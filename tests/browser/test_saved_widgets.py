"""A notebook opened in JupyterLab without running it shows its widgets' final state.

Executes a small notebook as ``notebooks/_build.py`` does (nbclient, widget state stored),
opens it in a real JupyterLab in headless Chromium and runs nothing: the progress bar and the
tuner must show their last numbers and charts (their ``text/html`` snapshot), not
``FetchProgress('fetch')`` as text. A screenshot is kept in ``.artifacts/``.

Needs Debian's ``chromium``; skips, saying so, only when
the Chromium binary is missing (``lab.py``).
"""

from __future__ import annotations

from collections.abc import Iterator

import nbformat
import pytest
from nbclient import NotebookClient
from playwright.sync_api import Browser

from tests.browser.lab import ARTIFACTS, code_notebook, open_notebook, running_lab

pytestmark = [pytest.mark.browser, pytest.mark.slow]

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


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("lab")
    (base / "root").mkdir()
    nb = code_notebook(CELLS)
    NotebookClient(nb, timeout=300, kernel_name="python3", store_widget_state=True).execute()
    nbformat.write(nb, base / "root" / NAME)
    with running_lab(base, NAME) as url:
        yield url


def test_widgets_show_their_final_state_without_running(lab: str, browser: Browser) -> None:
    page = open_notebook(browser, lab, kernel=False)
    try:
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
        page.close()
