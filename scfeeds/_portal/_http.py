"""Pure HTTP helpers of the portal: validators, conditional requests and byte ranges (RFC 9110)."""

from __future__ import annotations

import email.utils
import math
from dataclasses import dataclass
from typing import Final


def http_date(timestamp: float) -> str:
    """IMF-fixdate of a POSIX timestamp (RFC 9110 section 5.6.7)."""
    return email.utils.formatdate(math.floor(timestamp), usegmt=True)


def parse_http_date(value: str) -> float | None:
    """POSIX timestamp of an HTTP-date, or None when it is not one."""
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.timestamp()


def _etags(header: str) -> list[str]:
    return [tag.strip() for tag in header.split(",") if tag.strip()]


def _opaque(tag: str) -> str:
    return tag[2:] if tag.startswith("W/") else tag


def none_match(if_none_match: str, etag: str) -> bool:
    """True if ``If-None-Match`` matches ``etag`` (weak comparison, RFC 9110 section 13.1.2)."""
    tags = _etags(if_none_match)
    return "*" in tags or any(_opaque(tag) == _opaque(etag) for tag in tags)


def not_modified(
    *, if_none_match: str | None, if_modified_since: str | None, etag: str, mtime: float | None
) -> bool:
    """Whether a GET/HEAD may be answered 304 (RFC 9110 section 13.2.2 precedence)."""
    if if_none_match is not None:
        return none_match(if_none_match, etag)
    if if_modified_since is not None and mtime is not None:
        since = parse_http_date(if_modified_since)
        return since is not None and math.floor(mtime) <= since
    return False


def if_range_holds(if_range: str | None, *, etag: str, mtime: float | None) -> bool:
    """Whether a Range may be honoured under ``If-Range`` (RFC 9110 section 13.1.5).

    An entity tag must match strongly; a date must equal Last-Modified exactly.
    """
    if if_range is None:
        return True
    value = if_range.strip()
    if value.startswith(('"', "W/")):
        return not value.startswith("W/") and value == etag
    since = parse_http_date(value)
    return since is not None and mtime is not None and since == math.floor(mtime)


@dataclass(frozen=True, slots=True)
class ByteRange:
    """An inclusive satisfiable byte range ``first``..``last``."""

    first: int
    last: int

    @property
    def length(self) -> int:
        return self.last - self.first + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.first}-{self.last}/{size}"


UNSATISFIABLE: Final = "unsatisfiable"


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def parse_range(header: str | None, size: int) -> ByteRange | str | None:
    """Resolve a ``Range`` header against a representation of ``size`` bytes.

    Returns the range, :data:`UNSATISFIABLE` (answer 416), or None when the header is absent,
    malformed, not in bytes, or asks for several ranges: RFC 9110 section 14.2 lets a server
    ignore such a Range and send the whole representation, which is what the portal does.
    """
    if header is None:
        return None
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    spec = spec.strip()
    if "," in spec:
        return None
    first_s, dash, last_s = spec.partition("-")
    first_s, last_s = first_s.strip(), last_s.strip()
    if not dash or not (_digits(first_s) or first_s == "") or not (_digits(last_s) or last_s == ""):
        return None
    if first_s == "":
        if last_s == "":
            return None
        suffix = int(last_s)
        if suffix == 0 or size == 0:
            return UNSATISFIABLE
        return ByteRange(max(0, size - suffix), size - 1)
    first = int(first_s)
    if last_s and int(last_s) < first:
        return None  # syntactically invalid: ignored, per RFC 9110 section 14.1.1
    if first >= size:
        return UNSATISFIABLE
    return ByteRange(first, min(int(last_s), size - 1) if last_s else size - 1)
