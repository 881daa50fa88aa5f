"""The widgets in a real JupyterLab, driven by headless Chromium (Playwright).

Starts JupyterLab on 127.0.0.1 (random port, random token, a temporary root), opens
``widgets.ipynb``, runs all cells from the Run menu, clicks the tuner's Stop and Start buttons
and moves its ``max_at_once`` slider while a cell is still awaiting, and reads the rendered
DOM: the progress widgets (green, red), the tuner (live SVG charts, the new limit seen by the
running fetch), the sweep's knee, the memory profile and the buffering comparison. A
screenshot is kept in ``.artifacts/``.

Needs Debian's ``chromium`` (``apt-get install chromium``); the browser Playwright would
download is never used (``SCFEEDS_CHROMIUM`` names another binary). ``./dev test`` installs it
when it can; the test skips, saying so, only when the binary is missing.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.browser.lab import ARTIFACTS, open_notebook, running_lab

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HERE = Path(__file__).parent
NOTEBOOK = "widgets.ipynb"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("lab")
    (base / "root").mkdir()
    shutil.copy(HERE / NOTEBOOK, base / "root" / NOTEBOOK)
    with running_lab(base, NOTEBOOK) as url:
        yield url


def expect_text(page: Page, selector: str, pattern: str, timeout: float = 30_000) -> None:
    """Wait until the first element matching ``selector`` has text matching ``pattern``.

    The element is looked up afresh each time: a widget redraw replaces it.
    """
    page.wait_for_function(
        "([s, p]) => { const e = document.querySelector(s);"
        " return e !== null && new RegExp(p).test(e.textContent); }",
        arg=[selector, pattern],
        timeout=timeout,
    )


def run_all(page: Page) -> None:
    """Run > Run All Cells, as a user would; once more if the kernel was not yet listening.

    Right after a kernel starts, JupyterLab can report it idle before its channels are up,
    and a run request sent then is dropped (the first cell never gets a prompt number).
    """
    first_prompt = page.locator(".jp-CodeCell .jp-InputPrompt").first
    for _attempt in range(3):
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        try:
            page.wait_for_function(
                "e => /\\[(\\*|\\d+)\\]/.test(e.textContent)",
                arg=first_prompt.element_handle(),
                timeout=10_000,
            )
            return
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
    raise AssertionError("Run All Cells did not start the first cell three times in a row")


def test_widgets_render_with_real_values_in_jupyterlab(lab: str, browser: Browser) -> None:
    page = open_notebook(browser, lab)
    try:
        # The kernel is up once the (screen-reader) status says Idle.
        page.get_by_text("Kernel status: Idle").first.wait_for(state="attached", timeout=60_000)

        run_all(page)

        # The tuner is running; its cell below awaits a slider move from this browser.
        readout = page.locator(".scfeeds-tuner .widget-readout").first
        readout.wait_for(timeout=90_000)
        status = ".scfeeds-tuner-status"
        # Live numbers arrive while the fetch runs in the background.
        expect_text(page, status, r"\d+ items")
        # The button stops the background fetch and starts a new one (widget callbacks
        # run on the kernel's loop while the next cell is awaiting).
        button = page.locator(".scfeeds-tuner button").first
        button.click()
        expect_text(page, status, r"^stopped")
        button.click()
        expect_text(page, status, r"^running · [1-9][\d,]* items")
        readout.click()
        page.keyboard.press("Control+A")
        page.keyboard.type("12")
        page.keyboard.press("Enter")

        # (an output, not the cell's source, which contains the same words)
        page.locator(".jp-OutputArea-output", has_text="ALL CELLS DONE").wait_for(timeout=120_000)
        page.wait_for_timeout(500)  # last comm messages reach the views

        cells = page.locator(".jp-Notebook .jp-Cell")
        n_cells = cells.count()
        page.set_viewport_size({"width": 1400, "height": 1000})

        # Progress: the engine's progress="auto" widget, green, with the real counts.
        auto = page.locator(".scfeeds-progress").nth(0)
        auto_text = auto.locator(".scfeeds-progress-text").inner_text()
        assert "40/40 items" in auto_text, auto_text
        assert "0 failed" in auto_text
        assert "3.8 MiB" in auto_text  # 40 x 100 000 bytes
        assert auto.locator("[data-status='done']").count() == 1
        assert auto.locator(".progress-bar-success").count() == 1

        failing = page.locator(".scfeeds-progress").nth(1)
        failing_text = failing.locator(".scfeeds-progress-text").inner_text()
        assert "6/6 items" in failing_text, failing_text
        assert "1 failed" in failing_text, failing_text
        assert failing.locator("[data-status='failed']").count() == 1
        assert failing.locator(".progress-bar-danger").count() == 1

        via_run = page.locator(".scfeeds-progress").nth(2).inner_text()
        assert "10/10 items" in via_run, via_run

        # Tuner: four live SVG charts with data, and the slider move reached the fetch.
        tuner = page.locator(".scfeeds-tuner")
        assert tuner.locator(".scfeeds-tuner-charts svg").count() == 4
        assert tuner.locator(".scfeeds-tuner-charts polyline").count() >= 4
        # After the sweep, the tuner's status line shows its recommendation.
        status = tuner.locator(".scfeeds-tuner-status").inner_text()
        assert status.startswith("recommended: max_at_once="), status
        # The running top-level await saw the browser's slider move (ipykernel >= 7.4).
        seen = page.locator(".jp-OutputArea-output", has_text="limits seen:").inner_text()
        assert "limits seen: [2, 12]" in seen, seen

        knee = page.locator(".scfeeds-knee").inner_text()
        assert re.match(r"recommended: max_at_once=\d+, chunk_size=(200|1000)", knee), knee
        assert page.locator(".scfeeds-sweep svg rect").count() >= 6

        # Memory profiler: the peak of 30 x 1 MiB and the line that allocated it.
        memory = page.locator(".scfeeds-memory").first
        peak = memory.locator(".scfeeds-peak").inner_text()
        value = float(peak.split()[0])
        assert peak.endswith("MiB"), peak
        assert 30.0 <= value < 34.0, peak
        sites = memory.locator(".scfeeds-memory-sites tbody tr")
        assert sites.count() >= 1
        assert "thirty_mib" in sites.first.inner_text()
        assert memory.locator("svg polyline").count() >= 1

        comparison = page.locator(".scfeeds-compare").inner_text()
        match = re.search(r"\(([\d.]+)x less\)", comparison)
        assert match, comparison
        assert float(match.group(1)) > 3, comparison

        magic = page.locator(".scfeeds-memory").nth(1).inner_text()
        match = re.search(r"twelve MiB of rows: peak heap ([\d.]+) MiB", magic)
        assert match, magic
        assert float(match.group(1)) >= 12.0, magic
        assert n_cells >= 12

        # Whole notebook on one tall screenshot, kept as the test's artifact.
        height = page.evaluate(
            "() => Math.max(...[...document.querySelectorAll("
            "'.jp-Notebook, .jp-WindowedPanel-outer, .jp-WindowedPanel-inner')]"
            ".map(e => e.scrollHeight))"
        )
        page.set_viewport_size({"width": 1400, "height": min(int(height) + 250, 12_000)})
        page.evaluate(
            "() => document.querySelectorAll('.jp-Notebook, .jp-WindowedPanel-outer')"
            ".forEach(e => { e.scrollTop = 0; })"
        )
        page.wait_for_timeout(300)
        page.screenshot(path=str(ARTIFACTS / "jupyterlab-widgets.png"))
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "jupyterlab-widgets-failure.png"))
        raise
    finally:
        page.close()
