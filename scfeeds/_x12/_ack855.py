"""855 purchase order acknowledgments to ``po_acks``, and 850 requested dates (DTM*002).

855 (X12 004010): BAK03 PO number, BAK09 acknowledgment date (BAK04, the PO date, when a
sender leaves BAK09 empty, as many do); per PO1 loop PO101 line number, PO102-PO104
quantity / unit / price as the supplier restates them, the product-ID pairs; then one or more
ACK segments (ACK01 line item status, element 668; ACK02/ACK03 quantity and unit; ACK04/ACK05
a date qualifier and date; ACK07-ACK28 product-ID pairs) each followed by optional DTMs.
One ``po_acks`` row per ACK (a line split into "60 accepted, 40 backordered" is two rows);
a PO1 without ACK gives one row whose status follows BAK02 (``AT`` / ``AD`` / ``AK``
accepted, ``RJ`` / ``RD`` rejected), code null.

The promised date is DTM*067 (current schedule delivery) or DTM*068 (current schedule ship)
after the ACK, else ACK04/ACK05 with one of those qualifiers, else such a DTM after the PO1
before its first ACK, else one at header level; ``date_qualifier`` says which was used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import polars as pl

from scfeeds._x12._fields import _bad, _date, _first, _item, _line_number, _missing, _number
from scfeeds._x12._tokenize import ENGINE, split_elements

if TYPE_CHECKING:
    from scfeeds._x12._tables import _Piece

c = pl.col

# X12 element 668 (Line Item Status Code) as used in ACK01 of the 855, mapped to five
# statuses. The raw code is kept in ``ack_code``; a code not listed maps to "unknown".
ACK_STATUS: Final[dict[str, str]] = {
    "IA": "accepted",  # Item Accepted
    "AC": "accepted",  # Item Accepted and Shipped
    "AR": "accepted",  # Item Accepted and Released for Shipment
    "IE": "accepted",  # Item Accepted, Price Pending
    "SP": "accepted",  # Item Accepted - Schedule Date Pending
    "IC": "changed",  # Item Accepted - Changes Made
    "IQ": "changed",  # Item Accepted - Quantity Changed
    "IP": "changed",  # Item Accepted - Price Changed
    "DR": "changed",  # Item Accepted - Date Rescheduled
    "IS": "changed",  # Item Accepted - Substitution Made
    "IB": "backordered",  # Item Backordered
    "BP": "backordered",  # Item Accepted - Partial Shipment, Balance Backordered
    "IH": "on_hold",  # Item on Hold
    "IF": "on_hold",  # Item on Hold, Incomplete Description
    "IW": "on_hold",  # Item on Hold - Waiver Required
    "IR": "rejected",  # Item Rejected
    "ID": "rejected",  # Item Deleted
    "R1": "rejected",  # Item Rejected, Not a Contract Item
    "R2": "rejected",  # Item Rejected, Invalid Item Product Number
    "R3": "rejected",  # Item Rejected, Invalid Unit of Issue
    "R4": "rejected",  # Item Rejected, Contract Item not Available
    "R5": "rejected",  # Item Rejected, Reorder Item as a Just in Time (JIT) Order
    "R6": "rejected",  # Item Rejected, Reorder Item as an Extended Delivery Order (EDO)
    "R7": "rejected",  # Item Rejected, Reorder Item as a Drop Shipment
    "R8": "rejected",  # Item Rejected, Reorder Item as a Surge Order
}
ACK_STATUSES: Final = ("accepted", "changed", "backordered", "on_hold", "rejected", "unknown")
# BAK02 (element 587) when a PO1 carries no ACK.
_BAK_STATUS: Final[dict[str, str]] = {
    "AT": "accepted",
    "AD": "accepted",
    "AK": "accepted",
    "RJ": "rejected",
    "RD": "rejected",
}
PROMISE_QUALIFIERS: Final = ("067", "068")  # current schedule delivery / ship (element 374)
REQUESTED_QUALIFIER: Final = "002"  # delivery requested (element 374)


def _owned(p: _Piece, sids: list[str], opener: str) -> pl.LazyFrame:
    """Rows of ``sids`` with ``owner``: the position of the preceding ``opener`` segment in the
    same set (null before the first one: header level)."""
    return (
        p.r.filter(c("sid").is_in(sids))
        .with_columns(
            owner=pl.when(c("sid") == opener).then(c("pos")).forward_fill(),
            _owner_set=pl.when(c("sid") == opener).then(c("set_index")).forward_fill(),
        )
        .with_columns(owner=pl.when(c("_owner_set") == c("set_index")).then(c("owner")))
    )


def requested_dates(p: _Piece) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """``pos`` of each PO1 and its ``requested_date``: the first DTM*002 in its loop, else the
    first DTM*002 at header level of its set; and error rows for DTM02 that are not dates."""
    rows = _owned(p, ["PO1", "DTM"], "PO1")
    raw = (
        rows.filter(c("sid") == "DTM")
        .pipe(split_elements, ["set_index", "owner", "pos"], p.e, 2, "DTM")
        .filter(c("DTM01") == REQUESTED_QUALIFIER)
        .collect(engine=ENGINE)
        .lazy()
    )
    bad = _bad(raw, "DTM02", _date(c("DTM02")), "BAD_DATE")
    dtm = raw.select("set_index", "owner", d=_date(c("DTM02"))).filter(c("d").is_not_null())
    line = dtm.filter(c("owner").is_not_null()).unique("owner", keep="first", maintain_order=True)
    head = dtm.filter(c("owner").is_null()).unique("set_index", keep="first", maintain_order=True)
    po1 = rows.filter(c("sid") == "PO1").select("pos", "set_index")
    dates = (
        po1.join(
            line.select(c("owner").alias("pos"), c("d").alias("_line")),
            on="pos",
            how="left",
            maintain_order="left",
        )
        .join(
            head.select("set_index", c("d").alias("_head")),
            on="set_index",
            how="left",
            maintain_order="left",
        )
        .select("pos", requested_date=pl.coalesce("_line", "_head"))
    )
    return dates, bad


def _ack_and_dtm(p: _Piece) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """ACK segments (by their PO1, ``owner``) and DTM segments (by PO1 and by the ACK they
    follow, ``ack``), split into elements."""
    rows = _owned(p, ["PO1", "ACK", "DTM"], "PO1").with_columns(
        # the ACK a DTM follows within its PO1 loop (-1: before the loop's first ACK)
        ack=pl.when(c("sid") == "PO1")
        .then(pl.lit(-1, dtype=pl.Int64))
        .when(c("sid") == "ACK")
        .then(c("pos").cast(pl.Int64))
        .forward_fill(),
    )
    rows = rows.with_columns(ack=pl.when(c("owner").is_not_null()).then(c("ack")))
    rows = rows.collect(engine=ENGINE).lazy()
    ack = (
        rows.filter(c("sid") == "ACK")
        .pipe(split_elements, ["set_index", "owner", c("pos").alias("ack_pos")], p.e, 28, "ACK")
        .collect(engine=ENGINE)
        .lazy()
    )
    dtm = (
        rows.filter(c("sid") == "DTM")
        .pipe(
            split_elements, ["set_index", "owner", "ack", c("pos").alias("dtm_pos")], p.e, 2, "DTM"
        )
        .collect(engine=ENGINE)
        .lazy()
    )
    return ack, dtm


def _promises(p: _Piece, dtm: pl.LazyFrame) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """Promised dates (DTM*067 / 068) by the ACK they follow and by the PO1 loop they sit in
    before its first ACK; header-level ones go to the per-set header."""
    promise = dtm.filter(c("DTM01").is_in(PROMISE_QUALIFIERS)).with_columns(d=_date(c("DTM02")))
    by_ack = _first(
        promise.filter(c("ack") >= 0).select(
            c("ack").alias("ack_pos"), c("d").alias("_d_ack"), c("DTM01").alias("_q_ack")
        ),
        "ack_pos",
    )
    by_line = _first(
        promise.filter(c("owner").is_not_null() & (c("ack") == -1)).select(
            c("owner").alias("pos"), c("d").alias("_d_line"), c("DTM01").alias("_q_line")
        ),
        "pos",
    )
    p.per_set(
        promise.filter(c("owner").is_null()).select(
            "set_index", c("d").alias("_d_head"), c("DTM01").alias("_q_head")
        )
    )
    return by_ack, by_line


def ack_lines(p: _Piece, want: set[str]) -> tuple[pl.DataFrame, list[pl.LazyFrame]]:
    """``po_acks`` line rows of the 855 sets of a piece, and element error rows."""
    del want
    bak = _first(p.seg("BAK", ["set_index", "pos"], 9), "set_index").collect(engine=ENGINE).lazy()
    ack_date = _date(pl.coalesce(c("BAK09"), c("BAK04")))
    p.per_set(
        bak.select(
            "set_index",
            c("BAK03").alias("po_number"),
            ack_date.alias("ack_date"),
            c("BAK02").alias("_bak02"),
        )
    )
    po1 = p.seg("PO1", ["set_index", "pos"], 25).collect(engine=ENGINE).lazy()
    ack, dtm = _ack_and_dtm(p)
    by_ack, by_line = _promises(p, dtm)
    in_ack = c("ACK04").is_in(PROMISE_QUALIFIERS)
    qty, price = _number(c("PO102")), _number(c("PO104"))
    ack_qty = _number(c("ACK02"))
    joined = (
        po1.join(
            ack.with_columns(c("owner").alias("pos")).drop("owner", "set_index"),
            on="pos",
            how="left",
            maintain_order="left",
        )
        .join(by_ack, on="ack_pos", how="left", maintain_order="left")
        .join(by_line, on="pos", how="left", maintain_order="left")
    )
    d_elem = pl.when(in_ack).then(_date(c("ACK05")))
    lines = joined.select(
        "set_index",
        pos=pl.coalesce(c("ack_pos"), c("pos")),
        line_number=_line_number(c("PO101")),
        item_id=pl.coalesce(_item("PO1", 6, 25), _item("ACK", 7, 28)),
        ack_code=c("ACK01"),
        qty_acked=pl.coalesce(ack_qty, qty),
        uom=pl.coalesce(c("ACK03"), c("PO103")),
        unit_price=price,
        _d=pl.coalesce(c("_d_ack"), d_elem, c("_d_line")),
        _q=pl.when(c("_d_ack").is_not_null())
        .then(c("_q_ack"))
        .when(d_elem.is_not_null())
        .then(c("ACK04"))
        .when(c("_d_line").is_not_null())
        .then(c("_q_line")),
    )
    errors = [
        _bad(po1, "PO102", qty, "BAD_NUMBER"),
        _bad(po1, "PO104", price, "BAD_NUMBER"),
        _bad(ack, "ACK02", ack_qty, "BAD_NUMBER", pos="ack_pos"),
        _bad(dtm, "DTM02", _date(c("DTM02")), "BAD_DATE", pos="dtm_pos"),
        _bad(ack.filter(in_ack), "ACK05", _date(c("ACK05")), "BAD_DATE", pos="ack_pos"),
        _bad(bak, "BAK04", _date(c("BAK04")), "BAD_DATE"),
        _missing(bak, "BAK03"),
    ]
    return lines.collect(engine=ENGINE), errors


def finish_acks(frame: pl.DataFrame) -> pl.DataFrame:
    """Columns only known once the per-set header is gathered: the status from ACK01 (or
    BAK02), the header-level promised date as the last fallback."""
    status = c("ack_code").replace_strict(ACK_STATUS, default="unknown", return_dtype=pl.String)
    bak = c("_bak02").replace_strict(_BAK_STATUS, default=None, return_dtype=pl.String)
    return frame.with_columns(
        ack_status=pl.when(c("ack_code").is_not_null()).then(status).otherwise(bak),
        promised_date=pl.coalesce(c("_d"), c("_d_head")),
        date_qualifier=pl.when(c("_d").is_not_null()).then(c("_q")).otherwise(c("_q_head")),
    )
