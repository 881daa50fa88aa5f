"""The lake: Delta Lake tables (delta-rs), one transaction per table per micro-batch.

Layout (every folder is a Delta table, readable by ``deltalake``, ``polars.scan_delta``, Spark,
DuckDB or Trino without scfeeds)::

    lake/                                 a folder, or s3://bucket/prefix
      po_lines/  asn_lines/  invoice_lines/  receipts/     good rows (canonical columns)
      _quarantine/<table>/                 rows that broke a rule: canonical + rule, rules, message
      _errors/                             parse errors (schemas.ERRORS)
      _ledger/                             one row per ingested document: batch, txn, source,
                                           sha256, format, table, counts, committed_at

Every data row also carries ``_batch`` (the document's batch id, a content address: sha256 of
its bytes, salted with format, table and ``LAKE_FORMAT``) and ``_txn`` (the id of the write
attempt that wrote it). No table is partitioned: a micro-batch of thousands of documents spans
many suppliers, and a partition per supplier would turn one file per micro-batch into one per
supplier; readers prune by the files' column statistics instead, and supplier ids never reach a
path.

Commit protocol of one micro-batch (:func:`commit_micro_batch`):

1. the data tables, each in one Delta transaction (a blind append: concurrent appends never
   conflict), rows tagged with this attempt's ``_txn``;
2. the ledger, last, in one transaction: an overwrite whose predicate names the micro-batch's
   documents (``batch IN (...)``) and which adds their entries. Delta's conflict check
   rejects it when a commit since its read added an entry matching the predicate (another
   writer ledgered one of these documents): the loser re-reads the ledger, leaves out what is
   taken and retries (optimistic concurrency). So the ledger holds at most one
   ``(batch, txn)`` per document.
3. rows of documents another writer ledgered first are deleted again (rare: two writers on the
   same bytes at the same moment).

A row is *committed* when its ``(_batch, _txn)`` is in the ledger. :func:`scan_lake` reads
committed rows only, so a writer killed between steps 1 and 2 (or during 3) leaves rows that no
reader sees; the re-run writes the document again under a new ``_txn`` and ledgers that.
:func:`compact_lake` deletes such leftovers for good (rows of documents ledgered under another
``_txn``, and unledgered rows older than a grace period), so that readers outside scfeeds see
exactly the committed rows too; in the normal case (no crash, no two writers on the same
document) there are none.
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import random
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from scfeeds.exceptions import ConfigurationError, ScfeedsError
from scfeeds.schemas import ERRORS as ERROR_SCHEMA
from scfeeds.schemas import TABLES, TableName, schema

# Bumped when parsing or validation changes what a document produces, so that a re-ingest with
# a new version writes new batch ids instead of mixing old and new rows under one id. (The
# move to Delta changed the storage, not what a document produces: the ids stay.)
LAKE_FORMAT = 1

QUARANTINE = "_quarantine"
ERRORS = "_errors"
LEDGER = "_ledger"
BATCH_COL = "_batch"
TXN_COL = "_txn"

LEDGER_SCHEMA: dict[str, pl.DataType] = {
    "batch": pl.String(),
    "txn": pl.String(),
    "source": pl.String(),
    "sha256": pl.String(),
    "format": pl.String(),
    "table": pl.String(),
    "rows": pl.Int64(),
    "quarantined": pl.Int64(),
    "errors": pl.Int64(),
    "committed_at": pl.Datetime("us", "UTC"),
}

QUARANTINE_EXTRA: dict[str, pl.DataType] = {
    "rule": pl.String(),
    "message": pl.String(),
}

StorageOptions = Mapping[str, str] | None


class LakeWriteError(ScfeedsError, OSError):
    """A lake commit failed for a reason of the storage (disk full, permissions, network)."""


def batch_id(sha256: str, *, salt: str = "") -> str:
    """Deterministic batch id for a landed document's content."""
    import hashlib

    return hashlib.sha256(f"{LAKE_FORMAT}:{salt}:{sha256}".encode()).hexdigest()[:24]


def new_txn() -> str:
    """Id of one write attempt: UTC milliseconds first (its age), then randomness."""
    return f"{int(time.time() * 1000):013d}-{uuid.uuid4().hex[:16]}"


def _txn_time(txn: str) -> dt.datetime:
    try:
        return dt.datetime.fromtimestamp(int(txn.split("-", 1)[0]) / 1000, tz=dt.UTC)
    except ValueError:  # not ours: treat as old
        return dt.datetime.fromtimestamp(0, tz=dt.UTC)


# -- locations -------------------------------------------------------------------------------


def is_remote(lake: str | os.PathLike[str]) -> bool:
    """An object-store URI (``s3://``, ``gs://``, ``az://`` ...) rather than a folder."""
    return "://" in str(lake) and not str(lake).startswith("file://")


def lake_uri(lake: str | os.PathLike[str]) -> str:
    """The lake root as delta-rs wants it: an absolute folder or an object-store URI."""
    if is_remote(lake):
        return str(lake).rstrip("/")
    text = str(lake)
    if text.startswith("file://"):
        text = text[len("file://") :]
    return str(Path(text).absolute())


def table_path(table: str) -> str:
    """Relative location of a lake table (``po_lines``, ``_quarantine/po_lines``, ...)."""
    if table in TABLES or table in (ERRORS, LEDGER):
        return table
    if table.startswith(f"{QUARANTINE}/") and table.split("/", 1)[1] in TABLES:
        return table
    raise ConfigurationError(f"unknown lake table {table!r}")


def all_tables() -> list[str]:
    return [
        *TABLES,
        *(f"{QUARANTINE}/{t}" for t in TABLES),
        ERRORS,
        LEDGER,
    ]


def _uri(lake: str | os.PathLike[str], table: str) -> str:
    return f"{lake_uri(lake)}/{table_path(table)}"


def _options(storage_options: StorageOptions) -> dict[str, str] | None:
    return dict(storage_options) if storage_options else None


def _open(
    lake: str | os.PathLike[str], table: str, storage_options: StorageOptions = None
) -> Any | None:
    """The table's ``DeltaTable`` at its latest version, or ``None`` if it does not exist."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(_uri(lake, table), storage_options=_options(storage_options))
    except TableNotFoundError:
        return None


# -- writing ---------------------------------------------------------------------------------


def _no_space(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    text = str(exc).lower()
    return "no space left on device" in text or "os error 28" in text


def _storage_error(exc: BaseException, where: str) -> LakeWriteError:
    if _no_space(exc):
        return LakeWriteError(errno.ENOSPC, f"no space left on device writing the lake at {where}")
    return LakeWriteError(f"lake commit to {where} failed: {exc}")


def _conflict(exc: BaseException) -> bool:
    from deltalake.exceptions import CommitFailedError

    if isinstance(exc, CommitFailedError):
        return True
    # A table created by two writers at once: the loser sees the winner's version 0.
    text = str(exc).lower()
    return "already exists" in text or "version already exists" in text


def _backoff(attempt: int) -> None:
    time.sleep(min(2.0, 0.01 * 2**attempt) * (0.5 + random.random()))


MAX_ATTEMPTS = 60


def _write(
    lake: str | os.PathLike[str],
    table: str,
    frame: pl.DataFrame,
    *,
    storage_options: StorageOptions,
    replace: str | None = None,
    at: Any | None = None,
) -> None:
    """One commit: an append, or with ``replace`` an overwrite of the rows matching it.

    ``at``: the ``DeltaTable`` snapshot the commit is based on (default: the latest).
    """
    from deltalake import write_deltalake

    uri = _uri(lake, table)
    target = at if at is not None else uri
    options = _options(storage_options)
    try:
        if replace is None:
            write_deltalake(target, frame, mode="append", storage_options=options)
        else:
            write_deltalake(
                target, frame, mode="overwrite", predicate=replace, storage_options=options
            )
    except Exception as exc:
        if _conflict(exc):
            raise
        raise _storage_error(exc, uri) from exc


def _append(
    lake: str | os.PathLike[str], table: str, frame: pl.DataFrame, storage_options: StorageOptions
) -> None:
    for attempt in range(MAX_ATTEMPTS):
        try:
            _write(lake, table, frame, storage_options=storage_options)
            return
        except LakeWriteError:
            raise
        except Exception as exc:
            if not _conflict(exc) or attempt == MAX_ATTEMPTS - 1:
                raise
            _backoff(attempt)


def ensure_tables(lake: str | os.PathLike[str], *, storage_options: StorageOptions = None) -> None:
    """Create the ledger (empty) if missing, so that ledger commits always check conflicts."""
    if _open(lake, LEDGER, storage_options) is None:
        _append(lake, LEDGER, pl.DataFrame(schema=LEDGER_SCHEMA), storage_options)


def ledgered(
    lake: str | os.PathLike[str],
    batches: Sequence[str],
    *,
    storage_options: StorageOptions = None,
) -> dict[str, str]:
    """``batch -> txn`` of the given documents that the ledger already holds."""
    if not batches:
        return {}
    return _ledgered_in(_open(lake, LEDGER, storage_options), batches)


def _ledgered_in(ledger: Any | None, batches: Sequence[str]) -> dict[str, str]:
    if ledger is None or not batches:
        return {}
    got = (
        pl.scan_delta(ledger)
        .filter(pl.col("batch").is_in(list(batches)))
        .select("batch", "txn")
        .collect()
    )
    return dict(zip(got["batch"].to_list(), got["txn"].to_list(), strict=True))


@dataclass(frozen=True, kw_only=True)
class DocumentCommit:
    """One document of a micro-batch: its ledger row, before the commit."""

    batch: str
    source: str
    sha256: str
    format: str | None
    table: str | None
    rows: int = 0
    quarantined: int = 0
    errors: int = 0


def _tag(frame: pl.DataFrame, txn: str) -> pl.DataFrame:
    return frame.with_columns(pl.lit(txn, pl.String()).alias(TXN_COL))


def commit_micro_batch(
    lake: str | os.PathLike[str],
    *,
    documents: Sequence[DocumentCommit],
    tables: Mapping[TableName, pl.DataFrame],
    quarantine: Mapping[TableName, pl.DataFrame],
    errors: pl.DataFrame | None,
    storage_options: StorageOptions = None,
) -> set[str]:
    """Commit one micro-batch (see the module docstring); returns the batches it ledgered.

    Every frame carries ``_batch`` (one of ``documents``). Documents another writer ledgered
    first are not ledgered here, and their rows written here are deleted again.
    """
    if not documents:
        return set()
    txn = new_txn()
    written: list[str] = []
    for table, frame in tables.items():
        if frame.height:
            _append(lake, table, _tag(frame, txn), storage_options)
            written.append(table)
    for table, frame in quarantine.items():
        if frame.height:
            name = f"{QUARANTINE}/{table}"
            _append(lake, name, _tag(frame, txn), storage_options)
            written.append(name)
    if errors is not None and errors.height:
        _append(lake, ERRORS, _tag(errors, txn), storage_options)
        written.append(ERRORS)
    mine = _commit_ledger(lake, documents, txn, storage_options)
    lost = sorted({d.batch for d in documents} - mine)
    if lost and written:
        _delete_rows(lake, written, txn, lost, storage_options)
    return mine


def _commit_ledger(
    lake: str | os.PathLike[str],
    documents: Sequence[DocumentCommit],
    txn: str,
    storage_options: StorageOptions,
) -> set[str]:
    ensure_tables(lake, storage_options=storage_options)
    wanted = {d.batch: d for d in documents}
    for attempt in range(MAX_ATTEMPTS):
        # One snapshot for the check and the write: the conflict check then covers every
        # commit since the check.
        snapshot = _open(lake, LEDGER, storage_options)
        taken = _ledgered_in(snapshot, list(wanted))
        new = [d for b, d in wanted.items() if b not in taken]
        if not new:
            return set()
        now = dt.datetime.now(dt.UTC)
        frame = pl.DataFrame(
            [
                {
                    "batch": d.batch,
                    "txn": txn,
                    "source": d.source,
                    "sha256": d.sha256,
                    "format": d.format,
                    "table": d.table,
                    "rows": d.rows,
                    "quarantined": d.quarantined,
                    "errors": d.errors,
                    "committed_at": now,
                }
                for d in new
            ],
            schema=LEDGER_SCHEMA,
        )
        # An overwrite of "these documents' entries" (none, as read): a concurrent commit
        # that added an entry for one of them is a conflict (Delta's check of files added
        # since the read that match the predicate), so the loser re-reads and retries.
        claim = f"batch IN ({', '.join(_quote(d.batch) for d in new)})"
        try:
            _write(lake, LEDGER, frame, storage_options=storage_options, replace=claim, at=snapshot)
            return {d.batch for d in new}
        except LakeWriteError:
            raise
        except Exception as exc:
            if not _conflict(exc) or attempt == MAX_ATTEMPTS - 1:
                raise
            _backoff(min(attempt, 6))
    # builtin-raise: the loop above returns or raises on its last attempt
    raise AssertionError("unreachable")  # pragma: no cover


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _delete_rows(
    lake: str | os.PathLike[str],
    tables: Sequence[str],
    txn: str | Sequence[str],
    batches: Sequence[str] | None,
    storage_options: StorageOptions,
) -> int:
    txns = [txn] if isinstance(txn, str) else list(txn)
    predicate = f"{TXN_COL} IN ({', '.join(_quote(t) for t in txns)})"
    if batches is not None:
        predicate += f" AND {BATCH_COL} IN ({', '.join(_quote(b) for b in batches)})"
    deleted = 0
    for name in tables:
        for attempt in range(MAX_ATTEMPTS):
            table = _open(lake, name, storage_options)
            if table is None:
                break
            try:
                metrics = table.delete(predicate)
                deleted += int(metrics.get("num_deleted_rows", 0) or 0)
                break
            except Exception as exc:
                if not _conflict(exc) or attempt == MAX_ATTEMPTS - 1:
                    raise
                _backoff(min(attempt, 6))
    return deleted


# -- reading ---------------------------------------------------------------------------------


def _scan(
    lake: str | os.PathLike[str],
    table: str,
    *,
    version: int | None,
    as_of: dt.datetime | None,
    storage_options: StorageOptions,
) -> pl.LazyFrame | None:
    table_ = _open(lake, table, storage_options)
    if table_ is None:
        return None
    if version is not None:
        table_.load_as_version(version)
    elif as_of is not None:
        when = as_of if as_of.tzinfo is not None else as_of.replace(tzinfo=dt.UTC)
        try:
            table_.load_as_version(when)
        except Exception as exc:  # before the table's first commit
            if "before" in str(exc).lower() or "no version" in str(exc).lower():
                return None
            raise
    return pl.scan_delta(table_)


def lake_snapshot(
    lake: str | os.PathLike[str], *, storage_options: StorageOptions = None
) -> dict[str, int]:
    """The current version of every table of the lake (``{table: version}``).

    Pass it to :func:`scan_lake` (``snapshot=``) to read exactly these versions again later,
    e.g. to reproduce a reconciliation. Tables that do not exist yet are left out.

    Examples
    --------
    >>> snap = scfeeds.lake_snapshot("lake")  # doctest: +SKIP
    >>> scfeeds.scan_lake("lake", "po_lines", snapshot=snap)  # doctest: +SKIP
    """
    out: dict[str, int] = {}
    for name in all_tables():
        table = _open(lake, name, storage_options)
        if table is not None:
            out[name] = int(table.version())
    return out


# long: a 30-line docstring (every parameter); the body is about 50 lines
def scan_lake(
    lake: str | os.PathLike[str],
    table: TableName | str,
    *,
    kind: str = "good",
    version: int | None = None,
    as_of: dt.datetime | None = None,
    snapshot: Mapping[str, int] | None = None,
    storage_options: StorageOptions = None,
) -> pl.LazyFrame:
    """Lazily read one table of the lake: committed rows only.

    Parameters
    ----------
    lake
        The lake written by :func:`scfeeds.ingest`: a folder or an object-store URI
        (``s3://bucket/prefix``).
    table
        ``"po_lines"``, ``"asn_lines"``, ``"invoice_lines"`` or ``"receipts"``; with
        ``kind="errors"`` the table is ignored.
    kind
        ``"good"`` (validated rows, canonical schema), ``"quarantine"`` (rows that broke a
        rule, with ``rule`` and ``message``) or ``"errors"`` (parse errors).
    version
        Read the table as of this Delta version (time travel); the ledger is read at its
        latest version.
    as_of
        Read the table and the ledger as they were at this time (a naive datetime is UTC).
    snapshot
        ``{table: version}`` from :func:`lake_snapshot`: read exactly those versions of the
        table and of the ledger.
    storage_options
        Object-store options for delta-rs (``AWS_ENDPOINT_URL``, ``AWS_REGION``, keys ...);
        by default the usual environment variables apply.

    Examples
    --------
    >>> scfeeds.scan_lake("lake", "po_lines").filter(pl.col("supplier_id") == "SUP001")
    ... # doctest: +SKIP
    >>> scfeeds.scan_lake("lake", "po_lines", version=3).select(pl.len())  # doctest: +SKIP
    """
    if sum(x is not None for x in (version, as_of, snapshot)) > 1:
        raise ConfigurationError("pass at most one of version=, as_of= and snapshot=")
    if kind == "errors":
        name = ERRORS
        empty: dict[str, pl.DataType] = dict(ERROR_SCHEMA)
    else:
        if table not in TABLES:
            raise ConfigurationError(
                f"unknown table {table!r}; expected one of {', '.join(TABLES)}"
            )
        canonical = dict(schema(table))
        if kind == "quarantine":
            name = f"{QUARANTINE}/{table}"
            empty = QUARANTINE_EXTRA | canonical
        elif kind == "good":
            name = str(table)
            empty = canonical
        else:
            raise ConfigurationError(f"kind must be 'good', 'quarantine' or 'errors', not {kind!r}")
    table_version = version
    ledger_version: int | None = None
    if snapshot is not None:
        if name not in snapshot:
            return pl.LazyFrame(schema=empty)
        table_version = snapshot[name]
        ledger_version = snapshot.get(LEDGER)
        if ledger_version is None:
            return pl.LazyFrame(schema=empty)
    data = _scan(lake, name, version=table_version, as_of=as_of, storage_options=storage_options)
    ledger = _scan(
        lake, LEDGER, version=ledger_version, as_of=as_of, storage_options=storage_options
    )
    if data is None or ledger is None:
        return pl.LazyFrame(schema=empty)
    committed = ledger.select(pl.col("batch").alias(BATCH_COL), pl.col("txn").alias(TXN_COL))
    # One row order whatever the order documents landed and were committed in (the match
    # engine's "first line involved" and notebooks depend on it): supplier, document, then the
    # document's own row order. It is the order of the lake before Delta (files sorted by
    # supplier partition and batch id), so reports read the same.
    keys: list[pl.Expr] = [pl.col(BATCH_COL), pl.col("_row")]
    if kind != "errors":
        keys.insert(0, pl.col("supplier_id").fill_null("__null__"))
    rows = (
        data.with_row_index("_row")
        .join(committed, on=[BATCH_COL, TXN_COL], how="semi", maintain_order="left")
        .sort(keys)
        .drop(BATCH_COL, TXN_COL, "_row")
    )
    if kind == "good":
        return rows.select(list(empty))
    return rows


def read_ledger(
    lake: str | os.PathLike[str], *, storage_options: StorageOptions = None
) -> pl.DataFrame:
    """The ledger: one row per ingested document (batch, txn, source, sha256, counts ...)."""
    ledger = _scan(lake, LEDGER, version=None, as_of=None, storage_options=storage_options)
    if ledger is None:
        return pl.DataFrame(schema=LEDGER_SCHEMA)
    return ledger.collect()


# -- maintenance -----------------------------------------------------------------------------


def _invisible(
    lake: str | os.PathLike[str],
    name: str,
    ledger: pl.DataFrame,
    grace: dt.timedelta,
    storage_options: StorageOptions,
) -> dict[str, list[str]]:
    """``{txn: [batch, ...]}`` of rows no reader will ever see.

    A row is invisible for good when its document is ledgered under another attempt, or when
    its document is not ledgered at all and its attempt is older than ``grace`` (a writer that
    was killed before its ledger commit; a live writer commits within seconds).
    """
    data = _scan(lake, name, version=None, as_of=None, storage_options=storage_options)
    if data is None:
        return {}
    pairs = data.select(BATCH_COL, TXN_COL).unique().collect()
    owner = dict(zip(ledger["batch"].to_list(), ledger["txn"].to_list(), strict=True))
    cutoff = dt.datetime.now(dt.UTC) - grace
    out: dict[str, list[str]] = {}
    for batch, txn in pairs.iter_rows():
        mine = owner.get(batch)
        if mine == txn:
            continue
        if mine is not None or _txn_time(txn) < cutoff:
            out.setdefault(txn, []).append(batch)
    return out


@dataclass(frozen=True, kw_only=True)
class Maintenance:
    """What a :func:`compact_lake` or :func:`vacuum_lake` call did, per table."""

    tables: Mapping[str, Mapping[str, object]]

    def __repr__(self) -> str:
        parts = [
            f"{name}: " + ", ".join(f"{k} {v}" for k, v in stats.items())
            for name, stats in self.tables.items()
        ]
        return "Maintenance(" + "; ".join(parts) + ")"


def compact_lake(
    lake: str | os.PathLike[str],
    *,
    target_size: int | None = None,
    grace: dt.timedelta = dt.timedelta(hours=24),
    storage_options: StorageOptions = None,
) -> Maintenance:
    """Merge small files of every lake table; drop rows no reader can see.

    Uncommitted rows (written by an attempt that never reached the ledger: a killed writer,
    or a writer that lost a document to another) are deleted when their document is ledgered
    under another attempt or when they are older than ``grace``. Then small files are
    rewritten into large ones (``target_size`` bytes, delta-rs' default 100 MiB). Every
    committed row stays; readers are unaffected while it runs (they read the version they
    opened; old files stay until :func:`vacuum_lake`).

    Examples
    --------
    >>> scfeeds.compact_lake("lake")  # doctest: +SKIP
    """
    ledger = read_ledger(lake, storage_options=storage_options)
    out: dict[str, dict[str, Any]] = {}
    for name in all_tables():
        if _open(lake, name, storage_options) is None:
            continue
        stats: dict[str, Any] = {}
        if name != LEDGER:
            invisible = _invisible(lake, name, ledger, grace, storage_options)
            stats["uncommitted_rows_deleted"] = sum(
                _delete_rows(lake, [name], txn, sorted(batches), storage_options)
                for txn, batches in sorted(invisible.items())
            )
        metrics: dict[str, Any] = {}
        for attempt in range(MAX_ATTEMPTS):
            table = _open(lake, name, storage_options)
            if table is None:
                break
            try:
                metrics = table.optimize.compact(target_size=target_size)
                break
            except Exception as exc:
                if not _conflict(exc) or attempt == MAX_ATTEMPTS - 1:
                    raise
                _backoff(min(attempt, 6))
        stats["files_removed"] = int(metrics.get("numFilesRemoved", 0))
        stats["files_added"] = int(metrics.get("numFilesAdded", 0))
        out[name] = stats
    return Maintenance(tables=out)


def vacuum_lake(
    lake: str | os.PathLike[str],
    *,
    retention: dt.timedelta = dt.timedelta(days=7),
    dry_run: bool = False,
    storage_options: StorageOptions = None,
) -> Maintenance:
    """Delete files no version younger than ``retention`` refers to (after compaction).

    Time travel to versions older than ``retention`` stops working for the deleted files;
    readers of newer versions are unaffected. ``dry_run=True`` only lists what would go.

    Examples
    --------
    >>> scfeeds.vacuum_lake("lake", retention=datetime.timedelta(days=30))  # doctest: +SKIP
    """
    hours = max(0, int(retention.total_seconds() // 3600))
    out: dict[str, dict[str, Any]] = {}
    for name in all_tables():
        table = _open(lake, name, storage_options)
        if table is None:
            continue
        files = table.vacuum(
            retention_hours=hours, dry_run=dry_run, enforce_retention_duration=False
        )
        out[name] = {"files_deleted" if not dry_run else "files_to_delete": len(files)}
    return Maintenance(tables=out)


def lake_history(
    lake: str | os.PathLike[str],
    table: str = LEDGER,
    *,
    limit: int | None = None,
    storage_options: StorageOptions = None,
) -> pl.DataFrame:
    """Commits of one lake table, newest first: version, timestamp, operation, metrics."""
    table_ = _open(lake, table, storage_options)
    cols: dict[str, pl.DataType] = {
        "version": pl.Int64(),
        "timestamp": pl.Datetime("ms", "UTC"),
        "operation": pl.String(),
        "rows_written": pl.Int64(),
        "files_added": pl.Int64(),
        "files_removed": pl.Int64(),
    }
    if table_ is None:
        return pl.DataFrame(schema=cols)
    rows = []
    for h in table_.history(limit):
        metrics = h.get("operationMetrics") or {}
        rows.append(
            {
                "version": h.get("version"),
                "timestamp": dt.datetime.fromtimestamp(int(h.get("timestamp", 0)) / 1000, dt.UTC),
                "operation": h.get("operation"),
                "rows_written": metrics.get("num_added_rows", metrics.get("numOutputRows")),
                "files_added": metrics.get("num_added_files", metrics.get("numFilesAdded")),
                "files_removed": metrics.get("num_removed_files", metrics.get("numFilesRemoved")),
            }
        )
    return pl.DataFrame(rows, schema=cols, strict=False)


def data_files(
    lake: str | os.PathLike[str], *, storage_options: StorageOptions = None
) -> Iterator[tuple[str, int]]:
    """``(table, number of data files)`` of the current version of every table."""
    for name in all_tables():
        table = _open(lake, name, storage_options)
        if table is not None:
            yield name, len(table.file_uris())
