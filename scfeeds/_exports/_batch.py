"""Reading many small CSV exports together: one typing query per layout, not one per file
(see :func:`read_export_batch`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import polars as pl

from scfeeds._exports._plan import (
    _HEADER_SCAN_LINES,
    _SMALL_FILE,
    _SNIFF_BYTES,
    _Candidate,
    _candidates,
    _csv_options,
    _failure,
    _Plan,
    _plan_csv,
)
from scfeeds._exports._rows import _rows_and_errors, _split, _verdict
from scfeeds.exceptions import ExportError
from scfeeds.schemas import ERRORS, TableName, empty_errors


def _read_joined(
    files: list[tuple[int, _Plan, bytes]],
    accept: Callable[[list[int], _Plan, pl.DataFrame], None],
) -> list[tuple[int, _Plan, bytes]]:
    """Read the files of one layout whose records are their lines in one ``read_csv``.

    A file qualifies when no quoted field spans lines (an even number of quotes on each
    line) and no line is blank: then each line after the header is one record, and a
    ``<file index><delimiter>`` prefix on each line tells the records apart. Files with the
    same header line (and title lines) are joined under one header; ``_row`` is counted per
    file. Returns the files left to one ``read_csv`` each (and their bytes to read).
    """
    alone: list[tuple[int, _Plan, bytes]] = []
    by_header: dict[bytes, list[tuple[int, _Plan, list[bytes]]]] = {}
    for job, plan, data in files:
        lines = data.removeprefix(b"\xef\xbb\xbf").split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        head = plan.skip_lines + 1
        body = lines[head:]
        if len(lines) < head or any(
            line.count(b'"') % 2 or not line.strip(b"\r") for line in lines
        ):
            alone.append((job, plan, data))
            continue
        by_header.setdefault(b"\n".join(lines[:head]), []).append((job, plan, body))
    for header, members in by_header.items():
        if len(members) == 1:
            job, plan, body = members[0]
            alone.append((job, plan, b"\n".join([header, *body, b""])))
            continue
        plan = members[0][1]
        sep = plan.delimiter.encode()
        first = header.split(b"\n")[-1]
        out = [b"__src" + sep + first]
        for job, _, body in members:
            tag = str(job).encode() + sep
            out.extend(tag + line for line in body)
        out.append(b"")
        try:
            frame = pl.read_csv(b"\n".join(out), **_csv_options(plan)).with_columns(
                pl.col("__src").cast(pl.UInt32)
            )
        except pl.exceptions.PolarsError:
            alone.extend((job, p, b"\n".join([header, *body, b""])) for job, p, body in members)
            continue
        frame = frame.with_columns(
            pl.int_range(pl.len()).over("__src").cast(frame.schema["_row"]).alias("_row")
        )
        accept([job for job, _, _ in members], plan, frame)
    return alone


class ExportBatch(NamedTuple):
    """Rows and error rows of many exports read together (see :func:`read_export_batch`).

    ``rows`` per table and ``errors`` (``ERRORS``) carry ``__job``, the item's index, and come
    in item order (per item, in file order); ``declined`` are the indices left to one
    :func:`read_export` call each.
    """

    rows: dict[TableName, pl.DataFrame]
    errors: pl.DataFrame
    declined: list[int]


def _layout_of(plan: _Plan) -> tuple[object, ...]:
    """What the typing query of a file depends on (its path and name aside)."""
    return (
        plan.table,
        plan.fmt,
        tuple(plan.mapping.items()),
        plan.decimal_comma,
        plan.thousands,
        plan.date_formats,
    )


def read_export_batch(items: Sequence[tuple[Path, str, TableName | None]]) -> ExportBatch:
    """Read many small CSV exports, ``(path, name, table)`` each, in one query per layout.

    Per file: one decode and one ``read_csv`` of its bytes; the header is planned once per
    distinct header (the lines up to and including it) and the typing and checking query
    runs once over the records of every file of one layout, each record keeping its file's
    name as ``source`` and its own ``row N``. Rows and error rows are those of
    ``read_export(path, table=table, errors="collect")`` per file (rows renamed to ``name``),
    in item order: one file's ``MISSING_COLUMNS`` or ``CONTROL_CHARACTER`` rows cost that
    file only. Files over 1 MiB and files polars cannot read as planned are declined (one
    ``read_export`` call each gives them their own rows and ``CSV_SYNTAX`` row).
    """
    batch = _Batch([name for _, name, _ in items])
    for job, (path, _, table) in enumerate(items):
        batch.plan(job, path, table)
    for files in batch.pending.values():
        batch.read_layout(files)
    return batch.typed()


@dataclass
class _Batch:
    """What ``read_export_batch`` learns, stage by stage: ``plan`` each file, ``read_layout``
    the files of one layout into records, then ``typed`` runs one query per layout."""

    names: list[str]
    declined: list[int] = field(default_factory=list)
    # error rows, each with __job (the item) and __k (0: planning notes, 1: row checks)
    problems: list[pl.DataFrame] = field(default_factory=list)
    candidates: dict[TableName | None, list[_Candidate]] = field(default_factory=dict)
    # planned headers: (table, encoding, first line) -> [(lines up to the header, plan)]
    known: dict[tuple[object, ...], list[tuple[tuple[str, ...], _Plan]]] = field(
        default_factory=dict
    )
    pending: dict[tuple[object, ...], list[tuple[int, _Plan, bytes]]] = field(default_factory=dict)
    groups: dict[tuple[object, ...], tuple[_Plan, list[pl.DataFrame]]] = field(default_factory=dict)

    def problem(self, rows: Sequence[tuple[str, str, str, str]], job: int, kind: int) -> None:
        frame = pl.DataFrame(rows, schema=ERRORS, orient="row")
        self.problems.append(
            frame.with_columns(
                pl.lit(job, dtype=pl.UInt32).alias("__job"), pl.lit(kind, pl.UInt8).alias("__k")
            )
        )

    def plan(self, job: int, path: Path, table: TableName | None) -> None:
        """Read one file's bytes (as UTF-8) and plan it, or reuse the plan of a file whose
        lines up to the header are the same; queue it under its layout."""
        try:
            if path.stat().st_size > _SMALL_FILE:
                self.declined.append(job)
                return
            data = path.read_bytes()
        except OSError:
            self.declined.append(job)
            return
        try:
            data.decode("utf-8")
            encoding = "utf-8"
        except UnicodeDecodeError:
            encoding = "latin-1"
        head = data[:_SNIFF_BYTES].decode(encoding, errors="ignore").lstrip("\ufeff")
        lines = head.splitlines()[:_HEADER_SCAN_LINES]
        if encoding == "latin-1":
            data = data.decode("latin-1").encode("utf-8")
        key = (table, encoding, lines[0] if lines else "")
        plan = self._known_plan(key, lines, path) or self._new_plan(key, lines, job, path, table)
        if plan is not None:
            self.pending.setdefault(_layout_of(plan), []).append((job, plan, data))

    def _known_plan(self, key: tuple[object, ...], lines: list[str], path: Path) -> _Plan | None:
        for prefix, seen in self.known.get(key, []):
            if tuple(lines[: len(prefix)]) == prefix:
                return dataclasses.replace(seen, path=path, source=str(path))
        return None

    def _new_plan(
        self,
        key: tuple[object, ...],
        lines: list[str],
        job: int,
        path: Path,
        table: TableName | None,
    ) -> _Plan | None:
        if table not in self.candidates:
            self.candidates[table] = _candidates(table, None, None)
        try:
            plan = _plan_csv(path, str(path), self.candidates[table])
        except ExportError as exc:
            self.problem([_failure(self.names[job], exc)], job, 0)
            return None
        except OSError:
            self.declined.append(job)
            return None
        prefix = tuple(lines[: plan.skip_lines + 1])
        self.known.setdefault(key, []).append((prefix, plan))
        return plan

    def accept(self, jobs: list[int], plan: _Plan, frame: pl.DataFrame) -> None:
        """Records of ``jobs`` (``__src`` tells them apart), read with ``plan``."""
        for job in jobs if plan.notes else []:  # notes depend on the header: same for all
            self.problem([(self.names[job], p, r, m) for p, r, m in plan.notes], job, 0)
        self.groups.setdefault(_layout_of(plan), (plan, []))[1].append(frame)

    def read_layout(self, files: list[tuple[int, _Plan, bytes]]) -> None:
        """The records of the files of one layout: joined where they can be, else one
        ``read_csv`` each (a file polars refuses is declined: ``read_export`` gives it its
        ``CSV_SYNTAX`` row)."""
        for job, plan, data in _read_joined(files, self.accept):
            try:
                frame = pl.read_csv(data, skip_lines=plan.skip_lines, **_csv_options(plan))
            except pl.exceptions.PolarsError:
                self.declined.append(job)
                continue
            frame = frame.with_columns(pl.lit(job, dtype=pl.UInt32).alias("__src"))
            self.accept([job], plan, frame)

    def typed(self) -> ExportBatch:
        """One typing and checking query per layout; rows and error rows in item order."""
        parts: dict[TableName, list[pl.DataFrame]] = {}
        job, kind = pl.col("__src").alias("__job"), pl.lit(1, pl.UInt8).alias("__k")
        for plan, frames in self.groups.values():
            records = pl.concat(frames, how="diagonal").lazy()
            batch = _rows_and_errors(records, plan, names=self.names).collect(engine="in-memory")
            _, message = _verdict(plan)
            good, bad = _split(batch, plan.table, message, job, kind)
            parts.setdefault(plan.table, []).append(good.drop("__k"))
            self.problems.append(bad)
        rows = {t: pl.concat(f).sort("__job", maintain_order=True) for t, f in parts.items()}
        no_problems = empty_errors().with_columns(
            pl.lit(None, pl.UInt32).alias("__job"), pl.lit(None, pl.UInt8).alias("__k")
        )
        errors = pl.concat([no_problems, *self.problems]).sort(
            ["__job", "__k"], maintain_order=True
        )
        return ExportBatch(rows, errors.drop("__k"), self.declined)
