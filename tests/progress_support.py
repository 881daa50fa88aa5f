"""Progress helpers: a sink that records every event, and events to feed the widgets."""

from __future__ import annotations

from dataclasses import replace

from scfeeds._fetch._report import NO_PROGRESS, ProgressEvent


class Events:
    """A progress sink (``progress=Events()``) that keeps every event it is sent."""

    def __init__(self) -> None:
        self.seen: list[ProgressEvent] = []

    def update(self, event: ProgressEvent) -> None:
        self.seen.append(event)

    def close(self, event: ProgressEvent) -> None:
        self.seen.append(event)


_START = replace(NO_PROGRESS, total=100, concurrency=4)


def progress_event(**changes: object) -> ProgressEvent:
    """An event of a fetch of 100 items at 4 at once, nothing done yet, but for ``changes``."""
    return replace(_START, **changes)  # type: ignore[arg-type]
