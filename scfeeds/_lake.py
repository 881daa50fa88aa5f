"""The Parquet lake: idempotent, atomic batch commits and the lazy reader over them.

Layout (plain Parquet with hive partitions, readable by any engine)::

    lake/
      po_lines/supplier_id=SUP001/part-<batch>.parquet      good rows (supplier_id in the path)
      _quarantine/po_lines/part-<batch>.parquet              rows that broke a rule, with the reason
      _errors/part-<batch>.parquet                           parse errors (file, position, rule)
      _commits/<batch>.json                                  the commit record, written last

A *batch* is one landed source file; its id is derived from the file's content (sha256) and
the parser version, so ingesting the same bytes twice writes the same file names: a repeated
batch (a re-run, or a task re-run by a cluster after a worker died) replaces files with
identical ones and never duplicates rows. Every file is written to a temporary name and renamed
into place; the commit record is renamed last, and `scan_lake` reads only files named by a
commit record, so a batch interrupted half-way is invisible.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from scfeeds.exceptions import ConfigurationError
from scfeeds.schemas import ERRORS as ERROR_SCHEMA
from scfeeds.schemas import TABLES, TableName, schema

# Bumped when parsing or validation changes what a batch produces, so that a re-ingest with a
# new version writes new batch ids instead of mixing old and new rows under one id.
LAKE_FORMAT = 1

COMMITS = "_commits"
QUARANTINE = "_quarantine"
ERRORS = "_errors"


def batch_id(sha256: str, *, salt: str = "") -> str:
    """Deterministic batch id for a landed file's content."""
    import hashlib

    return hashlib.sha256(f"{LAKE_FORMAT}:{salt}:{sha256}".encode()).hexdigest()[:24]


def _clear_stale_temps(path: Path) -> None:
    # A writer killed between mkstemp and rename leaves `.name.XXXX.tmp` beside the target;
    # the batch was not committed, so it is being redone now: its leftovers can go.
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _clear_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_write_parquet(frame: pl.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _clear_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        frame.write_parquet(tmp, compression="zstd", statistics=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True, kw_only=True)
class Commit:
    """What one batch wrote; the JSON commit record of the lake."""

    batch: str
    source: str
    sha256: str
    files: tuple[str, ...]  # relative to the lake root
    rows: Mapping[str, int] = field(default_factory=dict)  # table -> good rows
    quarantined: int = 0
    errors: int = 0

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "format": LAKE_FORMAT,
                "batch": self.batch,
                "source": self.source,
                "sha256": self.sha256,
                "files": list(self.files),
                "rows": dict(self.rows),
                "quarantined": self.quarantined,
                "errors": self.errors,
            },
            indent=1,
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Commit:
        d: dict[str, Any] = json.loads(data)
        return cls(
            batch=d["batch"],
            source=d["source"],
            sha256=d["sha256"],
            files=tuple(d["files"]),
            rows=dict(d["rows"]),
            quarantined=int(d["quarantined"]),
            errors=int(d["errors"]),
        )


def is_committed(lake: str | os.PathLike[str], batch: str) -> bool:
    return (Path(lake) / COMMITS / f"{batch}.json").is_file()


def commit_batch(
    lake: str | os.PathLike[str],
    *,
    batch: str,
    source: str,
    sha256: str,
    tables: Mapping[TableName, pl.DataFrame],
    quarantine: Mapping[TableName, pl.DataFrame],
    errors: pl.DataFrame | None,
) -> Commit:
    """Write one batch's frames to the lake and commit it (idempotent, atomic).

    ``tables`` hold validated canonical rows; they are partitioned by ``supplier_id`` (null
    supplier ids go to ``supplier_id=__null__``). The commit record is written last.
    """
    root = Path(lake)
    files: list[str] = []
    rows: dict[str, int] = {}
    for table, frame in tables.items():
        if frame.height == 0:
            continue
        rows[table] = frame.height
        keyed = frame.with_columns(pl.col("supplier_id").fill_null("__null__"))
        for (supplier,), part in keyed.partition_by(
            "supplier_id", as_dict=True, maintain_order=True
        ).items():
            rel = f"{table}/supplier_id={supplier}/part-{batch}.parquet"
            _atomic_write_parquet(part.drop("supplier_id"), root / rel)
            files.append(rel)
    n_quarantined = 0
    for table, frame in quarantine.items():
        if frame.height == 0:
            continue
        n_quarantined += frame.height
        rel = f"{QUARANTINE}/{table}/part-{batch}.parquet"
        _atomic_write_parquet(frame, root / rel)
        files.append(rel)
    n_errors = 0
    if errors is not None and errors.height:
        n_errors = errors.height
        rel = f"{ERRORS}/part-{batch}.parquet"
        _atomic_write_parquet(errors, root / rel)
        files.append(rel)
    commit = Commit(
        batch=batch,
        source=source,
        sha256=sha256,
        files=tuple(files),
        rows=rows,
        quarantined=n_quarantined,
        errors=n_errors,
    )
    _atomic_write_bytes(root / COMMITS / f"{batch}.json", commit.to_json())
    return commit


def commits(lake: str | os.PathLike[str]) -> Iterator[Commit]:
    """Every commit record of the lake, in batch-id order."""
    folder = Path(lake) / COMMITS
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.json")):
        yield Commit.from_json(path.read_bytes())


def _committed_files(lake: Path, prefix: str) -> list[str]:
    return sorted(str(lake / f) for c in commits(lake) for f in c.files if f.startswith(prefix))


def scan_lake(
    lake: str | os.PathLike[str],
    table: TableName | str,
    *,
    kind: str = "good",
) -> pl.LazyFrame:
    """Lazily read one table of the lake: only committed batches.

    Parameters
    ----------
    lake
        The lake folder written by :func:`scfeeds.ingest`.
    table
        ``"po_lines"``, ``"asn_lines"``, ``"invoice_lines"`` or ``"receipts"``; with
        ``kind="errors"`` the table is ignored.
    kind
        ``"good"`` (validated rows, canonical schema), ``"quarantine"`` (rows that broke a
        rule, with ``rule`` and ``message``) or ``"errors"`` (parse errors).

    Examples
    --------
    >>> scfeeds.scan_lake("lake", "po_lines").filter(pl.col("supplier_id") == "SUP001")
    ... # doctest: +SKIP
    """
    root = Path(lake)
    if kind == "errors":
        files = _committed_files(root, f"{ERRORS}/")
        if not files:
            return pl.LazyFrame(schema=ERROR_SCHEMA)
        return pl.scan_parquet(files)
    if table not in TABLES:
        raise ConfigurationError(f"unknown table {table!r}; expected one of {', '.join(TABLES)}")
    canonical = schema(table)
    if kind == "quarantine":
        files = _committed_files(root, f"{QUARANTINE}/{table}/")
        if not files:
            return pl.LazyFrame(schema=QUARANTINE_EXTRA | dict(canonical))
        return pl.scan_parquet(files, missing_columns="insert", extra_columns="ignore")
    if kind != "good":
        raise ConfigurationError(f"kind must be 'good', 'quarantine' or 'errors', not {kind!r}")
    files = _committed_files(root, f"{table}/")
    if not files:
        return pl.LazyFrame(schema=canonical)
    return (
        pl.scan_parquet(
            files,
            hive_partitioning=True,
            hive_schema={"supplier_id": pl.String()},
        )
        .with_columns(
            pl.when(pl.col("supplier_id") == "__null__")
            .then(None)
            .otherwise(pl.col("supplier_id"))
            .alias("supplier_id")
        )
        .select(list(canonical))
    )


QUARANTINE_EXTRA: dict[str, pl.DataType] = {
    "rule": pl.String(),
    "message": pl.String(),
}
