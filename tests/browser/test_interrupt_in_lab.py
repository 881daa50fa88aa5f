"""Interrupting a fetch in JupyterLab, as an analyst does (Kernel > Interrupt Kernel).

The cell's ``await scfeeds.fetch(...)`` stops; its bar says "interrupted" (not failed), the
cell prints one line (no CancelledError traceback), and the next run resumes the partial
bodies with Range (the portal answers 206). Screenshots go to ``.artifacts/``.

Needs Debian's ``chromium``; skips, saying so, only when
the Chromium binary is missing (``lab.py``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import nbformat
import pytest
from playwright.sync_api import Browser, Page

from tests.browser.lab import ARTIFACTS, code_notebook, open_notebook, running_lab

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NAME = "interrupt.ipynb"
CELLS = [
    """
import pathlib, tempfile
import scfeeds
from scfeeds.portal import serve_in_thread

work = pathlib.Path(tempfile.mkdtemp(prefix="scfeeds-interrupt-"))
(work / "root").mkdir()
portal = serve_in_thread(work / "root", slow_body=1_000_000, access_log=False)
urls = [f"{portal.url}/v1/blob/{4 * 2**20}?seed={i}" for i in range(4)]
""",
    """
report = await scfeeds.fetch(urls, work / "landing", limits=4, progress="auto")
""",
    """
portal.set_knobs(slow_body=None)
portal.reset_stats()
again = await scfeeds.fetch(urls, work / "landing", limits=4, progress="auto")
print("resumed:", portal.stats()["by_status"], again.succeeded, "ok")
portal.close()
""",
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("lab")
    (base / "root").mkdir()
    nbformat.write(code_notebook(CELLS), base / "root" / NAME)
    with running_lab(base, NAME) as url:
        yield url


def run_cell(page: Page, index: int) -> None:
    cell = page.locator(".jp-Notebook .jp-CodeCell").nth(index)
    cell.locator(".jp-InputArea-prompt").click()
    page.keyboard.press("Shift+Enter")


def output_text(page: Page, index: int) -> str:
    text: str = (
        page.locator(".jp-Notebook .jp-CodeCell").nth(index).locator(".jp-OutputArea").inner_text()
    )
    return text


def test_an_interrupted_fetch_says_so_and_the_next_run_resumes(lab: str, browser: Browser) -> None:
    page = open_notebook(browser, lab)
    try:
        page.get_by_text(re.compile(r"Python 3 \(ipykernel\) \| Idle")).first.wait_for(
            timeout=60_000
        )
        run_cell(page, 0)
        page.wait_for_function(
            "() => /\\[1\\]/.test(document.querySelectorAll('.jp-CodeCell')[0]"
            ".querySelector('.jp-InputPrompt').textContent)",
            timeout=60_000,
        )
        run_cell(page, 1)
        bar = page.locator(".scfeeds-progress-text").first
        # Bytes arrive long before the first 4 MiB file is done: the bar moves.
        page.wait_for_function(
            "() => { const e = document.querySelector('.scfeeds-progress-text');"
            " return e && /MiB of 16\\.0 MiB/.test(e.textContent)"
            " && !/^\\S+ 0\\.0 MiB/.test(e.textContent); }",
            timeout=30_000,
        )
        page.wait_for_timeout(1500)
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Kernel$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Interrupt Kernel$")).click()
        page.wait_for_function(
            "() => /fetch interrupted after/.test(document.querySelectorAll('.jp-CodeCell')[1]"
            ".querySelector('.jp-OutputArea').textContent)",
            timeout=30_000,
        )
        page.wait_for_function(
            "() => { const e = document.querySelector('.scfeeds-progress-text');"
            " return e && e.dataset.status === 'interrupted'; }",
            timeout=30_000,
        )
        out = output_text(page, 1)
        assert "4 interrupted" in bar.inner_text()
        assert "MiB of 16.0 MiB" in bar.inner_text()  # what is kept, of the whole
        # The bar stays where the bytes got to, amber (not emptied, not red).
        fill = page.locator(".scfeeds-progress .progress-bar").first
        assert "progress-bar-warning" in (fill.get_attribute("class") or "")
        assert float(fill.evaluate("e => parseFloat(e.style.width)")) > 10
        assert "failed" not in re.sub(r"\b0 failed\b", "", bar.inner_text())
        lines = [line for line in out.splitlines() if line.startswith("fetch interrupted")]
        assert len(lines) == 1, out
        assert "partial bodies" in lines[0]
        assert "Traceback" not in out
        assert "CancelledError" not in out
        page.screenshot(path=str(ARTIFACTS / "jupyterlab-fetch-interrupted.png"))

        run_cell(page, 2)
        page.wait_for_function(
            "() => /resumed:/.test(document.querySelectorAll('.jp-CodeCell')[2]"
            ".querySelector('.jp-OutputArea').textContent)",
            timeout=60_000,
        )
        resumed = output_text(page, 2)
        assert "{'206': 4} 4 ok" in resumed, resumed
        page.screenshot(path=str(ARTIFACTS / "jupyterlab-fetch-resumed.png"))
    finally:
        page.close()
