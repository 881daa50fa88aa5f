"""Reading exports: ``scan_export`` (lazy, one file after another in bounded batches) and
``read_export`` (eager, with the error rows as data on request)."""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, NamedTuple, TypedDict, Unpack, overload

import polars as pl

from scfeeds._exports._dialect import ExportFormat
from scfeeds._exports._plan import (
    _CHUNK,
    _SMALL_FILE,
    Sources,
    _csv_options,
    _failure,
    _Plan,
    _plans,
)
from scfeeds._exports._rows import _rows_and_errors, _split, _verdict
from scfeeds._iosource import Pushdown, scan_batches
from scfeeds._presets import ExportPreset
from scfeeds.exceptions import ConfigurationError, ExportError, ExportWarning
from scfeeds.schemas import ERRORS, TableName, empty, empty_errors, schema

ErrorMode = Literal["warn", "raise", "collect"]


class ExportResult(NamedTuple):
    """Rows of an export in the canonical schema, and the problems met while reading it."""

    rows: pl.DataFrame
    errors: pl.DataFrame


class ExportOptions(TypedDict, total=False):
    """The options of :func:`scan_export`, which :func:`read_export` passes on as they are."""

    table: TableName | None
    preset: ExportPreset | str | None
    columns: Mapping[str, str] | None
    fmt: ExportFormat | None


_INFO_RULES: Final = frozenset(
    {"REPEATED_HEADER", "TOTALS_ROW", "UNKNOWN_COLUMNS", "MISSING_OPTIONAL_COLUMNS"}
)


@contextlib.contextmanager
def _utf8_file(plan: _Plan) -> Iterator[Path]:
    """The file itself, or a UTF-8 copy of a latin-1 file (transcoded 1 MiB at a time)."""
    if plan.encoding == "utf-8":
        yield plan.path
        return
    fd, name = tempfile.mkstemp(prefix="scfeeds-", suffix=".csv")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out, plan.path.open("rb") as src:
            while chunk := src.read(_CHUNK):
                out.write(chunk.decode("latin-1").encode("utf-8"))
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def _file_frame(plan: _Plan, sheet: pl.DataFrame | None, path: Path) -> pl.LazyFrame:
    if sheet is not None:
        raw = sheet.lazy().with_row_index("_row")
    else:
        raw = pl.scan_csv(path, skip_lines=plan.skip_lines, **_csv_options(plan))
    return _rows_and_errors(raw, plan)


def _batches(
    plan: _Plan, sheet: pl.DataFrame | None, chunk_size: int | None = None
) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    """(good rows, error rows) batches of one file, in file order."""
    if plan.notes:
        yield (
            pl.DataFrame(schema=schema(plan.table)),
            pl.DataFrame(
                [(plan.source, p, r, m) for p, r, m in plan.notes],
                schema=ERRORS,
                orient="row",
            ),
        )
    with _utf8_file(plan) as path:
        lf = _file_frame(plan, sheet, path)
        _, message = _verdict(plan)
        try:
            # A small file is one in-memory query: starting the streaming engine costs more
            # than reading it.
            small = sheet is not None or path.stat().st_size <= _SMALL_FILE
            batches = (
                iter([lf.collect(engine="in-memory")])
                if small and chunk_size is None
                else lf.collect_batches(chunk_size=chunk_size)
            )
            for batch in batches:
                yield _split(batch, plan.table, message)
        except pl.exceptions.PolarsError as exc:
            raise ExportError(
                f"{plan.source}: cannot be read as {plan.delimiter!r}-separated text ({exc})",
                source=plan.source,
                position="file",
                rule="CSV_SYNTAX",
            ) from exc


def _warn(errors: Sequence[pl.DataFrame]) -> None:
    """One ExportWarning per file summarising its problems (rows excluded, columns ignored)."""
    if not errors:
        return
    frame = pl.concat(errors)
    if frame.height == 0:
        return
    for (src,), part in frame.group_by("source", maintain_order=True):
        counts = part.group_by("rule", maintain_order=True).len()
        summary = ", ".join(f"{n} {r}" for r, n in counts.iter_rows())
        first = part.row(0, named=True)
        warnings.warn(
            f"{src}: {summary} (first: {first['message']}); "
            "read_export(..., errors='collect') returns them as rows",
            ExportWarning,
            stacklevel=3,
        )


def scan_export(
    source: Sources,
    *,
    table: TableName | None = None,
    preset: ExportPreset | str | None = None,
    columns: Mapping[str, str] | None = None,
    fmt: ExportFormat | None = None,
) -> pl.LazyFrame:
    """Lazily read supplier CSV / XLSX exports into a canonical table.

    Parameters
    ----------
    source
        A path, a glob (``"feeds/*/po_lines/*.csv"``) or a list of them. Every file must map to
        the same table.
    table
        Canonical table to read. ``None`` picks, per file, the table (and preset) whose headers
        match the file's header row best. A header of the canonical column names themselves
        (``po_number``, ``qty_ordered``..., as ``write_csv`` of a canonical frame writes it)
        is recognised too; presets win a tie.
    preset
        An :class:`~scfeeds._presets.ExportPreset` or its name. ``None`` tries every preset in
        ``PRESETS``. The preset gives header names and the number / date dialect.
    columns
        Explicit header mapping (needs ``table``); overrides the preset's headers. Either way
        round: when its keys are all canonical columns of ``table`` it is read as canonical ->
        header (``{"po_number": "PO #"}``), when its values are, as header -> canonical
        (``{"PO #": "po_number"}``, polars' ``rename`` convention); which one was taken is
        logged (logger ``scfeeds.exports``, level INFO). A ``ConfigurationError`` says why
        when it cannot be told (both sides canonical names, neither, or two headers for one
        column). Without a preset the dialect is guessed: ``;``-separated files use a decimal
        comma.
    fmt
        ``"csv"`` or ``"xlsx"``; ``None`` decides from the file extension.

    Returns
    -------
    pl.LazyFrame
        ``schema(table)``: provenance (``source`` as given, ``position`` ``"row N"``, the
        N-th record after the header row) and the table's columns. Strings are stripped, blanks
        are null, ``uom`` / ``currency`` upper-cased, ``line_number`` without leading zeros.

    Notes
    -----
    What the reader handles: UTF-8 with or without BOM and latin-1 (decided from the bytes;
    latin-1 is transcoded to a temporary UTF-8 file in 1 MiB chunks at collect time), any of
    ``, ; TAB |`` as delimiter, title lines above the header, thousands separators, decimal
    commas, accounting negatives ``(1.00)`` and ``1.00-``, currency symbols, the preset's date
    format then unambiguous ISO / German / compact / month-name dates and Excel serial days,
    blank rows, repeated header rows and totals rows (skipped), unknown columns (ignored).

    Rows whose cells cannot be parsed (rules ``BAD_NUMBER``, ``BAD_DATE``) are not delivered:
    at collect time one :class:`ExportWarning` per file names them; use
    ``read_export(..., errors="collect")`` to get them as data.

    Raises
    ------
    ExportError
        At scan time, rule ``MISSING_COLUMNS``: a required column (``REQUIRED``) is missing or
        no header row is recognised; the message names the columns and the file.

    Examples
    --------
    >>> lf = scan_export("feeds/SUP002/po_lines/*.csv", table="po_lines")  # doctest: +SKIP
    >>> lf.filter(pl.col("qty_ordered") > 100).collect()  # doctest: +SKIP
    """
    plans = _plans(source, table=table, preset=preset, columns=columns, fmt=fmt)
    target = schema(plans[0][0].table) if plans else schema(table or "po_lines")

    def batches(ask: Pushdown) -> Iterator[pl.DataFrame]:
        problems: list[pl.DataFrame] = []
        for plan, sheet in plans:
            for good, bad in _batches(plan, sheet, ask.batch_size):
                if bad.height:
                    problems.append(bad)
                yield good
        _warn(problems)

    return scan_batches(batches, schema=target, name="scfeeds.scan_export")


@overload
def read_export(
    source: Sources, *, errors: Literal["warn", "raise"] = ..., **options: Unpack[ExportOptions]
) -> pl.DataFrame: ...
@overload
def read_export(
    source: Sources, *, errors: Literal["collect"], **options: Unpack[ExportOptions]
) -> ExportResult: ...
def read_export(
    source: Sources, *, errors: ErrorMode = "warn", **options: Unpack[ExportOptions]
) -> pl.DataFrame | ExportResult:
    """Read supplier CSV / XLSX exports into a canonical table (eager :func:`scan_export`).

    Parameters
    ----------
    source, table, preset, columns, fmt
        As for :func:`scan_export`.
    errors
        What to do with rows that cannot be parsed, skipped rows and ignored columns:

        - ``"warn"`` (default): return the good rows; one :class:`ExportWarning` per file
          names the problems (same as ``scan_export(...).collect()``);
        - ``"collect"``: return ``ExportResult(rows, errors)``; ``errors`` has one row per
          problem (``source, position, rule, message``), including files that could not be
          read at all (``MISSING_COLUMNS``, ``CSV_SYNTAX``, ``XLSX_SYNTAX``) and skipped
          ``TOTALS_ROW`` / ``REPEATED_HEADER`` rows;
        - ``"raise"``: raise :class:`~scfeeds.exceptions.ExportError` at the first row that
          cannot be parsed.

    Examples
    --------
    >>> rows, errors = read_export("po.csv", table="po_lines", errors="collect")  # doctest: +SKIP
    """
    if errors == "warn":
        return scan_export(source, **options).collect()
    if errors not in ("raise", "collect"):
        raise ConfigurationError(f"errors={errors!r}; expected 'warn', 'raise' or 'collect'")
    read = _Collector(errors)
    plans = _plans(source, **options, on_plan_error=read.failed if errors == "collect" else None)
    for plan, sheet in plans:
        read.file(plan, sheet)
    tname = plans[0][0].table if plans else (options.get("table") or "po_lines")
    frame = pl.concat([empty(tname), *read.rows]) if read.rows else empty(tname)
    if errors == "raise":
        _warn(read.problems)
        return frame
    return ExportResult(frame, pl.concat([empty_errors(), *read.problems]))


@dataclass
class _Collector:
    """Rows and error rows of ``read_export(errors="raise" | "collect")``, file by file."""

    errors: Literal["raise", "collect"]
    rows: list[pl.DataFrame] = field(default_factory=list)
    problems: list[pl.DataFrame] = field(default_factory=list)

    def failed(self, exc: ExportError, name: str) -> None:
        """A file that cannot be read at all: one error row (``"collect"`` only)."""
        self.problems.append(pl.DataFrame([_failure(name, exc)], schema=ERRORS, orient="row"))

    def file(self, plan: _Plan, sheet: pl.DataFrame | None) -> None:
        try:
            for good, bad in _batches(plan, sheet):
                self.rows.append(good)
                if self.errors == "raise":
                    _raise_first(bad)
                self.problems.append(bad)
        except ExportError as exc:
            if self.errors == "raise":
                raise
            self.failed(exc, plan.source)


def _raise_first(bad: pl.DataFrame) -> None:
    """``ExportError`` for the first row that could not be read (skipped rows and ignored
    columns are information, not errors)."""
    hard = bad.filter(~pl.col("rule").is_in(list(_INFO_RULES)))
    if hard.height:
        raise ExportError.from_row(hard.row(0, named=True))
