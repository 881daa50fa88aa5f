"""Planning the read of one export before any row is typed: encoding, delimiter, header row,
which table and preset its headers belong to, and the number / date dialect."""

from __future__ import annotations

import codecs
import csv
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import polars as pl

from scfeeds._archive import is_reader_panic
from scfeeds._exports._dialect import ExportFormat, _resolve_preset
from scfeeds._presets import PRESETS, ExportPreset
from scfeeds._sources import resolve_sources
from scfeeds.exceptions import ConfigurationError, ExportError
from scfeeds.schemas import COLUMNS, SPECS, TableName

Sources = str | Path | Sequence[str | Path]
"""What the readers take: a path, a glob, or a list of them."""

_Candidate = tuple[ExportPreset | None, TableName, dict[str, str]]
"""A layout a header row may match: (preset or none, table, canonical -> header)."""


REQUIRED: Final[dict[TableName, tuple[str, ...]]] = {
    t: s.export for t, s in SPECS.items() if s.export
}
"""Canonical columns an export must have (else ``ExportError``, rule ``MISSING_COLUMNS``).
Other columns of the mapping that the file lacks are read as null, with a warning."""

_SNIFF_BYTES: Final = 64 * 1024
_HEADER_SCAN_LINES: Final = 30
_DELIMITERS: Final = (",", ";", "\t", "|")
_CHUNK: Final = 1 << 20
# Files up to this size are read in one in-memory query (and batched by read_export_batch):
# starting the streaming engine costs more (about 6 ms a file) than reading them.
_SMALL_FILE: Final = 1024 * 1024

# Unambiguous date spellings tried after the preset's own format (slash dates are only read
# with the preset's order: 01/02/2026 means different days in Chicago and in Berlin).
_FALLBACK_DATES: Final = (
    "%Y-%m-%d",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%d.%m.%Y",
    "%Y%m%d",
    "%d-%b-%Y",
    "%d %b %Y",
    "%b %d, %Y",
)


def _norm(name: str) -> str:
    return " ".join(name.replace("\ufeff", "").split()).casefold()


@dataclass(frozen=True)
class _Plan:
    """Everything learnt about one file before its rows are read."""

    path: Path
    source: str
    fmt: ExportFormat
    table: TableName
    mapping: dict[str, str]  # canonical -> header as it appears in the file
    delimiter: str
    encoding: str  # "utf-8" or "latin-1" (BOM is handled by polars)
    skip_lines: int
    decimal_comma: bool
    thousands: str | None
    date_formats: tuple[str, ...]
    notes: tuple[tuple[str, str, str], ...]  # (position, rule, message) found while planning


_log = logging.getLogger("scfeeds.exports")


def _oriented(columns: Mapping[str, str], table: TableName) -> dict[str, str]:
    """``columns=`` as canonical -> header, whichever way round it was given.

    Keys all canonical: canonical -> header (this reader's own convention). Values all
    canonical: header -> canonical (polars' ``rename`` and pandas' convention), inverted.
    Both (other than an identity mapping) or neither: a ``ConfigurationError`` saying why.
    """
    canonical = COLUMNS[table]
    keys_canonical = all(k in canonical for k in columns)
    values_canonical = all(v in canonical for v in columns.values())
    if keys_canonical and values_canonical and any(k != v for k, v in columns.items()):
        raise ConfigurationError(
            f"columns= is ambiguous: its keys and its values are all {table} column names, so "
            "it could map either way; map canonical -> header with the file's own headers"
        )
    if keys_canonical:
        _log.info("columns= read as canonical -> header (its keys are %s columns)", table)
        return dict(columns)
    if values_canonical:
        twice = sorted({v for v in columns.values() if list(columns.values()).count(v) > 1})
        if twice:
            raise ConfigurationError(
                f"columns= maps several headers to {', '.join(twice)}: give each "
                "canonical column one header"
            )
        _log.info("columns= read as header -> canonical (its values are %s columns)", table)
        return {v: k for k, v in columns.items()}
    keys = [k for k in columns if k not in canonical]
    values = [v for v in columns.values() if v not in canonical]
    raise ConfigurationError(
        f"columns= must map canonical -> header or header -> canonical, but neither side is "
        f"all {table} column names (keys not canonical: {', '.join(keys)}; values not "
        f"canonical: {', '.join(values)}); {table} has {', '.join(canonical)}"
    )


def _candidates(
    table: TableName | None, preset: ExportPreset | str | None, columns: Mapping[str, str] | None
) -> list[_Candidate]:
    if columns is not None:
        if table is None:
            raise ConfigurationError("columns= maps headers for one table: pass table= too")
        if table not in COLUMNS:
            raise ConfigurationError(
                f"unknown table {table!r}; expected one of {', '.join(COLUMNS)}"
            )
        chosen = _resolve_preset(preset) if preset is not None else None
        return [(chosen, table, _oriented(columns, table))]
    presets = [_resolve_preset(preset)] if preset is not None else list(PRESETS.values())
    tables = [table] if table is not None else list(COLUMNS)
    if table is not None and table not in COLUMNS:
        raise ConfigurationError(f"unknown table {table!r}; expected one of {', '.join(COLUMNS)}")
    # A header of the canonical names themselves (a frame written with write_csv) is a layout
    # too, tried after the presets (they win ties); its dialect is the preset's, if one is
    # given, else guessed.
    chosen = presets[0] if preset is not None else None
    canonical = [(chosen, t, {c: c for c in COLUMNS[t]}) for t in tables]
    return [(p, t, p.header(t)) for p in presets for t in tables if t in p.columns] + canonical


def _score(
    cells: Sequence[str],
    candidates: Sequence[_Candidate],
) -> tuple[int, int]:
    """(matched headers, -candidate index) of the best candidate for a header row."""
    found = {_norm(c) for c in cells if c.strip()}
    best = (0, 0)
    for i, (_, _, mapping) in enumerate(candidates):
        hit = sum(_norm(h) in found for h in mapping.values())
        best = max(best, (hit, -i))
    return best


def _sniff_encoding(path: Path) -> tuple[str, bytes]:
    """``"utf-8"`` or ``"latin-1"``, and the first bytes of the file.

    The bytes decide, not a preset's declared encoding: UTF-8 is checked over the whole
    file (in chunks, C speed), since portals change code pages, and a non-ASCII name on
    row 900,000 must not crash the read. A pure-ASCII file is read as UTF-8 whatever the
    preset says (same bytes).
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    head = b""
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            if not head:
                head = chunk[:_SNIFF_BYTES]
            try:
                decoder.decode(chunk, final=False)
            except UnicodeDecodeError:
                return "latin-1", head
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return "latin-1", head
    return "utf-8", head


def _header_lines(text: str, delimiter: str) -> list[list[str]]:
    lines = text.splitlines()[:_HEADER_SCAN_LINES]
    return [next(csv.reader([line], delimiter=delimiter), []) for line in lines]


def _plan_csv(
    path: Path,
    source: str,
    candidates: Sequence[_Candidate],
) -> _Plan:
    encoding, head = _sniff_encoding(path)
    text = head.decode(encoding, errors="ignore").lstrip("\ufeff")
    best: tuple[tuple[int, int], str, int, list[str]] | None = None
    delimiters = _DELIMITERS
    for delim in delimiters:
        for lineno, cells in enumerate(_header_lines(text, delim)):
            score = _score(cells, candidates)
            if score[0] and (best is None or score[0] > best[0][0]):
                best = (score, delim, lineno, cells)
    if best is None:
        first = next((line for line in text.splitlines() if line.strip()), "")
        raise ExportError(
            f"{source}: no header row matches a known export layout "
            f"(first line: {first[:120]!r}); pass preset= or columns=",
            source=source,
            position="header",
            rule="MISSING_COLUMNS",
        )
    (_, idx), delim, lineno, cells = best
    return _plan_common(path, source, "csv", candidates[-idx], cells, delim, encoding, lineno)


def _plan_common(
    path: Path,
    source: str,
    fmt: ExportFormat,
    candidate: _Candidate,
    cells: Sequence[str],
    delimiter: str,
    encoding: str,
    skip_lines: int,
) -> _Plan:
    chosen, table, mapping = candidate
    by_norm: dict[str, str] = {}
    for cell in cells:
        by_norm.setdefault(_norm(cell), cell)
    present = {c: by_norm[_norm(h)] for c, h in mapping.items() if _norm(h) in by_norm}
    missing = [c for c in REQUIRED[table] if c in mapping and c not in present]
    missing += [c for c in REQUIRED[table] if c not in mapping]
    if missing:
        names = ", ".join(f"{c} ({mapping[c]!r})" if c in mapping else c for c in missing)
        raise ExportError(
            f"{source}: required column(s) missing for {table}: {names}",
            source=source,
            position="header",
            rule="MISSING_COLUMNS",
        )
    notes: list[tuple[str, str, str]] = []
    # requested_date came after the first exports: files without it are not worth a warning
    absent = [mapping[c] for c in mapping if c not in present and c != "requested_date"]
    if absent:
        notes.append(
            ("header", "MISSING_OPTIONAL_COLUMNS", f"column(s) {absent} absent: read as null")
        )
    known = {_norm(h) for h in mapping.values()}
    unknown = [c for c in cells if c.strip() and _norm(c) not in known]
    if unknown:
        notes.append(("header", "UNKNOWN_COLUMNS", f"unknown column(s) {unknown} ignored"))
    if chosen is not None:
        decimal_comma, thousands = chosen.decimal_comma, chosen.thousands
        formats = (chosen.date_format, *[f for f in _FALLBACK_DATES if f != chosen.date_format])
    else:
        # No portal dialect known: a semicolon-separated file is a decimal-comma locale.
        decimal_comma = delimiter == ";"
        thousands = "." if decimal_comma else ","
        formats = _FALLBACK_DATES
    return _Plan(
        path=path,
        source=source,
        fmt=fmt,
        table=table,
        mapping=present,
        delimiter=delimiter,
        encoding=encoding,
        skip_lines=skip_lines,
        decimal_comma=decimal_comma,
        thousands=thousands,
        date_formats=formats,
        notes=tuple(notes),
    )


def _read_sheet(path: Path, source: str) -> pl.DataFrame:
    from scfeeds._archive import check_xlsx

    check_xlsx(path, source)  # sizes, ratio and cell grid, before calamine unpacks anything
    try:
        return pl.read_excel(
            path,
            engine="calamine",
            has_header=False,
            infer_schema_length=0,  # every cell as text: one parsing path for CSV and XLSX
            drop_empty_rows=False,
            drop_empty_cols=False,
            raise_if_empty=False,
        )
    except Exception as exc:  # calamine raises its own types for zip/xml damage
        raise ExportError(
            f"{source}: not a readable xlsx workbook ({exc})",
            source=source,
            position="file",
            rule="XLSX_SYNTAX",
        ) from exc
    except BaseException as exc:
        # A Rust panic (pyo3_runtime.PanicException) derives from BaseException only.
        if not is_reader_panic(exc):
            raise
        raise ExportError(
            f"{source}: the xlsx reader failed on this file ({type(exc).__name__}: {exc})",
            source=source,
            position="file",
            rule="READER_PANIC",
        ) from exc


def _plan_xlsx(
    path: Path,
    source: str,
    candidates: Sequence[_Candidate],
) -> tuple[_Plan, pl.DataFrame]:
    sheet = _read_sheet(path, source)
    best: tuple[tuple[int, int], int, list[str]] | None = None
    for rowno, row in enumerate(sheet.head(_HEADER_SCAN_LINES).iter_rows()):
        cells = ["" if v is None else str(v) for v in row]
        score = _score(cells, candidates)
        if score[0] and (best is None or score[0] > best[0][0]):
            best = (score, rowno, cells)
    if best is None:
        raise ExportError(
            f"{source}: no header row matches a known export layout; pass preset= or columns=",
            source=source,
            position="header",
            rule="MISSING_COLUMNS",
        )
    (_, idx), rowno, cells = best
    plan = _plan_common(path, source, "xlsx", candidates[-idx], cells, ",", "utf-8", rowno)
    body = sheet.slice(rowno + 1)
    # Header cells become column names; blank or repeated header cells keep a unique name.
    names: list[str] = []
    for i, cell in enumerate(cells):
        name = cell if cell.strip() and cell not in names else f"_col{i}"
        names.append(name)
    return plan, body.rename(dict(zip(body.columns, names, strict=True)))


def _failure(name: str, exc: ExportError) -> tuple[str, str, str, str]:
    """The error row (``ERRORS``) of a file that could not be read at all."""
    return (name, exc.position or "file", exc.rule or "EXPORT_ERROR", exc.detail)


def _csv_options(plan: _Plan) -> dict[str, Any]:
    """``read_csv`` / ``scan_csv`` options of a planned file: every cell as text (the typing
    query types and reports), ragged lines kept, missing columns inserted as null."""
    return {
        "separator": plan.delimiter,
        "infer_schema": False,
        "row_index_name": "_row",
        "truncate_ragged_lines": True,
        "quote_char": '"',
        "missing_columns": "insert",
        "raise_if_empty": False,
    }


def _plans(
    source: Sources,
    *,
    table: TableName | None = None,
    preset: ExportPreset | str | None = None,
    columns: Mapping[str, str] | None = None,
    fmt: ExportFormat | None = None,
    on_plan_error: Callable[[ExportError, str], None] | None = None,
) -> list[tuple[_Plan, pl.DataFrame | None]]:
    """The plan of every file of ``source`` (and an XLSX file's sheet, read while planning).

    A file that cannot be planned goes to ``on_plan_error`` when given, else raises."""
    candidates = _candidates(table, preset, columns)
    out: list[tuple[_Plan, pl.DataFrame | None]] = []
    for path, name in resolve_sources(source):
        kind = fmt or _format_of(path)
        try:
            if kind == "xlsx":
                out.append(_plan_xlsx(path, name, candidates))
            else:
                out.append((_plan_csv(path, name, candidates), None))
        except ExportError as exc:
            if on_plan_error is None:
                raise
            on_plan_error(exc, name)
        except OSError as exc:
            raise ConfigurationError(f"cannot read {name}: {exc}") from exc
    tables = {p.table for p, _ in out}
    if len(tables) > 1:
        raise ConfigurationError(
            f"sources hold different tables ({', '.join(sorted(tables))}): pass table= "
            "or read them separately"
        )
    return out


def _format_of(path: Path) -> ExportFormat:
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm", ".xls"):
        return "xlsx"
    if suffix in (".csv", ".txt", ".tsv", ""):
        return "csv"
    raise ConfigurationError(f"cannot tell the format of {path.name!r}: pass fmt='csv' or 'xlsx'")
