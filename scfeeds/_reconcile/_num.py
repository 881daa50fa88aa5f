"""Exact fixed-point arithmetic on integers.

Canonical quantities and money are ``Decimal(18, 4)``. Inside the engine they travel as
``Int64`` counts of 1e-4 ("raw4"): sums, group-bys and comparisons on integers are exact and
an order of magnitude faster than on polars decimals (i128 with rescaling on every product).
Converted document quantities use 1e-8 ("raw8") so that 1 EA = 1/12 DZ summed twelve times
is still 1 DZ after rounding to 4 decimals. Products that could leave ``Int64`` are taken in
``Int128``.

Limits: raw4 values up to 2**53 (about 9e11 units or currency units) convert back to
decimals exactly; raw8 per PO line up to 9.2e10 units.
"""

from __future__ import annotations

from typing import Final

import polars as pl

RAW4: Final = 10_000
RAW8: Final = 100_000_000
DEC4: Final = pl.Decimal(38, 4)


def raw4(expr: pl.Expr) -> pl.Expr:
    """A decimal (or any number) as an ``Int64`` count of 1e-4 (rounded to 4 decimals)."""
    return (expr.cast(DEC4) * RAW4).cast(pl.Int64)


def dec4(expr: pl.Expr) -> pl.Expr:
    """An ``Int64`` count of 1e-4 back to ``Decimal(38, 4)``.

    Through ``Float64``: for integers below 2**53 the division is correctly rounded and the
    cast to a 4-decimal value rounds to nearest, so the result is exact (and 3x faster than a
    decimal division).
    """
    return (expr.cast(pl.Float64) / RAW4).cast(DEC4)


def div_round(num: pl.Expr, den: int | pl.Expr) -> pl.Expr:
    """``num / den`` rounded half away from zero, on integers (``den`` > 0)."""
    d = den if isinstance(den, pl.Expr) else pl.lit(den, pl.Int128)
    n = num.cast(pl.Int128)
    return ((n.abs() * 2 + d) // (d * 2)) * n.sign()
