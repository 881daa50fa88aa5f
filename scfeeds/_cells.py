"""Formula-safe cells for every CSV and XLSX file scfeeds writes.

Supplier text (invoice and PO numbers, item ids, descriptions, file names) is data. A
spreadsheet opens a CSV cell that begins with ``=``, ``+``, ``-`` or ``@`` (or a tab or carriage
return before one) as a formula: ``=HYPERLINK("http://x","y")`` becomes a link and
``+cmd|' /C calc'!A0`` a DDE call. OWASP's rule for CSV injection is applied to every text cell:
such a value gets a leading single quote, which the spreadsheet shows as text. XLSX workbooks
additionally store every string as a string (never a formula, URL or number), so the quoted
value and the unquoted one can never become a formula however the file is opened or edited.

Numbers are never touched: only text columns are rewritten (a negative amount stays a number).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import polars as pl

if TYPE_CHECKING:
    import xlsxwriter

#: First characters that make a spreadsheet read a cell as a formula (OWASP, CSV injection).
FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")
_FORMULA_RE: Final = r"^[=+\-@\t\r]"  # one character: the match ($0) is kept after the quote

#: xlsxwriter options that keep strings as strings.
XLSX_OPTIONS: Final[dict[str, Any]] = {
    "strings_to_formulas": False,
    "strings_to_urls": False,
    "strings_to_numbers": False,
}


def safe_text(value: str) -> str:
    """``value`` with a leading ``'`` when a spreadsheet would read it as a formula.

    >>> safe_text('=HYPERLINK("http://x","y")')
    '\\'=HYPERLINK("http://x","y")'
    >>> safe_text("INV-000042K")
    'INV-000042K'
    """
    return "'" + value if value.startswith(FORMULA_START) else value


def safe_text_expr(expr: pl.Expr) -> pl.Expr:
    """The polars form of :func:`safe_text` for a String expression (nulls stay null)."""
    return expr.str.replace(_FORMULA_RE, "'$0")


def unquote_text_expr(expr: pl.Expr) -> pl.Expr:
    """Undo :func:`safe_text_expr` when reading an export back: ``'=x`` -> ``=x`` (only a
    quote before a formula character is dropped), so a write-read round trip is exact."""
    return expr.str.replace(r"^'([=+\-@\t\r])", "${1}")


def safe_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with every text cell formula-safe.

    String, Categorical and Enum columns go through :func:`safe_text_expr` (as String); lists
    of those are joined with ``;`` first (a CSV cell holds one value). Other columns are kept.
    """
    exprs: list[pl.Expr] = []
    for name, dtype in frame.schema.items():
        col = pl.col(name)
        if isinstance(dtype, pl.List) and _is_text(dtype.inner):
            exprs.append(safe_text_expr(col.cast(pl.List(pl.String)).list.join(";")).alias(name))
        elif _is_text(dtype):
            exprs.append(safe_text_expr(col.cast(pl.String)).alias(name))
        else:
            exprs.append(col)
    return frame.select(exprs)


def _is_text(dtype: Any) -> bool:
    return dtype == pl.String or isinstance(dtype, pl.Categorical | pl.Enum)


def write_csv(frame: pl.DataFrame, path: str | Path, **kwargs: Any) -> None:
    """``frame.write_csv(path, **kwargs)`` with every text cell formula-safe."""
    safe_frame(frame).write_csv(path, **kwargs)


def xlsx_workbook(path: str | Path) -> xlsxwriter.Workbook:
    """An xlsxwriter workbook that writes every string as a string (see :data:`XLSX_OPTIONS`).

    Write frames into it through :func:`safe_frame` so that their text cells also carry the
    quote a CSV copy of the sheet would need.
    """
    import xlsxwriter

    return xlsxwriter.Workbook(str(path), dict(XLSX_OPTIONS))
