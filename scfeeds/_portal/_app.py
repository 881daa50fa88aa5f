"""The aiohttp application of the simulated supplier portal: routes, fault injection, accounting."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
import logging
import math
import random
import socket
import struct
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, Unpack
from urllib.parse import quote

import polars as pl
from aiohttp import web

from scfeeds._cells import safe_frame
from scfeeds._portal._catalog import Catalog, Feed
from scfeeds._portal._http import (
    UNSATISFIABLE,
    ByteRange,
    http_date,
    if_range_holds,
    not_modified,
    parse_range,
)
from scfeeds._portal._knobs import Decision, KnobChanges, PortalKnobs, TokenBucket, decide
from scfeeds._portal._log import shown_target
from scfeeds.exceptions import ConfigurationError, ScfeedsError

logger = logging.getLogger("scfeeds.portal")

DEFAULT_LIMIT: Final = 1000
MAX_LIMIT: Final = 1_000_000
MAX_BLOB: Final = 1 << 40
BLOB_BLOCK: Final = 1 << 20
DEFAULT_CHUNK: Final = 1 << 20
MAX_CHUNK: Final = 16 << 20
FILE_CHUNK: Final = 1 << 20
MAX_CACHED_FRAMES: Final = 64
NDJSON: Final = "application/x-ndjson"
CSV: Final = "text/csv"
REALM: Final = 'Bearer realm="scfeeds-portal"'
ADMIN_HEADER: Final = "X-Portal-Admin"
_STATUS_CODES: Final = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    416: "range_not_satisfiable",
    429: "rate_limited",
}


class ApiError(ScfeedsError):
    """Turned into a JSON error response by the middleware."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


@dataclass
class _Exchange:
    """What the portal did for one request (for accounting)."""

    kind: str
    feed: str | None = None
    decision: Decision | None = None
    faults: list[str] = field(default_factory=list)


class Stats:
    """Counters of everything the portal served.

    Totals (``requests``, ``bytes``) cover the data plane (list, file, lines, blob and unknown
    paths); ``/v1/stats`` and admin calls are counted only under ``by_kind`` so that reading the
    stats does not change the totals. ``bytes`` are body bytes handed to the transport.
    """

    CONTROL: Final = frozenset({"stats", "admin"})

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.started = time.time()
        self.requests = 0
        self.bytes = 0
        self.by_kind: dict[str, Counter[str]] = {}
        self.by_status: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.by_feed: dict[str, Counter[str]] = {}
        self.client_aborts = 0

    def request(self, ex: _Exchange) -> None:
        self.by_kind.setdefault(ex.kind, Counter())["requests"] += 1
        if ex.kind not in self.CONTROL:
            self.requests += 1

    def feed(self, ex: _Exchange, feed_id: str) -> None:
        ex.feed = feed_id
        self.by_feed.setdefault(feed_id, Counter())["requests"] += 1

    def status(self, ex: _Exchange, status: int | str) -> None:
        if ex.kind not in self.CONTROL:
            self.by_status[str(status)] += 1

    def fault(self, ex: _Exchange, name: str) -> None:
        ex.faults.append(name)
        self.faults[name] += 1

    def sent(self, ex: _Exchange, n: int) -> None:
        self.by_kind.setdefault(ex.kind, Counter())["bytes"] += n
        if ex.kind not in self.CONTROL:
            self.bytes += n
        if ex.feed is not None:
            self.by_feed.setdefault(ex.feed, Counter())["bytes"] += n

    def snapshot(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "bytes": self.bytes,
            "by_kind": {
                k: {"requests": v["requests"], "bytes": v["bytes"]} for k, v in self.by_kind.items()
            },
            "by_status": dict(self.by_status),
            "faults": dict(self.faults),
            "by_feed": {
                k: {"requests": v["requests"], "bytes": v["bytes"]} for k, v in self.by_feed.items()
            },
            "client_aborts": self.client_aborts,
            "since": self.started,
        }


class PortalState:
    """Everything a running portal holds; only touched from its event loop."""

    def __init__(
        self, catalog: Catalog, knobs: PortalKnobs, *, admin_secret: str | None = None
    ) -> None:
        self.catalog = catalog
        self.knobs = knobs
        self.stats = Stats()
        self.admin_secret = admin_secret
        self._attempts: dict[str, int] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._frames: OrderedDict[str, pl.DataFrame] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}

    def set_knobs(self, **changes: Unpack[KnobChanges]) -> PortalKnobs:
        """Apply knob changes; restarts attempt counters and rate-limit buckets."""
        self.knobs = self.knobs.replace(**changes)
        self._attempts.clear()
        self._buckets.clear()
        logger.info("portal knobs: %s", self.knobs.describe())
        return self.knobs

    def next_attempt(self, key: str) -> int:
        attempt = self._attempts.get(key, 0) + 1
        self._attempts[key] = attempt
        return attempt

    def bucket(self, client: str, now: float) -> TokenBucket:
        bucket = self._buckets.get(client)
        if bucket is None:
            assert self.knobs.rate_limit is not None
            bucket = TokenBucket(self.knobs.rate_limit, self.knobs.bucket_size, now)
            self._buckets[client] = bucket
        return bucket

    async def lines_frame(self, feed: Feed) -> pl.DataFrame:
        """The feed's line items, loaded once (off the loop) and kept in a small LRU."""
        frame = self._frames.get(feed.id)
        if frame is None:
            lock = self._locks.setdefault(feed.id, asyncio.Lock())
            async with lock:
                frame = self._frames.get(feed.id)
                if frame is None:
                    try:
                        frame = await asyncio.to_thread(self.catalog.lines_frame, feed)
                    except (pl.exceptions.PolarsError, OSError, ConfigurationError) as exc:
                        raise ApiError(
                            500, "lines_unavailable", f"cannot read rows of {feed.path}: {exc}"
                        ) from exc
                    self._frames[feed.id] = frame
                    while len(self._frames) > MAX_CACHED_FRAMES:
                        self._frames.popitem(last=False)
        self._frames.move_to_end(feed.id)
        return frame


STATE: Final = web.AppKey("scfeeds_portal_state", PortalState)
EXCHANGE: Final = web.RequestKey("scfeeds_portal_exchange", _Exchange)


# -- responses ----------------------------------------------------------------------------------


def _json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=_json_bytes({"error": code, "message": message}),
        content_type="application/json",
        headers=headers,
    )


class _Body(Protocol):
    async def read(self, n: int) -> bytes: ...

    def close(self) -> None: ...


class _BytesBody:
    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self._pos = 0

    async def read(self, n: int) -> bytes:
        out = bytes(self._view[self._pos : self._pos + n])
        self._pos += len(out)
        return out

    def close(self) -> None:
        self._view.release()


class _FileBody:
    def __init__(self, feed: Feed, start: int) -> None:
        self._file = feed.file.open("rb")
        self._file.seek(start)

    async def read(self, n: int) -> bytes:
        # Off the loop: a cold read from disk must not stall other transfers.
        return await asyncio.to_thread(self._file.read, n)

    def close(self) -> None:
        self._file.close()


@functools.lru_cache(maxsize=8)
def _blob_base(seed: int) -> bytes:
    return random.Random(seed).randbytes(BLOB_BLOCK)


class _BlobBody:
    """Byte p of blob (seed) is byte p % 1 MiB of block p // 1 MiB, where block k is a seeded
    1 MiB block whose first 16 bytes are replaced by (seed, k): cheap to generate at any
    offset, and no two blocks are equal (a client that mixes up chunks is caught)."""

    def __init__(self, seed: int, start: int) -> None:
        self._seed = seed
        self._base = _blob_base(seed)
        self._pos = start

    async def read(self, n: int) -> bytes:
        return self.read_sync(n)

    def read_sync(self, n: int) -> bytes:
        """Up to ``n`` next bytes (never across a block boundary)."""
        block, offset = divmod(self._pos, BLOB_BLOCK)
        end = min(BLOB_BLOCK, offset + n)
        if offset < 16:
            header = struct.pack(">QQ", self._seed & (2**64 - 1), block)
            out = header[offset:] + self._base[16:end] if end > 16 else header[offset:end]
        else:
            out = self._base[offset:end]
        self._pos += len(out)
        return out

    def close(self) -> None:
        pass


def blob_sha256(nbytes: int, *, seed: int = 0) -> str:
    """The sha256 of ``GET /v1/blob/{nbytes}?seed={seed}``, computed without a server.

    Lets a benchmark check that what it landed is exactly what the portal sent.
    """
    body, digest, left = _BlobBody(seed, 0), hashlib.sha256(), nbytes
    while left > 0:
        chunk = body.read_sync(min(left, BLOB_BLOCK))
        digest.update(chunk)
        left -= len(chunk)
    return digest.hexdigest()


async def _stream(
    request: web.Request,
    *,
    status: int,
    headers: dict[str, str],
    length: int,
    body: _Body,
    chunk: int = FILE_CHUNK,
) -> web.StreamResponse:
    """Send ``length`` bytes of ``body`` with the body faults of this request applied."""
    state = request.app[STATE]
    ex = request[EXCHANGE]
    knobs = state.knobs
    resp = web.StreamResponse(status=status, headers=headers)
    resp.content_length = length
    state.stats.status(ex, status)
    try:
        await resp.prepare(request)
        if request.method == "HEAD" or length == 0:
            await resp.write_eof()
            return resp
        limit = length
        decision = ex.decision
        reset = decision is not None and decision.reset and knobs.reset_at == "body"
        if decision is not None and (reset or decision.truncate):
            limit = int(length * decision.cut)
            state.stats.fault(ex, "reset" if reset else "truncated")
            logger.debug(
                "portal: %s %s after %d of %d bytes",
                "resetting" if reset else "truncating",
                request.path,
                limit,
                length,
            )
        rate = knobs.slow_body if ex.kind in knobs.apply_to else None
        if rate is not None:
            state.stats.fault(ex, "slow")
            # ~20 writes a second keeps the throttled stream smooth.
            chunk = max(1, min(chunk, int(rate / 20)))
        started = time.monotonic()
        sent = 0
        while sent < limit:
            data = await body.read(min(chunk, limit - sent))
            if not data:
                break  # the file shrank under us: the client sees a short body
            state.stats.sent(ex, len(data))  # counted before the write so stats never lag
            try:
                await resp.write(data)
            except ConnectionError:
                state.stats.sent(ex, -len(data))
                raise
            sent += len(data)
            if rate is not None:
                ahead = started + sent / rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
        if sent < length:
            # Content-Length promised more: closing now is a truncated body for the client.
            if reset:
                _reset_connection(request)
            elif request.transport is not None:
                request.transport.close()
            return resp
        await resp.write_eof()
    except ConnectionError:
        state.stats.client_aborts += 1
        logger.debug("portal: client went away during %s %s", request.method, request.path)
    except Exception:
        # Headers are out, so no error response is possible: cut the body (the client sees
        # a short read) and log the cause.
        logger.exception("portal: failed while sending %s %s", request.method, request.path)
        if request.transport is not None:
            request.transport.close()
    finally:
        body.close()
    return resp


async def _send_bytes(
    request: web.Request, data: bytes, *, content_type: str, headers: dict[str, str] | None = None
) -> web.StreamResponse:
    all_headers = {"Content-Type": content_type, **(headers or {})}
    return await _stream(
        request, status=200, headers=all_headers, length=len(data), body=_BytesBody(data)
    )


# -- query parsing ------------------------------------------------------------------------------


def _check_params(request: web.Request, allowed: set[str]) -> None:
    unknown = sorted(set(request.query) - allowed)
    if unknown:
        raise ApiError(
            400,
            "unknown_parameter",
            f"unknown query parameter(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(allowed)) or 'none'}",
        )
    repeated = sorted(k for k in request.query if len(request.query.getall(k)) > 1)
    if repeated:
        raise ApiError(
            400, "repeated_parameter", f"query parameter(s) given twice: {', '.join(repeated)}"
        )


def _is_decimal(text: str) -> bool:
    # str.isdigit() accepts "²" and other digits int() refuses: ASCII only.
    return text.isascii() and text.isdigit() and len(text) <= 20


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not _is_decimal(raw) or not low <= int(raw) <= high:
        raise ApiError(
            400,
            f"invalid_{name}",
            f"{name} must be an integer between {low} and {high}, got {raw!r}",
        )
    return int(raw)


def _feed(request: web.Request) -> Feed:
    state = request.app[STATE]
    feed_id = request.match_info["id"]
    feed = state.catalog.feeds.get(feed_id)
    if feed is None:
        raise ApiError(
            404, "unknown_feed", f"no feed with id {feed_id!r}; GET /v1/feeds lists them"
        )
    state.stats.feed(request[EXCHANGE], feed.id)
    return feed


def _feed_url(base: str, feed: Feed) -> str:
    return f"{base}/v1/feeds/{quote(feed.id, safe='')}"


# -- handlers -----------------------------------------------------------------------------------


async def list_feeds(request: web.Request) -> web.StreamResponse:
    """``GET /v1/feeds?supplier=&table=&format=``."""
    _check_params(request, {"supplier", "table", "format"})
    state = request.app[STATE]
    base = str(request.url.origin())
    wanted = {
        attr: request.query[param]
        for param, attr in (("supplier", "supplier_id"), ("table", "table"), ("format", "format"))
        if param in request.query
    }
    feeds = [
        {
            "id": feed.id,
            "supplier_id": feed.supplier_id,
            "table": feed.table,
            "format": feed.format,
            "records": feed.records,
            "bytes": feed.bytes,
            "sha256": feed.sha256,
            "url": _feed_url(base, feed),
            "lines_url": f"{_feed_url(base, feed)}/lines" if feed.lines_source else None,
        }
        for feed in state.catalog.feeds.values()
        if all(getattr(feed, attr) == value for attr, value in wanted.items())
    ]
    return await _send_bytes(
        request, _json_bytes({"feeds": feeds}), content_type="application/json"
    )


def _representation(
    request: web.Request, *, size: int, etag: str, mtime: float | None
) -> tuple[int, ByteRange | None, dict[str, str]] | web.Response:
    """Conditional GET and Range: (status, range, headers), or a ready 304 (416 raises)."""
    headers = {"ETag": etag, "Accept-Ranges": "bytes"}
    if mtime is not None:
        headers["Last-Modified"] = http_date(mtime)
    if not_modified(
        if_none_match=request.headers.get("If-None-Match"),
        if_modified_since=request.headers.get("If-Modified-Since"),
        etag=etag,
        mtime=mtime,
    ):
        return web.Response(status=304, headers=headers)
    # RFC 9110 section 14.2: range handling is defined for GET only.
    if request.method != "GET" or not if_range_holds(
        request.headers.get("If-Range"), etag=etag, mtime=mtime
    ):
        return 200, None, headers
    byte_range = parse_range(request.headers.get("Range"), size)
    if byte_range == UNSATISFIABLE:
        raise ApiError(
            416,
            "range_not_satisfiable",
            f"range {request.headers.get('Range')!r} is outside the {size} bytes of the resource",
            {"Content-Range": f"bytes */{size}", **headers},
        )
    if isinstance(byte_range, ByteRange):
        headers["Content-Range"] = byte_range.content_range(size)
        return 206, byte_range, headers
    return 200, None, headers


async def get_feed(request: web.Request) -> web.StreamResponse:
    """``GET|HEAD /v1/feeds/{id}``: the file, with validators and single byte ranges."""
    _check_params(request, set())
    feed = _feed(request)
    chosen = _representation(request, size=feed.bytes, etag=feed.etag, mtime=feed.mtime)
    if isinstance(chosen, web.Response):
        return chosen
    status, byte_range, headers = chosen
    headers["Content-Type"] = _MEDIA_TYPES.get(feed.format, "application/octet-stream")
    start, length = (byte_range.first, byte_range.length) if byte_range else (0, feed.bytes)
    body: _Body = _FileBody(feed, start) if request.method == "GET" else _BytesBody(b"")
    return await _stream(request, status=status, headers=headers, length=length, body=body)


_MEDIA_TYPES: Final = {
    "x12": "application/edi-x12",
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "xml": "application/xml",
    "ndjson": NDJSON,
    "parquet": "application/vnd.apache.parquet",
}


def _negotiate(request: web.Request) -> str:
    fmt = request.query.get("format")
    if fmt is not None:
        if fmt not in ("ndjson", "csv"):
            raise ApiError(400, "invalid_format", f"format must be 'ndjson' or 'csv', got {fmt!r}")
        return fmt
    accept = request.headers.get("Accept", "*/*")
    # Highest q wins; ties keep the client's order. Parameters other than q are ignored.
    ranked: list[tuple[float, int, str]] = []
    for index, item in enumerate(accept.split(",")):
        media, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        ranked.append((-q, index, media.lower()))
    for neg_q, _, media in sorted(ranked):
        if neg_q >= 0:
            continue
        if media in (
            NDJSON,
            "application/ndjson",
            "application/jsonl",
            "application/json",
            "*/*",
            "application/*",
        ):
            return "ndjson"
        if media in (CSV, "text/*"):
            return "csv"
    raise ApiError(
        406, "not_acceptable", f"cannot serve lines as {accept!r}; use {NDJSON} or {CSV}"
    )


async def get_lines(request: web.Request) -> web.StreamResponse:
    """``GET /v1/feeds/{id}/lines?offset=&limit=&format=``: a page of canonical line items."""
    _check_params(request, {"offset", "limit", "format"})
    feed = _feed(request)
    if feed.lines_source is None:
        raise ApiError(
            404, "no_lines", f"feed {feed.id!r} ({feed.format}) has no line items to page"
        )
    offset = _int_param(request, "offset", 0, 0, 2**62)
    limit = _int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    fmt = _negotiate(request)
    frame = await request.app[STATE].lines_frame(feed)
    total = frame.height
    if offset > total:
        raise ApiError(
            400,
            "offset_out_of_range",
            f"offset {offset} is past the end of feed {feed.id!r} ({total} line items)",
            {"X-Total-Count": str(total)},
        )
    page = frame.slice(offset, limit)
    text = page.write_ndjson() if fmt == "ndjson" else safe_frame(page).write_csv()
    headers = {"X-Total-Count": str(total)}
    links = []
    url = request.url.with_query(None)
    if offset + limit < total:
        links.append(
            f'<{url.with_query(offset=offset + limit, limit=limit, format=fmt)}>; rel="next"'
        )
    if offset > 0:
        links.append(
            f"<{url.with_query(offset=max(0, offset - limit), limit=limit, format=fmt)}>; "
            'rel="prev"'
        )
    if links:
        headers["Link"] = ", ".join(links)
    content_type = NDJSON if fmt == "ndjson" else f"{CSV}; charset=utf-8; header=present"
    return await _send_bytes(request, text.encode(), content_type=content_type, headers=headers)


async def get_blob(request: web.Request) -> web.StreamResponse:
    """``GET|HEAD /v1/blob/{nbytes}?seed=&chunk=``: deterministic pseudo-random bytes."""
    _check_params(request, {"seed", "chunk"})
    raw = request.match_info["nbytes"]
    if not _is_decimal(raw) or int(raw) > MAX_BLOB:
        raise ApiError(
            400,
            "invalid_nbytes",
            f"nbytes must be an integer between 0 and {MAX_BLOB}, got {raw!r}",
        )
    size = int(raw)
    seed = _int_param(request, "seed", 0, 0, 2**63 - 1)
    chunk = _int_param(request, "chunk", DEFAULT_CHUNK, 1, MAX_CHUNK)
    etag = f'"blob-v1-{seed}-{size}"'
    chosen = _representation(request, size=size, etag=etag, mtime=None)
    if isinstance(chosen, web.Response):
        return chosen
    status, byte_range, headers = chosen
    headers["Content-Type"] = "application/octet-stream"
    start, length = (byte_range.first, byte_range.length) if byte_range else (0, size)
    return await _stream(
        request,
        status=status,
        headers=headers,
        length=length,
        body=_BlobBody(seed, start),
        chunk=chunk,
    )


async def get_stats(request: web.Request) -> web.Response:
    """``GET /v1/stats``: the accounting as JSON (never subject to knobs)."""
    state = request.app[STATE]
    payload = state.stats.snapshot()
    payload["knobs"] = state.knobs.describe()
    return web.Response(body=_json_bytes(payload), content_type="application/json")


def _check_admin(request: web.Request) -> PortalState:
    state = request.app[STATE]
    given = request.headers.get(ADMIN_HEADER, "")
    if state.admin_secret is None or not hmac.compare_digest(given, state.admin_secret):
        raise ApiError(403, "forbidden", "admin endpoints need the portal's admin secret")
    return state


async def put_knobs(request: web.Request) -> web.Response:
    """``PUT /v1/admin/knobs`` (JSON object of changes): how ``serve_in_process`` sets knobs."""
    state = _check_admin(request)
    try:
        changes = await request.json()
        if not isinstance(changes, dict):
            raise ConfigurationError(
                'expected a JSON object of knob names to values, e.g. {"latency": 0.1}'
            )
        knobs = state.set_knobs(**changes)
    except (ValueError, TypeError) as exc:
        raise ApiError(400, "invalid_knobs", str(exc)) from exc
    return web.Response(body=_json_bytes(knobs.describe()), content_type="application/json")


async def post_reset_stats(request: web.Request) -> web.Response:
    """``POST /v1/admin/reset-stats``."""
    _check_admin(request).stats.reset()
    return web.Response(status=204)


# -- faults -------------------------------------------------------------------------------------


def _bearer(request: web.Request) -> str | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


def _client(request: web.Request) -> str:
    token = _bearer(request)
    if token is not None:
        # A digest, so the token itself is never a dict key that might be printed.
        return "token:" + hashlib.sha256(token.encode()).hexdigest()[:12]
    return f"addr:{request.remote}"


def _reset_connection(request: web.Request) -> None:
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # SO_LINGER with a zero timeout turns close into a TCP RST: a real "connection reset".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _too_many(knobs: PortalKnobs, seconds: int, message: str) -> ApiError:
    # RFC 9110 section 10.2.3: Retry-After is delay-seconds or an HTTP-date.
    retry_after = (
        str(seconds)
        if knobs.retry_after_form == "seconds"
        else http_date(math.ceil(time.time() + seconds))
    )
    return ApiError(429, "rate_limited", message, {"Retry-After": retry_after})


async def _with_faults(request: web.Request, handler: Any, ex: _Exchange) -> web.StreamResponse:
    state = request.app[STATE]
    knobs = state.knobs
    key = f"{request.method} {request.path_qs} {request.headers.get('Range', '')}"
    decision = decide(knobs, key, state.next_attempt(key))
    ex.decision = decision
    if decision.delay > 0:
        state.stats.fault(ex, "latency")
        await asyncio.sleep(decision.delay)
    if knobs.token is not None:
        given = _bearer(request)
        if given is None or not hmac.compare_digest(given.encode(), knobs.token.encode()):
            state.stats.fault(ex, "unauthorized")
            challenge = REALM if given is None else f'{REALM}, error="invalid_token"'
            raise ApiError(
                401,
                "unauthorized",
                "this portal needs 'Authorization: Bearer <token>'"
                + ("" if given is None else "; the token given is not valid"),
                {"WWW-Authenticate": challenge},
            )
    if knobs.rate_limit is not None:
        now = time.monotonic()
        wait = state.bucket(_client(request), now).take(now)
        if wait > 0:
            state.stats.fault(ex, "rate_limited")
            raise _too_many(
                knobs,
                max(1, math.ceil(wait)),
                f"more than {knobs.rate_limit:g} requests/s "
                f"(burst {knobs.bucket_size}); retry later",
            )
    if decision.throttled:
        state.stats.fault(ex, "throttled")
        raise _too_many(knobs, knobs.retry_after, "simulated throttling; retry later")
    if decision.reset and knobs.reset_at == "start":
        state.stats.fault(ex, "reset")
        logger.debug(
            "portal: resetting connection for %s %s (attempt %d)",
            request.method,
            shown_target(request.path, request.query_string),  # no secret query values
            decision.attempt,
        )
        _reset_connection(request)
        # Nothing can be sent any more; aiohttp notices the closed transport and moves on.
        return web.Response(status=500)
    if decision.error_status is not None:
        state.stats.fault(ex, "error")
        raise ApiError(
            decision.error_status,
            "injected_error",
            f"simulated server error (attempt {decision.attempt} of this request)",
        )
    response: web.StreamResponse = await handler(request)
    return response


_KINDS: Final = frozenset({"list", "file", "lines", "blob", "stats", "admin"})


@web.middleware
async def _middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    state = request.app[STATE]
    name = (request.match_info.route.name or "").split("-")[0]
    ex = _Exchange(kind=name if name in _KINDS else "other")
    request[EXCHANGE] = ex
    state.stats.request(ex)
    try:
        if ex.kind in state.knobs.apply_to:
            resp = await _with_faults(request, handler, ex)
        else:
            resp = await handler(request)
    except ApiError as exc:
        resp = error_response(exc.status, exc.code, exc.message, exc.headers)
    except web.HTTPException as exc:  # the router's 404 / 405
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        resp = error_response(
            exc.status,
            _STATUS_CODES.get(exc.status, "http_error"),
            f"{exc.reason}: {request.path}",
            headers,
        )
    except ConnectionError:
        raise  # the client is gone; aiohttp handles that
    except Exception as exc:  # a bug: answer in JSON like every other error, and log it
        logger.exception("portal: internal error on %s %s", request.method, request.path)
        resp = error_response(500, "internal_error", f"{type(exc).__name__}: {exc}")
    if not resp.prepared and "reset" in ex.faults:
        state.stats.status(ex, "reset")  # nothing was sent: there is no status to count
    elif not resp.prepared:
        state.stats.status(ex, resp.status)
        if isinstance(resp, web.Response) and request.method != "HEAD" and resp.body is not None:
            body = resp.body
            state.stats.sent(ex, len(body) if isinstance(body, bytes) else 0)
    return resp


def build_app(state: PortalState) -> web.Application:
    """The portal's aiohttp application over ``state``."""
    app = web.Application(middlewares=[_middleware])
    app[STATE] = state
    app.router.add_get("/v1/feeds", list_feeds, name="list", allow_head=False)
    app.router.add_get("/v1/feeds/{id}", get_feed, name="file")
    app.router.add_get("/v1/feeds/{id}/lines", get_lines, name="lines")
    app.router.add_get("/v1/blob/{nbytes}", get_blob, name="blob")
    app.router.add_get("/v1/stats", get_stats, name="stats", allow_head=False)
    app.router.add_put("/v1/admin/knobs", put_knobs, name="admin-knobs")
    app.router.add_post("/v1/admin/reset-stats", post_reset_stats, name="admin-reset")
    return app
