"""Ingest: fetch -> parse (off the loop) -> validate -> commit to the Delta lake.

Network I/O and CPU-bound parsing are decoupled. The fetch engine lands raw bytes in
``lake/_landing`` (resumable, hashed, atomic); landed items go through a *bounded* queue to a
batcher that groups them into micro-batches (by format and table; bounded by documents, bytes
and a latency budget) for a fixed set of workers. When every worker is busy, the queue fills
and fetching waits instead of buffering (backpressure), so memory is bounded by ``workers`` ×
one micro-batch's frames, not by the feed. Parsing runs in a thread pool for the polars
readers (which release the GIL) and in a process pool for cXML (xmltodict is pure Python and
would hold the GIL).

A micro-batch is committed in one Delta transaction per table plus one ledger transaction
(see ``_lake``). Each document keeps an id derived from its content: ingesting the same
sources twice, or resuming an interrupted run, gives the same lake with no duplicate rows, and
a document already in the ledger is not parsed again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import polars as pl

from scfeeds._children import init_parse_worker, start_forkserver
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
from scfeeds._parse import Format, ParsedBatch, guess_format, parse_batch
from scfeeds._parse import Job as ParseJob
from scfeeds.exceptions import ConfigurationError
from scfeeds.schemas import ERRORS as ERROR_SCHEMA
from scfeeds.schemas import TableName, schema

if TYPE_CHECKING:  # the parse workers import this module: keep aiohttp out of them
    from scfeeds._fetch._credentials import Credentials

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
    fetch: Any  # FetchReport of the fetch engine (None when every source was a local file)
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


def _as_sources(sources: Any) -> list[Source]:
    if isinstance(sources, str | os.PathLike | Source):
        sources = [sources]
    if isinstance(sources, pl.DataFrame):
        sources = sources.to_dicts()
    out: list[Source] = []
    for s in sources:
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
                    format=fmt if fmt in ("x12", "csv", "xlsx", "xml", "ndjson") else None,
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
) -> list[dict[str, Any]]:
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
    out: list[dict[str, Any] | None] = [None] * len(jobs)
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
    final: list[dict[str, Any]] = []
    for item in out:
        assert item is not None
        if item["status"] != "already_committed":
            item["parse_seconds"] = per_doc
        final.append(item)
    return final


def _skipped(key: str) -> dict[str, Any]:
    return {
        "batch": key,
        "status": "already_committed",
        "rows": 0,
        "rows_by_table": {},
        "quarantined": 0,
        "errors": 0,
        "parse_seconds": 0.0,
    }


def _commit_round(
    jobs: list[Job], keys: list[str], lake: str, storage_options: Mapping[str, str] | None
) -> list[dict[str, Any]]:
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
        frame = parsed.tables[table]
        ok, failed = validate(frame, table)
        good[table] = ok.with_columns(tag.alias(BATCH_COL))
        # the lake's quarantine table has one schema: canonical dtypes (a value a reader
        # could not type is a parse error, not a quarantined row)
        canonical = schema(table)
        bad[table] = failed.with_columns(
            *(pl.col(c).cast(t, strict=False) for c, t in canonical.items()),
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
        {
            "batch": d.batch,
            "status": "committed",
            "rows": d.rows,
            "rows_by_table": counts[d.batch],
            "quarantined": d.quarantined,
            "errors": d.errors,
            "parse_seconds": 0.0,
        }
        if d.batch in mine
        else _skipped(d.batch)  # another writer committed the same bytes first
        for d in documents
    ]


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


def _sha256_files(paths: list[str]) -> list[str]:
    return [_sha256_file(p) for p in paths]


def _sha256_file(path: str) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


async def ingest(
    sources: Any,
    lake: str | os.PathLike[str],
    *,
    limits: Any = 16,
    retry: Any = None,
    headers: Mapping[str, str] | None = None,
    credentials: Credentials | Mapping[str, Mapping[str, str]] | None = None,
    workers: int | None = None,
    progress: Any = None,
    landing: str | os.PathLike[str] | None = None,
    pool: Literal["auto", "threads", "processes"] = "auto",
    batch_docs: int = 2000,
    batch_bytes: int = 8 << 20,
    batch_seconds: float = 1.0,
    parse_group: int | None = None,
    cluster: Any = None,
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
    limits, retry, progress
        Passed to :func:`scfeeds.fetch` (``limits=16`` means at most 16 requests at once).
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
        ``batch_docs`` documents or ``batch_bytes`` bytes, and a group is started at the
        latest ``batch_seconds`` after its first document landed. Each micro-batch is parsed,
        validated once per table and committed in one Delta transaction per table plus one
        ledger transaction; a document is still its own unit of idempotency (its content
        hash is in the ledger).
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
        Where cXML (pure-Python xmltodict) is parsed: ``"processes"`` (a process pool, true
        parallelism), ``"threads"`` (cheaper for a handful of small files), or ``"auto"``:
        processes when that is safe, i.e. when the main program will not run again in each
        child (a notebook, the ``scfeeds`` command, or a script with an
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
    if cluster is not None:
        from scfeeds._distributed import ingest_on_cluster

        given = _as_sources(sources)
        scoped = _scoped_credentials(given, headers, credentials)
        return await ingest_on_cluster(  # type: ignore[no-any-return]
            await _expand_portals(given, scoped),
            lake,
            cluster=cluster,
            limits=limits,
            retry=retry,
            credentials=scoped,
            workers=workers,
            batch_docs=batch_docs if parse_group is None else parse_group,
            batch_bytes=batch_bytes,
            batch_seconds=batch_seconds,
            storage_options=storage_options,
        )
    t_start = time.perf_counter()
    root: Path | str = lake_uri(lake) if is_remote(lake) else Path(lake)
    landing_dir = _landing_dir(lake, landing)
    if isinstance(root, Path):
        root.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before any task starts
    given = _as_sources(sources)
    scoped = _scoped_credentials(given, headers, credentials)
    items = await _expand_portals(given, scoped)
    n_workers = max(1, workers or (os.cpu_count() or 2))

    limit_docs = max(1, batch_docs if parse_group is None else parse_group)
    use_processes = pool == "processes" or (pool == "auto" and _processes_are_safe())
    queue: asyncio.Queue[Job | None] = asyncio.Queue(maxsize=2 * n_workers)
    records: list[dict[str, Any]] = []
    fetch_report: Any = None
    fetch_seconds = 0.0
    loop = asyncio.get_running_loop()
    threads = concurrent.futures.ThreadPoolExecutor(n_workers, thread_name_prefix="scfeeds-parse")
    procs: concurrent.futures.ProcessPoolExecutor | None = None

    def process_pool() -> concurrent.futures.ProcessPoolExecutor:
        nonlocal procs
        if procs is None:
            # forkserver: never fork a process that runs polars' and aiohttp's threads.
            # Its children never die of the process group's SIGTERM/SIGINT: we drain.
            start_forkserver()
            procs = concurrent.futures.ProcessPoolExecutor(
                n_workers,
                mp_context=multiprocessing.get_context("forkserver"),
                initializer=init_parse_worker,
            )
        return procs

    async def produce() -> None:
        nonlocal fetch_seconds, fetch_report
        from scfeeds._fetch import FetchOutcome, fetch

        local = [s for s in items if not _is_remote(s.url)]
        remote = [s for s in items if _is_remote(s.url)]
        # Hashed a run of files per executor call (not the parse pool): one thread hop per
        # file cost about as much as hashing a small document.
        for i in range(0, len(local), _HASH_RUN):
            run = [(str(Path(s.url)), s) for s in local[i : i + _HASH_RUN]]
            shas = await loop.run_in_executor(None, _sha256_files, [p for p, _ in run])
            for (path, s), sha in zip(run, shas, strict=True):
                await queue.put((path, sha, s))

        async def landed(row: FetchOutcome) -> None:
            # Called by each fetch worker as its item lands; awaiting a full queue holds the
            # worker, so fetching waits when parsing lags (backpressure, item by item).
            # The outcome carries its source's position: two URLs that differ only in a
            # secret are two sources, and provenance is the redacted URL, not the secret.
            src = replace(remote[row.index], url=row.url)
            if row.status in ("ok", "unchanged") and row.path and row.sha256:
                path = row.path
                if not os.path.isabs(path):
                    path = str(landing_dir / path)
                await queue.put((path, row.sha256, src))
                return
            if row.status == "interrupted":
                return  # the run is being cancelled; the next one resumes this source
            records.append(
                {
                    "url": src.url,
                    "path": None,
                    "format": src.format,
                    "table": src.table,
                    "sha256": None,
                    "batch": None,
                    "status": "fetch_failed",
                    "rows": 0,
                    "quarantined": 0,
                    "errors": 1,
                    "parse_seconds": 0.0,
                    "error": row.error,
                }
            )

        if remote:
            t0 = time.perf_counter()
            report = await fetch(
                [
                    {"url": s.url}
                    | ({"path": s.path} if s.path else {})
                    | ({"sha256": s.sha256} if s.sha256 else {})
                    for s in remote
                ],
                landing_dir,
                limits=limits,
                retry=retry,
                credentials=scoped,
                progress=progress,
                on_item=landed,
            )
            fetch_seconds += time.perf_counter() - t0
            fetch_report = report
        for _ in range(n_workers):
            await queue.put(None)

    rows_by_table: dict[str, int] = {}
    parse_seconds = 0.0

    def record(job: Job, **fields: Any) -> None:
        path, sha, src = job
        for t, n in fields.pop("rows_by_table", {}).items():
            rows_by_table[t] = rows_by_table.get(t, 0) + n
        records.append(
            {
                "url": src.url,
                "path": path,
                "format": src.format,
                "table": src.table,
                "sha256": sha,
                **fields,
            }
        )

    busy = asyncio.Semaphore(n_workers)
    running = 0  # micro-batches on a worker
    started = 0  # micro-batches started
    # The run's first group starts as soon as it has this many documents (work starts at
    # once); every other group grows to the full batch size or its deadline, so the lake gets
    # a few large files rather than many small ones (also when workers are often idle, as
    # behind a slow portal: the deadline bounds the wait).
    eager_docs = min(limit_docs, 64)

    async def run_batch(in_process: bool, jobs: list[Job]) -> None:
        nonlocal parse_seconds, running
        try:
            results = await loop.run_in_executor(
                process_pool() if in_process else threads,
                _process_many,
                jobs,
                str(root),
                dict(storage_options) if storage_options else None,
            )
        finally:
            running -= 1
            busy.release()
        for job, out in zip(jobs, results, strict=True):
            parse_seconds += out["parse_seconds"]
            record(job, **out)

    async def consume() -> None:
        """Group landed documents into micro-batches and start each on a worker."""
        groups: dict[tuple[Any, ...], _Group] = {}
        async with asyncio.TaskGroup() as batches_tg:

            async def flush(key: tuple[Any, ...]) -> None:
                nonlocal running, started
                grp = groups.pop(key)
                await busy.acquire()  # all workers busy: stop reading, the queue fills up
                running += 1
                started += 1
                # cXML (pure Python) goes to the process pool where safe, and the rest of
                # its micro-batch with it (one reader call, one commit)
                xml = any(job[2].format == "xml" for job in grp.jobs)
                batches_tg.create_task(run_batch(use_processes and xml, grp.jobs))

            while True:
                now = loop.time()
                due = [k for k, g in groups.items() if g.deadline <= now]
                for key in due:
                    await flush(key)
                wait = min((g.deadline for g in groups.values()), default=None)
                try:
                    if wait is None:
                        job = await queue.get()
                    else:
                        job = await asyncio.wait_for(queue.get(), max(0.0, wait - loop.time()))
                except TimeoutError:
                    continue
                if job is None:
                    for key in list(groups):
                        await flush(key)
                    return
                path, sha, src = job
                fmt = src.format or guess_format(src.url) or guess_format(path)
                src = Source(url=src.url, format=fmt, table=src.table, supplier_id=src.supplier_id)
                # one micro-batch per table whatever the formats: parse_batch reads each
                # format in one call, and the lake gets one data file per table and batch
                key = (src.table,)
                grp = groups.get(key)
                if grp is None:
                    grp = groups[key] = _Group(deadline=loop.time() + batch_seconds)
                grp.jobs.append((path, sha, src))
                grp.size += _size(path)
                first = started == 0
                if (
                    len(grp.jobs) >= limit_docs
                    or grp.size >= batch_bytes
                    or (first and len(grp.jobs) >= eager_docs)
                ):
                    await flush(key)

    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(produce())
            tg.create_task(consume())
    except BaseExceptionGroup as group:
        only: BaseException = group
        # the micro-batch tasks run in a task group inside the consumer's task group
        while isinstance(only, BaseExceptionGroup) and len(only.exceptions) == 1:
            only = only.exceptions[0]
        if only is not group:
            raise only from None
        raise
    finally:
        threads.shutdown(wait=True, cancel_futures=True)
        if procs is not None:
            procs.shutdown(wait=True, cancel_futures=True)

    batches = (
        pl.DataFrame(records, schema=BATCH_SCHEMA) if records else pl.DataFrame(schema=BATCH_SCHEMA)
    )
    return IngestReport(
        lake=root,
        batches=batches.sort("url"),
        fetch=fetch_report,
        elapsed=time.perf_counter() - t_start,
        fetch_seconds=fetch_seconds,
        parse_seconds=parse_seconds,
        rows=rows_by_table,
        storage_options=storage_options,
    )


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
    import hashlib
    import tempfile

    digest = hashlib.sha256(lake_uri(lake).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "scfeeds-landing" / digest
