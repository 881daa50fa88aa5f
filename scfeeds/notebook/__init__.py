"""Notebook front-ends: live fetch progress, a concurrency/chunk-size tuner, a heap profiler.

The edge of the package: nothing in ``scfeeds`` imports this module, and ipywidgets and memray
(the ``notebook`` extra) are imported only here. Charts are SVG drawn by scfeeds, so every
view renders offline in JupyterLab and is saved with the notebook.

- :class:`FetchProgress` / :func:`auto_progress`: what ``fetch(progress="auto")`` shows.
- :class:`ConcurrencyTuner` with :class:`FeedDriver`: sliders, start/stop, live charts, sweeps.
- :class:`MemoryProfiler`: peak heap, top allocation sites, heap over time (memray);
  ``%load_ext scfeeds.notebook`` adds the ``%%scfeeds_memray`` cell magic.
- :func:`compare_buffering`: in-memory buffering vs streaming to disk, side by side.
- :class:`ExceptionsExplorer`: filter a reconciliation's exceptions, open the lines and raw
  document behind one.
- :func:`line_chart`: the SVG line chart the widgets draw, for a report's own series.
"""

from __future__ import annotations

from scfeeds.notebook._compare import BufferingComparison, buffer_in_memory, compare_buffering
from scfeeds.notebook._driver import FeedDriver
from scfeeds.notebook._explorer import ExceptionsExplorer
from scfeeds.notebook._memory import (
    MemoryProfile,
    MemoryProfiler,
    load_ipython_extension,
    read_capture,
)
from scfeeds.notebook._metrics import Probe, Sample
from scfeeds.notebook._progress import FetchProgress, auto_progress
from scfeeds.notebook._steps import StepProgress
from scfeeds.notebook._svg import line_chart
from scfeeds.notebook._tuner import (
    ConcurrencyTuner,
    RunPlan,
    SweepResult,
    TunerDriver,
    recommend,
)

__all__ = [
    "BufferingComparison",
    "ConcurrencyTuner",
    "ExceptionsExplorer",
    "FeedDriver",
    "FetchProgress",
    "MemoryProfile",
    "MemoryProfiler",
    "Probe",
    "RunPlan",
    "Sample",
    "StepProgress",
    "SweepResult",
    "TunerDriver",
    "auto_progress",
    "buffer_in_memory",
    "compare_buffering",
    "line_chart",
    "load_ipython_extension",
    "read_capture",
    "recommend",
]
