"""Small frozen option objects shared by the fetch engine and its callers.

Each accepts a positional shorthand, as httpx's ``Timeout(5.0)`` does:

>>> Limits(20)
Limits(max_at_once=20, max_per_host=None, max_per_second=None, adaptive=True)
>>> Retry(3).attempts
3
>>> Timeout(5.0).connect
5.0

Everything else is keyword-only. ``coerce`` turns what a user may pass to ``fetch`` (``20``,
``None``, an object) into the object, with a message that shows the fix when it cannot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Final, Self

from scfeeds.exceptions import ConfigurationError

_UNSET: Any = object()

#: Requests in flight at once when the caller does not say: the default of
#: ``Limits.max_at_once``, and so of ``fetch``, ``ingest``, the service worker's jobs and the
#: CLI's ``--concurrency``.
DEFAULT_MAX_AT_ONCE: Final = 32

#: Status codes that are worth another attempt (RFC 9110 §15: timeouts, "too early",
#: rate limiting and server-side failures). 501/505 say "never", so they are left out.
RETRYABLE_STATUSES: frozenset[int] = frozenset(
    {408, 425, 429, 500, 502, 503, 504, 507, 509, 520, 521, 522, 523, 524}
)


def _positive_int(name: str, value: object, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigurationError(f"{name} must be a positive int, got {value!r}")


def _non_negative(name: str, value: object, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise ConfigurationError(f"{name} must be a number >= 0, got {value!r}")


@dataclass(frozen=True, init=False)
class Limits:
    """How many requests may be in flight, per host, and per second.

    Parameters
    ----------
    max_at_once
        Requests in flight across all hosts (also the size of the worker pool). Shorthand:
        ``Limits(20)`` or ``limits=20``.
    max_per_host
        Ceiling per host; ``None`` means ``max_at_once``.
    max_per_second
        Requests started per second per host (a leaky bucket); ``None`` means unlimited.
    adaptive
        Let each host's limit move within ``[1, max_per_host]`` by AIMD: up while the limit is
        in use and responses are healthy, down (x0.5, at most once per round trip) on 429, 503
        and timeouts. ``False`` keeps the limit fixed.
    """

    max_at_once: int
    max_per_host: int | None
    max_per_second: float | None
    adaptive: bool

    def __init__(
        self,
        max_at_once: int = DEFAULT_MAX_AT_ONCE,
        /,
        *,
        max_per_host: int | None = None,
        max_per_second: float | None = None,
        adaptive: bool = True,
    ) -> None:
        _positive_int("max_at_once", max_at_once)
        _positive_int("max_per_host", max_per_host, allow_none=True)
        _non_negative("max_per_second", max_per_second, allow_none=True)
        if max_per_second == 0:
            raise ConfigurationError("max_per_second must be > 0, or None for no rate limit")
        object.__setattr__(self, "max_at_once", max_at_once)
        object.__setattr__(self, "max_per_host", max_per_host)
        object.__setattr__(self, "max_per_second", max_per_second)
        object.__setattr__(self, "adaptive", bool(adaptive))

    @property
    def host_ceiling(self) -> int:
        """The per-host ceiling actually used: ``max_per_host`` capped by ``max_at_once``."""
        return min(self.max_per_host or self.max_at_once, self.max_at_once)

    @classmethod
    def coerce(cls, value: Limits | int | None) -> Limits:
        """``None`` -> defaults, ``int`` -> ``Limits(max_at_once=int)``, a ``Limits`` as is."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(value)
        raise ConfigurationError(
            f"limits must be an int (max_at_once) or Limits(...), got {value!r}; "
            "e.g. limits=20 or limits=Limits(20, max_per_second=50)"
        )


@dataclass(frozen=True, init=False)
class Retry:
    """Which outcomes are retried, how long to wait, and when to give up.

    Backoff is exponential with *full jitter*: before attempt ``n+1`` the wait is uniform in
    ``[0, min(max_backoff, backoff * 2**(n-1))]`` (the AWS "full jitter" scheme), so workers that
    failed together do not come back together. A ``Retry-After`` from the server (429/503)
    overrides that wait and pauses the whole host, not just one worker.

    Parameters
    ----------
    attempts
        Total attempts per item including the first (``Retry(1)`` = no retries). Shorthand:
        ``Retry(5)`` or ``retry=5``; ``retry=False`` means one attempt.
    backoff, max_backoff
        Base and cap of the jittered exponential wait, in seconds.
    budget
        Give up on an item once this many seconds have passed since its first attempt began
        (``None``: no time budget).
    max_retry_after
        The longest ``Retry-After`` obeyed; a server asking for longer fails the item as
        throttled rather than stalling the batch.
    statuses
        HTTP statuses that are retried. Connection resets, timeouts and truncated bodies are
        always retried.
    """

    attempts: int
    backoff: float
    max_backoff: float
    budget: float | None
    max_retry_after: float
    statuses: frozenset[int]

    def __init__(
        self,
        attempts: int = _UNSET,
        /,
        *,
        backoff: float = 0.2,
        max_backoff: float = 10.0,
        budget: float | None = 300.0,
        max_retry_after: float = 120.0,
        statuses: frozenset[int] | set[int] | None = None,
    ) -> None:
        if attempts is _UNSET:
            attempts = 5
        _positive_int("attempts", attempts)
        _non_negative("backoff", backoff)
        _non_negative("max_backoff", max_backoff)
        _non_negative("budget", budget, allow_none=True)
        _non_negative("max_retry_after", max_retry_after)
        object.__setattr__(self, "attempts", attempts)
        object.__setattr__(self, "backoff", float(backoff))
        object.__setattr__(self, "max_backoff", float(max_backoff))
        object.__setattr__(self, "budget", None if budget is None else float(budget))
        object.__setattr__(self, "max_retry_after", float(max_retry_after))
        object.__setattr__(
            self, "statuses", RETRYABLE_STATUSES if statuses is None else frozenset(statuses)
        )

    @classmethod
    def coerce(cls, value: Retry | int | bool | None) -> Retry:
        """``None``/``True`` -> defaults, ``False`` -> one attempt, ``int`` -> attempts."""
        if value is None or value is True:
            return cls()
        if value is False:
            return cls(1)
        if isinstance(value, cls):
            return value
        if isinstance(value, int):
            return cls(value)
        raise ConfigurationError(
            f"retry must be an int (attempts), a bool or Retry(...), got {value!r}; "
            "e.g. retry=5 or retry=Retry(5, budget=60)"
        )


@dataclass(frozen=True, init=False)
class Timeout:
    """Time bounds of one attempt. None of them counts time spent waiting for a free slot.

    Parameters
    ----------
    connect
        Seconds to get a connection (aiohttp ``sock_connect`` and pool acquisition).
        Shorthand: ``Timeout(5.0)`` sets ``connect`` and ``read``.
    read
        Longest silence between two reads of the body (aiohttp ``sock_read``).
    item
        Deadline for one attempt from sending the request to the last byte on disk; a slow
        trickle that never pauses longer than ``read`` is still cut off here.
    """

    connect: float
    read: float
    item: float | None

    default: ClassVar[float] = 30.0

    def __init__(
        self,
        timeout: float = _UNSET,
        /,
        *,
        connect: float | None = None,
        read: float | None = None,
        item: float | None = 300.0,
    ) -> None:
        base = self.default if timeout is _UNSET else timeout
        _non_negative("timeout", base)
        connect = base if connect is None else connect
        read = base if read is None else read
        _non_negative("connect", connect)
        _non_negative("read", read)
        _non_negative("item", item, allow_none=True)
        object.__setattr__(self, "connect", float(connect))
        object.__setattr__(self, "read", float(read))
        object.__setattr__(self, "item", None if item is None else float(item))

    @classmethod
    def coerce(cls, value: Timeout | float | None) -> Self:
        """``None`` -> defaults, a number -> ``Timeout(number)``, a ``Timeout`` as is."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return cls(float(value))
        raise ConfigurationError(
            f"timeout must be seconds or Timeout(...), got {value!r}; "
            "e.g. timeout=10 or timeout=Timeout(connect=5, read=30, item=120)"
        )
