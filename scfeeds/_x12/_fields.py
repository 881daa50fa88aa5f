"""Element values of X12 segments as polars expressions: dates, numbers, line numbers,
item IDs from qualifier / ID pairs, and the error rows of bad or missing elements (shared by
the 850 / 856 / 810 builders and the 855 reader)."""

from __future__ import annotations

from typing import Final

import polars as pl

from scfeeds.schemas import QTY

# Product/service ID qualifiers (X12 element 235) in order of preference for item_id: the
# buyer's part number first (the key the buyer's receipts and catalogue use), then the
# vendor's, then GTIN-like codes. Without any of them, the first pair wins.
ITEM_QUALIFIERS: Final = ("BP", "IN", "VP", "VN")

c = pl.col


def _first(frame: pl.LazyFrame, key: str | list[str]) -> pl.LazyFrame:
    return frame.unique(subset=key, keep="first", maintain_order=True)


def _line_number(x: pl.Expr) -> pl.Expr:
    """CONTRACTS: no surrounding spaces, no leading zeros ("0010" -> "10", "000" -> "0")."""
    s = x.str.strip_chars()
    z = s.str.strip_chars_start("0")
    fixed = pl.when(s == "").then(None).when(z == "").then(pl.lit("0")).otherwise(z)
    # Most line numbers are already clean: keep them as they are (a quarter of the cost).
    clean = ~x.str.starts_with("0") & (s == x) & (x != "")
    return pl.when(clean).then(x).otherwise(fixed)


def _date(x: pl.Expr) -> pl.Expr:
    """DT elements: CCYYMMDD, or YYMMDD in versions before 004010."""
    return (
        pl.when(x.str.len_chars() == 8)
        .then(x.str.to_date("%Y%m%d", strict=False))
        .when(x.str.len_chars() == 6)
        .then(x.str.to_date("%y%m%d", strict=False))
    )


def _item(prefix: str, first: int, last: int) -> pl.Expr:
    """item_id from qualifier/ID pairs (``prefix`` first..last, qualifier at odd offsets):
    the first pair whose qualifier comes earliest in ITEM_QUALIFIERS, else the first ID."""
    pairs = [(c(f"{prefix}{i:02d}"), c(f"{prefix}{i + 1:02d}")) for i in range(first, last, 2)]
    return pl.coalesce(
        [
            *(pl.when(q == qual).then(v) for qual in ITEM_QUALIFIERS for q, v in pairs),
            *(v for _, v in pairs),
        ]
    )


def _number(x: pl.Expr) -> pl.Expr:
    # X12 R/N elements carry no spaces: anything unparsable is reported as BAD_NUMBER.
    return x.cast(QTY, strict=False)


def _bad(
    frame: pl.LazyFrame, col: str, parsed: pl.Expr, code: str, pos: str = "pos"
) -> pl.LazyFrame:
    """Error rows where element ``col`` is present but ``parsed`` is null."""
    sid = col[:-2]
    return frame.filter(c(col).is_not_null() & parsed.is_null()).select(
        pl.lit(None, dtype=pl.Int64).alias("interchange_index"),
        pl.lit(None, dtype=pl.Int64).alias("group_index"),
        c("set_index"),
        c(pos).alias("pos"),
        pl.lit(sid).alias("segment_id"),
        pl.lit(col).alias("element"),
        pl.lit(code).alias("code"),
        pl.format(
            "{} '{}' is not a {}",
            pl.lit(col),
            c(col),
            pl.lit("number" if code == "BAD_NUMBER" else "date (CCYYMMDD)"),
        ).alias("message"),
    )


def _missing(frame: pl.LazyFrame, col: str, pos: str = "pos") -> pl.LazyFrame:
    return frame.filter(c(col).is_null()).select(
        pl.lit(None, dtype=pl.Int64).alias("interchange_index"),
        pl.lit(None, dtype=pl.Int64).alias("group_index"),
        c("set_index"),
        c(pos).alias("pos"),
        pl.lit(col[:-2]).alias("segment_id"),
        pl.lit(col).alias("element"),
        pl.lit("MISSING_ELEMENT").alias("code"),
        pl.lit(f"mandatory element {col} is empty").alias("message"),
    )
