"""850 / 856 / 810 segments to the canonical tables, with polars joins per segment type.

Field sources (DESIGN.md "X12 sources of the key fields"): BEG03/BEG05, PO101-PO104 and the
PO1 product-ID pairs; BSN02/BSN03, HL01/HL02/HL03 (the S/O/T/P/I tree rebuilt from parent
pointers), PRF01, LIN pairs, SN102/SN103, MAN02; BIG01/BIG02/BIG04/BIG07, IT101-IT104.

supplier_id is N104 of the first N1 whose N101 is SU, SE or VN; without one, the trading
partner on the supplier's side of the interchange, by the direction of the document
(:data:`SUPPLIER_SIDE`): the buyer sends 850 / 860, so the supplier is the receiver (ISA08,
else GS03); the supplier sends 810 / 855 / 856, so it is the sender (ISA06, else GS02).

An 810 whose BIG07 is ``CR`` (credit memo) is read with its sign: quantities (and so line
amounts) are negative whatever sign IT102 carries; a negative IT102 on any 810 is kept.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Final

import polars as pl

from scfeeds._x12._ack855 import ack_lines, finish_acks, requested_dates
from scfeeds._x12._core import _RAW_ERROR, Prov
from scfeeds._x12._fields import (
    _bad,
    _date,
    _first,
    _item,
    _line_number,
    _missing,
    _number,
)
from scfeeds._x12._tokenize import ENGINE, split_elements
from scfeeds.schemas import MONEY, QTY, TableName, schema

SET_OF: Final[dict[TableName, str]] = {
    "po_lines": "850",
    "asn_lines": "856",
    "invoice_lines": "810",
    "po_acks": "855",
}
SET_OF_ID: Final[dict[str, TableName]] = {v: k for k, v in SET_OF.items()}
# The segments each builder reads (everything else in a set is skipped before splitting).
_NEEDED: Final[dict[TableName, list[str]]] = {
    "po_lines": ["BEG", "CUR", "N1", "PO1", "PID", "DTM"],
    "po_acks": ["BAK", "CUR", "N1", "PO1", "ACK", "DTM"],
    "invoice_lines": ["BIG", "CUR", "N1", "IT1"],
    "asn_lines": ["BSN", "CUR", "N1", "TD5", "REF", "HL", "PRF", "MAN", "LIN", "SN1"],
}
SUPPLIER_ENTITIES: Final = ("SU", "SE", "VN")
#: Which side of the interchange the supplier is on, per transaction set (who sends it):
#: the buyer sends purchase orders (850) and their changes (860); the supplier sends the
#: acknowledgment (855), ship notice (856) and invoice (810).
SUPPLIER_SIDE: Final[dict[str, str]] = {
    "850": "receiver",
    "860": "receiver",
    "810": "sender",
    "855": "sender",
    "856": "sender",
}
#: BIG07 (transaction type code, element 640) of a credit memo.
CREDIT_MEMO: Final = "CR"
_HL_DEPTH: Final = 8
# Leaf tasks of a table build (never submit further work, so they cannot deadlock).
_SIDE: Final = ThreadPoolExecutor(2, thread_name_prefix="x12-side")

c = pl.col


class _Piece:
    """The in-set rows of one set type in a piece, and a contiguous per-set header frame.

    Per-set values (BEG, CUR, N1, control numbers) are gathered onto line rows by position
    (``set_index - base``) instead of joined: a gather is a copy, a join a hash probe.
    """

    def __init__(self, rows: pl.LazyFrame, mine: pl.DataFrame, e: str) -> None:
        self.e = e
        self.base = int(mine["set_index"].min())  # type: ignore[arg-type]
        top = int(mine["set_index"].max())  # type: ignore[arg-type]
        needed = c("sid").is_in(_NEEDED[SET_OF_ID[str(mine["set_id"][0])]])
        # Other set types in the piece share segment IDs (N1, CUR): keep this type's sets,
        # by a range check when they are contiguous (the usual file of one set type).
        if mine.height == top - self.base + 1:
            ours = c("set_index").is_between(self.base, top)
        else:
            ours = c("set_index").is_in(mine["set_index"].implode())
        self.r = rows.filter(needed & ours).collect(engine=ENGINE).lazy()
        self.sets = top - self.base + 1
        self.mine = mine
        self.pending: list[pl.LazyFrame] = []  # per-set lookups, collected by ``header``

    def seg(self, sid: str, keep: list[str | pl.Expr], n: int) -> pl.LazyFrame:
        return self.r.filter(c("sid") == sid).pipe(split_elements, keep, self.e, n, sid)

    def per_set(self, frame: pl.LazyFrame) -> None:
        """Attach the first row per set of ``frame`` (set_index + value columns) to the header."""
        self.pending.append(frame.filter(c("set_index").is_first_distinct()))

    def header(self, *also: pl.LazyFrame) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
        """One row per set from ``base`` on, with every per-set value scattered into place by
        position (cheaper than a join), and ``also`` collected in the same ``collect_all``."""
        got = pl.collect_all([*self.pending, *also], engine=ENGINE)
        columns: dict[str, pl.Series] = {
            "set_index": pl.int_range(self.base, self.base + self.sets, eager=True)
        }
        for frame in [self.mine, *got[: len(self.pending)]]:
            idx = frame["set_index"] - self.base
            in_place = frame.height == self.sets and idx.is_sorted()  # every set, in order
            for col in frame.drop("set_index").iter_columns():
                if in_place:
                    columns[col.name] = col
                else:
                    empty = pl.Series(col.name, [None] * self.sets, dtype=col.dtype)
                    columns[col.name] = empty.scatter(idx, col)
        return pl.DataFrame(columns), got[len(self.pending) :]

    def supplier(self) -> None:
        n1 = self.seg("N1", ["set_index"], 4)
        self.per_set(
            n1.filter(c("N101").is_in(SUPPLIER_ENTITIES) & c("N104").is_not_null()).select(
                "set_index", c("N104").str.strip_chars().alias("n1_supplier")
            )
        )

    def currency(self) -> None:
        self.per_set(
            self.seg("CUR", ["set_index"], 2).select("set_index", c("CUR02").alias("currency"))
        )

    def finish(
        self,
        table: TableName,
        lines: pl.DataFrame,
        errors: list[pl.LazyFrame],
        source: str | Prov,
        columns: list[str] | None,
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        head, (err,) = self.header(
            pl.concat([pl.LazyFrame(schema=_RAW_ERROR), *errors], how="vertical")
        )
        head = head.with_columns(
            _ok=~c("rejected").fill_null(True) & ~c("set_index").is_in(err["set_index"].implode())
        )
        idx = lines["set_index"] - self.base
        sch = schema(table)
        wanted = [n for n in sch if columns is None or n in columns]
        extra = {
            name: head[name].gather(idx)
            for name in head.columns
            if name not in lines.columns and name != "set_index"
        }
        # rechunk: polars 2.1 panics ("i < self.len()" in binview) when filtering a frame
        # whose string columns were gathered / hstacked with different chunk layouts.
        out = lines.with_columns(**extra).rechunk()
        if table == "po_acks":
            out = finish_acks(out)
        if "n1_supplier" not in out.columns:
            out = out.with_columns(n1_supplier=pl.lit(None, dtype=pl.String))
        out = (
            out.lazy()
            .filter(c("_ok"))
            .with_columns(
                source=_where(source).source(c("pos")),
                position=_where(source).position(c("pos")),
                supplier_id=pl.coalesce(c("n1_supplier"), _partner(SET_OF[table])),
            )
            .select(
                [
                    (
                        c(n)
                        if n in out.columns or n in ("source", "position", "supplier_id")
                        else pl.lit(None)
                    )
                    .cast(sch[n])
                    .alias(n)
                    for n in wanted
                ]
            )
            .collect(engine=ENGINE)
        )
        return out, err


def _partner(set_id: str) -> pl.Expr:
    """The trading partner on the supplier's side of the interchange (see SUPPLIER_SIDE)."""

    def given(col: str) -> pl.Expr:
        v = c(col).str.strip_chars()
        return pl.when(v != "").then(v)

    if SUPPLIER_SIDE[set_id] == "receiver":
        return pl.coalesce(given("receiver_id"), given("app_receiver"))
    return pl.coalesce(given("sender_id"), given("app_sender"))


def _where(source: str | Prov) -> Prov:
    """Provenance of a piece: one named source, or many read in one pass."""
    return source if isinstance(source, Prov) else Prov([source])


def _empty(table: TableName, columns: list[str] | None) -> pl.DataFrame:
    sch = schema(table)
    return pl.DataFrame(schema={n: d for n, d in sch.items() if columns is None or n in columns})


def build(
    table: TableName,
    rows: pl.LazyFrame,
    ctx: pl.DataFrame,
    e: str,
    source: str | Prov,
    columns: list[str] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows of ``table`` from the in-set segments of a piece, and element error rows.

    ``ctx`` has one row per set: set_index, set_id, rejected, interchange_control,
    group_control, set_control, sender_id, receiver_id (ISA06 / ISA08), app_sender,
    app_receiver (GS02 / GS03). ``columns`` limits the output (projection).
    """
    mine = ctx.filter(c("set_id") == SET_OF[table])
    if mine.height == 0:
        return _empty(table, columns), pl.DataFrame(schema=_RAW_ERROR)
    p = _Piece(rows, mine, e)
    want = set(schema(table) if columns is None else columns)

    def per_set_lookups() -> None:
        if "supplier_id" in want:
            p.supplier()
        if "currency" in want:
            p.currency()

    # Most polars string kernels run on one core per column: the per-set lookups run in a
    # side thread while this one splits the line segments (polars releases the GIL).
    side = _SIDE.submit(per_set_lookups)
    try:
        lines, errors = _lines(table, p, want)
    finally:
        side.result()
    return p.finish(table, lines, errors, source, columns)


def _lines(table: TableName, p: _Piece, want: set[str]) -> tuple[pl.DataFrame, list[pl.LazyFrame]]:
    if table == "po_lines":
        return _po(p, want)
    if table == "invoice_lines":
        return _invoice(p, want)
    if table == "po_acks":
        return ack_lines(p, want)
    return _asn(p, want)


def _po(p: _Piece, want: set[str]) -> tuple[pl.DataFrame, list[pl.LazyFrame]]:
    desc = _SIDE.submit(_descriptions(p).collect, engine=ENGINE) if "description" in want else None
    po1 = p.seg("PO1", ["set_index", "pos"], 25).collect(engine=ENGINE).lazy()
    beg = _first(p.seg("BEG", ["set_index", "pos"], 5), "set_index").collect(engine=ENGINE).lazy()
    p.per_set(
        beg.select("set_index", c("BEG03").alias("po_number"), _date(c("BEG05")).alias("po_date"))
    )
    lines, errors = _item_lines(po1, "PO1", "qty_ordered")
    errors += [
        _bad(beg, "BEG05", _date(c("BEG05")), "BAD_DATE"),
        _missing(beg, "BEG03"),
        _missing(beg, "BEG05"),
    ]
    # a bad DTM*002 withholds its set whatever the projection (as a bad BEG05 does)
    dates, bad_dates = requested_dates(p)
    errors.append(bad_dates)
    if "requested_date" in want:
        lines = lines.join(dates, on="pos", how="left", maintain_order="left")
    out = lines.collect(engine=ENGINE)
    if desc is None:
        return out, errors
    return out.hstack(desc.result()).rechunk(), errors


def _item_lines(
    seg: pl.LazyFrame, sid: str, qty_name: str, qty: pl.Expr | None = None
) -> tuple[pl.LazyFrame, list[pl.LazyFrame]]:
    """Line rows of PO1 / IT1 segments (``sid`` 01-04 and the product-ID pairs from 06 on:
    line number, quantity as ``qty_name``, unit, price, item_id), and their number errors.
    ``qty`` replaces the plain quantity (credit memos)."""
    parsed = _number(c(f"{sid}02"))
    price = _number(c(f"{sid}04"))
    lines = seg.select(
        "set_index",
        "pos",
        line_number=_line_number(c(f"{sid}01")),
        **{qty_name: parsed if qty is None else qty},
        uom=c(f"{sid}03"),
        unit_price=price,
        item_id=_item(sid, 6, 25),
    )
    errors = [
        _bad(seg, f"{sid}02", parsed, "BAD_NUMBER"),
        _bad(seg, f"{sid}04", price, "BAD_NUMBER"),
    ]
    return lines, errors


def _invoice(p: _Piece, want: set[str]) -> tuple[pl.DataFrame, list[pl.LazyFrame]]:
    del want
    it1 = p.seg("IT1", ["set_index", "pos"], 25).collect(engine=ENGINE).lazy()
    big_df = _first(p.seg("BIG", ["set_index", "pos"], 7), "set_index").collect(engine=ENGINE)
    big = big_df.lazy()
    p.per_set(
        big.select(
            "set_index",
            _date(c("BIG01")).alias("invoice_date"),
            c("BIG02").alias("invoice_number"),
            c("BIG04").alias("po_number"),
        )
    )
    # Credit memos (BIG07 = CR) carry negative quantities, whatever sign IT102 was sent with.
    credit = big_df.filter(c("BIG07").str.strip_chars() == CREDIT_MEMO)["set_index"]
    qty = _number(c("IT102"))
    if credit.len():
        qty = pl.when(c("set_index").is_in(credit.implode())).then(-qty.abs()).otherwise(qty)
    lines, errors = _item_lines(it1, "IT1", "qty_invoiced", qty)
    lines = lines.with_columns(line_amount=(c("qty_invoiced") * c("unit_price")).cast(QTY))
    errors += [
        _bad(big, "BIG01", _date(c("BIG01")), "BAD_DATE"),
        _missing(big, "BIG01"),
        _missing(big, "BIG02"),
    ]
    return lines.collect(engine=ENGINE), errors


def _descriptions(p: _Piece) -> pl.LazyFrame:
    """PID05 of the first PID after each PO1 (before the next PO1, same set), one row per
    PO1 in file order (so it lines up with the PO1 frame: no join).

    Among PO1 and PID rows in file order, a PO1's first PID is simply the next row: a shift,
    not a forward fill and a join. Only that PID's fifth element is cut out (a split with a
    fixed number of parts: a regex with a repeated group costs several times more).
    """
    return (
        p.r.filter(c("sid").is_in(["PO1", "PID"]))
        .with_columns(
            _next=c("raw").shift(-1),
            _is_pid=(c("sid").shift(-1) == "PID") & (c("set_index").shift(-1) == c("set_index")),
        )
        .filter(c("sid") == "PO1")
        .select(
            pl.when(c("_is_pid"))
            .then(c("_next").str.split_exact(p.e, 5).struct.field("field_5"))
            .alias("description")
        )
        .select(pl.when(c("description") != "").then(c("description")).alias("description"))
    )


def _hl_parents(hl: pl.LazyFrame) -> pl.LazyFrame:
    """HL rows (pos) with ``_up``, the row number of the parent: the first HL of the same set
    whose HL01 equals this one's HL02 (null when there is none).

    Almost every sender numbers HLs 1, 2, 3... within a set; then the parent's row number is
    arithmetic (set's first row + HL02 - 1). Otherwise a join on (set, HL01) finds it.
    """
    tree = hl.select("set_index", "pos", "HL01", "HL02").with_row_index("_i").collect(engine=ENGINE)
    i = c("_i").cast(pl.Int64)
    start = i.min().over("set_index")
    rank = i - start + 1
    up_n = c("HL02").cast(pl.Int64, strict=False)
    count = pl.len().over("set_index")
    seq = tree.select(
        "pos",
        (c("HL01") == rank.cast(pl.String)).all().alias("_seq"),
        # only a canonical number ("7", not "07") equals an HL01 of 1, 2, 3...
        pl.when((up_n >= 1) & (up_n <= count) & (up_n.cast(pl.String) == c("HL02")))
        .then(start + up_n - 1)
        .cast(pl.UInt32)
        .alias("_up"),
    )
    if tree.height == 0 or bool(seq["_seq"][0]):
        return seq.lazy().select("pos", "_up")
    parent_of = _first(
        tree.lazy().select("set_index", c("HL01").alias("HL02"), c("_i").alias("_up")),
        ["set_index", "HL02"],
    )
    return (
        tree.lazy()
        .join(parent_of, on=["set_index", "HL02"], how="left", maintain_order="left")
        .select("pos", "_up")
    )


def _per_hl(
    tagged: pl.LazyFrame, e: str, sid: str, n: int, value: pl.Expr, name: str
) -> pl.LazyFrame:
    """The first non-empty ``value`` of ``sid`` segments under each HL, by HL position."""
    f = tagged.filter(c("sid") == sid).pipe(split_elements, ["hl_pos"], e, n, sid)
    return _first(
        f.select(c("hl_pos").alias("pos"), value.alias(name)).filter(c(name).is_not_null()),
        "pos",
    )


def _hl_walk(tagged: pl.LazyFrame, e: str) -> pl.DataFrame:
    """Per HL (``pos``): the PO number and pack of its item.

    The HL tree as row numbers: an HL's parent is the first HL of its set whose HL01 is its
    HL02. An item's PO number (PRF) and pack (MAN) are those of its nearest ancestor-or-self
    that has one, at most _HL_DEPTH - 1 levels up; missing levels (S/O/I without P) leave
    pack_id null. Found by pointer jumping: each round looks twice as far up, by gathers on
    row numbers (3 rounds for 8 levels) instead of three joins per level.
    """
    hl = tagged.filter(c("sid") == "HL").pipe(split_elements, ["set_index", "pos"], e, 2, "HL")
    node = (
        _hl_parents(hl)
        .join(
            _per_hl(tagged, e, "PRF", 1, c("PRF01"), "po_number"),
            on="pos",
            how="left",
            maintain_order="left",
        )
        .join(
            _per_hl(tagged, e, "MAN", 2, c("MAN02"), "pack_id"),
            on="pos",
            how="left",
            maintain_order="left",
        )
        .select("pos", "_up", "po_number", "pack_id")
        .collect(engine=ENGINE)
    )
    up, po, pack = c("_up"), c("po_number"), c("pack_id")
    for _ in range((_HL_DEPTH - 1).bit_length()):
        node = node.with_columns(
            po_number=pl.coalesce(po, po.gather(up)),
            pack_id=pl.coalesce(pack, pack.gather(up)),
            _up=up.gather(up),
        )
    return node


def _asn(p: _Piece, want: set[str]) -> tuple[pl.DataFrame, list[pl.LazyFrame]]:
    del want
    e = p.e
    bsn = _first(p.seg("BSN", ["set_index", "pos"], 3), "set_index").collect(engine=ENGINE).lazy()
    p.per_set(
        bsn.select(
            "set_index", c("BSN02").alias("shipment_id"), _date(c("BSN03")).alias("ship_date")
        )
    )
    # Shipment-level facts: first TD5 carrier (TD503, the SCAC) and REF*CN (carrier reference).
    p.per_set(
        p.seg("TD5", ["set_index"], 3)
        .filter(c("TD503").is_not_null())
        .select("set_index", c("TD503").alias("carrier"))
    )
    p.per_set(
        p.seg("REF", ["set_index"], 2)
        .filter((c("REF01") == "CN") & c("REF02").is_not_null())
        .select("set_index", c("REF02").alias("tracking"))
    )
    # Every segment of the set belongs to the HL that precedes it.
    tagged = (
        p.r.filter(c("sid").is_in(["HL", "PRF", "MAN", "LIN", "SN1"]))
        .with_columns(
            hl_pos=pl.when(c("sid") == "HL").then(c("pos")).forward_fill(),
            hl_set=pl.when(c("sid") == "HL").then(c("set_index")).forward_fill(),
        )
        .filter(c("hl_set") == c("set_index"))
        .collect(engine=ENGINE)
        .lazy()
    )

    # the tree walk runs in a side thread while this one splits LIN and SN1
    tree = _SIDE.submit(_hl_walk, tagged, e)
    # (an HL's position is unique in the piece: it keys its set too)
    lin = _first(
        tagged.filter(c("sid") == "LIN").pipe(
            split_elements, ["set_index", "hl_pos", "pos"], e, 31, "LIN"
        ),
        "hl_pos",
    )
    sn1 = (
        _first(
            tagged.filter(c("sid") == "SN1").pipe(
                split_elements, ["set_index", "hl_pos", c("pos").alias("sn1_pos")], e, 3, "SN1"
            ),
            "hl_pos",
        )
        .collect(engine=ENGINE)
        .lazy()
    )
    qty = _number(c("SN102"))
    items = lin.join(sn1.drop("set_index"), on="hl_pos", how="left", maintain_order="left").select(
        "set_index",
        # the item-level HL opens the line item: its position is the row's position
        c("hl_pos").alias("pos"),
        line_number=_line_number(c("LIN01")),
        item_id=_item("LIN", 2, 31),
        qty_shipped=qty,
        uom=c("SN103"),
    )
    lines = items.join(
        tree.result().lazy().select("pos", "po_number", "pack_id"),
        on="pos",
        how="left",
        maintain_order="left",
    )
    errors = [
        _bad(sn1, "SN102", qty, "BAD_NUMBER", pos="sn1_pos"),
        _bad(bsn, "BSN03", _date(c("BSN03")), "BAD_DATE"),
        _missing(bsn, "BSN02"),
        _missing(bsn, "BSN03"),
    ]
    return lines.collect(engine=ENGINE), errors


_N2: Final = pl.Decimal(18, 4)
PROV_STR: Final = ["source", "position", "interchange_control", "group_control", "set_control"]
TOTALS_COLUMNS: Final[dict[str, pl.DataType]] = {
    "invoice_number": pl.String(),
    "total_amount": MONEY,
}
CHARGES_COLUMNS: Final[dict[str, pl.DataType]] = {
    "invoice_number": pl.String(),
    "line_number": pl.String(),
    "indicator": pl.String(),
    "code": pl.String(),
    "amount": MONEY,
    "percent": pl.Decimal(18, 4),
    "description": pl.String(),
}


def _implied2(x: pl.Expr) -> pl.Expr:
    """N2 elements (TDS01, SAC05): an integer with two implied decimals."""
    return (x.cast(pl.Int64, strict=False).cast(_N2) / 100).cast(MONEY)


def invoice_extras(
    rows: pl.LazyFrame, ctx: pl.DataFrame, e: str, source: str | Prov, bad: pl.Series
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """810 totals (TDS01) and allowances / charges (SAC) of the intact 810 sets of a piece.

    A SAC after an IT1 (and before the next IT1 or TDS) belongs to that line; one before
    the first IT1 or after TDS is invoice level (line_number null). Amounts keep their sign
    convention from SAC01: ``A`` allowance, ``C`` charge.
    """
    mine = ctx.filter(c("set_id") == "810")
    prov = ["source", "position", "interchange_control", "group_control", "set_control"]
    if mine.height == 0:
        return (
            pl.DataFrame(schema={**{k: pl.String() for k in prov}, **TOTALS_COLUMNS}),
            pl.DataFrame(schema={**{k: pl.String() for k in prov}, **CHARGES_COLUMNS}),
        )
    p = _Piece(rows, mine, e)
    p.r = rows.filter(
        c("sid").is_in(["BIG", "IT1", "SAC", "TDS"])
        & c("set_index").is_in(mine["set_index"].implode())
    )
    big = _first(p.seg("BIG", ["set_index"], 2), "set_index")
    p.per_set(big.select("set_index", c("BIG02").alias("invoice_number")))
    tagged = p.r.with_columns(
        owner=pl.when(c("sid") == "IT1")
        .then(c("pos"))
        .when(c("sid") == "TDS")
        .then(pl.lit(-1, dtype=pl.Int64))
        .forward_fill(),
        owner_set=pl.when(c("sid").is_in(["IT1", "TDS"])).then(c("set_index")).forward_fill(),
    )
    it1 = p.seg("IT1", ["pos"], 1).select(
        c("pos").alias("owner"), _line_number(c("IT101")).alias("line_number")
    )
    sac = (
        tagged.filter(c("sid") == "SAC")
        .with_columns(
            owner=pl.when(c("owner_set") == c("set_index")).then(c("owner")),
        )
        .pipe(split_elements, ["set_index", "pos", "owner"], e, 15, "SAC")
        .join(it1, on="owner", how="left", maintain_order="left")
        .select(
            "set_index",
            "pos",
            "line_number",
            indicator=c("SAC01"),
            code=c("SAC02"),
            amount=_implied2(c("SAC05")),
            percent=c("SAC08").cast(pl.Decimal(18, 4), strict=False),
            description=c("SAC15"),
        )
        .collect(engine=ENGINE)
    )
    tds = _first(
        p.seg("TDS", ["set_index", "pos"], 1).select(
            "set_index", "pos", total_amount=_implied2(c("TDS01"))
        ),
        "set_index",
    ).collect(engine=ENGINE)
    out = []
    header, _ = p.header()
    for frame, cols in ((tds, TOTALS_COLUMNS), (sac, CHARGES_COLUMNS)):
        head = header.with_columns(
            _ok=~c("rejected").fill_null(True) & ~c("set_index").is_in(bad.implode())
        )
        idx = frame["set_index"] - p.base
        extra = {n: head[n].gather(idx) for n in [*prov[2:], "invoice_number", "_ok"]}
        full = frame.with_columns(**extra).rechunk().filter(c("_ok"))
        out.append(
            full.select(
                _where(source).source(c("pos")).alias("source"),
                _where(source).position(c("pos")).alias("position"),
                *prov[2:],
                *(c(k).cast(v) for k, v in cols.items()),
            )
        )
    return out[0], out[1]
