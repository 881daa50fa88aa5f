"""Widgets carry a static HTML snapshot of their state: what a notebook opened without its
kernel (or untrusted, or on GitHub) shows instead of ``FetchProgress('fetch')`` as text."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from scfeeds._fetch._report import ProgressEvent
from scfeeds.notebook import ConcurrencyTuner, FetchProgress
from tests.test_notebook import FakeDriver

ROOT = Path(__file__).resolve().parent.parent


def event(**kw: object) -> ProgressEvent:
    base: dict[str, object] = {
        "total": 10,
        "done": 10,
        "succeeded": 9,
        "failed": 1,
        "unchanged": 0,
        "retried": 2,
        "throttled": 0,
        "bytes": 5 * 2**20,
        "elapsed": 1.5,
        "throughput_bps": 3.3 * 2**20,
        "concurrency": 4,
        "in_flight": 0,
        "finished": True,
    }
    base.update(kw)
    return ProgressEvent(**base)  # type: ignore[arg-type]


def snapshot(bundle: dict[str, object]) -> str:
    html = bundle["text/html"]
    assert isinstance(html, str)
    return html


def test_progress_display_has_a_static_snapshot_of_its_state() -> None:
    progress = FetchProgress(total=10, description="<feeds>", show=False)
    before = snapshot(progress._repr_mimebundle_())
    assert "waiting for the first event" in before
    progress.close(event())
    after = snapshot(progress._repr_mimebundle_())
    assert after.startswith('<div class="scfeeds-static">')
    assert 'data-status="failed"' in after
    assert "10/10 items" in after
    assert "1 failed" in after
    assert "&lt;feeds&gt;" in after  # escaped
    assert "<script" not in after
    assert "width:100.0%" in after
    # The widget itself and the stable text label are still there.
    bundle = progress._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["text/plain"] == "FetchProgress('<feeds>', total=10)"


async def test_tuner_display_has_its_charts_as_static_html() -> None:
    tuner = ConcurrencyTuner(FakeDriver(), max_at_once=3, interval=0.05)
    tuner.start(records=3000)
    await tuner.wait()
    html = snapshot(tuner._repr_mimebundle_())
    assert "max_at_once 3 · chunk size" in html
    assert "finished" in html
    assert html.count('<img alt="chart"') >= 4  # the SVG charts, as images (kept untrusted)
    assert "<svg" not in html
    assert "<script" not in html


def test_nbval_masks_the_snapshot_so_reruns_compare_equal() -> None:
    parser = configparser.ConfigParser()
    parser.read(ROOT / ".meta" / "nbval.ini")
    section = parser["widget snapshot"]
    first = FetchProgress(total=10, show=False)
    last = FetchProgress(total=10, show=False)
    last.close(event())
    a = snapshot(first._repr_mimebundle_())
    b = snapshot(last._repr_mimebundle_())
    assert a != b

    def masked(s: str) -> str:
        return re.sub(section["regex"], section["replace"], s)

    assert masked(a) == masked(b) == "WIDGET-SNAPSHOT"


@pytest.mark.slow
def test_the_saved_output_holds_the_final_state(tmp_path: Path) -> None:
    """Executed as the notebooks are (nbclient, a real kernel): the progress widget's saved
    output is updated to the end of the run, not left at "waiting for the first event"."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "from scfeeds.notebook import FetchProgress\n"
            "from scfeeds._fetch._report import ProgressEvent\n"
            "p = FetchProgress(total=3)\n"
            "e = dict(total=3, succeeded=3, failed=0, unchanged=0, retried=0, throttled=0,\n"
            "         bytes=3000, elapsed=0.5, throughput_bps=6000.0, concurrency=2,\n"
            "         in_flight=0)\n"
            "p.update(ProgressEvent(done=1, finished=False, **e))\n"
            "p.close(ProgressEvent(done=3, finished=True, **e))\n"
        )
    ]
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    (output,) = nb.cells[0].outputs
    html = output["data"]["text/html"]
    assert 'data-status="done"' in html
    assert "3/3 items" in html
    assert output["data"]["text/plain"] == "FetchProgress('fetch', total=3)"
