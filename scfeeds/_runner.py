"""Run a coroutine from synchronous code: a script, a REPL, or a Jupyter cell.

Three situations, three strategies:

* No event loop running (a script): ``asyncio.run``.
* A loop is running in this thread (a Jupyter cell, where ipykernel's loop is live) and
  nested mode is off (the default): the coroutine is submitted to one persistent
  background loop in a daemon thread and this thread blocks on the result. That is the
  pattern of ``jupyter_core.utils.run_sync`` and fsspec's ``sync``: it cannot deadlock
  against the kernel's loop and does not patch asyncio. Ctrl-C / "interrupt kernel"
  cancels the background task and re-raises ``KeyboardInterrupt``.
* Nested mode (opt-in, ``run(..., nested=True)`` or :func:`enable_nested`): the running
  loop is patched by ``nest-asyncio2`` to be re-entrant and the coroutine runs on it.

Why nested mode is not the default: it monkeypatches asyncio process-wide (tasks, the
running-loop bookkeeping), which other libraries in the kernel did not agree to, and the
original ``nest_asyncio`` (archived since 2024) breaks ``asyncio.run(loop_factory=...)`` on
3.12+ and ``asyncio.current_task()`` on 3.14. The maintained fork ``nest-asyncio2`` fixes
those, but the patch is still global, so scfeeds applies it only when asked and only to a
loop that is actually running — never on import. Its one advantage is that the coroutine
runs on the kernel's own loop, so objects bound to that loop (an aiohttp session opened in
an earlier cell) can be used. Top-level ``await`` in a notebook needs none of this.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

from scfeeds.exceptions import ConfigurationError, StateError

T = TypeVar("T")

_nested_default = False
_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


async def _as_coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable


def _coroutine(awaitable: Awaitable[T]) -> Coroutine[Any, Any, T]:
    if asyncio.iscoroutine(awaitable):
        return awaitable
    if not hasattr(awaitable, "__await__"):
        raise ConfigurationError(
            f"run() needs an awaitable, got {type(awaitable).__name__}; "
            "call the async function: run(fetch(...)), not run(fetch)"
        )
    return _as_coroutine(awaitable)


def _background_loop() -> asyncio.AbstractEventLoop:
    """The persistent loop of the background thread, started on first use."""
    global _loop, _thread
    with _lock:
        if _loop is None or _thread is None or not _thread.is_alive():
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def serve() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            thread = threading.Thread(target=serve, name="scfeeds-run-loop", daemon=True)
            thread.start()
            ready.wait()
            _loop, _thread = loop, thread
        return _loop


def enable_nested(loop: asyncio.AbstractEventLoop | None = None) -> bool:
    """Make later ``run()`` calls use nested mode, and patch the running loop now.

    Parameters
    ----------
    loop
        The loop to patch; default: the loop running in this thread, if any.

    Returns
    -------
    bool
        ``True`` if a loop was patched now; ``False`` if none is running (it will be patched
        by the first ``run()`` that finds one).

    Examples
    --------
    In a notebook cell, once::

        scfeeds.enable_nested()
        report = scfeeds.run(scfeeds.fetch(urls, "landing"))
    """
    global _nested_default
    _nested_default = True
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
    _patch(loop)
    return True


def _patch(loop: asyncio.AbstractEventLoop) -> None:
    # Imported here: applying nest-asyncio2 is a process-wide decision, never made on import.
    import nest_asyncio2

    nest_asyncio2.apply(loop)


def run(awaitable: Awaitable[T], *, nested: bool | None = None) -> T:
    """Run ``awaitable`` to completion from synchronous code and return its result.

    Parameters
    ----------
    awaitable
        A coroutine (``fetch(...)``) or any awaitable.
    nested
        Only matters when a loop is already running in this thread (a Jupyter cell).
        ``False``: run on a persistent background loop thread and block on the result.
        ``True``: patch the running loop with nest-asyncio2 and run on it (see the module
        docstring for why this is opt-in). ``None``: ``True`` after :func:`enable_nested`,
        else ``False``.

    Returns
    -------
    The awaitable's result; its exception is raised here.

    Examples
    --------
    >>> async def answer() -> int:
    ...     return 42
    >>> run(answer())
    42
    """
    coro = _coroutine(awaitable)
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    use_nested = _nested_default if nested is None else nested
    if use_nested:
        _patch(running)
        return running.run_until_complete(coro)
    if running is _loop:
        coro.close()
        # Blocking the background loop on itself would deadlock forever.
        raise StateError(
            "run() was called from a coroutine that run() is already running; use `await` there"
        )
    finished = threading.Event()
    future = asyncio.run_coroutine_threadsafe(_signal_when_done(coro, finished), _background_loop())
    try:
        return future.result()
    except KeyboardInterrupt:
        # The interrupt lands in this (blocked) thread; carry it to the task and wait until
        # its finally-blocks (temporary files, sessions) have run before giving control back.
        future.cancel()
        finished.wait(timeout=10)
        raise


async def _signal_when_done(coro: Coroutine[Any, Any, T], finished: threading.Event) -> T:
    try:
        return await coro
    finally:
        finished.set()
