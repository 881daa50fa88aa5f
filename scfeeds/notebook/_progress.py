"""The fetch / ingest progress widget: a compact live line, red on failure, green when done.

The fetch engine (or an ingest) calls ``update(event)`` for every progress event and
``close(event)`` once at the end (see CONTRACTS.md "Fetch"). An ingest's events come in two
stages (``event.stage``: ``fetch`` then ``parse``); the widget shows one line per stage seen.
Importing this module registers :func:`auto_progress` as what ``progress="auto"`` shows in a
kernel (the core never imports the notebook layer; the package's ``scfeeds.progress`` entry
point names this function for runs that never imported it).

Events can arrive thousands of times per second; pushing each to the front end floods the
kernel's IOPub channel (measured: 30k unthrottled updates were still draining after 60 s), so
the widget redraws at most ``max_rate`` times per second, always shows the newest event, and
schedules one trailing redraw so a stall never hides the last state.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from html import escape
from typing import Any, Literal, Protocol

import ipywidgets as widgets

from scfeeds._fetch._progress import register_frontend
from scfeeds.exceptions import ConfigurationError
from scfeeds.notebook import _format as fmt

Status = Literal["running", "done", "failed", "interrupted"]

#: tqdm's colours: ``success`` green when done, ``danger`` red when anything failed;
#: ``warning`` (amber) when the run was interrupted (stopped by the user, not broken).
_BAR_STYLE: dict[Status, str] = {
    "running": "info",
    "done": "success",
    "failed": "danger",
    "interrupted": "warning",
}
_STATUS_COLOR: dict[Status, str] = {
    "running": "#1f77b4",
    "done": "#2ca02c",
    "failed": "#d62728",
    "interrupted": "#b26b00",
}


class ProgressEventLike(Protocol):
    """The fields of ``scfeeds.ProgressEvent`` this widget reads."""

    @property
    def total(self) -> int | None: ...
    @property
    def done(self) -> int: ...
    @property
    def succeeded(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def unchanged(self) -> int: ...
    @property
    def retried(self) -> int: ...
    @property
    def throttled(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    @property
    def elapsed(self) -> float: ...
    @property
    def throughput_bps(self) -> float: ...
    @property
    def concurrency(self) -> int: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def finished(self) -> bool: ...


def stage_of(event: ProgressEventLike) -> str:
    """``fetch`` (documents landing) or ``parse`` (an ingest's documents committed)."""
    return str(getattr(event, "stage", "fetch"))


def byte_fraction(event: ProgressEventLike) -> float | None:
    """Share of the run's body bytes on disk, when the event knows the run's size in bytes
    (``bytes_total``); ``None`` otherwise (the bar then counts items)."""
    total = getattr(event, "bytes_total", None)
    if not total or total <= 0:
        return None
    present = int(getattr(event, "bytes_present", 0))
    return min(max(present / float(total), 0.0), 1.0)


def eta_seconds(event: ProgressEventLike) -> float | None:
    """Seconds left: at the byte rate so far when the run's size in bytes is known (a few
    large files move the bar long before one item is done), else at the average item rate;
    ``None`` when it cannot be estimated."""
    if event.finished:
        return 0.0
    total = getattr(event, "bytes_total", None)
    if total and event.throughput_bps > 0:
        left = max(int(total) - int(getattr(event, "bytes_present", 0)), 0)
        return float(left / event.throughput_bps)
    if not event.total or event.done <= 0 or event.elapsed <= 0:
        return None
    remaining = max(event.total - event.done, 0)
    return remaining * event.elapsed / event.done


def status_of(event: ProgressEventLike | None, *, closed: bool) -> Status:
    """``interrupted`` when a cancelled run ended, else ``failed`` as soon as one item failed
    (and it stays so), ``done`` once closed."""
    if event is not None and getattr(event, "interrupted", 0) > 0:
        return "interrupted"
    if event is not None and event.failed > 0:
        return "failed"
    return "done" if closed or (event is not None and event.finished) else "running"


def summary_text(description: str, event: ProgressEventLike | None, *, closed: bool) -> str:
    """One line of plain text with every number the widget shows."""
    if event is None:
        return f"{description}: waiting for the first event"
    if stage_of(event) == "parse":
        return _parse_text(description, event, closed=closed)
    status = status_of(event, closed=closed)
    total = "?" if event.total is None else fmt.count(event.total)
    bytes_total = getattr(event, "bytes_total", None)
    size = (
        f"{fmt.size(getattr(event, 'bytes_present', 0))} of {fmt.size(bytes_total)}"
        if bytes_total and status in ("running", "interrupted")
        else fmt.size(event.bytes)
    )
    parts = [
        f"{description}: {fmt.count(event.done)}/{total} items",
        size,
        fmt.rate(event.throughput_bps),
        f"{event.retried} retried",
        f"{event.throttled} throttled (429)",
        f"{event.failed} failed",
    ]
    interrupted = int(getattr(event, "interrupted", 0))
    if interrupted:
        parts.append(f"{interrupted} interrupted (partial bodies kept to resume)")
    if event.unchanged:
        parts.append(f"{event.unchanged} unchanged")
    if status == "running":
        parts.append(f"concurrency {event.concurrency} ({event.in_flight} in flight)")
        parts.append(f"ETA {fmt.duration(eta_seconds(event))}")
        parts.append(f"elapsed {fmt.duration(event.elapsed)}")
    else:
        parts.append(f"{status} in {fmt.duration(event.elapsed)}")
    return " · ".join(parts)


def _parse_text(description: str, event: ProgressEventLike, *, closed: bool) -> str:
    """An ingest's parse stage: documents committed, already in the lake, their bytes."""
    status = status_of(event, closed=closed)
    total = "?" if event.total is None else fmt.count(event.total)
    parts = [
        f"{description}: {fmt.count(event.done)}/{total} documents",
        fmt.size(event.bytes),
        fmt.rate(event.throughput_bps),
        f"{fmt.count(event.succeeded)} committed",
        f"{fmt.count(event.unchanged)} already in the lake",
    ]
    interrupted = int(getattr(event, "interrupted", 0))
    if interrupted:
        parts.append(f"{interrupted} not parsed")
    if status == "running":
        parts.append(f"ETA {fmt.duration(eta_seconds(event))}")
        parts.append(f"elapsed {fmt.duration(event.elapsed)}")
    else:
        parts.append(f"{status} in {fmt.duration(event.elapsed)}")
    return " · ".join(parts)


class FetchProgress:
    """Live progress of a fetch in a notebook; pass it as ``fetch(..., progress=...)``.

    Shows items done/total, bytes, throughput, retries, throttled (429) responses, failures,
    the current concurrency and an ETA. The bar is blue while running, green when done, and
    red as soon as anything failed; it stays on screen at the end, and its final state is kept
    in the widget state saved with the notebook. Where widgets cannot render (a terminal,
    nbval's plain-text comparison) it falls back to text: ``_repr_pretty_`` and the
    ``text/plain`` part of its display, which is a stable label (no timings) so that re-running
    a notebook under nbval gives the same output.

    Parameters
    ----------
    total
        Items expected; ``None`` until the first event says.
    description
        Label on the left.
    max_rate
        Redraws per second at most (events in between are coalesced, the newest wins).
    show
        Display the widget now (``False`` to place it yourself with ``display(progress)``).

    Examples
    --------
    >>> progress = FetchProgress(total=120, show=False)
    >>> progress.text()
    'fetch: waiting for the first event'
    """

    def __init__(
        self,
        *,
        total: int | None = None,
        description: str = "fetch",
        max_rate: float = 10.0,
        show: bool = True,
    ) -> None:
        if max_rate <= 0:
            raise ConfigurationError(
                f"max_rate must be > 0 redraws per second, got {max_rate!r}: e.g. max_rate=10"
            )
        self.description = description
        self.total = total
        self.min_interval = 1.0 / max_rate
        self.last_event: ProgressEventLike | None = None
        #: The newest event of each stage seen (``fetch``; for an ingest also ``parse``).
        self.stages: dict[str, ProgressEventLike] = {}
        self.closed = False
        self.renders = 0
        self._clock = time.monotonic  # replaced by tests with a fake clock
        self._last_render = -math.inf
        self._trailing: asyncio.TimerHandle | None = None
        self._lock = threading.Lock()
        self.label = widgets.HTML(value=f"<b>{escape(description)}</b>")
        self.bar = widgets.IntProgress(
            min=0,
            max=max(total or 1, 1),
            value=0,
            bar_style=_BAR_STYLE["running"],
            layout=widgets.Layout(width="220px"),
        )
        self.stats = widgets.HTML(value="waiting for the first event")
        self.box = widgets.HBox(
            [self.label, self.bar, self.stats],
            layout=widgets.Layout(align_items="center", flex_flow="row wrap"),
        )
        self.box.add_class("scfeeds-progress")
        self._handle: Any = fmt.show(self) if show else None

    # -- the progress protocol of scfeeds.fetch -------------------------------------------

    def __call__(self, event: ProgressEventLike) -> None:
        self.update(event)

    def update(self, event: ProgressEventLike) -> None:
        """Record ``event``; redraw now if the last redraw is older than ``1/max_rate`` s."""
        with self._lock:
            self.last_event = event
            self.stages[stage_of(event)] = event
            now = self._clock()
            if now - self._last_render >= self.min_interval:
                self._render_locked(now)
            elif self._trailing is None:
                self._schedule_trailing(self._last_render + self.min_interval - now)

    def close(self, event: ProgressEventLike | None = None) -> None:
        """Final redraw with ``event`` (or the last one seen): green, or red if anything failed."""
        with self._lock:
            if event is not None:
                self.last_event = event
                self.stages[stage_of(event)] = event
            self.closed = True
            if self._trailing is not None:
                self._trailing.cancel()
                self._trailing = None
            self._render_locked(self._clock())
        # The output saved with the notebook gets the final state (its text/html snapshot).
        fmt.update_shown(self._handle, self)

    # -- state ---------------------------------------------------------------------------

    @property
    def status(self) -> Status:
        """``running``, ``done``, ``failed`` or ``interrupted`` (over every stage seen)."""
        seen = [status_of(e, closed=self.closed) for e in self.stages.values()]
        if "interrupted" in seen:
            return "interrupted"
        if "failed" in seen:
            return "failed"
        return status_of(self.last_event, closed=self.closed)

    def text(self) -> str:
        """The current state as plain text: one line, or one per stage of an ingest."""
        if len(self.stages) <= 1:
            return summary_text(self.description, self.last_event, closed=self.closed)
        return "\n".join(
            summary_text(f"{self.description} {stage}", event, closed=self.closed)
            for stage, event in self.stages.items()
        )

    # -- rendering -----------------------------------------------------------------------

    def _schedule_trailing(self, delay: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # Called from plain threads: the next event or close() redraws instead.
            return
        self._trailing = loop.call_later(max(delay, 0.0), self._trailing_render)

    def _trailing_render(self) -> None:
        with self._lock:
            self._trailing = None
            if not self.closed:
                self._render_locked(self._clock())

    def _render_locked(self, now: float) -> None:
        self._last_render = now
        self.renders += 1
        # an ingest's bar follows its last stage (documents committed), once it has begun
        event = self.stages.get("parse", self.last_event)
        status = self.status
        share = byte_fraction(event) if event is not None else None
        if share is not None and status in ("running", "interrupted"):
            # Bytes known: the bar follows them (in 1/1000), so it moves while big files arrive.
            self.bar.max = 1000
            self.bar.value = round(share * 1000)
        elif event is not None:
            total = event.total if event.total is not None else self.total
            if total:
                self.bar.max = max(total, 1)
            self.bar.value = min(event.done, self.bar.max)
        elif self.closed:
            self.bar.value = self.bar.max
        self.bar.bar_style = _BAR_STYLE[status]
        color = _STATUS_COLOR[status]
        self.stats.value = (
            f'<span class="scfeeds-progress-text" data-status="{status}" '
            f'style="color:{color};font-family:monospace;font-size:12px">'
            f"{escape(self.text()).replace(chr(10), '<br>')}</span>"
        )

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(self.text())

    def __repr__(self) -> str:
        return f"<FetchProgress {self.text()}>"

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle: dict[str, Any] = self.box._repr_mimebundle_(**kwargs)
        total = "" if self.total is None else f", total={self.total}"
        # A stable label, not the live numbers: nbval compares text/plain of the first display
        # and ignores later updates, so timings here would make every re-run differ. The
        # final numbers are kept in the widget state saved with the notebook.
        bundle["text/plain"] = f"FetchProgress({self.description!r}{total})"
        bundle["text/html"] = self.static_html()
        return bundle

    def static_html(self) -> str:
        """The widget's current state as plain HTML (label, bar, numbers): the ``text/html``
        of its display, shown where the widget cannot render (see ``_format.static_html``)."""
        status = self.status
        color = _STATUS_COLOR[status]
        done = 1.0 if self.closed and status == "done" else self.bar.value / max(self.bar.max, 1)
        return fmt.static_html(
            '<div style="display:flex;align-items:center;gap:8px;flex-wrap:wrap">'
            f"<b>{escape(self.description)}</b>"
            '<div style="width:220px;height:12px;background-color:#e8e8e8">'
            f'<div style="width:{done * 100:.1f}%;height:12px;background-color:{color}"></div>'
            "</div>"
            f'<span data-status="{status}" style="color:{color};font-family:monospace;'
            f'font-size:12px">{escape(self.text()).replace(chr(10), "<br>")}</span></div>'
        )


def auto_progress(*, total: int | None = None, description: str = "fetch") -> FetchProgress:
    """The progress object ``fetch(progress="auto")`` uses inside a Jupyter kernel.

    Creates a :class:`FetchProgress`, displays it in the current cell and returns it; the
    fetch engine then calls its ``update(event)`` and ``close(event)``.
    """
    return FetchProgress(total=total, description=description, show=True)


register_frontend(auto_progress)
