"""Progress sinks: a callable, an object with update/close, a tqdm bar, or a summary line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any, Final, Literal, Protocol, TypeAlias, runtime_checkable

from scfeeds._fetch._report import ProgressEvent
from scfeeds.exceptions import ConfigurationError

logger = logging.getLogger("scfeeds.fetch")


@runtime_checkable
class ProgressSink(Protocol):
    def update(self, event: ProgressEvent) -> None: ...
    def close(self, event: ProgressEvent) -> None: ...


#: What ``progress=`` accepts: ``"auto"`` (a widget in a kernel, a bar on a terminal, one
#: summary line otherwise), ``None`` / ``False`` (nothing), a callable taking each
#: :class:`ProgressEvent`, or a sink object with ``update(event)`` and ``close(event)``.
ProgressArg: TypeAlias = (
    Literal["auto", False] | ProgressSink | Callable[[ProgressEvent], object] | None
)


class _CallbackSink:
    def __init__(self, fn: Callable[[ProgressEvent], object]) -> None:
        self.fn = fn

    def update(self, event: ProgressEvent) -> None:
        self.fn(event)

    def close(self, event: ProgressEvent) -> None:
        self.fn(event)


class _TqdmSink:
    """Terminal bars, one per stage: items done/total with MB/s, concurrency, retries, 429s,
    failures (``fetch``), or documents with MB/s (``parse``)."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self.bars: dict[str, Any] = {}

    def _bar(self, stage: str) -> Any:
        bar = self.bars.get(stage)
        if bar is None:
            unit = "item" if stage == "fetch" else "doc"
            bar = self.bars[stage] = self._tqdm(
                total=None,
                unit=unit,
                desc=None if stage == "fetch" and not self.bars else stage,
                position=len(self.bars),
                file=sys.stderr,
                dynamic_ncols=True,
                leave=True,
            )
        return bar

    def update(self, event: ProgressEvent) -> None:
        bar = self._bar(event.stage)
        if event.total is not None and bar.total != event.total:
            bar.total = event.total
        bar.n = event.done
        if event.stage == "fetch":
            text = (
                f"{event.throughput_bps / 1e6:.1f} MB/s c={event.concurrency} "
                f"retried={event.retried} 429={event.throttled} failed={event.failed}"
                + (f" interrupted={event.interrupted}" if event.interrupted else "")
            )
        else:
            text = (
                f"{event.bytes / 1e6:.1f} MB {event.throughput_bps / 1e6:.1f} MB/s "
                f"committed={event.succeeded} already={event.unchanged}"
            )
        bar.set_postfix_str(text, refresh=False)
        bar.refresh()

    def close(self, event: ProgressEvent) -> None:
        self.update(event)
        for bar in self.bars.values():
            bar.close()


class _SummarySink:
    """Non-interactive runs (CI logs): nothing while running, one INFO line per stage at the
    end."""

    def __init__(self) -> None:
        self.last: dict[str, ProgressEvent] = {}

    def update(self, event: ProgressEvent) -> None:
        self.last[event.stage] = event

    def close(self, event: ProgressEvent) -> None:
        self.last[event.stage] = event
        for seen in self.last.values():
            _log_summary(seen)


def _log_summary(event: ProgressEvent) -> None:
    if event.stage == "parse":
        logger.info(
            "ingest finished: %d documents, %d committed, %d already in the lake, "
            "%.1f MB in %.2f s",
            event.done,
            event.succeeded,
            event.unchanged,
            event.bytes / 1e6,
            event.elapsed,
        )
    elif event.interrupted:
        logger.info(
            "fetch interrupted: %d items, %d ok, %d unchanged, %d failed, %d interrupted, "
            "%.1f MB in %.2f s",
            event.done,
            event.succeeded,
            event.unchanged,
            event.failed,
            event.interrupted,
            event.bytes / 1e6,
            event.elapsed,
        )
    else:
        logger.info(
            "fetch finished: %d items, %d ok, %d unchanged, %d failed, %.1f MB in %.2f s",
            event.done,
            event.succeeded,
            event.unchanged,
            event.failed,
            event.bytes / 1e6,
            event.elapsed,
        )


class StageSink:
    """One stage of a longer run: the stage's final ``close`` reaches the run's sink as an
    ``update`` (the run closes its sink once, at its end); ``attach`` is passed on."""

    def __init__(self, sink: ProgressSink, adjust: Callable[[ProgressEvent], ProgressEvent]):
        self.sink = sink
        self.adjust = adjust
        attach = getattr(sink, "attach", None)
        if callable(attach):
            self.attach = attach

    def update(self, event: ProgressEvent) -> None:
        self.sink.update(self.adjust(event))

    def close(self, event: ProgressEvent) -> None:
        self.sink.update(self.adjust(event))


def _in_kernel() -> bool:
    """True inside a Jupyter kernel (not merely with ipykernel imported, as pytest's nbval
    plugin does)."""
    if "ipykernel" not in sys.modules:
        return False
    ipython: Any = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and getattr(shell, "kernel", None) is not None


#: What a progress front-end registers: called with ``description=`` ("fetch", "ingest"), it
#: displays itself and returns the sink.
ProgressFrontend: TypeAlias = Callable[..., ProgressSink]

#: Entry-point group through which an installed front-end (the notebook layer declares one in
#: pyproject.toml) makes itself known without the core naming it.
ENTRY_POINT_GROUP: Final = "scfeeds.progress"

_frontends: list[ProgressFrontend] = []


def register_frontend(factory: ProgressFrontend) -> None:
    """Register what ``progress="auto"`` shows inside a Jupyter kernel (the latest wins).

    The notebook layer registers its widget when it is imported; the core never imports it.
    """
    if factory not in _frontends:
        _frontends.append(factory)


def _load_entry_points() -> None:
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = ep.load()
        except Exception:  # a broken front-end must not break a download
            logger.debug("progress front-end %s failed to load", ep.value, exc_info=True)
            continue
        if callable(loaded):
            register_frontend(loaded)


def _kernel_sink(description: str) -> ProgressSink | None:
    # Only inside a kernel: a front-end (a widget) pulls in ipywidgets, which plain
    # `import scfeeds` must never do.
    if not _in_kernel():
        return None
    if not _frontends:
        _load_entry_points()
    if not _frontends:
        return None
    try:
        sink = _frontends[-1](description=description)
    except Exception:  # a broken widget stack must not break a download
        logger.debug("progress front-end unavailable; falling back", exc_info=True)
        return None
    return sink if isinstance(sink, ProgressSink) else None


def make_sink(progress: object, *, description: str = "fetch") -> ProgressSink | None:
    """Turn the ``progress=`` argument of ``fetch`` or ``ingest`` into a sink (or ``None``)."""
    if progress is None or progress is False:
        return None
    if progress == "auto":
        sink = _kernel_sink(description)
        if sink is not None:
            return sink
        if sys.stderr is not None and sys.stderr.isatty():
            return _TqdmSink()
        return _SummarySink()
    if isinstance(progress, ProgressSink):
        return progress
    if callable(progress):
        return _CallbackSink(progress)
    raise ConfigurationError(
        f"progress must be None, False, 'auto', a callable taking a ProgressEvent, or an "
        f"object with update(event) and close(event); got {progress!r}"
    )
