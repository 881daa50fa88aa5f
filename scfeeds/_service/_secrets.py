"""Supplier credentials of a worker: from its environment or a mounted secrets file.

Tokens never travel in job messages (anyone who can read the stream could read them) and
never reach logs or metrics: :class:`Secrets` has no ``repr`` of its values, and
:class:`RedactingFilter` replaces any token that still finds its way into a log line (inside
an exception message, say) with ``***``.

Sources, later ones winning:

* ``SCFEEDS_TOKEN``: one bearer token for every host.
* ``SCFEEDS_SECRETS_FILE`` (or ``--secrets FILE``): JSON mapping ``host[:port]`` (or ``*``)
  to a token, optionally under a ``"tokens"`` key: a Kubernetes Secret mounted as a file.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from scfeeds.exceptions import ConfigurationError

ENV_TOKEN = "SCFEEDS_TOKEN"
ENV_FILE = "SCFEEDS_SECRETS_FILE"
MASK = "***"


class Secrets:
    """Bearer tokens by ``host[:port]``, with ``*`` as the fallback."""

    def __init__(self, tokens: Mapping[str, str] | None = None) -> None:
        self._tokens = {k.lower(): v for k, v in (tokens or {}).items() if v}

    @classmethod
    def load(
        cls, *, path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> Secrets:
        """Tokens from ``SCFEEDS_TOKEN`` and the file ``path`` (or ``SCFEEDS_SECRETS_FILE``)."""
        env = os.environ if environ is None else environ
        tokens: dict[str, str] = {}
        if env.get(ENV_TOKEN):
            tokens["*"] = env[ENV_TOKEN]
        file = path or env.get(ENV_FILE)
        if file:
            p = Path(file)
            try:
                data = json.loads(p.read_text(encoding="utf-8"))
            except OSError as exc:
                raise ConfigurationError(f"cannot read secrets file {p}: {exc.strerror}") from None
            except ValueError as exc:
                # the message names the position only: a JSON error could quote a token
                raise ConfigurationError(
                    f"secrets file {p} is not valid JSON (line {getattr(exc, 'lineno', '?')})"
                ) from None
            if isinstance(data, dict) and isinstance(data.get("tokens"), dict):
                data = data["tokens"]
            if not isinstance(data, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in data.items()
            ):
                raise ConfigurationError(
                    f'secrets file {p} must map "host[:port]" or "*" to a token string, '
                    'e.g. {"tokens": {"portal.example.com": "..."}}'
                )
            tokens.update(data)
        return cls(tokens)

    def __bool__(self) -> bool:
        return bool(self._tokens)

    def __repr__(self) -> str:
        return f"Secrets(hosts={sorted(self._tokens)})"

    def token_for(self, url: str) -> str | None:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        port = parts.port
        for key in (f"{host}:{port}" if port else None, host, "*"):
            if key and key in self._tokens:
                return self._tokens[key]
        return None

    def headers_for(self, url: str) -> dict[str, str] | None:
        token = self.token_for(url)
        return {"Authorization": f"Bearer {token}"} if token else None

    def redact(self, text: str) -> str:
        """``text`` with every known token replaced by ``***``."""
        for token in self._tokens.values():
            if len(token) >= 4 and token in text:
                text = text.replace(token, MASK)
        return text


class RedactingFilter(logging.Filter):
    """A handler filter that masks the worker's tokens in every formatted log message."""

    def __init__(self, secrets: Secrets) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.secrets.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = self.secrets.redact(text)
        return True
