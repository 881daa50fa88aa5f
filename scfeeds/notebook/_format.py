"""Human-readable numbers for the widgets (sizes in IEC units, rates, durations), and display."""

from __future__ import annotations

import base64
import math
import re
from typing import Any

from IPython.display import DisplayHandle
from IPython.display import display as _display

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def size(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``; bytes stay integral below 1 KiB."""
    if not math.isfinite(n):
        return "?"
    sign = "-" if n < 0 else ""
    n = abs(n)
    step = 0
    while n >= 1024 and step < len(_UNITS) - 1:
        n /= 1024
        step += 1
    return f"{sign}{int(n)} B" if step == 0 else f"{sign}{n:.1f} {_UNITS[step]}"


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


def show(obj: object) -> DisplayHandle | None:
    """Display ``obj`` in the current cell (IPython's ``display``, typed) and return its
    display handle, through which the output saved with the notebook can be updated."""
    handle: DisplayHandle | None = _display(obj, display_id=True)  # type: ignore[no-untyped-call]
    return handle


#: Marks the static snapshot of a widget in its output (``.meta/nbval.ini`` masks it: the
#: snapshot is live state, as variable as a timing).
STATIC_CLASS = "scfeeds-static"


def static_html(inner_html: str) -> str:
    """A widget's state as plain HTML (inline styles and SVG, no script), for the ``text/html``
    part of its display: Jupyter shows it where the widget cannot render (a notebook opened
    without its kernel or not trusted, GitHub, an HTML export), the live widget elsewhere."""
    # Inline <svg> is stripped from untrusted output; an <img> of the same SVG (data: URI,
    # where scripts never run) is kept.
    inner_html = _SVG.sub(_svg_as_img, inner_html)
    return f'<div class="{STATIC_CLASS}">{inner_html}</div><!--/{STATIC_CLASS}-->'


def mimebundle(box: Any, plain: str, html: str, **kwargs: Any) -> dict[str, Any]:
    """The display of a widget: the live ``box`` (``kwargs`` as Jupyter passed them), with
    ``plain`` as its text and ``html`` (from :func:`static_html`) where the widget cannot
    render."""
    bundle: dict[str, Any] = box._repr_mimebundle_(**kwargs)
    bundle["text/plain"] = plain
    bundle["text/html"] = html
    return bundle


_SVG = re.compile(r"<svg\b[\s\S]*?</svg>")


def _svg_as_img(match: re.Match[str]) -> str:
    svg = match.group(0)
    size = re.search(r'width="(\d+)" height="(\d+)"', svg)
    dims = f' width="{size.group(1)}" height="{size.group(2)}"' if size else ""
    data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
    return f'<img alt="chart"{dims} src="data:image/svg+xml;base64,{data}">'


def update_shown(handle: DisplayHandle | None, obj: object) -> None:
    """Replace the output ``handle`` points at with ``obj``'s current display (so the output
    saved with the notebook holds the final state); nothing outside an IPython kernel."""
    if handle is None:
        return
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return
    handle.update(obj)  # type: ignore[no-untyped-call]  # IPython's DisplayHandle is untyped
