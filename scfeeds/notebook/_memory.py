"""MemoryProfiler: run code under ``memray.Tracker`` and show where the heap went.

Everything shown is drawn by scfeeds from memray's ``FileReader`` (peak heap, the top
allocation sites at the high-water mark, the heap-over-time curve), so it renders offline and
is saved with the notebook as plain HTML. memray's own flame graph HTML loads d3, plotly and
bootstrap from a CDN, so on a machine without internet it renders blank; it is offered only
as an extra file (:meth:`MemoryProfile.flamegraph`).

What memray cannot see: polars (and other Rust libraries) allocate through their own
jemalloc, and memray sees jemalloc only when it maps new memory from the OS; memory jemalloc
already holds and reuses does not show. The first large polars operation of a process shows
up (attributed to the Python line that called polars); repeats of it may show near zero.

Coroutines are profiled with ``with memray.Tracker(...): await coro`` inside the running loop,
which works in a notebook cell with top-level ``await`` (memray's ``%%memray_flamegraph`` magic
does not support top-level ``await``).
"""

from __future__ import annotations

import ast
import atexit
import inspect
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import memray
import polars as pl

from scfeeds._runner import run
from scfeeds.exceptions import ConfigurationError
from scfeeds.notebook import _format as fmt
from scfeeds.notebook import _svg

SITES_SCHEMA = {
    "function": pl.String,
    "file": pl.String,
    "line": pl.Int64,
    "bytes": pl.Int64,
    "allocations": pl.Int64,
    "share": pl.Float64,
    "caller": pl.String,
}
_MAX_FRAMES = 64
#: Where library code lives: frames there are not "your code".
_LIBRARY_DIRS = tuple(
    {os.path.realpath(p) for p in (sysconfig.get_paths()["stdlib"], *site.getsitepackages())}
)


def _display_roots() -> tuple[str, ...]:
    """Folders that file names are shown relative to, deepest first: site-packages, the
    standard library, and the folder holding the ``scfeeds`` package (a source checkout)."""
    paths = sysconfig.get_paths()
    dirs = {paths["purelib"], paths["platlib"], paths["stdlib"], paths["platstdlib"]}
    dirs.update(site.getsitepackages())
    dirs.add(str(Path(__file__).resolve().parents[2]))
    real = {os.path.realpath(d) for d in dirs}
    return tuple(sorted((d.rstrip(os.sep) + os.sep for d in real), key=len, reverse=True))


_DISPLAY_ROOTS = _display_roots()


def display_path(file: str) -> str:
    """``file`` as shown in a profile: relative to site-packages, the standard library or
    the scfeeds checkout (``aiohttp/streams.py``, ``asyncio/events.py``,
    ``scfeeds/_x12/_reader.py``), so that a saved notebook carries no absolute path of the
    machine that ran it; other files (your own code) are shown as given."""
    if file.startswith("<"):
        return file
    real = os.path.realpath(file)
    for root in _DISPLAY_ROOTS:
        if real.startswith(root):
            return Path(real[len(root) :]).as_posix()
    return file


def _user_frame(stack: Sequence[tuple[str, str, int]]) -> str | None:
    """``function (file:line)`` of the innermost frame outside the stdlib and site-packages,
    or ``None`` when that is the innermost frame itself (the site already names it)."""
    for depth, (function, file, line) in enumerate(stack):
        if file.startswith("<frozen") or os.path.realpath(file).startswith(_LIBRARY_DIRS):
            continue
        if depth == 0:
            return None
        return f"{function} ({Path(file).name}:{line})"
    return None


HEAP_SCHEMA = {"t_s": pl.Float64, "heap_bytes": pl.Int64, "rss_bytes": pl.Int64}


@dataclass(frozen=True, kw_only=True)
class MemoryProfile:
    """What :class:`MemoryProfiler` measured.

    Attributes
    ----------
    label
        Name shown in titles.
    peak_bytes
        Peak heap (bytes allocated and not yet freed) during the run: memray's exact
        high-water mark, the headline figure and the flat line of the chart.
    sampled_peak_bytes
        The highest point of :attr:`heap`, which samples the heap every few ms: a peak
        shorter than the interval (a buffer allocated and freed between two samples) is in
        ``peak_bytes`` but not here.
    total_allocations
        Allocations seen.
    seconds
        Wall time of the run.
    sites
        Top allocation sites at the high-water mark: function, file, line, bytes,
        allocations, share (of the peak), and ``caller``: when the site is inside a library
        (polars, aiohttp, the stdlib), the innermost line of your code that led there. Native
        allocations (polars, numpy) are attributed to the Python line that caused them; those
        made with no Python frame (threads polars starts) show as ``<unknown>`` unless the
        capture has native traces (``MemoryProfiler(native_traces=True)``): then the native
        function that asked for the memory is named (file ``<native>``, or its library).
    heap
        Heap (and RSS) over time: ``t_s`` since start, ``heap_bytes``, ``rss_bytes``.
    capture
        The memray capture file (``memray flamegraph``/``stats`` can read it).
    result
        What the profiled code returned.
    """

    label: str
    peak_bytes: int
    sampled_peak_bytes: int
    total_allocations: int
    seconds: float
    sites: pl.DataFrame
    heap: pl.DataFrame
    capture: Path
    result: Any = field(default=None, repr=False)

    def flamegraph(self, output: str | os.PathLike[str] | None = None) -> Path:
        """Write memray's flame graph HTML next to the capture and return its path.

        The page loads its scripts from a CDN: open it on a machine with internet access.
        """
        out = Path(output) if output is not None else self.capture.with_suffix(".html")
        subprocess.run(
            [sys.executable, "-m", "memray", "flamegraph", "-f", "-o", str(out), str(self.capture)],
            check=True,
            capture_output=True,
        )
        return out

    def heap_svg(self, *, width: int = 360) -> str:
        """The heap-over-time curve as SVG."""
        points = [(t, b / 2**20) for t, b in self.heap.select("t_s", "heap_bytes").iter_rows()]
        end = max((t for t, _ in points), default=0.0) or max(self.seconds, 1e-3)
        peak = self.peak_bytes / 2**20
        return _svg.line_chart(
            {"heap (sampled)": points, "peak (high-water mark)": [(0.0, peak), (end, peak)]},
            title=f"heap over time: {self.label}",
            x_label="s",
            y_label="MiB",
            width=width,
        )

    def sites_html(self) -> str:
        """The top allocation sites as an HTML table."""
        rows = "".join(
            f"<tr><td>{escape(r['function'])}</td><td title='{escape(display_path(r['file']))}'>"
            f"{escape(Path(r['file']).name)}:{r['line']}</td>"
            f"<td style='text-align:right'>{escape(fmt.size(r['bytes']))}</td>"
            f"<td style='text-align:right'>{r['allocations']:,}</td>"
            f"<td style='text-align:right'>{r['share']:.0%}</td>"
            f"<td>{escape(r['caller'] or '')}</td></tr>"
            for r in self.sites.iter_rows(named=True)
        )
        return (
            "<table class='scfeeds-memory-sites' style='font-size:12px'><thead><tr>"
            "<th>function</th><th>where</th><th>bytes at peak</th><th>allocations</th>"
            f"<th>share</th><th>from your code</th></tr></thead><tbody>{rows}</tbody></table>"
        )

    def text(self) -> str:
        """Peak heap and the top site in one line."""
        top = ""
        if self.sites.height:
            r = self.sites.row(0, named=True)
            top = f"; top site {r['function']} ({Path(r['file']).name}:{r['line']}) "
            top += f"{fmt.size(r['bytes'])}"
        return (
            f"{self.label}: peak heap {fmt.size(self.peak_bytes)} (high-water mark; "
            f"sampled curve tops at {fmt.size(self.sampled_peak_bytes)}), "
            f"{self.total_allocations:,} allocations in {fmt.duration(self.seconds)}{top}"
        )

    def _repr_html_(self) -> str:
        return (
            f"<div class='scfeeds-memory'><p><b>{escape(self.label)}</b>: peak heap "
            f"<b class='scfeeds-peak'>{escape(fmt.size(self.peak_bytes))}</b> "
            "(high-water mark: the chart's flat line), "
            f"{self.total_allocations:,} allocations in {escape(fmt.duration(self.seconds))}; "
            f"the sampled curve tops at {escape(fmt.size(self.sampled_peak_bytes))}"
            f"</p><div style='display:flex;gap:16px;flex-wrap:wrap;align-items:flex-start'>"
            f"{self.heap_svg()}{self.sites_html()}</div>"
            f"<p style='font-size:11px;color:#666'>capture: {escape(str(self.capture))} "
            "(<code>.flamegraph()</code> writes memray's flame graph; it needs internet)</p>"
            "</div>"
        )

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(self.text())


#: Native frames that are the allocator itself, not the code that wanted the memory.
_ALLOCATOR = re.compile(
    r"(^|_)(malloc|calloc|realloc|free|memalign|aligned_alloc|posix_memalign|valloc|mmap|"
    r"mremap|alloc|dealloc|allocate|reallocate|alloc_zeroed)(_default|_impl|_real)?$|"
    r"^_?rjem_|^je_|^pac_|^mi_|^__rust_|^__rdl_|^memray::|^alloc::|^core::alloc|^std::alloc|"
    r"^do_r?allocx$|r?allocx$|^_PyObject_Arena|^_PyMem_"
)
_BASE62_REF = re.compile(r"[0-9A-Za-z]*_")
_CRATE_ROOT = re.compile(r"C(?:s[0-9A-Za-z]*_)?(\d+)_?")


def rust_name(symbol: str) -> str:
    """A readable name for a Rust v0 mangled symbol (``_RNv...``): its path identifiers
    joined by ``::`` (crate first, generic arguments and disambiguators dropped), e.g.
    ``polars_arrow::array::binview::mutable::MutableBinaryViewArray::with_capacity``; other
    symbols are returned unchanged."""
    if not symbol.startswith("_R"):
        return symbol
    # drop the instantiating crate that may follow the path (``...Cs<hash>_14polars_compute``)
    symbol = symbol.split(".", 1)[0]
    for m in _CRATE_ROOT.finditer(symbol):
        if m.start() > 2 and m.end() + int(m.group(1)) == len(symbol):
            symbol = symbol[: m.start()]
            break
    idents: list[str] = []
    i, n = 2, len(symbol)
    while i < n:
        c = symbol[i]
        if c.isdigit():
            j = i
            while j < n and symbol[j].isdigit():
                j += 1
            length = int(symbol[i:j])
            if j < n and symbol[j] == "_":
                j += 1
            ident = symbol[j : j + length]
            i = j + length
            if ident and ident not in idents[-1:]:
                idents.append(ident)
        elif c in "sB" or (c == "C" and symbol[i + 1 : i + 2] == "s"):
            # a disambiguator (s<base62>_), a back-reference (B<base62>_), a crate hash
            i += 2 if c == "C" else 1
            match = _BASE62_REF.match(symbol, i)
            i = match.end() if match else i
        elif c == ".":
            break  # a suffix (.llvm.123)
        else:
            i += 1
    if not idents:
        return symbol
    return "::".join(idents) if len(idents) <= 4 else f"{idents[0]}::…::{'::'.join(idents[-3:])}"


def _native_site(frames: Sequence[tuple[str, str, int]]) -> tuple[str, str, int]:
    """The innermost native frame that is not the allocator (memray's own hooks, libc or
    jemalloc entry points, Rust's ``alloc`` shims), its Rust name readable."""
    for function, file, line in frames:
        name = rust_name(function) if function else ""
        if name and not _ALLOCATOR.search(function) and not _ALLOCATOR.search(name):
            where = file if file and file != "<unknown>" else "<native>"
            return (name, where, int(line or 0))
    return ("<unknown>", "<native>", 0)


def read_capture(
    capture: str | os.PathLike[str], *, label: str = "run", top: int = 10, result: object = None
) -> MemoryProfile:
    """Build a :class:`MemoryProfile` from a memray capture file.

    Parameters
    ----------
    capture
        A file written by ``memray.Tracker`` (or ``memray run``).
    top
        How many allocation sites to keep (largest at the high-water mark first).
    """
    path = Path(capture)
    reader = memray.FileReader(str(path))
    try:
        meta = reader.metadata
        native = bool(getattr(meta, "has_native_traces", False))
        by_site: dict[tuple[str, str, int], list[int]] = {}
        callers: dict[tuple[str, str, int], tuple[int, str]] = {}
        for record in reader.get_high_watermark_allocation_records(merge_threads=True):
            # The innermost Python frame is the line that asked for the memory; native
            # allocations (polars, numpy) land on the Python line that called into them.
            stack = record.stack_trace(_MAX_FRAMES)
            if stack:
                site = stack[0]
            elif native:
                # No Python frame (a thread polars started): name the native function that
                # asked for the memory, from the symbols memray resolved.
                site = _native_site(record.native_stack_trace(_MAX_FRAMES))
            else:
                site = ("<unknown>", "<native>", 0)
            totals = by_site.setdefault(site, [0, 0])
            totals[0] += record.size
            totals[1] += record.n_allocations
            # When the site is inside a library, also name the user's line that led there
            # (the largest such record wins).
            caller = _user_frame(stack)
            if caller and record.size > callers.get(site, (-1, ""))[0]:
                callers[site] = (record.size, caller)
        start_ms = meta.start_time.timestamp() * 1000
        heap_rows = [
            ((s.time - start_ms) / 1000, s.heap, s.rss) for s in reader.get_memory_snapshots()
        ]
    finally:
        reader.close()
    peak = int(meta.peak_memory)
    sampled_peak = max((h for _, h, _ in heap_rows), default=0)
    ranked = sorted(by_site.items(), key=lambda kv: kv[1][0], reverse=True)[:top]
    sites = pl.DataFrame(
        [
            {
                "function": fn,
                "file": file,
                "line": line,
                "bytes": size,
                "allocations": count,
                "share": size / peak if peak else 0.0,
                "caller": callers.get((fn, file, line), (0, None))[1],
            }
            for (fn, file, line), (size, count) in ranked
        ],
        schema=SITES_SCHEMA,
    )
    # Start the curve at 0 so runs of different length compare on one axis.
    heap = pl.DataFrame([(0.0, 0, 0), *heap_rows], schema=HEAP_SCHEMA, orient="row")
    seconds = (meta.end_time - meta.start_time).total_seconds()
    return MemoryProfile(
        label=label,
        peak_bytes=peak,
        sampled_peak_bytes=int(sampled_peak),
        total_allocations=int(meta.total_allocations),
        seconds=seconds,
        sites=sites,
        heap=heap,
        capture=path,
        result=result,
    )


class MemoryProfiler:
    """Run a callable or a coroutine under ``memray.Tracker`` and summarise its heap.

    Parameters
    ----------
    native_traces
        Also record native stacks (slower, bigger capture; the summary still attributes
        native allocations to Python lines without it).
    interval_ms
        Heap sampling period of the heap-over-time curve.
    top
        Allocation sites to keep.
    directory
        Where capture files go (default: a fresh temporary directory per profiler).

    Examples
    --------
    In a notebook cell::

        profiler = MemoryProfiler()
        profile = await profiler.arun(scfeeds.fetch(urls, "landing"), label="fetch")
        profile          # peak heap, heap curve, top allocation sites

    For synchronous code: ``profiler.run(fn, *args)``.
    """

    def __init__(
        self,
        *,
        native_traces: bool = False,
        interval_ms: int = 10,
        top: int = 10,
        directory: str | os.PathLike[str] | None = None,
    ) -> None:
        self.native_traces = native_traces
        self.interval_ms = interval_ms
        self.top = top
        if directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="scfeeds-memray-"))
            # captures stay readable (flame graphs) until the interpreter exits, then go
            atexit.register(shutil.rmtree, self.directory, True)
        else:
            self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._count = 0

    def _capture_path(self, label: str) -> Path:
        self._count += 1
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in label)[:40]
        path = self.directory / f"{self._count:03d}-{safe}.bin"
        path.unlink(missing_ok=True)  # memray refuses to overwrite
        return path

    def _tracker(self, path: Path) -> Any:
        return memray.Tracker(
            str(path),
            native_traces=self.native_traces,
            memory_interval_ms=self.interval_ms,
            file_format=memray.FileFormat.ALL_ALLOCATIONS,
        )

    def run(
        self,
        fn: Callable[..., object],
        /,
        *args: object,
        label: str | None = None,
        **kwargs: object,
    ) -> MemoryProfile:
        """Call ``fn(*args, **kwargs)`` under the tracker and return its profile.

        For a coroutine function or a coroutine, use :meth:`arun` (``run`` refuses them:
        tracking only the creation of a coroutine measures nothing).
        """
        if inspect.iscoroutinefunction(fn) or inspect.isawaitable(fn):
            raise ConfigurationError(
                "MemoryProfiler.run() got a coroutine: use `await profiler.arun(...)` instead"
            )
        name = str(label or getattr(fn, "__name__", "run"))
        path = self._capture_path(name)
        with self._tracker(path):
            result = fn(*args, **kwargs)
        return read_capture(path, label=name, top=self.top, result=result)

    async def arun(
        self,
        work: Awaitable[object] | Callable[[], Awaitable[object]],
        /,
        *,
        label: str | None = None,
    ) -> MemoryProfile:
        """Await ``work`` (a coroutine, or a function returning one) under the tracker.

        Everything the event loop does meanwhile is tracked too (memray traces the whole
        process), so profile one thing at a time.
        """
        awaitable = work() if callable(work) and not inspect.isawaitable(work) else work
        if not inspect.isawaitable(awaitable):
            raise ConfigurationError(
                f"arun() needs a coroutine or awaitable, got {type(work).__name__}: pass "
                "`fn()` or `fn`, where fn is an async function, or use run() for a plain function"
            )
        name = str(label or getattr(awaitable, "__name__", None) or "coroutine")
        path = self._capture_path(name)
        with self._tracker(path):
            result = await awaitable
        return read_capture(path, label=name, top=self.top, result=result)


def _exec_cell(cell: str, namespace: dict[str, Any]) -> Any:
    """Run a cell's source in ``namespace``; top-level ``await`` runs via ``scfeeds.run``.

    A magic runs synchronously inside the kernel's loop, so an awaiting cell cannot be
    awaited there; ``scfeeds.run`` drives it on its background loop thread instead (memray
    tracks every thread of the process, so nothing is missed). Objects bound to the kernel's
    own loop (a session opened in an earlier cell) cannot be used from such a cell.
    """
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    code = compile(cell, "<scfeeds_memray>", "exec", flags=flags)
    if code.co_flags & inspect.CO_COROUTINE:
        return run(eval(code, namespace))
    exec(code, namespace)
    return None


def load_ipython_extension(ipython: Any) -> None:  # IPython's shell API is untyped
    """``%load_ext scfeeds.notebook`` registers the ``%%scfeeds_memray`` cell magic.

    ``%%scfeeds_memray [label]`` runs the cell under ``memray.Tracker`` and displays its
    :class:`MemoryProfile`; the profile is also stored as ``_scfeeds_memray`` in the user
    namespace.
    """

    def scfeeds_memray(line: str, cell: str) -> None:
        label = line.strip() or "cell"
        profiler = MemoryProfiler()
        path = profiler._capture_path(label)
        source = ipython.transform_cell(cell)
        with profiler._tracker(path):
            _exec_cell(source, ipython.user_ns)
        profile = read_capture(path, label=label, top=profiler.top)
        ipython.user_ns["_scfeeds_memray"] = profile
        fmt.show(profile)

    ipython.register_magic_function(scfeeds_memray, magic_kind="cell")
