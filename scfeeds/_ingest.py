"""Ingest: fetch -> parse (off the loop) -> validate -> commit to the Delta lake.

Network I/O and CPU-bound parsing are decoupled. The fetch engine lands raw bytes in
``lake/_landing`` (resumable, hashed, atomic); landed items go through a *bounded* queue to a
batcher that groups them into micro-batches (by format and table; bounded by documents, bytes
and a latency budget) for a fixed set of workers. When every worker is busy, the queue fills
and fetching waits instead of buffering (backpressure), so memory is bounded by ``workers`` ×
one micro-batch's frames, not by the feed. Parsing runs in a thread pool for the polars
readers (which release the GIL) and in a process pool for cXML (its rows are built in Python,
which would hold the GIL).

A micro-batch is committed in one Delta transaction per table plus one ledger transaction
(see ``_lake``). Each document keeps an id derived from its content: ingesting the same
sources twice, or resuming an interrupted run, gives the same lake with no duplicate rows, and
a document already in the ledger is not parsed again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hashlib
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

import polars as pl

from scfeeds._children import init_parse_worker, start_forkserver
from scfeeds._config import Limits, Retry
from scfeeds._distributed import MANIFEST_COLUMNS, client_of, shard_key
from scfeeds._lake import (
    BATCH_COL,
    DocumentCommit,
    batch_id,
    commit_micro_batch,
    is_remote,
    lake_uri,
    ledgered,
    scan_lake,
)
from scfeeds._parse import FORMATS, Format, ParsedBatch, guess_format, parse_batch
from scfeeds._parse import Job as ParseJob
from scfeeds.exceptions import ConfigurationError, sole_error
from scfeeds.schemas import ERRORS as ERROR_SCHEMA
from scfeeds.schemas import TableName, schema

if TYPE_CHECKING:  # the parse workers import this module: keep aiohttp out of them
    from distributed import Client

    from scfeeds._fetch._credentials import Credentials
    from scfeeds._fetch._progress import ProgressArg, ProgressSink
    from scfeeds._fetch._report import FetchOutcome, FetchReport, ProgressEvent

BATCH_SCHEMA: dict[str, pl.DataType] = {
    "url": pl.String(),
    "path": pl.String(),
    "format": pl.String(),
    "table": pl.String(),
    "sha256": pl.String(),
    "batch": pl.String(),
    "status": pl.String(),  # committed | already_committed | fetch_failed
    "rows": pl.Int64(),
    "quarantined": pl.Int64(),
    "errors": pl.Int64(),
    "parse_seconds": pl.Float64(),
    "error": pl.String(),  # why a source did not reach the lake (fetch failures)
}


@dataclass(frozen=True, kw_only=True)
class Source:
    """One thing to ingest: where it is, and what it holds when the name does not say."""

    url: str
    format: Format | None = None
    table: TableName | None = None
    supplier_id: str | None = None
    path: str | None = None  # landing path (relative), e.g. a ChunkRequest's or the listing's
    sha256: str | None = None  # expected content hash (a listing's), verified by fetch


@dataclass(frozen=True, kw_only=True)
class IngestReport:
    """What an ingest did. ``batches`` has one row per source; the lake holds the rows."""

    lake: Path | str
    batches: pl.DataFrame
    fetch: FetchReport | None  # of the fetch engine (None when every source was a local file)
    elapsed: float
    fetch_seconds: float
    parse_seconds: float
    rows: Mapping[str, int] = field(default_factory=dict)
    storage_options: Mapping[str, str] | None = field(default=None, repr=False)

    @property
    def committed(self) -> int:
        return int(self.batches.filter(pl.col("status") == "committed").height)

    @property
    def quarantined(self) -> int:
        return int(self.batches["quarantined"].sum())

    @property
    def n_errors(self) -> int:
        return int(self.batches["errors"].sum())

    def errors(self) -> pl.LazyFrame:
        """Parse errors of the whole lake (file, position, rule, message)."""
        return scan_lake(self.lake, "po_lines", kind="errors", storage_options=self.storage_options)

    def quarantine(self, table: TableName) -> pl.LazyFrame:
        """Rows of ``table`` that broke a validation rule, with the rule and a message."""
        return scan_lake(self.lake, table, kind="quarantine", storage_options=self.storage_options)

    def summary_line(self) -> str:
        rows = ", ".join(f"{t} {n:,}" for t, n in sorted(self.rows.items())) or "no rows"
        failed = self.batches.filter(pl.col("status") == "fetch_failed").height
        return (
            f"ingested {self.batches.height} sources in {self.elapsed:.1f} s: {rows}; "
            f"{self.quarantined:,} quarantined, {self.n_errors:,} parse errors, "
            f"{failed} failed to fetch"
        )

    def __repr__(self) -> str:
        return f"IngestReport({self.summary_line()})"

    def _repr_html_(self) -> str:
        from html import escape

        rows = "".join(
            f"<tr><td>{escape(t)}</td><td style='text-align:right'>{n:,}</td></tr>"
            for t, n in sorted(self.rows.items())
        )
        return (
            f"<div><b>scfeeds ingest</b>: {escape(self.summary_line())}"
            f"<table><tr><th>table</th><th>rows</th></tr>{rows}</table></div>"
        )


def _as_sources(sources: IngestSources) -> list[Source]:
    many: Iterable[object]
    if isinstance(sources, str | os.PathLike | Source):
        many = [sources]
    elif isinstance(sources, pl.DataFrame):
        many = sources.to_dicts()
    else:
        many = sources
    out: list[Source] = []
    for s in many:
        if isinstance(s, Source):
            out.append(s)
        elif isinstance(s, str | os.PathLike):
            out.append(Source(url=str(s)))
        elif isinstance(s, Mapping):
            if "url" not in s:
                raise ConfigurationError(f"source mapping needs a 'url' key: {dict(s)!r}")
            fmt = s.get("format")
            out.append(
                Source(
                    url=str(s["url"]),
                    format=fmt if fmt in FORMATS else None,
                    table=s.get("table"),
                    supplier_id=s.get("supplier_id"),
                    path=s.get("path"),
                    sha256=s.get("sha256"),
                )
            )
        else:
            raise ConfigurationError(
                f"cannot ingest {s!r}: pass URLs, paths, Source objects, or a portal listing"
            )
    return out


def _portal_listing_url(url: str) -> str | None:
    """``GET /v1/feeds`` of a portal given by its root URL (or the listing URL itself)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return None
    path = parts.path.rstrip("/")
    if path == "":
        return f"{parts.scheme}://{parts.netloc}/v1/feeds"
    if path.endswith("/v1/feeds"):
        return f"{parts.scheme}://{parts.netloc}{path}" + (f"?{parts.query}" if parts.query else "")
    return None


async def _expand_portals(sources: list[Source], credentials: Credentials) -> list[Source]:
    """Replace a portal root URL by the feeds its ``GET /v1/feeds`` lists.

    The listing names URLs; it does not decide where credentials go: each feed gets the
    credentials of its own origin only (see :func:`_scoped_credentials`).
    """
    from scfeeds._fetch._engine import get_json
    from scfeeds._redact import redact_url

    out: list[Source] = []
    for s in sources:
        listing_url = None if (s.format or s.table) else _portal_listing_url(s.url)
        if listing_url is None:
            out.append(s)
            continue
        status, data = await get_json(listing_url, credentials=credentials)
        if status != 200 or not isinstance(data, dict) or "feeds" not in data:
            raise ConfigurationError(
                f"{redact_url(listing_url)} answered {status} without a feed listing: pass "
                "feed URLs, or the root URL of an scfeeds portal (with its token in headers=)"
            )
        out.extend(_as_sources(data["feeds"]))
    return out


def _scoped_credentials(
    given: list[Source],
    headers: Mapping[str, str] | None,
    credentials: Credentials | Mapping[str, Mapping[str, str]] | None,
) -> Credentials:
    """``headers=`` become credentials of the origins of the sources they were given with
    (a portal root's origin, a feed URL's origin), before any listing is read."""
    from scfeeds._fetch._credentials import Credentials

    return Credentials.coerce(credentials).with_headers(headers, [s.url for s in given])


def _is_remote(url: str) -> bool:
    return url.startswith(("http://", "https://"))


Job = tuple[str, str, Source]  # landed path, sha256, source
Landed = tuple[str, str, Source, int]  # a job and the landed file's size in bytes


def _parse_many(jobs: list[Job]) -> ParsedBatch:
    """Canonical frames and error rows of many landed documents, in one reader call.

    One :func:`~scfeeds._parse.parse_batch` call reads them all (X12 interchanges tokenized
    together, cXML typed in one query, CSV exports of one header in one read), so the fixed
    cost of a reader is paid per micro-batch, not per document. Rows and error rows carry
    their document's ``source``; the sources of one call are distinct (``_process_many`` puts
    a repeated URL in a later round), so ``source`` tells the documents apart.
    """
    return parse_batch(
        [ParseJob(path, source=src.url, fmt=src.format, table=src.table) for path, _, src in jobs]
    )


def _doc_key(sha256: str, src: Source) -> str:
    return batch_id(sha256, salt=f"{src.format}:{src.table}")


def _process_many(
    jobs: list[Job], lake: str, storage_options: Mapping[str, str] | None = None
) -> list[_Outcome]:
    """Parse, validate and commit one micro-batch of landed documents (a worker's call).

    Documents already in the lake's ledger (same content, same format and table) are skipped
    without parsing; the rest are parsed together, validated once per table and committed
    in one Delta transaction per table plus one ledger transaction (``_lake``). Rules never
    cross documents (the duplicate-key rule includes ``source``), so the rows are those of a
    per-document run.
    """
    t0 = time.perf_counter()
    keys = [_doc_key(sha, src) for _, sha, src in jobs]
    done = ledgered(lake, keys, storage_options=storage_options)
    out: list[_Outcome | None] = [None] * len(jobs)
    first: dict[str, int] = {}
    rounds: list[list[int]] = []  # each round: documents with distinct sources
    seen: dict[str, int] = {}  # source -> rounds it is in (a source's n-th copy: round n)
    for i, ((_, _, src), key) in enumerate(zip(jobs, keys, strict=True)):
        if key in done or key in first:  # in the lake, or the same bytes twice in this batch
            out[i] = _skipped(key)
            continue
        first[key] = i
        n = seen.get(src.url, 0)
        seen[src.url] = n + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(i)
    for r in rounds:
        results = _commit_round([jobs[i] for i in r], [keys[i] for i in r], lake, storage_options)
        for i, res in zip(r, results, strict=True):
            out[i] = res
    per_doc = (time.perf_counter() - t0) / max(1, len(jobs))
    final: list[_Outcome] = []
    for item in out:
        assert item is not None
        if item.status != "already_committed":
            item.parse_seconds = per_doc
        final.append(item)
    return final


def _skipped(key: str) -> _Outcome:
    return _Outcome(batch=key, status="already_committed")


def _commit_round(
    jobs: list[Job], keys: list[str], lake: str, storage_options: Mapping[str, str] | None
) -> list[_Outcome]:
    from scfeeds._validate import validate

    parsed = _parse_many(jobs)
    by_source = {src.url: key for (_, _, src), key in zip(jobs, keys, strict=True)}
    tag = pl.col("source").replace_strict(by_source, default=None, return_dtype=pl.String())
    good: dict[TableName, pl.DataFrame] = {}
    bad: dict[TableName, pl.DataFrame] = {}
    counts: dict[str, dict[str, int]] = {k: {} for k in keys}
    quarantined: dict[str, int] = dict.fromkeys(keys, 0)
    # the batch's frames as read (no split per document): rules never cross documents
    for table in sorted(parsed.tables):
        ok, failed = validate(parsed.tables[table], table)
        good[table] = ok.with_columns(tag.alias(BATCH_COL))
        # the lake's quarantine table has one schema: canonical dtypes (a value a reader
        # could not type is a parse error, not a quarantined row)
        bad[table] = failed.with_columns(
            *(pl.col(c).cast(t, strict=False) for c, t in schema(table).items()),
            tag.alias(BATCH_COL),
        )
        for key, n in good[table].group_by(BATCH_COL).len().iter_rows():
            counts[key][table] = int(n)
        for key, n in bad[table].group_by(BATCH_COL).len().iter_rows():
            quarantined[key] += int(n)
    errors = (
        parsed.errors.select(list(ERROR_SCHEMA))
        .with_columns(tag.alias(BATCH_COL))
        .filter(pl.col(BATCH_COL).is_not_null())
    )
    n_errors = dict(errors.group_by(BATCH_COL).len().iter_rows())
    documents = [
        DocumentCommit(
            batch=key,
            source=src.url,
            sha256=sha,
            format=src.format,
            table=src.table,
            rows=sum(counts[key].values()),
            quarantined=quarantined[key],
            errors=int(n_errors.get(key, 0)),
        )
        for (_, sha, src), key in zip(jobs, keys, strict=True)
    ]
    mine = commit_micro_batch(
        lake,
        documents=documents,
        tables=good,
        quarantine=bad,
        errors=errors if errors.height else None,
        storage_options=storage_options,
    )
    return [
        _Outcome(
            batch=d.batch,
            status="committed",
            rows=d.rows,
            rows_by_table=counts[d.batch],
            quarantined=d.quarantined,
            errors=d.errors,
        )
        if d.batch in mine
        else _skipped(d.batch)  # another writer committed the same bytes first
        for d in documents
    ]


@functools.cache
def _processes_are_safe() -> bool:
    """Will a spawned/forkserver child leave the main program alone?

    Such children import the main module again (as ``__mp_main__``); a script without an
    ``if __name__ == "__main__":`` guard would run again in every worker. Interactive sessions
    and notebooks have no main file; scripts are checked for the guard.
    """
    import re
    import sys

    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if not main_file:
        return True
    try:
        with open(main_file, encoding="utf-8", errors="replace") as fh:
            text = fh.read(1 << 20)
    except OSError:
        return False
    return re.search(r"""__name__\s*==\s*['"]__main__['"]""", text) is not None


_HASH_RUN: Final = 64


def _sha256_files(paths: list[str]) -> list[tuple[str, int]]:
    return [_sha256_file(p) for p in paths]


def _sha256_file(path: str) -> tuple[str, int]:
    """Content hash and size of a local file."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


IngestSources: TypeAlias = (
    str
    | os.PathLike[str]
    | Source
    | pl.DataFrame
    | Iterable[str | os.PathLike[str] | Source | Mapping[str, object]]
)
"""What ``ingest`` takes: a URL or path, a :class:`Source`, a portal listing (its ``feeds``
list, or a DataFrame), or any iterable of these."""


# long: the docstring documents every parameter; the work is in the stage functions below
async def ingest(
    sources: IngestSources,
    lake: str | os.PathLike[str],
    *,
    limits: Limits | int | None = None,
    retry: Retry | int | bool | None = None,
    headers: Mapping[str, str] | None = None,
    credentials: Credentials | Mapping[str, Mapping[str, str]] | None = None,
    workers: int | None = None,
    progress: ProgressArg = "auto",
    landing: str | os.PathLike[str] | None = None,
    pool: Literal["auto", "threads", "processes"] = "auto",
    batch_docs: int = 2000,
    batch_bytes: int = 8 << 20,
    batch_seconds: float = 10.0,
    parse_group: int | None = None,
    cluster: Client | str | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> IngestReport:
    """Fetch sources, parse them off the event loop, validate, and commit them to a lake.

    Parameters
    ----------
    sources
        URLs, local paths, :class:`Source` objects, a portal listing (the ``feeds`` list of
        ``GET /v1/feeds`` or a DataFrame with ``url`` and optionally ``format``, ``table``,
        ``supplier_id``, ``sha256`` columns), or the root URL of an scfeeds portal (its
        listing is fetched). Local paths are parsed in place, not fetched.
    lake
        The Delta Lake: a folder (created if missing) or an object-store URI such as
        ``s3://bucket/prefix`` (credentials from ``storage_options`` or the usual environment
        variables). Raw bytes land in ``lake/_landing`` (for an object-store lake: a folder
        under the system's temporary folder) unless ``landing`` says otherwise. Any number of
        ingests may write one lake at once.
    limits, retry
        Passed to :func:`scfeeds.fetch` (``limits=16`` means at most 16 requests at once;
        ``None``: the defaults of :class:`~scfeeds.Limits` and :class:`~scfeeds.Retry`).
    progress
        One progress stream for the whole ingest, as for :func:`scfeeds.fetch`: ``"auto"``
        (the default: the notebook widget in Jupyter, bars on a terminal, one log line per
        stage at the end otherwise), ``None``/``False``, a callable taking
        :class:`~scfeeds.ProgressEvent`, or an object with ``update(event)`` and
        ``close(event)``. Events of ``stage="fetch"`` count documents landing (downloaded, or
        for local files read and hashed) and their bytes; events of ``stage="parse"`` count
        documents parsed, validated and committed (``succeeded``), already in the lake
        (``unchanged``), and their bytes. ``close`` is called once, at the end.
    headers
        Sent to the origins (scheme, host, port) of the ``sources`` as given: to a portal
        root's own origin, and to the feeds of its listing on that origin, but never to a
        feed the listing places on another origin, nor through a redirect to one.
    credentials
        Headers per origin for several servers, :class:`~scfeeds.Credentials` or
        ``{"https://host[:port]": {"Authorization": "Bearer ..."}}``; each goes to its own
        origin only.
    workers
        Micro-batches parsed and committed at once (default: the number of CPUs). When all
        are busy, landed documents wait in a bounded queue and fetching waits (backpressure).
    batch_docs, batch_bytes, batch_seconds
        Micro-batches: landed documents are grouped by table (formats mixed), up to
        ``batch_docs`` documents or ``batch_bytes`` bytes; a group is started at the latest
        ``batch_seconds`` after its first document landed when a worker is free (while every
        worker is busy it keeps growing to its bounds: fewer, larger lake files). The default
        budget of 10 s keeps a feed arriving at network speed to a few lake files per table
        (about one per 1,000 documents from a portal at 50 ms) while its rows still reach the
        lake within seconds; the last group is committed as soon as the sources are done. Each
        micro-batch is parsed, validated once per table and committed in one Delta
        transaction per table plus one ledger transaction; a document is still its own unit
        of idempotency (its content hash is in the ledger).
    parse_group
        Older name of ``batch_docs`` (used when given).
    storage_options
        Object-store options for delta-rs (``AWS_ENDPOINT_URL``, ``AWS_REGION``, keys ...).
        Never logged or shown in the report.
    cluster
        A Dask ``distributed.Client`` (or a scheduler address): shard the sources by supplier
        / host and run each shard's pipeline on a worker (``pip install 'scfeeds[dask]'``).
        The lake must be one the workers reach: an object-store URI, or a folder they
        share. ``None``: this process only, and dask is never imported.
    pool
        Where cXML is parsed: ``"processes"`` (a process pool, true parallelism),
        ``"threads"`` (cheaper for a handful of small files), or ``"auto"``: processes when
        that is safe, i.e. when the main program will not run again in each child (a
        notebook, the ``scfeeds`` command, or a script with an
        ``if __name__ == "__main__":`` guard), threads otherwise. The polars readers always
        run in threads.

    Returns
    -------
    IngestReport
        One row per source in ``batches``; :func:`scfeeds.scan_lake` reads the result.

    Examples
    --------
    >>> report = scfeeds.run(scfeeds.ingest(listing, "lake", limits=32))  # doctest: +SKIP
    >>> scfeeds.scan_lake("lake", "invoice_lines").collect()  # doctest: +SKIP
    """
    options = _Options(
        limits=limits,
        retry=retry,
        workers=max(1, workers or (os.cpu_count() or 2)),
        batch_docs=max(1, batch_docs if parse_group is None else parse_group),
        batch_bytes=batch_bytes,
        batch_seconds=batch_seconds,
        storage_options=storage_options,
    )
    given = _as_sources(sources)
    scoped = _scoped_credentials(given, headers, credentials)
    items = await _expand_portals(given, scoped)
    if cluster is not None:
        return await _ingest_on_cluster(
            items,
            lake,
            cluster=cluster,
            limits=options.limits,
            retry=options.retry,
            credentials=scoped,
            workers=options.workers,
            batch_docs=options.batch_docs,
            batch_bytes=options.batch_bytes,
            batch_seconds=options.batch_seconds,
            storage_options=options.storage_options,
        )
    run = _start(items, lake, landing, pool, scoped, options, progress)
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_land(run))
            tg.create_task(_batch(run))
        run.progress.finish(ok=True)
    except BaseExceptionGroup as group:
        run.progress.finish(ok=False)
        raise sole_error(group) from None
    except BaseException:
        run.progress.finish(ok=False)
        raise
    finally:
        run.shutdown()
    return _report(run)


@dataclass(frozen=True, kw_only=True)
class _Options:
    """The knobs of one ingest, checked once."""

    limits: Limits | int | None
    retry: Retry | int | bool | None
    workers: int
    batch_docs: int
    batch_bytes: int
    batch_seconds: float
    storage_options: Mapping[str, str] | None


@dataclass(eq=False)
class _Run:
    """The state of one ingest, shared by its stages (landing, batching, the report)."""

    root: Path | str
    landing: Path
    local: list[Source]
    remote: list[Source]
    credentials: Credentials
    options: _Options
    use_processes: bool
    progress: _Progress
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Landed | None]
    threads: concurrent.futures.ThreadPoolExecutor
    busy: asyncio.Semaphore
    procs: concurrent.futures.ProcessPoolExecutor | None = None
    report: _Tally = field(default_factory=lambda: _Tally())
    fetch_report: FetchReport | None = None
    fetch_seconds: float = 0.0
    started_at: float = field(default_factory=time.perf_counter)

    def process_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        if self.procs is None:
            # forkserver: never fork a process that runs polars' and aiohttp's threads.
            # Its children never die of the process group's SIGTERM/SIGINT: we drain.
            start_forkserver()
            self.procs = concurrent.futures.ProcessPoolExecutor(
                self.options.workers,
                mp_context=multiprocessing.get_context("forkserver"),
                initializer=init_parse_worker,
            )
        return self.procs

    def shutdown(self) -> None:
        self.threads.shutdown(wait=True, cancel_futures=True)
        if self.procs is not None:
            self.procs.shutdown(wait=True, cancel_futures=True)


def _start(
    items: list[Source],
    lake: str | os.PathLike[str],
    landing: str | os.PathLike[str] | None,
    pool: Literal["auto", "threads", "processes"],
    credentials: Credentials,
    options: _Options,
    progress: ProgressArg,
) -> _Run:
    """First stage: the lake folder, the landing folder, the pools and the progress stream."""
    from scfeeds._fetch._progress import make_sink

    root: Path | str = lake_uri(lake) if is_remote(lake) else Path(lake)
    if isinstance(root, Path):
        root.mkdir(parents=True, exist_ok=True)
    local = [s for s in items if not _is_remote(s.url)]
    remote = [s for s in items if _is_remote(s.url)]
    n = options.workers
    return _Run(
        root=root,
        landing=_landing_dir(lake, landing),
        local=local,
        remote=remote,
        credentials=credentials,
        options=options,
        use_processes=pool == "processes" or (pool == "auto" and _processes_are_safe()),
        progress=_Progress(make_sink(progress, description="ingest"), len(local), len(remote), n),
        loop=asyncio.get_running_loop(),
        queue=asyncio.Queue(maxsize=2 * n),
        threads=concurrent.futures.ThreadPoolExecutor(n, thread_name_prefix="scfeeds-parse"),
        busy=asyncio.Semaphore(n),
    )


async def _land(run: _Run) -> None:
    """Landing stage: local files hashed in place, remote ones fetched; each landed document
    goes to the bounded queue (a full queue makes fetching wait), then the end mark."""
    await _land_local(run)
    if run.remote:
        await _fetch_remote(run)
    run.progress.landed_all()
    await run.queue.put(None)


async def _land_local(run: _Run) -> None:
    # Hashed a run of files per executor call (not the parse pool): one thread hop per
    # file cost about as much as hashing a small document.
    for i in range(0, len(run.local), _HASH_RUN):
        batch = [(str(Path(s.url)), s) for s in run.local[i : i + _HASH_RUN]]
        hashed = await run.loop.run_in_executor(None, _sha256_files, [p for p, _ in batch])
        for (path, s), (sha, size) in zip(batch, hashed, strict=True):
            run.progress.landed_local(size)
            await run.queue.put((path, sha, s, size))


async def _fetch_remote(run: _Run) -> None:
    from scfeeds._fetch import fetch

    t0 = time.perf_counter()
    run.fetch_report = await fetch(
        [
            {"url": s.url}
            | ({"path": s.path} if s.path else {})
            | ({"sha256": s.sha256} if s.sha256 else {})
            for s in run.remote
        ],
        run.landing,
        limits=run.options.limits,
        retry=run.options.retry,
        credentials=run.credentials,
        progress=run.progress.fetch_stage(),
        on_item=lambda row: _landed(run, row),
    )
    run.fetch_seconds += time.perf_counter() - t0


async def _landed(run: _Run, row: FetchOutcome) -> None:
    """Called by each fetch worker as its item lands; awaiting a full queue holds the worker,
    so fetching waits when parsing lags (backpressure, item by item). The outcome carries its
    source's position: two URLs that differ only in a secret are two sources, and provenance
    is the redacted URL, not the secret."""
    src = replace(run.remote[row.index], url=row.url)
    if row.status in ("ok", "unchanged") and row.path and row.sha256:
        path = row.path
        if not os.path.isabs(path):
            path = str(run.landing / path)
        size = row.bytes if row.bytes is not None else await asyncio.to_thread(_size, path)
        await run.queue.put((path, row.sha256, src, size))
        return
    if row.status == "interrupted":
        return  # the run is being cancelled; the next one resumes this source
    run.progress.fetch_failed()
    run.report.add(
        src.url,
        None,
        src,
        None,
        _Outcome(batch=None, status="fetch_failed", errors=1, error=row.error),
    )


async def _batch(run: _Run) -> None:
    """Batching stage: group landed documents into micro-batches (by table; bounded by
    documents, bytes and a latency budget) and start each on a worker."""
    batcher = _Batcher(run)
    async with asyncio.TaskGroup() as tasks:
        batcher.tasks = tasks
        while True:
            await batcher.flush_due()
            try:
                job = await batcher.next_job()
            except TimeoutError:
                continue
            if job is None:
                await batcher.flush_all()
                return
            await batcher.add(job)


@dataclass(eq=False)
class _Batcher:
    """Open groups of the batching stage and the rules that close them."""

    run: _Run
    groups: dict[TableName | None, _Group] = field(default_factory=dict)
    tasks: asyncio.TaskGroup | None = None
    local_left: int = -1  # local files not yet grouped (they are all there: no latency)

    def __post_init__(self) -> None:
        self.local_left = len(self.run.local)

    def _free_worker(self) -> bool:
        return not self.run.busy.locked()

    async def flush_due(self) -> None:
        # A group past its latency budget starts when a worker is free; while every worker
        # is busy it keeps growing (up to its bounds), and local files (no latency to hide)
        # fill groups to their bounds: the lake gets few, large files.
        now = self.run.loop.time()
        while self._free_worker() and not self.local_left:
            due = [k for k, g in self.groups.items() if g.deadline <= now]
            if not due:
                return
            await self.flush(max(due, key=lambda k: len(self.groups[k].jobs)))

    async def next_job(self) -> Landed | None:
        deadlines = [g.deadline for g in self.groups.values()]
        if not deadlines or self.local_left:  # nothing to start early (more files come)
            return await self.run.queue.get()
        if not self._free_worker():  # look again shortly: a worker may free up
            return await asyncio.wait_for(self.run.queue.get(), 0.05)
        timeout = max(0.0, min(deadlines) - self.run.loop.time())
        return await asyncio.wait_for(self.run.queue.get(), timeout)

    async def add(self, job: Landed) -> None:
        path, sha, src, size = job
        if not _is_remote(src.url):
            self.local_left -= 1
        fmt = src.format or guess_format(src.url) or guess_format(path)
        src = Source(url=src.url, format=fmt, table=src.table, supplier_id=src.supplier_id)
        # one micro-batch per table whatever the formats: parse_batch reads each format in
        # one call, and the lake gets one data file per table and batch
        grp = self.groups.get(src.table)
        if grp is None:
            deadline = self.run.loop.time() + self.run.options.batch_seconds
            grp = self.groups[src.table] = _Group(deadline=deadline)
        grp.jobs.append((path, sha, src))
        grp.size += size
        if len(grp.jobs) >= self.run.options.batch_docs or grp.size >= self.run.options.batch_bytes:
            await self.flush(src.table)

    async def flush_all(self) -> None:
        for key in sorted(self.groups, key=lambda k: -len(self.groups[k].jobs)):
            await self.flush(key)

    async def flush(self, key: TableName | None) -> None:
        grp = self.groups.pop(key)
        await self.run.busy.acquire()  # all workers busy: stop reading, the queue fills up
        # cXML goes to the process pool where safe, and the rest of its micro-batch with it
        # (one reader call, one commit)
        xml = any(job[2].format == "xml" for job in grp.jobs)
        assert self.tasks is not None
        self.tasks.create_task(_run_batch(self.run, self.run.use_processes and xml, grp))


async def _run_batch(run: _Run, in_process: bool, grp: _Group) -> None:
    """Parse, validate and commit one micro-batch on a worker; tally its documents."""
    try:
        results = await run.loop.run_in_executor(
            run.process_pool() if in_process else run.threads,
            _process_many,
            grp.jobs,
            str(run.root),
            dict(run.options.storage_options) if run.options.storage_options else None,
        )
    finally:
        run.busy.release()
    for (path, sha, src), out in zip(grp.jobs, results, strict=True):
        run.report.add(src.url, path, src, sha, out)
    run.progress.parsed(results, grp.size)


def _report(run: _Run) -> IngestReport:
    """Last stage: the report of what the run did."""
    return IngestReport(
        lake=run.root,
        batches=run.report.frame(),
        fetch=run.fetch_report,
        elapsed=time.perf_counter() - run.started_at,
        fetch_seconds=run.fetch_seconds,
        parse_seconds=run.report.parse_seconds,
        rows=dict(run.report.rows_by_table),
        storage_options=run.options.storage_options,
    )


@dataclass(slots=True)
class _Outcome:
    """What became of one document of a micro-batch (a worker's answer, picklable)."""

    batch: str | None
    status: Literal["committed", "already_committed", "fetch_failed"]
    rows: int = 0
    rows_by_table: dict[str, int] = field(default_factory=dict)
    quarantined: int = 0
    errors: int = 0
    parse_seconds: float = 0.0
    error: str | None = None


_TALLY_CHUNK: Final = 4096


@dataclass(eq=False)
class _Tally:
    """The report's rows, one per source, kept as compact frames (a few bytes per document,
    not a dict each) so that a long run's memory does not grow with its documents."""

    rows_by_table: dict[str, int] = field(default_factory=dict)
    parse_seconds: float = 0.0
    pending: list[tuple[object, ...]] = field(default_factory=list)
    chunks: list[pl.DataFrame] = field(default_factory=list)

    def add(self, url: str, path: str | None, src: Source, sha: str | None, out: _Outcome) -> None:
        for table, n in out.rows_by_table.items():
            self.rows_by_table[table] = self.rows_by_table.get(table, 0) + n
        self.parse_seconds += out.parse_seconds
        self.pending.append(
            (
                url,
                path,
                src.format,
                src.table,
                sha,
                out.batch,
                out.status,
                out.rows,
                out.quarantined,
                out.errors,
                out.parse_seconds,
                out.error,
            )
        )
        if len(self.pending) >= _TALLY_CHUNK:
            self._seal()

    def _seal(self) -> None:
        if self.pending:
            self.chunks.append(pl.DataFrame(self.pending, schema=BATCH_SCHEMA, orient="row"))
            self.pending = []

    def frame(self) -> pl.DataFrame:
        self._seal()
        if not self.chunks:
            return pl.DataFrame(schema=BATCH_SCHEMA)
        return pl.concat(self.chunks, rechunk=True).sort("url")


_EMIT_EVERY: Final = 0.25  # seconds between two progress events of one stage


class _Progress:
    """One progress stream for a whole ingest: ``fetch`` events (documents landing: fetched,
    or local files read and hashed) and ``parse`` events (documents committed), documents
    and bytes for both, into one sink that is closed once at the end."""

    def __init__(self, sink: ProgressSink | None, n_local: int, n_remote: int, workers: int):
        self.sink = sink
        self.n_local = n_local
        self.n_remote = n_remote
        self.workers = workers
        self.t0 = time.perf_counter()
        self.local_done = 0
        self.local_bytes = 0
        self.remote: ProgressEvent | None = None
        self.failed = 0  # sources that did not land
        self.done = 0
        self.committed = 0
        self.already = 0
        self.bytes = 0
        self.last_emit = {"fetch": -math.inf, "parse": -math.inf}

    # -- fetch stage ---------------------------------------------------------------------

    def landed_local(self, size: int) -> None:
        self.local_done += 1
        self.local_bytes += size
        self._emit("fetch", self.fetch_event, final=False)

    def fetch_failed(self) -> None:
        self.failed += 1

    def fetch_stage(self) -> ProgressSink | None:
        """The sink handed to the fetch engine: its events, plus the local files, reach the
        ingest's sink as ``fetch`` events; its ``close`` is not the end of the ingest."""
        from scfeeds._fetch._progress import StageSink

        if self.sink is None:
            return None
        return StageSink(self.sink, self._remote_event)

    def _remote_event(self, event: ProgressEvent) -> ProgressEvent:
        self.remote = event
        return self.fetch_event()

    def landed_all(self) -> None:
        if not self.n_remote:  # else the fetch engine sent its final event
            self._emit("fetch", self.fetch_event, final=True)

    def fetch_event(self) -> ProgressEvent:
        from scfeeds._fetch._report import ProgressEvent

        r = self.remote
        elapsed = time.perf_counter() - self.t0
        n, b = self.local_done, self.local_bytes
        total = None if r is not None and r.total is None else self.n_local + self.n_remote
        byte_sum = b + (r.bytes if r is not None else 0)
        present = b + (r.bytes_present if r is not None else 0)
        if r is None:
            finished = n == self.n_local and not self.n_remote
            known = b if finished else None
        else:
            finished = r.finished and n == self.n_local
            known = None if r.bytes_total is None else b + r.bytes_total
        return ProgressEvent(
            stage="fetch",
            total=total,
            done=n + (r.done if r is not None else 0),
            succeeded=n + (r.succeeded if r is not None else 0),
            failed=r.failed if r is not None else 0,
            unchanged=r.unchanged if r is not None else 0,
            retried=r.retried if r is not None else 0,
            throttled=r.throttled if r is not None else 0,
            bytes=byte_sum,
            elapsed=elapsed,
            throughput_bps=byte_sum / elapsed if elapsed > 0 else 0.0,
            concurrency=r.concurrency if r is not None else 1,
            in_flight=r.in_flight if r is not None else 0,
            finished=finished,
            interrupted=r.interrupted if r is not None else 0,
            bytes_present=present,
            bytes_total=known,
        )

    # -- parse stage ---------------------------------------------------------------------

    def parsed(self, results: list[_Outcome], size: int) -> None:
        self.done += len(results)
        self.committed += sum(1 for r in results if r.status == "committed")
        self.already += sum(1 for r in results if r.status == "already_committed")
        self.bytes += size
        self._emit("parse", lambda: self.parse_event(finished=False), final=False)

    def parse_event(self, *, finished: bool, interrupted: int = 0) -> ProgressEvent:
        from scfeeds._fetch._report import ProgressEvent

        elapsed = time.perf_counter() - self.t0
        expected = self.n_local + self.n_remote - self.failed
        return ProgressEvent(
            stage="parse",
            total=self.done if finished else expected,
            done=self.done,
            succeeded=self.committed,
            failed=0,
            unchanged=self.already,
            retried=0,
            throttled=0,
            bytes=self.bytes,
            elapsed=elapsed,
            throughput_bps=self.bytes / elapsed if elapsed > 0 else 0.0,
            concurrency=self.workers,
            in_flight=0,
            finished=finished,
            interrupted=interrupted,
            bytes_present=self.bytes,
            bytes_total=self.bytes if finished else None,
        )

    def finish(self, *, ok: bool) -> None:
        """Close the sink once: the parse stage's last event (``interrupted`` counts the
        documents a failed or cancelled run did not get to)."""
        sink, self.sink = self.sink, None
        if sink is None:
            return
        if ok:
            sink.close(self.parse_event(finished=True))
            return
        left = max(self.n_local + self.n_remote - self.failed - self.done, 1)
        sink.close(self.parse_event(finished=False, interrupted=left))

    def _emit(self, stage: str, event: Callable[[], ProgressEvent], *, final: bool) -> None:
        """Send ``event()`` of ``stage`` unless one went less than _EMIT_EVERY ago (the event
        is built only when sent)."""
        if self.sink is None:
            return
        now = time.perf_counter()
        if final or now - self.last_emit[stage] >= _EMIT_EVERY:
            self.last_emit[stage] = now
            self.sink.update(event())


@dataclass
class _Group:
    """Landed documents waiting to form one micro-batch."""

    deadline: float
    jobs: list[Job] = field(default_factory=list)
    size: int = 0


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _landing_dir(lake: str | os.PathLike[str], landing: str | os.PathLike[str] | None) -> Path:
    """Where fetched bytes land: ``lake/_landing`` for a folder lake; for an object-store lake
    a folder per lake under the system's temporary folder (named by a hash of the URI, so a
    re-run resumes there)."""
    if landing is not None:
        return Path(landing)
    if not is_remote(lake):
        return Path(lake) / "_landing"
    import tempfile

    digest = hashlib.sha256(lake_uri(lake).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "scfeeds-landing" / digest


# -- on a Dask cluster: one shard per supplier endpoint, each this pipeline on a worker


def _ingest_shard(
    sources: list[dict[str, Any]], lake: str, options: dict[str, Any]
) -> dict[str, Any]:
    """Runs on a worker: the normal pipeline in its own event loop; returns a small manifest."""
    items = [Source(**s) for s in sources]
    shard = options.pop("shard", None)
    if options.get("landing") is None and shard is not None:
        options["landing"] = str(_landing_dir(lake, None) / shard)
    # Threads only: worker processes are daemonic and may not start a process pool.
    report = asyncio.run(ingest(items, lake, pool="threads", **options))
    return {
        "batches": report.batches.select(MANIFEST_COLUMNS).to_dicts(),
        "rows": dict(report.rows),
        "fetch_seconds": report.fetch_seconds,
        "parse_seconds": report.parse_seconds,
    }


# A shard whose worker died runs again on another worker this many times.
_SHARD_RETRIES: Final = 2


async def _ingest_on_cluster(
    sources: Sequence[Source],
    lake: str | os.PathLike[str],
    *,
    cluster: Client | str,
    **options: Any,
) -> IngestReport:
    """Run :func:`ingest` shard by shard on a Dask cluster (see :mod:`scfeeds._distributed`)."""
    t0 = time.perf_counter()
    client = await asyncio.to_thread(client_of, cluster)
    shards: dict[str, list[dict[str, Any]]] = {}
    for s in sources:
        row = {
            k: getattr(s, k) for k in ("url", "format", "table", "supplier_id", "path", "sha256")
        }
        shards.setdefault(shard_key(row), []).append(row)
    root = lake_uri(lake)
    futures = []
    for key, members in sorted(shards.items()):
        digest = hashlib.sha256(repr((key, [r["url"] for r in members], root)).encode()).hexdigest()
        # each shard its own landing folder (fetch manifests are per process): in the lake
        # folder, or for an object-store lake in the worker's temporary folder
        shard = hashlib.sha256(key.encode()).hexdigest()[:16]
        futures.append(
            client.submit(
                _ingest_shard,
                members,
                root,
                {**options, "landing": None, "shard": shard},
                key=f"scfeeds-ingest-{digest[:16]}",
                retries=_SHARD_RETRIES,
                pure=False,
            )
        )
    manifests: list[dict[str, Any]] = await asyncio.to_thread(client.gather, futures)
    records = [b for m in manifests for b in m["batches"]]
    rows: dict[str, int] = {}
    for m in manifests:
        for t, n in m["rows"].items():
            rows[t] = rows.get(t, 0) + n
    batches = (
        pl.DataFrame(records, schema=BATCH_SCHEMA) if records else pl.DataFrame(schema=BATCH_SCHEMA)
    )
    return IngestReport(
        lake=root if is_remote(lake) else Path(lake),
        batches=batches.sort("url"),
        fetch=None,
        elapsed=time.perf_counter() - t0,
        fetch_seconds=sum(m["fetch_seconds"] for m in manifests),
        parse_seconds=sum(m["parse_seconds"] for m in manifests),
        rows=rows,
        storage_options=options.get("storage_options"),
    )
