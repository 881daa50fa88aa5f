"""Invoice numbers: normalisation, exact duplicates and edit-distance-1 suspects."""

from __future__ import annotations

import re
from typing import Literal

import polars as pl

from scfeeds._reconcile._tolerances import Tolerances, beyond


def normalize_invoice_number(expr: pl.Expr) -> pl.Expr:
    """Lower case, letters and digits only, leading zeros of each digit run stripped.

    ``INV-000042K``, ``inv42k`` and ``Inv 0042-k`` all normalise to ``inv42k``; a run of zeros
    keeps one (``INV-000`` -> ``inv0``).
    """
    s = expr.str.to_lowercase().str.replace_all(r"[^a-z0-9]", "")
    # A zero run followed by a digit, at the start or after a non-digit, loses the zeros.
    return s.str.replace_all(r"(^|[^0-9])0+([0-9])", "${1}${2}")


_NON_ALNUM = re.compile(r"[^a-z0-9]")
_LEAD_ZEROS = re.compile(r"(^|[^0-9])0+([0-9])")


def normalize_invoice_number_py(number: str) -> str:
    """The scalar version of :func:`normalize_invoice_number` (same rule, plain Python)."""
    s = _NON_ALNUM.sub("", number.lower())
    return _LEAD_ZEROS.sub(r"\1\2", s)


def mark_duplicates(
    docs: pl.LazyFrame,
    tol: Tolerances,
    tol_frame: pl.LazyFrame | None,
    engine: Literal["auto", "in-memory", "streaming"] = "auto",
) -> pl.LazyFrame:
    """Add duplicate columns to one-row-per-invoice ``docs``.

    ``docs`` needs ``_doc`` (unique id), ``supplier_id``, ``invoice_number``, ``invoice_date``,
    ``total_amount`` (integer count of 1e-4) and ``_ord`` (the "first seen" order:
    invoice_date, then source, then input position). Adds ``invoice_number_normalized``,
    ``duplicate_of`` (the original's number, exact duplicates), ``suspect_of`` (the
    earlier invoice's number, suspects),
    ``_dup`` and ``_suspect`` (booleans).

    Suspects are found among originals (first of each normalised number) without comparing
    every pair: each number is expanded to its *deletion neighbourhood* (the number with one
    character deleted, for each position). Two different strings are at Levenshtein distance
    exactly 1 iff (substitution) deleting the same position from both gives the same string, or
    (insertion) deleting one position from the longer gives the shorter. Two equi-joins on those
    keys, within a supplier, find every such pair in time linear in total characters.
    """
    key = ["supplier_id", "invoice_number_normalized"]
    # ``docs`` arrive sorted by ``_ord``: the first occurrence of a key is the original.
    docs = (
        docs.with_columns(normalize_invoice_number(pl.col("invoice_number")).alias(key[1]))
        .with_columns(_dup=~pl.struct(key).is_first_distinct())
        .collect(engine=engine)
        .lazy()
    )
    originals = docs.filter(~pl.col("_dup"))
    docs = docs.join(
        docs.filter(pl.col("_dup"))
        .join(originals.select(*key, pl.col("invoice_number").alias("duplicate_of")), on=key)
        .select("_doc", "duplicate_of"),
        on="_doc",
        how="left",
    )

    # Keys: every original number with position -1, plus each one-character deletion with
    # its position; joined on a 64-bit hash of (supplier, position, key), then checked on
    # the strings themselves, so a hash collision cannot make a false pair.
    n = pl.col("invoice_number_normalized")
    pos = pl.col("_pos")
    keys = (
        originals.select(
            "_doc",
            "supplier_id",
            pl.int_ranges(-1, n.str.len_chars(), dtype=pl.Int32).alias("_pos"),
            n.alias("_n"),
        )
        .explode("_pos")
        .with_columns(
            _k=pl.when(pos < 0)
            .then(pl.col("_n"))
            .otherwise(
                pl.concat_str(pl.col("_n").str.slice(0, pos), pl.col("_n").str.slice(pos + 1))
            )
        )
        .select(
            "_doc",
            "_pos",
            "_k",
            _h=pl.struct("supplier_id", "_pos", "_k").hash(),
            _h0=pl.struct("supplier_id", "_k").hash(),
        )
        .collect(engine=engine)
        .lazy()
    )
    dels, origs = keys.filter(pos >= 0), keys.filter(pos < 0)
    # Substitution: same deleted position, same remainder (hence same length). Only keys that
    # occur twice can pair: filtering on that first keeps the self-join tiny.
    shared = dels.filter(pl.col("_h").is_duplicated())
    subst = (
        shared.join(shared, on="_h", suffix="_b")
        .filter((pl.col("_doc") != pl.col("_doc_b")) & (pl.col("_k") == pl.col("_k_b")))
        .select("_doc", "_doc_b")
    )
    # Insertion / deletion: the longer with one character deleted is the shorter.
    indel = (
        dels.join(origs, on="_h0", suffix="_b")
        .filter(pl.col("_k") == pl.col("_k_b"))
        .select("_doc", "_doc_b")
    )
    about = originals.select(
        "_doc", "supplier_id", "_ord", "invoice_number", "invoice_date", "total_amount"
    )
    pairs = (
        pl.concat([subst, indel])
        .join(about, on="_doc")
        .join(about, left_on="_doc_b", right_on="_doc", suffix="_b")
        .filter(pl.col("supplier_id") == pl.col("supplier_id_b"))
    )
    later = pl.col("_ord") > pl.col("_ord_b")

    def side(col: str, *, of_later: bool) -> pl.Expr:
        a, b = pl.col(col), pl.col(f"{col}_b")
        return (pl.when(later).then(a if of_later else b).otherwise(b if of_later else a)).alias(
            col if of_later else f"{col}_b"
        )

    fields = ("_doc", "_ord", "invoice_number", "invoice_date", "total_amount")
    # Orient each pair: the later invoice (the suspect) first, the earlier one "_b".
    pairs = pairs.select(
        "supplier_id",
        *(side(c, of_later=True) for c in fields),
        *(side(c, of_later=False) for c in fields),
    ).unique(["_doc", "_doc_b"])
    if tol_frame is not None:
        pairs = pairs.join(tol_frame, on="supplier_id", how="left")
    days = tol.expr("duplicate_days")
    gap = (pl.col("invoice_date") - pl.col("invoice_date_b")).dt.total_days().abs()
    amount_var = (pl.col("total_amount") - pl.col("total_amount_b")).abs()
    amount_differs = beyond(
        amount_var,
        pl.col("total_amount_b").abs(),
        tol.expr("duplicate_amount_pct"),
        tol.expr("duplicate_amount_abs"),
    )
    suspects = (
        pairs.filter(
            # A missing date cannot clear a suspect: it stays on hold for review.
            (days.is_null() | gap.is_null() | (gap <= days)) & ~amount_differs
        )
        .group_by("_doc")
        .agg(
            suspect_of=pl.col("invoice_number_b").sort_by("_ord_b").first(),
            _suspect_var=(pl.col("total_amount") - pl.col("total_amount_b"))
            .sort_by("_ord_b")
            .first(),
        )
    )
    return docs.join(suspects, on="_doc", how="left").with_columns(
        _suspect=pl.col("suspect_of").is_not_null()
    )
