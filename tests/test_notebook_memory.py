"""MemoryProfiler and the buffering comparison, from real memray captures."""

from __future__ import annotations

import asyncio
import base64
import inspect
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell

from scfeeds.exceptions import ConfigurationError
from scfeeds.notebook import MemoryProfile, MemoryProfiler, compare_buffering, read_capture
from scfeeds.notebook._memory import _native_site, rust_name
from scfeeds.portal import serve_in_process

MiB = 2**20


def hold_twenty_mib() -> int:
    blocks = []
    for _ in range(20):  # a loop, not a comprehension: 3.11 gives comprehensions a frame
        blocks.append(bytearray(MiB))  # the line the profiler must blame
    return len(blocks)


HOLD_LINE = inspect.getsourcelines(hold_twenty_mib)[1] + 3


def test_profile_of_a_callable_reports_peak_site_and_curve(tmp_path: Path) -> None:
    profile = MemoryProfiler(directory=tmp_path, interval_ms=1).run(hold_twenty_mib)
    assert isinstance(profile, MemoryProfile)
    assert profile.result == 20
    assert 20 * MiB <= profile.peak_bytes < 24 * MiB
    top = profile.sites.row(0, named=True)
    assert top["function"] == "hold_twenty_mib"
    assert top["line"] == HOLD_LINE
    assert top["file"] == __file__
    assert top["bytes"] >= 20 * MiB
    assert top["share"] > 0.9
    heap = profile.heap
    assert heap.height >= 2
    assert heap["t_s"].is_sorted()
    assert heap["heap_bytes"].max() <= profile.peak_bytes  # type: ignore[operator]
    assert profile.capture.parent == tmp_path
    assert profile.capture.stat().st_size > 0


async def test_profile_of_a_coroutine_tracks_across_awaits(tmp_path: Path) -> None:
    async def grow() -> int:
        held = []
        for _ in range(8):
            held.append(bytearray(2 * MiB))
            await asyncio.sleep(0.005)
        return sum(map(len, held))

    profile = await MemoryProfiler(directory=tmp_path).arun(grow(), label="grow")
    assert profile.result == 16 * MiB
    assert profile.label == "grow"
    assert 16 * MiB <= profile.peak_bytes < 20 * MiB
    assert profile.sites.row(0, named=True)["function"] == "grow"
    # A coroutine function is called for you; a sync call of a coroutine is refused.
    again = await MemoryProfiler(directory=tmp_path).arun(grow)
    assert again.peak_bytes >= 16 * MiB
    with pytest.raises(ConfigurationError, match="arun"):
        MemoryProfiler(directory=tmp_path).run(grow)


def test_rendering_is_offline_html_and_text(tmp_path: Path) -> None:
    profile = MemoryProfiler(directory=tmp_path).run(hold_twenty_mib, label="hold <20>")
    html = profile._repr_html_()
    assert "<svg" in html
    assert "scfeeds-memory-sites" in html
    assert "hold &lt;20&gt;" in html
    # Nothing to load from a CDN: no scripts, no external sources or styles.
    assert "<script" not in html
    assert "src=" not in html
    assert "<link" not in html
    assert profile.text().startswith("hold <20>: peak heap 20.")
    reread = read_capture(profile.capture, top=3)
    assert reread.peak_bytes == profile.peak_bytes
    assert reread.sites.height <= 3


def test_cell_magic_profiles_sync_and_top_level_await_cells(tmp_path: Path) -> None:
    shell = InteractiveShell.instance()
    try:
        shell.run_line_magic("load_ext", "scfeeds.notebook")
        shell.run_cell_magic("scfeeds_memray", "sync", "x = [bytearray(2**20) for _ in range(12)]")
        profile = shell.user_ns["_scfeeds_memray"]
        assert profile.label == "sync"
        assert profile.peak_bytes >= 12 * MiB
        assert len(shell.user_ns["x"]) == 12
        cell = "import asyncio\nawait asyncio.sleep(0)\ny = bytearray(6 * 2**20)\n"
        shell.run_cell_magic("scfeeds_memray", "awaiting", cell)
        profile = shell.user_ns["_scfeeds_memray"]
        assert profile.label == "awaiting"
        assert profile.peak_bytes >= 6 * MiB
    finally:
        InteractiveShell.clear_instance()


@pytest.fixture(scope="module")
def process_portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # In its own process: memray tracks the whole process, so a server thread in this
    # process would add its own buffers to both peaks.
    with serve_in_process(tmp_path_factory.mktemp("empty")) as portal:
        yield portal.url


async def test_streaming_needs_far_less_heap_than_buffering(
    process_portal: str, tmp_path: Path
) -> None:
    urls = [f"{process_portal}/v1/blob/{2 * MiB}?seed={i}" for i in range(12)]
    comparison = await compare_buffering(
        urls, max_at_once=4, profiler=MemoryProfiler(directory=tmp_path)
    )
    assert comparison.bytes == 24 * MiB
    assert comparison.buffered.peak_bytes >= 24 * MiB
    assert comparison.streamed.peak_bytes < 12 * MiB
    assert comparison.ratio > 3
    frame = comparison.frame()
    assert frame["strategy"].to_list() == ["in-memory buffering", "streaming to disk"]
    html = comparison._repr_html_()
    assert html.count("<svg") == 2
    assert "x less" in html


def encode_eight_mib() -> int:
    encoded = base64.b64encode(bytes(6 * MiB))  # allocated inside the stdlib's base64.py
    return len(encoded)


def test_allocations_inside_a_library_name_the_callers_line(tmp_path: Path) -> None:
    profile = MemoryProfiler(directory=tmp_path).run(encode_eight_mib)
    top = profile.sites.row(0, named=True)
    assert top["bytes"] >= 8 * MiB
    assert top["function"] == "b64encode"
    assert Path(top["file"]).name == "base64.py"
    line = inspect.getsourcelines(encode_eight_mib)[1] + 1
    assert top["caller"] == f"encode_eight_mib ({Path(__file__).name}:{line})"
    assert "from your code" in profile.sites_html()


def test_flamegraph_is_an_extra_file_next_to_the_capture(tmp_path: Path) -> None:
    profile = MemoryProfiler(directory=tmp_path).run(hold_twenty_mib)
    page = profile.flamegraph()
    assert page == profile.capture.with_suffix(".html")
    text = page.read_text()
    assert "hold_twenty_mib" in text  # memray's own page, with our frames in its data


def test_sites_are_shown_relative_to_site_packages_stdlib_or_the_checkout(tmp_path: Path) -> None:
    import json
    import os

    import aiohttp

    from scfeeds.notebook._memory import display_path

    assert display_path(aiohttp.__file__) == "aiohttp/__init__.py"
    assert display_path(json.__file__) == "json/__init__.py"
    assert display_path(inspect.getfile(read_capture)) == "scfeeds/notebook/_memory.py"
    assert display_path("<native>") == "<native>"

    def encode() -> str:  # a site inside the standard library, called from here
        return json.dumps([{"n": i, "text": "x" * 64} for i in range(100_000)])

    profile = MemoryProfiler(directory=tmp_path).run(encode)
    titles = re.findall(r"title='([^']*)'", profile.sites_html())
    assert titles
    assert all(not os.path.isabs(t) for t in titles), titles
    assert any(t.startswith("json/") for t in titles), titles


def brief_spike() -> None:
    block = bytearray(48 * MiB)  # freed before the next heap sample
    del block
    time.sleep(0.05)


def test_headline_peak_and_chart_come_from_one_measurement(tmp_path: Path) -> None:
    profile = MemoryProfiler(directory=tmp_path, interval_ms=1000).run(brief_spike)
    assert profile.peak_bytes >= 48 * MiB  # memray's high-water mark sees the spike
    assert profile.sampled_peak_bytes == profile.heap["heap_bytes"].max()
    assert profile.sampled_peak_bytes < profile.peak_bytes  # the 1 s samples miss it
    svg = profile.heap_svg()
    # the chart draws the high-water mark too, so its axis reaches the headline's figure
    assert "peak (high-water mark)" in svg
    ticks = [float(t) for t in re.findall(r">(\d+(?:\.\d+)?)</text>", svg)]
    assert max(ticks) >= 48
    html = profile._repr_html_()
    assert "high-water mark" in html
    assert "sampled curve tops at" in html


def test_rust_symbols_are_named_readably() -> None:
    cases = {
        "_RNvMs2_NtNtNtCsgrLsiFbPz3l_12polars_arrow5array7binview7mutableINtB5_22MutableBinary"
        "ViewArrayShE13with_capacityCs8DlxIMvEUSo_14polars_compute": (
            "polars_arrow::…::mutable::MutableBinaryViewArray::with_capacity"
        ),
        "_RNvMsk_NtNtNtCs8GJbWRAZWmK_9polars_io3csv4read7builderNtB5_7Builder3add": (
            "polars_io::…::builder::Builder::add"
        ),
        "_RNvCs1234_5crate3run": "crate::run",
        "PyObject_Malloc": "PyObject_Malloc",
    }
    for symbol, name in cases.items():
        assert rust_name(symbol) == name
    # a site is the innermost frame that is not the allocator (jemalloc, Rust's alloc crate)
    frames = [
        ("_rjem_je_malloc_default", "<unknown>", 0),
        ("do_rallocx", "<unknown>", 0),
        ("_RNvMCs1234_5alloc7raw_vec11finish_grow", "<unknown>", 0),
        ("_RNvCs1234_5crate3run", "<unknown>", 0),
        ("start_thread", "./nptl/pthread_create.c", 442),
    ]
    assert _native_site(frames) == ("crate::run", "<native>", 0)
    assert _native_site(frames[:3]) == ("<unknown>", "<native>", 0)


NATIVE_SCRIPT = """
import json, sys
from pathlib import Path
import polars as pl
import scfeeds
from scfeeds import synth
from scfeeds.notebook import MemoryProfiler

tmp = Path(sys.argv[1])
# 3,000 POs (about 1.5 MB a file): enough that polars' worker threads map tens of MB of
# their own; with a few hundred they map a few MB and, in some runs, none at the peak
synth.generate(tmp / "world", seed=5, pos=3000, suppliers=1, formats=("x12",))
files = sorted((tmp / "world" / "feeds").glob("*/*/*.x12"))
profiler = MemoryProfiler(directory=tmp, interval_ms=10, native_traces=True)
native = profiler.run(scfeeds.read_x12, files, segments=False)
named = native.sites.filter(pl.col("file") == "<native>")
print(json.dumps({
    "po_lines": native.result.po_lines.height,
    "functions": native.sites["function"].to_list(),
    "native": named["function"].to_list(),
}))
"""


def test_native_traces_name_the_native_function_behind_threadless_allocations(
    tmp_path: Path,
) -> None:
    # In a fresh interpreter: polars' allocator reports only memory it newly maps from the
    # OS, so in a process where earlier work already warmed it there may be nothing to see.
    import json
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        [sys.executable, "-c", NATIVE_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    # read_x12 builds its tables on polars' own threads: allocations with no Python frame
    assert got["po_lines"] > 0
    assert "<unknown>" not in got["functions"]
    assert got["native"]
    for function in got["native"]:
        assert not function.startswith(("_R", "_rjem", "je_", "pac_")), function
    assert any(f.startswith("polars") for f in got["native"])
