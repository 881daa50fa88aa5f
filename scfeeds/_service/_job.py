"""Job messages: what travels through the Redis Stream, and the checks on the way in.

A job is a *pointer*, never a payload: the sources to ingest (URLs or rows of a portal
listing), where to commit them, how many times it has been tried, and the W3C trace context
of whoever enqueued it. File bodies never enter the broker, and neither do credentials: bearer
tokens live in the worker's environment (see ``_secrets``). A message that breaks these rules
is rejected when read (dead-lettered with the reason), not run.

Wire format: one stream entry with the fields ``id`` (the job id, for humans and ``XRANGE``)
and ``job`` (UTF-8 JSON, schema version ``v``).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from scfeeds.exceptions import ConfigurationError

WIRE_VERSION = 1

#: The listing columns a job may carry (``GET /v1/feeds`` rows). Anything else (a body, a
#: header, a token) is dropped on the way in so it can never reach the broker.
LISTING_KEYS = frozenset(
    {"id", "url", "format", "table", "supplier_id", "records", "bytes", "sha256", "lines_url"}
)
#: A job names its sources; a message this large is carrying something it should not.
MAX_MESSAGE_BYTES = 1 << 20
#: Query parameters whose values are secrets; a source URL carrying one is refused, because
#: the URL would sit in Redis in clear (tokens belong in the worker's secrets).
SECRET_PARAMS = frozenset(
    {
        "token",
        "access_token",
        "api_key",
        "apikey",
        "key",
        "secret",
        "signature",
        "sig",
        "password",
        "auth",
    }
)

#: A job's source: a feed URL or a portal listing row (only its listing keys are kept).
Source = str | Mapping[str, object]

_JOB_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")


class JobError(ConfigurationError):
    """A job message is malformed or breaks a rule; the message says which."""


def _check_url(url: object, where: str) -> str:
    if not isinstance(url, str):
        raise JobError(f"{where}: url must be a string, got {type(url).__name__}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise JobError(f"{where}: source must be an http(s) URL, got {url[:80]!r}")
    if "@" in parts.netloc:
        raise JobError(f"{where}: credentials in the URL are not allowed (use worker secrets)")
    for pair in parts.query.split("&"):
        name = pair.split("=", 1)[0].lower()
        if name in SECRET_PARAMS:
            raise JobError(
                f"{where}: query parameter {name!r} looks like a secret; give tokens to the "
                "worker (SCFEEDS_TOKEN or a secrets file), never in the job"
            )
    return url


def clean_sources(sources: Iterable[object]) -> tuple[Source, ...]:
    """Validate job sources: http(s) URLs or listing rows; keep only the listing's keys.

    Raises
    ------
    JobError
        A source is not a URL or a mapping with a ``url``, or carries credentials.
    """
    out: list[Source] = []
    for i, s in enumerate(sources):
        where = f"sources[{i}]"
        if isinstance(s, str):
            out.append(_check_url(s, where))
        elif isinstance(s, Mapping):
            if "url" not in s:
                raise JobError(f"{where}: a listing row needs a 'url' key")
            _check_url(s["url"], where)
            out.append({k: v for k, v in s.items() if k in LISTING_KEYS})
        else:
            raise JobError(
                f"{where}: expected a URL or a listing row (mapping), got {type(s).__name__}"
            )
    if not out:
        raise JobError("a job needs at least one source")
    return tuple(out)


@dataclass(frozen=True, kw_only=True)
class Job:
    """One unit of work: ingest ``sources`` into ``lake``.

    Parameters
    ----------
    id
        Stable across retries (a requeued job keeps its id and gets ``attempt + 1``).
    sources
        http(s) URLs or portal listing rows (``url``, ``format``, ``table``, ``supplier_id``...).
    lake
        Lake folder; ``None`` means the worker's ``--lake``. A worker refuses a lake outside
        its own lake root.
    attempt
        1 for a fresh job; raised when a worker requeues it after a failure. Redeliveries of
        the same message (a worker died) are counted by Redis and added on top.
    trace
        W3C trace-context carrier (``traceparent``, ``tracestate``) of the enqueuer; the
        worker's job span is its child.
    last_error
        Why the previous attempt failed (secret-free, short), for the dead-letter stream.
    """

    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    sources: tuple[Source, ...]
    lake: str | None = None
    attempt: int = 1
    trace: Mapping[str, str] = field(default_factory=dict)
    last_error: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", clean_sources(self.sources))
        if not isinstance(self.attempt, int) or self.attempt < 1:
            raise JobError(f"attempt must be an int >= 1, got {self.attempt!r}")
        # the id names the job's landing folder: no separators, no dot names, bounded
        if not isinstance(self.id, str) or not _JOB_ID.fullmatch(self.id):
            raise JobError(
                f"job id must be 1-128 characters of A-Z a-z 0-9 _ . - not starting with a "
                f"dot, got {str(self.id)[:40]!r}"
            )

    def retry(self, *, sources: Iterable[Source] | None = None, error: str | None = None) -> Job:
        """The same job for another attempt (optionally only some of its sources)."""
        return replace(
            self,
            sources=tuple(sources) if sources is not None else self.sources,
            attempt=self.attempt + 1,
            last_error=error,
        )

    def to_fields(self) -> dict[str, str]:
        """The stream entry's fields."""
        body = json.dumps(
            {
                "v": WIRE_VERSION,
                "id": self.id,
                "sources": [s if isinstance(s, str) else dict(s) for s in self.sources],
                "lake": self.lake,
                "attempt": self.attempt,
                "trace": dict(self.trace),
                "last_error": self.last_error,
            },
            separators=(",", ":"),
            sort_keys=True,
        )
        if len(body) > MAX_MESSAGE_BYTES:
            raise JobError(
                f"job message is {len(body):,} bytes (limit {MAX_MESSAGE_BYTES:,}): jobs carry "
                "pointers, not data; split the sources over several jobs"
            )
        return {"id": self.id, "job": body}

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> Job:
        """Parse a stream entry; raises :class:`JobError` naming the broken rule."""
        raw = fields.get("job")
        if raw is None:
            raise JobError("stream entry has no 'job' field")
        if len(raw) > MAX_MESSAGE_BYTES:
            raise JobError(f"job message is {len(raw):,} bytes (limit {MAX_MESSAGE_BYTES:,})")
        try:
            d = json.loads(raw)
        except ValueError as exc:
            raise JobError(f"job field is not JSON: {exc}") from None
        if not isinstance(d, dict):
            raise JobError("job field must be a JSON object")
        if d.get("v") != WIRE_VERSION:
            raise JobError(f"unsupported job message version {d.get('v')!r}")
        sources = d.get("sources")
        if not isinstance(sources, list):
            raise JobError("job 'sources' must be a list")
        lake = d.get("lake")
        if lake is not None and not isinstance(lake, str):
            raise JobError("job 'lake' must be a string or null")
        trace = d.get("trace") or {}
        if not isinstance(trace, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in trace.items()
        ):
            raise JobError("job 'trace' must map strings to strings")
        last_error = d.get("last_error")
        job_id = d.get("id")
        if not isinstance(job_id, str):
            raise JobError("job 'id' must be a string")
        return cls(
            id=job_id,
            sources=tuple(sources),
            lake=lake,
            attempt=d.get("attempt", 1),
            trace={k: v for k, v in trace.items() if k in ("traceparent", "tracestate")},
            last_error=last_error if isinstance(last_error, str) else None,
        )


def source_url(source: Source) -> str:
    return source if isinstance(source, str) else str(source["url"])


def split_jobs(sources: Iterable[object], *, per_job: int, lake: str | None = None) -> list[Job]:
    """Cut a list of sources into jobs of at most ``per_job`` sources each."""
    if per_job < 1:
        raise ConfigurationError(f"per_job must be >= 1, got {per_job}")
    items = clean_sources(sources)
    return [Job(sources=items[i : i + per_job], lake=lake) for i in range(0, len(items), per_job)]


def describe(value: object) -> str:
    """A short, secret-free description of an exception for logs and the dead-letter stream."""
    text = f"{type(value).__name__}: {value}" if isinstance(value, BaseException) else str(value)
    return text[:500]
