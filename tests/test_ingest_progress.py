"""One progress stream for the whole ingest: a fetch stage and a parse stage, documents and
bytes for both, from local files and from the portal; the core never imports the notebook."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import scfeeds
from scfeeds import portal, synth
from scfeeds._fetch import _progress
from scfeeds._fetch._report import ProgressEvent
from scfeeds._ingest import ingest
from tests.lake_support import write_850s
from tests.progress_support import progress_event


class Recorder:
    def __init__(self) -> None:
        self.updates: list[ProgressEvent] = []
        self.closed: list[ProgressEvent] = []

    def update(self, event: ProgressEvent) -> None:
        self.updates.append(event)

    def close(self, event: ProgressEvent) -> None:
        self.closed.append(event)

    def last(self, stage: str) -> ProgressEvent:
        return [e for e in self.updates + self.closed if e.stage == stage][-1]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("world")
    synth.generate(dest, seed=5, pos=12, suppliers=2, layout="documents")
    return dest


def test_local_files_give_both_stages_with_documents_and_bytes(tmp_path: Path) -> None:
    paths, _ = write_850s(tmp_path / "in", 40)
    size = sum(Path(p).stat().st_size for p in paths)
    seen = Recorder()
    report = scfeeds.run(ingest(paths, tmp_path / "lake", progress=seen, pool="threads"))
    assert report.committed == 40
    assert len(seen.closed) == 1
    assert seen.closed[0].stage == "parse"
    fetched = seen.last("fetch")
    assert fetched.finished
    assert (fetched.done, fetched.total, fetched.succeeded, fetched.bytes) == (40, 40, 40, size)
    assert fetched.bytes_total == size
    parsed = seen.closed[0]
    assert parsed.finished
    assert (parsed.done, parsed.total, parsed.succeeded, parsed.unchanged) == (40, 40, 40, 0)
    assert parsed.bytes == size
    # the fetch stage is over before the last document is committed
    stages = [e.stage for e in seen.updates + seen.closed]
    assert stages.index("parse") > stages.index("fetch")
    assert stages[-1] == "parse"


def test_a_second_run_counts_documents_already_in_the_lake(tmp_path: Path) -> None:
    paths, _ = write_850s(tmp_path / "in", 12)
    scfeeds.run(ingest(paths, tmp_path / "lake", progress=None, pool="threads"))
    events: list[ProgressEvent] = []
    scfeeds.run(ingest(paths, tmp_path / "lake", progress=events.append, pool="threads"))
    final = events[-1]
    assert final.stage == "parse"
    assert final.finished
    assert (final.done, final.succeeded, final.unchanged) == (12, 0, 12)


def test_a_portal_run_gives_both_stages_with_documents_and_bytes(
    tmp_path: Path, world: Path
) -> None:
    with portal.serve_in_thread(world, latency=0.005, seed=1, access_log=False) as server:
        with urllib.request.urlopen(f"{server.url}/v1/feeds", timeout=30) as resp:
            feeds: list[dict[str, Any]] = json.load(resp)["feeds"]
        seen = Recorder()
        report = scfeeds.run(
            ingest(feeds, tmp_path / "lake", limits=8, progress=seen, pool="threads")
        )
    assert report.fetch is not None
    landed = report.batches.filter(pl.col("status") != "fetch_failed")
    fetched = seen.last("fetch")
    assert fetched.finished
    assert fetched.done == len(feeds) == fetched.total
    assert fetched.bytes == report.fetch.bytes > 0
    parsed = seen.closed[0]
    assert parsed.stage == "parse"
    assert parsed.finished
    assert parsed.done == landed.height == len(feeds)
    assert parsed.succeeded == report.committed
    sizes = sum(Path(p).stat().st_size for p in landed["path"])
    assert parsed.bytes == sizes == report.fetch.bytes


def test_a_failed_run_closes_the_stream_as_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths, _ = write_850s(tmp_path / "in", 5)
    events: list[ProgressEvent] = []

    def lake_gone(*args: object, **kwargs: object) -> None:
        raise OSError("the lake's disk is gone")

    # the run fails once it is under way: documents landed, the first commit fails
    monkeypatch.setattr(scfeeds._ingest, "commit_micro_batch", lake_gone)
    with pytest.raises(OSError, match="disk is gone"):
        scfeeds.run(ingest(paths, tmp_path / "lake", progress=events.append, pool="threads"))
    assert events, "the run sent no progress before it failed"
    assert events[-1].stage == "parse"
    assert events[-1].interrupted > 0


def test_auto_in_a_kernel_uses_the_registered_front_end(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []

    class Front:
        def __init__(self, *, description: str) -> None:
            made.append(description)

        def update(self, event: ProgressEvent) -> None: ...
        def close(self, event: ProgressEvent) -> None: ...

    monkeypatch.setattr(_progress, "_in_kernel", lambda: True)
    monkeypatch.setattr(_progress, "_frontends", [])
    _progress.register_frontend(Front)
    sink = _progress.make_sink("auto", description="ingest")
    assert isinstance(sink, Front)
    assert made == ["ingest"]


def test_auto_in_a_kernel_finds_the_notebook_through_its_entry_point(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from importlib.metadata import entry_points

    names = {ep.value for ep in entry_points(group=_progress.ENTRY_POINT_GROUP)}
    assert names == {"scfeeds.notebook._progress:auto_progress"}
    monkeypatch.setattr(_progress, "_frontends", [])
    _progress._load_entry_points()
    front = _progress._frontends[-1]
    assert (front.__module__, front.__name__) == ("scfeeds.notebook._progress", "auto_progress")


def test_the_core_never_imports_the_notebook_layer() -> None:
    code = (
        "import sys, scfeeds, scfeeds._ingest, scfeeds._fetch._progress as p\n"
        "p.make_sink('auto')\n"
        "assert not [m for m in sys.modules if m.startswith('scfeeds.notebook')], 'notebook'\n"
        "assert 'ipywidgets' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    # no module below the notebook layer names it (the package facade's lazy attribute
    # `scfeeds.notebook` is the user's import, not the core's)
    core = Path(scfeeds.__file__).parent
    for path in core.rglob("*.py"):
        parts = path.relative_to(core).parts
        if parts[0] == "notebook" or parts == ("__init__.py",):
            continue
        text = path.read_text(encoding="utf-8")
        assert "scfeeds.notebook" not in text, path
        assert "import notebook" not in text, path


def test_the_notebook_widget_shows_both_stages() -> None:
    from scfeeds.notebook import FetchProgress

    # a run of 10 documents one second in, at 1 MB/s and two at once
    common: dict[str, Any] = {"total": 10, "elapsed": 1.0, "throughput_bps": 1e6, "concurrency": 2}
    widget = FetchProgress(description="ingest", show=False, max_rate=1e6)
    widget.update(
        progress_event(
            stage="fetch",
            done=10,
            succeeded=10,
            unchanged=0,
            bytes=5000,
            finished=True,
            **common,
        )
    )
    widget.update(
        progress_event(
            stage="parse",
            done=4,
            succeeded=4,
            unchanged=0,
            bytes=2000,
            finished=False,
            **common,
        )
    )
    fetch_line, parse_line = widget.text().split("\n")
    assert fetch_line.startswith("ingest fetch: 10/10 items")
    assert parse_line.startswith("ingest parse: 4/10 documents")
    assert widget.bar.value == 4
    assert widget.bar.max == 10
    assert widget.status == "running"
    widget.close(
        progress_event(
            stage="parse",
            done=10,
            succeeded=9,
            unchanged=1,
            bytes=5000,
            finished=True,
            **common,
        )
    )
    assert widget.status == "done"
    assert "9 committed · 1 already in the lake" in widget.text()
