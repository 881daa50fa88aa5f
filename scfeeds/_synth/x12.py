"""Vectorised X12 004010 writer for 850, 856 and 810 (one interchange per file).

Segments are rendered with polars string expressions, one row per line item, then joined per
transaction set; only the envelope (a handful of segments per file) is built in Python.
Counts and control numbers follow X12.5/X12.6: ISA is fixed width (106 characters with its
terminator), IEA01 = number of groups, GE01 = number of sets in the group, SE01 = number of
segments from ST to SE inclusive, ISA13 = IEA02, GS06 = GE02, ST02 = SE02.

Positions: each canonical row gets ``"segment N"``, N = 1-based ordinal in the file (ISA = 1)
of the segment that opens the line item: PO1 (850), item-level HL (856), IT1 (810).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final

import numpy as np
import polars as pl

from scfeeds._synth.config import BUYER_ISA, DocTable, Supplier

_FUNCTIONAL_ID: Final = {"po_lines": "PO", "asn_lines": "SH", "invoice_lines": "IN"}
_SET_ID: Final = {"po_lines": "850", "asn_lines": "856", "invoice_lines": "810"}
_BUYER_NAME: Final = "SCFEEDS BUYER INC"
_SHIP_TO: Final = "SCFEEDS CENTRAL DC"
# Segments before the first line item of a set (ST counted), and after the last (SE counted).
_DATE: Final = {"po_lines": "po_date", "asn_lines": "ship_date", "invoice_lines": "invoice_date"}
_HEADER: Final = {"po_lines": 5, "asn_lines": 11, "invoice_lines": 5}
_TRAILER: Final = {"po_lines": 2, "asn_lines": 2, "invoice_lines": 3}


@dataclass(frozen=True)
class X12Files:
    """Rendered files (one interchange each, in chunk order) and per-row provenance."""

    files: list[bytes]
    provenance: pl.DataFrame  # position, interchange_control, group_control, set_control, _file


def _s(*parts: str | pl.Expr, sep: str) -> pl.Expr:
    """One segment: elements joined by the element separator (literals for plain strings)."""
    return pl.concat_str([pl.lit(p) if isinstance(p, str) else p for p in parts], separator=sep)


def _money(cents: pl.Expr) -> pl.Expr:
    return pl.format(
        "{}.{}", (cents // 100).cast(pl.String), (cents % 100).cast(pl.String).str.zfill(2)
    )


def _pairs(sup: Supplier) -> list[str | pl.Expr]:
    # Product/service ID pairs: BP = buyer's part number (the canonical item_id), VP = vendor's
    # part number. Some suppliers send VP first, so readers must pick by qualifier.
    bp: list[str | pl.Expr] = ["BP", pl.col("item_id")]
    vp: list[str | pl.Expr] = ["VP", pl.col("vendor_part")]
    return [*vp, *bp] if sup.vp_first else [*bp, *vp]


def _line_no(sup: Supplier) -> pl.Expr:
    col = pl.col("line_number")
    return col.str.zfill(sup.line_width) if sup.line_width else col


def _ymd(col: str) -> pl.Expr:
    return pl.col(col).dt.strftime("%Y%m%d")


def render(
    frame: pl.DataFrame,
    *,
    table: DocTable,
    supplier: Supplier,
    icn_start: int,
) -> X12Files:
    """Render the rows of ``frame`` as one interchange per distinct ``_chunk``.

    ``frame`` is in document order (``doc`` ascending, rows of a document contiguous) with a
    non-decreasing ``_chunk``. File k gets interchange control number ``icn_start + k`` and
    group control numbers ``(icn_start + k) * 1000 + g``. Envelope dates and times come from
    the documents and the control number, never from the clock.
    """
    sep = supplier.element
    t = supplier.terminator + supplier.suffix
    frame = _numbered_rows(frame, table)
    frame, docs = _documents(frame, table, supplier, sep, t)
    provenance = _provenance(frame, docs, table, supplier, icn_start)
    date_col = _DATE[table]
    files: list[bytes] = []
    for (f,), part in docs.partition_by(["_file"], as_dict=True, maintain_order=True).items():
        n = icn_start + int(str(f))
        day: dt.date = part[date_col].min()  # type: ignore[assignment]
        files.append(
            _envelope(part["text"].to_list(), part["g"].to_list(), table, supplier, n, day, sep, t)
        )
    return X12Files(files=files, provenance=provenance)


def _numbered_rows(frame: pl.DataFrame, table: DocTable) -> pl.DataFrame:
    """Each row's file (``_file``) and ordinal in its document (``r``); for 856s its HL numbers."""
    frame = frame.with_columns(
        _file=pl.col("_chunk").rank("dense").cast(pl.Int64) - 1,
        r=pl.int_range(pl.len()).over("doc"),
    )
    if table != "asn_lines":
        return frame
    # HL numbering of the S/O/P/I tree: 1 = shipment, 2 = order, then each pack followed by
    # its items. p = pack ordinal in the set, r = item ordinal in the set.
    return (
        frame.with_columns(
            first_in_pack=(pl.col("pack") != pl.col("pack").shift(1).over("doc")).fill_null(True),
        )
        .with_columns(
            p=pl.col("first_in_pack").cast(pl.Int64).cum_sum().over("doc") - 1,
            i_in_pack=pl.int_range(pl.len()).over("doc", "pack"),
        )
        .with_columns(pack_hl=pl.col("p") + 3 + pl.col("r") - pl.col("i_in_pack"))
        .with_columns(item_hl=pl.col("pack_hl") + 1 + pl.col("i_in_pack"))
    )


def _documents(
    frame: pl.DataFrame, table: DocTable, supplier: Supplier, sep: str, t: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The rows with their segment count (``_ls``), and one row per transaction set: its text,
    group (``g``), control number (``ctl``) and the segments before its ST (``base``)."""
    line_text = _line_segments(table, supplier, sep, t)
    # segments per line item (asn_lines count theirs below): PO1 or IT1 and PID, and a
    # DTM*002 after an 850 line that has a requested date
    dtm = table == "po_lines" and "requested_date" in frame.columns
    frame = frame.with_columns(
        _ls=2 + (pl.col("requested_date").is_not_null().cast(pl.Int64) if dtm else pl.lit(0))
    )
    if dtm:
        line_text = line_text + pl.when(pl.col("requested_date").is_not_null()).then(
            _s("DTM", "002", _ymd("requested_date"), sep=sep) + t
        ).otherwise(pl.lit(""))
    agg: list[pl.Expr] = [
        pl.len().alias("n"),
        pl.col("_ls").sum().alias("_body"),
        line_text.str.join("").alias("body"),
        pl.col("_file").first(),
    ]
    agg += [pl.col(c).first() for c in _header_columns(table)]
    if table == "asn_lines":
        agg.append(pl.col("first_in_pack").sum().cast(pl.Int64).alias("n_packs"))
    if table == "invoice_lines":
        agg.append(pl.col("amount_cents").sum().alias("total_cents"))
    docs = frame.group_by("doc", maintain_order=True).agg(agg)

    spg = supplier.sets_per_group
    body_segments = (
        3 * pl.col("n") + 2 * pl.col("n_packs") if table == "asn_lines" else pl.col("_body")
    )
    docs = (
        docs.with_columns(k=pl.int_range(pl.len()).over("_file"))
        .with_columns(
            g=pl.col("k") // spg,
            ctl=((pl.col("k") % spg) + 1).cast(pl.String).str.zfill(4),
            n_seg=_header_count(table, supplier) + body_segments + _TRAILER[table],
        )
        .with_columns(
            # segments before this set's ST: ISA, one GS per group so far, one GE per closed
            # group, and every earlier set of the interchange
            base=2 * pl.col("g") + 2 + pl.col("n_seg").cum_sum().over("_file") - pl.col("n_seg"),
        )
        .with_columns(
            text=_header(table, supplier, sep, t) + pl.col("body") + _trailer(table, sep, t)
        )
    )
    return frame, docs


def _provenance(
    frame: pl.DataFrame, docs: pl.DataFrame, table: DocTable, supplier: Supplier, icn_start: int
) -> pl.DataFrame:
    """Per row: its segment number in the file and its interchange, group and set controls."""
    idx = pl.Series(np.searchsorted(docs["doc"].to_numpy(), frame["doc"].to_numpy()))
    per_row = docs.select("base", "ctl", "g")[idx]
    head = _header_count(table, supplier)
    if table == "asn_lines":
        offset = head + 2 * (frame["p"] + 1) + 3 * frame["r"]
    else:
        offset = head + frame.select(pl.col("_ls").cum_sum().over("doc") - pl.col("_ls"))["_ls"]
    icn = frame["_file"] + icn_start
    return pl.DataFrame(
        {
            "b": per_row["base"],
            "o": offset,
            "icn": icn,
            "g": per_row["g"],
            "set_control": per_row["ctl"],
            "_file": frame["_file"],
        }
    ).select(
        position=pl.format("segment {}", pl.col("b") + 1 + pl.col("o")),
        interchange_control=pl.col("icn").cast(pl.String).str.zfill(9),
        group_control=(pl.col("icn") * 1000 + pl.col("g")).cast(pl.String),
        set_control="set_control",
        _file="_file",
    )


def _envelope(
    texts: list[str],
    groups: list[int],
    table: DocTable,
    supplier: Supplier,
    icn: int,
    date: dt.date,
    sep: str,
    t: str,
) -> bytes:
    if table == "po_lines":  # the buyer sends POs; the supplier sends ASNs and invoices
        sender, receiver = BUYER_ISA, (supplier.isa_qualifier, supplier.isa_id)
    else:
        sender, receiver = (supplier.isa_qualifier, supplier.isa_id), BUYER_ISA
    time = f"{(icn * 7) % 24:02d}{(icn * 13) % 60:02d}"
    icn_s = f"{icn:09d}"
    isa = sep.join(
        [
            "ISA",
            "00",
            " " * 10,
            "00",
            " " * 10,
            sender[0],
            f"{sender[1]:<15}",
            receiver[0],
            f"{receiver[1]:<15}",
            date.strftime("%y%m%d"),
            time,
            "U",
            "00401",
            icn_s,
            "0",
            "P",
            supplier.component,
        ]
    )
    assert len(isa) == 105, isa  # ISA is fixed width (X12.5); 106 with its terminator
    parts = [isa, t]
    n_groups = (groups[-1] + 1) if groups else 0
    start = 0
    for g in range(n_groups):
        end = start
        while end < len(groups) and groups[end] == g:
            end += 1
        gcn = str(icn * 1000 + g)
        gs = sep.join(
            [
                "GS",
                _FUNCTIONAL_ID[table],
                sender[1],
                receiver[1],
                date.strftime("%Y%m%d"),
                time,
                gcn,
                "X",
                "004010",
            ]
        )
        parts += [gs, t, *texts[start:end], sep.join(["GE", str(end - start), gcn]), t]
        start = end
    parts += [sep.join(["IEA", str(n_groups), icn_s]), t]
    return "".join(parts).encode("ascii")


def _header_count(table: DocTable, sup: Supplier) -> int:
    """Segments before the first line item (ST counted): an 850 without N1 has one fewer."""
    return _HEADER[table] - (table == "po_lines" and not sup.po_n1)


def _header_columns(table: DocTable) -> list[str]:
    if table == "po_lines":
        return ["po_number", "po_date", "currency", "supplier_id"]
    if table == "asn_lines":
        return [
            "shipment_id",
            "ship_date",
            "carrier",
            "bol",
            "tracking",
            "po_number",
            "supplier_id",
        ]
    return ["invoice_number", "invoice_date", "po_number", "currency", "supplier_id", "credit"]


def _header(table: DocTable, sup: Supplier, sep: str, t: str) -> pl.Expr:
    st = _s("ST", _SET_ID[table], pl.col("ctl"), sep=sep) + t
    supplier_n1 = _s("N1", sup.n1_qualifier, sup.name, "92", pl.col("supplier_id"), sep=sep) + t
    if table == "po_lines":
        return pl.concat_str(
            [
                st,
                _s("BEG", "00", "SA", pl.col("po_number"), "", _ymd("po_date"), sep=sep) + t,
                _s("CUR", "BY", pl.col("currency"), sep=sep) + t,
                _s("N1", "ST", _SHIP_TO, "92", sup.location, sep=sep) + t,
                # many buyers send no supplier N1: the receiver (ISA08) is the supplier
                *([supplier_n1] if sup.po_n1 else []),
            ]
        )
    if table == "asn_lines":
        return pl.concat_str(
            [
                st,
                # BSN05 0001: hierarchical structure Shipment, Order, Packaging, Item
                _s("BSN", "00", pl.col("shipment_id"), _ymd("ship_date"), "1200", "0001", sep=sep)
                + t,
                _s("HL", "1", "", "S", sep=sep) + t,
                # TD502 = 2: TD503 is the carrier's SCAC
                _s("TD5", "B", "2", pl.col("carrier"), "M", sep=sep) + t,
                _s("REF", "BM", pl.col("bol"), sep=sep) + t,
                _s("REF", "CN", pl.col("tracking"), sep=sep) + t,
                _s("DTM", "011", _ymd("ship_date"), sep=sep) + t,
                _s("N1", "ST", _SHIP_TO, "92", sup.location, sep=sep) + t,
                supplier_n1,
                _s("HL", "2", "1", "O", sep=sep) + t,
                _s("PRF", pl.col("po_number"), sep=sep) + t,
            ]
        )
    return pl.concat_str(
        [
            st,
            _s(
                "BIG",
                _ymd("invoice_date"),
                pl.col("invoice_number"),
                "",
                pl.col("po_number"),
                sep=sep,
            )
            # BIG07 = CR: a credit memo (quantities and amounts stay positive in the segments)
            + pl.when(pl.col("credit")).then(pl.lit(sep * 3 + "CR")).otherwise(pl.lit(""))
            + t,
            _s("CUR", "SE", pl.col("currency"), sep=sep) + t,
            _s("N1", "BT", _BUYER_NAME, "92", "BUYER01", sep=sep) + t,
            supplier_n1,
        ]
    )


def _line_segments(table: DocTable, sup: Supplier, sep: str, t: str) -> pl.Expr:
    if table == "po_lines":
        return _item_line("PO1", pl.col("qty"), sup, sep, t)
    if table == "asn_lines":
        pack = (
            _s("HL", pl.col("pack_hl").cast(pl.String), "2", "P", sep=sep)
            + t
            + _s("MAN", "GM", pl.col("pack_id"), sep=sep)
            + t
        )
        item = pl.concat_str(
            [
                _s(
                    "HL",
                    pl.col("item_hl").cast(pl.String),
                    pl.col("pack_hl").cast(pl.String),
                    "I",
                    sep=sep,
                )
                + t,
                # LIN01 (assigned identification) carries the PO line number
                _s("LIN", _line_no(sup), *_pairs(sup), sep=sep) + t,
                _s("SN1", "", pl.col("qty").cast(pl.String), pl.col("uom"), sep=sep) + t,
            ]
        )
        return pl.when(pl.col("first_in_pack")).then(pack + item).otherwise(item)
    # a credit memo's lines carry positive quantities (BIG07=CR says it is a credit)
    return _item_line("IT1", pl.col("qty").abs(), sup, sep, t)


def _item_line(segment: str, qty: pl.Expr, sup: Supplier, sep: str, t: str) -> pl.Expr:
    """PO1 / IT1 (line number, quantity, unit, price, product ID pairs), then its PID."""
    return pl.concat_str(
        [
            _s(
                segment,
                _line_no(sup),
                qty.cast(pl.String),
                pl.col("uom"),
                _money(pl.col("price_cents")),
                "",
                *_pairs(sup),
                sep=sep,
            )
            + t,
            _s("PID", "F", "", "", "", pl.col("description"), sep=sep) + t,
        ]
    )


def _trailer(table: DocTable, sep: str, t: str) -> pl.Expr:
    se = _s("SE", pl.col("n_seg").cast(pl.String), pl.col("ctl"), sep=sep) + t
    ctt = _s("CTT", pl.col("n").cast(pl.String), sep=sep) + t
    if table == "invoice_lines":
        # TDS01: total invoice amount, two implied decimals (N2)
        return pl.concat_str(
            [_s("TDS", pl.col("total_cents").abs().cast(pl.String), sep=sep) + t, ctt, se]
        )
    return pl.concat_str([ctt, se])
