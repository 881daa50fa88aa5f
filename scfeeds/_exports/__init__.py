"""Supplier portal exports (CSV / XLSX) <-> canonical tables.

``write_export`` writes canonical rows the way a supplier portal does (headers, delimiter,
encoding, decimal comma, thousands separator and date format of an
:class:`~scfeeds._presets.ExportPreset`); ``scan_export`` / ``read_export`` read such files,
and the real-world mess around them, back into the canonical schema.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import dataclasses
import datetime as dt
import io
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple, overload

import polars as pl

from scfeeds._archive import is_reader_panic
from scfeeds._cells import safe_text_expr, unquote_text_expr, xlsx_workbook
from scfeeds._iosource import Pushdown, scan_batches
from scfeeds._presets import PRESETS, ExportPreset
from scfeeds._sources import resolve_sources
from scfeeds.exceptions import ConfigurationError, ExportError, ExportWarning
from scfeeds.schemas import COLUMNS, ERRORS, MONEY, TableName, empty, empty_errors, schema

ExportFormat = Literal["csv", "xlsx"]

# Rows per slice when a CSV is written in an encoding polars cannot write itself (latin-1):
# the slice is rendered to UTF-8 in memory and re-encoded, so memory is bounded by the slice.
_WRITE_SLICE: Final = 100_000

_MONEY_COLUMNS: Final = frozenset({"unit_price", "line_amount"})


def _resolve_preset(preset: ExportPreset | str) -> ExportPreset:
    if isinstance(preset, ExportPreset):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise ConfigurationError(
            f"unknown export preset {preset!r}; expected one of {', '.join(PRESETS)} "
            "or an ExportPreset instance"
        ) from None


def _canonical_export_columns(
    frame: pl.DataFrame, table: TableName, preset: ExportPreset
) -> dict[str, str]:
    if table not in COLUMNS:
        raise ConfigurationError(f"unknown table {table!r}; expected one of {', '.join(COLUMNS)}")
    if table not in preset.columns:
        raise ConfigurationError(f"preset {preset.name!r} has no header mapping for {table!r}")
    header = preset.header(table)
    missing = [c for c in header if c not in frame.columns]
    if missing:
        raise ConfigurationError(
            f"frame lacks canonical column(s) {', '.join(missing)} of table {table!r}"
        )
    return header


def _group_thousands(digits: pl.Expr, sep: str) -> pl.Expr:
    """Insert ``sep`` every three digits from the right of an unsigned digit string.

    Rust regexes have no look-ahead, so the string is reversed, a separator appended after
    every full group of three, the dangling one stripped, and the string reversed back.
    """
    grouped = digits.str.reverse().str.replace_all(r"(\d{3})", "${1}" + sep.replace("$", "$$"))
    return grouped.str.strip_suffix(sep).str.reverse()


def _format_decimal(col: str, *, money: bool, preset: ExportPreset) -> pl.Expr:
    """Render an exact Decimal column as the portal would print it (no float on the way).

    Quantities drop trailing zeros (``24``, ``2.5``); money keeps at least two decimals
    (``12.50``), as price lists do. Every digit of the Decimal(18, 4) value is kept, so the
    reader gets back exactly the same value.
    """
    text = pl.col(col).cast(pl.String)  # always "-?\d+\.\d{4}" for Decimal(18, 4)
    if money:
        text = text.str.replace(r"(\.\d\d\d*?)0+$", "${1}")
    else:
        text = text.str.replace(r"0+$", "").str.strip_suffix(".")
    negative = text.str.starts_with("-")
    unsigned = text.str.strip_prefix("-")
    parts = unsigned.str.split_exact(".", 1)
    integer = parts.struct.field("field_0")
    fraction = parts.struct.field("field_1")
    if preset.thousands:
        integer = _group_thousands(integer, preset.thousands)
    point = "," if preset.decimal_comma else "."
    body = pl.when(fraction.is_null()).then(integer).otherwise(integer + point + fraction)
    return pl.when(negative).then("-" + body).otherwise(body).alias(col)


def _csv_frame(
    frame: pl.DataFrame, header: Mapping[str, str], preset: ExportPreset
) -> pl.DataFrame:
    schema = frame.schema
    exprs: list[pl.Expr] = []
    for col in header:
        dtype = schema[col]
        if dtype == pl.Date:
            exprs.append(pl.col(col).dt.strftime(preset.date_format))
        elif isinstance(dtype, pl.Decimal):
            exprs.append(_format_decimal(col, money=col in _MONEY_COLUMNS, preset=preset))
        else:
            exprs.append(safe_text_expr(pl.col(col).cast(pl.String)))
    return frame.select(exprs).rename(dict(header))


def _write_csv(frame: pl.DataFrame, path: Path, preset: ExportPreset) -> None:
    encoding = preset.encoding.lower().replace("_", "-")
    if encoding in ("utf-8", "utf8", "utf-8-sig"):
        frame.write_csv(
            path,
            separator=preset.delimiter,
            include_bom=encoding == "utf-8-sig",
            null_value="",
        )
        return
    # polars writes UTF-8 only: render slices to UTF-8 and re-encode them. `strict` errors
    # surface characters the portal's code page cannot hold instead of writing '?'.
    with path.open("wb") as out:
        for i, start in enumerate(range(0, max(frame.height, 1), _WRITE_SLICE)):
            buf = io.BytesIO()
            frame.slice(start, _WRITE_SLICE).write_csv(
                buf, separator=preset.delimiter, include_header=i == 0, null_value=""
            )
            try:
                out.write(buf.getvalue().decode("utf-8").encode(encoding))
            except UnicodeEncodeError as exc:
                bad = exc.object[exc.start : exc.end]
                raise ConfigurationError(
                    f"{bad!r} cannot be written in {preset.encoding} (preset {preset.name!r})"
                ) from exc


def _excel_date_format(strftime: str) -> str:
    # xlsx shows dates through a number format; translate the preset's strftime codes.
    out = strftime
    for code, excel in (("%Y", "yyyy"), ("%m", "mm"), ("%d", "dd"), ("%y", "yy")):
        out = out.replace(code, excel)
    return out


def _write_xlsx(
    frame: pl.DataFrame, header: Mapping[str, str], path: Path, preset: ExportPreset
) -> None:
    schema = frame.schema
    exprs: list[pl.Expr] = []
    formats: dict[str, str] = {}
    for col, name in header.items():
        dtype = schema[col]
        if isinstance(dtype, pl.Decimal):
            # Excel cells hold IEEE doubles: Decimal(18, 4) values below 1e11 survive the trip
            # exactly once the reader rounds back to four places.
            exprs.append(pl.col(col).cast(pl.Float64).alias(name))
            formats[name] = "#,##0.00##" if col in _MONEY_COLUMNS else "#,##0.####"
        elif dtype == pl.Date:
            exprs.append(pl.col(col).alias(name))
            formats[name] = _excel_date_format(preset.date_format)
        else:
            exprs.append(safe_text_expr(pl.col(col).cast(pl.String)).alias(name))
    out = frame.select(exprs)
    # Never let a text cell become a formula or a link (CSV/formula injection).
    workbook = xlsx_workbook(path)
    try:
        out.write_excel(
            workbook,
            worksheet="Export",
            column_formats=formats,  # type: ignore[arg-type]
            autofit=False,
        )
    finally:
        workbook.close()


def write_export(
    frame: pl.DataFrame,
    path: str | Path,
    *,
    table: TableName,
    preset: ExportPreset | str,
    fmt: ExportFormat,
) -> None:
    """Write canonical rows as a supplier portal export.

    Parameters
    ----------
    frame
        Rows of ``table`` in the canonical schema; provenance columns (``source``,
        ``position``, X12 controls) and any column the preset does not export are left out.
    path
        File to write (overwritten).
    table
        Canonical table the rows belong to; selects the preset's header mapping.
    preset
        An :class:`~scfeeds._presets.ExportPreset` or the name of one in ``PRESETS``. For CSV
        it decides headers, delimiter, encoding (``utf-8``, ``utf-8-sig`` with BOM,
        ``latin-1``), decimal comma, thousands separator and date format; for XLSX the headers
        and the date display format (cells hold real numbers and dates).
    fmt
        ``"csv"`` or ``"xlsx"``.

    Notes
    -----
    Quantities and money are printed from the exact decimals: ``read_export`` gives back the
    same values. XLSX numbers are doubles, exact for Decimal(18, 4) values below 1e11.

    Examples
    --------
    >>> import datetime, decimal, tempfile, pathlib
    >>> from scfeeds.schemas import empty
    >>> po = pl.concat([empty("po_lines"), pl.DataFrame({
    ...     "supplier_id": ["SUP001"], "po_number": ["4500001"],
    ...     "po_date": [datetime.date(2026, 1, 15)], "line_number": ["1"],
    ...     "item_id": ["SKU-1"], "description": ["Widget"],
    ...     "qty_ordered": [decimal.Decimal("1200")], "uom": ["EA"],
    ...     "unit_price": [decimal.Decimal("2.5")], "currency": ["EUR"],
    ... })], how="diagonal_relaxed")
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "po.csv"
    >>> write_export(po, out, table="po_lines", preset="globex", fmt="csv")
    >>> print(out.read_bytes().decode("latin-1").splitlines()[1])
    SUP001;4500001;15.01.2026;1;SKU-1;Widget;1.200;EA;2,50;EUR
    """
    chosen = _resolve_preset(preset)
    header = _canonical_export_columns(frame, table, chosen)
    target = Path(path)
    if fmt == "csv":
        _write_csv(_csv_frame(frame, header, chosen), target, chosen)
    elif fmt == "xlsx":
        _write_xlsx(frame, header, target, chosen)
    else:
        raise ConfigurationError(f"unknown export format {fmt!r}; expected 'csv' or 'xlsx'")


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------

ErrorMode = Literal["warn", "raise", "collect"]


class ExportResult(NamedTuple):
    """Rows of an export in the canonical schema, and the problems met while reading it."""

    rows: pl.DataFrame
    errors: pl.DataFrame


REQUIRED: Final[dict[TableName, tuple[str, ...]]] = {
    "po_lines": ("po_number", "line_number", "item_id", "qty_ordered", "uom", "unit_price"),
    # An ASN may carry no PO line numbers (856 without LIN line references).
    "asn_lines": ("shipment_id", "po_number", "item_id", "qty_shipped", "uom"),
    "invoice_lines": (
        "invoice_number",
        "po_number",
        "line_number",
        "item_id",
        "qty_invoiced",
        "uom",
        "unit_price",
    ),
    "receipts": ("po_number", "line_number", "item_id", "qty_received", "uom"),
}
"""Canonical columns an export must have (else ``ExportError``, rule ``MISSING_COLUMNS``).
Other columns of the mapping that the file lacks are read as null, with a warning."""

# Which column names the document a row belongs to: a row without it that still carries
# values is a totals / footer row, not a line item.
_DOCUMENT_KEY: Final[dict[TableName, str]] = {
    "po_lines": "po_number",
    "asn_lines": "shipment_id",
    "invoice_lines": "invoice_number",
    "receipts": "po_number",
}

_SNIFF_BYTES: Final = 64 * 1024
_HEADER_SCAN_LINES: Final = 30
_DELIMITERS: Final = (",", ";", "\t", "|")
_CHUNK: Final = 1 << 20
_TOTALS = (
    r"(?i)^(grand[\s-]*)?(total|totals|sum|summe|gesamt|gesamtsumme|subtotal|zwischensumme)"
    r"\s*:?$"
)

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
# Excel's day 0 (the 1900 date system, with its 1900-02-29 bug folded in).
_EXCEL_EPOCH: Final = dt.date(1899, 12, 30)


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
) -> list[tuple[ExportPreset | None, TableName, dict[str, str]]]:
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
    candidates: Sequence[tuple[ExportPreset | None, TableName, dict[str, str]]],
) -> tuple[int, int]:
    """(matched headers, -candidate index) of the best candidate for a header row."""
    found = {_norm(c) for c in cells if c.strip()}
    best = (0, 0)
    for i, (_, _, mapping) in enumerate(candidates):
        hit = sum(_norm(h) in found for h in mapping.values())
        best = max(best, (hit, -i))
    return best


def _sniff_encoding(path: Path, preset: ExportPreset | None) -> tuple[str, bytes]:
    """``"utf-8"`` or ``"latin-1"``, and the first bytes of the file.

    UTF-8 is checked over the whole file (in chunks, C speed) rather than trusted from the
    preset: portals change code pages, and a non-ASCII name on row 900,000 must not crash the
    read. A pure-ASCII file is read as UTF-8 whatever the preset says (same bytes).
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
    del preset  # the bytes decide; the preset's declared encoding is only a hint
    return "utf-8", head


def _header_lines(text: str, delimiter: str) -> list[list[str]]:
    lines = text.splitlines()[:_HEADER_SCAN_LINES]
    return [next(csv.reader([line], delimiter=delimiter), []) for line in lines]


def _plan_csv(
    path: Path,
    source: str,
    candidates: Sequence[tuple[ExportPreset | None, TableName, dict[str, str]]],
    preset: ExportPreset | None,
) -> _Plan:
    encoding, head = _sniff_encoding(path, preset)
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
    candidate: tuple[ExportPreset | None, TableName, dict[str, str]],
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
    candidates: Sequence[tuple[ExportPreset | None, TableName, dict[str, str]]],
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


def _number_text(raw: pl.Expr) -> pl.Expr:
    """Number text without spaces, currency signs and accounting signs (``-`` in front).

    Takes a column reference: the result refers to ``raw`` several times, and each reference
    of a column is free where each reference of a computed expression would recompute it.
    """
    stripped = raw.str.replace_all(r"[\s\u00a0\u202f'$€£¥]", "")
    # Accounting negatives: "(12.50)" and SAP's trailing minus "12.50-".
    return (
        pl.when(raw.str.contains(r"^[^(]*[\d.,]$"))  # the common case: nothing to move
        .then(stripped)
        .when(stripped.str.starts_with("(") & stripped.str.ends_with(")"))
        .then("-" + stripped.str.strip_chars("()"))
        .when(stripped.str.ends_with("-") & ~stripped.str.starts_with("-"))
        .then("-" + stripped.str.strip_suffix("-"))
        .otherwise(stripped)
    )


def _number(s: pl.Expr, plan: _Plan) -> pl.Expr:
    """Number text (a ``_number_text`` column) -> Decimal(18, 4), or null when it is not a
    number in the file's dialect."""
    point, sep = (",", ".") if plan.decimal_comma else (".", ",")
    if plan.thousands:
        sep = plan.thousands
    p, t = re.escape(point), re.escape(sep)
    # Grouping must be real thousands groups ("1.234,5"), or no separator at all ("1234,5").
    local = rf"^[+-]?(\d{{1,3}}({t}\d{{3}})+|\d+)({p}\d+)?$"
    canonical = s.str.replace_all(sep, "", literal=True).str.replace(point, ".", literal=True)
    parsed: pl.Expr = pl.when(s.str.contains(local)).then(canonical)
    if plan.fmt == "xlsx":
        # Numeric cells arrive as plain "1234.5" whatever the locale; text cells as the portal
        # printed them.
        plain = r"^[+-]?\d+(\.\d+)?([eE][+-]?\d+)?$"
        parsed = pl.when(s.str.contains(plain)).then(s).otherwise(parsed)
    return parsed.cast(MONEY, strict=False)


def _serial_date(raw: pl.Expr) -> pl.Expr:
    """Excel's serial day count (a date cell formatted as a number shows it)."""
    days = raw.str.extract(r"^(\d{5})(\.0+)?$", 1).cast(pl.Int64, strict=False)
    return (pl.lit(_EXCEL_EPOCH) + pl.duration(days=days)).cast(pl.Date)


def _verdict(plan: _Plan) -> tuple[pl.Expr, pl.Expr]:
    """(rule, message) of a record, from the ``__t_`` texts and the canonical values."""
    target = COLUMNS[plan.table]
    present = [pl.col(f"__t_{c}") for c in plan.mapping]
    header_row = pl.all_horizontal(
        [pl.col(f"__t_{c}") == plan.mapping[c].strip() for c in plan.mapping]
    ).fill_null(False)
    key = pl.col(f"__t_{_DOCUMENT_KEY[plan.table]}")
    any_text = pl.any_horizontal([t.is_not_null() for t in present]) if present else pl.lit(False)
    # A totals row has no document key, or the word itself where the key belongs. Other
    # cells are not looked at: a description may well read "Total care kit".
    totals = key.is_null() | key.str.contains(_TOTALS).fill_null(False)
    rule: Any = (
        pl.when(~any_text)
        .then(pl.lit("BLANK_ROW"))
        .when(header_row)
        .then(pl.lit("REPEATED_HEADER"))
        .when(totals)
        .then(pl.lit("TOTALS_ROW"))
    )
    message: Any = (
        pl.when(~any_text)
        .then(pl.lit("blank row skipped"))
        .when(header_row)
        .then(pl.lit("repeated header row skipped"))
        .when(totals)
        .then(pl.lit(f"totals/footer row skipped (no {_DOCUMENT_KEY[plan.table]})"))
    )
    rule, message = _control_characters(plan, rule, message)
    cells: list[pl.Expr] = []
    for col, dtype in target.items():
        if dtype == pl.Date:
            code, what = "BAD_DATE", "a date"
        elif isinstance(dtype, pl.Decimal):
            code, what = "BAD_NUMBER", "a number"
        else:
            continue
        text = pl.col(f"__t_{col}")
        bad = text.is_not_null() & pl.col(col).is_null()
        rule = rule.when(bad).then(pl.lit(code))
        header = plan.mapping.get(col, col)
        cells.append(
            pl.when(bad).then(
                pl.concat_str(pl.lit(f"{header}: '"), text, pl.lit(f"' is not {what}"))
            )
        )
    if cells:
        message = message.otherwise(pl.concat_str(cells, separator="; ", ignore_nulls=True))
    return rule, message


# C0 control characters other than TAB, LF and CR (those three are legal inside a quoted
# field, RFC 4180): a NUL or an ESC in a value is damage, never data.
_CONTROL: Final = r"[\x00-\x08\x0B\x0C\x0E-\x1F]"


def _control_characters(plan: _Plan, rule: Any, message: Any) -> tuple[Any, Any]:
    """Reject a record with a control character in any cell (``CONTROL_CHARACTER``).

    Rejected, not stripped: ``INV\x001`` stripped would become ``INV1``, another document's
    key. The message names each column and shows the value with the character as U+FFFD.
    """
    hits = [(pl.col(f"__t_{c}").str.contains(_CONTROL).fill_null(False), c) for c in plan.mapping]
    if not hits:
        return rule, message
    found = pl.any_horizontal([hit for hit, _ in hits])
    what = pl.concat_str(
        [
            pl.when(hit).then(
                pl.concat_str(
                    pl.lit(f"{plan.mapping[c]}: '"),
                    pl.col(f"__t_{c}").str.replace_all(_CONTROL, "\ufffd"),
                    pl.lit("' holds a control character"),
                )
            )
            for hit, c in hits
        ],
        separator="; ",
        ignore_nulls=True,
    )
    return (
        rule.when(found).then(pl.lit("CONTROL_CHARACTER")),
        message.when(found).then(what),
    )


def _rows_and_errors(
    frame: pl.LazyFrame, plan: _Plan, *, names: Sequence[str] | None = None
) -> pl.LazyFrame:
    """All records of one file: canonical values, ``_rule`` (null for a good row) and the
    cleaned ``__t_<col>`` texts that a report on a rejected row quotes.

    With ``names``, ``frame`` holds the records of several files of one layout, each record
    with its file's index in ``names`` as ``__src``: ``source`` is that file's name, and
    ``__src`` is kept.

    Staged so that every cell is parsed once: later stages refer to the columns earlier ones
    made (an expression used twice in one stage would be evaluated twice).
    """
    target = COLUMNS[plan.table]
    texts: list[pl.Expr] = []
    for col in target:
        if col in plan.mapping:
            e = pl.col(plan.mapping[col]).cast(pl.String).str.strip_chars()
            # blank -> null; `replace` evaluates the stripped text once (a when/then would
            # evaluate it twice)
            texts.append(e.replace("", None).alias(f"__t_{col}"))
        else:
            texts.append(pl.lit(None, dtype=pl.String).alias(f"__t_{col}"))
    first: list[pl.Expr] = []  # strings final, numbers' clean text, dates in the main format
    second: list[pl.Expr] = []  # numbers parsed, dates' fallback text
    third: list[pl.Expr] = []  # dates from the fallback formats
    for col, dtype in target.items():
        raw = pl.col(f"__t_{col}")
        if dtype == pl.Date:
            first.append(raw.str.strptime(pl.Date, plan.date_formats[0], strict=False).alias(col))
            # Fallback formats only see the cells the main format missed (mostly none).
            second.append(pl.when(pl.col(col).is_null()).then(raw).alias(f"__f_{col}"))
            rest = pl.col(f"__f_{col}")
            tries = [rest.str.strptime(pl.Date, f, strict=False) for f in plan.date_formats[1:]]
            third.append(pl.coalesce([pl.col(col), *tries, _serial_date(rest)]).alias(col))
        elif isinstance(dtype, pl.Decimal):
            first.append(_number_text(raw).alias(f"__n_{col}"))
            second.append(_number(pl.col(f"__n_{col}"), plan).alias(col))
        elif col == "line_number":
            # "0010" -> "10", "10.0" (an Excel number) -> "10"; other text kept as is.
            first.append(
                raw.str.replace(r"^(\d+)\.0*$", "${1}").str.replace(r"^0+(\d)", "${1}").alias(col)
            )
        elif col in ("uom", "currency"):
            first.append(raw.str.to_uppercase().alias(col))
        else:
            # A leading quote before = + - @ is the formula guard of a neutralising exporter
            # (ours included), not part of the value.
            first.append(unquote_text_expr(raw).alias(col))
    rule, _ = _verdict(plan)
    carry = [pl.col("__src")] if names is not None else []
    staged = frame.select(pl.col("_row"), *carry, *texts).with_columns(first)
    staged = staged.with_columns(second)
    if third:
        staged = staged.with_columns(third)
    source = (
        pl.lit(pl.Series(names, dtype=pl.String)).gather(pl.col("__src"))
        if names is not None
        else pl.lit(plan.source)
    )
    return staged.select(
        *carry,
        source.alias("source"),
        pl.format("row {}", pl.col("_row") + 1).alias("position"),
        *[
            pl.lit(None, dtype=pl.String).alias(c)
            for c in ("interchange_control", "group_control", "set_control")
        ],
        *[pl.col(c) for c in target],
        rule.alias("_rule"),
        pl.col("^__t_.*$"),
    )


def _file_frame(plan: _Plan, sheet: pl.DataFrame | None, path: Path) -> pl.LazyFrame:
    if sheet is not None:
        raw = sheet.lazy().with_row_index("_row")
    else:
        raw = pl.scan_csv(
            path,
            separator=plan.delimiter,
            skip_lines=plan.skip_lines,
            infer_schema=False,  # everything as text; _rows_and_errors types and reports
            row_index_name="_row",
            truncate_ragged_lines=True,
            quote_char='"',
            missing_columns="insert",
            raise_if_empty=False,
        )
    return _rows_and_errors(raw, plan)


_SKIPPED: Final = ("BLANK_ROW", "REPEATED_HEADER", "TOTALS_ROW")
_INFO_RULES: Final = frozenset(
    {"REPEATED_HEADER", "TOTALS_ROW", "UNKNOWN_COLUMNS", "MISSING_OPTIONAL_COLUMNS"}
)


_SMALL_FILE: Final = 1024 * 1024


def _batches(
    plan: _Plan, sheet: pl.DataFrame | None, chunk_size: int | None = None
) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    """(good rows, error rows) batches of one file, in file order."""
    target = list(schema(plan.table))
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
            # (about 6 ms a file) than reading it.
            small = sheet is not None or path.stat().st_size <= _SMALL_FILE
            batches = (
                iter([lf.collect(engine="in-memory")])
                if small and chunk_size is None
                else lf.collect_batches(chunk_size=chunk_size)
            )
            for batch in batches:
                good = batch.filter(pl.col("_rule").is_null()).select(target)
                # Messages are written for the rejected rows only (few), not for every row.
                bad = batch.filter(
                    pl.col("_rule").is_not_null() & (pl.col("_rule") != "BLANK_ROW")
                ).select(
                    "source",
                    "position",
                    pl.col("_rule").alias("rule"),
                    message.alias("message"),
                )
                yield good, bad
        except pl.exceptions.PolarsError as exc:
            raise ExportError(
                f"{plan.source}: cannot be read as {plan.delimiter!r}-separated text ({exc})",
                source=plan.source,
                position="file",
                rule="CSV_SYNTAX",
            ) from exc


def _plans(
    source: str | Path | Sequence[str | Path],
    table: TableName | None,
    preset: ExportPreset | str | None,
    columns: Mapping[str, str] | None,
    fmt: ExportFormat | None,
    on_plan_error: Callable[[ExportError, str], None] | None = None,
) -> list[tuple[_Plan, pl.DataFrame | None]]:
    candidates = _candidates(table, preset, columns)
    chosen = _resolve_preset(preset) if preset is not None else None
    out: list[tuple[_Plan, pl.DataFrame | None]] = []
    for path, name in resolve_sources(source):
        kind = fmt or _format_of(path)
        try:
            if kind == "xlsx":
                out.append(_plan_xlsx(path, name, candidates))
            else:
                out.append((_plan_csv(path, name, candidates, chosen), None))
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
    source: str | Path | Sequence[str | Path],
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
    plans = _plans(source, table, preset, columns, fmt)
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
    source: str | Path | Sequence[str | Path],
    *,
    table: TableName | None = ...,
    preset: ExportPreset | str | None = ...,
    columns: Mapping[str, str] | None = ...,
    fmt: ExportFormat | None = ...,
    errors: Literal["warn", "raise"] = ...,
) -> pl.DataFrame: ...
@overload
def read_export(
    source: str | Path | Sequence[str | Path],
    *,
    table: TableName | None = ...,
    preset: ExportPreset | str | None = ...,
    columns: Mapping[str, str] | None = ...,
    fmt: ExportFormat | None = ...,
    errors: Literal["collect"],
) -> ExportResult: ...
def read_export(
    source: str | Path | Sequence[str | Path],
    *,
    table: TableName | None = None,
    preset: ExportPreset | str | None = None,
    columns: Mapping[str, str] | None = None,
    fmt: ExportFormat | None = None,
    errors: ErrorMode = "warn",
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
        return scan_export(source, table=table, preset=preset, columns=columns, fmt=fmt).collect()
    if errors not in ("raise", "collect"):
        raise ConfigurationError(f"errors={errors!r}; expected 'warn', 'raise' or 'collect'")
    problems: list[pl.DataFrame] = []

    def plan_failed(exc: ExportError, name: str) -> None:
        problems.append(
            pl.DataFrame(
                [(name, exc.position or "file", exc.rule or "EXPORT_ERROR", exc.detail)],
                schema=ERRORS,
                orient="row",
            )
        )

    plans = _plans(
        source, table, preset, columns, fmt, plan_failed if errors == "collect" else None
    )
    rows: list[pl.DataFrame] = []
    for plan, sheet in plans:
        try:
            for good, bad in _batches(plan, sheet):
                rows.append(good)
                if errors == "raise":
                    hard = bad.filter(~pl.col("rule").is_in(list(_INFO_RULES)))
                    if hard.height:
                        first = hard.row(0, named=True)
                        raise ExportError(
                            f"{first['source']}: {first['position']}: {first['message']}",
                            source=first["source"],
                            position=first["position"],
                            rule=first["rule"],
                        )
                problems.append(bad)
        except ExportError as exc:
            if errors == "raise":
                raise
            plan_failed(exc, plan.source)
    tname = plans[0][0].table if plans else (table or "po_lines")
    frame = pl.concat([empty(tname), *rows]) if rows else empty(tname)
    if errors == "raise":
        _warn(problems)
        return frame
    return ExportResult(frame, pl.concat([empty_errors(), *problems]))


def _csv_options(plan: _Plan) -> dict[str, Any]:
    return {
        "separator": plan.delimiter,
        "infer_schema": False,
        "row_index_name": "_row",
        "truncate_ragged_lines": True,
        "quote_char": '"',
        "missing_columns": "insert",
        "raise_if_empty": False,
    }


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
    names = [name for _, name, _ in items]
    declined: list[int] = []
    problems: list[pl.DataFrame] = []
    candidates: dict[TableName | None, Any] = {}
    known: dict[tuple[object, ...], list[tuple[tuple[str, ...], _Plan]]] = {}
    groups: dict[tuple[object, ...], tuple[_Plan, list[pl.DataFrame]]] = {}
    pending: dict[tuple[object, ...], list[tuple[int, _Plan, bytes]]] = {}

    def problem(rows: Sequence[tuple[str, str, str, str]], job: int, kind: int) -> None:
        frame = pl.DataFrame(rows, schema=ERRORS, orient="row")
        problems.append(
            frame.with_columns(
                pl.lit(job, dtype=pl.UInt32).alias("__job"), pl.lit(kind, pl.UInt8).alias("__k")
            )
        )

    for job, (path, name, table) in enumerate(items):
        try:
            if path.stat().st_size > _SMALL_FILE:
                declined.append(job)
                continue
            data = path.read_bytes()
        except OSError:
            declined.append(job)
            continue
        try:
            data.decode("utf-8")
            encoding = "utf-8"
        except UnicodeDecodeError:
            encoding = "latin-1"
        head = data[:_SNIFF_BYTES].decode(encoding, errors="ignore").lstrip("\ufeff")
        lines_list = head.splitlines()[:_HEADER_SCAN_LINES]
        if encoding == "latin-1":
            data = data.decode("latin-1").encode("utf-8")
        key = (table, encoding, lines_list[0] if lines_list else "")
        plan: _Plan | None = None
        for prefix, seen in known.get(key, []):
            if tuple(lines_list[: len(prefix)]) == prefix:
                plan = dataclasses.replace(seen, path=path, source=str(path))
                break
        if plan is None:
            if table not in candidates:
                candidates[table] = _candidates(table, None, None)
            try:
                plan = _plan_csv(path, str(path), candidates[table], None)
            except ExportError as exc:
                problem(
                    [(name, exc.position or "file", exc.rule or "EXPORT_ERROR", exc.detail)],
                    job,
                    0,
                )
                continue
            except OSError:
                declined.append(job)
                continue
            prefix = tuple(lines_list[: plan.skip_lines + 1])
            known.setdefault(key, []).append((prefix, plan))
        pending.setdefault(_layout_of(plan), []).append((job, plan, data))

    def accept(jobs: list[int], plan: _Plan, frame: pl.DataFrame) -> None:
        for job in jobs if plan.notes else []:  # notes depend on the header: same for all
            problem([(names[job], p, r, m) for p, r, m in plan.notes], job, 0)
        groups.setdefault(_layout_of(plan), (plan, []))[1].append(frame)

    for files in pending.values():
        alone = _read_joined(files, accept)
        for job, plan, data in alone:
            try:
                frame = pl.read_csv(data, skip_lines=plan.skip_lines, **_csv_options(plan))
            except pl.exceptions.PolarsError:  # its CSV_SYNTAX row comes from read_export
                declined.append(job)
                continue
            accept([job], plan, frame.with_columns(pl.lit(job, dtype=pl.UInt32).alias("__src")))
    parts: dict[TableName, list[pl.DataFrame]] = {}
    for plan, frames in groups.values():
        records = pl.concat(frames, how="diagonal")
        batch = _rows_and_errors(records.lazy(), plan, names=names).collect(engine="in-memory")
        _, message = _verdict(plan)
        parts.setdefault(plan.table, []).append(
            batch.filter(pl.col("_rule").is_null()).select(
                *schema(plan.table), pl.col("__src").alias("__job")
            )
        )
        bad = batch.filter(pl.col("_rule").is_not_null() & (pl.col("_rule") != "BLANK_ROW"))
        problems.append(
            bad.select(
                "source",
                "position",
                pl.col("_rule").alias("rule"),
                message.alias("message"),
                pl.col("__src").alias("__job"),
                pl.lit(1, pl.UInt8).alias("__k"),
            )
        )
    rows = {t: pl.concat(frames).sort("__job", maintain_order=True) for t, frames in parts.items()}
    empty_problems = empty_errors().with_columns(
        pl.lit(None, pl.UInt32).alias("__job"), pl.lit(None, pl.UInt8).alias("__k")
    )
    errors = pl.concat([empty_problems, *problems]).sort(["__job", "__k"], maintain_order=True)
    return ExportBatch(rows, errors.drop("__k"), declined)


__all__ = [
    "REQUIRED",
    "ExportFormat",
    "ExportResult",
    "ExportWarning",
    "read_export",
    "scan_export",
    "write_export",
]
