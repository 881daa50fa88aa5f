"""Writing canonical rows as a supplier portal export (CSV or XLSX, in a preset's dialect)."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import polars as pl

from scfeeds._cells import safe_text_expr, xlsx_workbook
from scfeeds._exports._dialect import ExportFormat, _resolve_preset
from scfeeds._presets import ExportPreset
from scfeeds.exceptions import ConfigurationError
from scfeeds.schemas import COLUMNS, TableName

# Rows per slice when a CSV is written in an encoding polars cannot write itself (latin-1):
# the slice is rendered to UTF-8 in memory and re-encoded, so memory is bounded by the slice.
_WRITE_SLICE: Final = 100_000

_MONEY_COLUMNS: Final = frozenset({"unit_price", "line_amount"})


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
    SUP001;4500001;15.01.2026;1;SKU-1;Widget;1.200;EA;2,50;EUR;
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
