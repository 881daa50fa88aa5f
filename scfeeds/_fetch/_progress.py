"""Progress sinks: a callable, an object with update/close, a tqdm bar, or a summary line."""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Callable
from typing import Any, Literal, Protocol, TypeAlias, runtime_checkable

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
    """A terminal bar: items done/total with MB/s, concurrency, retries, 429s, failures."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=None, unit="item", file=sys.stderr, dynamic_ncols=True, leave=True)

    def update(self, event: ProgressEvent) -> None:
        if event.total is not None and self.bar.total != event.total:
            self.bar.total = event.total
        self.bar.n = event.done
        self.bar.set_postfix_str(
            f"{event.throughput_bps / 1e6:.1f} MB/s c={event.concurrency} "
            f"retried={event.retried} 429={event.throttled} failed={event.failed}"
            + (f" interrupted={event.interrupted}" if event.interrupted else ""),
            refresh=False,
        )
        self.bar.refresh()

    def close(self, event: ProgressEvent) -> None:
        self.update(event)
        self.bar.close()


class _SummarySink:
    """Non-interactive runs (CI logs): nothing while running, one INFO line at the end."""

    def update(self, event: ProgressEvent) -> None:
        pass

    def close(self, event: ProgressEvent) -> None:
        if event.interrupted:
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
            return
        logger.info(
            "fetch finished: %d items, %d ok, %d unchanged, %d failed, %.1f MB in %.2f s",
            event.done,
            event.succeeded,
            event.unchanged,
            event.failed,
            event.bytes / 1e6,
            event.elapsed,
        )


def _in_kernel() -> bool:
    """True inside a Jupyter kernel (not merely with ipykernel imported, as pytest's nbval
    plugin does)."""
    if "ipykernel" not in sys.modules:
        return False
    ipython: Any = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and getattr(shell, "kernel", None) is not None


def _notebook_sink() -> ProgressSink | None:
    # Only inside a kernel, and only if the widget module exists: importing it pulls in
    # ipywidgets, which plain `import scfeeds` must never do.
    if not _in_kernel():
        return None
    try:
        if importlib.util.find_spec("scfeeds.notebook") is None:
            return None
        from scfeeds import notebook

        factory: Any = getattr(notebook, "auto_progress", None) or notebook.FetchProgress
        sink = factory()
    except Exception:  # a broken widget stack must not break a download
        logger.debug("scfeeds.notebook progress unavailable; falling back", exc_info=True)
        return None
    return sink if isinstance(sink, ProgressSink) else None


def make_sink(progress: object) -> ProgressSink | None:
    """Turn the ``progress=`` argument of ``fetch`` into a sink (or ``None``)."""
    if progress is None or progress is False:
        return None
    if progress == "auto":
        sink = _notebook_sink()
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
