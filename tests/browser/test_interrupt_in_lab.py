"""Interrupting a fetch in JupyterLab, as an analyst does (Kernel > Interrupt Kernel).

The cell's ``await scfeeds.fetch(...)`` stops; its bar says "interrupted" (not failed), the
cell prints one line (no CancelledError traceback), and the next run resumes the partial
bodies with Range (the portal answers 206). Screenshots go to ``.artifacts/``.

Needs Debian's ``chromium``; skips, saying so, only when ``/usr/bin/chromium`` is missing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import nbformat
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

from playwright.sync_api import Page, sync_playwright  # noqa: E402
from playwright.sync_api import TimeoutError as PlaywrightTimeout  # noqa: E402
from test_jupyterlab import CHROMIUM_ARGS  # noqa: E402
from test_saved_widgets import ARTIFACTS, CHROMIUM, running_lab  # noqa: E402  (skips first)

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
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c.strip()) for c in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbformat.write(nb, base / "root" / NAME)
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


def test_an_interrupted_fetch_says_so_and_the_next_run_resumes(lab: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(lab)
            page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
            dialog = page.locator(".jp-Dialog", has_text="Select Kernel")
            try:
                dialog.wait_for(timeout=3_000)
                dialog.get_by_role("button", name="Select").click()
            except PlaywrightTimeout:
                pass  # no dialog: the kernel starts on its own
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
            browser.close()
