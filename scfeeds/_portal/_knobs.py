"""Fault knobs of the simulated portal and the seeded per-request decisions they drive.

Determinism: every fault decision for a request comes from its own RNG, seeded with
``blake2b(seed, method, path and query, Range header, attempt)`` where *attempt* counts the
requests the portal has seen with that same key (1 for the first). Decisions therefore do not
depend on how requests to *other* URLs interleave: the third GET of ``/v1/feeds/x`` behaves the
same in every run with the same seed, however many clients race. ``set_knobs`` restarts the
attempt counters. The rate limit is the one time-based knob (a token bucket), so which request
is throttled depends on timing, by nature.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, TypedDict, Unpack, get_args

from scfeeds.exceptions import ConfigurationError

RetryAfterForm = Literal["seconds", "http-date"]
ResetAt = Literal["start", "body"]
EndpointKind = Literal["list", "file", "lines", "blob"]
ENDPOINT_KINDS: Final[tuple[EndpointKind, ...]] = get_args(EndpointKind)


def _check_number(name: str, value: object, *, low: float, high: float | None = None) -> float:
    # bool is an int subclass: `latency=True` is a mistake, not 1 second.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < low or (high is not None and number > high):
        bound = f"between {low:g} and {high:g}" if high is not None else f">= {low:g}"
        raise ConfigurationError(f"{name} must be {bound}, got {value!r}")
    return number


@dataclass(frozen=True, kw_only=True)
class PortalKnobs:
    """How badly the simulated portal behaves. Every knob defaults to "perfect portal".

    Parameters
    ----------
    seed
        Seeds every per-request fault decision (see the module docstring).
    latency, jitter
        Seconds added before the response starts: ``max(0, latency + jitter * u)`` with ``u``
        uniform in [-1, 1) drawn per request.
    error_rate
        Probability that a request is answered with a 5xx status drawn from ``error_statuses``.
    error_statuses
        The 5xx statuses ``error_rate`` draws from (default 500, 502, 503).
    rate_limit
        Requests per second per client (token bucket); the excess gets 429 with ``Retry-After``.
        A client is its bearer token if it sends one, else its peer address. ``None``: no limit.
    burst
        Bucket size of the rate limit (default ``max(1, ceil(rate_limit))``).
    throttle_rate
        Probability that a request is answered 429 whatever the request rate: seeded like
        ``error_rate``, so retry logic can be tested without racing a clock.
    retry_after
        ``Retry-After`` seconds of ``throttle_rate`` 429s (0 allowed).
    retry_after_form
        ``"seconds"`` (``Retry-After: 2``) or ``"http-date"`` (``Retry-After: Sat, 28 Nov 2026
        04:00:02 GMT``), the two forms of RFC 9110 section 10.2.3.
    reset_rate
        Probability that the connection is aborted with a TCP RST.
    reset_at
        Where a reset happens: ``"start"`` (default) before any response byte, so the client
        sees a connection error (aiohttp: ``ServerDisconnectedError`` / ``ClientOSError``);
        ``"body"`` after the headers and a seeded share of the body (aiohttp:
        ``ClientPayloadError`` caused by ``ConnectionResetError``). With ``"body"``, responses
        without a body (304, HEAD, errors) are not reset.
    truncate_rate
        Probability that a body is cut short: full ``Content-Length`` announced, a seeded
        fraction of the body sent, then the connection closed.
    slow_body
        Throttle bodies to this many bytes per second (``None``: full speed).
    token
        Required bearer token (``Authorization: Bearer <token>``); 401 without it. Never
        shown in ``repr``, logs or stats.
    apply_to
        Endpoint kinds the knobs act on: ``"list"`` (``/v1/feeds``), ``"file"``, ``"lines"``,
        ``"blob"``. ``/v1/stats`` is never affected.

    Examples
    --------
    >>> PortalKnobs(error_rate=0.1, seed=7).error_rate
    0.1
    """

    seed: int = 0
    latency: float = 0.0
    jitter: float = 0.0
    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = (500, 502, 503)
    rate_limit: float | None = None
    burst: int | None = None
    throttle_rate: float = 0.0
    retry_after: int = 1
    retry_after_form: RetryAfterForm = "seconds"
    reset_rate: float = 0.0
    reset_at: ResetAt = "start"
    truncate_rate: float = 0.0
    slow_body: float | None = None
    token: str | None = field(default=None, repr=False)
    apply_to: tuple[EndpointKind, ...] = ENDPOINT_KINDS

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigurationError(f"seed must be an int, got {self.seed!r}")
        _check_number("latency", self.latency, low=0.0, high=3600.0)
        _check_number("jitter", self.jitter, low=0.0, high=3600.0)
        for name in ("error_rate", "reset_rate", "truncate_rate", "throttle_rate"):
            _check_number(name, getattr(self, name), low=0.0, high=1.0)
        statuses = tuple(self.error_statuses)
        if not statuses or any(
            isinstance(s, bool) or not isinstance(s, int) or not 500 <= s <= 599 for s in statuses
        ):
            raise ConfigurationError(
                "error_statuses must be a non-empty tuple of 5xx codes, "
                f"got {self.error_statuses!r}"
            )
        object.__setattr__(self, "error_statuses", statuses)
        if self.rate_limit is not None:
            _check_number("rate_limit", self.rate_limit, low=1e-6)
        if self.burst is not None and (
            isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1
        ):
            raise ConfigurationError(f"burst must be an int >= 1, got {self.burst!r}")
        if (
            isinstance(self.retry_after, bool)
            or not isinstance(self.retry_after, int)
            or not 0 <= self.retry_after <= 86400
        ):
            raise ConfigurationError(
                f"retry_after must be whole seconds between 0 and 86400, got {self.retry_after!r}"
            )
        if self.retry_after_form not in get_args(RetryAfterForm):
            raise ConfigurationError(
                f"retry_after_form must be 'seconds' or 'http-date', got {self.retry_after_form!r}"
            )
        if self.reset_at not in get_args(ResetAt):
            raise ConfigurationError(f"reset_at must be 'start' or 'body', got {self.reset_at!r}")
        if self.slow_body is not None:
            _check_number("slow_body", self.slow_body, low=1.0)
        if self.token is not None and (
            not isinstance(self.token, str)
            or not self.token
            or any(c.isspace() or not c.isprintable() for c in self.token)
        ):
            # Do not echo the token: the message may end up in a log.
            raise ConfigurationError("token must be a non-empty string without whitespace")
        kinds = tuple(self.apply_to)
        if any(k not in ENDPOINT_KINDS for k in kinds):
            raise ConfigurationError(
                f"apply_to must contain only {', '.join(ENDPOINT_KINDS)}, got {self.apply_to!r}"
            )
        object.__setattr__(self, "apply_to", kinds)

    @property
    def bucket_size(self) -> int:
        """The effective burst of the rate limit."""
        if self.burst is not None:
            return self.burst
        return max(1, math.ceil(self.rate_limit or 1))

    def replace(self, **changes: Unpack[KnobChanges]) -> PortalKnobs:
        """A copy with ``changes`` applied (unknown names raise ``ConfigurationError``)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ConfigurationError(
                f"unknown portal knob(s) {', '.join(unknown)}; known: "
                + ", ".join(f.name for f in dataclasses.fields(self))
            )
        fields: dict[str, object] = dict(changes)
        for name in ("error_statuses", "apply_to"):  # JSON gives lists
            value = fields.get(name)
            if isinstance(value, list):
                fields[name] = tuple(value)
        return dataclasses.replace(self, **fields)  # type: ignore[arg-type]

    def to_wire(self) -> dict[str, object]:
        """Plain JSON-able dict (token included: only for the loopback admin channel)."""
        return dataclasses.asdict(self)

    def describe(self) -> dict[str, object]:
        """JSON-able dict for stats and logs: the token is replaced by whether one is set."""
        out = dataclasses.asdict(self)
        out["token"] = "<set>" if self.token is not None else None
        return out


class KnobChanges(TypedDict, total=False):
    """Keyword changes to :class:`PortalKnobs` (``serve(..., latency=0.1)``, ``set_knobs``)."""

    seed: int
    latency: float
    jitter: float
    error_rate: float
    error_statuses: Sequence[int]
    rate_limit: float | None
    burst: int | None
    throttle_rate: float
    retry_after: int
    retry_after_form: RetryAfterForm
    reset_rate: float
    reset_at: ResetAt
    truncate_rate: float
    slow_body: float | None
    token: str | None
    apply_to: Sequence[EndpointKind]


def make_knobs(knobs: PortalKnobs | None, overrides: KnobChanges) -> PortalKnobs:
    """Knobs from an optional base object plus keyword overrides."""
    return (knobs or PortalKnobs()).replace(**overrides)


@dataclass(frozen=True, slots=True)
class Decision:
    """The faults chosen for one request."""

    attempt: int
    delay: float
    throttled: bool
    reset: bool
    error_status: int | None
    truncate: bool
    cut: float  # share of the body sent before a truncation or a body reset, in [0, 1)


def decide(knobs: PortalKnobs, key: str, attempt: int) -> Decision:
    """Draw the faults of one request from its own seeded RNG.

    Every knob draws its uniform unconditionally and in a fixed order, so changing one
    rate does not shift the decisions of the others.
    """
    digest = hashlib.blake2b(
        f"{knobs.seed}\x00{key}\x00{attempt}".encode(), digest_size=16
    ).digest()
    rng = random.Random(int.from_bytes(digest, "big"))
    u_delay, u_reset, u_error, u_status, u_truncate, u_cut, u_throttle = (
        rng.random() for _ in range(7)
    )
    delay = max(0.0, knobs.latency + knobs.jitter * (2.0 * u_delay - 1.0))
    # At most one of throttle / reset / error / truncate per request, in that precedence.
    throttled = u_throttle < knobs.throttle_rate
    reset = not throttled and u_reset < knobs.reset_rate
    error_status = None
    if not (throttled or reset) and u_error < knobs.error_rate:
        error_status = knobs.error_statuses[int(u_status * len(knobs.error_statuses))]
    truncate = (
        not (throttled or reset or error_status is not None) and u_truncate < knobs.truncate_rate
    )
    return Decision(attempt, delay, throttled, reset, error_status, truncate, u_cut)


class TokenBucket:
    """Classic token bucket: ``rate`` tokens per second, at most ``size`` stored."""

    __slots__ = ("last", "rate", "size", "tokens")

    def __init__(self, rate: float, size: int, now: float) -> None:
        self.rate = rate
        self.size = size
        self.tokens = float(size)
        self.last = now

    def take(self, now: float) -> float:
        """Take one token; return 0 if granted, else the seconds until one is available."""
        self.tokens = min(float(self.size), self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate
