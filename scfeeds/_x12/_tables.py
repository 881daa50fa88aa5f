"""850 / 856 / 810 segments to the canonical tables, with polars joins per segment type.

Field sources (DESIGN.md "X12 sources of the key fields"): BEG03/BEG05, PO101-PO104 and the
PO1 product-ID pairs; BSN02/BSN03, HL01/HL02/HL03 (the S/O/T/P/I tree rebuilt from parent
pointers), PRF01, LIN pairs, SN102/SN103, MAN02; BIG01/BIG02/BIG04, IT101-IT104. supplier_id is
N104 of the first N1 whose N101 is SU, SE or VN, else the interchange sender (ISA06).
"""

from __future__ import annotations

from typing import Final

import polars as pl

from scfeeds._x12._core import _RAW_ERROR, seg
from scfeeds._x12._tokenize import split_elements
from scfeeds.schemas import QTY, TableName, schema

SET_OF: Final[dict[TableName, str]] = {
    "po_lines": "850",
    "asn_lines": "856",
    "invoice_lines": "810",
}
# Product/service ID qualifiers (X12 element 235) in order of preference for item_id: the
# buyer's part number first (the key the buyer's receipts and catalogue use), then the
# vendor's, then GTIN-like codes. Without any of them, the first pair wins.
ITEM_QUALIFIERS: Final = ("BP", "IN", "VP", "VN", "SK", "MG", "UP", "UA", "UK", "EN", "CB")
SUPPLIER_ENTITIES: Final = ("SU", "SE", "VN")
_HL_DEPTH: Final = 8

c = pl.col


def _first(frame: pl.LazyFrame, key: str | list[str]) -> pl.LazyFrame:
    return frame.unique(subset=key, keep="first", maintain_order=True)


def _line_number(x: pl.Expr) -> pl.Expr:
    """CONTRACTS: no surrounding spaces, no leading zeros ("0010" -> "10", "000" -> "0")."""
    s = x.str.strip_chars()
    z = s.str.strip_chars_start("0")
    return pl.when(s == "").then(None).when(z == "").then(pl.lit("0")).otherwise(z)


def _date(x: pl.Expr) -> pl.Expr:
    """DT elements: CCYYMMDD, or YYMMDD in versions before 004010."""
    return (
        pl.when(x.str.len_chars() == 8)
        .then(x.str.to_date("%Y%m%d", strict=False))
        .when(x.str.len_chars() == 6)
        .then(x.str.to_date("%y%m%d", strict=False))
    )


def _item(prefix: str, first: int, last: int) -> pl.Expr:
    """item_id from qualifier/ID pairs (``prefix`` first..last, qualifier at odd offsets)."""
    pairs = [
        (c(f"{prefix}{i:02d}"), c(f"{prefix}{i + 1:02d}")) for i in range(first, last, 2)
    ]
    chosen = [
        pl.when(q == qual).then(v) for qual in ITEM_QUALIFIERS for q, v in pairs
    ]
    return pl.coalesce([*chosen, *(v for _, v in pairs)])


def _number(x: pl.Expr) -> pl.Expr:
    return x.str.strip_chars().cast(QTY, strict=False)


def _bad(frame: pl.LazyFrame, col: str, parsed: pl.Expr, code: str, pos: str = "pos") -> pl.LazyFrame:
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


def _supplier(r: pl.LazyFrame, e: str) -> pl.LazyFrame:
    n1 = r.filter(c("sid") == "N1").select("set_index", *split_elements(c("raw"), e, 4, "N1"))
    return _first(
        n1.filter(c("N101").is_in(SUPPLIER_ENTITIES) & c("N104").is_not_null()).select(
            "set_index", c("N104").str.strip_chars().alias("n1_supplier")
        ),
        "set_index",
    )


def _currency(r: pl.LazyFrame, e: str) -> pl.LazyFrame:
    cur = r.filter(c("sid") == "CUR").select("set_index", *split_elements(c("raw"), e, 2, "CUR"))
    return _first(cur.select("set_index", c("CUR02").alias("currency")), "set_index")


def _children(r: pl.LazyFrame, parent: str, child: str) -> pl.LazyFrame:
    """``child`` rows with the position of the ``parent`` segment that precedes them in the set."""
    is_p = c("sid") == parent
    return (
        r.filter(c("sid").is_in([parent, child]))
        .with_columns(
            parent_pos=pl.when(is_p).then(c("pos")).forward_fill(),
            parent_set=pl.when(is_p).then(c("set_index")).forward_fill(),
        )
        .filter((c("sid") == child) & (c("parent_set") == c("set_index")))
    )


def _finish(
    table: TableName,
    lines: pl.LazyFrame,
    ctx: pl.LazyFrame,
    errors: list[pl.LazyFrame],
    source: str,
    columns: list[str] | None,
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    err = pl.concat(errors, how="vertical") if errors else pl.LazyFrame(schema=_RAW_ERROR)
    bad_sets = err.select("set_index").unique()
    sch = schema(table)
    out = (
        lines.join(ctx, on="set_index", how="inner")
        .filter(~c("rejected"))
        .join(bad_sets, on="set_index", how="anti")
        .with_columns(
            source=pl.lit(source),
            position=seg(c("pos")),
            supplier_id=pl.coalesce(c("n1_supplier"), c("sender_id")),
        )
        .sort("pos")
        .select([c(name).cast(dtype) for name, dtype in sch.items() if columns is None or name in columns])
    )
    return out, err


def build(
    table: TableName,
    rows: pl.DataFrame,
    ctx: pl.DataFrame,
    e: str,
    source: str,
    columns: list[str] | None = None,
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """Rows of ``table`` from the in-set segments of a piece, and element error rows.

    ``ctx`` has one row per set: set_index, set_id, rejected, interchange_control,
    group_control, set_control, sender_id.
    """
    set_id = SET_OF[table]
    mine = ctx.filter(c("set_id") == set_id)
    if mine.height == 0:
        return pl.LazyFrame(schema=schema(table)).select(
            [c(n) for n in schema(table) if columns is None or n in columns]
        ), pl.LazyFrame(schema=_RAW_ERROR)
    r = rows.lazy().filter(c("set_index").is_in(mine["set_index"].implode()))
    want = set(schema(table) if columns is None else columns)
    if table == "po_lines":
        return _po(r, mine.lazy(), e, source, columns, want)
    if table == "invoice_lines":
        return _invoice(r, mine.lazy(), e, source, columns, want)
    return _asn(r, mine.lazy(), e, source, columns, want)


def _po(
    r: pl.LazyFrame, ctx: pl.LazyFrame, e: str, source: str, columns: list[str] | None, want: set[str]
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    po1 = r.filter(c("sid") == "PO1").select("set_index", "pos", *split_elements(c("raw"), e, 25, "PO1"))
    beg = _first(
        r.filter(c("sid") == "BEG").select("set_index", "pos", *split_elements(c("raw"), e, 5, "BEG")),
        "set_index",
    )
    lines = po1.with_columns(
        line_number=_line_number(c("PO101")),
        qty_ordered=_number(c("PO102")),
        uom=c("PO103"),
        unit_price=_number(c("PO104")),
        item_id=_item("PO1", 6, 25),
    ).join(
        beg.select(
            "set_index",
            c("BEG03").alias("po_number"),
            _date(c("BEG05")).alias("po_date"),
        ),
        on="set_index",
        how="left",
    )
    errors = [
        _bad(po1, "PO102", _number(c("PO102")), "BAD_NUMBER"),
        _bad(po1, "PO104", _number(c("PO104")), "BAD_NUMBER"),
        _bad(beg, "BEG05", _date(c("BEG05")), "BAD_DATE"),
        _missing(beg, "BEG03"),
        _missing(beg, "BEG05"),
    ]
    lines = _common(r, lines, e, want)
    if "description" in want:
        pid = _children(r, "PO1", "PID").select(
            "parent_pos", *split_elements(c("raw"), e, 5, "PID")
        )
        pid = _first(
            pid.filter(c("PID05").is_not_null()).select(
                c("parent_pos").alias("pos"), c("PID05").alias("description")
            ),
            "pos",
        )
        lines = lines.join(pid, on="pos", how="left")
    else:
        lines = lines.with_columns(description=pl.lit(None, dtype=pl.String))
    return _finish("po_lines", lines, ctx, errors, source, columns)


def _common(r: pl.LazyFrame, lines: pl.LazyFrame, e: str, want: set[str]) -> pl.LazyFrame:
    if "supplier_id" in want:
        lines = lines.join(_supplier(r, e), on="set_index", how="left")
    else:
        lines = lines.with_columns(n1_supplier=pl.lit(None, dtype=pl.String))
    if "currency" in want:
        lines = lines.join(_currency(r, e), on="set_index", how="left")
    return lines


def _invoice(
    r: pl.LazyFrame, ctx: pl.LazyFrame, e: str, source: str, columns: list[str] | None, want: set[str]
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    it1 = r.filter(c("sid") == "IT1").select("set_index", "pos", *split_elements(c("raw"), e, 25, "IT1"))
    big = _first(
        r.filter(c("sid") == "BIG").select("set_index", "pos", *split_elements(c("raw"), e, 4, "BIG")),
        "set_index",
    )
    qty, price = _number(c("IT102")), _number(c("IT104"))
    lines = it1.with_columns(
        line_number=_line_number(c("IT101")),
        qty_invoiced=qty,
        uom=c("IT103"),
        unit_price=price,
        line_amount=(qty * price),
        item_id=_item("IT1", 6, 25),
    ).join(
        big.select(
            "set_index",
            _date(c("BIG01")).alias("invoice_date"),
            c("BIG02").alias("invoice_number"),
            c("BIG04").alias("po_number"),
        ),
        on="set_index",
        how="left",
    )
    errors = [
        _bad(it1, "IT102", qty, "BAD_NUMBER"),
        _bad(it1, "IT104", price, "BAD_NUMBER"),
        _bad(big, "BIG01", _date(c("BIG01")), "BAD_DATE"),
        _missing(big, "BIG01"),
        _missing(big, "BIG02"),
    ]
    lines = _common(r, lines, e, want)
    return _finish("invoice_lines", lines, ctx, errors, source, columns)


def _asn(
    r: pl.LazyFrame, ctx: pl.LazyFrame, e: str, source: str, columns: list[str] | None, want: set[str]
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    bsn = _first(
        r.filter(c("sid") == "BSN").select("set_index", "pos", *split_elements(c("raw"), e, 3, "BSN")),
        "set_index",
    )
    # Every segment of the set belongs to the HL that precedes it.
    tagged = (
        r.filter(c("sid").is_in(["HL", "PRF", "MAN", "LIN", "SN1", "TD5", "REF"]))
        .with_columns(
            hl_pos=pl.when(c("sid") == "HL").then(c("pos")).forward_fill(),
            hl_set=pl.when(c("sid") == "HL").then(c("set_index")).forward_fill(),
        )
        .filter(c("hl_set") == c("set_index"))
    )
    hl = tagged.filter(c("sid") == "HL").select(
        "set_index", "pos", *split_elements(c("raw"), e, 3, "HL")
    )
    hl_of = hl.select("set_index", c("pos").alias("hl_pos"), c("HL01").alias("hl_id"))

    def per_hl(sid: str, n: int, value: pl.Expr, name: str) -> pl.LazyFrame:
        f = tagged.filter(c("sid") == sid).select(
            "set_index", "hl_pos", *split_elements(c("raw"), e, n, sid)
        )
        return _first(
            f.select("set_index", "hl_pos", value.alias(name)).filter(c(name).is_not_null()),
            ["set_index", "hl_pos"],
        ).join(hl_of, on=["set_index", "hl_pos"]).select("set_index", "hl_id", name)

    prf = per_hl("PRF", 1, c("PRF01"), "po_number")
    man = per_hl("MAN", 2, c("MAN02"), "pack_id")
    lin = _first(
        tagged.filter(c("sid") == "LIN").select(
            "set_index", "hl_pos", "pos", *split_elements(c("raw"), e, 31, "LIN")
        ),
        ["set_index", "hl_pos"],
    )
    sn1 = _first(
        tagged.filter(c("sid") == "SN1").select(
            "set_index", "hl_pos", c("pos").alias("sn1_pos"), *split_elements(c("raw"), e, 3, "SN1")
        ),
        ["set_index", "hl_pos"],
    )
    items = (
        lin.join(sn1, on=["set_index", "hl_pos"], how="left")
        .join(hl_of, on=["set_index", "hl_pos"], how="left")
        .with_columns(
            line_number=_line_number(c("LIN01")),
            item_id=_item("LIN", 2, 31),
            qty_shipped=_number(c("SN102")),
            uom=c("SN103"),
        )
    )
    # Walk up the HL tree: the nearest ancestor-or-self with a PRF gives the PO, with a MAN
    # the pack. Missing levels (S/O/I without P) simply leave pack_id null.
    parent = hl.select("set_index", c("HL01").alias("cur"), c("HL02").alias("up"))
    walk = items.select("set_index", "pos", c("hl_id").alias("cur")).with_columns(
        po_number=pl.lit(None, dtype=pl.String), pack_id=pl.lit(None, dtype=pl.String)
    )
    for _ in range(_HL_DEPTH):
        walk = (
            walk.join(prf.rename({"hl_id": "cur", "po_number": "p"}), on=["set_index", "cur"], how="left")
            .join(man.rename({"hl_id": "cur", "pack_id": "m"}), on=["set_index", "cur"], how="left")
            .join(parent, on=["set_index", "cur"], how="left")
            .select(
                "set_index",
                "pos",
                c("up").alias("cur"),
                pl.coalesce("po_number", "p").alias("po_number"),
                pl.coalesce("pack_id", "m").alias("pack_id"),
            )
        )
    # Shipment-level facts: first TD5 carrier (TD503 SCAC) and REF*CN (carrier reference).
    td5 = _first(
        r.filter(c("sid") == "TD5")
        .select("set_index", *split_elements(c("raw"), e, 3, "TD5"))
        .filter(c("TD503").is_not_null())
        .select("set_index", c("TD503").alias("carrier")),
        "set_index",
    )
    ref = r.filter(c("sid") == "REF").select("set_index", *split_elements(c("raw"), e, 2, "REF"))
    trk = _first(
        ref.filter((c("REF01") == "CN") & c("REF02").is_not_null()).select(
            "set_index", c("REF02").alias("tracking")
        ),
        "set_index",
    )
    lines = (
        items.join(walk.select("pos", "po_number", "pack_id"), on="pos", how="left")
        .join(
            bsn.select(
                "set_index", c("BSN02").alias("shipment_id"), _date(c("BSN03")).alias("ship_date")
            ),
            on="set_index",
            how="left",
        )
        .join(td5, on="set_index", how="left")
        .join(trk, on="set_index", how="left")
    )
    errors = [
        _bad(sn1, "SN102", _number(c("SN102")), "BAD_NUMBER", pos="sn1_pos"),
        _bad(bsn, "BSN03", _date(c("BSN03")), "BAD_DATE"),
        _missing(bsn, "BSN02"),
        _missing(bsn, "BSN03"),
    ]
    lines = _common(r, lines, e, want)
    return _finish("asn_lines", lines, ctx, errors, source, columns)
