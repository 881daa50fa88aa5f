"""The three-way match as one lazy plan.

Plan shape (what makes it fast):

1. Every document line (ASN, receipt, invoice) is stacked into one narrow *long* frame:
   kind (u8), input row (u32), document id (u64 hash of the document key), match key, unit,
   quantity, amount. No descriptive strings travel through the joins.
2. One hash join against a PO *lookup* keyed by (supplier_id, po_number, key kind, key): key
   kind 0 is the line number, kind 1 the item id (the fallback for documents without a line
   number, common in 856). The join yields the dense integer PO line id ``_po`` plus the PO
   unit and price.
3. Unit conversion touches only the rows whose unit differs from the PO line's (a join with
   the small resolved factor table); the rest pass through.
4. One group-by on the integer ``_po`` computes every per-line sum and count at once, with
   kind-masked columns instead of one group-by per document type.
5. One integer join puts the sums next to the PO lines; checks are column expressions.

Invoice documents (one row per invoice, far fewer than lines) are grouped once; exact and
suspected duplicates are found on that small frame and fed back to the long frame as a
small u64 join before the sums, so duplicates never reach them.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import polars as pl

from scfeeds._reconcile._invoices import mark_duplicates
from scfeeds._reconcile._num import RAW4, RAW8, dec4, div_round, raw4
from scfeeds._reconcile._tolerances import Tolerances, beyond
from scfeeds._reconcile._uom import factor_table, normalize_uom
from scfeeds.exceptions import ConfigurationError, ReconcileWarning
from scfeeds.schemas import COLUMNS, TableName

OUT: Final = pl.Decimal(38, 4)
KEY: Final = ("supplier_id", "po_number", "line_number")

ASN, RECEIPT, INVOICE, PO = 0, 1, 2, 3
LEVEL: Final = {ASN: "asn", RECEIPT: "receipt", INVOICE: "invoice"}

# Primary status precedence, first match wins. Duplicates and missing references first (the
# document itself is suspect), then unit problems (the sums are incomplete), then what could
# make AP pay too much, then supply problems, then the accrual (received, not yet billed).
PRECEDENCE: Final[tuple[str, ...]] = (
    "DUPLICATE_INVOICE",
    "DUPLICATE_SUSPECT",
    "NO_PO_REFERENCE",
    "SUPPLIER_MISMATCH",
    "UOM_MISMATCH",
    "INVOICED_NOT_RECEIVED",
    "OVER_INVOICED",
    "OVER_ORDERED",
    "PRICE_VARIANCE",
    "NOT_SHIPPED",
    "SHORT_SHIPPED",
    "OVER_SHIPPED",
    "NOT_INVOICED",
)
LINE_CODES: Final[tuple[str, ...]] = PRECEDENCE[4:]
STATUSES: Final[tuple[str, ...]] = (*PRECEDENCE, "MATCHED_WITHIN_TOLERANCE", "MATCHED")
#: ``status`` is an Enum in precedence order (sorting by it puts the worst first); ``flags``
#: a list of exception codes (Enum too): 4 bytes a value instead of a string.
STATUS: Final = pl.Enum(STATUSES)
CODE: Final = pl.Enum(PRECEDENCE)


def _mask_tables() -> tuple[pl.DataFrame, pl.DataFrame]:
    """Flags travel as a bitmask (bit i = ``PRECEDENCE[i]``) and become lists and exception
    rows through two small lookup tables: building a list per row from 13 conditional
    literals costs more than the rest of the line stage together."""
    n = len(PRECEDENCE)
    masks = range(1 << n)
    flags = [[c for b, c in enumerate(PRECEDENCE) if m >> b & 1] for m in masks]
    by_mask = pl.DataFrame(
        {
            "_mask": pl.Series(masks, dtype=pl.UInt16),
            "flags": pl.Series(flags, dtype=pl.List(CODE)),
            "_top": pl.Series([f[0] if f else None for f in flags], dtype=pl.String),
        }
    )
    rows = [(m, c) for m, f in zip(masks, flags, strict=True) for c in f if c in LINE_CODES]
    codes = pl.DataFrame(rows, schema={"_mask": pl.UInt16, "code": pl.String}, orient="row")
    return by_mask, codes


_BY_MASK, _CODES = _mask_tables()


def _mask(flag_exprs: dict[str, pl.Expr]) -> pl.Expr:
    return pl.sum_horizontal(
        pl.when(e).then(pl.lit(1 << PRECEDENCE.index(c), pl.UInt16)).otherwise(pl.lit(0, pl.UInt16))
        for c, e in flag_exprs.items()
    ).cast(pl.UInt16)


# Columns each input must have (a subset of its business columns in scfeeds.schemas).
REQUIRED: Final[dict[TableName, tuple[str, ...]]] = {
    "po_lines": (
        "supplier_id",
        "po_number",
        "line_number",
        "item_id",
        "qty_ordered",
        "uom",
        "unit_price",
    ),
    "asn_lines": (
        "supplier_id",
        "shipment_id",
        "po_number",
        "line_number",
        "item_id",
        "qty_shipped",
        "uom",
    ),
    "invoice_lines": (
        "supplier_id",
        "invoice_number",
        "invoice_date",
        "po_number",
        "line_number",
        "item_id",
        "qty_invoiced",
        "uom",
        "unit_price",
        "line_amount",
    ),
    "receipts": ("supplier_id", "po_number", "line_number", "item_id", "qty_received", "uom"),
}
QTY_COL: Final[dict[TableName, str]] = {
    "po_lines": "qty_ordered",
    "asn_lines": "qty_shipped",
    "invoice_lines": "qty_invoiced",
    "receipts": "qty_received",
}


Frame = pl.DataFrame | pl.LazyFrame
# Tests set this to run the string-key join that a 64-bit hash collision would fall back to.
_FORCE_EXACT_KEYS = False
Engine = Literal["auto", "in-memory", "streaming"]


_TABLE_OF: Final[dict[str, TableName]] = {
    "po": "po_lines",
    "asn": "asn_lines",
    "invoice": "invoice_lines",
    "receipts": "receipts",
}


def check_input(frame: Frame, arg: str) -> None:
    """Raise :class:`ConfigurationError` unless ``frame`` is a polars frame with the columns
    the match needs (reads the schema only)."""
    _prep(frame, _TABLE_OF[arg], arg)


def _prep(frame: Frame, table: TableName, arg: str, *, numbered: bool = False) -> pl.LazyFrame:
    """Canonical business columns (cast), normalised line numbers and units, input row index."""
    if isinstance(frame, pl.DataFrame):
        lf = frame.lazy()
    elif isinstance(frame, pl.LazyFrame):
        lf = frame
    else:
        raise ConfigurationError(
            f"{arg} must be a polars DataFrame or LazyFrame with the {table} columns "
            f"of scfeeds.schemas, not {type(frame).__name__}"
        )
    names = lf.collect_schema().names()
    missing = [c for c in REQUIRED[table] if c not in names]
    if missing:
        raise ConfigurationError(
            f"{arg} is missing column(s) {missing} of the canonical {table} table "
            f"(see scfeeds.schemas.COLUMNS[{table!r}])"
        )
    dtypes = COLUMNS[table]
    keep = used_columns(names, table)
    cols = [pl.col(c).cast(dtypes[c]) if c in dtypes else pl.col(c).cast(pl.String) for c in keep]
    if numbered:  # rows already carry their input number (partitioned runs)
        return lf.select(pl.col("_row").cast(pl.UInt32), *cols).with_columns(
            line_number=_norm_line(pl.col("line_number"))
        )
    if "_row" in names:
        lf = lf.drop("_row")
    # Rows are numbered first: on a Parquet scan the reader numbers them as it streams, where
    # a number given after the select makes the streaming engine hold the whole input.
    return (
        lf.with_row_index("_row")
        .select("_row", *cols)
        .with_columns(
            line_number=_norm_line(pl.col("line_number")),
        )
    )


def used_columns(names: list[str], table: TableName) -> list[str]:
    """The input columns the match reads: the required ones and the provenance it reports."""
    keep = list(REQUIRED[table])
    keep += [c for c in ("source", "position", "invoice_date", "currency") if c in names]
    return list(dict.fromkeys(keep))


def _norm_line(expr: pl.Expr) -> pl.Expr:
    """Line numbers: trimmed, leading zeros insignificant (``"0010"`` == ``"10"``), ``""`` null."""
    s = expr.str.strip_chars()
    z = s.str.strip_chars_start("0")
    return pl.when(s == "").then(None).when(z == "").then(pl.lit("0")).otherwise(z)


@dataclass(frozen=True, slots=True)
class Plan:
    """The outputs of one reconcile run (in memory) and the seconds each stage took."""

    lines: pl.DataFrame
    invoices: pl.DataFrame
    exceptions: pl.DataFrame
    received_from: Literal["receipts", "asn"]
    stages: dict[str, float]
    #: Input row of each PO line (aligned with ``lines``) and the first input row of each
    #: invoice (aligned with ``invoices``): how partitioned runs put rows back in order.
    line_rows: pl.Series | None = None
    invoice_rows: pl.Series | None = None
    #: Document lines whose unit could not be converted while no ``conversions`` were given
    #: (see :func:`warn_units`).
    unconverted: int = 0


def build(
    po: Frame,
    asn: Frame,
    invoice: Frame,
    *,
    receipts: Frame | None,
    tol: Tolerances,
    conversions: Frame | None,
    engine: Engine = "auto",
    po_numbers: pl.LazyFrame | None = None,
    where: pl.Expr | None = None,
    compact: bool = False,
    numbered: bool = False,
) -> Plan:
    """Run the match in stages; each stage is one lazy plan collected once with ``engine``.

    ``po_numbers`` (column ``po_number``): every PO number of every supplier, when ``po`` holds
    only some suppliers (partitioned runs), so that ``SUPPLIER_MISMATCH`` is still found.
    ``where``: a filter on the inputs (a partition of the suppliers), applied after the input
    rows are numbered so that row numbers (evidence, "first seen" order) stay global.
    ``numbered``: the inputs carry their input row number in ``_row`` (a partition split
    beforehand); PO lines are put back in that order.
    ``compact``: ``lines`` holds only :data:`LINE_VALUES` (see :func:`public_lines`).

    Materialising between stages keeps every shared intermediate (PO lines, invoice documents,
    the converted long frame, the per-line sums) computed exactly once, whatever the
    optimiser makes of a plan that references them several times, and lets each stage free
    what it no longer needs.
    """
    timings: dict[str, float] = {}
    clock = [time.perf_counter()]

    def tick(stage: str) -> None:
        now = time.perf_counter()
        timings[stage] = timings.get(stage, 0.0) + now - clock[0]
        clock[0] = now

    def mat(lf: pl.LazyFrame, stage: str) -> pl.LazyFrame:
        out = lf.collect(engine=engine).lazy()
        tick(stage)
        return out

    po_lf = _prep(po, "po_lines", "po", numbered=numbered)
    asn_lf = _prep(asn, "asn_lines", "asn", numbered=numbered)
    inv_lf = _prep(invoice, "invoice_lines", "invoice", numbered=numbered)
    rec_lf = (
        _prep(receipts, "receipts", "receipts", numbered=numbered) if receipts is not None else None
    )
    if numbered:
        po_lf = po_lf.sort("_row")
    if where is not None:
        po_lf, asn_lf, inv_lf = (lf.filter(where) for lf in (po_lf, asn_lf, inv_lf))
        rec_lf = rec_lf.filter(where) if rec_lf is not None else None
    po_in = po_lf  # PO input rows with their provenance: the evidence of line exceptions
    factors = factor_table(conversions).lazy()
    tol_frame = tol.frame()
    inv_names = inv_lf.collect_schema().names()
    inv_has_source = "source" in inv_names

    # -- PO lines: first occurrence of each key wins; `_po` is the dense line id. Keys are
    # compared through a 64-bit hash; rows whose hash repeats (true repeats, or a collision)
    # are resolved on the strings themselves. Only the columns the match needs are kept.
    po_lf = mat(
        po_lf.select("_row", *KEY, "item_id", "uom", "unit_price", "qty_ordered").with_columns(
            _h=pl.struct(*KEY).hash()
        ),
        "po lines",
    )
    if _repeats(po_lf, "_h"):
        po_lf = po_lf.filter(pl.struct(*KEY).is_first_distinct())
    po_lf = mat(
        po_lf.drop("_h")
        .with_row_index("_po")
        .with_columns(_o=raw4(pl.col("qty_ordered")).fill_null(0), _p=raw4(pl.col("unit_price")))
        .drop("qty_ordered"),
        "po lines",
    )
    po_attr = po_lf.select("_po", pl.col("item_id").alias("_pi"), pl.col("uom").alias("_pu"), "_p")
    po_rows = po_lf.select(
        pl.col("_po").alias("_po_first"), pl.col("_row").cast(pl.UInt32).alias("_po_row")
    )
    by_line = po_lf.select(
        "supplier_id",
        "po_number",
        pl.lit(0, pl.UInt8).alias("_mt"),
        pl.col("line_number").alias("_mk"),
        "_po",
    )
    # Fallback key: (supplier, PO, item) -> the lowest line of that item (rows are in `_po`
    # order, so the first is the lowest).
    by_item = (
        po_lf.filter(pl.col("item_id").is_not_null())
        .unique(subset=["supplier_id", "po_number", "item_id"], keep="first", maintain_order=True)
        .select(
            "supplier_id",
            "po_number",
            pl.lit(1, pl.UInt8).alias("_mt"),
            pl.col("item_id").alias("_mk"),
            "_po",
        )
    )
    # The match key travels as a 64-bit hash: the join runs on one u64 column (3x faster
    # than on the strings). A second, independently seeded hash of the PO number must agree
    # too, so a false match needs two 64-bit collisions at once.
    mkey = ("supplier_id", "po_number", "_mt", "_mk")
    h1, h2 = pl.struct(*mkey).hash(seed=0), pl.col("po_number").hash(seed=17)
    lookup = mat(
        pl.concat([by_line, by_item]).select(h1.alias("_h"), h2.alias("_h2"), "_po"), "lookup"
    )
    exact_keys = _FORCE_EXACT_KEYS or _repeats(lookup, "_h")
    if exact_keys:  # two PO keys share a 64-bit hash: join on the strings instead
        lookup = mat(pl.concat([by_line, by_item]), "lookup")
    del by_line, by_item

    # -- Invoice documents and their duplicate status (one row per invoice: small).
    doc_cols = ["supplier_id", "invoice_number", *(["source"] if inv_has_source else [])]
    amount = pl.coalesce(
        raw4(pl.col("line_amount")),
        div_round(raw4(pl.col("qty_invoiced")).cast(pl.Int128) * raw4(pl.col("unit_price")), RAW4),
    ).cast(pl.Int64)
    # A 64-bit hash of the document key stands in for the key in joins and counts.
    inv_lf = inv_lf.with_columns(_docid=pl.struct(doc_cols).hash(), _amt=amount)
    docs = inv_lf.group_by("_docid").agg(
        *(pl.col(c).first() for c in doc_cols),
        pl.col("invoice_date").min(),
        pl.col("po_number").first(),
        *(pl.col(c).first() for c in ("currency",) if c in inv_names),
        total_amount=pl.col("_amt").sum(),
        n_lines=pl.len(),
        _first=pl.col("_row").min(),
    )
    order = ["invoice_date", *(["source"] if inv_has_source else []), "_first"]
    docs = mat(
        docs.sort(order, nulls_last=True).with_row_index("_ord").rename({"_docid": "_doc"}),
        "invoice documents",
    )
    docs = mat(mark_duplicates(docs, tol, tol_frame, engine), "duplicates")
    excl = docs.filter(pl.col("_dup") | pl.col("_suspect")).select(
        pl.col("_doc").alias("_docid"),
        pl.when(pl.col("_dup"))
        .then(pl.lit(1, pl.UInt8))
        .otherwise(pl.lit(2, pl.UInt8))
        .alias("_excl"),
    )

    # -- The long frame: every document line, narrow; one join finds its PO line, a second
    # brings the PO unit and price, units are converted, and only the integer columns the
    # sums need are materialised (no document strings survive this stage).
    def narrow(lf: pl.LazyFrame, kind: int, qty: str, docid: pl.Expr, amt: pl.Expr) -> pl.LazyFrame:
        return lf.select(
            pl.lit(kind, pl.UInt8).alias("_kind"),
            pl.col("_row").cast(pl.UInt32),
            docid.alias("_docid"),
            "supplier_id",
            "po_number",
            pl.when(pl.col("line_number").is_null())
            .then(pl.lit(1, pl.UInt8))
            .otherwise(pl.lit(0, pl.UInt8))
            .alias("_mt"),
            pl.coalesce("line_number", "item_id").alias("_mk"),
            "uom",
            raw4(pl.col(qty)).alias("_qty"),
            amt.alias("_amt"),
        )

    no_amt = pl.lit(None, pl.Int64)
    parts = [
        narrow(
            asn_lf, ASN, "qty_shipped", pl.struct("supplier_id", "shipment_id").hash(), no_amt
        ).with_columns(_excl=pl.lit(0, pl.UInt8))
    ]
    if rec_lf is not None:
        parts.append(
            narrow(rec_lf, RECEIPT, "qty_received", pl.lit(None, pl.UInt64), no_amt).with_columns(
                _excl=pl.lit(0, pl.UInt8)
            )
        )
    parts.append(
        narrow(inv_lf, INVOICE, "qty_invoiced", pl.col("_docid"), pl.col("_amt"))
        .join(excl, on="_docid", how="left")
        .with_columns(pl.col("_excl").fill_null(0))
    )
    long = pl.concat(parts, how="vertical")
    if exact_keys:
        long = long.join(lookup, on=list(mkey), how="left")
    else:
        long = (
            long.with_columns(h1.alias("_h"), h2.alias("_h2"))
            .join(lookup, on="_h", how="left", suffix="_l")
            .with_columns(
                _po=pl.when(pl.col("_h2") == pl.col("_h2_l")).then(pl.col("_po")),
            )
        )

    # Units: only rows whose unit differs from the PO unit need a factor. Units compare as
    # given first (canonical feeds agree on case); only rows that differ are normalised
    # (trimmed, upper case) and looked up: the factor joins' keys are null elsewhere, and a
    # null key matches nothing.
    def same(u: pl.Expr, pu: pl.Expr) -> pl.Expr:
        return u.is_null() | pu.is_null() | (u == pu)

    specific = factors.filter(pl.col("item_id").is_not_null()).rename({"item_id": "_pi"})
    generic = factors.filter(pl.col("item_id").is_null()).drop("item_id")
    need = ~same(pl.col("uom"), pl.col("_pu"))
    u, pu = normalize_uom(pl.col("uom")), normalize_uom(pl.col("_pu"))
    conv = mat(
        long.select("_kind", "_row", "_docid", "_excl", "uom", "_qty", "_amt", "_po")
        .join(po_attr, on="_po", how="left")
        .with_columns(
            _need=need,
            # equal once normalised ("ea" vs "EA"): factor 1
            _one=pl.when(same(u, pu)).then(pl.lit(1, pl.Int64)),
            _ku=pl.when(need).then(u),
            _kpu=pl.when(need).then(pu),
        )
        .join(
            specific, left_on=["_pi", "_ku", "_kpu"], right_on=["_pi", "_from", "_to"], how="left"
        )
        .join(generic, left_on=["_ku", "_kpu"], right_on=["_from", "_to"], how="left", suffix="_g")
        .select(
            "_kind",
            "_row",
            "_docid",
            "_excl",
            "_po",
            "_amt",
            "_p",
            pl.when(~pl.col("_need"))
            .then(pl.col("_qty") * (RAW8 // RAW4))
            .otherwise(
                div_round(
                    pl.col("_qty").cast(pl.Int128)
                    * (RAW8 // RAW4)
                    * pl.coalesce("_one", "_num", "_num_g"),
                    pl.coalesce("_one", "_den", "_den_g").cast(pl.Int128),
                ).cast(pl.Int64)
            )
            .alias("_q"),
            "_qty",
        )
        .with_columns(_bad=pl.col("_q").is_null() & pl.col("_qty").is_not_null())
        .drop("_qty"),
        "match",
    )
    del long, parts, lookup, po_attr
    unconverted = (
        0 if conversions is not None else int(conv.select(pl.col("_bad").sum()).collect().item())
    )

    # -- One group-by on the integer line id for every per-line figure.
    k, ok, bad = pl.col("_kind"), pl.col("_excl") == 0, pl.col("_bad")
    is_asn, is_rec, is_inv = k == ASN, k == RECEIPT, (k == INVOICE) & ok
    # An invoice line billed at another price than the PO's: the evidence for PRICE_VARIANCE.
    deviates = is_inv & ~bad & (pl.col("_amt") != div_round(pl.col("_e"), RAW8))

    def masked(cond: pl.Expr, col: str) -> pl.Expr:
        return pl.when(cond).then(pl.col(col))

    matched = conv.filter(pl.col("_po").is_not_null()).with_columns(
        # expected amount of the line at the PO price, 1e-12 currency (Int128)
        _e=pl.col("_q").cast(pl.Int128) * pl.col("_p"),
    )
    sums = matched.group_by("_po").agg(
        _shipped=masked(is_asn, "_q").sum(),
        _received=masked(is_rec, "_q").sum(),
        _invoiced=masked(is_inv, "_q").sum(),
        _billed=masked(is_inv & ~bad, "_amt").sum(),
        _asn_bad=masked(is_asn & bad, "_row").min(),
        _rec_bad=masked(is_rec & bad, "_row").min(),
        _inv_bad=masked(is_inv & bad, "_row").min(),
        _inv_dev=masked(deviates, "_row").min(),
        _inv_first=masked(is_inv, "_row").min(),
        _asn_first=masked(is_asn, "_row").min(),
        _rec_first=masked(is_rec, "_row").min(),
        _bad_amt=masked(is_inv & bad, "_amt").sum(),
        n_shipments=masked(is_asn, "_docid").drop_nulls().n_unique(),
        n_receipts=is_rec.sum(),
        n_invoices=masked(is_inv, "_docid").drop_nulls().n_unique(),
        _n_dup=masked((k == INVOICE) & (pl.col("_excl") == 1), "_docid").drop_nulls().n_unique(),
        _n_sus=masked((k == INVOICE) & (pl.col("_excl") == 2), "_docid").drop_nulls().n_unique(),
    )
    # Both aggregates and the few lines without a PO line in one pass over the long frame,
    # which is then freed.
    sums_df, per_doc_df, unmatched_df = pl.collect_all(
        [
            sums,
            _per_invoice(matched),
            conv.filter(pl.col("_po").is_null()).select("_kind", "_row", "_docid", "_amt"),
        ],
        engine=engine,
    )
    tick("sums")
    del conv, matched, sums
    per_doc = per_doc_df.lazy()
    del per_doc_df
    received_from: Literal["receipts", "asn"] = "receipts" if rec_lf is not None else "asn"

    # -- Document lines without a PO line get their keys back from their input rows: no PO
    # reference, or the PO number exists but only under other suppliers. Only the few PO
    # numbers they name are looked up (``po_numbers``: every supplier's PO numbers, when
    # ``po`` holds only some suppliers, as in partitioned runs).
    inputs = {ASN: asn_lf, INVOICE: inv_lf, **({RECEIPT: rec_lf} if rec_lf is not None else {})}
    found = pl.concat(
        [
            unmatched_df.lazy()
            .filter(pl.col("_kind") == kind)
            .join(
                _rows_of(src, unmatched_df.filter(pl.col("_kind") == kind)["_row"]).select(
                    pl.col("_row").cast(pl.UInt32), "supplier_id", "po_number"
                ),
                on="_row",
            )
            .sort("_row")
            for kind, src in inputs.items()
        ]
    ).collect(engine=engine)  # once: the PO numbers below and the codes read it
    wanted = found.select(pl.col("po_number").unique().implode())
    known = po_numbers if po_numbers is not None else po_lf.select("po_number")
    po_any = (
        known.filter(pl.col("po_number").is_in(wanted.to_series()[0].implode()))
        .unique()
        .with_columns(_any=pl.lit(True))
    )
    po_hdr = po_lf.select("supplier_id", "po_number").unique()
    unmatched = mat(
        found.lazy()
        .join(po_hdr.with_columns(_same=pl.lit(True)), on=["supplier_id", "po_number"], how="left")
        .join(po_any, on="po_number", how="left")
        .with_columns(
            pl.when(pl.col("_same").is_null() & pl.col("_any").fill_null(False))
            .then(pl.lit("SUPPLIER_MISMATCH"))
            .otherwise(pl.lit("NO_PO_REFERENCE"))
            .alias("code"),
        ),
        "unmatched",
    )
    del po_hdr, po_any, unmatched_df, found

    # -- PO lines with their sums and checks. The wide frame (every private column the
    # exception rows need) lives only until the public columns and the few rows with
    # exceptions are split off it.
    wide = _lines(po_lf, sums_df.lazy(), tol, tol_frame, receipts_given=rec_lf is not None).collect(
        engine=engine
    )
    del sums_df, po_lf
    line_exc_src = wide.filter(pl.col("_mask") > 0)
    line_rows = wide["_row"]
    if compact:
        # partitioned runs: the public columns are made once, in PO order, from these
        lines_df = wide.select(LINE_VALUES)
        del wide
    else:
        public = wide.lazy().pipe(public_lines, receipts_given=rec_lf is not None)
        del wide
        lines_df = public.collect(engine=engine)
        del public
    tick("lines")

    doc_exc = unmatched.select(
        "code",
        pl.col("_kind").replace_strict(LEVEL, return_dtype=pl.String).alias("level"),
        *(pl.lit(None, EXC_SCHEMA[c]).alias(c) for c in list(EXC_SCHEMA)[2:10]),
        pl.lit(None, pl.Int64).alias("variance_qty"),
        pl.col("_amt").alias("variance_amount"),
        pl.col("_amt").abs().alias("amount_at_risk"),
        pl.lit(None, pl.Int64).alias("tolerance_pct"),
        pl.lit(None, pl.Int64).alias("tolerance_abs"),
        pl.col("_kind").alias("_ev_kind"),
        pl.col("_row").alias("_ev_row"),
        *(pl.lit(None, pl.UInt32).alias(c) for c in ("_inv_row", "_asn_row", "_po_row")),
        pl.lit(None, pl.String).alias("related_invoice_number"),
        pl.lit(None, pl.UInt32).alias("_doc_row"),
        *(pl.lit(None, pl.String).alias(c) for c in ("po_source", "po_position")),
    )

    invoices = mat(_invoices(docs, per_doc, unmatched, tol, tol_frame, po_rows), "invoices")
    del docs, per_doc
    exc_rows = pl.concat(
        [
            _line_exceptions(line_exc_src.lazy(), tol, tol_frame),
            _invoice_exceptions(invoices),
            doc_exc,
        ],
        how="vertical",
    ).collect(engine=engine)
    exceptions = _attach_evidence(exc_rows, {**inputs, PO: po_in})
    exc_df = exceptions.sort(
        "supplier_id",
        "po_number",
        "line_number",
        "code",
        "invoice_number",
        "shipment_id",
        nulls_last=True,
    ).collect(engine=engine)
    tick("exceptions")
    # "first seen" order (joins on the streaming engine do not keep it)
    inv_df = invoices.collect().sort("_ord")
    return Plan(
        lines=lines_df,
        invoices=_public(inv_df),
        exceptions=exc_df,
        received_from=received_from,
        stages=timings,
        line_rows=line_rows,
        invoice_rows=inv_df["_first"],
        unconverted=unconverted,
    )


def warn_units(unconverted: int) -> None:
    """One warning for the document lines whose unit no factor converts, when the caller
    gave no ``conversions``: they are all UOM_MISMATCH, and the cause is one missing
    argument, not many supplier errors."""
    if unconverted:
        warnings.warn(
            f"{unconverted:,} document line(s) use a unit their PO line does not and no "
            "conversions= were given: they are reported as UOM_MISMATCH and left out of the "
            "sums. Pass conversions= (item pack sizes such as CS = 24 EA) to convert them.",
            ReconcileWarning,
            stacklevel=2,
        )


def _repeats(lf: pl.LazyFrame, col: str) -> bool:
    """Whether a u64 column of a materialised frame holds a value twice. A sort in numpy
    (one transient copy, returned to the system when freed) instead of a hash table per
    thread in polars' allocator, which keeps the pages for later."""
    values = np.sort(lf.select(col).collect()[col].to_numpy())
    return bool((values[1:] == values[:-1]).any())


def _rows_of(src: pl.LazyFrame, rows: pl.Series) -> pl.LazyFrame:
    """The input rows numbered ``rows`` (few): a filter, not a join against the whole input."""
    return src.filter(pl.col("_row").is_in(rows.cast(pl.UInt32).implode()))


def _public(df: pl.DataFrame) -> pl.DataFrame:
    return df.select(c for c in df.columns if not c.startswith("_"))


def _first_of(cases: list[tuple[pl.Expr, pl.Expr]], otherwise: pl.Expr) -> pl.Expr:
    """The value of the first case whose condition holds (a typed when/then chain)."""
    return pl.coalesce([pl.when(cond).then(value) for cond, value in cases] + [otherwise])


EXC_SCHEMA: Final = pl.Schema(
    {
        "code": pl.String(),
        "level": pl.String(),
        "supplier_id": pl.String(),
        "po_number": pl.String(),
        "line_number": pl.String(),
        "item_id": pl.String(),
        "invoice_number": pl.String(),
        "shipment_id": pl.String(),
        "source": pl.String(),
        "position": pl.String(),
        "variance_qty": OUT,
        "variance_amount": OUT,
        "amount_at_risk": OUT,
        "tolerance_pct": OUT,
        "tolerance_abs": OUT,
        "po_source": pl.String(),
        "po_position": pl.String(),
        "related_invoice_number": pl.String(),
    }
)
_RAW_EXC: Final = (
    "variance_qty",
    "variance_amount",
    "amount_at_risk",
    "tolerance_pct",
    "tolerance_abs",
)


def _attach_evidence(exc: pl.DataFrame, inputs: dict[int, pl.LazyFrame]) -> pl.LazyFrame:
    """Fill keys, document numbers, source and position of exception rows from the input rows
    that evidence them; columns already set are kept. Integer figures become decimals here.
    Only the evidencing rows are read from each input.

    Slots, in order: (``_ev_kind``, ``_ev_row``) the document that shows the exception (every
    key column); ``_doc_row`` the first line of an invoice-level row's invoice (source,
    position); ``_inv_row`` / ``_asn_row`` the first invoice / ASN line of a PO line
    (invoice_number / shipment_id); ``_po_row`` the PO line (po_source, po_position).
    """
    fill = list(EXC_SCHEMA)[2:10]
    ident = {c: c for c in fill}
    slots: list[tuple[int | None, str, dict[str, str]]] = [
        (None, "_ev_row", ident),
        (INVOICE, "_doc_row", {"source": "source", "position": "position"}),
        (INVOICE, "_inv_row", {"invoice_number": "invoice_number"}),
        (ASN, "_asn_row", {"shipment_id": "shipment_id"}),
        (PO, "_po_row", {"source": "po_source", "position": "po_position"}),
    ]
    out = exc.lazy()
    for fixed, row_col, cols in slots:
        for kind, src in inputs.items():
            if fixed is not None and kind != fixed:
                continue
            names = src.collect_schema().names()
            picked = exc if fixed is not None else exc.filter(pl.col("_ev_kind") == kind)
            rows = picked[row_col].drop_nulls()
            if rows.len() == 0:
                continue
            ev = _rows_of(src, rows).select(
                pl.col("_row").cast(pl.UInt32).alias(row_col),
                *(
                    (pl.col(c) if c in names else pl.lit(None, pl.String))
                    .cast(pl.String)
                    .alias(f"_e_{dest}")
                    for c, dest in cols.items()
                ),
            )
            on = [row_col]
            if fixed is None:
                ev = ev.with_columns(pl.lit(kind, pl.UInt8).alias("_ev_kind"))
                on = ["_ev_kind", row_col]
            out = (
                out.join(ev, on=on, how="left")
                .with_columns(pl.coalesce(d, f"_e_{d}").alias(d) for d in cols.values())
                .drop(f"_e_{d}" for d in cols.values())
            )
    return out.with_columns(dec4(pl.col(c)).alias(c) for c in _RAW_EXC).select(list(EXC_SCHEMA))


_CHECK_OF: Final = {
    "SHORT_SHIPPED": "short_ship",
    "OVER_SHIPPED": "over_ship",
    "OVER_INVOICED": "over_invoice",
    "OVER_ORDERED": "over_order",
    "PRICE_VARIANCE": "price",
}


def _lines(
    po_lf: pl.LazyFrame,
    sums: pl.LazyFrame,
    tol: Tolerances,
    tol_frame: pl.LazyFrame | None,
    *,
    receipts_given: bool,
) -> pl.LazyFrame:
    """One row per PO line; every figure is an Int64 count of 1e-4 until the final select."""

    def total(col: str) -> pl.Expr:
        return div_round(pl.col(col), RAW8 // RAW4).cast(pl.Int64).fill_null(0)

    keep = ["_po", "_row", *KEY, "item_id", "uom", "unit_price", "_o", "_p"]
    lf = po_lf.select(keep).join(sums, on="_po", how="left", maintain_order="left")
    if tol_frame is not None:
        lf = lf.join(tol_frame, on="supplier_id", how="left", maintain_order="left")
    counts = ("n_shipments", "n_receipts", "n_invoices", "_n_dup", "_n_sus")
    lf = lf.with_columns(
        _s=total("_shipped"),
        _r=total("_received" if receipts_given else "_shipped"),
        _i=total("_invoiced"),
        _b=pl.col("_billed").fill_null(0),
        # I x PO price from the unrounded invoiced quantity (1e-8 x 1e-4 -> 1e-4)
        _e=div_round(pl.col("_invoiced").fill_null(0).cast(pl.Int128) * pl.col("_p"), RAW8).cast(
            pl.Int64
        ),
        _r_bad=pl.col("_rec_bad" if receipts_given else "_asn_bad").is_not_null(),
        _i_bad=pl.col("_inv_bad").is_not_null(),
        **{c: pl.col(c).fill_null(0) for c in counts},
    )
    o, r, i = pl.col("_o"), pl.col("_r"), pl.col("_i")
    billed, expected = pl.col("_b"), pl.col("_e")
    r_ok, i_ok = ~pl.col("_r_bad"), ~pl.col("_i_bad")
    price_var = billed - expected

    def lim(check: str) -> tuple[pl.Expr, pl.Expr]:
        return tol.expr(f"{check}_pct"), tol.expr(f"{check}_abs")

    flag_exprs = {
        # A line touched by a duplicate invoice carries the code in its flags (the exception
        # row belongs to the invoice).
        "DUPLICATE_INVOICE": pl.col("_n_dup") > 0,
        "DUPLICATE_SUSPECT": pl.col("_n_sus") > 0,
        "UOM_MISMATCH": pl.any_horizontal(pl.col("_asn_bad", "_rec_bad", "_inv_bad").is_not_null()),
        "INVOICED_NOT_RECEIVED": r_ok & i_ok & (i > 0) & (r == 0),
        "OVER_INVOICED": r_ok & i_ok & (r > 0) & beyond(i - r, r, *lim("over_invoice")),
        "OVER_ORDERED": i_ok & beyond(i - o, o, *lim("over_order")),
        "PRICE_VARIANCE": i_ok
        & (i > 0)
        & pl.col("_p").is_not_null()
        & beyond(price_var.abs(), expected.abs(), *lim("price")),
        "NOT_SHIPPED": r_ok & (o > 0) & (r == 0),
        "SHORT_SHIPPED": r_ok & (r > 0) & beyond(o - r, o, *lim("short_ship")),
        "OVER_SHIPPED": r_ok & beyond(r - o, o, *lim("over_ship")),
        "NOT_INVOICED": r_ok & i_ok & (r > 0) & (i == 0),
    }
    lf = lf.with_columns(**{f"_f_{c}": e.fill_null(False) for c, e in flag_exprs.items()})
    lf = lf.with_columns(_mask=_mask({c: pl.col(f"_f_{c}") for c in flag_exprs})).join(
        _BY_MASK.lazy(), on="_mask", how="left", maintain_order="left"
    )
    varies = (r != o) | (i != r) | (price_var != 0)
    status = pl.coalesce(
        pl.col("_top"),
        pl.when(varies).then(pl.lit("MATCHED_WITHIN_TOLERANCE")).otherwise(pl.lit("MATCHED")),
    ).cast(STATUS)
    p = pl.col("_p")
    # Money exposed on the line: the largest at-risk amount of its line exceptions. The
    # quantity codes share three products; each is computed once.
    lf = lf.with_columns(
        _v_ro=div_round((r - o).abs().cast(pl.Int128) * p, RAW4).cast(pl.Int64),
        _v_ir=div_round((i - r).abs().cast(pl.Int128) * p, RAW4).cast(pl.Int64),
        _v_io=div_round((i - o).abs().cast(pl.Int128) * p, RAW4).cast(pl.Int64),
    )
    risk_of = {
        "NOT_SHIPPED": pl.col("_v_ro"),
        "SHORT_SHIPPED": pl.col("_v_ro"),
        "OVER_SHIPPED": pl.col("_v_ro"),
        "OVER_INVOICED": pl.col("_v_ir"),
        "NOT_INVOICED": pl.col("_v_ir"),
        "OVER_ORDERED": pl.col("_v_io"),
        "INVOICED_NOT_RECEIVED": billed.abs(),
        "PRICE_VARIANCE": price_var.abs(),
        "UOM_MISMATCH": pl.col("_bad_amt").fill_null(0).abs(),
    }
    at_risk = pl.max_horizontal(*(pl.when(pl.col(f"_f_{c}")).then(risk_of[c]) for c in LINE_CODES))
    return lf.with_columns(
        _iup=pl.when(i > 0).then(div_round(billed.cast(pl.Int128) * RAW4, i).cast(pl.Int64)),
        status=status,
        # Money exposed on the line: the largest at-risk amount of its line exceptions.
        _risk=at_risk.cast(pl.Int64).fill_null(0),
    ).select(
        *KEY,
        "item_id",
        "uom",
        "unit_price",
        "_o",
        *LINE_VALUES,
        "_p",
        "_asn_bad",
        "_rec_bad",
        "_inv_bad",
        "_inv_dev",
        "_inv_first",
        "_asn_first",
        "_rec_first",
        "_bad_amt",
    )


#: What a PO line's public columns need besides the PO line itself (keys, unit, ``_o``).
LINE_VALUES: Final = (
    "_row",
    "_s",
    "_r",
    "_i",
    "_b",
    "_e",
    "_iup",
    "_risk",
    "n_shipments",
    "n_receipts",
    "n_invoices",
    "status",
    "_mask",
)


def public_lines(lf: pl.LazyFrame, *, receipts_given: bool) -> pl.LazyFrame:
    """The public ``lines`` columns from the PO line (keys, ``uom``, ``unit_price``, ``_o``)
    and its :data:`LINE_VALUES` (integer counts of 1e-4 become decimals here)."""
    o, r, i, billed = pl.col("_o"), pl.col("_r"), pl.col("_i"), pl.col("_b")
    return lf.join(
        _BY_MASK.lazy().select("_mask", "flags"), on="_mask", how="left", maintain_order="left"
    ).select(
        "supplier_id",
        "po_number",
        "line_number",
        "item_id",
        "uom",
        dec4(o).alias("qty_ordered"),
        dec4(pl.col("_s")).alias("qty_shipped"),
        dec4(r).alias("qty_received"),
        dec4(i).alias("qty_invoiced"),
        pl.lit("receipts" if receipts_given else "asn").alias("received_from"),
        "unit_price",
        dec4(pl.col("_iup")).alias("invoice_unit_price"),
        dec4(billed).alias("invoiced_amount"),
        dec4(r - o).alias("ship_variance"),
        dec4(i - r).alias("bill_variance"),
        dec4(i - o).alias("order_variance"),
        dec4(billed - pl.col("_e")).alias("price_variance"),
        dec4(pl.col("_risk")).alias("amount_at_risk"),
        "n_shipments",
        "n_receipts",
        "n_invoices",
        "status",
        "flags",
    )


def _variance(code: str, o: pl.Expr, r: pl.Expr, i: pl.Expr) -> pl.Expr:
    """The quantity variance an exception is about (PO unit), signed."""
    return {
        "NOT_SHIPPED": r - o,
        "SHORT_SHIPPED": r - o,
        "OVER_SHIPPED": r - o,
        "INVOICED_NOT_RECEIVED": i - r,
        "OVER_INVOICED": i - r,
        "OVER_ORDERED": i - o,
        "NOT_INVOICED": i - r,
        "PRICE_VARIANCE": pl.lit(None, pl.Int64),
        "UOM_MISMATCH": pl.lit(None, pl.Int64),
    }[code]


def _at_risk(
    code: str, o: pl.Expr, r: pl.Expr, i: pl.Expr, billed: pl.Expr, expected: pl.Expr, p: pl.Expr
) -> pl.Expr:
    """Money at stake for a line exception (>= 0, count of 1e-4): what AP could pay for
    nothing, or the value of goods short / over / unbilled at the PO price."""
    if code == "PRICE_VARIANCE":
        return (billed - expected).abs()
    if code == "INVOICED_NOT_RECEIVED":
        return billed.abs()
    if code == "UOM_MISMATCH":
        # What the unconvertible invoice lines bill (nothing when only an ASN/receipt is off).
        return pl.col("_bad_amt").fill_null(0).abs()
    return div_round(_variance(code, o, r, i).abs().cast(pl.Int128) * p, RAW4).cast(pl.Int64)


def _line_exceptions(
    lines: pl.LazyFrame, tol: Tolerances, tol_frame: pl.LazyFrame | None
) -> pl.LazyFrame:
    o, r, i = pl.col("_o"), pl.col("_r"), pl.col("_i")
    billed, expected, p = pl.col("_b"), pl.col("_e"), pl.col("_p")
    code = pl.col("code")

    def by_code(values: dict[str, pl.Expr]) -> pl.Expr:
        return _first_of(
            [(code == c, x.cast(pl.Int64)) for c, x in values.items()], pl.lit(None, pl.Int64)
        )

    signed = {c: div_round(_variance(c, o, r, i).cast(pl.Int128) * p, RAW4) for c in LINE_CODES}
    signed["PRICE_VARIANCE"] = billed - expected
    signed["INVOICED_NOT_RECEIVED"] = billed
    signed["UOM_MISMATCH"] = pl.col("_bad_amt")
    is_uom = code == "UOM_MISMATCH"
    ev_kind = _first_of(
        [
            (is_uom & pl.col("_inv_bad").is_not_null(), pl.lit(INVOICE, pl.UInt8)),
            (is_uom & pl.col("_asn_bad").is_not_null(), pl.lit(ASN, pl.UInt8)),
            (is_uom & pl.col("_rec_bad").is_not_null(), pl.lit(RECEIPT, pl.UInt8)),
            (code == "PRICE_VARIANCE", pl.lit(INVOICE, pl.UInt8)),
        ],
        pl.lit(None, pl.UInt8),
    )
    ev_row = _first_of(
        [
            (is_uom, pl.coalesce("_inv_bad", "_asn_bad", "_rec_bad")),
            (code == "PRICE_VARIANCE", pl.coalesce("_inv_dev", "_inv_first")),
        ],
        pl.lit(None, pl.UInt32),
    )
    # Every other line exception names a document too: the receiving side (receipt, else
    # ASN) for the shipping codes and NOT_INVOICED, the invoice for the billing codes; the
    # other side next, and the PO line itself when nothing was shipped or billed.
    shipping = code.is_in(["NOT_SHIPPED", "SHORT_SHIPPED", "OVER_SHIPPED", "NOT_INVOICED"])
    receiving = [(RECEIPT, "_rec_first"), (ASN, "_asn_first")]
    billing = [(INVOICE, "_inv_first")]

    def chain(order: list[tuple[int, str]]) -> tuple[pl.Expr, pl.Expr]:
        kind = _first_of(
            [(pl.col(c).is_not_null(), pl.lit(k, pl.UInt8)) for k, c in order],
            pl.lit(PO, pl.UInt8),
        )
        row = pl.coalesce([pl.col(c) for _, c in order] + [pl.col("_row")])
        return kind, row.cast(pl.UInt32)

    ship_kind, ship_row = chain(receiving + billing)
    bill_kind, bill_row = chain(billing + receiving)
    ev_kind = pl.coalesce(ev_kind, pl.when(shipping).then(ship_kind).otherwise(bill_kind))
    ev_row = pl.coalesce(
        ev_row.cast(pl.UInt32), pl.when(shipping).then(ship_row).otherwise(bill_row)
    )
    return (
        lines.filter(pl.col("_mask") > 0)
        .join(_CODES.lazy(), on="_mask", how="inner")
        .pipe(
            lambda lf: lf if tol_frame is None else lf.join(tol_frame, on="supplier_id", how="left")
        )
    ).select(
        "code",
        pl.lit("line").alias("level"),
        "supplier_id",
        "po_number",
        "line_number",
        "item_id",
        *(pl.lit(None, pl.String).alias(c) for c in ("invoice_number", "shipment_id")),
        *(pl.lit(None, pl.String).alias(c) for c in ("source", "position")),
        by_code({c: _variance(c, o, r, i) for c in LINE_CODES}).alias("variance_qty"),
        by_code(signed).alias("variance_amount"),
        by_code({c: _at_risk(c, o, r, i, billed, expected, p) for c in LINE_CODES}).alias(
            "amount_at_risk"
        ),
        by_code({c: tol.expr(f"{k}_pct") for c, k in _CHECK_OF.items()}).alias("tolerance_pct"),
        by_code({c: tol.expr(f"{k}_abs") for c, k in _CHECK_OF.items()}).alias("tolerance_abs"),
        ev_kind.alias("_ev_kind"),
        ev_row.cast(pl.UInt32).alias("_ev_row"),
        pl.col("_inv_first").cast(pl.UInt32).alias("_inv_row"),
        pl.col("_asn_first").cast(pl.UInt32).alias("_asn_row"),
        pl.col("_row").cast(pl.UInt32).alias("_po_row"),
        pl.lit(None, pl.String).alias("related_invoice_number"),
        pl.lit(None, pl.UInt32).alias("_doc_row"),
        *(pl.lit(None, pl.String).alias(c) for c in ("po_source", "po_position")),
    )


def _per_invoice(conv: pl.LazyFrame) -> pl.LazyFrame:
    """Per invoice document: billed amount of its convertible lines, the same at PO prices,
    count of unconvertible lines."""
    return (
        conv.filter(pl.col("_kind") == INVOICE)
        .group_by("_docid")
        .agg(
            _matched=pl.col("_amt").filter(~pl.col("_bad")).sum(),
            _expected=pl.col("_e").sum(),
            _n_bad=pl.col("_bad").sum(),
            _po_first=pl.col("_po").sort_by("_row").first(),
        )
        .with_columns(_expected=div_round(pl.col("_expected"), RAW8).cast(pl.Int64))
    )


def _invoices(
    docs: pl.LazyFrame,
    per_doc: pl.LazyFrame,
    unmatched: pl.LazyFrame,
    tol: Tolerances,
    tol_frame: pl.LazyFrame | None,
    po_rows: pl.LazyFrame,
) -> pl.LazyFrame:
    per_doc_un = (
        unmatched.filter(pl.col("_kind") == INVOICE)
        .group_by("_docid")
        .agg(
            _n_unmatched=(pl.col("code") == "NO_PO_REFERENCE").sum(),
            _n_mismatch=(pl.col("code") == "SUPPLIER_MISMATCH").sum(),
        )
    )
    lf = (
        docs.join(per_doc.rename({"_docid": "_doc"}), on="_doc", how="left", maintain_order="left")
        .join(per_doc_un.rename({"_docid": "_doc"}), on="_doc", how="left", maintain_order="left")
        .join(po_rows, on="_po_first", how="left", maintain_order="left")
        .with_columns(pl.col("_n_bad", "_n_unmatched", "_n_mismatch").fill_null(0))
    )
    if tol_frame is not None:
        lf = lf.join(tol_frame, on="supplier_id", how="left", maintain_order="left")
    variance = pl.col("_matched") - pl.col("_expected")
    price_off = beyond(
        variance.abs(),
        pl.col("_expected").abs(),
        tol.expr("price_pct"),
        tol.expr("price_abs"),
    )
    flag_exprs = {
        "DUPLICATE_INVOICE": pl.col("_dup"),
        "DUPLICATE_SUSPECT": pl.col("_suspect"),
        "NO_PO_REFERENCE": pl.col("_n_unmatched") > 0,
        "SUPPLIER_MISMATCH": pl.col("_n_mismatch") > 0,
        "UOM_MISMATCH": pl.col("_n_bad") > 0,
        "PRICE_VARIANCE": price_off,
    }
    lf = lf.with_columns(
        _var=variance,
        **{f"_f_{c}": e.fill_null(False) for c, e in flag_exprs.items()},
    )
    lf = lf.with_columns(_mask=_mask({c: pl.col(f"_f_{c}") for c in flag_exprs})).join(
        _BY_MASK.lazy(), on="_mask", how="left", maintain_order="left"
    )
    status = pl.coalesce(
        pl.col("_top"),
        pl.when(pl.col("_var").fill_null(0) != 0)
        .then(pl.lit("MATCHED_WITHIN_TOLERANCE"))
        .otherwise(pl.lit("MATCHED")),
    ).cast(STATUS)
    cols = lf.collect_schema().names()
    return lf.select(
        "supplier_id",
        "invoice_number",
        "invoice_number_normalized",
        "invoice_date",
        *(c for c in ("source", "currency") if c in cols),
        "po_number",
        "n_lines",
        dec4(pl.col("total_amount")).alias("total_amount"),
        dec4(pl.col("_expected")).alias("expected_amount"),
        dec4(pl.col("_var")).alias("amount_variance"),
        "duplicate_of",
        "suspect_of",
        "flags",
        status.alias("status"),
        pl.col("total_amount").alias("_total"),
        "_suspect_var",
        pl.col("_dup").alias("_is_dup"),
        pl.col("_suspect").alias("_is_suspect"),
        tol.expr("duplicate_amount_pct").alias("_tdp"),
        tol.expr("duplicate_amount_abs").alias("_tda"),
        "_first",
        "_ord",
        "_po_row",
    )


def _invoice_exceptions(invoices: pl.LazyFrame) -> pl.LazyFrame:
    names = invoices.collect_schema().names()
    src = pl.col("source") if "source" in names else pl.lit(None, pl.String)
    dup = pl.col("_is_dup")
    return invoices.filter(dup | pl.col("_is_suspect")).select(
        pl.when(dup)
        .then(pl.lit("DUPLICATE_INVOICE"))
        .otherwise(pl.lit("DUPLICATE_SUSPECT"))
        .alias("code"),
        pl.lit("invoice").alias("level"),
        "supplier_id",
        # The PO of the invoice's first line (an invoice may bill several POs).
        "po_number",
        pl.lit(None, pl.String).alias("line_number"),
        pl.lit(None, pl.String).alias("item_id"),
        "invoice_number",
        pl.lit(None, pl.String).alias("shipment_id"),
        src.alias("source"),
        pl.lit(None, pl.String).alias("position"),
        pl.lit(None, pl.Int64).alias("variance_qty"),
        pl.when(dup)
        .then(pl.lit(0, pl.Int64))
        .otherwise(pl.col("_suspect_var"))
        .alias("variance_amount"),
        pl.col("_total").abs().alias("amount_at_risk"),
        pl.when(dup).then(pl.lit(None, pl.Int64)).otherwise(pl.col("_tdp")).alias("tolerance_pct"),
        pl.when(dup).then(pl.lit(None, pl.Int64)).otherwise(pl.col("_tda")).alias("tolerance_abs"),
        pl.lit(None, pl.UInt8).alias("_ev_kind"),
        pl.lit(None, pl.UInt32).alias("_ev_row"),
        pl.lit(None, pl.UInt32).alias("_inv_row"),
        pl.lit(None, pl.UInt32).alias("_asn_row"),
        pl.col("_po_row").cast(pl.UInt32),
        # the other invoice of the pair: the original of a copy, the look-alike of a suspect
        pl.coalesce("duplicate_of", "suspect_of").alias("related_invoice_number"),
        # source and position: the invoice's first line
        pl.col("_first").cast(pl.UInt32).alias("_doc_row"),
        *(pl.lit(None, pl.String).alias(c) for c in ("po_source", "po_position")),
    )
