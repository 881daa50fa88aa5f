"""Human-readable numbers for the widgets (sizes in IEC units, rates, durations), and display."""

from __future__ import annotations

import math

from IPython.display import display as _display

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def size(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``; bytes stay integral below 1 KiB."""
    if not math.isfinite(n):
        return "?"
    sign = "-" if n < 0 else ""
    n = abs(n)
    for unit in _UNITS:
        if n < 1024 or unit == _UNITS[-1]:
            if unit == "B":
                return f"{sign}{int(n)} B"
            return f"{sign}{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def rate(bytes_per_second: float) -> str:
    """``2_500_000`` -> ``'2.4 MiB/s'``."""
    return f"{size(bytes_per_second)}/s"


def duration(seconds: float | None) -> str:
    """``75.2`` -> ``'1m15s'``, ``3.25`` -> ``'3.2s'``, ``None`` -> ``'?'``."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def count(n: int) -> str:
    """Thousands separated: ``12345`` -> ``'12,345'``."""
    return f"{n:,}"


def show(obj: object) -> None:
    """Display ``obj`` in the current cell (IPython's ``display``, typed)."""
    _display(obj)  # type: ignore[no-untyped-call]
