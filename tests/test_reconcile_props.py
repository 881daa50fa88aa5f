"""Invariants of the match on generated inputs (hypothesis)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from itertools import pairwise

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scfeeds._reconcile import _invoices, normalize_invoice_number_py, reconcile
from scfeeds._reconcile._invoices import mark_duplicates
from scfeeds._reconcile._tolerances import Tolerances
from scfeeds.schemas import schema

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _frame(table: str, rows: list[dict[str, object]]) -> pl.DataFrame:
    full = schema(table)  # type: ignore[arg-type]
    return pl.DataFrame(
        {c: pl.Series(c, [r.get(c) for r in rows], dtype=full[c], strict=False) for c in full}
    )


po_keys = st.lists(
    st.tuples(
        st.sampled_from(["S1", "S2"]), st.sampled_from(["P1", "P2", "P3"]), st.integers(1, 4)
    ),
    min_size=1,
    max_size=12,
    unique=True,
)
qty = st.integers(0, 50)


@st.composite
def worlds(draw: st.DrawFn) -> dict[str, object]:
    keys = draw(po_keys)
    po = [
        {
            "supplier_id": s,
            "po_number": p,
            "line_number": str(n),
            "item_id": f"I{n}",
            "qty_ordered": draw(qty),
            "uom": "EA",
            "unit_price": draw(st.integers(1, 9)),
        }
        for s, p, n in keys
    ]
    refs = st.tuples(
        st.sampled_from(["S1", "S2"]), st.sampled_from(["P1", "P2", "P3", "P9"]), st.integers(1, 5)
    )
    asn = [
        {
            "supplier_id": s,
            "shipment_id": f"SH{i}",
            "po_number": p,
            "line_number": str(n),
            "item_id": f"I{n}",
            "qty_shipped": q,
            "uom": "EA",
        }
        for i, ((s, p, n), q) in enumerate(draw(st.lists(st.tuples(refs, qty), max_size=15)))
    ]
    # Invoice numbers at edit distance >= 3 from each other (the digits written three
    # times), so only the copies drawn below are duplicates.
    originals = []
    for i, ((s, p, n), q) in enumerate(draw(st.lists(st.tuples(refs, qty), max_size=15))):
        originals.append(
            {
                "supplier_id": s,
                "invoice_number": f"N{str(i) * 3}",
                "invoice_date": dt.date(2026, 1, 1),
                "po_number": p,
                "line_number": str(n),
                "item_id": f"I{n}",
                "qty_invoiced": q,
                "uom": "EA",
                "unit_price": 1,
                "line_amount": q,
                "source": "a",
            }
        )
    copies = [
        {**row, "source": "b"}
        for row, copy in zip(
            originals,
            draw(st.lists(st.booleans(), min_size=len(originals), max_size=len(originals))),
            strict=True,
        )
        if copy
    ]
    return {"po": po, "asn": asn, "originals": originals, "copies": copies}


@SETTINGS
@given(worlds(), st.booleans())
def test_sums_conserved_and_each_po_line_once(world: dict[str, object], lazy: bool) -> None:
    po = _frame("po_lines", world["po"])  # type: ignore[arg-type]
    asn = _frame("asn_lines", world["asn"])  # type: ignore[arg-type]
    originals: list[dict[str, object]] = world["originals"]  # type: ignore[assignment]
    copies: list[dict[str, object]] = world["copies"]  # type: ignore[assignment]
    inv = _frame("invoice_lines", originals + copies)
    frames = (po.lazy(), asn.lazy(), inv.lazy()) if lazy else (po, asn, inv)
    rec = reconcile(*frames)
    lines = rec.lines.collect()
    exc = rec.exceptions.collect()

    # each PO line exactly once
    keys = {(r["supplier_id"], r["po_number"], r["line_number"]) for r in world["po"]}  # type: ignore[attr-defined]
    got = set(lines.select("supplier_id", "po_number", "line_number").iter_rows())
    assert lines.height == len(keys)
    assert got == keys

    # invoiced on lines + invoiced on no PO line == every non-duplicate invoice line
    matched = sum(
        Decimal(r["qty_invoiced"])
        for r in originals
        if (r["supplier_id"], r["po_number"], r["line_number"]) in keys
    )  # type: ignore[arg-type]
    unmatched = sum(
        Decimal(r["qty_invoiced"])
        for r in originals
        if (r["supplier_id"], r["po_number"], r["line_number"]) not in keys
    )  # type: ignore[arg-type]
    total = sum((Decimal(r["qty_invoiced"]) for r in originals), Decimal(0))  # type: ignore[arg-type]
    assert sum(lines["qty_invoiced"], Decimal(0)) == matched
    assert matched + unmatched == total
    shipped = sum(
        Decimal(r["qty_shipped"])
        for r in world["asn"]
        if (r["supplier_id"], r["po_number"], r["line_number"]) in keys
    )  # type: ignore[attr-defined, index]
    assert sum(lines["qty_shipped"], Decimal(0)) == shipped

    # every copy is a duplicate; every unmatched document line is reported
    dup = exc.filter(pl.col("code") == "DUPLICATE_INVOICE")
    assert sorted(dup["invoice_number"]) == sorted(r["invoice_number"] for r in copies)  # type: ignore[type-var]
    no_po = exc.filter(pl.col("code").is_in(["NO_PO_REFERENCE", "SUPPLIER_MISMATCH"]))
    n_unmatched_docs = sum(
        1
        for r in [*originals, *copies, *world["asn"]]  # type: ignore[misc]
        if (r["supplier_id"], r["po_number"], r["line_number"]) not in keys
    )
    assert no_po.height == n_unmatched_docs
    assert exc.filter(pl.col("code") == "DUPLICATE_SUSPECT").height == 0

    # the primary status is always one of the line's flags, or a MATCHED status
    for status, flags in lines.select("status", "flags").iter_rows():
        assert status in flags or (status.startswith("MATCHED") and not flags)


def _levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


@SETTINGS
@given(st.lists(st.text(alphabet="ab01", min_size=0, max_size=5), min_size=1, max_size=25))
def test_suspects_are_exactly_the_pairs_one_keying_error_apart(numbers: list[str]) -> None:
    docs = pl.DataFrame(
        {
            "_doc": pl.Series(range(len(numbers)), dtype=pl.UInt64),
            "_ord": pl.Series(range(len(numbers)), dtype=pl.UInt32),
            "supplier_id": ["S1"] * len(numbers),
            "po_number": ["P1"] * len(numbers),
            "invoice_number": numbers,
            "invoice_date": [dt.date(2026, 1, 1)] * len(numbers),
            "total_amount": [100] * len(numbers),
        }
    )
    # both ways of finding pairs: one check per pair, and the linear join (forced)
    outs = []
    for limit in (_invoices._PAIR_LIMIT, -1):
        saved, _invoices._PAIR_LIMIT = _invoices._PAIR_LIMIT, limit
        try:
            outs.append(mark_duplicates(docs.lazy(), Tolerances(), None).collect().sort("_ord"))
        finally:
            _invoices._PAIR_LIMIT = saved
    out = outs[0]
    assert outs[1]["_suspect"].to_list() == out["_suspect"].to_list()
    norm = [normalize_invoice_number_py(n) for n in numbers]
    typed = ["".join(ch for ch in n.lower() if ch.isascii() and ch.isalnum()) for n in numbers]
    first_of = {}
    for i, n in enumerate(norm):
        first_of.setdefault(n, i)
    originals = [i for i, n in enumerate(norm) if first_of[n] == i]
    expected_dup = [first_of[n] != i for i, n in enumerate(norm)]
    expected_suspect = [
        i in originals
        and any(
            _one_keying_error(norm[j], norm[i]) or _one_keying_error(typed[j], typed[i])
            for j in originals
            if j < i
        )
        for i in range(len(norm))
    ]
    assert out["_dup"].to_list() == expected_dup
    assert out["_suspect"].to_list() == expected_suspect


def _one_keying_error(a: str, b: str) -> bool:
    """Levenshtein distance 1, or two neighbouring characters swapped."""
    if _levenshtein(a, b) == 1:
        return True
    diff = [k for k in range(len(a)) if len(a) == len(b) and a[k] != b[k]]
    return (
        len(diff) == 2
        and diff[1] == diff[0] + 1
        and a[diff[0]] == b[diff[1]]
        and a[diff[1]] == b[diff[0]]
    )


def test_levenshtein_helper() -> None:
    assert [_levenshtein(a, b) for a, b in pairwise(["kitten", "sitten", "sittin", "sitting"])] == [
        1,
        1,
        1,
    ]
    assert _levenshtein("ab", "ba") == 2
