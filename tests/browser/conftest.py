"""Fixtures of the browser tests: one headless Chromium per test module (see ``lab.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.browser.lab import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS


@pytest.fixture(scope="session", autouse=True)
def chromium() -> None:
    """Skip, saying so, when the Chromium binary is missing: before any lab is started."""
    if not CHROMIUM.exists():
        pytest.skip(f"real-browser test needs Chromium at {CHROMIUM} (apt-get install chromium)")
    ARTIFACTS.mkdir(exist_ok=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium, closed after the module's tests."""
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()
