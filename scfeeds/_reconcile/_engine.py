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

import warnings
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import polars as pl

from scfeeds._reconcile._num import RAW4, RAW8, dec4, div_round
from scfeeds._reconcile._tolerances import Tolerances, beyond
from scfeeds.exceptions import ConfigurationError, ReconcileWarning
from scfeeds.schemas import COLUMNS, EXCEPTION_KEY, SPECS, TableName

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
#: The tables the match reads, in the order of its inputs (``Frames``).
MATCHED: Final[tuple[TableName, ...]] = ("po_lines", "asn_lines", "invoice_lines", "receipts")
REQUIRED: Final[dict[TableName, tuple[str, ...]]] = {t: SPECS[t].match for t in MATCHED}

Frame = pl.DataFrame | pl.LazyFrame
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


@dataclass(frozen=True, slots=True, weakref_slot=True)
class Plan:
    """The outputs of one reconcile run and the seconds each stage took.

    ``lines`` is in memory, except for a partitioned run: there it is a plan over the PO
    input joined with the few integers the parts kept per PO line (:data:`LINE_VALUES`), so
    that the public columns are made only when, and only those, asked for. A partitioned run
    on the streaming engine keeps the parts' results in Parquet files instead (``invoices``
    and ``exceptions`` are then scans of them too), removed with the plan.
    """

    lines: pl.DataFrame | pl.LazyFrame
    invoices: pl.DataFrame | pl.LazyFrame
    exceptions: pl.DataFrame | pl.LazyFrame
    received_from: Literal["receipts", "asn"]
    stages: dict[str, float]
    #: The first input row of each invoice (aligned with ``invoices``): how partitioned runs
    #: put invoices back in "first seen" order.
    invoice_rows: pl.Series | None = None
    #: Document lines whose unit could not be converted while no ``conversions`` were given
    #: (see :func:`warn_units`).
    unconverted: int = 0


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
        **EXCEPTION_KEY,
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
    lf = _line_totals(po_lf, sums, tol_frame, receipts_given=receipts_given)
    flags = _line_flags(tol)
    lf = lf.with_columns(**{f"_f_{c}": e.fill_null(False) for c, e in flags.items()})
    lf = lf.with_columns(_mask=_mask({c: pl.col(f"_f_{c}") for c in flags})).join(
        _BY_MASK.lazy(), on="_mask", how="left", maintain_order="left"
    )
    return _line_status_and_risk(lf).select(
        *KEY,
        "item_id",
        "uom",
        "unit_price",
        "_o",
        *LINE_VALUES,
        "_p",
        *_LINE_EVIDENCE,
        "_bad_amt",
    )


#: Per PO line, the input row of the first document line of each kind (and of the first
#: unconvertible one, the first billed off price): the evidence of its exceptions.
_LINE_EVIDENCE: Final = (
    "_asn_bad",
    "_rec_bad",
    "_inv_bad",
    "_inv_dev",
    "_inv_first",
    "_asn_first",
    "_rec_first",
)


def _line_totals(
    po_lf: pl.LazyFrame,
    sums: pl.LazyFrame,
    tol_frame: pl.LazyFrame | None,
    *,
    receipts_given: bool,
) -> pl.LazyFrame:
    """PO lines with their sums in the PO unit: ``_s`` shipped, ``_r`` received, ``_i``
    invoiced, ``_b`` billed, ``_e`` I x PO price; ``_r_bad`` / ``_i_bad``: a quantity of that
    side could not be converted."""

    def total(col: str) -> pl.Expr:
        return div_round(pl.col(col), RAW8 // RAW4).cast(pl.Int64).fill_null(0)

    keep = ["_po", "_row", *KEY, "item_id", "uom", "unit_price", "_o", "_p"]
    lf = po_lf.select(keep).join(sums, on="_po", how="left", maintain_order="left")
    if tol_frame is not None:
        lf = lf.join(tol_frame, on="supplier_id", how="left", maintain_order="left")
    counts = ("n_shipments", "n_receipts", "n_invoices", "_n_dup", "_n_sus")
    return lf.with_columns(
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


def _line_flags(tol: Tolerances) -> dict[str, pl.Expr]:
    """The condition of each code a PO line can carry, on :func:`_line_totals`' columns."""
    o, r, i = pl.col("_o"), pl.col("_r"), pl.col("_i")
    r_ok, i_ok = ~pl.col("_r_bad"), ~pl.col("_i_bad")
    price_var = pl.col("_b") - pl.col("_e")

    def lim(check: str) -> tuple[pl.Expr, pl.Expr]:
        return tol.expr(f"{check}_pct"), tol.expr(f"{check}_abs")

    return {
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
        & beyond(price_var.abs(), pl.col("_e").abs(), *lim("price")),
        "NOT_SHIPPED": r_ok & (o > 0) & (r == 0),
        "SHORT_SHIPPED": r_ok & (r > 0) & beyond(o - r, o, *lim("short_ship")),
        "OVER_SHIPPED": r_ok & beyond(r - o, o, *lim("over_ship")),
        "NOT_INVOICED": r_ok & i_ok & (r > 0) & (i == 0),
    }


def _line_status_and_risk(lf: pl.LazyFrame) -> pl.LazyFrame:
    """``status`` (the first flag, else matched within tolerance or matched), ``_risk`` (the
    largest at-risk amount of the line's exceptions) and ``_iup`` (invoiced unit price)."""
    o, r, i, p = pl.col("_o"), pl.col("_r"), pl.col("_i"), pl.col("_p")
    billed, price_var = pl.col("_b"), pl.col("_b") - pl.col("_e")
    varies = (r != o) | (i != r) | (price_var != 0)
    status = pl.coalesce(
        pl.col("_top"),
        pl.when(varies).then(pl.lit("MATCHED_WITHIN_TOLERANCE")).otherwise(pl.lit("MATCHED")),
    ).cast(STATUS)
    # The quantity codes share three products; each is computed once.
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


def _line_evidence(code: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """The document (kind, input row) that shows a line exception of ``code``: the first
    unconvertible line (``UOM_MISMATCH``), the first invoice line billed off price
    (``PRICE_VARIANCE``), else the first line of the side the code is about (below)."""
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
    return ev_kind, ev_row


def _line_exceptions(
    lines: pl.LazyFrame, tol: Tolerances, tol_frame: pl.LazyFrame | None
) -> pl.LazyFrame:
    """One exception row per code of each flagged PO line (figures raw4 until the evidence)."""
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
    ev_kind, ev_row = _line_evidence(code)
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
