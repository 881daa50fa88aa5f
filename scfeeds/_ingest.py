"""Ingest: fetch -> parse (off the loop) -> validate -> commit to the Parquet lake.

Network I/O and CPU-bound parsing are decoupled. The fetch engine lands raw bytes in
``lake/_landing`` (resumable, hashed, atomic); landed items go through a *bounded* queue to a
fixed set of parse workers. When parsing lags, the queue fills and fetching waits instead of
buffering (backpressure), so memory is bounded by ``workers`` × one file's frames, not by the
feed. Parsing runs in a thread pool for the polars readers (which release the GIL) and in a
process pool for cXML (xmltodict is pure Python and would hold the GIL).

Each landed file is one lake batch whose id comes from its content (see ``_lake``): ingesting
the same sources twice, or resuming an interrupted run, gives the same lake with no duplicate
rows, and a batch already committed is not parsed again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl

from scfeeds._lake import batch_id, commit_batch, is_committed, scan_lake
from scfeeds._parse import Format, guess_format, parse_file
from scfeeds.exceptions import ConfigurationError
from scfeeds.schemas import TableName

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

    lake: Path
    batches: pl.DataFrame
    fetch: Any  # FetchReport of the fetch engine (None when every source was a local file)
    elapsed: float
    fetch_seconds: float
    parse_seconds: float
    rows: Mapping[str, int] = field(default_factory=dict)

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
        return scan_lake(self.lake, "po_lines", kind="errors")

    def quarantine(self, table: TableName) -> pl.LazyFrame:
        """Rows of ``table`` that broke a validation rule, with the rule and a message."""
        return scan_lake(self.lake, table, kind="quarantine")

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


async def _expand_portals(sources: list[Source], headers: Mapping[str, str] | None) -> list[Source]:
    """Replace a portal root URL by the feeds its ``GET /v1/feeds`` lists."""
    import aiohttp

    out: list[Source] = []
    for s in sources:
        listing_url = None if (s.format or s.table) else _portal_listing_url(s.url)
        if listing_url is None:
            out.append(s)
            continue
        async with (
            aiohttp.ClientSession(headers=dict(headers or {})) as session,
            session.get(listing_url, timeout=aiohttp.ClientTimeout(total=60)) as resp,
        ):
            if resp.status != 200:
                raise ConfigurationError(
                    f"{listing_url} answered {resp.status}: pass feed URLs, or the root URL "
                    "of an scfeeds portal (with its token in headers=)"
                )
            data = await resp.json()
        out.extend(_as_sources(data["feeds"]))
    return out


def _is_remote(url: str) -> bool:
    return url.startswith(("http://", "https://"))


Job = tuple[str, str, Source]  # landed path, sha256, source


def _process_many(jobs: list[Job], lake: str) -> list[dict[str, Any]]:
    """Parse, validate and commit landed files (runs in a worker thread or process).

    Each file stays its own lake batch (its id comes from its content, so re-runs are
    idempotent), but validation runs once over all the files of the call: dataframely's
    per-call cost dominates for the small documents suppliers send. Rules never cross files
    (the duplicate-key rule includes ``source``), so the result is the same as per file.
    """
    from scfeeds._validate import validate

    t0 = time.perf_counter()
    parsed = [
        (job, parse_file(job[0], fmt=job[2].format, table=job[2].table, source=job[2].url))
        for job in jobs
    ]
    good: dict[TableName, dict[str, pl.DataFrame]] = {}
    bad: dict[TableName, dict[str, pl.DataFrame]] = {}
    tables = {t for _, p in parsed for t in p.tables}
    for table in sorted(tables):
        frame = pl.concat([p.tables[table] for _, p in parsed if table in p.tables])
        ok, failed = validate(frame, table)
        good[table] = _by_source(ok)
        bad[table] = _by_source(failed)
    per_file = (time.perf_counter() - t0) / max(1, len(jobs))
    out: list[dict[str, Any]] = []
    for (_path, sha256, src), result in parsed:
        t1 = time.perf_counter()
        commit = commit_batch(
            lake,
            batch=batch_id(sha256, salt=f"{src.format}:{src.table}"),
            source=src.url,
            sha256=sha256,
            tables={t: good[t][src.url] for t in result.tables if src.url in good[t]},
            quarantine={t: bad[t][src.url] for t in result.tables if src.url in bad[t]},
            errors=result.errors,
        )
        out.append(
            {
                "batch": commit.batch,
                "status": "committed",
                "rows": sum(commit.rows.values()),
                "rows_by_table": dict(commit.rows),
                "quarantined": commit.quarantined,
                "errors": commit.errors,
                "parse_seconds": per_file + time.perf_counter() - t1,
            }
        )
    return out


def _by_source(frame: pl.DataFrame) -> dict[str, pl.DataFrame]:
    if frame.height == 0:
        return {}
    return {
        key[0]: part
        for key, part in frame.partition_by("source", as_dict=True, maintain_order=True).items()
    }


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
    workers: int | None = None,
    progress: Any = None,
    landing: str | os.PathLike[str] | None = None,
    pool: Literal["auto", "threads", "processes"] = "auto",
    parse_group: int = 16,
    cluster: Any = None,
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
        Folder of the Parquet lake (created if missing). Raw bytes land in
        ``lake/_landing`` unless ``landing`` says otherwise.
    limits, retry, headers, progress
        Passed to :func:`scfeeds.fetch` (``limits=16`` means at most 16 requests at once).
    workers
        Parse workers (default: the number of CPUs). The queue between fetch and parse holds
        at most ``max(2 * workers, parse_group)`` landed files: when parsing lags, fetching
        waits.
    parse_group
        A worker takes up to this many waiting files at once and validates them in one pass
        (each file is still its own lake batch).
    cluster
        A Dask ``distributed.Client`` (or a scheduler address): shard the sources by supplier
        / host and run each shard's pipeline on a worker (``pip install 'scfeeds[dask]'``).
        The lake must be on a file system the workers share. ``None``: this process only,
        and dask is never imported.
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

        return await ingest_on_cluster(  # type: ignore[no-any-return]
            await _expand_portals(_as_sources(sources), headers),
            lake,
            cluster=cluster,
            limits=limits,
            retry=retry,
            headers=headers,
            workers=workers,
            parse_group=parse_group,
        )
    t_start = time.perf_counter()
    root = Path(lake)
    root.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before any task starts
    landing_dir = Path(landing) if landing is not None else root / "_landing"
    items = await _expand_portals(_as_sources(sources), headers)
    n_workers = max(1, workers or (os.cpu_count() or 2))

    group = max(1, parse_group)
    use_processes = pool == "processes" or (pool == "auto" and _processes_are_safe())
    queue: asyncio.Queue[Job | None] = asyncio.Queue(maxsize=max(2 * n_workers, group))
    records: list[dict[str, Any]] = []
    fetch_report: Any = None
    fetch_seconds = 0.0
    loop = asyncio.get_running_loop()
    threads = concurrent.futures.ThreadPoolExecutor(n_workers, thread_name_prefix="scfeeds-parse")
    procs: concurrent.futures.ProcessPoolExecutor | None = None

    def process_pool() -> concurrent.futures.ProcessPoolExecutor:
        nonlocal procs
        if procs is None:
            # forkserver: never fork a process that runs polars' and aiohttp's threads
            procs = concurrent.futures.ProcessPoolExecutor(
                n_workers, mp_context=multiprocessing.get_context("forkserver")
            )
        return procs

    async def produce() -> None:
        nonlocal fetch_seconds, fetch_report
        from scfeeds._fetch import fetch, redact_url

        local = [s for s in items if not _is_remote(s.url)]
        remote = [s for s in items if _is_remote(s.url)]
        for s in local:
            path = str(Path(s.url))
            sha = await loop.run_in_executor(threads, _sha256_file, path)
            await queue.put((path, sha, s))
        by_url = {redact_url(s.url): s for s in remote}

        async def landed(row: dict[str, Any]) -> None:
            # Called by each fetch worker as its item lands; awaiting a full queue holds the
            # worker, so fetching waits when parsing lags (backpressure, item by item).
            src = by_url[row["url"]]
            if row["status"] in ("ok", "unchanged") and row["path"]:
                path = row["path"]
                if not os.path.isabs(path):
                    path = str(landing_dir / path)
                await queue.put((path, row["sha256"], src))
                return
            if row["status"] == "interrupted":
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
                    "error": row["error"],
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
                headers=headers,
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

    async def consume() -> None:
        nonlocal parse_seconds
        done = False
        while not done:
            first = await queue.get()
            if first is None:
                return
            # Take what else is already waiting (up to `group`): one executor call, one
            # validation pass for many small files.
            jobs = [first]
            while len(jobs) < group and not queue.empty():
                nxt = queue.get_nowait()
                if nxt is None:
                    done = True
                    break
                jobs.append(nxt)
            todo: dict[bool, list[Job]] = {True: [], False: []}
            for path, sha, src in jobs:
                fmt = src.format or guess_format(src.url) or guess_format(path)
                src = Source(url=src.url, format=fmt, table=src.table, supplier_id=src.supplier_id)
                batch = batch_id(sha, salt=f"{src.format}:{src.table}")
                if is_committed(root, batch):  # cheap check here: no trip to a worker
                    record(
                        (path, sha, src),
                        batch=batch,
                        status="already_committed",
                        rows=0,
                        quarantined=0,
                        errors=0,
                        parse_seconds=0.0,
                    )
                    continue
                todo[fmt == "xml" and use_processes].append((path, sha, src))
            for in_process, batch_jobs in todo.items():
                if not batch_jobs:
                    continue
                results = await loop.run_in_executor(
                    process_pool() if in_process else threads,
                    _process_many,
                    batch_jobs,
                    str(root),
                )
                for job, out in zip(batch_jobs, results, strict=True):
                    parse_seconds += out["parse_seconds"]
                    record(job, **out)

    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(produce())
            for _ in range(n_workers):
                tg.create_task(consume())
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
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
    )
