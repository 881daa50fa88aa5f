"""Parse worker processes: out of reach of the stop signals, gone with their parent.

A stop request (systemd's SIGTERM, Ctrl-C's SIGINT, ``timeout``) goes to the whole process
group. If the parse children, or the forkserver through which the pool learns whether they
are alive, died of it, the running ingest would fail with ``BrokenProcessPool`` instead of
draining. So:

- :func:`start_forkserver` launches the forkserver with SIGINT and SIGTERM ignored: an
  ignored disposition survives exec (a blocked mask does not: the launcher resets it), and
  every child forked from the server is born ignoring both, before any of its code runs;
- :func:`init_parse_worker` then moves the child into a process group of its own (group
  signals are the parent's business: it drains, or cancels and shuts the pool down) and gives
  SIGTERM back its default action, so the pool's own ``terminate()`` of a broken pool still
  works (an ignored SIGTERM would hang the pool's ``join``);
- a child must not outlive its parent (a parent killed outright, SIGKILL or OOM, never shuts
  the pool down): a daemon thread waits on the parent's sentinel and ends the child.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import multiprocessing.forkserver
import os
import signal
import threading
from collections.abc import Iterator

_STOP = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _stop_signals_ignored_for_children() -> Iterator[None]:
    """Ignore SIGINT/SIGTERM while a process is launched; none is lost meanwhile.

    The signals are blocked first: Linux keeps a blocked signal pending whatever its
    disposition, so one that arrives in between is delivered once the handlers are back.
    Dispositions can only change in the main thread; elsewhere (a notebook's background
    loop) the launch is left as it is.
    """
    handlers = {s: signal.getsignal(s) for s in _STOP}
    if (
        threading.current_thread() is not threading.main_thread()
        or not hasattr(signal, "pthread_sigmask")
        or any(h is None for h in handlers.values())  # set outside Python: cannot restore
    ):
        yield
        return
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP)
    try:
        for s in _STOP:
            signal.signal(s, signal.SIG_IGN)
        try:
            yield
        finally:
            for s, handler in handlers.items():
                signal.signal(s, handler)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


def start_forkserver() -> None:
    """Start the forkserver (if it is not running yet) deaf to SIGINT and SIGTERM."""
    with _stop_signals_ignored_for_children():
        multiprocessing.forkserver.ensure_running()


def init_parse_worker() -> None:
    """``ProcessPoolExecutor(initializer=...)`` of the parse pools."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(os, "setpgid"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(
            target=_exit_with, args=(parent.sentinel,), name="scfeeds-parent-watch", daemon=True
        ).start()


def _exit_with(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])
    os._exit(1)  # the parent is gone: nobody will read a result


__all__ = ["init_parse_worker", "start_forkserver"]
