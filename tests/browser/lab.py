"""What the browser tests share: Debian's Chromium (never the one Playwright would download),
a JupyterLab server of their own, and a notebook opened in it.

``SCFEEDS_CHROMIUM`` names another Chromium binary; ``./dev test`` installs Debian's when it
can, and the tests skip, saying so, only when the binary is missing (``conftest.py``).
"""

from __future__ import annotations

import json
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
from playwright.sync_api import Browser, Page
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.web_support import free_port

CHROMIUM = Path(os.environ.get("SCFEEDS_CHROMIUM") or "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / ".artifacts"
"""Screenshots the tests keep (ignored by git)."""


def write_settings(settings: Path) -> None:
    """Lab settings for a deterministic page: every cell in the DOM, no news pop-ups."""
    notebook = settings / "@jupyterlab" / "notebook-extension"
    notebook.mkdir(parents=True)
    # JupyterLab 4 virtualises long notebooks by default; cells scrolled away would leave
    # the DOM and could not be asserted on.
    # autoStartDefaultKernel: open straight into the notebook's kernel, no "Select Kernel".
    (notebook / "tracker.jupyterlab-settings").write_text(
        json.dumps({"windowingMode": "none", "autoStartDefaultKernel": True})
    )
    apputils = settings / "@jupyterlab" / "apputils-extension"
    apputils.mkdir(parents=True)
    (apputils / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )


def code_notebook(cells: list[str]) -> nbformat.NotebookNode:
    """A notebook of these code cells, for the ``python3`` kernel."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c.strip()) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    return nb


@contextmanager
def running_lab(base: Path, notebook: str) -> Iterator[str]:
    """JupyterLab on 127.0.0.1 (a free port, a random token) serving ``base/root``, with its
    settings, workspaces and runtime under ``base``; yields the URL that opens ``notebook``."""
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
            # No look-ups on PyPI for the extension manager: the test runs offline.
            "--LabApp.extension_manager=readonly",
            # CI containers run as root; Jupyter refuses that unless told.
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
        # Stop the server we started, by its PID: SIGINT twice is Jupyter's clean shutdown
        # (it also shuts down the kernel, which stops the notebook's portal child).
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            time.sleep(0.3)
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


def open_notebook(browser: Browser, url: str, *, kernel: bool = True) -> Page:
    """A new page on ``url`` (a notebook in JupyterLab), once its first cell is shown; with
    ``kernel``, a "Select Kernel" dialog, if one comes, is answered with the default."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
    if kernel:
        dialog = page.locator(".jp-Dialog", has_text="Select Kernel")
        try:
            dialog.wait_for(timeout=3_000)
            dialog.get_by_role("button", name="Select").click()
        except PlaywrightTimeout:
            pass  # no dialog: the kernel starts on its own
    return page
