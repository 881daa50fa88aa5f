"""Concurrency gates: an adjustable semaphore, per-host AIMD + pause gate, and the live controller.

Every request passes, in order: the global gate (``max_at_once``, adjustable while running),
the host's pause gate (``Retry-After``), the host's AIMD gate, and the host's rate limiter
(``max_per_second``, aiolimiter's leaky bucket). Gates are FIFO and wake exactly one waiter
per freed slot, so a release costs O(1) however many workers wait.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque

from aiolimiter import AsyncLimiter

from scfeeds._config import Limits
from scfeeds.exceptions import ConfigurationError

#: Multiplicative decrease factor (TCP Reno halves; 0.5 sheds load fastest after a 429 burst).
DECREASE = 0.5


class AdjustableSemaphore:
    """A FIFO semaphore whose limit may change while tasks hold or wait for it."""

    def __init__(self, limit: int) -> None:
        self._limit = max(1, limit)
        self._in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def in_use(self) -> int:
        return self._in_use

    def set_limit(self, limit: int) -> None:
        # Lowering never interrupts holders: the excess drains as they release.
        self._limit = max(1, limit)
        self._wake()

    async def acquire(self) -> None:
        if self._in_use < self._limit and not self._waiters:
            self._in_use += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                # Granted and cancelled in the same step: hand the slot on.
                self._in_use -= 1
                self._wake()
            else:
                self._waiters.remove(future)
            raise

    def release(self) -> None:
        self._in_use -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._in_use < self._limit:
            future = self._waiters.popleft()
            if not future.done():
                self._in_use += 1
                future.set_result(None)


class HostGate:
    """Per-host limit (AIMD), ``Retry-After`` pause and request rate, shared by all workers."""

    def __init__(self, host: str, *, ceiling: int, adaptive: bool, per_second: float | None):
        self.host = host
        self.ceiling = ceiling
        self.adaptive = adaptive
        self.cwnd = float(ceiling)
        self.slots = AdjustableSemaphore(ceiling)
        self.pause_until = 0.0
        self.last_decrease = -math.inf
        self.srtt: float | None = None
        self.decreases = 0
        self.rate = AsyncLimiter(per_second, 1.0) if per_second else None
        if per_second and per_second < 1:
            # aiolimiter's bucket holds max_rate tokens; a fraction means "one per 1/rate s".
            self.rate = AsyncLimiter(1, 1.0 / per_second)

    @property
    def limit(self) -> int:
        return self.slots.limit

    def set_ceiling(self, ceiling: int) -> None:
        """A user's explicit change: the limit jumps there and AIMD continues from it."""
        self.ceiling = max(1, ceiling)
        self.cwnd = float(self.ceiling)
        self.slots.set_limit(self.ceiling)

    async def wait_unpaused(self) -> None:
        loop = asyncio.get_running_loop()
        # The end of a pause is a point in time that later Retry-Afters may push back, so
        # re-check after each sleep rather than wait for an event.
        while (delay := self.pause_until - loop.time()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(delay)

    def pause(self, seconds: float) -> None:
        """Hold every worker's next request to this host for ``seconds`` (Retry-After)."""
        until = asyncio.get_running_loop().time() + seconds
        self.pause_until = max(self.pause_until, until)

    def on_healthy(self, rtt: float, started: float) -> None:
        """Additive increase: +1 per round trip's worth of responses, only while saturated.

        Responses to requests sent before the last decrease do not count: they say nothing
        about the new limit.
        """
        self.srtt = rtt if self.srtt is None else 0.875 * self.srtt + 0.125 * rtt
        if not self.adaptive or self.cwnd >= self.ceiling or started < self.last_decrease:
            return
        # The responding request still holds its slot, so in_use == limit means "in use".
        if self.slots.in_use >= self.slots.limit:
            self.cwnd = min(float(self.ceiling), self.cwnd + 1.0 / self.cwnd)
            self.slots.set_limit(int(self.cwnd))

    def on_congestion(self, started: float) -> bool:
        """Multiplicative decrease on 429/503/timeout, at most once per round trip.

        A response to a request sent before the last decrease reports on the old limit,
        so it is ignored (TCP's "once per window").
        """
        if not self.adaptive or started < self.last_decrease:
            return False
        self.cwnd = max(1.0, self.cwnd * DECREASE)
        self.slots.set_limit(int(self.cwnd))
        self.last_decrease = asyncio.get_running_loop().time()
        self.decreases += 1
        return True


class FetchController:
    """A live handle on a running :func:`scfeeds.fetch`: read and change its limits.

    Pass one as ``fetch(..., controller=ctl)``; a progress object with an ``attach(ctl)``
    method receives the controller of the fetch it displays (the notebook tuner uses this).
    Methods are plain (not ``async``): call them from the event loop's thread (a widget
    callback, another task). Before the fetch starts, ``set_max_at_once`` is remembered and
    applied at start.

    Parameters
    ----------
    ceiling
        The largest ``max_at_once`` that may be set while running; the connection pool is
        sized to it. Default: ``max(64, 4 * limits.max_at_once)``.

    Examples
    --------
    >>> ctl = FetchController()
    >>> ctl.set_max_at_once(8)
    >>> ctl.max_at_once
    8
    """

    def __init__(self, *, ceiling: int | None = None) -> None:
        self._ceiling = ceiling
        self._limits: Limits | None = None
        self._requested: int | None = None
        self.gate: AdjustableSemaphore | None = None
        self._hosts: dict[str, HostGate] = {}
        self.running = False
        # Bounded so that a long fetch nobody reads from keeps memory flat.
        self._latencies: deque[float] = deque(maxlen=10_000)

    # -- used by the engine -------------------------------------------------------------
    def bind(self, limits: Limits) -> None:
        if self.running:
            raise ConfigurationError("this FetchController already drives a running fetch")
        if self._requested is not None:
            limits = _with_max_at_once(limits, self._requested)
        self._limits = limits
        self._hosts = {}
        self.gate = AdjustableSemaphore(limits.max_at_once)
        self.running = True

    def unbind(self) -> None:
        self.running = False

    def host(self, name: str) -> HostGate:
        gate = self._hosts.get(name)
        if gate is None:
            limits = self.limits
            gate = HostGate(
                name,
                ceiling=limits.host_ceiling,
                adaptive=limits.adaptive,
                per_second=limits.max_per_second,
            )
            self._hosts[name] = gate
        return gate

    # -- public -------------------------------------------------------------------------
    @property
    def limits(self) -> Limits:
        """The limits in force (``Limits()`` defaults before a fetch binds)."""
        return self._limits if self._limits is not None else Limits()

    @property
    def ceiling(self) -> int:
        """The highest ``max_at_once`` accepted by :meth:`set_max_at_once`."""
        if self._ceiling is not None:
            return self._ceiling
        return max(64, 4 * self.limits.max_at_once)

    @property
    def max_at_once(self) -> int:
        """Requests allowed in flight across all hosts right now."""
        if self._limits is None and self._requested is not None:
            return self._requested
        return self.limits.max_at_once

    def set_max_at_once(self, n: int) -> None:
        """Change the running fetch's global limit; each host's limit jumps to the new
        ceiling (``min(max_per_host, n)``) and AIMD carries on from there.

        Lowering takes effect as in-flight requests finish (none is interrupted); raising
        starts more workers within 0.25 s.
        """
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigurationError(f"max_at_once must be a positive int, got {n!r}")
        if n > self.ceiling:
            raise ConfigurationError(
                f"max_at_once={n} is above this controller's ceiling {self.ceiling}; "
                f"create it as FetchController(ceiling={n})"
            )
        if self._limits is None:
            self._requested = n
            return
        self._limits = _with_max_at_once(self._limits, n)
        assert self.gate is not None
        self.gate.set_limit(n)
        for gate in self._hosts.values():
            gate.set_ceiling(self._limits.host_ceiling)

    def record_latency(self, seconds: float) -> None:
        self._latencies.append(seconds)

    def take_latencies(self) -> list[float]:
        """Latencies (seconds, request to last byte) of successful requests since the last
        call, oldest first; at most the last 10 000 are kept."""
        taken = list(self._latencies)
        self._latencies.clear()
        return taken

    def host_limits(self) -> dict[str, int]:
        """The current (AIMD) limit of each host seen so far, e.g. ``{"127.0.0.1:8080": 12}``."""
        return {name: gate.limit for name, gate in self._hosts.items()}

    @property
    def in_flight(self) -> int:
        """Requests in flight right now."""
        return sum(gate.slots.in_use for gate in self._hosts.values())

    @property
    def concurrency(self) -> int:
        """The effective limit now: the global limit, or the sum of host limits if lower."""
        hosts = self.host_limits()
        if not hosts:
            return self.max_at_once
        return min(self.max_at_once, sum(hosts.values()))


def _with_max_at_once(limits: Limits, n: int) -> Limits:
    return Limits(
        n,
        max_per_host=limits.max_per_host,
        max_per_second=limits.max_per_second,
        adaptive=limits.adaptive,
    )
