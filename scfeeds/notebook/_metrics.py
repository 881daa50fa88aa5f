"""Time series the tuner draws: throughput, latency percentiles, 429s and the adaptive limit.

Pure Python (no widgets), so the numbers are unit-tested on their own. A :class:`Probe` is
fed by a running fetch (progress events plus, when the driver can see them, one latency per
completed request) and cut into fixed intervals by :meth:`Probe.sample`.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    from scfeeds.notebook._progress import ProgressEventLike


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated ``q``-quantile (0..1) of already sorted values; NaN if empty."""
    if not sorted_values:
        return math.nan
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


@dataclass(frozen=True, kw_only=True)
class Sample:
    """One interval of a running fetch.

    ``t`` is seconds since the run started (end of the interval); rates are over the interval.
    Latencies are in seconds. With per-request observations from the driver they are true
    quantiles of the interval. Otherwise ``p90``/``p99`` are those of the last finished pass
    (NaN before one ends) and ``p50`` is the engine's live smoothed round-trip time when the
    driver exposes it, else the last pass's median, else the mean latency by Little's law
    (in flight / completions per second).
    """

    t: float
    throughput_bps: float
    items_per_s: float
    p50: float
    p90: float
    p99: float
    throttled: int
    failed: int
    retried: int
    limit: int | None
    max_at_once: int
    chunk_size: int
    in_flight: int
    done: int


SAMPLE_SCHEMA = {
    "t": pl.Float64,
    "throughput_bps": pl.Float64,
    "items_per_s": pl.Float64,
    "p50": pl.Float64,
    "p90": pl.Float64,
    "p99": pl.Float64,
    "throttled": pl.Int64,
    "failed": pl.Int64,
    "retried": pl.Int64,
    "limit": pl.Int64,
    "max_at_once": pl.Int64,
    "chunk_size": pl.Int64,
    "in_flight": pl.Int64,
    "done": pl.Int64,
}


class Probe:
    """Collects what a running fetch reports and turns it into :class:`Sample` rows.

    Thread-safe: drivers may report from the fetch's loop thread (``scfeeds.run`` uses a
    background loop) while the widget samples from the kernel's thread.
    """

    def __init__(self, *, clock: object = None) -> None:
        self._clock = time.monotonic if clock is None else clock
        self._lock = threading.Lock()
        self.start = self._now()
        self.event: ProgressEventLike | None = None
        self._latencies: list[float] = []
        self._429 = 0
        self._prev_t = 0.0
        self._prev_bytes = 0
        self._prev_done = 0
        self._prev_throttled = 0
        self._prev_failed = 0
        self._prev_retried = 0
        self.samples: list[Sample] = []
        self.all_latencies: list[float] = []
        #: (p50, p90, p99) of the last finished pass, when the driver only knows latencies
        #: at the end of a pass (used for intervals without per-request observations).
        self.pass_latency: tuple[float, float, float] | None = None
        #: The engine's smoothed round-trip time right now (a live mean), when known.
        self.srtt: float | None = None

    def _now(self) -> float:
        clock = self._clock
        assert callable(clock)
        value = clock()
        assert isinstance(value, float | int)
        return float(value)

    def on_event(self, event: ProgressEventLike) -> None:
        """Record the newest progress event (the fetch's ``progress`` callable)."""
        with self._lock:
            self.event = event

    def on_latency(self, seconds: float, status: int | None = None) -> None:
        """Record one completed request's latency (request sent to last byte), and its status."""
        with self._lock:
            self._latencies.append(seconds)
            if status == 429:
                self._429 += 1

    def sample(self, *, limit: int | None, max_at_once: int, chunk_size: int) -> Sample:
        """Close the current interval and return (and keep) its :class:`Sample`."""
        with self._lock:
            t = self._now() - self.start
            event = self.event
            latencies = sorted(self._latencies)
            self._latencies = []
            self.all_latencies.extend(latencies)
            dt = max(t - self._prev_t, 1e-9)
            nbytes = event.bytes if event else 0
            done = event.done if event else 0
            throttled = event.throttled if event else 0
            failed = event.failed if event else 0
            retried = event.retried if event else 0
            in_flight = event.in_flight if event else 0
            items_per_s = (done - self._prev_done) / dt
            if latencies:
                p50, p90, p99 = (percentile(latencies, q) for q in (0.5, 0.9, 0.99))
            else:
                p50, p90, p99 = self.pass_latency or (math.nan, math.nan, math.nan)
                if self.srtt is not None:
                    p50 = self.srtt  # live, where the pass's quantiles are stale
                elif self.pass_latency is None and items_per_s > 0:
                    # Little's law: mean time in system = mean number in system / throughput.
                    p50 = in_flight / items_per_s
            sample = Sample(
                t=t,
                throughput_bps=(nbytes - self._prev_bytes) / dt,
                items_per_s=items_per_s,
                p50=p50,
                p90=p90,
                p99=p99,
                throttled=max(throttled - self._prev_throttled, self._429),
                failed=failed - self._prev_failed,
                retried=retried - self._prev_retried,
                limit=limit,
                max_at_once=max_at_once,
                chunk_size=chunk_size,
                in_flight=in_flight,
                done=done,
            )
            self._429 = 0
            self._prev_t, self._prev_bytes, self._prev_done = t, nbytes, done
            self._prev_throttled, self._prev_failed, self._prev_retried = (
                throttled,
                failed,
                retried,
            )
            self.samples.append(sample)
            return sample

    def frame(self) -> pl.DataFrame:
        """Every sample so far, one row each (columns as :class:`Sample`)."""
        with self._lock:
            rows = [s.__dict__ for s in self.samples]
        return pl.DataFrame(rows, schema=SAMPLE_SCHEMA)

    def latency_quantiles(self) -> tuple[float, float]:
        """p50 and p90 of the run: every latency observed, else the last pass's, else NaN."""
        with self._lock:
            values = sorted(self.all_latencies + self._latencies)
        if values:
            return percentile(values, 0.5), percentile(values, 0.9)
        if self.pass_latency is not None:
            return self.pass_latency[0], self.pass_latency[1]
        return math.nan, math.nan
