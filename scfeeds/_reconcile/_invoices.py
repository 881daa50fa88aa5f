"""Invoice numbers: normalisation, exact duplicates and edit-distance-1 suspects."""

from __future__ import annotations

import re
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
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
    ``po_number`` (the PO of the invoice's first line), ``total_amount`` (integer count of
    1e-4) and ``_ord`` (the "first seen" order: invoice_date, then source, then input
    position). Adds ``invoice_number_normalized``, ``duplicate_of`` (the original's number,
    exact duplicates), ``suspect_of`` (the earlier invoice's number, suspects),
    ``_dup`` and ``_suspect`` (booleans).

    A suspect is a re-keyed copy: same supplier, same PO, the same total (within
    ``duplicate_amount``; default exact), dates within ``duplicate_days``, and a number one
    keying error away from an earlier original's (one character substituted, inserted or
    deleted, or two neighbours transposed), compared normalised and also as typed (letters
    and digits, zero padding kept). Sequential numbering puts clean
    invoices one edit apart (``INV-000041``, ``INV-000042``), so the number alone proves
    nothing; the same order and the same amount to the cent are what make a copy.

    Suspects are found among originals of the same supplier and PO (see
    :func:`_keying_pairs`): one check per pair when such pairs are few, else each number is
    expanded to its *deletion neighbourhood* (the number with one character deleted, for
    each position) and its neighbour transpositions, and equi-joins on those keys find every
    pair in time linear in total characters.
    """
    docs = _exact_duplicates(docs, engine)
    originals = docs.filter(~pl.col("_dup"))
    suspects = _suspects(_keying_pairs_of(originals, engine), tol, tol_frame)
    return docs.join(suspects, on="_doc", how="left").with_columns(
        _suspect=pl.col("suspect_of").is_not_null()
    )


_KEY: Final = ["supplier_id", "invoice_number_normalized"]


def _exact_duplicates(
    docs: pl.LazyFrame, engine: Literal["auto", "in-memory", "streaming"]
) -> pl.LazyFrame:
    """``docs`` (materialised) with the normalised number, ``_dup`` and ``duplicate_of``."""
    # ``docs`` arrive sorted by ``_ord``: the first occurrence of a key is the original.
    docs = (
        docs.with_columns(normalize_invoice_number(pl.col("invoice_number")).alias(_KEY[1]))
        .with_columns(_dup=~pl.struct(_KEY).is_first_distinct())
        .collect(engine=engine)
        .lazy()
    )
    originals = docs.filter(~pl.col("_dup"))
    return docs.join(
        docs.filter(pl.col("_dup"))
        .join(originals.select(*_KEY, pl.col("invoice_number").alias("duplicate_of")), on=_KEY)
        .select("_doc", "duplicate_of"),
        on="_doc",
        how="left",
    )


def _keying_pairs_of(
    originals: pl.LazyFrame, engine: Literal["auto", "in-memory", "streaming"]
) -> pl.LazyFrame:
    """Pairs of originals of the same supplier and PO whose numbers are one keying error
    apart, oriented: the later invoice (the suspect) first, the earlier one ``_b``."""
    # the group a copy must share with its original: supplier and PO (hashed; checked below)
    orig_df = originals.select(
        "_doc",
        pl.struct("supplier_id", "po_number").hash(seed=5).alias("supplier_id"),
        pl.col(_KEY[1]).alias("_n"),
        # the number as typed (zero padding kept): a slip in the padding, INV-000248 ->
        # INV-0400248, is one keystroke there and many once the zeros are dropped
        pl.col("invoice_number").str.to_lowercase().str.replace_all(r"[^a-z0-9]", "").alias("_t"),
    ).collect(engine=engine)
    found = _keying_pairs(orig_df).lazy()
    about = originals.select(
        "_doc", "supplier_id", "po_number", "_ord", "invoice_number", "invoice_date", "total_amount"
    )
    pairs = (
        found.join(about, on="_doc")
        .join(about, left_on="_doc_b", right_on="_doc", suffix="_b")
        .filter(
            (pl.col("supplier_id") == pl.col("supplier_id_b"))
            & pl.col("po_number").eq_missing(pl.col("po_number_b"))
        )
    )
    later = pl.col("_ord") > pl.col("_ord_b")

    def side(col: str, *, of_later: bool) -> pl.Expr:
        a, b = pl.col(col), pl.col(f"{col}_b")
        return (pl.when(later).then(a if of_later else b).otherwise(b if of_later else a)).alias(
            col if of_later else f"{col}_b"
        )

    fields = ("_doc", "_ord", "invoice_number", "invoice_date", "total_amount")
    return pairs.select(
        "supplier_id",
        *(side(c, of_later=True) for c in fields),
        *(side(c, of_later=False) for c in fields),
    ).unique(["_doc", "_doc_b"])


def _suspects(pairs: pl.LazyFrame, tol: Tolerances, tol_frame: pl.LazyFrame | None) -> pl.LazyFrame:
    """Per suspect (the later of a pair within the date and amount tolerances): the earliest
    look-alike's number (``suspect_of``) and the amount difference to it."""
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
    return (
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


#: Above this many candidate pairs (documents sharing a supplier and PO), pairs are found by
#: the linear deletion-neighbourhood join instead of one check per pair. Tests lower it.
_PAIR_LIMIT = 200_000


def _keying_pairs(orig: pl.DataFrame) -> pl.DataFrame:
    """Ordered pairs (``_doc``, ``_doc_b``) of the same group (``supplier_id``: a group hash)
    whose numbers are one keying error apart, normalised (``_n``) or as typed (``_t``).

    Most groups (a supplier's invoices of one PO) hold one or two invoices: the pairs within
    groups are then few and each is checked directly. A group of thousands (a blanket PO
    billed daily) would make that quadratic; past :data:`_PAIR_LIMIT` candidate pairs the
    deletion-neighbourhood join (:func:`_distance_one_pairs`, linear) runs instead.
    """
    sizes = orig.group_by("supplier_id").len()
    n_pairs = int((sizes["len"].cast(pl.Int64) * (sizes["len"].cast(pl.Int64) - 1)).sum())
    if n_pairs > _PAIR_LIMIT:
        return pl.concat(
            [
                _distance_one_pairs(orig.drop("_t")),
                _distance_one_pairs(orig.drop("_n").rename({"_t": "_n"})),
            ]
        ).unique()
    if n_pairs == 0:
        return _EMPTY_PAIRS
    cand = (
        orig.filter(pl.col("supplier_id").is_duplicated())
        .join(orig, on="supplier_id", suffix="_b")
        .filter(pl.col("_doc") != pl.col("_doc_b"))
    )
    keep = [
        _one_keying_error(n, nb) or _one_keying_error(t, tb)
        for n, nb, t, tb in cand.select("_n", "_n_b", "_t", "_t_b").iter_rows()
    ]
    return cand.filter(pl.Series(keep, dtype=pl.Boolean)).select(
        pl.col("_doc").cast(pl.UInt64), pl.col("_doc_b").cast(pl.UInt64)
    )


def _one_keying_error(a: str | None, b: str | None) -> bool:
    """One character substituted, inserted or deleted, or two neighbours swapped (a missing
    number counts as empty, as in :func:`_distance_one_pairs`)."""
    a, b = a or "", b or ""
    if a == b:
        return False
    la, lb = len(a), len(b)
    if abs(la - lb) > 1:
        return False
    if la > lb:
        a, b, la, lb = b, a, lb, la
    i = 0
    while i < la and a[i] == b[i]:
        i += 1
    if la < lb:  # b is a with one character inserted at i
        return a[i:] == b[i + 1 :]
    if a[i + 1 :] == b[i + 1 :]:  # substitution at i
        return True
    return i + 1 < la and a[i] == b[i + 1] and a[i + 1] == b[i] and a[i + 2 :] == b[i + 2 :]


_U64 = 1 << 64
_BASE: Final = 0x100000001B3  # odd, so it has an inverse modulo 2**64
_BASE_INV: Final = pow(_BASE, -1, _U64)
_MIX: Final = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9)

U64s = npt.NDArray[np.uint64]
_EMPTY_PAIRS = pl.DataFrame(schema={"_doc": pl.UInt64, "_doc_b": pl.UInt64})


def _u64(x: int) -> np.uint64:
    return np.uint64(x % _U64)


def _distance_one_pairs(orig: pl.DataFrame) -> pl.DataFrame:
    """Every ordered pair of documents (same ``supplier_id``: any group key) whose normalised
    numbers ``_n`` are one keying error apart: Levenshtein distance exactly 1, or two
    neighbouring characters transposed; columns ``_doc``, ``_doc_b``.

    The *deletion neighbourhood* of a string is the string with one character deleted, for each
    position. Two different strings are at distance 1 iff (substitution) deleting the same
    position from both gives the same string, or (insertion / deletion) deleting one position
    from the longer gives the shorter. Instead of building those strings (about 13 per invoice),
    each gets a 64-bit polynomial hash computed in numpy from prefix sums (the hash of
    ``s[:p] + s[p+1:]`` is ``P[p] + (F - P[p+1]) / B`` modulo 2**64, B odd so invertible).
    Keys that occur twice are the only candidates; each candidate is then checked on the
    strings, so a hash collision costs time, never a false pair. Linear in total characters,
    no pairwise loop.
    """
    n = orig.height
    if n < 2:
        return _EMPTY_PAIRS
    strings = orig["_n"].fill_null("")
    lens = strings.str.len_bytes().to_numpy().astype(np.int64)
    width = int(lens.max())
    if width == 0:
        return _EMPTY_PAIRS
    cand = _candidates(orig, strings, lens, width)
    if cand.height == 0:
        return _EMPTY_PAIRS
    good = cand.filter(_one_error_apart(cand, strings, orig["supplier_id"]))
    docs = orig["_doc"]
    return pl.DataFrame(
        {"_doc": docs.gather(good["_i"]), "_doc_b": docs.gather(good["_i_b"])},
        schema={"_doc": pl.UInt64, "_doc_b": pl.UInt64},
    ).unique()


def _keyed(h: U64s, salt_of: U64s, extra: npt.NDArray[np.int64]) -> U64s:
    """A hash mixed with the group's salt and a small integer (length, position)."""
    with np.errstate(over="ignore"):
        mixed: U64s = (h * _u64(_MIX[2]) ^ salt_of) + extra.astype(np.uint64) * _u64(_MIX[0])
    return mixed


def _meeting(idx: npt.NDArray[np.int64], keys: U64s, own_key: U64s, p: int) -> pl.DataFrame:
    """Pairs (``_i`` from ``idx``, ``_i_b``) whose edited key meets another's own key."""
    hit = np.isin(keys, own_key)
    near = pl.DataFrame({"_i": idx[hit], "_ki": keys[hit]})
    own_hit = np.isin(own_key, keys[hit])
    own = pl.DataFrame({"_i_b": np.flatnonzero(own_hit).astype(np.int64), "_ki": own_key[own_hit]})
    return near.join(own, on="_ki").select("_i", "_i_b", pl.lit(p, pl.Int64).alias("_p"))


def _sharing(idx: npt.NDArray[np.int64], keys: U64s, p: int) -> pl.DataFrame:
    """Pairs (``_i``, ``_i_b``) of rows in ``idx`` with the same key (a key seen twice)."""
    order = np.argsort(keys, kind="stable")
    repeat = keys[order][1:] == keys[order][:-1]
    in_group = np.zeros(len(idx), dtype=bool)
    in_group[1:] |= repeat
    in_group[:-1] |= repeat
    shared = pl.DataFrame({"_i": idx[order[in_group]], "_ks": keys[order[in_group]]})
    return (
        shared.with_columns(_p=pl.lit(p, pl.Int64))
        .join(shared, on="_ks", suffix="_b")
        .filter(pl.col("_i") != pl.col("_i_b"))
        .select("_i", "_i_b", "_p")
    )


def _candidates(
    orig: pl.DataFrame, strings: pl.Series, lens: npt.NDArray[np.int64], width: int
) -> pl.DataFrame:
    """Candidate pairs (``_i``, ``_i_b``) by hash, with the edit's position ``_p`` (``-1 -
    q``: positions q and q + 1 transposed); a hash collision may add a false one."""
    n = orig.height
    # normalised numbers are ASCII letters and digits: one byte per character
    buf = np.frombuffer(
        "".join(strings.str.pad_end(width, "\x00").to_list()).encode("ascii"), dtype=np.uint8
    ).reshape(n, width)
    powers = np.array([pow(_BASE, j, _U64) for j in range(width)], dtype=np.uint64)
    found: list[pl.DataFrame] = []
    with np.errstate(over="ignore"):
        prefix = np.zeros((n, width + 1), dtype=np.uint64)
        np.cumsum(buf.astype(np.uint64) * powers, axis=1, dtype=np.uint64, out=prefix[:, 1:])
        full = prefix[:, width]
        sup = orig["supplier_id"].hash(seed=3).to_numpy().astype(np.uint64)
        salt = (sup * _u64(_MIX[0])) ^ _u64(_MIX[1])
        own_key = _keyed(full, salt, lens)
        # One position at a time (a substitution pair shares its position): a few arrays of
        # one key per string at once, not the whole neighbourhood (13 keys per string).
        for p in range(width):
            idx = np.flatnonzero(lens > p)
            deleted = prefix[idx, p] + (full[idx] - prefix[idx, p + 1]) * _u64(_BASE_INV)
            # substitution key: deletion hash, position, length; insertion key: deletion
            # hash and the length left, to meet the shorter string's own hash and length
            sub_key = _keyed(deleted, salt[idx], np.full(len(idx), p * 1024) + lens[idx])
            found.append(_sharing(idx, sub_key, p))
            found.append(_meeting(idx, _keyed(deleted, salt[idx], lens[idx] - 1), own_key, p))
            if p + 1 < width:
                # transposition of p and p+1: the swapped string's hash meets another's own
                two = np.flatnonzero(lens > p + 1)
                a, b = buf[two, p].astype(np.uint64), buf[two, p + 1].astype(np.uint64)
                swapped = full[two] + (b - a) * powers[p] + (a - b) * powers[p + 1]
                keys = _keyed(swapped, salt[two], lens[two])
                keep = a != b
                found.append(_meeting(two[keep], keys[keep], own_key, -1 - p))
    schema = {"_i": pl.Int64, "_i_b": pl.Int64, "_p": pl.Int64}
    return pl.concat([f.cast(schema) for f in found]).unique()  # type: ignore[arg-type]


def _one_error_apart(cand: pl.DataFrame, strings: pl.Series, groups: pl.Series) -> pl.Series:
    """The exact check of each candidate on the strings: deleting position ``_p`` from the
    first gives the second with position ``_p`` deleted (substitution) or the second itself
    (insertion / deletion), or (``_p`` < 0) the two neighbours swapped give the second."""
    check = pl.DataFrame(
        {
            "a": strings.gather(cand["_i"]),
            "b": strings.gather(cand["_i_b"]),
            "p": cand["_p"],
            "sa": groups.gather(cand["_i"]),
            "sb": groups.gather(cand["_i_b"]),
        }
    )
    at = pl.col("p").clip(lower_bound=0)
    del_a = pl.concat_str(pl.col("a").str.slice(0, at), pl.col("a").str.slice(at + 1))
    del_b = pl.concat_str(pl.col("b").str.slice(0, at), pl.col("b").str.slice(at + 1))
    same_len = pl.col("a").str.len_bytes() == pl.col("b").str.len_bytes()
    # _p < 0: positions q = -1 - _p and q + 1 swapped
    q = (-1 - pl.col("p")).clip(lower_bound=0)
    swap_a = pl.concat_str(
        pl.col("a").str.slice(0, q),
        pl.col("a").str.slice(q + 1, 1),
        pl.col("a").str.slice(q, 1),
        pl.col("a").str.slice(q + 2),
    )
    return check.select(
        (pl.col("sa") == pl.col("sb"))
        & (pl.col("a") != pl.col("b"))
        & pl.when(pl.col("p") < 0)
        .then(swap_a == pl.col("b"))
        .when(same_len)
        .then(del_a == del_b)
        .otherwise(del_a == pl.col("b"))
    ).to_series()
