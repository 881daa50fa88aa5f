"""Prometheus metrics in the text exposition format (version 0.0.4), written by hand.

Why not ``prometheus_client``: the worker needs a dozen counters, gauges and two histograms
in one process and one registry per worker instance (tests run two workers in one process);
the text format is a few lines to write and a dependency less. Label values are escaped as
the format requires; no label ever carries a URL, a host or a token, only fixed vocabularies
(outcome, status, table), so cardinality stays bounded and secrets cannot leak here.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from scfeeds.exceptions import ConfigurationError

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LabelKey = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> LabelKey:
        if set(labels) != set(self.labelnames):
            raise ConfigurationError(
                f"{self.name} takes labels {self.labelnames}, got {sorted(labels)}: "
                "pass exactly those label names"
            )
        return tuple(str(labels[n]) for n in self.labelnames)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def lines(self) -> list[str]:
        raise NotImplementedError  # builtin-raise: abstract, each metric kind renders itself


class Counter(_Metric):
    """A monotonically increasing count (``_total`` suffix by convention)."""

    kind = "counter"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help, labelnames)
        self._values: dict[LabelKey, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ConfigurationError(
                f"a counter only goes up: inc() takes an amount >= 0, got {amount}; "
                "use a Gauge for a value that can go down"
            )
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(self._key(labels), 0.0)

    def lines(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        if not items and not self.labelnames:
            items = [((), 0.0)]
        return [f"{self.name}{_labels(self.labelnames, k)} {_fmt(v)}" for k, v in items]


class Gauge(_Metric):
    """A value that goes up and down; or, with ``function``, read at scrape time."""

    kind = "gauge"

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        *,
        function: Callable[[], float | None] | None = None,
    ) -> None:
        super().__init__(name, help, labelnames)
        self._values: dict[LabelKey, float] = {}
        self._function = function

    def set_function(self, function: Callable[[], float | None]) -> None:
        """Read the value from ``function`` at scrape time."""
        self._function = function

    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def dec(self, amount: float = 1.0, **labels: str) -> None:
        self.inc(-amount, **labels)

    def value(self, **labels: str) -> float:
        if self._function is not None:
            v = self._function()
            return math.nan if v is None else float(v)
        return self._values.get(self._key(labels), 0.0)

    def lines(self) -> list[str]:
        if self._function is not None:
            return [f"{self.name} {_fmt(self.value())}"]
        with self._lock:
            items = sorted(self._values.items())
        if not items and not self.labelnames:
            items = [((), 0.0)]
        return [f"{self.name}{_labels(self.labelnames, k)} {_fmt(v)}" for k, v in items]


class Histogram(_Metric):
    """Observations in cumulative buckets, with ``_sum`` and ``_count``."""

    kind = "histogram"

    def __init__(self, name: str, help: str, buckets: Iterable[float]) -> None:
        super().__init__(name, help)
        self.buckets = (*sorted(buckets), math.inf)
        self._counts = [0] * len(self.buckets)
        self._sum = 0.0
        self._count = 0

    def observe(self, value: float) -> None:
        with self._lock:
            self._sum += value
            self._count += 1
            for i, upper in enumerate(self.buckets):
                if value <= upper:
                    self._counts[i] += 1
                    break

    @property
    def count(self) -> int:
        return self._count

    def lines(self) -> list[str]:
        with self._lock:
            counts, total, n = list(self._counts), self._sum, self._count
        out, cumulative = [], 0
        for upper, c in zip(self.buckets, counts, strict=True):
            cumulative += c
            out.append(f'{self.name}_bucket{{le="{_fmt(upper)}"}} {cumulative}')
        out.append(f"{self.name}_sum {_fmt(total)}")
        out.append(f"{self.name}_count {n}")
        return out


M = TypeVar("M", bound=_Metric)


class Registry:
    """An ordered set of metrics rendered together."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}

    def add(self, metric: M) -> M:
        if metric.name in self._metrics:
            raise ConfigurationError(
                f"metric {metric.name} registered twice: give each metric its own name"
            )
        self._metrics[metric.name] = metric
        return metric

    def render(self) -> str:
        out: list[str] = []
        for m in self._metrics.values():
            out.extend(m.header())
            out.extend(m.lines())
        return "\n".join(out) + "\n"


OUTCOMES = ("succeeded", "partial", "failed", "cancelled", "dead_lettered", "rejected")


class ServiceMetrics:
    """Every metric the worker exposes, in one registry."""

    def __init__(self) -> None:
        r = self.registry = Registry()
        self.ready = r.add(Gauge("scfeeds_worker_ready", "1 when taking jobs, 0 otherwise"))
        self.draining = r.add(Gauge("scfeeds_worker_draining", "1 after SIGTERM, while draining"))
        self.loop_lag = r.add(
            Gauge("scfeeds_event_loop_lag_seconds", "How late the last event-loop tick was")
        )
        self.loop_lag_hist = r.add(
            Histogram(
                "scfeeds_event_loop_lag_hist_seconds",
                "Event-loop tick lateness",
                (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            )
        )
        self.jobs_in_flight = r.add(Gauge("scfeeds_jobs_in_flight", "Jobs running now"))
        self.requests_in_flight = r.add(
            Gauge("scfeeds_requests_in_flight", "HTTP requests in flight across running jobs")
        )
        self.jobs = r.add(Counter("scfeeds_jobs_total", "Jobs finished, by outcome", ("outcome",)))
        self.job_seconds = r.add(
            Histogram(
                "scfeeds_job_duration_seconds",
                "Wall time of a job attempt",
                (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
            )
        )
        self.sources = r.add(
            Counter("scfeeds_sources_total", "Sources processed, by status", ("status",))
        )
        self.rows = r.add(
            Counter("scfeeds_lake_rows_total", "Good rows committed to the lake", ("table",))
        )
        self.bytes = r.add(Counter("scfeeds_fetch_bytes_total", "Body bytes downloaded"))
        self.redis_errors = r.add(
            Counter("scfeeds_redis_errors_total", "Failed Redis operations (retried)")
        )
        self.queue_up = r.add(Gauge("scfeeds_queue_up", "1 if the last queue poll succeeded"))
        self.queue_length = r.add(
            Gauge("scfeeds_queue_length", "Stream entries: jobs waiting or in progress")
        )
        self.queue_lag = r.add(
            Gauge("scfeeds_queue_lag", "Jobs not yet delivered to any worker (XINFO GROUPS lag)")
        )
        self.queue_pending = r.add(
            Gauge("scfeeds_queue_pending", "Jobs delivered and not acknowledged (XPENDING)")
        )
        self.queue_dead = r.add(Gauge("scfeeds_queue_dead_letters", "Dead-lettered jobs"))
        self.queue_consumers = r.add(Gauge("scfeeds_queue_consumers", "Consumers in the group"))
        for o in OUTCOMES:
            self.jobs.inc(0, outcome=o)

    def render(self) -> str:
        return self.registry.render()
