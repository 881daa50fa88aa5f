"""Match tolerances: percent and absolute limits per check, with per-supplier overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Final

import polars as pl

from scfeeds._reconcile._num import RAW4, raw4
from scfeeds.exceptions import ConfigurationError

Limit = Decimal | int | str | float | None

#: The checks that take a (percent, absolute) pair, in the order the docs list them.
CHECKS: Final[tuple[str, ...]] = (
    "short_ship",
    "over_ship",
    "over_invoice",
    "over_order",
    "price",
    "duplicate_amount",
)

#: Every per-supplier field: ``<check>_pct`` and ``<check>_abs`` plus ``duplicate_days``.
FIELDS: Final[tuple[str, ...]] = (
    *(f"{check}_{kind}" for check in CHECKS for kind in ("pct", "abs")),
    "duplicate_days",
)


def _to_decimal(name: str, value: Limit) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigurationError(f"Tolerances.{name} must be a number or None, not {value!r}")
    try:
        # str() first so that 0.1 (float) means 0.1, not 0.1000000000000000055...
        dec = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    except (InvalidOperation, TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"Tolerances.{name} must be a number or None, not {value!r}"
        ) from exc
    if not dec.is_finite() or dec < 0:
        raise ConfigurationError(
            f"Tolerances.{name} must be >= 0 (0 = exact) or None (unlimited), not {value!r}"
        )
    return dec


@dataclass(frozen=True, kw_only=True, slots=True)
class Tolerances:
    """How far a document may deviate before the match engine raises an exception.

    Every check has a percent limit (``*_pct``, in percent: ``5`` means 5 %) and an absolute
    limit (``*_abs``, in the PO line's unit for quantities, in currency for amounts).
    A check flags a variance only when it is **beyond every limit that is set**: beyond both
    when both are set (the lenient reading of SAP's paired limits), beyond the one that is set
    otherwise. ``None`` leaves a limit unset; a check whose two limits are both ``None`` is
    unlimited and never flags. ``0`` means exact: any variance at all is beyond it. A variance
    exactly at a limit is within tolerance.

    ====================  ======================================  =============================
    check                 variance (PO unit / currency)           ERP counterpart
    ====================  ======================================  =============================
    ``short_ship``        O - R when 0 < R < O (base O)           Oracle receipt tolerance
    ``over_ship``         R - O (base O)                          Oracle over-receipt tolerance
    ``over_invoice``      I - R when R > 0 (base R)               SAP DQ, Oracle QTY REC hold
    ``over_order``        I - O (base O)                          Oracle QTY ORD hold
    ``price``             |billed - I x PO price| (base I x price)  SAP PP, Oracle PRICE hold
    ``duplicate_amount``  |total - original total| of a suspect   SAP duplicate invoice check
                          (same supplier, PO, number one keying   (reference, amount, date,
                          error apart)                            vendor)
    ====================  ======================================  =============================

    (O ordered, R received, I invoiced.) SAP's DW key (quantity variance when the goods
    receipt quantity is zero) has no tolerance here: ``INVOICED_NOT_RECEIVED`` is exact.

    Parameters
    ----------
    short_ship_pct, short_ship_abs, over_ship_pct, over_ship_abs, over_invoice_pct,
    over_invoice_abs, over_order_pct, over_order_abs, price_pct, price_abs,
    duplicate_amount_pct, duplicate_amount_abs
        The limits (numbers are converted to :class:`decimal.Decimal`; floats via ``str``).
        Defaults: quantities exact, price 1 %, duplicate suspects exact (the same total to
        the last decimal: a re-keyed copy bills the same lines; with sequential invoice
        numbers, a tolerance would make neighbouring invoices of similar amounts suspects).
    duplicate_days
        Two invoices are duplicate suspects only if their dates are at most this many days
        apart (``None``: any distance).
    overrides
        Per-supplier limits: a frame with a ``supplier_id`` column and any of the field names
        above. For a supplier listed there, each column present replaces the default, and a
        null in it means *unset* (as ``None`` does here); columns absent keep the defaults.

    Examples
    --------
    >>> import polars as pl
    >>> tol = Tolerances(price_pct=2, price_abs=5, over_ship_pct=10)
    >>> tol.price_pct
    Decimal('2')
    >>> strict = pl.DataFrame({"supplier_id": ["SUP007"], "price_pct": [0.0]})
    >>> Tolerances(overrides=strict).overrides.height
    1
    """

    short_ship_pct: Limit = 0
    short_ship_abs: Limit = None
    over_ship_pct: Limit = 0
    over_ship_abs: Limit = None
    over_invoice_pct: Limit = 0
    over_invoice_abs: Limit = None
    over_order_pct: Limit = 0
    over_order_abs: Limit = None
    price_pct: Limit = 1
    price_abs: Limit = None
    duplicate_amount_pct: Limit = 0
    duplicate_amount_abs: Limit = None
    duplicate_days: int | None = 7
    overrides: pl.DataFrame | None = None

    def __post_init__(self) -> None:
        for name in FIELDS[:-1]:
            object.__setattr__(self, name, _to_decimal(name, getattr(self, name)))
        days = self.duplicate_days
        if days is not None and (isinstance(days, bool) or not isinstance(days, int) or days < 0):
            raise ConfigurationError(
                f"Tolerances.duplicate_days must be an int >= 0 or None, not {days!r}"
            )
        if self.overrides is not None:
            object.__setattr__(self, "overrides", _check_overrides(self.overrides))

    @classmethod
    def exact(cls) -> Tolerances:
        """Every check exact (0): any variance at all is an exception."""
        return cls(price_pct=0, duplicate_amount_pct=0)

    def replace(self, **changes: object) -> Tolerances:
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def default(self, field: str) -> Decimal | int | None:
        """The default (non-overridden) value of ``field``."""
        value: Decimal | int | None = getattr(self, field)
        return value

    def raw(self, field: str) -> int | None:
        """The default of ``field`` as an integer count of 1e-4 (days as is)."""
        value = self.default(field)
        if value is None or field == "duplicate_days":
            return None if value is None else int(value)
        return int((Decimal(value) * RAW4).to_integral_value())

    def frame(self) -> pl.LazyFrame | None:
        """The overrides as a lazy frame: ``supplier_id``, ``_tov`` (True) and the columns given
        (renamed ``_t_<field>``) as integer counts of 1e-4; ``None`` without overrides."""
        if self.overrides is None:
            return None
        cols = [
            (pl.col(name).cast(pl.Int64) if name == "duplicate_days" else raw4(pl.col(name))).alias(
                f"_t_{name}"
            )
            for name in FIELDS
            if name in self.overrides.columns
        ]
        return self.overrides.lazy().select(
            pl.col("supplier_id").cast(pl.String), pl.lit(True).alias("_tov"), *cols
        )

    def expr(self, field: str) -> pl.Expr:
        """The limit for ``field`` on each row, an ``Int64`` count of 1e-4 (days for
        ``duplicate_days``); the supplier's override if the supplier is listed (needs the
        ``_tov`` and ``_t_*`` columns of :meth:`frame` joined in), else the default."""
        base = pl.lit(self.raw(field), dtype=pl.Int64)
        if self.overrides is not None and field in self.overrides.columns:
            return (
                pl.when(pl.col("_tov").fill_null(False))
                .then(pl.col(f"_t_{field}"))
                .otherwise(base)
                .alias(field)
            )
        return base.alias(field)


def _check_overrides(frame: pl.DataFrame) -> pl.DataFrame:
    if isinstance(frame, pl.LazyFrame):
        frame = frame.collect()
    if not isinstance(frame, pl.DataFrame):
        raise ConfigurationError(
            "Tolerances.overrides must be a polars DataFrame keyed by supplier_id, "
            f"not {type(frame).__name__}"
        )
    if "supplier_id" not in frame.columns:
        raise ConfigurationError("Tolerances.overrides needs a 'supplier_id' column")
    unknown = [c for c in frame.columns if c != "supplier_id" and c not in FIELDS]
    if unknown:
        raise ConfigurationError(
            f"Tolerances.overrides has unknown columns {unknown}; allowed: {', '.join(FIELDS)}"
        )
    if frame["supplier_id"].is_duplicated().any():
        dup = frame.filter(pl.col("supplier_id").is_duplicated())["supplier_id"].unique()
        raise ConfigurationError(
            f"Tolerances.overrides lists a supplier more than once: {dup.to_list()}"
        )
    for name in frame.columns:
        if name == "supplier_id":
            continue
        col = frame[name]
        if not col.dtype.is_numeric():
            raise ConfigurationError(
                f"Tolerances.overrides column {name!r} must be numeric, not {col.dtype}"
            )
        if (col.drop_nulls() < 0).any():
            raise ConfigurationError(
                f"Tolerances.overrides column {name!r} has negative values; "
                "use 0 for exact, null for unset"
            )
    return frame


def coerce(tolerances: Tolerances | None) -> Tolerances:
    """``None`` -> the defaults; anything but a :class:`Tolerances` is a configuration error."""
    if tolerances is None:
        return Tolerances()
    if not isinstance(tolerances, Tolerances):
        raise ConfigurationError(
            "tolerances must be a scfeeds.Tolerances (e.g. Tolerances(price_pct=2)), "
            f"not {type(tolerances).__name__}"
        )
    return tolerances


def beyond(variance: pl.Expr, base: pl.Expr, pct: pl.Expr, abs_: pl.Expr) -> pl.Expr:
    """True where ``variance`` (>= 0 direction) is beyond every limit that is set.

    All four are integer counts of 1e-4 (``pct`` in 1e-4 percent of ``base``). Compared
    exactly in ``Int128`` as ``variance * 100 > base * pct``, so a variance exactly at the
    limit is within tolerance.
    """
    v = variance.cast(pl.Int128)
    over_pct = (v * (100 * RAW4)) > (base.cast(pl.Int128) * pct.cast(pl.Int128))
    over_abs = v > abs_.cast(pl.Int128)
    return (
        (v > 0)
        & (pct.is_not_null() | abs_.is_not_null())
        & (pct.is_null() | over_pct)
        & (abs_.is_null() | over_abs)
    ).fill_null(False)
