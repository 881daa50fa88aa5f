"""A durable job queue on a Redis Stream with a consumer group.

Why a stream and not a list: a consumer group keeps a *pending entries list* (PEL) of
messages delivered but not acknowledged, with the consumer that holds each, how long it has
been idle, and how many times it was delivered. That gives at-least-once delivery for free:

* ``read``: ``XREADGROUP ... >`` hands new jobs to this consumer (they enter the PEL).
* ``ack``: ``XACK`` + ``XDEL`` in one ``MULTI``, *after* the job's lake commits exist, so the
  stream holds exactly the outstanding jobs (``XINFO GROUPS`` ``lag`` stays exact because only
  entries before the group's last-delivered id are deleted).
* ``touch``: a heartbeat (``XCLAIM ... JUSTID`` of our own pending ids) that resets their idle
  time, so a slow job is not mistaken for a dead worker's.
* ``reclaim``: ``XAUTOCLAIM`` takes over entries idle longer than the timeout (their worker
  died, or released them on drain); Redis counts each delivery, which is how poison jobs are
  recognised.
* ``release``: on drain, jobs not finished are made immediately reclaimable (``XCLAIM ...
  IDLE``) without acknowledging them.
* ``requeue`` / ``dead_letter``: ``XADD`` the next attempt (or to the dead-letter stream) and
  ``XACK`` the old entry in one ``MULTI``, so a job is never lost or doubled between the two.

The broker only sees job specs (pointers), never file bodies or credentials.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from scfeeds._service._job import Job, JobError

DEFAULT_STREAM = "scfeeds:jobs"
DEFAULT_GROUP = "scfeeds-workers"


@dataclass(frozen=True, kw_only=True)
class Delivery:
    """One message handed to this consumer. ``job`` is ``None`` when it could not be parsed
    (``error`` says why); ``deliveries`` is Redis' delivery count (1 on first delivery)."""

    msg_id: str
    fields: dict[str, str]
    job: Job | None
    error: JobError | None
    deliveries: int

    @property
    def attempt(self) -> int:
        """Attempts so far including this one: requeues (in the message) plus redeliveries."""
        base = self.job.attempt if self.job is not None else 1
        return base + self.deliveries - 1


@dataclass(frozen=True, kw_only=True)
class QueueStats:
    """Queue depth as Redis sees it (``XINFO GROUPS`` / ``XLEN``)."""

    length: int  # entries in the stream: undelivered + pending (acked ones are deleted)
    lag: int | None  # entries not yet delivered to the group (None: Redis cannot tell)
    pending: int  # delivered, not yet acknowledged (in some worker's hands, or orphaned)
    dead: int  # entries in the dead-letter stream
    consumers: int


def _parse(msg_id: str, fields: dict[str, str], deliveries: int) -> Delivery:
    try:
        job: Job | None = Job.from_fields(fields)
        error: JobError | None = None
    except JobError as exc:
        job, error = None, exc
    except (TypeError, ValueError) as exc:  # a field of the wrong type deep inside
        job, error = None, JobError(f"malformed job message: {exc}")
    return Delivery(msg_id=msg_id, fields=fields, job=job, error=error, deliveries=deliveries)


class JobQueue:
    """The job stream, its consumer group and its dead-letter stream.

    Parameters
    ----------
    url
        ``redis://host:port/db`` (``rediss://`` for TLS; a password belongs in the URL given by
        the environment, and is never logged).
    stream, group
        Stream key and consumer-group name.
    dead_letter
        Stream that receives poison jobs (default ``<stream>:dead``).

    Examples
    --------
    >>> q = JobQueue("redis://127.0.0.1:6379/0")  # doctest: +SKIP
    >>> await q.ensure_group(); await q.enqueue([Job(sources=[url])])  # doctest: +SKIP
    """

    def __init__(
        self,
        url: str,
        *,
        stream: str = DEFAULT_STREAM,
        group: str = DEFAULT_GROUP,
        dead_letter: str | None = None,
    ) -> None:
        import redis.asyncio as aioredis

        self.url = url
        self.stream = stream
        self.group = group
        self.dead_letter_stream = dead_letter or f"{stream}:dead"
        # typed as Any: redis-py's command methods are annotated `T | Awaitable[T]` for the
        # sync and async clients at once, which mypy cannot await.
        self._r: Any = aioredis.Redis.from_url(
            url, decode_responses=True, socket_connect_timeout=5, health_check_interval=30
        )
        self._cursor = "0-0"

    async def aclose(self) -> None:
        await self._r.aclose()

    async def __aenter__(self) -> JobQueue:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def ping(self) -> bool:
        return bool(await self._r.ping())

    async def ensure_group(self) -> None:
        """Create the stream and the consumer group if missing (id ``0``: jobs enqueued before
        the first worker started are delivered too)."""
        from redis.exceptions import ResponseError

        try:
            await self._r.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def enqueue(self, jobs: Iterable[Job]) -> list[str]:
        """Append jobs to the stream; returns their stream ids."""
        payloads = [j.to_fields() for j in jobs]
        async with self._r.pipeline(transaction=False) as pipe:
            for fields in payloads:
                pipe.xadd(self.stream, fields)
            ids: list[str] = await pipe.execute()
        return ids

    async def read(self, consumer: str, *, count: int, block: float) -> list[Delivery]:
        """New jobs for ``consumer``, waiting up to ``block`` seconds for the first."""
        resp = await self._r.xreadgroup(
            self.group,
            consumer,
            {self.stream: ">"},
            count=count,
            block=max(1, int(block * 1000)),
        )
        out: list[Delivery] = []
        for _stream, entries in _stream_entries(resp):
            for msg_id, fields in entries:
                if fields is None:  # deleted while pending (RESP2 quirk)
                    continue
                out.append(_parse(msg_id, fields, 1))
        return out

    async def reclaim(self, consumer: str, *, min_idle: float, count: int) -> list[Delivery]:
        """Take over entries idle for ``min_idle`` seconds (a dead or draining worker's).

        Walks the PEL with ``XAUTOCLAIM``'s cursor across calls; the delivery count of each
        claimed entry comes from ``XPENDING`` (``XAUTOCLAIM`` has just incremented it).
        """
        resp = await self._r.xautoclaim(
            self.stream,
            self.group,
            consumer,
            min_idle_time=int(min_idle * 1000),
            start_id=self._cursor,
            count=count,
        )
        self._cursor = resp[0] or "0-0"
        claimed = [(m, f) for m, f in resp[1] if f is not None]
        if not claimed:
            return []
        async with self._r.pipeline(transaction=False) as pipe:
            for msg_id, _ in claimed:
                pipe.xpending_range(self.stream, self.group, msg_id, msg_id, 1)
            pendings = await pipe.execute()
        out = []
        for (msg_id, fields), pending in zip(claimed, pendings, strict=True):
            deliveries = int(pending[0]["times_delivered"]) if pending else 1
            out.append(_parse(msg_id, fields, deliveries))
        return out

    async def ack(self, delivery: Delivery) -> None:
        """Acknowledge (and delete) a finished job."""
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, self.group, delivery.msg_id)
            pipe.xdel(self.stream, delivery.msg_id)
            await pipe.execute()

    async def requeue(self, delivery: Delivery, job: Job) -> str:
        """Atomically enqueue ``job`` (the next attempt) and acknowledge ``delivery``."""
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.xadd(self.stream, job.to_fields())
            pipe.xack(self.stream, self.group, delivery.msg_id)
            pipe.xdel(self.stream, delivery.msg_id)
            res = await pipe.execute()
        return str(res[0])

    async def dead_letter(
        self, delivery: Delivery, *, reason: str, consumer: str, job: Job | None = None
    ) -> str:
        """Atomically move a job to the dead-letter stream and acknowledge it."""
        fields = dict(delivery.fields)
        if job is not None:
            fields.update(job.to_fields())
        fields.update(
            {
                "reason": reason[:1000],
                "deliveries": str(delivery.deliveries),
                "attempt": str(delivery.attempt),
                "consumer": consumer,
                "dead_at": f"{time.time():.3f}",
                "origin_id": delivery.msg_id,
            }
        )
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.xadd(self.dead_letter_stream, fields, maxlen=100_000, approximate=True)
            pipe.xack(self.stream, self.group, delivery.msg_id)
            pipe.xdel(self.stream, delivery.msg_id)
            res = await pipe.execute()
        return str(res[0])

    async def touch(self, consumer: str, msg_ids: Sequence[str]) -> list[str]:
        """Heartbeat: reset the idle time of those ``msg_ids`` this consumer still holds.

        Only ids still owned by ``consumer`` are claimed, so a job another worker has already
        reclaimed is not pulled back. Returns the ids touched. ``JUSTID`` leaves the delivery
        count alone.
        """
        if not msg_ids:
            return []
        wanted = set(msg_ids)
        lo, hi = min(msg_ids, key=_id_key), max(msg_ids, key=_id_key)
        pending = await self._r.xpending_range(
            self.stream, self.group, lo, hi, len(wanted) + 100, consumername=consumer
        )
        mine = [p["message_id"] for p in pending if p["message_id"] in wanted]
        if mine:
            await self._r.xclaim(self.stream, self.group, consumer, 0, mine, justid=True)
        return mine

    async def release(self, consumer: str, msg_ids: Sequence[str], *, idle: float) -> None:
        """Give jobs back without acknowledging: mark them idle for ``idle`` seconds so the
        next ``reclaim`` of any worker takes them at once (Redis has no NACK)."""
        if msg_ids:
            await self._r.xclaim(
                self.stream,
                self.group,
                consumer,
                0,
                list(msg_ids),
                idle=int(idle * 1000) + 1,
                justid=True,
            )

    async def stats(self) -> QueueStats:
        """Depth and lag of the group, pending count, dead letters."""
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.exists(self.stream)
            pipe.xlen(self.stream)
            pipe.xlen(self.dead_letter_stream)
            exists, length, dead = await pipe.execute()
        if not exists:
            return QueueStats(length=0, lag=0, pending=0, dead=int(dead), consumers=0)
        groups = await self._r.xinfo_groups(self.stream)
        for g in groups:
            if g.get("name") == self.group:
                lag = g.get("lag")
                return QueueStats(
                    length=int(length),
                    lag=None if lag is None else int(lag),
                    pending=int(g.get("pending", 0)),
                    dead=int(dead),
                    consumers=int(g.get("consumers", 0)),
                )
        return QueueStats(
            length=int(length), lag=int(length), pending=0, dead=int(dead), consumers=0
        )

    async def prune_consumers(self, *, keep: str, idle: float) -> list[str]:
        """Forget consumers (workers long gone) with nothing pending and idle for ``idle`` s."""
        removed = []
        for c in await self._r.xinfo_consumers(self.stream, self.group):
            name = c.get("name")
            if name != keep and int(c.get("pending", 0)) == 0 and int(c["idle"]) > idle * 1000:
                await self._r.xgroup_delconsumer(self.stream, self.group, name)
                removed.append(name)
        return removed

    async def replay_dead(self, count: int = 100) -> list[str]:
        """Move up to ``count`` dead letters back to the job stream as fresh jobs (attempt 1,
        same job id); returns their job ids. Entries that do not parse stay where they are."""
        replayed = []
        for entry_id, fields in await self.dead_letters(count):
            try:
                job = Job.from_fields(fields)
            except JobError:
                continue
            fresh = Job(id=job.id, sources=job.sources, lake=job.lake, trace=job.trace)
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.xadd(self.stream, fresh.to_fields())
                pipe.xdel(self.dead_letter_stream, entry_id)
                await pipe.execute()
            replayed.append(job.id)
        return replayed

    async def dead_letters(self, count: int = 100) -> list[tuple[str, dict[str, str]]]:
        """The oldest ``count`` entries of the dead-letter stream."""
        entries: list[tuple[str, dict[str, str]]] = await self._r.xrange(
            self.dead_letter_stream, count=count
        )
        return entries


def _id_key(msg_id: str) -> tuple[int, int]:
    ms, _, seq = msg_id.partition("-")
    return int(ms), int(seq or 0)


def _stream_entries(resp: Any) -> list[tuple[str, list[tuple[str, dict[str, str] | None]]]]:
    # RESP2 shape (the client's default protocol): [[stream, [(id, fields), ...]], ...]
    return [(s, entries) for s, entries in resp or []]
