"""ConcurrencyTuner: turn ``max_at_once`` and chunk size while a fetch runs, and sweep a grid.

The fetch runs as a background task on the kernel's event loop, so the cell that started it
returns at once and the kernel keeps processing widget messages: a slider moved in the browser
reaches :meth:`ConcurrencyTuner._on_limit` while requests are in flight, and the driver applies
the new ceiling to the running fetch immediately (ipykernel >= 7.4 also delivers widget messages
during a running top-level ``await``; the ``notebook`` extra pins it).

The tuner talks to the fetch through a small protocol, :class:`TunerDriver`:
``run(plan, probe)`` performs a fetch and reports to the probe, ``set_max_at_once(n)`` changes
the running fetch's ceiling, ``current_limit()`` reads the adaptive (AIMD) limit the engine has
settled on. :class:`scfeeds.notebook.FeedDriver` implements it with ``scfeeds.fetch`` against a
paged feed; tests use a fake.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any, NamedTuple, Protocol, TypedDict, cast

import ipywidgets as widgets
import polars as pl

from scfeeds.exceptions import ConfigurationError, StateError
from scfeeds.notebook import _format as fmt
from scfeeds.notebook import _svg
from scfeeds.notebook._metrics import Probe, Sample
from scfeeds.notebook._steps import StepProgress


@dataclass(frozen=True, kw_only=True)
class RunPlan:
    """What the tuner asks a driver to fetch.

    ``chunk_size`` is read each time the driver plans the next page, so a chunk-size change
    applies to pages not yet requested. ``records``: stop after this many records (``None``:
    keep going, pass after pass, until cancelled).
    """

    max_at_once: int
    chunk_size: Callable[[], int]
    records: int | None = None


class TunerDriver(Protocol):
    """How the tuner runs and steers a fetch (see the module docstring)."""

    async def run(self, plan: RunPlan, probe: Probe) -> None:
        """Fetch per ``plan``; report progress events and latencies to ``probe``."""
        ...

    def set_max_at_once(self, n: int) -> None:
        """Change the running fetch's ceiling now (no-op when nothing runs)."""
        ...

    def current_limit(self) -> int | None:
        """The adaptive limit in force (AIMD), or ``None`` when nothing runs."""
        ...


# -- the knee -----------------------------------------------------------------------------


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.0f} ms"


def recommend(
    results: pl.DataFrame,
    *,
    latency_rise: float = 2.0,
    tolerance: float = 0.05,
) -> SweepPoint | None:
    """The knee of a sweep: the best throughput before 429s or a latency rise.

    A point is *healthy* when the server never throttled it (``throttled == 0``), nothing
    failed, and its p90 latency is at most ``latency_rise`` x the lowest p90 measured at the
    same chunk size (queueing at the server shows up as latency before it shows up as errors).
    Among healthy points the highest throughput wins; points within ``tolerance`` of it are
    ties, broken toward fewer requests in flight (then larger chunks), since extra
    concurrency that buys nothing only loads the supplier's server. With no healthy point,
    the least-throttled point is returned.

    Returns the winning row as a dict, or ``None`` for an empty frame.
    """
    if results.is_empty():
        return None
    floor = results.group_by("chunk_size").agg(pl.col("p90_s").min().alias("_floor"))
    scored = results.join(floor, on="chunk_size", how="left").with_columns(
        healthy=(pl.col("throttled") == 0)
        & (pl.col("failed") == 0)
        & (
            pl.col("p90_s").is_nan()
            | pl.col("p90_s").is_null()
            | (pl.col("p90_s") <= pl.col("_floor") * latency_rise)
        )
    )
    healthy = scored.filter(pl.col("healthy"))
    if healthy.is_empty():
        best = scored.sort(
            ["throttled", "throughput_bps"], descending=[False, True], maintain_order=True
        ).row(0, named=True)
    else:
        top = healthy.get_column("throughput_bps").max()
        assert isinstance(top, float | int)
        best = (
            healthy.filter(pl.col("throughput_bps") >= top * (1 - tolerance))
            .sort(["max_at_once", "chunk_size"], descending=[False, True])
            .row(0, named=True)
        )
    best.pop("_floor", None)
    best.pop("healthy", None)
    return cast(SweepPoint, best)  # a row of the sweep's frame (SWEEP_SCHEMA)


class SweepPoint(TypedDict):
    """One grid point of a sweep (a row of ``SWEEP_SCHEMA``); ``recommend`` returns one."""

    max_at_once: int
    chunk_size: int
    records: int
    seconds: float
    throughput_bps: float
    records_per_s: float
    p50_s: float | None
    p90_s: float | None
    throttled: int
    retried: int
    failed: int
    final_limit: int


SWEEP_SCHEMA = {
    "max_at_once": pl.Int64,
    "chunk_size": pl.Int64,
    "records": pl.Int64,
    "seconds": pl.Float64,
    "throughput_bps": pl.Float64,
    "records_per_s": pl.Float64,
    "p50_s": pl.Float64,
    "p90_s": pl.Float64,
    "throttled": pl.Int64,
    "retried": pl.Int64,
    "failed": pl.Int64,
    "final_limit": pl.Int64,
}


class SweepResult(NamedTuple):
    """A sweep's measurements (one row per grid point) and the recommended knee.

    Unpack it: ``results, knee = await tuner.sweep(...)``. Displays as a heatmap of
    throughput (429s marked, the knee outlined) and throughput-vs-concurrency lines.
    """

    results: pl.DataFrame
    knee: SweepPoint | None

    def heatmap_svg(self) -> str:
        """Throughput per (max_at_once, chunk size); cells with 429s tagged, knee outlined."""
        df = self.results
        concurrency = sorted(set(df.get_column("max_at_once").to_list()))
        chunks = sorted(set(df.get_column("chunk_size").to_list()))
        cells: dict[tuple[int, int], dict[str, Any]] = {
            (r["max_at_once"], r["chunk_size"]): r for r in df.iter_rows(named=True)
        }
        values: list[list[float | None]] = []
        marks: dict[tuple[int, int], str] = {}
        highlight = None
        for i, c in enumerate(concurrency):
            row: list[float | None] = []
            for j, k in enumerate(chunks):
                r = cells.get((c, k))
                row.append(None if r is None else r["throughput_bps"] / 2**20)
                if r is not None and r["throttled"]:
                    marks[(i, j)] = f"{r['throttled']}×429"
                if self.knee and (c, k) == (self.knee["max_at_once"], self.knee["chunk_size"]):
                    highlight = (i, j)
            values.append(row)
        return _svg.heatmap(
            [str(c) for c in concurrency],
            [str(k) for k in chunks],
            values,
            title="throughput MiB/s",
            row_label="max_at_once",
            col_label="chunk size",
            fmt=lambda v: f"{v:.2f}",
            marks=marks,
            highlight=highlight,
        )

    def lines_svg(self) -> str:
        """Throughput against max_at_once, one line per chunk size."""
        series: dict[str, list[tuple[float, float]]] = {}
        for r in self.results.sort("max_at_once").iter_rows(named=True):
            series.setdefault(f"chunk {r['chunk_size']}", []).append(
                (float(r["max_at_once"]), r["throughput_bps"] / 2**20)
            )
        return _svg.line_chart(
            series, title="throughput vs concurrency", x_label="max_at_once", y_label="MiB/s"
        )

    def text(self) -> str:
        """The knee in one line."""
        if self.knee is None:
            return "sweep: no results"
        k = self.knee
        return (
            f"recommended: max_at_once={k['max_at_once']}, chunk_size={k['chunk_size']} "
            f"({fmt.rate(k['throughput_bps'])}, p90 {_ms(k['p90_s'])}, "
            f"{k['throttled']} throttled)"
        )

    def _repr_html_(self) -> str:
        return (
            f'<div class="scfeeds-sweep"><p class="scfeeds-knee"><b>{escape(self.text())}</b>'
            f"</p><div style='display:flex;gap:16px;flex-wrap:wrap'>{self.heatmap_svg()}"
            f"{self.lines_svg()}</div></div>"
        )

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(self.text() + "\n" + repr(self.results))


def _constant(value: int) -> Callable[[], int]:
    return lambda: value


# -- the widget ---------------------------------------------------------------------------

_DEFAULT_CHUNKS = (100, 250, 500, 1000, 2000, 5000)


class ConcurrencyTuner:
    """Sliders for ``max_at_once`` and chunk size, start/stop, and live charts of a fetch.

    Charts (SVG, offline): throughput, latency p50/p90/p99, 429s per interval, and the
    adaptive (AIMD) limit next to the ceiling you set, so you can watch AIMD find the server's
    limit. Moving the concurrency slider changes the running fetch's ceiling at once; moving
    the chunk-size slider applies to pages not yet requested.

    Parameters
    ----------
    driver
        A :class:`TunerDriver`, e.g. ``FeedDriver(lines_url, total=records)``.
    max_at_once
        Initial ceiling; the slider spans ``1..max_limit``.
    chunk_size
        Initial records per page; the slider offers ``chunk_sizes``.
    interval
        Seconds between samples (and chart redraws: well under the ~10/s the kernel handles).
    window
        Seconds of history the live charts show.

    Examples
    --------
    In a notebook, against the simulated portal::

        portal = serve_in_thread(root, latency=0.02, rate_limit=200)
        tuner = ConcurrencyTuner(FeedDriver(feed["lines_url"], total=feed["records"]))
        tuner            # shows the widget; press Start, move the sliders
        results, knee = await tuner.sweep(concurrency=[1, 4, 16, 64], chunk_sizes=[500, 2000])
    """

    def __init__(
        self,
        driver: TunerDriver,
        *,
        # not DEFAULT_MAX_AT_ONCE: the slider starts low so the first chart shows throughput
        # climbing as the analyst raises it; sweep() finds the knee
        max_at_once: int = 8,
        max_limit: int = 64,
        chunk_size: int = 1000,
        chunk_sizes: Sequence[int] = _DEFAULT_CHUNKS,
        interval: float = 0.5,
        window: float = 60.0,
    ) -> None:
        if not 1 <= max_at_once <= max_limit:
            raise ConfigurationError(
                f"max_at_once must be in 1..max_limit={max_limit}, got {max_at_once}: "
                "pass a value in that range or a larger max_limit="
            )
        sizes = sorted(set(chunk_sizes) | {chunk_size})
        if sizes[0] < 1:
            raise ConfigurationError(
                f"chunk sizes must be >= 1, got {sizes[0]}: pass record counts per request"
            )
        self.driver = driver
        self.interval = interval
        self.window = window
        self.probe: Probe | None = None
        #: The progress line of the last :meth:`sweep`.
        self.sweep_progress: StepProgress | None = None
        self.task: asyncio.Task[None] | None = None
        self.last_error: BaseException | None = None
        self.limit_slider = widgets.IntSlider(
            value=max_at_once,
            min=1,
            max=max_limit,
            description="max_at_once",
            continuous_update=False,
            style={"description_width": "initial"},
        )
        self.chunk_slider = widgets.SelectionSlider(
            options=sizes,
            value=chunk_size,
            description="chunk size",
            continuous_update=False,
            style={"description_width": "initial"},
        )
        self.button = widgets.Button(description="Start", icon="play", button_style="success")
        self.status = widgets.HTML(value=self._status_html("idle"))
        self.charts = widgets.HTML(value=self._charts_html([]))
        self.limit_slider.observe(self._on_limit, names="value")
        self.button.on_click(self._on_button)
        self.box = widgets.VBox(
            [
                widgets.HBox([self.limit_slider, self.chunk_slider, self.button]),
                self.status,
                self.charts,
            ]
        )
        self.box.add_class("scfeeds-tuner")
        self._handle: Any = None  # set by show()

    # -- public API ----------------------------------------------------------------------

    @property
    def max_at_once(self) -> int:
        """The ceiling the slider sets."""
        value = self.limit_slider.value
        assert isinstance(value, int)
        return value

    @property
    def chunk_size(self) -> int:
        """Records per page for pages not yet requested."""
        value = self.chunk_slider.value
        assert isinstance(value, int)
        return value

    @property
    def running(self) -> bool:
        """Whether a fetch is running in the background."""
        return self.task is not None and not self.task.done()

    def start(self, *, records: int | None = None) -> None:
        """Start the fetch as a background task (``self.task``) on the running loop.

        ``records``: stop after this many (``None``: run until :meth:`stop`). Returns at once
        (and returns nothing, so a cell ending in ``tuner.start()`` prints nothing).
        """
        if self.running:
            raise StateError("the tuner is already running; stop() it first")
        loop = asyncio.get_running_loop()
        self.probe = Probe()
        self.last_error = None
        plan = RunPlan(
            max_at_once=self.max_at_once, chunk_size=lambda: self.chunk_size, records=records
        )
        self.task = loop.create_task(self._run(plan, self.probe), name="scfeeds-tuner")
        self.button.description, self.button.icon = "Stop", "stop"
        self.button.button_style = "danger"
        self.status.value = self._status_html("running")

    async def stop(self) -> None:
        """Cancel the running fetch and wait until it has wound down."""
        task = self.task
        if task is None or task.done():
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def wait(self) -> None:
        """Wait for the running fetch to finish on its own."""
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    def samples(self) -> pl.DataFrame:
        """The current (or last) run's samples, one row per interval."""
        return Probe().frame() if self.probe is None else self.probe.frame()

    async def sweep(
        self,
        *,
        concurrency: Sequence[int] = (1, 2, 4, 8, 16, 32),
        chunk_sizes: Sequence[int] | None = None,
        records: int = 5000,
        pause: float = 0.0,
        latency_rise: float = 2.0,
        progress: bool | None = None,
    ) -> SweepResult:
        """Fetch ``records`` records at every (max_at_once, chunk size) and find the knee.

        Parameters
        ----------
        concurrency, chunk_sizes
            The grid (``chunk_sizes`` defaults to the slider's current value).
        records
            Records fetched per grid point (bounded, so a sweep takes a predictable time).
        pause
            Seconds to wait between points (lets a server's rate-limit bucket refill).
        latency_rise
            See :func:`recommend`.
        progress
            A progress line (``self.sweep_progress``, a :class:`StepProgress`): the point
            running, points done of the grid, time elapsed. ``None`` (default): shown in a
            Jupyter kernel (before the first point starts) and as a bar in a terminal;
            ``True``: display it in any case; ``False``: keep it, show nothing.

        Returns
        -------
        SweepResult
            ``results`` (one row per point: throughput, records/s, p50/p90 latency, 429s,
            retries, failures, final AIMD limit) and ``knee``; it displays as charts.
        """
        if self.running:
            raise StateError("the tuner is running live: stop() it before sweeping")
        sizes = list(chunk_sizes) if chunk_sizes else [self.chunk_size]
        rows: list[dict[str, Any]] = []
        steps = StepProgress(
            len(sizes) * len(concurrency), "sweep", show=None if progress is None else progress
        )
        self.sweep_progress = steps
        try:
            await self._sweep_points(steps, sizes, concurrency, records, pause, rows)
        except BaseException:
            steps.close("stopped", ok=False)
            raise
        results = pl.DataFrame(rows, schema=SWEEP_SCHEMA)
        result = SweepResult(results, recommend(results, latency_rise=latency_rise))
        steps.close(result.text())
        self.status.value = self._status_html(result.text())
        return result

    async def _sweep_points(
        self,
        steps: StepProgress,
        sizes: Sequence[int],
        concurrency: Sequence[int],
        records: int,
        pause: float,
        rows: list[dict[str, Any]],
    ) -> None:
        loop = asyncio.get_running_loop()
        for chunk in sizes:
            for n in concurrency:
                steps.begin(f"max_at_once={n}, chunk size={chunk}")
                probe = Probe()
                plan = RunPlan(max_at_once=n, chunk_size=_constant(chunk), records=records)
                self.status.value = self._status_html(f"sweep: max_at_once={n}, chunk size={chunk}")
                started = loop.time()
                await self.driver.run(plan, probe)
                seconds = max(loop.time() - started, 1e-9)
                final_limit = self.driver.current_limit()
                event = probe.event
                p50, p90 = probe.latency_quantiles()
                if math.isnan(p50) and event is not None and event.done:
                    # No per-request latencies from this driver: Little's law over the run.
                    p50 = p90 = n * seconds / event.done
                rows.append(
                    {
                        "max_at_once": n,
                        "chunk_size": chunk,
                        "records": records,
                        "seconds": seconds,
                        "throughput_bps": (event.bytes if event else 0) / seconds,
                        "records_per_s": records / seconds,
                        "p50_s": p50,
                        "p90_s": p90,
                        "throttled": event.throttled if event else 0,
                        "retried": event.retried if event else 0,
                        "failed": event.failed if event else 0,
                        "final_limit": final_limit,
                    }
                )
                steps.end()
                if pause:
                    await asyncio.sleep(pause)

    # -- widget callbacks ----------------------------------------------------------------

    def _on_limit(self, change: dict[str, Any]) -> None:
        # Runs in the kernel's thread while the fetch task is suspended at an await:
        # the driver applies the new ceiling to the running fetch right away.
        self.driver.set_max_at_once(int(change["new"]))

    def _on_button(self, _button: widgets.Button) -> None:
        if self.running:
            assert self.task is not None
            self.task.cancel()
        else:
            self.start()

    async def _run(self, plan: RunPlan, probe: Probe) -> None:
        sampler = asyncio.get_running_loop().create_task(self._sample_forever(probe))
        outcome = "finished"
        try:
            await self.driver.run(plan, probe)
        except asyncio.CancelledError:
            outcome = "stopped"
            raise
        except Exception as exc:
            # The task runs in the background: nobody awaits it, so show the error instead
            # of losing it to "Task exception was never retrieved".
            self.last_error = exc
            outcome = f"error: {type(exc).__name__}: {exc}"
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            self._take_sample(probe)
            self.button.description, self.button.icon = "Start", "play"
            self.button.button_style = "success"
            self.status.value = self._status_html(outcome)
            fmt.update_shown(self._handle, self)

    async def _sample_forever(self, probe: Probe) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self._take_sample(probe)

    def _take_sample(self, probe: Probe) -> Sample:
        # Optional driver methods (FeedDriver has both): per-request latencies, live RTT.
        take = getattr(self.driver, "take_latencies", None)
        if callable(take):
            for seconds in take():
                probe.on_latency(seconds)
        srtt = getattr(self.driver, "smoothed_rtt", None)
        probe.srtt = srtt() if callable(srtt) else None
        sample = probe.sample(
            limit=self.driver.current_limit(),
            max_at_once=self.max_at_once,
            chunk_size=self.chunk_size,
        )
        recent = [s for s in probe.samples if s.t >= sample.t - self.window]
        self.charts.value = self._charts_html(recent)
        self.status.value = self._status_html("running" if self.running else "idle", sample)
        return sample

    # -- rendering -----------------------------------------------------------------------

    def _status_html(self, state: str, sample: Sample | None = None) -> str:
        parts = [f"<b>{escape(state)}</b>"]
        if sample is not None:
            limit = "?" if sample.limit is None else str(sample.limit)
            p50 = "?" if math.isnan(sample.p50) else f"{sample.p50 * 1000:.0f} ms"
            parts += [
                f"{fmt.count(sample.done)} items",
                fmt.rate(sample.throughput_bps),
                f"p50 {p50}",
                f"AIMD limit {limit} / ceiling {sample.max_at_once}",
                f"{sample.in_flight} in flight",
            ]
        if self.last_error is not None:
            parts.append(f'<span style="color:#d62728">{escape(str(self.last_error))}</span>')
        return (
            '<span class="scfeeds-tuner-status" style="font-family:monospace;font-size:12px">'
            + " · ".join(parts)
            + "</span>"
        )

    @staticmethod
    def _charts_html(samples: Sequence[Sample]) -> str:
        def series(get: Callable[[Sample], float | None]) -> list[tuple[float, float]]:
            out = []
            for s in samples:
                value = get(s)
                out.append((s.t, math.nan if value is None else float(value)))
            return out

        charts = [
            _svg.line_chart(
                {"MiB/s": series(lambda s: s.throughput_bps / 2**20)},
                title="throughput",
                x_label="s",
            ),
            _svg.line_chart(
                {
                    "p50": series(lambda s: s.p50 * 1000),
                    "p90": series(lambda s: s.p90 * 1000),
                    "p99": series(lambda s: s.p99 * 1000),
                },
                title="latency (ms)",
                x_label="s",
            ),
            _svg.line_chart(
                {"429s": series(lambda s: s.throttled)},
                title="429 responses per interval",
                x_label="s",
                colors={"429s": "#D55E00"},
            ),
            _svg.line_chart(
                {
                    "ceiling": series(lambda s: s.max_at_once),
                    "AIMD limit": series(lambda s: s.limit),
                    "in flight": series(lambda s: s.in_flight),
                },
                title="concurrency",
                x_label="s",
                step=True,
            ),
        ]
        return (
            '<div class="scfeeds-tuner-charts" style="display:grid;'
            'grid-template-columns:repeat(2, 330px);gap:4px">' + "".join(charts) + "</div>"
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle: dict[str, Any] = self.box._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = (
            f"ConcurrencyTuner(max_at_once={self.max_at_once}, chunk_size={self.chunk_size})"
        )
        bundle["text/html"] = self.static_html()
        return bundle

    def static_html(self) -> str:
        """The tuner's current state as plain HTML (settings, status line, SVG charts): the
        ``text/html`` of its display, shown where the widget cannot render."""
        return fmt.static_html(
            '<div style="font-family:monospace;font-size:12px">'
            f"max_at_once {self.max_at_once} · chunk size {self.chunk_size}</div>"
            f"<div>{self.status.value}</div>{self.charts.value}"
        )

    def show(self) -> None:
        """Display the widget (same as leaving the tuner as a cell's last expression); the
        output saved with the notebook is brought up to date when a run ends."""
        self._handle = fmt.show(self)
