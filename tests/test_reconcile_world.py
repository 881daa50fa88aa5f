"""The match on an independent world shaped like real supplier data.

The world is built here with its own small generator (nothing from ``scfeeds.synth``):
suppliers number their invoices sequentially (``INV-000041``, ``INV-000042``: one edit
apart), dozens a day; prices come from a small catalogue, so different invoices often have
the same total; some invoices are re-keyed copies of earlier ones (a digit substituted,
two neighbours transposed, a digit dropped or added, or only the format changed), and some
PO lines carry a fault. A correct match flags every copy, no clean invoice, and still finds
every line fault.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import numpy as np
import polars as pl
import pytest

from scfeeds._reconcile import _invoices, normalize_invoice_number_py, reconcile

SUPPLIERS = 5
PO_LINES = 20_000
FAULTS = {
    "short": ("SHORT_SHIPPED",),
    "not_invoiced": ("NOT_INVOICED",),
    "price": ("PRICE_VARIANCE",),
    "over_invoiced": ("OVER_INVOICED", "OVER_ORDERED"),
}


def _rekey(number: str, rng: np.random.Generator) -> str:
    """One keying error in the digits of ``INV-000042`` (or only a format change)."""
    prefix, digits = number[:4], number[4:]
    kind = rng.integers(0, 5)
    k = int(rng.integers(0, len(digits)))
    if kind == 0:  # substitution
        other = str((int(digits[k]) + int(rng.integers(1, 10))) % 10)
        return prefix + digits[:k] + other + digits[k + 1 :]
    if kind == 1:  # two neighbours transposed (where they differ)
        pairs = [j for j in range(len(digits) - 1) if digits[j] != digits[j + 1]]
        j = pairs[int(rng.integers(0, len(pairs)))] if pairs else 0
        return prefix + digits[:j] + digits[j + 1] + digits[j] + digits[j + 2 :]
    if kind == 2:  # a digit dropped
        return prefix + digits[:k] + digits[k + 1 :]
    if kind == 3:  # a digit added
        return prefix + digits[:k] + str(int(rng.integers(0, 10))) + digits[k:]
    return number.lower().replace("-", " ")  # the same number, typed differently


def _world(seed: int) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    n_po = PO_LINES * 2 // 5
    n_lines = rng.integers(1, 5, n_po)
    po_sup = rng.integers(0, SUPPLIERS, n_po)
    po_day = rng.integers(0, 60, n_po)
    line_po = np.repeat(np.arange(n_po), n_lines)
    line_no = np.arange(len(line_po)) - np.repeat(np.cumsum(n_lines) - n_lines, n_lines) + 1
    item = rng.integers(0, 30, len(line_po))
    price = np.array([100, 250, 499, 1000, 1250, 2000])[item % 6] * (1 + item // 6)  # cents
    qty = rng.integers(1, 13, len(line_po))
    fault = np.full(len(line_po), "", dtype=object)
    faulted = rng.random(len(line_po)) < 0.02
    fault[faulted] = rng.choice(list(FAULTS), int(faulted.sum()))
    qty = np.where(faulted, rng.integers(4, 13, len(line_po)), qty)  # half of it is >= 2

    shipped = np.where(fault == "short", qty // 2, qty)
    billed = np.where(fault == "short", shipped, qty)
    billed = np.where(fault == "over_invoiced", qty * 2, billed)
    billed = np.where(fault == "not_invoiced", 0, billed)
    bill_price = np.where(fault == "price", price * 6 // 5, price)
    ok = shipped > 0

    sup = np.array([f"S{s + 1}" for s in range(SUPPLIERS)], dtype=object)
    po_number = np.array([f"45{p:08d}" for p in range(n_po)], dtype=object)
    day0 = dt.date(2026, 1, 5)
    po = pl.DataFrame(
        {
            "supplier_id": sup[po_sup[line_po]],
            "po_number": po_number[line_po],
            "po_date": [day0 + dt.timedelta(days=int(d)) for d in po_day[line_po]],
            "line_number": line_no.astype(str),
            "item_id": [f"I{i:03d}" for i in item],
            "qty_ordered": qty,
            "uom": "EA",
            "unit_price": price / 100,
        }
    )
    asn = po.filter(pl.Series(ok)).select(
        "supplier_id",
        shipment_id=pl.format("SH{}", "po_number"),
        po_number="po_number",
        line_number="line_number",
        item_id="item_id",
        qty_shipped=pl.Series(shipped[ok]),
        uom="uom",
    )
    # one invoice per PO, numbered per supplier in date order: many a day, one edit apart
    inv_day = po_day + rng.integers(5, 10, n_po)
    order = np.lexsort((np.arange(n_po), inv_day, po_sup))
    seq = np.zeros(n_po, dtype=np.int64)
    for s in range(SUPPLIERS):
        mine = order[po_sup[order] == s]
        seq[mine] = np.arange(1, len(mine) + 1)
    inv_no = np.array([f"INV-{q:06d}" for q in seq], dtype=object)
    has = billed > 0
    lines = pl.DataFrame(
        {
            "supplier_id": sup[po_sup[line_po]][has],
            "invoice_number": inv_no[line_po][has],
            "invoice_date": [day0 + dt.timedelta(days=int(d)) for d in inv_day[line_po][has]],
            "po_number": po_number[line_po][has],
            "line_number": line_no[has].astype(str),
            "item_id": [f"I{i:03d}" for i in item[has]],
            "qty_invoiced": billed[has],
            "uom": "EA",
            "unit_price": bill_price[has] / 100,
            "line_amount": billed[has] * bill_price[has] / 100,
        }
    )
    per_day = lines.group_by("supplier_id", "invoice_date").agg(pl.col("invoice_number").n_unique())
    # re-keyed copies of 1.5 % of the invoices, resent 0-3 days later
    taken = {(sup[s], normalize_invoice_number_py(n)) for s, n in zip(po_sup, inv_no, strict=True)}
    picked = np.flatnonzero((rng.random(n_po) < 0.015) & np.isin(np.arange(n_po), line_po[has]))
    copies = []
    for p in picked:
        supplier = sup[po_sup[p]]
        for _ in range(20):  # a re-key that lands on another real number is that number
            number = _rekey(inv_no[p], rng)
            norm = normalize_invoice_number_py(number)
            if norm == normalize_invoice_number_py(inv_no[p]) or (supplier, norm) not in taken:
                break
        else:
            continue
        taken.add((supplier, normalize_invoice_number_py(number)))
        late = int(rng.integers(0, 4))
        copies.append(
            lines.filter(
                pl.col("invoice_number") == inv_no[p], pl.col("supplier_id") == supplier
            ).with_columns(
                invoice_number=pl.lit(number),
                invoice_date=pl.col("invoice_date") + dt.timedelta(days=late),
            )
        )
    copy_frame = pl.concat(copies)
    invoices = pl.concat(
        [
            lines.with_columns(source=pl.lit("a_invoices.csv")),
            copy_frame.with_columns(source=pl.lit("b_resent.csv")),
        ]
    ).with_columns(position=pl.format("row {}", pl.int_range(1, pl.len() + 1)))
    dec = pl.Decimal(18, 4)
    return {
        "po": po.with_columns(
            pl.col("qty_ordered", "unit_price").cast(dec),
            source=pl.lit("po.csv"),
            position=pl.format("row {}", pl.int_range(1, pl.len() + 1)),
        ),
        "asn": asn.with_columns(
            pl.col("qty_shipped").cast(dec),
            source=pl.lit("asn.csv"),
            position=pl.format("row {}", pl.int_range(1, pl.len() + 1)),
        ),
        "invoice": invoices.with_columns(
            pl.col("qty_invoiced", "unit_price", "line_amount").cast(dec)
        ),
        "copies": copy_frame.select("supplier_id", "invoice_number").unique(),
        "faults": po.select("supplier_id", "po_number", "line_number").with_columns(
            fault=pl.Series(fault.tolist(), dtype=pl.String)
        ),
        "per_day": per_day,
    }


@pytest.mark.parametrize("pairs", ["per pair", "linear join"])
@pytest.mark.parametrize("seed", [18, 2026])
def test_copies_flagged_clean_invoices_not_line_faults_found(
    seed: int, pairs: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if pairs == "linear join":  # the path taken when a supplier's PO has very many invoices
        monkeypatch.setattr(_invoices, "_PAIR_LIMIT", -1)
    w = _world(seed)
    assert isinstance(w["per_day"], pl.DataFrame)
    assert w["per_day"]["invoice_number"].median() >= 10  # many invoices a day
    copies = w["copies"]
    assert isinstance(copies, pl.DataFrame)
    assert copies.height >= 50
    rec = reconcile(w["po"], w["asn"], w["invoice"])  # type: ignore[arg-type]
    exc = rec.exceptions.collect()

    doc = exc.filter(pl.col("code").is_in(["DUPLICATE_INVOICE", "DUPLICATE_SUSPECT"]))
    flagged = doc.select("supplier_id", "invoice_number").unique()
    missed = copies.join(flagged, on=["supplier_id", "invoice_number"], how="anti")
    wrong = flagged.join(copies, on=["supplier_id", "invoice_number"], how="anti")
    assert missed.height == 0, f"copies not flagged:\n{missed}"
    assert wrong.height == 0, f"clean invoices flagged:\n{wrong}"
    # both numbers of a pair
    assert doc["related_invoice_number"].null_count() == 0

    faults = w["faults"]
    assert isinstance(faults, pl.DataFrame)
    keys = ["supplier_id", "po_number", "line_number"]
    expected = (
        faults.filter(pl.col("fault") != "")
        .with_columns(code=pl.col("fault").replace_strict(FAULTS, return_dtype=pl.List(pl.String)))
        .explode("code")
    )
    found = exc.filter(pl.col("level") == "line").select(*keys, "code")
    assert expected.join(found, on=[*keys, "code"], how="anti").height == 0
    assert found.join(expected, on=[*keys, "code"], how="anti").height == 0
    lines = rec.lines.collect().join(faults, on=keys)
    clean = lines.filter(pl.col("fault") == "")
    # clean lines: no line exception (a line billed by a copy carries the copy's code)
    assert set(clean["status"].cast(pl.String)) <= {
        "MATCHED",
        "DUPLICATE_INVOICE",
        "DUPLICATE_SUSPECT",
    }
    assert clean.filter(pl.col("status") == "MATCHED").height > 0.95 * clean.height
    # evidence on every row
    assert exc.filter(pl.col("source").is_null() | pl.col("position").is_null()).height == 0
    summary = rec.summary()
    line_total = rec.lines.select(pl.col("amount_at_risk").sum()).collect().item()
    by_code = summary.by_code.filter(pl.col("level") == "line")["amount_at_risk"].sum()
    assert by_code == line_total
    assert summary.totals.filter(pl.col("level") == "line")["amount_at_risk"][0] == line_total
    assert line_total > Decimal(0)
