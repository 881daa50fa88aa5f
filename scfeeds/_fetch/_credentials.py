"""Credentials scoped to origins, and redirects that respect the scope.

An origin is ``scheme://host:port`` (RFC 6454): ``http://h`` and ``https://h``, or
``h:8080`` and ``h:8081``, are different origins. Headers given for one origin are sent to
that origin only: not to another host a redirect points at, not to a feed URL a portal
listing names on another server.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from scfeeds.exceptions import ConfigurationError

_DEFAULT_PORTS = {"http": 80, "https": 443}
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: As aiohttp's and browsers' default; a loop fails after this many hops.
MAX_REDIRECTS = 10


def origin_of(url: str) -> str | None:
    """``scheme://host:port`` of an http(s) URL (default port made explicit), else ``None``."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port or _DEFAULT_PORTS[scheme]}"


@dataclass(frozen=True, init=False)
class Credentials:
    """Request headers by origin: each origin gets its own, and nothing else does.

    Parameters
    ----------
    origins
        ``{"https://portal.example.com": {"Authorization": "Bearer ..."}, ...}``: the key is
        an origin (``scheme://host[:port]``; a path is ignored), the value the headers sent
        with every request to it, including requests a redirect leads to. A plain mapping
        of this shape is accepted wherever a ``Credentials`` is.

    The ``repr`` names origins and header names, never values.

    Examples
    --------
    >>> creds = Credentials({"https://portal.example.com": {"Authorization": "Bearer t"}})
    >>> creds.headers_for("https://portal.example.com/v1/feeds")
    {'Authorization': 'Bearer t'}
    >>> creds.headers_for("https://cdn.example.net/feed.x12")
    {}
    """

    by_origin: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]

    def __init__(self, origins: Mapping[str, Mapping[str, str]] | None = None) -> None:
        merged: dict[str, dict[str, str]] = {}
        for where, headers in (origins or {}).items():
            origin = origin_of(where) if isinstance(where, str) else None
            if origin is None:
                raise ConfigurationError(
                    f"credentials key {where!r} is not an origin: write it as "
                    "scheme://host[:port], e.g. "
                    '{"https://portal.example.com": {"Authorization": "Bearer ..."}}'
                )
            if not isinstance(headers, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
            ):
                raise ConfigurationError(
                    f"credentials for {origin} must map header names to strings"
                )
            merged.setdefault(origin, {}).update(headers)
        object.__setattr__(
            self,
            "by_origin",
            tuple(sorted((o, tuple(h.items())) for o, h in merged.items() if h)),
        )

    @classmethod
    def coerce(cls, value: Credentials | Mapping[str, Mapping[str, str]] | None) -> Credentials:
        if value is None:
            return cls()
        if isinstance(value, Credentials):
            return value
        if isinstance(value, Mapping):
            return cls(value)
        raise ConfigurationError(
            f"credentials must be a Credentials or a mapping of origin -> headers, got "
            f"{type(value).__name__}"
        )

    def headers_for(self, url: str) -> dict[str, str]:
        """The headers to send with a request to ``url`` (empty for any other origin)."""
        origin = origin_of(url)
        for o, headers in self.by_origin:
            if o == origin:
                return dict(headers)
        return {}

    def with_headers(
        self, headers: Mapping[str, str] | None, urls: Iterable[object]
    ) -> Credentials:
        """These credentials plus ``headers`` for the origin of each of ``urls`` (http(s)
        URLs; anything else is skipped). Explicit per-origin values win."""
        if not headers:
            return self
        origins: dict[str, dict[str, str]] = {}
        for url in urls:
            origin = origin_of(url) if isinstance(url, str) else None
            if origin is not None:
                origins[origin] = dict(headers)
        for o, own in self.by_origin:
            origins.setdefault(o, {}).update(own)
        return Credentials(origins)

    def __bool__(self) -> bool:
        return bool(self.by_origin)

    def __repr__(self) -> str:
        shown = ", ".join(f"{o}: {sorted(k for k, _ in h)}" for o, h in self.by_origin)
        return f"Credentials({{{shown}}})"


def redirect_target(url: str, location: str | None) -> str | None:
    """The absolute http(s) URL a redirect points at, or ``None`` if it points elsewhere."""
    if not location:
        return None
    target = urljoin(url, location.strip())
    return target if origin_of(target) is not None else None


def request_headers(
    url: str,
    *,
    first_origin: str | None,
    caller: Mapping[str, str],
    credentials: Credentials,
    protocol: Mapping[str, str],
) -> dict[str, str]:
    """Headers for one hop of a request that started at ``first_origin``.

    ``caller`` headers (``headers=``) go to the origin the source was given for only;
    ``credentials`` to their own origins wherever a hop lands; ``protocol`` headers (Range,
    validators, Accept-Encoding) on every hop.
    """
    out = dict(protocol)
    if origin_of(url) == first_origin:
        out.update(caller)
    out.update(credentials.headers_for(url))
    return out
