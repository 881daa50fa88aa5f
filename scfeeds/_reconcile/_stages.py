"""The match as named stages over a small state object (see :mod:`._engine` for the plan's
shape and why it is fast).

Each stage takes the :class:`Run` (engine, tolerances, clock) and the frames it needs and
returns new frames; :func:`build` chains them. A stage that *materialises* its output collects
it once with the run's engine, so that an intermediate several later stages read is computed
exactly once, and frees what it no longer needs by returning (no intermediate outlives the
stage that last reads it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Final, Literal, NamedTuple

import polars as pl

from scfeeds._reconcile._engine import (
    ASN,
    EXC_SCHEMA,
    INVOICE,
    KEY,
    LEVEL,
    LINE_VALUES,
    PO,
    RECEIPT,
    Engine,
    Frame,
    Plan,
    _attach_evidence,
    _invoice_exceptions,
    _invoices,
    _line_exceptions,
    _lines,
    _per_invoice,
    _prep,
    _public,
    _repeats,
    _rows_of,
    public_lines,
)
from scfeeds._reconcile._invoices import mark_duplicates
from scfeeds._reconcile._num import RAW4, RAW8, div_round, raw4
from scfeeds._reconcile._tolerances import Tolerances
from scfeeds._reconcile._uom import factor_table, normalize_uom

#: The match key of a document line: supplier, PO, key kind (0: line number, 1: item id), key.
MKEY: Final = ("supplier_id", "po_number", "_mt", "_mk")


@dataclass(frozen=True, slots=True)
class Run:
    """What every stage shares: the engine that collects its plans, the tolerances, and the
    seconds each stage took (``timings``, filled as the stages run)."""

    engine: Engine
    tol: Tolerances
    tol_frame: pl.LazyFrame | None = None
    timings: dict[str, float] = field(default_factory=dict)
    _clock: list[float] = field(default_factory=lambda: [time.perf_counter()])

    @classmethod
    def of(cls, tol: Tolerances, engine: Engine = "auto") -> Run:
        return cls(engine=engine, tol=tol, tol_frame=tol.frame())

    def tick(self, stage: str) -> None:
        """Charge the time since the last tick to ``stage``."""
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - self._clock[0]
        self._clock[0] = now

    def mat(self, lf: pl.LazyFrame, stage: str) -> pl.LazyFrame:
        """``lf`` computed now (once), as a LazyFrame over the result."""
        out = lf.collect(engine=self.engine).lazy()
        self.tick(stage)
        return out


@dataclass(frozen=True, slots=True)
class Inputs:
    """The prepared inputs (see :func:`prepare`): canonical columns, input row in ``_row``."""

    po: pl.LazyFrame
    asn: pl.LazyFrame
    invoice: pl.LazyFrame
    receipts: pl.LazyFrame | None

    @property
    def documents(self) -> dict[int, pl.LazyFrame]:
        """The document inputs by kind (ASN, invoice, and receipts when given)."""
        docs = {ASN: self.asn, INVOICE: self.invoice}
        if self.receipts is not None:
            docs[RECEIPT] = self.receipts
        return docs

    @property
    def received_from(self) -> Literal["receipts", "asn"]:
        return "receipts" if self.receipts is not None else "asn"


def prepare(
    po: Frame,
    asn: Frame,
    invoice: Frame,
    receipts: Frame | None,
    *,
    where: pl.Expr | None = None,
    numbered: bool = False,
) -> Inputs:
    """Canonical, numbered inputs; ``where`` filters them after numbering (row numbers, the
    evidence and "first seen" order, stay those of the whole input)."""
    po_lf = _prep(po, "po_lines", "po", numbered=numbered)
    asn_lf = _prep(asn, "asn_lines", "asn", numbered=numbered)
    inv_lf = _prep(invoice, "invoice_lines", "invoice", numbered=numbered)
    rec_lf = None
    if receipts is not None:
        rec_lf = _prep(receipts, "receipts", "receipts", numbered=numbered)
    if numbered:
        po_lf = po_lf.sort("_row")
    if where is not None:
        po_lf, asn_lf, inv_lf = (lf.filter(where) for lf in (po_lf, asn_lf, inv_lf))
        rec_lf = rec_lf.filter(where) if rec_lf is not None else None
    return Inputs(po=po_lf, asn=asn_lf, invoice=inv_lf, receipts=rec_lf)


# -- keys ---------------------------------------------------------------------------------


def po_lines(run: Run, po: pl.LazyFrame) -> pl.LazyFrame:
    """PO lines, first occurrence of each key (materialised): ``_po`` the dense line id,
    ``_o`` / ``_p`` ordered quantity and price as raw4 integers.

    Keys are compared through a 64-bit hash; only when a hash repeats (true repeats, or a
    collision) are rows resolved on the strings themselves.
    """
    lf = run.mat(
        po.select("_row", *KEY, "item_id", "uom", "unit_price", "qty_ordered").with_columns(
            _h=pl.struct(*KEY).hash()
        ),
        "po lines",
    )
    if _repeats(lf, "_h"):
        lf = lf.filter(pl.struct(*KEY).is_first_distinct())
    return run.mat(
        lf.drop("_h")
        .with_row_index("_po")
        .with_columns(_o=raw4(pl.col("qty_ordered")).fill_null(0), _p=raw4(pl.col("unit_price")))
        .drop("qty_ordered"),
        "po lines",
    )


class Lookup(NamedTuple):
    """PO line id ``_po`` by match key: hashed (``_h``, ``_h2``) or, when ``exact``, on the
    key strings themselves (:data:`MKEY`)."""

    frame: pl.LazyFrame
    exact: bool


def _hashes() -> tuple[pl.Expr, pl.Expr]:
    # The match key travels as a 64-bit hash: the join runs on one u64 column (3x faster
    # than on the strings). A second, independently seeded hash of the PO number must agree
    # too, so a false match needs two 64-bit collisions at once.
    return pl.struct(*MKEY).hash(seed=0).alias("_h"), pl.col("po_number").hash(seed=17).alias("_h2")


def key_lookup(run: Run, lines: pl.LazyFrame, *, exact: bool | None = None) -> Lookup:
    """The PO lookup of :func:`match_keys` (materialised). Key kind 0 is the line number, kind
    1 the item id, which maps to the lowest line of that item (the fallback for documents
    without a line number). ``exact``: join on the strings (default: only when two keys
    share a 64-bit hash)."""
    by_line = lines.select(
        "supplier_id",
        "po_number",
        pl.lit(0, pl.UInt8).alias("_mt"),
        pl.col("line_number").alias("_mk"),
        "_po",
    )
    # rows are in `_po` order, so the first of an item is its lowest line
    by_item = (
        lines.filter(pl.col("item_id").is_not_null())
        .unique(subset=["supplier_id", "po_number", "item_id"], keep="first", maintain_order=True)
        .select(
            "supplier_id",
            "po_number",
            pl.lit(1, pl.UInt8).alias("_mt"),
            pl.col("item_id").alias("_mk"),
            "_po",
        )
    )
    keys = pl.concat([by_line, by_item])
    if not exact:
        hashed = run.mat(keys.select(*_hashes(), "_po"), "lookup")
        if exact is False or not _repeats(hashed, "_h"):
            return Lookup(hashed, exact=False)
    return Lookup(run.mat(keys, "lookup"), exact=True)


def match_keys(long: pl.LazyFrame, lookup: Lookup) -> pl.LazyFrame:
    """Document lines (with :data:`MKEY` columns) with their PO line id ``_po`` (null: none)."""
    if lookup.exact:
        return long.join(lookup.frame, on=list(MKEY), how="left")
    return (
        long.with_columns(*_hashes())
        .join(lookup.frame, on="_h", how="left", suffix="_l")
        .with_columns(_po=pl.when(pl.col("_h2") == pl.col("_h2_l")).then(pl.col("_po")))
    )


# -- invoice documents ----------------------------------------------------------------------


class Invoices(NamedTuple):
    """Invoice lines with their document id ``_docid`` and raw4 amount ``_amt``; one row per
    invoice document with its duplicate marks; the ids of duplicates and suspects."""

    lines: pl.LazyFrame
    docs: pl.LazyFrame
    excluded: pl.LazyFrame


def invoice_documents(run: Run, invoice: pl.LazyFrame) -> Invoices:
    """Invoice documents in "first seen" order and their duplicate status (materialised:
    one row per invoice, small)."""
    names = invoice.collect_schema().names()
    has_source = "source" in names
    doc_cols = ["supplier_id", "invoice_number", *(["source"] if has_source else [])]
    amount = pl.coalesce(
        raw4(pl.col("line_amount")),
        div_round(raw4(pl.col("qty_invoiced")).cast(pl.Int128) * raw4(pl.col("unit_price")), RAW4),
    ).cast(pl.Int64)
    # A 64-bit hash of the document key stands in for the key in joins and counts.
    lines = invoice.with_columns(_docid=pl.struct(doc_cols).hash(), _amt=amount)
    docs = lines.group_by("_docid").agg(
        *(pl.col(c).first() for c in doc_cols),
        pl.col("invoice_date").min(),
        pl.col("po_number").first(),
        *(pl.col(c).first() for c in ("currency",) if c in names),
        total_amount=pl.col("_amt").sum(),
        n_lines=pl.len(),
        _first=pl.col("_row").min(),
    )
    order = ["invoice_date", *(["source"] if has_source else []), "_first"]
    docs = run.mat(
        docs.sort(order, nulls_last=True).with_row_index("_ord").rename({"_docid": "_doc"}),
        "invoice documents",
    )
    docs = run.mat(mark_duplicates(docs, run.tol, run.tol_frame, run.engine), "duplicates")
    excluded = docs.filter(pl.col("_dup") | pl.col("_suspect")).select(
        pl.col("_doc").alias("_docid"),
        pl.when(pl.col("_dup"))
        .then(pl.lit(1, pl.UInt8))
        .otherwise(pl.lit(2, pl.UInt8))
        .alias("_excl"),
    )
    return Invoices(lines, docs, excluded)


# -- quantities ---------------------------------------------------------------------------


def _narrow(lf: pl.LazyFrame, kind: int, qty: str, docid: pl.Expr, amt: pl.Expr) -> pl.LazyFrame:
    """Document lines as long-frame rows: no descriptive strings besides the match key."""
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


def document_lines(inputs: Inputs, invoices: Invoices) -> pl.LazyFrame:
    """Every document line stacked in one narrow long frame; ``_excl`` marks the lines of
    duplicate (1) and suspect (2) invoices."""
    no_amt, kept = pl.lit(None, pl.Int64), pl.lit(0, pl.UInt8).alias("_excl")
    shipments = pl.struct("supplier_id", "shipment_id").hash()
    parts = [_narrow(inputs.asn, ASN, "qty_shipped", shipments, no_amt).with_columns(kept)]
    if inputs.receipts is not None:
        rec = _narrow(inputs.receipts, RECEIPT, "qty_received", pl.lit(None, pl.UInt64), no_amt)
        parts.append(rec.with_columns(kept))
    parts.append(
        _narrow(invoices.lines, INVOICE, "qty_invoiced", pl.col("_docid"), pl.col("_amt"))
        .join(invoices.excluded, on="_docid", how="left")
        .with_columns(pl.col("_excl").fill_null(0))
    )
    return pl.concat(parts, how="vertical")


def _same_unit(u: pl.Expr, pu: pl.Expr) -> pl.Expr:
    return u.is_null() | pu.is_null() | (u == pu)


def convert_quantities(
    run: Run, matched: pl.LazyFrame, lines: pl.LazyFrame, factors: pl.LazyFrame
) -> pl.LazyFrame:
    """Document quantities in the PO line's unit as raw8 ``_q`` (materialised; only the
    integer columns the sums need). ``_bad``: a quantity no factor converts.

    Only rows whose unit differs from the PO unit need a factor. Units compare as given first
    (canonical feeds agree on case); only rows that differ are normalised (trimmed, upper
    case) and looked up: the factor joins' keys are null elsewhere, and a null key matches
    nothing.
    """
    po_attr = lines.select("_po", pl.col("item_id").alias("_pi"), pl.col("uom").alias("_pu"), "_p")
    specific = factors.filter(pl.col("item_id").is_not_null()).rename({"item_id": "_pi"})
    generic = factors.filter(pl.col("item_id").is_null()).drop("item_id")
    need = ~_same_unit(pl.col("uom"), pl.col("_pu"))
    u, pu = normalize_uom(pl.col("uom")), normalize_uom(pl.col("_pu"))
    factor = div_round(
        pl.col("_qty").cast(pl.Int128) * (RAW8 // RAW4) * pl.coalesce("_one", "_num", "_num_g"),
        pl.coalesce("_one", "_den", "_den_g").cast(pl.Int128),
    ).cast(pl.Int64)
    return run.mat(
        matched.select("_kind", "_row", "_docid", "_excl", "uom", "_qty", "_amt", "_po")
        .join(po_attr, on="_po", how="left")
        .with_columns(
            _need=need,
            # equal once normalised ("ea" vs "EA"): factor 1
            _one=pl.when(_same_unit(u, pu)).then(pl.lit(1, pl.Int64)),
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
            .otherwise(factor)
            .alias("_q"),
            "_qty",
        )
        .with_columns(_bad=pl.col("_q").is_null() & pl.col("_qty").is_not_null())
        .drop("_qty"),
        "match",
    )


class Sums(NamedTuple):
    """Per PO line sums and counts; per invoice document totals; document lines without a
    PO line."""

    lines: pl.DataFrame
    per_invoice: pl.DataFrame
    unmatched: pl.DataFrame


def _masked(cond: pl.Expr, col: str) -> pl.Expr:
    return pl.when(cond).then(pl.col(col))


def _line_aggregates() -> dict[str, pl.Expr]:
    """Every per-line figure, kind-masked, for one group-by on the integer line id."""
    k, ok, bad = pl.col("_kind"), pl.col("_excl") == 0, pl.col("_bad")
    is_asn, is_rec, is_inv = k == ASN, k == RECEIPT, (k == INVOICE) & ok
    # An invoice line billed at another price than the PO's: the evidence for PRICE_VARIANCE.
    deviates = is_inv & ~bad & (pl.col("_amt") != div_round(pl.col("_e"), RAW8))
    docs = {
        "n_shipments": is_asn,
        "n_invoices": is_inv,
        "_n_dup": (k == INVOICE) & (pl.col("_excl") == 1),
        "_n_sus": (k == INVOICE) & (pl.col("_excl") == 2),
    }
    first_rows = {
        "_asn_bad": is_asn & bad,
        "_rec_bad": is_rec & bad,
        "_inv_bad": is_inv & bad,
        "_inv_dev": deviates,
        "_inv_first": is_inv,
        "_asn_first": is_asn,
        "_rec_first": is_rec,
    }
    return {
        "_shipped": _masked(is_asn, "_q").sum(),
        "_received": _masked(is_rec, "_q").sum(),
        "_invoiced": _masked(is_inv, "_q").sum(),
        "_billed": _masked(is_inv & ~bad, "_amt").sum(),
        **{name: _masked(cond, "_row").min() for name, cond in first_rows.items()},
        "_bad_amt": _masked(is_inv & bad, "_amt").sum(),
        "n_receipts": is_rec.sum(),
        **{name: _masked(c, "_docid").drop_nulls().n_unique() for name, c in docs.items()},
    }


def line_sums(run: Run, conv: pl.LazyFrame) -> Sums:
    """One pass over the converted long frame: the per-line sums, the per-invoice totals and
    the few lines without a PO line."""
    matched = conv.filter(pl.col("_po").is_not_null()).with_columns(
        # expected amount of the line at the PO price, 1e-12 currency (Int128)
        _e=pl.col("_q").cast(pl.Int128) * pl.col("_p"),
    )
    sums, per_invoice, unmatched = pl.collect_all(
        [
            matched.group_by("_po").agg(**_line_aggregates()),
            _per_invoice(matched),
            conv.filter(pl.col("_po").is_null()).select("_kind", "_row", "_docid", "_amt"),
        ],
        engine=run.engine,
    )
    run.tick("sums")
    return Sums(sums, per_invoice, unmatched)


def unconverted_count(conv: pl.LazyFrame) -> int:
    """Document lines whose unit no factor converts."""
    return int(conv.select(pl.col("_bad").sum()).collect().item())


# -- statuses and exceptions ----------------------------------------------------------------


def unmatched_documents(
    run: Run,
    unmatched: pl.DataFrame,
    inputs: Inputs,
    lines: pl.LazyFrame,
    po_numbers: pl.LazyFrame | None = None,
) -> pl.LazyFrame:
    """Document lines without a PO line, keys read back from their input rows, coded
    ``NO_PO_REFERENCE`` or, when the PO number exists only under other suppliers,
    ``SUPPLIER_MISMATCH`` (materialised). Only the few PO numbers they name are looked up in
    ``po_numbers`` (every supplier's, when ``lines`` holds only some suppliers), else in
    ``lines``."""
    found = pl.concat(
        [
            unmatched.lazy()
            .filter(pl.col("_kind") == kind)
            .join(
                _rows_of(src, unmatched.filter(pl.col("_kind") == kind)["_row"]).select(
                    pl.col("_row").cast(pl.UInt32), "supplier_id", "po_number"
                ),
                on="_row",
            )
            .sort("_row")
            for kind, src in inputs.documents.items()
        ]
    ).collect(engine=run.engine)  # once: the PO numbers below and the codes read it
    wanted = found.select(pl.col("po_number").unique().implode())
    known = po_numbers if po_numbers is not None else lines.select("po_number")
    po_any = (
        known.filter(pl.col("po_number").is_in(wanted.to_series()[0].implode()))
        .unique()
        .with_columns(_any=pl.lit(True))
    )
    po_hdr = lines.select("supplier_id", "po_number").unique().with_columns(_same=pl.lit(True))
    return run.mat(
        found.lazy()
        .join(po_hdr, on=["supplier_id", "po_number"], how="left")
        .join(po_any, on="po_number", how="left")
        .with_columns(
            pl.when(pl.col("_same").is_null() & pl.col("_any").fill_null(False))
            .then(pl.lit("SUPPLIER_MISMATCH"))
            .otherwise(pl.lit("NO_PO_REFERENCE"))
            .alias("code"),
        ),
        "unmatched",
    )


class Lines(NamedTuple):
    """The ``lines`` result (public columns, or :data:`LINE_VALUES` when compact) and the
    lines with exceptions (every private column they need)."""

    frame: pl.DataFrame
    flagged: pl.DataFrame


def line_statuses(
    run: Run, lines: pl.LazyFrame, sums: pl.DataFrame, *, receipts_given: bool, compact: bool
) -> Lines:
    """PO lines with their sums, checks, flags and status. The wide frame (every private
    column the exception rows need) lives only until the public columns and the few rows
    with exceptions are split off it."""
    wide = _lines(
        lines, sums.lazy(), run.tol, run.tol_frame, receipts_given=receipts_given
    ).collect(engine=run.engine)
    flagged = wide.filter(pl.col("_mask") > 0)
    if compact:  # partitioned runs: the public columns are made once, in PO order
        frame = wide.select(LINE_VALUES)
    else:
        public = wide.lazy().pipe(public_lines, receipts_given=receipts_given)
        frame = public.collect(engine=run.engine)
    run.tick("lines")
    return Lines(frame, flagged)


def _document_exceptions(unmatched: pl.LazyFrame) -> pl.LazyFrame:
    """Exception rows of document lines without a PO line (keys come from the evidence)."""
    return unmatched.select(
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


def invoice_results(
    run: Run,
    invoices: Invoices,
    per_invoice: pl.DataFrame,
    unmatched: pl.LazyFrame,
    lines: pl.LazyFrame,
) -> pl.LazyFrame:
    """One row per invoice document with totals, flags and status (materialised; private
    columns kept for the invoice-level exception rows)."""
    po_rows = lines.select(
        pl.col("_po").alias("_po_first"), pl.col("_row").cast(pl.UInt32).alias("_po_row")
    )
    return run.mat(
        _invoices(invoices.docs, per_invoice.lazy(), unmatched, run.tol, run.tol_frame, po_rows),
        "invoices",
    )


EXCEPTION_ORDER: Final = (
    "supplier_id",
    "po_number",
    "line_number",
    "code",
    "invoice_number",
    "shipment_id",
)


def exception_rows(
    run: Run,
    flagged: pl.DataFrame,
    invoices: pl.LazyFrame,
    unmatched: pl.LazyFrame,
    evidence: dict[int, pl.LazyFrame],
) -> pl.DataFrame:
    """Every exception (line, invoice and document level) with its evidence, sorted."""
    rows = pl.concat(
        [
            _line_exceptions(flagged.lazy(), run.tol, run.tol_frame),
            _invoice_exceptions(invoices),
            _document_exceptions(unmatched),
        ],
        how="vertical",
    ).collect(engine=run.engine)
    out = (
        _attach_evidence(rows, evidence)
        .sort(*EXCEPTION_ORDER, nulls_last=True)
        .collect(engine=run.engine)
    )
    run.tick("exceptions")
    return out


# -- the whole match ------------------------------------------------------------------------


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
    exact_keys: bool | None = None,
) -> Plan:
    """Run the match stage by stage; each stage is one lazy plan collected once with
    ``engine``.

    ``po_numbers`` (column ``po_number``): every PO number of every supplier, when ``po`` holds
    only some suppliers (partitioned runs), so that ``SUPPLIER_MISMATCH`` is still found.
    ``where``: a filter on the inputs (a partition of the suppliers), applied after the input
    rows are numbered so that row numbers (evidence, "first seen" order) stay global.
    ``numbered``: the inputs carry their input row number in ``_row``; PO lines are put back
    in that order. ``compact``: ``lines`` holds only :data:`LINE_VALUES` (see
    :func:`public_lines`). ``exact_keys``: join document lines to PO lines on the key strings
    (``True``), on their hashes (``False``), or on the hashes unless two keys share one
    (``None``, the default).
    """
    run = Run.of(tol, engine)
    inputs = prepare(po, asn, invoice, receipts, where=where, numbered=numbered)
    lines = po_lines(run, inputs.po)
    lookup = key_lookup(run, lines, exact=exact_keys)
    invoices = invoice_documents(run, inputs.invoice)
    conv = convert_quantities(
        run,
        match_keys(document_lines(inputs, invoices), lookup),
        lines,
        factor_table(conversions).lazy(),
    )
    unconverted = 0 if conversions is not None else unconverted_count(conv)
    per_line, per_invoice, no_line = line_sums(run, conv)
    # `del` frees the largest intermediates as soon as they are read for the last time: the
    # long frame before the sums are used, the per-line sums before the exception stage.
    del conv
    unmatched = unmatched_documents(run, no_line, inputs, lines, po_numbers)
    result = line_statuses(
        run, lines, per_line, receipts_given=inputs.receipts is not None, compact=compact
    )
    del per_line
    inv = invoice_results(run, invoices, per_invoice, unmatched, lines)
    evidence = {**inputs.documents, PO: inputs.po}
    exceptions = exception_rows(run, result.flagged, inv, unmatched, evidence)
    # "first seen" order (joins on the streaming engine do not keep it)
    inv_df = inv.collect().sort("_ord")
    return Plan(
        lines=result.frame,
        invoices=_public(inv_df),
        exceptions=exceptions,
        received_from=inputs.received_from,
        stages=run.timings,
        invoice_rows=inv_df["_first"],
        unconverted=unconverted,
    )
