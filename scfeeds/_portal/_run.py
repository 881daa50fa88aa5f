"""Ways to run the portal: on the caller's loop, in a thread, in a process, or from the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import secrets
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Final, Self, Unpack

from aiohttp import web

from scfeeds._portal import DEFAULT_PORT
from scfeeds._portal._app import ADMIN_HEADER, PortalState, build_app
from scfeeds._portal._catalog import Catalog
from scfeeds._portal._knobs import KnobChanges, PortalKnobs, make_knobs
from scfeeds._portal._log import RedactingAccessLogger
from scfeeds.exceptions import ConfigurationError, PortalError, StateError

logger = logging.getLogger("scfeeds.portal")

# In-flight (possibly throttled) responses get this long to finish when the portal stops.
SHUTDOWN_TIMEOUT: Final = 0.5


def check_bind(host: str, *, allow_public: bool) -> None:
    """Refuse a non-loopback bind address unless ``allow_public``."""
    if allow_public or host == "localhost":
        return
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None)
        except OSError as exc:
            raise ConfigurationError(f"cannot resolve portal host {host!r}: {exc}") from exc
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not addresses or not all(address.is_loopback for address in addresses):
        raise ConfigurationError(
            f"refusing to bind the portal to {host!r}: it is not a loopback address and the "
            "portal has no real security; pass allow_public=True (CLI: --allow-public) to expose it"
        )


class Portal:
    """A portal running on the current event loop (yielded by :func:`serve`).

    Its methods touch the server state directly: call them from the loop that runs it.
    """

    def __init__(self, url: str, state: PortalState) -> None:
        self.url = url
        self._state = state

    @property
    def knobs(self) -> PortalKnobs:
        """The knobs in force."""
        return self._state.knobs

    @property
    def feed_ids(self) -> list[str]:
        """Ids of the served feeds, in listing order."""
        return list(self._state.catalog.feeds)

    def stats(self) -> dict[str, object]:
        """What the portal served so far (see ``GET /v1/stats``)."""
        snapshot = self._state.stats.snapshot()
        snapshot["knobs"] = self._state.knobs.describe()
        return snapshot

    def reset_stats(self) -> None:
        """Zero every counter."""
        self._state.stats.reset()

    def set_knobs(self, **changes: Unpack[KnobChanges]) -> PortalKnobs:
        """Change knobs live (``seed`` restarts the per-request decisions too)."""
        return self._state.set_knobs(**changes)

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} knobs={self.knobs!r}>"


@contextlib.asynccontextmanager
async def serve(
    root: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    allow_public: bool = False,
    knobs: PortalKnobs | None = None,
    access_log: bool = True,
    admin_secret: str | None = None,
    **knob_changes: Unpack[KnobChanges],
) -> AsyncIterator[Portal]:
    """Serve the feeds under ``root`` on the running event loop.

    Parameters
    ----------
    root
        A synth world (with ``catalog.parquet``) or any folder of feed files.
    host, port
        Where to listen; ``port=0`` picks a free port (read it from ``portal.url``).
    allow_public
        Required to bind anything other than a loopback address.
    knobs
        A :class:`PortalKnobs`; keyword arguments (``latency=0.05``, ``error_rate=0.1`` ...)
        override its fields.
    access_log
        Log one line per request to ``aiohttp.access``: never a token, an Authorization
        header, or the value of a secret query parameter (``access_token``, ``key``,
        ``sig`` ...: shown as ``REDACTED-<digest>``).
    admin_secret
        Enables ``PUT /v1/admin/knobs`` and ``POST /v1/admin/reset-stats`` for callers that
        send it in ``X-Portal-Admin`` (used by :func:`serve_in_process`).

    Yields
    ------
    Portal
        ``.url`` (``http://127.0.0.1:PORT``), ``.stats()``, ``.reset_stats()``, ``.set_knobs()``.

    Examples
    --------
    >>> async with serve("demo", latency=0.05, error_rate=0.1, seed=1) as portal:  # doctest: +SKIP
    ...     async with aiohttp.ClientSession() as s:
    ...         feeds = await (await s.get(f"{portal.url}/v1/feeds")).json()
    """
    settings = make_knobs(knobs, knob_changes)
    check_bind(host, allow_public=allow_public)
    catalog = await asyncio.to_thread(Catalog.load, root)
    state = PortalState(catalog, settings, admin_secret=admin_secret)
    runner_kwargs: dict[str, Any] = (
        {"access_log_class": RedactingAccessLogger} if access_log else {"access_log": None}
    )
    runner = web.AppRunner(
        build_app(state), shutdown_timeout=SHUTDOWN_TIMEOUT, handle_signals=False, **runner_kwargs
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        url = f"http://{shown}:{bound_port}"
        logger.info(
            "portal: serving %d feeds of %s at %s (%s)",
            len(catalog.feeds),
            catalog.root,
            url,
            settings.describe(),
        )
        yield Portal(url, state)
    finally:
        await runner.cleanup()


class _Handle:
    """Shared shape of the thread and process portals: a started server you close once."""

    url: str

    def close(self) -> None:
        raise NotImplementedError  # builtin-raise: abstract, each kind of portal closes itself

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __str__(self) -> str:
        return self.url


class ThreadPortal(_Handle):
    """A portal on its own event loop in a daemon thread (returned by :func:`serve_in_thread`).

    Safe to use from any thread, including a notebook cell whose kernel loop is running.
    Use it in a ``with`` block, or keep it and call :meth:`close` when done.
    """

    def __init__(
        self,
        portal: Portal,
        loop: asyncio.AbstractEventLoop,
        thread: threading.Thread,
        stop: asyncio.Event,
    ) -> None:
        self.url = portal.url
        self.thread = thread
        self._portal = portal
        self._loop = loop
        self._stop = stop

    def _call(self, func: Callable[[], Any]) -> Any:
        if not self.thread.is_alive():
            raise StateError(
                f"the portal at {self.url} is closed: start another with serve_in_thread()"
            )

        async def run() -> Any:
            return func()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=30)

    @property
    def knobs(self) -> PortalKnobs:
        """The knobs in force."""
        knobs: PortalKnobs = self._call(lambda: self._portal.knobs)
        return knobs

    def stats(self) -> dict[str, object]:
        """What the portal served so far."""
        stats: dict[str, object] = self._call(self._portal.stats)
        return stats

    def reset_stats(self) -> None:
        """Zero every counter."""
        self._call(self._portal.reset_stats)

    def set_knobs(self, **changes: Unpack[KnobChanges]) -> PortalKnobs:
        """Change knobs live."""
        knobs: PortalKnobs = self._call(lambda: self._portal.set_knobs(**changes))
        return knobs

    def close(self) -> None:
        """Stop the server and join its thread (idempotent)."""
        if self.thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop already closed
                self._loop.call_soon_threadsafe(self._stop.set)
            self.thread.join(timeout=SHUTDOWN_TIMEOUT + 10)

    def __repr__(self) -> str:
        state = "running" if self.thread.is_alive() else "closed"
        return f"<ThreadPortal {self.url} {state}>"


def serve_in_thread(
    root: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    allow_public: bool = False,
    knobs: PortalKnobs | None = None,
    access_log: bool = True,
    startup_timeout: float = 60.0,
    **knob_changes: Unpack[KnobChanges],
) -> ThreadPortal:
    """Start the portal on its own event loop in a daemon thread; returns once it listens.

    A client on another loop (a notebook kernel's, or ``asyncio.run`` in a script) can then
    talk to it without ever blocking the loop that serves it. Arguments as for :func:`serve`.

    Examples
    --------
    >>> with serve_in_thread("demo", error_rate=0.05) as portal:  # doctest: +SKIP
    ...     print(portal.url, portal.stats()["requests"])

    In a notebook, keep it across cells and close it at the end:

    >>> portal = serve_in_thread("demo")  # doctest: +SKIP
    >>> portal.close()  # doctest: +SKIP
    """
    settings = make_knobs(knobs, knob_changes)  # bad knobs raise here, in the caller's thread
    check_bind(host, allow_public=allow_public)
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        stop = asyncio.Event()
        try:
            async with serve(
                root,
                host=host,
                port=port,
                allow_public=allow_public,
                knobs=settings,
                access_log=access_log,
            ) as portal:
                box.update(portal=portal, loop=asyncio.get_running_loop(), stop=stop)
                ready.set()
                await stop.wait()
        except BaseException as exc:
            if ready.is_set():
                raise
            box["error"] = exc
            ready.set()

    thread = threading.Thread(
        target=asyncio.run, args=(main(),), name="scfeeds-portal", daemon=True
    )
    thread.start()
    if not ready.wait(startup_timeout):
        raise PortalError(
            f"portal did not start within {startup_timeout} s: "
            "pass a larger startup_timeout= on a loaded machine"
        )
    if "error" in box:
        thread.join()
        raise box["error"]
    return ThreadPortal(box["portal"], box["loop"], thread, box["stop"])


class ProcessPortal(_Handle):
    """A portal in a child process (returned by :func:`serve_in_process`); talks over HTTP."""

    def __init__(
        self, url: str, process: subprocess.Popen[bytes], admin_secret: str, knobs: PortalKnobs
    ) -> None:
        self.url = url
        self._knobs = knobs
        self.process = process
        self._secret = admin_secret
        # Loopback only: never route these through a proxy from the environment.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        if self.process.poll() is not None:
            raise StateError(
                f"the portal at {self.url} is closed: start another with serve_in_process()"
            )
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={ADMIN_HEADER: self._secret}
        )
        if data is not None:
            request.add_header("Content-Type", "application/json")
        with self._opener.open(request, timeout=30) as response:
            payload = response.read()
        return json.loads(payload) if payload else None

    def stats(self) -> dict[str, object]:
        """What the portal served so far (``GET /v1/stats``)."""
        stats: dict[str, object] = self._request("GET", "/v1/stats")
        return stats

    def reset_stats(self) -> None:
        """Zero every counter."""
        self._request("POST", "/v1/admin/reset-stats")

    @property
    def knobs(self) -> PortalKnobs:
        """The knobs in force."""
        return self._knobs

    def set_knobs(self, **changes: Unpack[KnobChanges]) -> PortalKnobs:
        """Change knobs live in the child (validated here first, with the same errors)."""
        knobs = self._knobs.replace(**changes)
        self._request("PUT", "/v1/admin/knobs", changes)
        self._knobs = knobs
        return knobs

    def close(self) -> None:
        """Stop the child: stdin closed (a graceful stop), then SIGTERM / SIGKILL by PID."""
        _stop_process(self.process)

    def __repr__(self) -> str:
        state = "running" if self.process.poll() is None else "closed"
        return f"<ProcessPortal {self.url} pid={self.pid} {state}>"


def _read_line(process: subprocess.Popen[bytes], timeout: float) -> bytes:
    assert process.stdout is not None
    fd = process.stdout.fileno()
    deadline = time.monotonic() + timeout
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while b"\n" not in buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                raise PortalError(
                    f"portal process did not start within {timeout} s: "
                    "pass a larger startup_timeout= on a loaded machine"
                )
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buffer += chunk
    return buffer


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()  # EOF on stdin is the child's signal to stop gracefully
    try:
        process.wait(timeout=SHUTDOWN_TIMEOUT + 5)
    except subprocess.TimeoutExpired:
        process.terminate()  # SIGTERM to this PID only
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()


def serve_in_process(
    root: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    allow_public: bool = False,
    knobs: PortalKnobs | None = None,
    access_log: bool = False,
    startup_timeout: float = 60.0,
    **knob_changes: Unpack[KnobChanges],
) -> ProcessPortal:
    """Start the portal in a child Python process (for benchmarks: its CPU is not yours).

    Settings reach the child on its stdin (a token never appears on a command line); stats
    and knob changes travel over HTTP on loopback, guarded by a per-run admin secret. On
    ``close()`` (or leaving the ``with`` block) the child is asked to stop (stdin closed), then
    terminated by PID if it lingers; if this process dies, the child sees EOF and stops too.

    Examples
    --------
    >>> with serve_in_process("demo", latency=0.01) as portal:  # doctest: +SKIP
    ...     print(portal.url, portal.pid)
    """
    settings = make_knobs(knobs, knob_changes)
    check_bind(host, allow_public=allow_public)
    if not Path(root).is_dir():  # fail before paying for a child process
        raise ConfigurationError(f"portal root {str(root)!r} is not a directory")
    secret = secrets.token_urlsafe(24)
    config = {
        "root": str(Path(root).resolve()),
        "host": host,
        "port": port,
        "allow_public": allow_public,
        "access_log": access_log,
        "knobs": settings.to_wire(),
        "admin_secret": secret,
    }
    package_parent = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    process = subprocess.Popen(
        [sys.executable, "-m", "scfeeds._portal"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert process.stdin is not None
        process.stdin.write(json.dumps(config).encode() + b"\n")
        process.stdin.flush()
        line = _read_line(process, startup_timeout)
        if not line:
            raise PortalError(
                f"portal process exited with code {process.wait()} before serving; "
                "its error output above says why"
            )
        info = json.loads(line)
        if "error" in info:
            if info.get("type") == "ConfigurationError":
                raise ConfigurationError(info["error"])
            raise PortalError(
                f"portal process failed: {info['type']}: {info['error']}; "
                "fix that and start it again"
            )
    except BaseException:
        _stop_process(process)
        raise
    return ProcessPortal(str(info["url"]), process, secret, settings)


async def _child_main() -> int:
    """Entry point of the ``serve_in_process`` child: config on stdin, URL on stdout."""
    config = json.loads(sys.stdin.buffer.readline())
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    def watch_stdin() -> None:
        sys.stdin.buffer.read()  # returns at EOF: the parent is done with us
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=watch_stdin, daemon=True).start()
    knobs = dict(config["knobs"])
    for name in ("error_statuses", "apply_to"):
        knobs[name] = tuple(knobs[name])
    try:
        async with serve(
            config["root"],
            host=config["host"],
            port=config["port"],
            allow_public=config["allow_public"],
            access_log=config["access_log"],
            knobs=PortalKnobs(**knobs),
            admin_secret=config["admin_secret"],
        ) as portal:
            print(json.dumps({"url": portal.url, "pid": os.getpid()}), flush=True)
            await stop.wait()
    except Exception as exc:
        print(json.dumps({"error": str(exc), "type": type(exc).__name__}), flush=True)
        return 1
    return 0


def run_forever(
    root: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    allow_public: bool = False,
    knobs: PortalKnobs | None = None,
    access_log: bool = True,
    announce: Callable[[Portal], None] | None = None,
    **knob_changes: Unpack[KnobChanges],
) -> None:
    """Serve until Ctrl-C or SIGTERM (the ``scfeeds portal`` command).

    ``announce`` is called once the portal listens (default: print the URL to stdout).
    """

    def default_announce(portal: Portal) -> None:
        print(
            f"scfeeds portal: {len(portal.feed_ids)} feeds at {portal.url} (Ctrl-C to stop)",
            flush=True,
        )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGTERM, stop.set)
        async with serve(
            root,
            host=host,
            port=port,
            allow_public=allow_public,
            knobs=knobs,
            access_log=access_log,
            **knob_changes,
        ) as portal:
            (announce or default_announce)(portal)
            await stop.wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
