"""Unit-of-measure conversion factors: standard ones plus an item/unit table.

Factors are resolved once, in Python, on the *conversion graph* (small: one edge per item pack
size), never on the data: for every item that has its own factors, all pairs of units reachable
through its edges and the standard ones; for every other item, all pairs reachable through the
standard (and item-less) edges. Factors are kept as exact fractions ``num / den`` so that
``qty * num / den`` is computed once per document line, in integers.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable
from decimal import Decimal
from fractions import Fraction
from typing import Final

import polars as pl

from scfeeds.exceptions import ConfigurationError

#: Factors every item has: (from_uom, to_uom, factor) meaning 1 from_uom = factor to_uom.
#: Unit codes are ANSI X12 element 355 codes.
STANDARD_CONVERSIONS: Final[tuple[tuple[str, str, Decimal], ...]] = (
    ("DZ", "EA", Decimal(12)),  # dozen
    ("LB", "OZ", Decimal(16)),  # pound, ounce
    ("FT", "IN", Decimal(12)),  # foot, inch
    ("YD", "FT", Decimal(3)),  # yard
)

#: Converted quantities carry 12 decimals until the per-line sums are rounded to 4.

FACTOR: Final = pl.Int64()

FACTOR_SCHEMA: Final = pl.Schema(
    {
        "item_id": pl.String(),
        "_from": pl.String(),
        "_to": pl.String(),
        "_num": FACTOR,
        "_den": FACTOR,
    }
)


def normalize_uom(expr: pl.Expr) -> pl.Expr:
    """Unit codes compare upper-cased and trimmed; empty means unknown (null)."""
    u = expr.str.strip_chars().str.to_uppercase()
    return pl.when(u == "").then(None).otherwise(u)


Edge = tuple[str, str, Fraction]


def _closure(edges: Iterable[Edge]) -> dict[tuple[str, str], Fraction]:
    """All (from, to) -> factor reachable through ``edges`` and their inverses (BFS)."""
    graph: dict[str, list[tuple[str, Fraction]]] = defaultdict(list)
    for a, b, f in edges:
        graph[a].append((b, f))
        graph[b].append((a, 1 / f))
    out: dict[tuple[str, str], Fraction] = {}
    for start in graph:
        seen = {start: Fraction(1)}
        todo = deque([start])
        while todo:
            u = todo.popleft()
            for v, f in graph[u]:
                if v not in seen:
                    seen[v] = seen[u] * f
                    todo.append(v)
        for unit, factor in seen.items():
            if unit != start:
                out[(start, unit)] = factor
    return out


def factor_table(conversions: pl.DataFrame | pl.LazyFrame | None) -> pl.DataFrame:
    """Every resolvable (item_id or null for any item, from unit, to unit) -> (num, den).

    Rows with a null ``item_id`` hold for items without their own factors; an item that has
    its own rows gets a full set of rows (its edges plus the standard and item-less ones).
    """
    generic: list[Edge] = [(a, b, Fraction(f)) for a, b, f in STANDARD_CONVERSIONS]
    per_item: dict[str, list[Edge]] = defaultdict(list)
    if conversions is not None:
        conv = (
            conversions.lazy().collect() if isinstance(conversions, pl.LazyFrame) else conversions
        )
        if not isinstance(conv, pl.DataFrame):
            raise ConfigurationError(
                "conversions must be a polars frame with item_id, from_uom, to_uom, factor"
            )
        missing = {"item_id", "from_uom", "to_uom", "factor"} - set(conv.columns)
        if missing:
            raise ConfigurationError(
                f"conversions is missing columns {sorted(missing)}; "
                "expected item_id, from_uom, to_uom, factor (1 from_uom = factor to_uom)"
            )
        conv = conv.select(
            pl.col("item_id").cast(pl.String),
            normalize_uom(pl.col("from_uom").cast(pl.String)).alias("from_uom"),
            normalize_uom(pl.col("to_uom").cast(pl.String)).alias("to_uom"),
            pl.col("factor").cast(pl.String),
        )
        for i, (item, a, b, f) in enumerate(conv.iter_rows()):
            if a is None or b is None or f is None:
                raise ConfigurationError(f"conversions row {i}: from_uom, to_uom and factor needed")
            factor = Fraction(Decimal(f))
            if factor <= 0:
                raise ConfigurationError(f"conversions row {i}: factor must be > 0, not {f}")
            if item is None:
                generic.append((a, b, factor))
            else:
                per_item[item].append((a, b, factor))
    rows: list[tuple[str | None, str, str, int, int]] = [
        (None, a, b, f.numerator, f.denominator) for (a, b), f in _closure(generic).items()
    ]
    for item, edges in per_item.items():
        rows.extend(
            (item, a, b, f.numerator, f.denominator)
            for (a, b), f in _closure([*generic, *edges]).items()
        )
    return pl.DataFrame(rows, schema=FACTOR_SCHEMA, orient="row")
