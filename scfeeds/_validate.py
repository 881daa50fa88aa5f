"""Validation of canonical frames: good rows, and failures that say why.

Built on dataframely (``Schema.filter``): one schema per canonical table, generated from
``scfeeds.schemas`` plus named rules. Code columns (``uom``, ``currency``) stay strings and are
checked by rules, never cast: a failed cast would hide every other reason on the row.

Rules (``failures.rule`` / ``failures.rules``)
----------------------------------------------
``REQUIRED``           a required column is null or blank (see ``REQUIRED`` below)
``SUPPLIER_ID_INVALID`` supplier_id holds a control character, ``/`` or ``\\``, ``..``, or more
                       than ``SUPPLIER_ID_MAX`` characters (ids are data, never paths, but no
                       real supplier id looks like that)
``QTY_NOT_POSITIVE``   ordered / shipped quantity <= 0
``QTY_ZERO``           invoiced quantity 0 (a negative one is a credit memo: a document,
                       netted by the match against what was invoiced)
``QTY_NEGATIVE``       received or acknowledged quantity < 0 (0 is a refused delivery or a
                       rejected line: allowed)
``PRICE_NEGATIVE``     unit price < 0
``UNKNOWN_UOM``        uom not in ``UOM_CODES`` (X12 element 355 subset)
``BAD_CURRENCY``       currency not an ISO 4217 code (``CURRENCY_CODES``)
``DATE_OUT_OF_RANGE``  a document date outside ``dates`` (default 2000-01-01 .. today + 2 y)
``AMOUNT_MISMATCH``    invoice line_amount differs from qty_invoiced * unit_price by more
                       than one cent
``DUPLICATE_KEY``      a later row repeating the primary key (``PRIMARY_KEY``) of an earlier
                       row of the same source (file); the first one stays good (receipts have
                       no key: equal deliveries of a line on one day are distinct rows)
``UNKNOWN_ACK_STATUS`` an 855 / ConfirmationRequest line whose status is none of
                       ``KNOWN_ACK_STATUSES`` (an ACK01 code outside element 668's list)
``BAD_TYPE``           a column's dtype could not be cast to the canonical one

Null keys
---------
``line_number`` may be null on ASN lines (an 856 without PO line references is matched by
item) and on invoice lines (an 810 whose IT1 carries no PO line); ``po_number`` may be null on
invoice lines (the match engine reports ``NO_PO_REFERENCE``). PO lines need both. ``currency``
may be null everywhere (X12 850/810 without CUR: the trading partner's default applies);
``supplier_id`` may be null on receipts (warehouse files do not name it). Duplicate detection
compares keys null-safely (two null line numbers are the same key).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from typing import Any, Final, Generic, Literal, NamedTuple, TypeAlias, TypeVar, overload

import dataframely as dy
import polars as pl

from scfeeds.exceptions import ConfigurationError, ValidationError
from scfeeds.schemas import COLUMNS, SPECS, TABLES, TableName, schema

FrameT = TypeVar("FrameT", pl.DataFrame, pl.LazyFrame)
OnError = Literal["quarantine", "raise"]

# X12 element 355 (Unit or Basis for Measurement Code): the units supplier feeds use.
UOM_CODES: Final = frozenset(
    {
        "EA", "CS", "CA", "BX", "DZ", "PK", "PR", "PL", "CT", "BG", "BO", "BD", "DR", "KT",
        "ST", "RL", "RE", "SH", "TB", "CN", "JR", "GS", "HU", "TH", "UN", "LO",
        "LB", "KG", "GR", "OZ", "TN", "MT", "MG",
        "GA", "LT", "ML", "FO",
        "FT", "IN", "YD", "MR", "CM", "MM", "LF", "SF", "SY", "SM",
        "HR", "DA", "MO",
    }
)  # fmt: skip
"""Known X12 unit codes (a subset of the 355 code list); anything else is ``UNKNOWN_UOM``."""

# ISO 4217 active alphabetic codes (2024), plus the precious-metal / fund codes that appear
# on commodity invoices.
CURRENCY_CODES: Final = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD
    BTN BWP BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUP CVE CZK DJF DKK DOP DZD
    EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD
    IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL
    MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN
    PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN
    SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES
    VND VUV WST XAF XAG XAU XCD XCG XDR XOF XPD XPF XPT XSU XUA YER ZAR ZMW ZWG
    """.split()  # noqa: SIM905 (a 180-code list reads better as text)
)
"""ISO 4217 codes accepted in ``currency``."""

REQUIRED: Final[dict[TableName, tuple[str, ...]]] = {t: s.required for t, s in SPECS.items()}
"""Columns that must be non-null and non-blank, per table (:attr:`TableSpec.required`)."""

PRIMARY_KEY: Final[dict[TableName, tuple[str, ...]]] = {t: s.key for t, s in SPECS.items()}
"""Columns identifying a row within one source; a repeat is ``DUPLICATE_KEY``."""

_QTY: Final[dict[TableName, str]] = {t: s.quantity for t, s in SPECS.items()}
_DATE: Final[dict[TableName, str]] = {t: s.date for t, s in SPECS.items()}
# What an acknowledgment can say about a line (X12 element 668 mapped by
# scfeeds._x12._ack855.ACK_STATUS); "unknown" (an ACK01 code outside the list) is quarantined.
KNOWN_ACK_STATUSES: Final = ("accepted", "changed", "backordered", "on_hold", "rejected")
CENT: Final = 0.01
SUPPLIER_ID_MAX: Final = 64
"""Longest supplier id accepted (X12 N104 allows 80; real ids are short codes)."""
_SUPPLIER_ID_BAD: Final = r"[\x00-\x1f\x7f/\\]|\.\."

FAILURE_COLUMNS: Final[dict[str, pl.DataType]] = {
    "rule": pl.String(),
    "rules": pl.List(pl.String()),
    "message": pl.String(),
}
"""Columns a failures frame adds after the table's canonical columns."""


class ValidationResult(NamedTuple, Generic[FrameT]):
    """``good, failures = validate(frame, table)``.

    ``good`` has the canonical schema; ``failures`` the canonical columns with the original
    values, then ``rule`` (the first rule broken, in the order of the module docstring),
    ``rules`` (all of them) and ``message`` (one sentence per rule, with the values).
    """

    good: FrameT
    failures: FrameT


def _blank(col: str) -> pl.Expr:
    return pl.col(col).is_null() | (pl.col(col).str.strip_chars() == "")


#: (rule column, rule code, valid expression, message expression)
_Rule: TypeAlias = tuple[str, str, pl.Expr, pl.Expr]


def _rules(table: TableName, lo: dt.date, hi: dt.date) -> list[_Rule]:
    """Every rule of ``table``, in reporting order."""
    return [
        *_presence_rules(table),
        _quantity_rule(table),
        *_code_rules(table),
        _date_rule(table, lo, hi),
        *_table_rules(table),
        *_key_rules(table),
    ]


def _presence_rules(table: TableName) -> list[_Rule]:
    """Required columns present (text not blank); a supplier id safe to use as data."""
    cols = COLUMNS[table]
    out: list[_Rule] = []
    for col in REQUIRED[table]:
        missing = pl.col(col).is_null()
        if cols[col] == pl.String:
            missing = _blank(col)
        out.append((f"required__{col}", "REQUIRED", ~missing, pl.lit(f"{col} is missing")))
    if "supplier_id" in cols:
        sid = pl.col("supplier_id")
        out.append(
            (
                "supplier_id_invalid",
                "SUPPLIER_ID_INVALID",
                sid.is_null()
                | (~sid.str.contains(_SUPPLIER_ID_BAD) & (sid.str.len_chars() <= SUPPLIER_ID_MAX)),
                pl.format(
                    "supplier_id {} is not a valid supplier id (no control characters, '/', "
                    f"'\\' or '..'; at most {SUPPLIER_ID_MAX} characters)",
                    # control characters shown as "?", long ids cut
                    sid.str.slice(0, 80).str.replace_all(r"[\x00-\x1f\x7f]", "?"),
                ),
            )
        )
    return out


def _quantity_rule(table: TableName) -> _Rule:
    """The quantity's sign: negative refused, zero allowed or refused as the table means."""
    qty = _QTY[table]
    value = pl.col(qty).cast(pl.String)
    if table in ("receipts", "po_acks"):
        # 0 received is a refused delivery; 0 acknowledged a rejected line: both allowed.
        return (
            "qty_negative",
            "QTY_NEGATIVE",
            pl.col(qty).is_null() | (pl.col(qty) >= 0),
            pl.format(f"{qty} {{}} is negative", value),
        )
    if table == "invoice_lines":
        # Credit memos (810 BIG07 = CR, cXML purpose="creditMemo") bill negative quantities.
        return ("qty_zero", "QTY_ZERO", pl.col(qty) != 0, pl.format(f"{qty} {{}} is 0", value))
    return (
        "qty_not_positive",
        "QTY_NOT_POSITIVE",
        pl.col(qty) > 0,
        pl.format(f"{qty} {{}} is not above 0", value),
    )


def _code_rules(table: TableName) -> list[_Rule]:
    """Price not negative, a known unit, an ISO 4217 currency (where the table has them)."""
    cols = COLUMNS[table]
    out: list[_Rule] = []
    if "unit_price" in cols:
        out.append(
            (
                "price_negative",
                "PRICE_NEGATIVE",
                pl.col("unit_price").is_null() | (pl.col("unit_price") >= 0),
                pl.format("unit_price {} is negative", pl.col("unit_price").cast(pl.String)),
            )
        )
    uom = pl.col("uom").str.strip_chars()
    out.append(
        (
            "unknown_uom",
            "UNKNOWN_UOM",
            uom.is_null() | uom.is_in(sorted(UOM_CODES)) | (uom == ""),
            pl.format("uom '{}' is not a known X12 unit code (355)", pl.col("uom")),
        )
    )
    if "currency" in cols:
        out.append(
            (
                "bad_currency",
                "BAD_CURRENCY",
                pl.col("currency").is_in(sorted(CURRENCY_CODES)),
                pl.format("currency '{}' is not an ISO 4217 code", pl.col("currency")),
            )
        )
    return out


def _date_rule(table: TableName, lo: dt.date, hi: dt.date) -> _Rule:
    """The document date within ``lo .. hi``."""
    date = _DATE[table]
    return (
        "date_out_of_range",
        "DATE_OUT_OF_RANGE",
        pl.col(date).is_between(lo, hi),
        pl.format(f"{date} {{}} is outside {lo} .. {hi}", pl.col(date).cast(pl.String)),
    )


def _table_rules(table: TableName) -> list[_Rule]:
    """Rules of one table: a known 855 status; an invoice line's amount = qty x price."""
    out: list[_Rule] = []
    if table == "po_acks":
        status = pl.col("ack_status")
        out.append(
            (
                "unknown_ack_status",
                "UNKNOWN_ACK_STATUS",
                status.is_null() | status.is_in(KNOWN_ACK_STATUSES),
                pl.format(
                    "ack_status '{}' (ack_code '{}') is not one of {}",
                    status,
                    pl.col("ack_code").fill_null(""),
                    pl.lit(", ".join(KNOWN_ACK_STATUSES)),
                ),
            )
        )
    if table == "invoice_lines":
        # Exact decimal arithmetic: Decimal(18,4) * Decimal(18,4) keeps every digit.
        expected = pl.col("qty_invoiced") * pl.col("unit_price")
        diff = (pl.col("line_amount") - expected).abs()
        out.append(
            (
                "amount_mismatch",
                "AMOUNT_MISMATCH",
                diff <= pl.lit(CENT).cast(pl.Decimal(18, 4)),
                pl.format(
                    "line_amount {} != qty_invoiced {} x unit_price {} = {} (beyond one cent)",
                    pl.col("line_amount").cast(pl.String),
                    pl.col("qty_invoiced").cast(pl.String),
                    pl.col("unit_price").cast(pl.String),
                    expected.cast(pl.String),
                ),
            )
        )
    return out


def _key_rules(table: TableName) -> list[_Rule]:
    """No repeated primary key within a source (none for a table without one)."""
    if not PRIMARY_KEY[table]:
        return []
    keys = ["source", *PRIMARY_KEY[table]]
    return [
        (
            "duplicate_key",
            "DUPLICATE_KEY",
            # Null-safe struct equality; the first occurrence of a key stays valid.
            pl.struct(keys).is_first_distinct(),
            pl.lit(f"repeats the key ({', '.join(PRIMARY_KEY[table])}) of an earlier row"),
        )
    ]


def _column(dtype: pl.DataType) -> dy.Column:
    if isinstance(dtype, pl.Decimal):
        return dy.Decimal(precision=dtype.precision, scale=dtype.scale, nullable=True)
    if dtype == pl.Date:
        return dy.Date(nullable=True)
    return dy.String(nullable=True)


def _constant(expr: pl.Expr) -> Callable[[Any], pl.Expr]:
    def rule(_schema: Any) -> pl.Expr:
        return expr

    return rule


@functools.lru_cache(maxsize=32)
def _schema(
    table: TableName, lo: dt.date, hi: dt.date
) -> tuple[type[dy.Schema], dict[str, tuple[str, pl.Expr]]]:
    """The dataframely schema of ``table`` and, per rule column, (code, message)."""
    namespace: dict[str, Any] = {c: _column(t) for c, t in schema(table).items()}
    messages: dict[str, tuple[str, pl.Expr]] = {}
    for name, code, valid, message in _rules(table, lo, hi):
        namespace[name] = dy.rule()(_constant(valid))
        messages[name] = (code, message)
    cls = type(f"{table.title().replace('_', '')}Schema", (dy.Schema,), namespace)
    return cls, messages


def _default_dates() -> tuple[dt.date, dt.date]:
    today = dt.date.today()
    return dt.date(2000, 1, 1), today.replace(year=today.year + 2, day=min(today.day, 28))


def _failures(
    details: pl.LazyFrame,
    table: TableName,
    messages: dict[str, tuple[str, pl.Expr]],
    rule_cols: list[str],
) -> pl.LazyFrame:
    """Rows that broke a rule, with rule / rules / message (``details``: bool rule columns)."""
    broken = [
        (c, messages.get(c, ("BAD_TYPE", pl.lit(f"{c.split('|')[0]} has the wrong type"))))
        for c in rule_cols
    ]
    codes = pl.concat_list(
        [pl.when(~pl.col(c)).then(pl.lit(code)) for c, (code, _) in broken]
    ).list.drop_nulls()
    text = pl.concat_str(
        [pl.when(~pl.col(c)).then(msg) for c, (_, msg) in broken], separator="; ", ignore_nulls=True
    )
    return details.select(
        *[pl.col(c) for c in schema(table)],
        codes.list.first().alias("rule"),
        codes.alias("rules"),
        text.alias("message"),
    )


@overload
def validate(
    frame: pl.DataFrame,
    table: TableName,
    *,
    on_error: OnError = ...,
    dates: tuple[dt.date, dt.date] | None = ...,
) -> ValidationResult[pl.DataFrame]: ...
@overload
def validate(
    frame: pl.LazyFrame,
    table: TableName,
    *,
    on_error: OnError = ...,
    dates: tuple[dt.date, dt.date] | None = ...,
) -> ValidationResult[pl.LazyFrame]: ...
def validate(
    frame: pl.DataFrame | pl.LazyFrame,
    table: TableName,
    *,
    on_error: OnError = "quarantine",
    dates: tuple[dt.date, dt.date] | None = None,
) -> ValidationResult[pl.DataFrame] | ValidationResult[pl.LazyFrame]:
    """Split canonical rows into good rows and failures (rule, message, provenance).

    Parameters
    ----------
    frame
        Rows of ``table`` (a reader's output). Extra columns are dropped; columns of another
        dtype are cast where possible (rows whose cast fails are ``BAD_TYPE`` failures).
    table
        Canonical table name.
    on_error
        ``"quarantine"`` (default): return the failures as data. ``"raise"``: raise
        :class:`~scfeeds.exceptions.ValidationError` when any row fails (the message counts
        failures per rule and shows the first one with its source and position); the input
        is then collected.
    dates
        Inclusive (earliest, latest) document date; default 2000-01-01 .. today + 2 years.

    Returns
    -------
    ValidationResult
        ``(good, failures)``, both eager for a DataFrame, both lazy for a LazyFrame. Rules and
        null-key handling: module docstring.

    Examples
    --------
    >>> from scfeeds.schemas import empty
    >>> good, failures = validate(empty("po_lines"), "po_lines")
    >>> good.height, failures.columns[-3:]
    (0, ['rule', 'rules', 'message'])
    """
    if table not in TABLES:
        raise ConfigurationError(f"unknown table {table!r}; expected one of {', '.join(TABLES)}")
    if on_error not in ("quarantine", "raise"):
        raise ConfigurationError(f"on_error={on_error!r}; expected 'quarantine' or 'raise'")
    lo, hi = dates if dates is not None else _default_dates()
    cls, messages = _schema(table, lo, hi)
    given = frame.collect_schema() if isinstance(frame, pl.LazyFrame) else frame.schema
    missing = [c for c in schema(table) if c not in given]
    if missing:
        raise ConfigurationError(f"frame lacks column(s) {', '.join(missing)} of {table}")
    lazy = isinstance(frame, pl.LazyFrame)
    # Readers give the exact dtypes: skip dataframely's per-column cast checks then.
    exact = all(given[c] == t for c, t in schema(table).items())
    good, info = cls.filter(frame.lazy(), cast=not exact)
    # FailureInfo keeps the failing rows with one boolean column per rule (False = broken);
    # building the report from it keeps the whole thing one lazy plan.
    rule_lf: pl.LazyFrame = info._lf
    rule_cols: list[str] = list(info._rule_columns)
    failures = _failures(rule_lf, table, messages, rule_cols)
    if on_error == "raise" or not lazy:
        good_df, fail_df = pl.collect_all([good.lazy(), failures])
        if on_error == "raise" and fail_df.height:
            counts = fail_df.group_by("rule", maintain_order=True).len()
            first = fail_df.row(0, named=True)
            raise ValidationError(
                f"{fail_df.height} {table} row(s) fail validation "
                f"({', '.join(f'{n} {r}' for r, n in counts.iter_rows())}); first: "
                f"{first['source']} {first['position']}: {first['message']}"
            )
        if lazy:
            return ValidationResult(good_df.lazy(), fail_df.lazy())
        return ValidationResult(good_df, fail_df)
    return ValidationResult(good.lazy(), failures)


__all__ = [
    "CURRENCY_CODES",
    "FAILURE_COLUMNS",
    "PRIMARY_KEY",
    "REQUIRED",
    "SUPPLIER_ID_MAX",
    "UOM_CODES",
    "ValidationResult",
    "validate",
]
