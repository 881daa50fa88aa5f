"""The portal's access log: one line per request, with no secret in it.

aiohttp's default line holds the request target and the Referer as sent, so a
``?access_token=`` (or ``key``, ``sig`` ...) in either would be written in clear. This logger
writes the same Apache-style line with secret query values replaced by keyed digests (equal
values still look equal, so a replayed link can be spotted) and never writes a header that
carries credentials.
"""

from __future__ import annotations

import datetime
from urllib.parse import urlsplit, urlunsplit

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from scfeeds._redact import redact_query


def shown_target(path: str, query: str) -> str:
    shown = redact_query(query)
    return f"{path}?{shown}" if shown else path


def _shown_referer(value: str | None) -> str:
    if not value:
        return "-"
    parts = urlsplit(value)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, redact_query(parts.query), ""))


class RedactingAccessLogger(AbstractAccessLogger):
    """``%a %t "%r" %s %b "%{Referer}i" "%{User-Agent}i"`` with secrets redacted."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        start = datetime.datetime.now(datetime.UTC).astimezone() - datetime.timedelta(seconds=time)
        version = f"HTTP/{request.version.major}.{request.version.minor}"
        target = shown_target(request.path, request.query_string)
        self.logger.info(
            '%s [%s] "%s %s %s" %s %s "%s" "%s"',
            request.remote or "-",
            start.strftime("%d/%b/%Y:%H:%M:%S %z"),
            request.method,
            target,
            version,
            response.status,
            response.body_length,
            _shown_referer(request.headers.get("Referer")),
            request.headers.get("User-Agent", "-"),
        )
