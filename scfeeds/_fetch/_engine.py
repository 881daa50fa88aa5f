"""The fetch engine: a fixed pool of workers over a bounded queue, inside one TaskGroup.

The only module that talks to aiohttp. aiohttp exceptions are translated into the scfeeds
tree in :func:`_translate` and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.utils
import errno
import hashlib
import inspect
import logging
import math
import os
import random
import re
import time
from collections.abc import AsyncIterable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from io import BufferedWriter
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import aiohttp
import polars as pl

from scfeeds._config import Limits, Retry, Timeout
from scfeeds._fetch._credentials import (
    MAX_REDIRECTS,
    REDIRECT_STATUSES,
    Credentials,
    origin_of,
    redirect_target,
    request_headers,
)
from scfeeds._fetch._landing import Landing, Record, now_iso
from scfeeds._fetch._limiter import FetchController, HostGate
from scfeeds._fetch._plan import (
    Item,
    Source,
    Sources,
    filename_from_disposition,
    iter_sources,
    make_item,
    path_for_url,
)
from scfeeds._fetch._progress import ProgressArg, ProgressSink, make_sink
from scfeeds._fetch._report import ITEM_SCHEMA, FetchOutcome, FetchReport, ProgressEvent
from scfeeds._redact import SECRET_HEADERS as SECRET_HEADERS
from scfeeds._redact import redact_url
from scfeeds.exceptions import (
    ConfigurationError,
    FetchError,
    HTTPStatusError,
    ScfeedsError,
    StorageError,
    TransferError,
)

logger = logging.getLogger("scfeeds.fetch")
T = TypeVar("T")

_CHUNK = 64 * 1024
#: aiohttp's ContentLengthError says "(received N of M bytes)".
_RECEIVED = re.compile(r"received (\d+) of \d+ bytes")
#: Bodies at least this large (or of unknown size) record their validator next to the partial
#: file, so that a later run can resume them with Range; smaller ones are fetched again.
RESUME_MIN_BYTES = 1024 * 1024
_HEARTBEAT = 0.25

Status = Literal["ok", "unchanged", "failed", "interrupted"]


@dataclass
class _Stats:
    total: int | None
    started: float
    done: int = 0
    succeeded: int = 0
    failed: int = 0
    unchanged: int = 0
    retried: int = 0
    throttled: int = 0
    interrupted: int = 0
    requests: int = 0
    bytes_present: int = 0  # body bytes on disk for the items seen (resumed bytes included)
    bytes_expected: int = 0  # their full sizes, for the items whose size is known
    bytes: int = 0
    latencies: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class _Outcome:
    """Result of one attempt."""

    status: Status | Literal["retry"]
    error: ScfeedsError | None = None
    http_status: int | None = None
    retry_after: float | None = None
    congestion: bool = False
    path: str | None = None
    bytes: int = 0
    sha256: str | None = None


@dataclass
class _Transfer:
    """One attempt's state, passed between the stages of ``_Engine._attempt``."""

    key: str
    path: str
    headers: dict[str, str]
    offset: int = 0  # bytes already on disk that this attempt resumes after
    conditional: bool = False
    status: int = 0
    append: bool = False
    hasher: hashlib._Hash = field(default_factory=hashlib.sha256)
    etag: str | None = None
    last_modified: str | None = None
    expected: int | None = None
    sidecar: bool = False
    received: int = 0


def _truncated(item: Item, status: int, got: int, expected: int) -> _Outcome:
    return _Outcome(
        "retry",
        http_status=status,
        error=TransferError(f"truncated: got {got} of {expected} bytes from {item.shown_url}"),
    )


def _disk_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _no_space(path: object) -> StorageError:
    return StorageError(f"no space left on device writing {path}", path=str(path))


def _translate(exc: BaseException, shown_url: str) -> tuple[FetchError, bool]:
    """aiohttp/OS errors -> (scfeeds error, congestion signal). All are retryable."""
    name = type(exc).__name__
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return TransferError(f"timeout ({name}) fetching {shown_url}"), True
    if isinstance(exc, aiohttp.ClientPayloadError):
        return TransferError(f"truncated body ({name}) from {shown_url}"), False
    if isinstance(exc, aiohttp.ClientResponseError) and "Bad status line" in exc.message:
        # llhttp met bytes where no response may start: after a body as long as its
        # Content-Length (RFC 9112 §6.3: the server sent more), or no HTTP at all. aiohttp
        # closes the connection, so a retry gets a fresh one.
        return TransferError(
            f"body longer than its Content-Length (or not an HTTP response) from {shown_url}"
        ), False
    if isinstance(exc, aiohttp.ServerDisconnectedError | ConnectionResetError):
        return TransferError(f"connection reset ({name}) by {shown_url}"), False
    if isinstance(exc, aiohttp.ClientError | OSError):
        return TransferError(f"transfer failed ({name}) for {shown_url}"), False
    raise exc


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP-date
    (RFC 9110 §10.2.3). ``None`` when absent or unparseable; never negative."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def full_jitter(attempt: int, retry: Retry) -> float:
    """Wait before attempt ``attempt + 1``: uniform in [0, min(cap, base * 2**(attempt-1))]."""
    return random.uniform(0.0, min(retry.max_backoff, retry.backoff * 2 ** (attempt - 1)))


def _host(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc.rsplit("@", 1)[-1].lower()


class _Engine:
    def __init__(
        self,
        dest: str | os.PathLike[str],
        *,
        limits: Limits,
        retry: Retry,
        timeout: Timeout,
        headers: Mapping[str, str],
        credentials: Credentials,
        resume: bool,
        max_bytes: int | None,
        controller: FetchController,
        sink: ProgressSink | None,
        on_item: Callable[[FetchOutcome], object] | None = None,
    ) -> None:
        self.landing = Landing(dest)
        self.on_item = on_item
        self.limits = limits
        self.retry = retry
        self.timeout = timeout
        # The caller's headers go to each source's own origin, never through a redirect to
        # another; credentials go to their own origins wherever a hop lands.
        self.headers = dict(headers)
        self.credentials = credentials
        # Land the bytes the server stores: ranges and hashes then refer to one thing.
        self.protocol_headers = {"Accept-Encoding": "identity"}
        #: Set when the landing disk is full: nothing more is requested.
        self.stopped: StorageError | None = None
        self.resume = resume
        self.max_bytes = max_bytes
        self.ctl = controller
        self.sink = sink
        self.manifest = self.landing.load() if resume else {}
        self.rows: list[dict[str, Any] | None] = []
        self.duplicates: list[tuple[int, int]] = []
        self.first_index: dict[str, int] = {}
        self.paths: dict[str, str] = {rec.path: key for key, rec in self.manifest.items()}
        self.workers = 0
        self.touched: set[str] = set()
        self.validators: dict[str, str] = {}
        self.leftovers = self.landing.partial_keys() if resume else set()
        self.stats = _Stats(total=None, started=time.perf_counter())
        self.sizes: dict[str, int] = {}  # item key -> full body size, once known
        self.present: dict[str, int] = {}  # item key -> body bytes on disk
        self.session: aiohttp.ClientSession | None = None
        self.queue: asyncio.Queue[Item | None] = asyncio.Queue(maxsize=2 * limits.max_at_once)
        self.task_group: asyncio.TaskGroup | None = None

    # -- paths ------------------------------------------------------------------------
    def _claim_path(self, key: str, wanted: str) -> str:
        owner = self.paths.get(wanted)
        if owner is not None and owner != key:
            stem, dot, ext = wanted.rpartition(".")
            wanted = f"{stem}-{key[:8]}.{ext}" if dot and "/" not in ext else f"{wanted}-{key[:8]}"
        self.paths[wanted] = key
        return wanted

    def _planned_path(self, item: Item) -> str:
        prior = self.manifest.get(item.key)
        if prior is not None:
            return prior.path
        return self._claim_path(item.key, item.path or path_for_url(item.url))

    # -- run --------------------------------------------------------------------------
    async def run(self, sources: Sources) -> FetchReport:
        raw, total = iter_sources(sources)
        self.stats.total = total
        connector = aiohttp.TCPConnector(
            limit=self.ctl.ceiling,
            limit_per_host=min(self.limits.max_per_host or self.ctl.ceiling, self.ctl.ceiling),
            ttl_dns_cache=300,
        )
        client_timeout = aiohttp.ClientTimeout(
            total=None,  # queue time is ours to bound, not aiohttp's (see Timeout.item)
            connect=self.timeout.connect,
            sock_connect=self.timeout.connect,
            sock_read=self.timeout.read,
        )
        try:
            async with (
                aiohttp.ClientSession(
                    connector=connector,
                    timeout=client_timeout,
                    auto_decompress=False,
                    raise_for_status=False,
                ) as session,
                asyncio.TaskGroup() as tg,
            ):
                self.session = session
                self.task_group = tg
                producer = tg.create_task(self._produce(raw))
                for _ in range(self.limits.max_at_once):
                    self._spawn_worker()
                heartbeat = tg.create_task(self._heartbeat())
                await producer
                await self._drain()
                heartbeat.cancel()
        except BaseExceptionGroup as group:
            # Unwrap a one-member group so the caller sees their own error.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        finally:
            self.ctl.unbind()
            self.landing.close()
            # Also on error or cancellation: a bar left open, or a widget stuck "running",
            # would misreport what happened.
            self._notify(finished=True)
        return self._report()

    def _notify(self, *, finished: bool) -> None:
        """Send an event to the sink; a sink that raises is logged and dropped, since a
        broken progress display must not fail the downloads."""
        if self.sink is None:
            return
        try:
            event = self._event(finished=finished)
            if finished:
                self.sink.close(event)
            else:
                self.sink.update(event)
        except Exception:
            logger.warning("progress sink %r failed; progress disabled", self.sink, exc_info=True)
            self.sink = None

    def _spawn_worker(self) -> None:
        assert self.task_group is not None
        self.workers += 1
        self.task_group.create_task(self._worker())

    async def _drain(self) -> None:
        await self.queue.join()
        # Every item is done. One sentinel, passed on by each worker that sees it, stops a
        # pool of any size, including workers added by a live limit change.
        self.queue.put_nowait(None)

    async def _produce(self, raw: Iterator[Source] | AsyncIterable[Source]) -> None:
        index = 0
        if isinstance(raw, AsyncIterable):
            async for source in raw:
                await self._offer(index, source)
                index += 1
        else:
            for source in raw:
                await self._offer(index, source)
                index += 1
        self.stats.total = index

    async def _offer(self, index: int, source: object) -> None:
        item = make_item(index, source, key=lambda: self.landing.redaction_key)
        if item.legacy_key is not None and item.key not in self.manifest:
            self._adopt_legacy(item.legacy_key, item.key)
        self.rows.append(None)
        first = self.first_index.get(item.key)
        if first is not None:
            self.duplicates.append((index, first))
            return
        self.first_index[item.key] = index
        self._expect(item.key, item.expected_bytes)
        await self.queue.put(item)

    def _adopt_legacy(self, legacy: str, key: str) -> None:
        """A manifest record made under the unkeyed identity of a URL with a secret is
        carried over to its keyed identity: resume works across the upgrade, and the record
        landed next is written under the new key."""
        prior = self.manifest.pop(legacy, None)
        if prior is not None:
            self.manifest[key] = dataclasses.replace(prior, key=key)
            self.paths[prior.path] = key

    # -- bytes progress ---------------------------------------------------------------
    def _expect(self, key: str, size: int | None) -> None:
        if size is not None and key not in self.sizes:
            self.sizes[key] = size
            self.stats.bytes_expected += size

    def _now_present(self, key: str, n: int) -> None:
        self.stats.bytes_present += n - self.present.get(key, 0)
        self.present[key] = n

    def _bytes_total(self) -> int | None:
        """Expected body bytes of the whole run: exact once every item's size is known, else
        the known sizes scaled to the number of items (None while no size is known)."""
        s = self.stats
        if not self.sizes:
            return None
        items = len(self.first_index)
        if s.total is not None and len(self.sizes) >= items:
            return s.bytes_expected
        return round(s.bytes_expected * max(items, len(self.sizes)) / len(self.sizes))

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(_HEARTBEAT)
            while self.workers < self.ctl.max_at_once:
                self._spawn_worker()
            self._notify(finished=False)

    async def _worker(self) -> None:
        gate = self.ctl.gate
        assert gate is not None
        while True:
            await gate.acquire()
            try:
                item = await self.queue.get()
                try:
                    if item is None:
                        self.queue.put_nowait(None)
                        return
                    await self._process(item)
                finally:
                    self.queue.task_done()
            finally:
                gate.release()

    # -- one item ---------------------------------------------------------------------
    async def _process(self, item: Item) -> None:
        path = self._planned_path(item)
        host = self.ctl.host(_host(item.url))
        loop = asyncio.get_running_loop()
        first_start = loop.time()
        attempts = 0
        outcome = _Outcome("failed")
        try:
            skip = self._skip(item, path)
            if skip is not None:
                outcome = skip
                return
            if self.stopped is not None:
                # A full disk fails every item the same way: don't ask the server for it.
                outcome = _Outcome("failed", error=StorageError(f"not fetched: {self.stopped}"))
                return
            while True:
                attempts += 1
                self.touched.add(item.key)
                outcome = await self._attempt_with_gates(item, path, host, attempts)
                if isinstance(outcome.error, StorageError) and self.stopped is None:
                    self.stopped = outcome.error
                    logger.info("%s: fetch stopped", outcome.error)
                if outcome.status != "retry":
                    return
                elapsed = loop.time() - first_start
                out_of_budget = self.retry.budget is not None and elapsed >= self.retry.budget
                if attempts >= self.retry.attempts or out_of_budget:
                    outcome = _Outcome(
                        "failed", error=outcome.error, http_status=outcome.http_status
                    )
                    return
                retry_after = outcome.retry_after
                if retry_after is not None:
                    if retry_after > self.retry.max_retry_after:
                        error = HTTPStatusError(
                            f"server asked to wait {retry_after:.0f} s "
                            f"(> max_retry_after) for {item.shown_url}",
                            status=outcome.http_status or 429,
                            url=item.shown_url,
                        )
                        outcome = _Outcome("failed", error=error, http_status=outcome.http_status)
                        return
                    # The whole host waits, not just this worker (RFC 9110 §10.2.3).
                    host.pause(retry_after)
                    delay = 0.0
                else:
                    delay = full_jitter(attempts, self.retry)
                if self.retry.budget is not None:
                    delay = min(delay, max(0.0, self.retry.budget - elapsed))
                self.stats.retried += 1
                logger.debug(
                    "retrying %s after %s (attempt %d)", item.shown_url, outcome.error, attempts
                )
                await asyncio.sleep(delay)
        except Exception as exc:
            # A bug or a disk error on one item is a row, not the end of the batch.
            logger.warning("unexpected error on %s", item.shown_url, exc_info=True)
            outcome = _Outcome("failed", error=TransferError(f"{type(exc).__name__}: {exc}"))
        except (asyncio.CancelledError, KeyboardInterrupt):
            # Stopped by the caller, not by the item: "interrupted", never "failed".
            outcome = _Outcome("interrupted")
            raise
        finally:
            self._record(item, path, outcome, attempts, loop.time() - first_start)
            if self.on_item is not None:
                row = self.rows[item.index]
                assert row is not None
                # Awaited while this worker still holds its slot: a slow consumer slows the
                # fetch (backpressure) instead of letting landed files pile up.
                pending = self.on_item(FetchOutcome(source=item.source, index=item.index, **row))
                if inspect.isawaitable(pending):
                    await pending

    def _skip(self, item: Item, path: str) -> _Outcome | None:
        """Resume: an item complete in the manifest without a validator is not re-requested."""
        prior = self.manifest.get(item.key)
        if prior is None or not self._intact(prior, item):
            return None
        if prior.etag or prior.last_modified:
            return None  # revalidated with a conditional request instead
        return _Outcome("unchanged", path=path, bytes=prior.bytes, sha256=prior.sha256)

    def _intact(self, prior: Record, item: Item) -> bool:
        if item.expected_sha256 and item.expected_sha256 != prior.sha256:
            return False  # the listing says the content changed
        try:
            return self.landing.final(prior.path).stat().st_size == prior.bytes
        except OSError:
            return False

    async def _attempt_with_gates(
        self, item: Item, path: str, host: HostGate, attempts: int
    ) -> _Outcome:
        loop = asyncio.get_running_loop()
        await host.wait_unpaused()
        await host.slots.acquire()
        try:
            # A pause may have begun while this worker queued for the slot.
            await host.wait_unpaused()
            if host.rate is not None:
                await host.rate.acquire()
            started = loop.time()
            self.stats.requests += 1
            try:
                async with asyncio.timeout(self.timeout.item):
                    outcome = await self._attempt(item, path, attempts)
            except StorageError as exc:
                # The disk, not the URL: not retried, and the partial body is freed.
                self.landing.discard_part(item.key)
                outcome = _Outcome("failed", error=exc)
            except Exception as exc:
                error, congestion = _translate(exc, item.shown_url)
                outcome = _Outcome("retry", error=error, congestion=congestion)
            rtt = loop.time() - started
            if outcome.status in ("ok", "unchanged"):
                self.stats.latencies.append(rtt)
                self.ctl.record_latency(rtt)
                host.on_healthy(rtt, started)
            elif outcome.congestion and host.on_congestion(started):
                logger.debug("%s: limit lowered to %d", host.host, host.limit)
            return outcome
        finally:
            host.slots.release()

    async def _attempt(self, item: Item, path: str, attempts: int) -> _Outcome:
        """One GET of ``item``: plan it (resume, conditional), check the answer, stream the
        body to its partial file, then verify and publish it. Each stage returns an outcome
        to stop at, or ``None`` to go on."""
        t = self._plan_request(item, path)
        resp = await self._get(item, t.headers)
        if isinstance(resp, _Outcome):
            return resp
        async with resp:
            t.status = resp.status
            outcome = self._refused(item, resp, t) or self._begin_body(item, resp, t)
            if outcome is None:
                outcome = await self._receive(item, resp, t)
            if outcome is not None:
                return outcome
        return await self._land(item, t, attempts)

    def _plan_request(self, item: Item, path: str) -> _Transfer:
        """Headers of the attempt: resume a partial body (Range + If-Range), else ask only
        for a change of an intact earlier download (If-None-Match / If-Modified-Since)."""
        key = item.key
        t = _Transfer(key=key, path=path, headers=dict(self.protocol_headers))
        part = self.landing.part(key)
        # A stat per attempt is slow on a busy disk: only look where a partial can be.
        maybe_partial = key in self.validators or key in self.leftovers
        size = part.stat().st_size if maybe_partial and part.exists() else 0
        if size > 0:
            # This run's own interrupted attempt, else one a killed run left behind.
            validator = self.validators.get(key)
            if validator is None:
                meta = self.landing.read_part_meta(key) or {}
                validator = meta.get("etag") or meta.get("last_modified")
            if validator:
                t.offset = size
                t.headers["Range"] = f"bytes={t.offset}-"
                t.headers["If-Range"] = validator
        if t.offset == 0:
            prior = self.manifest.get(key)
            if prior is not None and self._intact(prior, item):
                if prior.etag:
                    t.headers["If-None-Match"] = prior.etag
                    t.conditional = True
                elif prior.last_modified:
                    t.headers["If-Modified-Since"] = prior.last_modified
                    t.conditional = True
        return t

    def _refused(self, item: Item, resp: aiohttp.ClientResponse, t: _Transfer) -> _Outcome | None:
        """The outcome of an answer without a body to land: 304, or an error status."""
        status = t.status
        if status == 304 and t.conditional:
            prior = self.manifest[t.key]
            return _Outcome(
                "unchanged",
                http_status=304,
                path=prior.path,
                bytes=prior.bytes,
                sha256=prior.sha256,
            )
        if status < 400 and status in (200, 203, 206):
            return None
        error = HTTPStatusError(
            f"HTTP {status} {resp.reason or ''} for {item.shown_url}".replace("  ", " "),
            status=status,
            url=item.shown_url,
        )
        if status not in self.retry.statuses:
            return _Outcome("failed", error=error, http_status=status)
        if status == 429:
            self.stats.throttled += 1
        retry_after = (
            parse_retry_after(resp.headers.get("Retry-After")) if status in (429, 503) else None
        )
        return _Outcome(
            "retry",
            error=error,
            http_status=status,
            retry_after=retry_after,
            congestion=status in (429, 503),
        )

    def _begin_body(
        self, item: Item, resp: aiohttp.ClientResponse, t: _Transfer
    ) -> _Outcome | None:
        """Before the first byte: resume (the hash of the partial body is taken up by
        ``_receive``) or restart, note validators and the size, refuse a body over
        ``max_bytes``, take a server-given file name."""
        key = t.key
        if (
            t.status == 206
            and t.offset
            and _range_start(resp.headers.get("Content-Range")) == t.offset
        ):
            t.append = True
        else:
            # A 200 to a Range request means the resource changed (If-Range failed).
            t.offset = 0
            t.append = False
        t.etag = resp.headers.get("ETag")
        t.last_modified = resp.headers.get("Last-Modified")
        length = resp.content_length
        t.expected = None if length is None else t.offset + length
        if t.etag or t.last_modified:
            self.validators[key] = t.etag or t.last_modified or ""
            # Only bodies worth resuming across runs pay for a sidecar file.
            t.sidecar = t.expected is None or t.expected >= RESUME_MIN_BYTES
        limit = self.max_bytes
        if limit is not None and t.expected is not None and t.expected > limit:
            return self._discard(
                t, "failed", f"{item.shown_url} is {t.expected} bytes, over max_bytes={limit}"
            )
        if resp.content_disposition is not None:
            name = resp.content_disposition.filename
            if name and item.path is None and key not in self.manifest:
                directory = t.path.rpartition("/")[0]
                wanted = f"{directory}/{filename_from_disposition(name)}".lstrip("/")
                if wanted != t.path:
                    self.paths.pop(t.path, None)
                    t.path = self._claim_path(key, wanted)
        return None

    def _hash_part(self, key: str, hasher: hashlib._Hash) -> None:
        with self.landing.part(key).open("rb") as existing:
            while block := existing.read(1 << 20):
                hasher.update(block)

    async def _receive(
        self, item: Item, resp: aiohttp.ClientResponse, t: _Transfer
    ) -> _Outcome | None:
        """Stream the body into the partial file, hashing it; a short or oversized body is
        an outcome (the partial kept for a resume, or discarded)."""
        key, limit, expected = t.key, self.max_bytes, t.expected
        t.received = t.offset
        self._expect(key, expected)
        self._now_present(key, t.offset)
        try:
            if t.append:
                # The hash goes on from the partial body on disk: reading it whole is work
                # for a thread, not the loop.
                await _settled_in_thread(self._hash_part, key, t.hasher)
            # Creating a file can take milliseconds on a busy disk: keep that off the loop.
            out = await _settled_in_thread(
                self._open_part, key, t.append, (t.etag, t.last_modified) if t.sidecar else None
            )
            with out:
                async for chunk in resp.content.iter_chunked(_CHUNK):
                    out.write(chunk)
                    # Hand each chunk to the OS at once: what a killed process wrote is
                    # then on disk for the next run to resume with Range.
                    out.flush()
                    t.hasher.update(chunk)
                    t.received += len(chunk)
                    self.stats.bytes += len(chunk)
                    self.stats.bytes_present += len(chunk)
                    self.present[key] = t.received
                    if limit is not None and t.received > limit:
                        break
        except OSError as exc:
            if _disk_full(exc):
                raise _no_space(self.landing.part(key)) from exc
            raise
        except aiohttp.ClientPayloadError as exc:
            if expected is None:
                raise
            # aiohttp drops the bytes it buffered after the cut; its message counts them.
            counted = _RECEIVED.search(str(exc.__cause__ or exc))
            got = t.offset + int(counted.group(1)) if counted else t.received
            # Keep the partial body: the retry resumes it with Range/If-Range.
            return _truncated(item, t.status, got, expected)
        if limit is not None and t.received > limit:
            return self._discard(t, "failed", f"{item.shown_url} exceeded max_bytes={limit}")
        if expected is not None and t.received != expected:
            # Keep the partial body: the retry resumes it with Range/If-Range.
            return _truncated(item, t.status, t.received, expected)
        return None

    def _discard(self, t: _Transfer, status: Literal["failed", "retry"], message: str) -> _Outcome:
        """Drop the partial body of ``t``: ``status`` with a :class:`TransferError`."""
        self.landing.discard_part(t.key)
        return _Outcome(status, http_status=t.status, error=TransferError(message))

    async def _land(self, item: Item, t: _Transfer, attempts: int) -> _Outcome:
        """Check the body against the listing, publish it under its path, record it."""
        key, received = t.key, t.received
        digest = t.hasher.hexdigest()
        if (item.expected_sha256 and digest != item.expected_sha256) or (
            item.expected_bytes is not None and received != item.expected_bytes
        ):
            return self._discard(
                t,
                "retry",
                f"{item.shown_url}: got {received} bytes sha256 {digest[:12]}…, listing says "
                f"{item.expected_bytes} bytes sha256 {(item.expected_sha256 or '?')[:12]}…",
            )
        record = Record(
            key=key,
            url=item.shown_url,
            path=t.path,
            bytes=received,
            sha256=digest,
            etag=t.etag,
            last_modified=t.last_modified,
            attempts=attempts,
            time=now_iso(),
        )
        try:
            # A rename is cheap, except on a busy disk (ms seen here): off the loop as well.
            await _settled_in_thread(self.landing.publish, key, t.path)
        except OSError as exc:
            if _disk_full(exc):
                raise _no_space(self.landing.final(t.path)) from exc
            raise
        finally:
            # Also when cancelled after the rename: the manifest matches what is on disk.
            if not self.landing.part(key).exists():
                try:
                    self.landing.append(record)
                except OSError as exc:
                    if _disk_full(exc):
                        raise _no_space(self.landing.manifest_path) from exc
                    raise
        self.manifest[key] = record
        return _Outcome("ok", http_status=t.status, path=t.path, bytes=received, sha256=digest)

    async def _get(self, item: Item, protocol: dict[str, str]) -> aiohttp.ClientResponse | _Outcome:
        """GET ``item.url``, following redirects here rather than in aiohttp, so that each
        hop gets only the headers meant for its origin (aiohttp drops Authorization and
        Cookie on a cross-origin redirect, but not X-Api-Key or any other custom header)."""
        assert self.session is not None
        url = item.url
        first = origin_of(url)
        for _hop in range(MAX_REDIRECTS + 1):
            headers = request_headers(
                url,
                first_origin=first,
                caller=self.headers,
                credentials=self.credentials,
                protocol=protocol,
            )
            resp = await self.session.get(url, headers=headers, allow_redirects=False)
            if resp.status not in REDIRECT_STATUSES:
                return resp
            location = resp.headers.get("Location")
            status = resp.status
            resp.release()
            target = redirect_target(url, location)
            if target is None:
                return _Outcome(
                    "failed",
                    http_status=status,
                    error=HTTPStatusError(
                        f"HTTP {status} from {redact_url(url)} redirects to a location that "
                        "is not an http(s) URL; not followed",
                        status=status,
                        url=item.shown_url,
                    ),
                )
            url = target
        return _Outcome(
            "failed",
            http_status=status,
            error=HTTPStatusError(
                f"more than {MAX_REDIRECTS} redirects from {item.shown_url} "
                f"(last to {redact_url(url)})",
                status=status,
                url=item.shown_url,
            ),
        )

    def _open_part(
        self, key: str, append: bool, validator: tuple[str | None, str | None] | None
    ) -> BufferedWriter:
        """Runs in a thread: record the validator (if any), open the partial body file."""
        if validator is not None:
            self.landing.write_part_meta(key, *validator)
        return open(self.landing.part(key), "ab" if append else "wb")

    # -- reporting --------------------------------------------------------------------
    def _record(
        self, item: Item, path: str, outcome: _Outcome, attempts: int, seconds: float
    ) -> None:
        status: Status = "failed" if outcome.status == "retry" else outcome.status
        if status in ("ok", "unchanged"):
            self._expect(item.key, outcome.bytes)
            self._now_present(item.key, outcome.bytes)
        if status == "ok":
            self.stats.succeeded += 1
        elif status == "unchanged":
            self.stats.unchanged += 1
        elif status == "interrupted":
            self.stats.interrupted += 1
        else:
            self.stats.failed += 1
        if status != "interrupted":
            self.stats.done += 1
        error = None
        if status == "interrupted":
            error = "interrupted"
            if not self.landing.part_meta(item.key).exists():
                self.landing.discard_part(item.key)
        elif status == "failed":
            error = (
                f"{type(outcome.error).__name__}: {outcome.error}"
                if outcome.error is not None
                else "cancelled"
            )
            logger.info("failed: %s after %d attempts: %s", item.shown_url, attempts, error)
            if not self.landing.part_meta(item.key).exists():
                # Without a recorded validator a later run cannot resume it: don't keep it.
                self.landing.discard_part(item.key)
        self.rows[item.index] = {
            "url": item.shown_url,
            "path": outcome.path or (None if status in ("failed", "interrupted") else path),
            "status": status,
            "bytes": outcome.bytes if status not in ("failed", "interrupted") else None,
            "sha256": outcome.sha256,
            "attempts": attempts,
            "error": error,
            "http_status": outcome.http_status,
            "seconds": seconds,
        }

    def _event(self, *, finished: bool) -> ProgressEvent:
        s = self.stats
        elapsed = time.perf_counter() - s.started
        done = s.done + (len(self.duplicates) if finished else 0)
        return ProgressEvent(
            total=s.total,
            done=done,
            succeeded=s.succeeded,
            failed=s.failed,
            unchanged=s.unchanged + (len(self.duplicates) if finished else 0),
            retried=s.retried,
            throttled=s.throttled,
            bytes=s.bytes,
            elapsed=elapsed,
            throughput_bps=s.bytes / elapsed if elapsed > 0 else 0.0,
            concurrency=self.ctl.concurrency,
            in_flight=self.ctl.in_flight,
            finished=finished,
            interrupted=s.interrupted,
            bytes_present=s.bytes_present,
            bytes_total=self._bytes_total(),
        )

    def _report(self) -> FetchReport:
        for index, first in self.duplicates:
            row = self.rows[first]
            assert row is not None
            # The same URL twice lands once; the repeat reports the first's outcome.
            self.rows[index] = {
                **row,
                "status": "unchanged" if row["status"] == "ok" else row["status"],
                "attempts": 0,
            }
        rows = [r for r in self.rows if r is not None]
        items = (
            pl.DataFrame(rows, schema=ITEM_SCHEMA, orient="row")
            if rows
            else pl.DataFrame(schema=ITEM_SCHEMA)
        )
        s = self.stats
        elapsed = time.perf_counter() - s.started
        lat = sorted(s.latencies)

        def pct(q: float) -> float | None:
            if not lat:
                return None
            return lat[min(len(lat) - 1, max(0, math.ceil(q * len(lat)) - 1))]

        counts = items["status"].value_counts() if rows else None
        by = dict(counts.iter_rows()) if counts is not None else {}
        return FetchReport(
            dest=str(self.landing.dest),
            succeeded=int(by.get("ok", 0)),
            failed=int(by.get("failed", 0)),
            unchanged=int(by.get("unchanged", 0)),
            retried=s.retried,
            throttled=s.throttled,
            requests=s.requests,
            bytes=s.bytes,
            elapsed=elapsed,
            throughput_bps=s.bytes / elapsed if elapsed > 0 else 0.0,
            items_per_second=items.height / elapsed if elapsed > 0 else 0.0,
            latency_p50=pct(0.5),
            latency_p90=pct(0.9),
            latency_p99=pct(0.99),
            concurrency=self.ctl.concurrency,
            host_limits=self.ctl.host_limits(),
            items=items,
            stopped=None if self.stopped is None else str(self.stopped),
        )


async def _settled_in_thread(fn: Callable[..., T], *args: Any) -> T:
    """``asyncio.to_thread`` that, when cancelled, still waits for the thread to finish.

    A cancelled ``to_thread`` returns at once while the thread goes on; a file it then
    creates or renames would escape the caller's cleanup. A result that arrives after a
    cancellation is closed if it can be.
    """
    future = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            late = await future
            close = getattr(late, "close", None)
            if callable(close):
                close()
        raise


def _range_start(content_range: str | None) -> int | None:
    # "bytes 100-199/200" (RFC 9110 §14.4)
    if not content_range or not content_range.startswith("bytes "):
        return None
    start = content_range[6:].split("-", 1)[0]
    return int(start) if start.isdigit() else None


def _new_engine(
    dest: str | os.PathLike[str],
    *,
    limits: Limits | int | None,
    retry: Retry | int | bool | None,
    timeout: Timeout | float | None,
    headers: Mapping[str, str] | None,
    credentials: Credentials | Mapping[str, Mapping[str, str]] | None,
    progress: ProgressArg,
    resume: bool,
    max_bytes: int | None,
    controller: FetchController | None,
    on_item: Callable[[FetchOutcome], object] | None,
) -> _Engine:
    """Check ``fetch``'s options and build its engine; the controller is bound to the
    limits, and unbound again if anything here fails."""
    limits_ = Limits.coerce(limits)
    retry_ = Retry.coerce(retry)
    timeout_ = Timeout.coerce(timeout)
    if max_bytes is not None and (not isinstance(max_bytes, int) or max_bytes < 0):
        raise ConfigurationError(f"max_bytes must be an int >= 0 or None, got {max_bytes!r}")
    if resume not in (True, False):
        raise ConfigurationError(f"resume must be True or False, got {resume!r}")
    ctl = controller if controller is not None else FetchController()
    ctl.bind(limits_)
    try:
        sink = make_sink(progress)
        attach = getattr(sink, "attach", None)
        if callable(attach):
            attach(ctl)
        engine = _Engine(
            dest,
            limits=ctl.limits,
            retry=retry_,
            timeout=timeout_,
            headers=headers or {},
            credentials=Credentials.coerce(credentials),
            resume=resume,
            max_bytes=max_bytes,
            controller=ctl,
            sink=sink,
            on_item=on_item,
        )
    except BaseException:
        ctl.unbind()
        raise
    return engine


async def fetch(
    sources: Sources,
    dest: str | os.PathLike[str],
    *,
    limits: Limits | int | None = None,
    retry: Retry | int | bool | None = None,
    timeout: Timeout | float | None = None,  # noqa: ASYNC109 - per-attempt bounds, not a deadline
    headers: Mapping[str, str] | None = None,
    credentials: Credentials | Mapping[str, Mapping[str, str]] | None = None,
    progress: ProgressArg = "auto",
    resume: bool = True,
    max_bytes: int | None = None,
    controller: FetchController | None = None,
    on_item: Callable[[FetchOutcome], object] | None = None,
) -> FetchReport:
    """Download ``sources`` into ``dest``: bounded, adaptive, retried, streamed, resumable.

    Parameters
    ----------
    sources
        URL strings, :class:`ChunkRequest` s from :func:`plan_chunks`, a portal listing
        (``GET /v1/feeds`` JSON, a list of row dicts, or a polars DataFrame with a ``url``
        column; ``sha256``/``bytes`` columns are verified, ``path`` is used as the landing
        path), or an (async) iterable of any of these, consumed lazily.
    dest
        Landing directory. Files land at paths derived from the URL (or the listing's
        ``path``, or a sanitised ``Content-Disposition`` name); ``dest/.scfeeds/`` holds the
        manifest and partial bodies.
    limits
        ``Limits`` or an int (``max_at_once``). The worker pool has ``max_at_once`` workers;
        each host's limit adapts by AIMD unless ``Limits(adaptive=False)``.
    retry
        ``Retry``, an int (attempts) or ``False``. Retried: 408, 425, 429, 5xx (not 501/505),
        resets, timeouts, truncated bodies, and bodies that do not match the listing's sha256.
    timeout
        ``Timeout`` or seconds (connect and read). No bound counts time waiting for a slot.
    headers
        Sent with the request for each source, to that source's own origin: a redirect to
        another origin (scheme, host, port) carries none of them, so a token cannot follow a
        302 to another server. Never logged or stored.
    credentials
        Headers per origin, :class:`~scfeeds.Credentials` or
        ``{"https://host[:port]": {"Authorization": "Bearer ..."}}``: sent to requests at that
        origin only, including hops a redirect leads to, and to no other origin.
    progress
        ``"auto"`` (a bar in a terminal, the notebook widget in Jupyter, one log line at the
        end otherwise), ``None``/``False``, a callable taking :class:`ProgressEvent`, or an
        object with ``update(event)`` and ``close(event)`` (and optionally ``attach(controller)``).
    resume
        Use ``dest``'s manifest: complete items without a validator are skipped, those with an
        ETag/Last-Modified are revalidated (304 -> ``unchanged``), partial bodies resume with
        ``Range``/``If-Range``. ``False`` downloads everything again.
    max_bytes
        Fail any item larger than this (checked against Content-Length and while streaming).
    controller
        A :class:`FetchController` to change ``max_at_once`` and read per-host AIMD limits
        while the fetch runs.
    on_item
        Called with each source's :class:`~scfeeds.FetchOutcome` (the ``items`` row plus the
        caller's own ``source`` object and its ``index``) as soon as it is known. If it
        returns an awaitable, the worker awaits it before taking the next source, so a slow
        consumer (a parser) slows the fetch down instead of letting files pile up.

    Returns
    -------
    FetchReport
        Counts, bytes, timings and one row per source in ``items``. Per-item failures are
        rows, never exceptions; call ``report.raise_for_failures()`` to raise. A full disk
        (``ENOSPC``/``EDQUOT``) is not retried: that item fails with "no space left on
        device writing <path>", the rest are not requested, and ``report.stopped`` says why.

    Examples
    --------
    >>> report = await fetch(["http://127.0.0.1:8000/v1/feeds/a"], "landing")  # doctest: +SKIP
    >>> report.items.select("path", "status", "sha256")  # doctest: +SKIP
    """
    # long only by its docstring (each option of the public entry point is documented there)
    engine = _new_engine(
        dest,
        limits=limits,
        retry=retry,
        timeout=timeout,
        headers=headers,
        credentials=credentials,
        progress=progress,
        resume=resume,
        max_bytes=max_bytes,
        controller=controller,
        on_item=on_item,
    )
    try:
        return await engine.run(sources)
    except (asyncio.CancelledError, KeyboardInterrupt) as exc:
        kept = _cleanup_partials(engine, keep_resumable=True)
        _say_interrupted(exc, engine, kept)
        raise
    except BaseException:
        _cleanup_partials(engine)
        raise


async def get_json(
    url: str,
    *,
    credentials: Credentials,
    timeout: float = 60.0,  # noqa: ASYNC109 - one small request, bounded as a whole
) -> tuple[int, object]:
    """``(status, parsed JSON or None)`` of a GET (a portal listing), following redirects
    hop by hop so that each origin gets only its own ``credentials``."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        for _hop in range(MAX_REDIRECTS + 1):
            resp = await session.get(
                url, headers=credentials.headers_for(url), allow_redirects=False
            )
            async with resp:
                if resp.status in REDIRECT_STATUSES:
                    target = redirect_target(url, resp.headers.get("Location"))
                    if target is None:
                        return resp.status, None
                    url = target
                    continue
                if resp.status != 200:
                    return resp.status, None
                return 200, await resp.json(content_type=None)
    raise TransferError(f"more than {MAX_REDIRECTS} redirects from {redact_url(url)}")


def _cleanup_partials(engine: _Engine, *, keep_resumable: bool = False) -> list[int]:
    """On error, leave no temporary files (kill -9 is what resume is for). On an interrupt,
    keep the bodies a next run can resume (those with a recorded validator) and return their
    sizes."""
    kept: list[int] = []
    for key in engine.touched:
        part = engine.landing.part(key)
        if keep_resumable and engine.landing.part_meta(key).exists():
            with contextlib.suppress(OSError):
                kept.append(part.stat().st_size)
                continue
        engine.landing.discard_part(key)
    with contextlib.suppress(OSError):
        engine.landing.partial.rmdir()
    with contextlib.suppress(OSError):
        engine.landing.meta.rmdir()  # nothing landed, nothing kept: no empty scaffolding
    return kept


def interrupted_summary(engine: _Engine, kept: list[int]) -> str:
    """One line saying what an interrupted fetch did and what a next run will do."""
    s = engine.stats
    total = "?" if s.total is None else str(s.total)
    landed = s.succeeded + s.unchanged
    line = (
        f"fetch interrupted after {time.perf_counter() - s.started:.1f} s: "
        f"{landed} of {total} items landed, {s.interrupted} interrupted"
    )
    if s.failed:
        line += f", {s.failed} failed"
    if kept:
        mib = sum(kept) / 2**20
        line += (
            f"; {len(kept)} partial bodies ({mib:.1f} MiB) kept, "
            "the next run resumes them with Range"
        )
    return line


def _say_interrupted(exc: BaseException, engine: _Engine, kept: list[int]) -> None:
    """Make the interrupt read as one line: IPython shows ``_render_traceback_()`` instead of
    the traceback (a top-level ``await`` in a notebook); elsewhere the line is a note."""
    line = interrupted_summary(engine, kept)
    logger.info("%s", line)
    with contextlib.suppress(Exception):
        exc.add_note(line)
        exc._render_traceback_ = lambda: [line]  # type: ignore[attr-defined]
