"""The acknowledgment leg of the match: PO lines against their 855s and what was shipped.

Compared per PO line with the supplier's last confirmation (the 855 with the latest
``ack_date`` for the line; its rows summed, rejected rows giving no quantity):

=======================  =====================================================================
code                     raised when
=======================  =====================================================================
``ACK_REJECTED``         every row of the last confirmation is rejected
``ACK_QTY_CHANGED``      acknowledged quantity != ordered, beyond ``qty_tolerance`` percent
``ACK_PRICE_CHANGED``    an acknowledged unit price != the PO price, beyond ``price_tolerance``
``ACK_DATE_CHANGED``     promised date later than the requested date
``SHIPPED_BEYOND_ACK``   shipped (ASN, or received when only receipts are given) > acknowledged,
                         beyond ``qty_tolerance`` percent (a rejected line counts as 0 acked)
``NOT_ACKNOWLEDGED``     a PO line without any 855, of a supplier who sends 855s
``ACK_NO_PO``            an 855 line whose PO line does not exist
=======================  =====================================================================

Quantities are compared in the PO line's unit as sent (an ack in another unit is compared as
is); all comparisons are exact decimals.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

import polars as pl

from scfeeds._otif import Frame, as_lazy, percent_option
from scfeeds.schemas import MONEY, QTY

c = pl.col
KEY: Final = ["po_number", "line_number"]
ACK_CODES: Final = (
    "ACK_REJECTED",
    "ACK_QTY_CHANGED",
    "ACK_PRICE_CHANGED",
    "ACK_DATE_CHANGED",
    "SHIPPED_BEYOND_ACK",
    "NOT_ACKNOWLEDGED",
    "ACK_NO_PO",
)
ACK_EXCEPTION_COLUMNS: Final[dict[str, pl.DataType]] = {
    "code": pl.String(),
    "supplier_id": pl.String(),
    "po_number": pl.String(),
    "line_number": pl.String(),
    "item_id": pl.String(),
    "qty_ordered": QTY,
    "qty_acked": QTY,
    "qty_shipped": QTY,
    "po_price": MONEY,
    "ack_price": MONEY,
    "requested_date": pl.Date(),
    "promised_date": pl.Date(),
    "ack_codes": pl.String(),
}


def ack_exceptions(
    po_lines: Frame,
    acks: Frame,
    asn_lines: Frame | None = None,
    receipts: Frame | None = None,
    *,
    qty_tolerance: Decimal | int | float | str = 0,
    price_tolerance: Decimal | int | float | str = 0,
) -> pl.DataFrame:
    """Exceptions of the acknowledgment leg, one row per (code, PO line).

    Parameters
    ----------
    po_lines, acks
        Canonical ``po_lines`` and ``po_acks``.
    asn_lines, receipts
        What was shipped (ASN lines; receipts when no ASN lines are given) for
        ``SHIPPED_BEYOND_ACK``; neither: that check is skipped.
    qty_tolerance, price_tolerance
        In percent of the ordered quantity / PO price (``2`` = 2 %); a difference exactly at
        the limit is within it.

    Returns
    -------
    pl.DataFrame
        ``ACK_EXCEPTION_COLUMNS``; ``ack_codes`` lists the ACK01 codes of the last confirmation.

    Examples
    --------
    >>> exc = ack_exceptions(po, res.po_acks, asn_lines=asn)  # doctest: +SKIP
    >>> exc.group_by("code").len()  # doctest: +SKIP
    """
    q_tol = percent_option(qty_tolerance)
    p_tol = percent_option(price_tolerance, "price_tolerance")
    po = as_lazy(po_lines).select(
        "supplier_id",
        *KEY,
        "item_id",
        "qty_ordered",
        c("unit_price").alias("po_price"),
        "requested_date",
    )
    a = as_lazy(acks)
    last = _last_confirmations(a)
    lines = po.join(last, on=KEY, how="left").join(
        _shipped(asn_lines, receipts), on=KEY, how="left"
    )
    acked = pl.when(c("_rejected")).then(pl.lit(Decimal(0), dtype=QTY)).otherwise(c("qty_acked"))
    senders = a.select(c("supplier_id").unique()).collect()["supplier_id"]
    out = [
        lines.filter(cond.fill_null(False)).with_columns(code=pl.lit(code), qty_acked=acked)
        for code, cond in _checks(acked, senders, q_tol, p_tol).items()
    ]
    no_po = last.join(po.select(KEY), on=KEY, how="anti").with_columns(
        code=pl.lit("ACK_NO_PO"),
        supplier_id=c("_ack_supplier"),
        item_id=c("_ack_item"),
        qty_ordered=pl.lit(None, dtype=QTY),
        po_price=pl.lit(None, dtype=MONEY),
        requested_date=pl.lit(None, dtype=pl.Date),
        qty_shipped=pl.lit(None, dtype=QTY),
    )
    cols = [c(k).cast(v) for k, v in ACK_EXCEPTION_COLUMNS.items()]
    frames = [f.select(cols) for f in [*out, no_po]]
    order = pl.DataFrame({"code": list(ACK_CODES), "_o": range(len(ACK_CODES))})
    return (
        pl.concat(frames, how="vertical")
        .join(order.lazy(), on="code", how="left")
        .sort("_o", *KEY)
        .drop("_o")
        .collect()
    )


def _last_confirmations(a: pl.LazyFrame) -> pl.LazyFrame:
    """Per PO line, its last confirmation (the 855 rows of the latest ``ack_date``) summed."""
    last_day = a.group_by(KEY).agg(_last=c("ack_date").max())
    return (
        a.join(last_day, on=KEY, how="inner")
        .filter(c("ack_date").eq_missing(c("_last")))
        .group_by(KEY)
        .agg(
            _rejected=(c("ack_status") == "rejected").all(),
            qty_acked=c("qty_acked").filter(c("ack_status") != "rejected").sum().cast(QTY),
            ack_price=c("unit_price").first().cast(MONEY),
            _price_changed=c("unit_price").n_unique() > 1,
            promised_date=c("promised_date").filter(c("ack_status") != "rejected").max(),
            ack_codes=c("ack_code").drop_nulls().unique(maintain_order=True).str.join(","),
            _ack_supplier=c("supplier_id").first(),
            _ack_item=c("item_id").first(),
        )
    )


def _shipped(asn_lines: Frame | None, receipts: Frame | None) -> pl.LazyFrame:
    """``qty_shipped`` per PO line: from ASN lines, else receipts; neither: no rows."""
    if asn_lines is not None:
        return as_lazy(asn_lines).group_by(KEY).agg(qty_shipped=c("qty_shipped").sum().cast(QTY))
    if receipts is not None:
        return as_lazy(receipts).group_by(KEY).agg(qty_shipped=c("qty_received").sum().cast(QTY))
    return pl.LazyFrame(schema={**dict.fromkeys(KEY, pl.String()), "qty_shipped": QTY})


def _checks(
    acked: pl.Expr, senders: pl.Series, q_tol: Decimal, p_tol: Decimal
) -> dict[str, pl.Expr]:
    """The condition of each line-level code (see the module docstring)."""
    q_slack = c("qty_ordered").abs() * pl.lit(q_tol / 100, dtype=pl.Decimal(18, 8))
    p_slack = c("po_price").abs() * pl.lit(p_tol / 100, dtype=pl.Decimal(18, 8))
    has_ack = c("_rejected").is_not_null()
    return {
        "ACK_REJECTED": c("_rejected").fill_null(False),
        "ACK_QTY_CHANGED": has_ack
        & ~c("_rejected").fill_null(False)
        & ((c("qty_acked") - c("qty_ordered")).abs() > q_slack),
        "ACK_PRICE_CHANGED": has_ack
        & (((c("ack_price") - c("po_price")).abs() > p_slack) | c("_price_changed")),
        "ACK_DATE_CHANGED": has_ack & (c("promised_date") > c("requested_date")),
        "SHIPPED_BEYOND_ACK": has_ack & (c("qty_shipped").fill_null(0) - acked > q_slack),
        "NOT_ACKNOWLEDGED": ~has_ack & c("supplier_id").is_in(senders),
    }
