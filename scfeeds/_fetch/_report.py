"""What a fetch returns (FetchReport) and what it tells progress callbacks (ProgressEvent)."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

import polars as pl

from scfeeds.exceptions import FetchFailures, StorageError

if TYPE_CHECKING:
    from scfeeds._fetch._plan import Source

ITEM_SCHEMA: dict[str, Any] = {
    "url": pl.String,
    "path": pl.String,
    "status": pl.Enum(["ok", "unchanged", "failed"]),
    "bytes": pl.Int64,
    "sha256": pl.String,
    "attempts": pl.Int32,
    "error": pl.String,
    "http_status": pl.Int32,
    "seconds": pl.Float64,
}


@dataclass(frozen=True, kw_only=True)
class FetchOutcome:
    """One source's outcome, handed to ``fetch(on_item=...)`` as soon as it is known.

    ``source`` is the caller's own object exactly as given (a URL string, a listing row, a
    :class:`ChunkRequest`; a DataFrame's row as a dict), and ``index`` its position among
    the sources (0-based, in the order they were consumed): match outcomes to
    sources by these, never by ``url``, which is redacted (two URLs that differ only in a
    secret are distinct but not the caller's text). The other fields are the ``items`` row.
    """

    source: Source
    index: int
    url: str
    path: str | None
    status: Literal["ok", "unchanged", "failed", "interrupted"]
    bytes: int | None
    sha256: str | None
    attempts: int
    error: str | None
    http_status: int | None
    seconds: float


@dataclass(frozen=True, kw_only=True)
class ProgressEvent:
    """A snapshot of a running fetch, sent to progress callbacks at most every 0.25 s.

    ``total`` is ``None`` while the number of sources is unknown (a generator); ``bytes`` counts
    body bytes received in this run; ``concurrency`` is the effective limit now (AIMD may have
    lowered it); ``finished`` is ``True`` on the last event only. ``interrupted`` counts items
    stopped by a cancellation or Ctrl-C (not failures: their resumable bodies are kept).
    ``bytes_present`` is the body bytes on disk for the items seen so far (bytes resumed from
    an earlier run included) and ``bytes_total`` the bytes of the whole run: exact once every
    item's size is known (listing ``bytes``, ``Content-Length``), before that the known sizes
    scaled to the number of items; ``None`` while no size is known. A bar that moves while
    large files arrive divides the two.

    ``stage`` says which stage of a run the event counts: ``"fetch"`` (documents landing:
    downloaded, or for local files read and hashed) or ``"parse"`` (documents parsed,
    validated and committed by :func:`scfeeds.ingest`: ``succeeded`` committed, ``unchanged``
    already in the lake, ``bytes`` their size). A plain fetch sends ``"fetch"`` events only.
    """

    total: int | None
    done: int
    succeeded: int
    failed: int
    unchanged: int
    retried: int
    throttled: int
    bytes: int
    elapsed: float
    throughput_bps: float
    concurrency: int
    in_flight: int
    finished: bool
    interrupted: int = 0
    bytes_present: int = 0
    bytes_total: int | None = None
    stage: Literal["fetch", "parse"] = "fetch"


#: A run that has done nothing yet (of unknown size, no limit set): the start of a sum of
#: events, or the base of a made-up one (``dataclasses.replace``).
NO_PROGRESS: Final = ProgressEvent(
    total=None,
    done=0,
    succeeded=0,
    failed=0,
    unchanged=0,
    retried=0,
    throttled=0,
    bytes=0,
    elapsed=0.0,
    throughput_bps=0.0,
    concurrency=0,
    in_flight=0,
    finished=False,
)


@dataclass(frozen=True, kw_only=True)
class FetchReport:
    """The outcome of :func:`scfeeds.fetch`.

    Counts are items (``retried`` and ``throttled`` count responses); ``requests`` is the
    number of HTTP requests sent; ``bytes`` the body bytes received; ``throughput_bps`` is
    ``bytes / elapsed``; latencies are seconds from request to last byte of successful
    attempts; ``concurrency`` is the effective limit at the end and ``host_limits`` the AIMD
    limit per host. ``items`` has one row per source: url (secrets redacted), path (relative
    to ``dest``), status (ok | unchanged | failed; ``interrupted`` is only ever seen by
    ``on_item`` hooks while a cancelled fetch unwinds), bytes, sha256, attempts, error,
    http_status, seconds.

    Unpacks as ``ok_items, failed_items = report``.
    """

    dest: str
    succeeded: int
    failed: int
    unchanged: int
    retried: int
    throttled: int
    requests: int
    bytes: int
    elapsed: float
    throughput_bps: float
    items_per_second: float
    latency_p50: float | None
    latency_p90: float | None
    latency_p99: float | None
    concurrency: int
    host_limits: dict[str, int]
    items: pl.DataFrame = field(repr=False)
    #: Why the fetch stopped early (``"no space left on device writing ..."``), else None.
    stopped: str | None = None

    def __iter__(self) -> Any:
        yield self.items.filter(pl.col("status") != "failed")
        yield self.failures

    @property
    def total(self) -> int:
        return self.items.height

    @property
    def failures(self) -> pl.DataFrame:
        """The rows of items that did not land."""
        return self.items.filter(pl.col("status") == "failed")

    def raise_for_failures(self) -> FetchReport:
        """Raise :class:`~scfeeds.exceptions.FetchFailures` if any item failed (or
        :class:`~scfeeds.exceptions.StorageError` if the disk was full); else return self."""
        if self.stopped is not None:
            raise StorageError(f"{self.stopped}; {self.failed} of {self.total} items did not land")
        if self.failed:
            first = self.failures.head(3).select("url", "error").rows()
            detail = "; ".join(f"{url}: {error}" for url, error in first)
            more = f" (and {self.failed - len(first)} more)" if self.failed > len(first) else ""
            raise FetchFailures(
                f"{self.failed} of {self.total} items failed to land in {self.dest}: {detail}{more}"
            )
        return self

    def summary(self) -> str:
        """One line, as printed at the end of a non-interactive run."""
        mb = self.bytes / 1e6
        stopped = f"; stopped: {self.stopped}" if self.stopped else ""
        return (
            f"fetched {self.total} items into {self.dest}: {self.succeeded} ok, "
            f"{self.unchanged} unchanged, {self.failed} failed; {mb:.1f} MB in "
            f"{self.elapsed:.2f} s ({mb / self.elapsed if self.elapsed else 0:.1f} MB/s, "
            f"{self.items_per_second:.0f} items/s); {self.requests} requests, "
            f"{self.retried} retried, {self.throttled} throttled; concurrency {self.concurrency}"
            f"{stopped}"
        )

    def __repr__(self) -> str:
        return f"FetchReport({self.summary()})"

    def _repr_html_(self) -> str:
        def ms(v: float | None) -> str:
            return "–" if v is None else f"{v * 1000:.0f} ms"

        colour = "#c62828" if self.failed else "#2e7d32"
        rows = [
            ("items", f"{self.total}"),
            ("ok / unchanged / failed", f"{self.succeeded} / {self.unchanged} / {self.failed}"),
            ("bytes", f"{self.bytes / 1e6:.2f} MB"),
            ("elapsed", f"{self.elapsed:.2f} s"),
            (
                "throughput",
                f"{self.throughput_bps / 1e6:.2f} MB/s, {self.items_per_second:.0f} items/s",
            ),
            (
                "requests / retried / throttled",
                f"{self.requests} / {self.retried} / {self.throttled}",
            ),
            (
                "latency p50 / p90 / p99",
                f"{ms(self.latency_p50)} / {ms(self.latency_p90)} / {ms(self.latency_p99)}",
            ),
            ("concurrency", f"{self.concurrency} {self.host_limits}"),
        ]
        if self.stopped:
            rows.append(("stopped", self.stopped))
        body = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
            for k, v in rows
        )
        failures = ""
        if self.failed:
            sample = self.failures.head(10).select("url", "error")
            failures = (
                "<p><b>failures</b> (first 10)</p><table>"
                + "".join(
                    f"<tr><td>{html.escape(str(u))}</td><td>{html.escape(str(e))}</td></tr>"
                    for u, e in sample.rows()
                )
                + "</table>"
            )
        return (
            f"<div><p style='color:{colour}'><b>FetchReport</b> → {html.escape(self.dest)}</p>"
            f"<table>{body}</table>{failures}</div>"
        )
