"""StepProgress: a progress line for a run of a few long steps (the points of a sweep).

In a Jupyter kernel it is a bar and a status line, displayed when created (before the first
step starts) and updated as each step starts and ends; in a terminal a tqdm bar on stderr;
elsewhere (a script, a test) nothing is shown but the state is kept.
"""

from __future__ import annotations

import shutil
import sys
import time
from html import escape
from typing import Any

import ipywidgets as widgets

from scfeeds._fetch._progress import _in_kernel
from scfeeds.notebook import _format as fmt


class StepProgress:
    """``total`` steps; :meth:`begin` names the step starting, :meth:`end` counts it done.

    Attributes: ``done`` (steps finished), ``current`` (the step running), ``bar`` and
    ``label`` (the widgets), ``history`` (every status line shown, in order).
    """

    def __init__(self, total: int, description: str, *, show: bool | None = None) -> None:
        self.total = total
        self.done = 0
        self.current = ""
        self.description = description
        self.history: list[str] = []
        self.bar = widgets.IntProgress(value=0, min=0, max=max(total, 1), description=description)
        self.label = widgets.HTML()
        self.box = widgets.HBox([self.bar, self.label])
        self._started = time.monotonic()
        self._handle: Any = None
        self._tqdm: Any = None
        in_kernel = _in_kernel() if show is None else show
        self._set(f"0/{total} · starting")
        if in_kernel:
            self._handle = fmt.show(self)
        elif show is None and sys.stderr is not None and sys.stderr.isatty():
            from tqdm import tqdm

            self._tqdm = tqdm(
                total=total,
                desc=description,
                unit="point",
                file=sys.stderr,
                # a terminal reporting 0 x 0 (a fresh pty) would hide the bar: 80 x 24 there
                ncols=shutil.get_terminal_size().columns,
                nrows=shutil.get_terminal_size().lines,
            )

    def _set(self, text: str) -> None:
        elapsed = fmt.duration(time.monotonic() - self._started)
        line = f"{text} · {elapsed} elapsed"
        self.history.append(line)
        self.label.value = f'<span style="font-family:monospace">{escape(line)}</span>'
        if self._tqdm is not None:
            self._tqdm.set_postfix_str(text, refresh=True)

    def begin(self, step: str) -> None:
        """Step ``done + 1`` of ``total`` (``step`` says which) starts now."""
        self.current = step
        self._set(f"{self.done + 1}/{self.total} · {step}")

    def end(self) -> None:
        """The current step is done."""
        self.done += 1
        self.bar.value = self.done
        if self._tqdm is not None:
            self._tqdm.update(1)

    def close(self, summary: str, *, ok: bool = True) -> None:
        """All steps over (or stopped): the bar turns green (``ok``) or orange, ``summary``
        replaces the status line, and the saved output shows the final state."""
        self.bar.bar_style = "success" if ok and self.done == self.total else "warning"
        self.current = ""
        self._set(f"{self.done}/{self.total} · {summary}")
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None
        fmt.update_shown(self._handle, self)

    def static_html(self) -> str:
        pct = 100 * self.done / max(self.total, 1)
        return fmt.static_html(
            f'<div style="font-family:monospace;font-size:12px">{escape(self.description)} '
            f'<span style="display:inline-block;width:160px;height:10px;background:#eee">'
            f'<span style="display:inline-block;width:{pct:.0f}%;height:10px;'
            f'background:#5cb85c"></span></span> {self.label.value}</div>'
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        plain = f"{self.description}: {self.done}/{self.total}"
        return fmt.mimebundle(self.box, plain, self.static_html(), **kwargs)
