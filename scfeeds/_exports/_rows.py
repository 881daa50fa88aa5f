"""Typing and checking the records of a planned export: cell text -> canonical values, and a
verdict (rule, message) for every record that is not a good line item."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Any, Final

import polars as pl

from scfeeds._cells import unquote_text_expr
from scfeeds._exports._plan import _Plan
from scfeeds.schemas import COLUMNS, MONEY, TableName, schema

# Which column names the document a row belongs to: a row without it that still carries
# values is a totals / footer row, not a line item.
_DOCUMENT_KEY: Final[dict[TableName, str]] = {
    "po_lines": "po_number",
    "asn_lines": "shipment_id",
    "invoice_lines": "invoice_number",
    "receipts": "po_number",
}

_TOTALS = (
    r"(?i)^(grand[\s-]*)?(total|totals|sum|summe|gesamt|gesamtsumme|subtotal|zwischensumme)"
    r"\s*:?$"
)
# Excel's day 0 (the 1900 date system, with its 1900-02-29 bug folded in).
_EXCEL_EPOCH: Final = dt.date(1899, 12, 30)


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


def _split(
    batch: pl.DataFrame, table: TableName, message: pl.Expr, *extra: pl.Expr
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(good rows in ``schema(table)``, error rows in ``ERRORS``) of a typed batch, each
    followed by the ``extra`` columns; ``message`` is the second half of ``_verdict``.

    Blank rows are dropped without a report; messages are written for the rejected rows only
    (few), not for every row."""
    good = batch.filter(pl.col("_rule").is_null()).select(*schema(table), *extra)
    bad = batch.filter(pl.col("_rule").is_not_null() & (pl.col("_rule") != "BLANK_ROW")).select(
        "source",
        "position",
        pl.col("_rule").alias("rule"),
        message.alias("message"),
        *extra,
    )
    return good, bad
