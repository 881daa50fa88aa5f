"""Sources -> work items: chunk planning, safe landing paths, secret-free URLs."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import AsyncIterable, Callable, Iterable, Iterator, Mapping, Sized
from dataclasses import dataclass
from typing import TypeAlias, cast
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import polars as pl

from scfeeds._redact import SECRET_PARAMS as SECRET_PARAMS
from scfeeds._redact import redact_url as redact_url
from scfeeds.exceptions import ConfigurationError

_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")
_MAX_SEGMENT = 120


@dataclass(frozen=True, kw_only=True)
class ChunkRequest:
    """One page of a paged feed, as planned by :func:`plan_chunks`.

    ``url`` is the page URL (``offset`` and ``limit`` in its query), ``path`` where it lands
    relative to ``dest``.
    """

    url: str
    offset: int
    limit: int
    path: str


@dataclass(frozen=True, kw_only=True)
class Item:
    """A unit of work for a worker. ``url`` may carry secrets; ``shown_url`` never does.
    ``source`` is the caller's own object, handed back with the outcome."""

    index: int
    source: Source
    url: str
    shown_url: str
    key: str
    path: str | None
    expected_sha256: str | None = None
    expected_bytes: int | None = None
    #: The unkeyed identity earlier versions gave a URL with a secret (manifest migration).
    legacy_key: str | None = None


def url_key(url: str, key: bytes | None = None) -> str:
    """A stable, secret-free identity for ``url`` (names partial files and manifest rows).

    A URL with a secret query value is keyed by an HMAC under ``key`` (the landing folder's
    redaction key): a plain hash of it would let anyone holding the manifest confirm a
    guessed secret. Other URLs keep their plain sha256.
    """
    if key is not None and has_secret(url):
        return hmac.new(key, url.encode(), hashlib.sha256).hexdigest()[:32]
    return hashlib.sha256(url.encode()).hexdigest()[:32]


def has_secret(url: str) -> bool:
    """Does ``url`` carry user info or a secret query parameter?"""
    parts = urlsplit(url)
    if "@" in parts.netloc:
        return True
    return any(
        k.lower() in SECRET_PARAMS for k, _ in parse_qsl(parts.query, keep_blank_values=True)
    )


def safe_segment(text: str) -> str:
    """One path component that cannot escape its directory or hide itself.

    Percent-escapes are decoded first (so ``%2e%2e`` is seen as ``..``), then anything
    outside ``[A-Za-z0-9._=+-]`` (slashes, backslashes, NUL, colons) becomes ``_`` and leading
    dots are replaced, which rules out ``.``, ``..`` and hidden names.
    """
    name = _UNSAFE.sub("_", unquote(text))
    stripped = name.lstrip(".")
    if stripped != name:
        name = "_" + stripped
    if not name:
        name = "_"
    if len(name) > _MAX_SEGMENT:
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        name = f"{name[: _MAX_SEGMENT - 17]}-{digest}"
    return name


def safe_relpath(path: str) -> str:
    """A user- or server-supplied relative path made safe segment by segment."""
    segments = [s for s in re.split(r"[/\\]+", path) if s]
    if not segments:
        raise ConfigurationError(f"landing path {path!r} is empty")
    return "/".join(safe_segment(s) for s in segments)


def path_for_url(url: str) -> str:
    """The landing path derived from a URL: its path segments, plus its non-secret query."""
    parts = urlsplit(url)
    segments = [safe_segment(s) for s in parts.path.split("/") if s] or ["index"]
    if parts.query:
        pairs = [
            (k, v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
            if k.lower() not in SECRET_PARAMS
        ]
        if pairs:
            segments[-1] = safe_segment(segments[-1] + "__" + urlencode(pairs).replace("&", "_"))
    return "/".join(segments)


def filename_from_disposition(filename: str) -> str:
    """The last component of a ``Content-Disposition`` filename, made safe (RFC 6266 §4.3:
    recipients must not trust path information in it)."""
    base = re.split(r"[/\\]+", filename.strip())[-1]
    return safe_segment(base)


def plan_chunks(feed_url: str, *, total: int, chunk_size: int) -> list[ChunkRequest]:
    """Split a paged feed into page requests.

    Parameters
    ----------
    feed_url
        The paged endpoint, e.g. the portal's ``lines_url``
        (``http://host/v1/feeds/{id}/lines``); existing query parameters (``format=csv``)
        are kept and ``offset``/``limit`` are set on each page.
    total
        Number of records in the feed (the portal's ``records`` or ``X-Total-Count``).
    chunk_size
        Records per page; the last page may be shorter.

    Returns
    -------
    list[ChunkRequest]
        ``ceil(total / chunk_size)`` requests, in order, landing at
        ``<url path>/<offset, 12 digits>.<format>``.

    Examples
    --------
    >>> [c.url for c in plan_chunks("http://h/v1/feeds/a/lines", total=5, chunk_size=2)]
    ['http://h/v1/feeds/a/lines?offset=0&limit=2', 'http://h/v1/feeds/a/lines?offset=2&limit=2', 'http://h/v1/feeds/a/lines?offset=4&limit=1']
    """
    if not isinstance(total, int) or isinstance(total, bool) or total < 0:
        raise ConfigurationError(f"total must be an int >= 0, got {total!r}")
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ConfigurationError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    parts = urlsplit(feed_url)
    if parts.scheme not in ("http", "https"):
        raise ConfigurationError(f"feed_url must be an http(s) URL, got {redact_url(feed_url)!r}")
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k not in ("offset", "limit")
    ]
    fmt = dict(query).get("format", "ndjson")
    base = "/".join(safe_segment(s) for s in parts.path.split("/") if s) or "index"
    chunks = []
    for offset in range(0, total, chunk_size):
        limit = min(chunk_size, total - offset)
        q = urlencode([*query, ("offset", str(offset)), ("limit", str(limit))])
        url = urlunsplit((parts.scheme, parts.netloc, parts.path, q, ""))
        path = f"{base}/{offset:012d}.{safe_segment(fmt)}"
        chunks.append(ChunkRequest(url=url, offset=offset, limit=limit, path=path))
    return chunks


#: A portal listing row (``GET /v1/feeds``): needs ``url``; ``path``, ``sha256`` and
#: ``bytes`` are used when present.
ListingRow: TypeAlias = Mapping[str, object]

#: One source: a URL, a page of a feed from :func:`plan_chunks`, or a listing row.
Source: TypeAlias = str | ChunkRequest | ListingRow

#: What ``fetch`` accepts: one source, a portal listing (``{"feeds": [...]}``, a listing row
#: mapping too), an (async) iterable of sources consumed lazily, or a polars DataFrame with a
#: ``url`` column (its rows are listing rows).
Sources: TypeAlias = Source | Iterable[Source] | AsyncIterable[Source] | pl.DataFrame


def _item(index: int, source: object, key: bytes | Callable[[], bytes] | None) -> Item:
    if isinstance(source, str):
        url, path, sha, size = source, None, None, None
    elif isinstance(source, ChunkRequest):
        url, path, sha, size = source.url, source.path, None, None
    elif isinstance(source, Mapping):
        if "url" not in source or not isinstance(source["url"], str):
            raise ConfigurationError(
                f"source #{index} has no 'url' string (keys: {sorted(source)}); a portal "
                "listing row needs at least 'url'"
            )
        url = source["url"]
        path = source.get("path")
        sha = source.get("sha256")
        size = source.get("bytes")
    else:
        raise ConfigurationError(
            f"source #{index} is a {type(source).__name__}; expected a URL string, a "
            "ChunkRequest from plan_chunks(), or a listing row (dict with 'url')"
        )
    if urlsplit(url).scheme not in ("http", "https"):
        raise ConfigurationError(f"source #{index} is not an http(s) URL: {redact_url(url)!r}")
    # the key only matters to a URL with a secret: it is asked for (and so made) only then
    secret = has_secret(url)
    k = (key() if callable(key) else key) if secret else None
    return Item(
        index=index,
        source=cast(Source, source),  # checked above: a str, ChunkRequest or Mapping
        url=url,
        shown_url=redact_url(url, key=k),
        key=url_key(url, k),
        legacy_key=url_key(url) if k is not None else None,
        path=None if path is None else safe_relpath(str(path)),
        expected_sha256=str(sha).lower() if sha else None,
        expected_bytes=int(size) if size is not None else None,
    )


def iter_sources(
    sources: object,  # Sources, checked here: a caller may pass anything
) -> tuple[Iterator[Source] | AsyncIterable[Source], int | None]:
    """Normalise what ``fetch`` accepts into an iterator of raw sources plus its length.

    Accepts a URL string, an iterable of sources, a portal listing (``{"feeds": [...]}``
    as ``GET /v1/feeds`` returns, a list of row dicts) or a polars DataFrame with a ``url``
    column. Iterables are consumed lazily, so a generator of a million URLs is fine.
    """
    if isinstance(sources, str | ChunkRequest):
        return iter([sources]), 1
    if isinstance(sources, pl.DataFrame):
        if "url" not in sources.columns:
            raise ConfigurationError(
                f"a DataFrame of sources needs a 'url' column; it has {sources.columns}"
            )
        return sources.iter_rows(named=True), sources.height
    if isinstance(sources, Mapping):
        if "feeds" in sources:
            return iter_sources(sources["feeds"])
        return iter([sources]), 1
    if isinstance(sources, AsyncIterable):
        return sources, None
    if isinstance(sources, Iterable):
        total = len(sources) if isinstance(sources, Sized) else None
        return iter(sources), total
    raise ConfigurationError(
        f"sources must be URLs, ChunkRequests, a portal listing or a DataFrame with a 'url' "
        f"column; got {type(sources).__name__}"
    )


def make_item(
    index: int, source: object, *, key: bytes | Callable[[], bytes] | None = None
) -> Item:
    """Validate one raw source and turn it into an :class:`Item` (``key``: of the redaction
    digests in ``shown_url``, or a function that gives it, called only for a URL with a
    secret)."""
    return _item(index, source, key)
