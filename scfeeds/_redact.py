"""What counts as a secret on the wire, and how a URL is shown without its secrets.

Shared by the fetch engine (reports, manifests, provenance) and the simulated portal (its
access log); neither imports the other.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

#: Request headers whose values are credentials: never logged or stored.
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key", "x-auth-token"}
)

#: Query parameters whose values are credentials (redacted from reports, never in paths).
SECRET_PARAMS = frozenset(
    {
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "api_key",
        "apikey",
        "key",
        "secret",
        "client_secret",
        "password",
        "passwd",
        "sig",
        "signature",
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
        "auth",
    }
)

#: Key of :func:`redact_url` when the caller gives none: random per process, so a digest
#: cannot be checked against guessed values by anyone who does not hold the process.
_PROCESS_KEY = secrets.token_bytes(32)
#: 12 hex digits (48 bits): two of 50,000 values of one parameter collide with
#: probability ~4e-6, so sources that differ only in a secret stay distinct.
_DIGEST_HEX = 12


def new_key() -> bytes:
    return secrets.token_bytes(32)


def redacted_value(value: str, key: bytes | None = None) -> str:
    """``REDACTED-<keyed digest>``: equal values give equal text, the value is not revealed."""
    mac = hmac.new(key or _PROCESS_KEY, value.encode("utf-8", "surrogatepass"), hashlib.sha256)
    return f"REDACTED-{mac.hexdigest()[:_DIGEST_HEX]}"


def redact_query(query: str, key: bytes | None = None) -> str:
    """A query string with the value of every secret parameter replaced by its digest."""
    if not query:
        return query
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(k.lower() in SECRET_PARAMS for k, _ in pairs):
        return query
    return urlencode(
        [(k, redacted_value(v, key) if k.lower() in SECRET_PARAMS else v) for k, v in pairs]
    )


def redact_url(url: str, *, key: bytes | None = None) -> str:
    """``url`` without user info and with secret query values replaced by keyed digests.

    Two URLs that differ only in a secret (``?key=a`` and ``?key=b``) stay distinct
    (``key=REDACTED-3f9a0c1b7d2e`` and ``key=REDACTED-81c4...``); the digest is an HMAC
    under ``key`` (a random key of this process when ``None``), so it does not reveal the
    value, not even to someone who guesses it.

    Examples
    --------
    >>> redact_url("https://u:p@h/feed?token=abc&n=1").startswith("https://h/feed?token=REDACTED-")
    True
    """
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, redact_query(parts.query, key), ""))
