"""Three-way match: purchase order lines vs ASN / receipts vs invoices."""

from __future__ import annotations

import heapq
import tempfile
import time
from pathlib import Path

import polars as pl

from scfeeds._reconcile._engine import (
    KEY,
    LINE_CODES,
    PRECEDENCE,
    STATUSES,
    Engine,
    Frame,
    Plan,
    _prep,
    check_input,
    public_lines,
    used_columns,
    warn_units,
)
from scfeeds._reconcile._invoices import normalize_invoice_number, normalize_invoice_number_py
from scfeeds._reconcile._num import raw4
from scfeeds._reconcile._result import Reconciliation, ReconciliationSummary, _Job
from scfeeds._reconcile._stages import build
from scfeeds._reconcile._tolerances import Tolerances, coerce
from scfeeds._reconcile._uom import STANDARD_CONVERSIONS, factor_table
from scfeeds.exceptions import ConfigurationError, ReconcileWarning
from scfeeds.schemas import TableName

__all__ = [
    "LINE_CODES",
    "PRECEDENCE",
    "STANDARD_CONVERSIONS",
    "STATUSES",
    "ReconcileWarning",
    "Reconciliation",
    "ReconciliationSummary",
    "Tolerances",
    "normalize_invoice_number",
    "normalize_invoice_number_py",
    "reconcile",
    "reconcile_partitioned",
]


_TABLES: dict[str, TableName] = {
    "po": "po_lines",
    "asn": "asn_lines",
    "invoice": "invoice_lines",
    "receipts": "receipts",
}
_EMPTY: dict[tuple[tuple[str, ...] | None, ...], Plan] = {}


def reconcile(
    po: Frame,
    asn: Frame,
    invoice: Frame,
    *,
    receipts: Frame | None = None,
    tolerances: Tolerances | None = None,
    conversions: Frame | None = None,
    partition_lines: int = 500_000,
) -> Reconciliation:
    """Match PO lines against what was shipped / received and what was invoiced.

    Every input is a canonical frame (``DataFrame`` or ``LazyFrame``) with the business
    columns of :data:`scfeeds.schemas.COLUMNS` (provenance columns optional; ``source`` and
    ``position`` are carried into document-level exceptions when present). Nothing is computed
    until a result frame is collected; ``.collect()`` computes all three in one pass.

    **Matching.** A document line belongs to the PO line with the same
    ``(supplier_id, po_number, line_number)``; line numbers are strings whose leading zeros do
    not count (``"0010"`` == ``"10"``). A document line without a line number (common in 856)
    falls back to ``(supplier_id, po_number, item_id)``, taking the lowest-numbered PO line of
    that item. A PO key given twice keeps its first row. Quantities are converted to the PO
    line's unit: same unit (or a unit missing on either side) as is, else a factor from
    :data:`STANDARD_CONVERSIONS` (e.g. 1 DZ = 12 EA) or ``conversions``, directly, inverted or
    chained (CS -> EA -> DZ); a unit that cannot be converted is ``UOM_MISMATCH``.

    Per PO line, O = ordered, R = received (receipts when ``receipts`` is given, else the ASN
    quantity stands in: column ``received_from``), I = invoiced by non-duplicate invoices, all in
    the PO unit; billed = invoice amount (``line_amount``, else qty x unit price). Credit
    memos (negative invoiced quantities) count with their sign: they net against I.

    ==========================  ===========================================================
    code                        raised when (tolerance: see :class:`Tolerances`)
    ==========================  ===========================================================
    ``NOT_SHIPPED``             O > 0 and R == 0
    ``SHORT_SHIPPED``           0 < R < O, O - R beyond ``short_ship``
    ``OVER_SHIPPED``            R - O beyond ``over_ship``
    ``INVOICED_NOT_RECEIVED``   I > 0 and R == 0 (SAP DW: no goods receipt)
    ``OVER_INVOICED``           R > 0, I - R beyond ``over_invoice`` (SAP DQ, Oracle QTY REC)
    ``OVER_ORDERED``            I - O beyond ``over_order`` (Oracle QTY ORD)
    ``NOT_INVOICED``            R > 0 and I == 0
    ``PRICE_VARIANCE``          I > 0, |billed - I x PO price| beyond ``price`` (SAP PP,
                                Oracle PRICE)
    ``UOM_MISMATCH``            a document unit with no factor to the PO unit; that quantity
                                is left out of the sums and the checks it would feed (R: the
                                shipping and billing checks; I: the billing checks) are not
                                raised for the line
    ``DUPLICATE_INVOICE``       invoice level: same supplier and normalised number (lower
                                case, letters and digits, leading zeros of each digit run
                                dropped: ``INV-000042K`` == ``inv42k``); the first seen (by
                                invoice_date, then source, then input order) is the original
    ``DUPLICATE_SUSPECT``       invoice level, a re-keyed copy: same supplier and PO, totals
                                within ``duplicate_amount`` (default: equal), dates within
                                ``duplicate_days``, numbers one keying error apart (one
                                character substituted, inserted or deleted, or two
                                neighbours swapped; normalised or as typed); the later one
                                is the suspect. Sequential numbers alone never make one.
    ``NO_PO_REFERENCE``         invoice / ASN / receipt line whose PO or PO line does not exist
    ``SUPPLIER_MISMATCH``       the PO number exists, but only under other suppliers
    ==========================  ===========================================================

    Quantities and money are exact: the engine computes on integer counts of 1e-4 (1e-8 for
    converted quantities) and returns ``Decimal(38, 4)``; exactly at a limit is within it.

    Duplicates and suspects are excluded from every sum (a suspect is on hold until someone
    clears it); their lines carry the code in ``flags``. A PO line's ``status`` is its first
    flag in :data:`PRECEDENCE` (duplicates and missing references first, then unit problems,
    then what could make AP overpay, then supply problems, then the unbilled accrual), else
    ``MATCHED_WITHIN_TOLERANCE`` when a variance exists but no check flags it, else ``MATCHED``.

    Parameters
    ----------
    po, asn, invoice
        ``po_lines``, ``asn_lines`` and ``invoice_lines`` frames.
    receipts
        ``receipts`` frame; when given it, not the ASN, decides R.
    tolerances
        :class:`Tolerances` (default: quantities exact, price 1 %, suspects within 1 % and 7
        days), with per-supplier overrides.
    conversions
        Frame ``item_id`` (null: any item), ``from_uom``, ``to_uom``, ``factor``
        (1 from_uom = factor to_uom), e.g. a pack size CS = 24 EA.
    partition_lines
        Inputs with more PO lines than this are matched in partitions of whole suppliers of
        about this many PO lines each (every rule holds within a supplier), one after the
        other, and the results put back in order: the same rows, with the working memory of
        one partition instead of the whole input. Memory then grows with the results, not
        with the intermediates.

    Returns
    -------
    Reconciliation
        ``.lines`` (one row per PO line: keys, ``uom``, ``qty_ordered`` / ``qty_shipped`` /
        ``qty_received`` / ``qty_invoiced`` in the PO unit, ``received_from``, ``unit_price``,
        ``invoice_unit_price``, ``invoiced_amount``, ``ship_variance`` (R - O),
        ``bill_variance`` (I - R), ``order_variance`` (I - O), ``price_variance`` (billed -
        I x price), ``amount_at_risk``, ``n_shipments``, ``n_receipts``, ``n_invoices``,
        ``status``, ``flags``), ``.invoices`` (one row per invoice document: totals, expected
        amount at PO prices, ``amount_variance``, ``duplicate_of``, ``suspect_of``, ``flags``,
        ``status``), ``.exceptions`` and ``.summary()``.

        ``.exceptions`` has one row per exception: ``code``; ``level`` (``line`` for the
        per-PO-line codes, ``invoice`` for duplicates and for invoice lines without a PO line,
        ``asn`` / ``receipt`` for such ASN / receipt lines); ``supplier_id``, ``po_number``,
        ``line_number``, ``item_id``; ``invoice_number`` / ``shipment_id`` (line rows: the
        first invoice and shipment of the line, where they exist); ``source`` and
        ``position`` of the document line that shows it (``PRICE_VARIANCE``: the first
        invoice line billed off price; ``UOM_MISMATCH``: the first unconvertible line; the
        shipping codes and ``NOT_INVOICED``: the first receipt / ASN line; the billing
        codes: the first invoice line; the PO line itself when nothing was shipped or billed;
        invoice-level rows: the invoice's first line); ``variance_qty`` (PO unit, signed),
        ``variance_amount`` (signed), ``amount_at_risk``, the ``tolerance_pct`` /
        ``tolerance_abs`` applied (null: unset); ``po_source`` / ``po_position`` of the PO
        line; ``related_invoice_number``, the other invoice of a duplicate / suspect pair.

    Warns
    -----
    ReconcileWarning
        Once per run, with the count, when no ``conversions`` are given and document lines
        use units that cannot be converted to their PO line's (all ``UOM_MISMATCH``).

    Examples
    --------
    >>> import polars as pl
    >>> from scfeeds.schemas import empty
    >>> po = pl.DataFrame(
    ...     {"supplier_id": ["S1"], "po_number": ["P1"], "line_number": ["1"],
    ...      "item_id": ["A"], "qty_ordered": [10], "uom": ["EA"], "unit_price": [2]},
    ...     schema_overrides={"qty_ordered": pl.Decimal(18, 4), "unit_price": pl.Decimal(18, 4)},
    ... )
    >>> rec = reconcile(po, empty("asn_lines"), empty("invoice_lines"))
    >>> rec.lines.select("status", "qty_ordered").collect().row(0)
    ('NOT_SHIPPED', Decimal('10.0000'))
    >>> rec.exceptions.select("code", "amount_at_risk").collect().row(0)
    ('NOT_SHIPPED', Decimal('20.0000'))

    Amount at risk: the value at PO price of the quantity variance (shipping and quantity
    billing codes, ``NOT_INVOICED``: the unbilled receipt), the price variance, the billed
    amount (``INVOICED_NOT_RECEIVED``, ``NO_PO_REFERENCE``, ``SUPPLIER_MISMATCH``,
    ``UOM_MISMATCH``) or the invoice total (duplicates). A line's ``amount_at_risk`` is the
    largest of its exceptions'.
    """
    tol = coerce(tolerances)
    inputs = {"po": po, "asn": asn, "invoice": invoice, "receipts": receipts}
    # Check the inputs now (a wrong call fails here, not at collect time); run later.
    for name, frame in inputs.items():
        if frame is not None:
            check_input(frame, name)
    factor_table(conversions)

    if partition_lines < 1:
        raise ConfigurationError(f"partition_lines must be >= 1, not {partition_lines!r}")

    def run(engine: Engine) -> Plan:
        plan = match(engine)
        warn_units(plan.unconverted)
        return plan

    def match(engine: Engine) -> Plan:
        filters = _partitions(po, partition_lines)
        if filters is None:
            return build(
                po, asn, invoice, receipts=receipts, tol=tol, conversions=conversions, engine=engine
            )
        known = po.lazy().select(pl.col("po_number").cast(pl.String))
        plans = [
            build(
                po,
                asn,
                invoice,
                receipts=receipts,
                tol=tol,
                conversions=conversions,
                engine=engine,
                po_numbers=known,
                where=where,
                compact=True,
            )
            for where in filters
        ]
        return _combine(plans, po, receipts_given=receipts is not None, engine=engine)

    def empty() -> Plan:
        # The output schema depends only on which input columns exist: run the match once on
        # empty inputs per column layout and remember it.
        key = tuple(
            None if f is None else tuple(f.lazy().collect_schema().names())
            for f in (po, asn, invoice, receipts)
        )
        if key not in _EMPTY:
            if len(_EMPTY) > 32:
                _EMPTY.clear()
            _EMPTY[key] = run_empty()
        return _EMPTY[key]

    def run_empty() -> Plan:
        def head(frame: Frame | None) -> Frame | None:
            return None if frame is None else frame.lazy().head(0)

        return build(
            head(po),  # type: ignore[arg-type]
            head(asn),  # type: ignore[arg-type]
            head(invoice),  # type: ignore[arg-type]
            receipts=head(receipts),
            tol=tol,
            conversions=conversions,
            engine="in-memory",
        )

    return Reconciliation._from_job(
        _Job(run), empty, "receipts" if receipts is not None else "asn", tol
    )


def _partitions(po: Frame, partition_lines: int) -> list[pl.Expr] | None:
    """Supplier filters, one per partition (see :func:`_packing`), or ``None`` when the
    input fits in one."""
    members = _packing(po, partition_lines)
    if members is None:
        return None
    col = pl.col("supplier_id")

    def among(values: list[str]) -> pl.Expr:
        return col.is_in(pl.Series(values, dtype=pl.String).implode())

    filters = [among(m) for m in members]
    known = [s for m in members for s in m]
    filters[0] = filters[0] | col.is_null() | ~among(known)
    return filters


def _packing(po: Frame, partition_lines: int) -> list[list[str]] | None:
    """The suppliers of each partition, or ``None`` when the input fits in one.

    Suppliers are packed largest first into the partition with the fewest PO lines so far
    (so partitions stay near ``partition_lines`` however many suppliers there are; a supplier
    larger than that is a partition of its own). Rows of suppliers without PO lines, and
    rows without a supplier, go with the first partition.
    """
    counts = (
        po.lazy()
        .group_by(pl.col("supplier_id").cast(pl.String))
        .agg(n=pl.len())
        .sort("n", "supplier_id", descending=[True, False], nulls_last=True)
        .collect()
    )
    total = int(counts["n"].sum())
    parts = -(-total // partition_lines)
    if parts <= 1:
        return None
    heap = [(0, b) for b in range(parts)]
    members: list[list[str]] = [[] for _ in range(parts)]
    for supplier, n in counts.iter_rows():
        if supplier is None:
            continue
        load, b = heapq.heappop(heap)
        members[b].append(supplier)
        heapq.heappush(heap, (load + n, b))
    members = [m for m in members if m]
    return members if len(members) > 1 else None


def _spill(
    frame: Frame, table: TableName, members: list[list[str]], dest: Path, chunk_rows: int
) -> list[Path]:
    """Split ``frame`` by partition into ``dest/<partition>/<chunk>.parquet``, reading it one
    slice of ``chunk_rows`` rows at a time (memory: one slice) and keeping only the columns
    the match reads. Rows keep their input number in ``_row`` and their order. Returns one
    folder per partition."""
    bin_of = {s: b for b, m in enumerate(members) for s in m}
    lf = frame.lazy()
    names = lf.collect_schema().names()
    lf = lf.drop([c for c in names if c not in used_columns(names, table)])
    # numbered on the scan itself: a Parquet reader numbers rows as it reads them
    lf = lf.with_row_index("_row")
    total = int(lf.select(pl.len()).collect().item())
    part = (
        pl.col("supplier_id")
        .cast(pl.String)
        .replace_strict(bin_of, default=0, return_dtype=pl.UInt32)
        .fill_null(0)
        .alias("_part")
    )
    folders = [dest / f"{b:05d}" for b in range(len(members))]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    for k, offset in enumerate(range(0, total, chunk_rows)):
        chunk = lf.slice(offset, chunk_rows).with_columns(part).collect()
        for (b,), rows in chunk.partition_by("_part", as_dict=True, include_key=False).items():
            # temporary files, read once: fast compression
            rows.write_parquet(folders[int(b)] / f"{k:08d}.parquet", compression="lz4")
        del chunk
    return folders


def _scan_part(folder: Path, frame: Frame) -> pl.LazyFrame:
    """The rows of one partition (see :func:`_spill`); an empty frame when it has none."""
    if any(folder.glob("*.parquet")):
        return pl.scan_parquet(folder / "*.parquet")
    return frame.lazy().with_row_index("_row").head(0)


def _combine(plans: list[Plan], po: Frame, *, receipts_given: bool, engine: Engine) -> Plan:
    """One plan from partition plans (run with ``compact=True``), rows in the order a single
    run gives: lines in PO input order, invoices in "first seen" order, exceptions sorted as
    in :func:`build`.

    The partitions keep only a few integers per PO line (:data:`LINE_VALUES`); the public
    lines are made once, streaming over the PO input in its own order and joining those
    integers on the PO row: no reordering copy of the results, and no decimal columns held
    per partition.
    """
    values = pl.concat([p.lines for p in plans], how="vertical", rechunk=False)
    invoices = pl.concat([p.invoices for p in plans], how="vertical", rechunk=False)
    invoice_rows = pl.concat([p.invoice_rows for p in plans if p.invoice_rows is not None])
    exceptions = pl.concat([p.exceptions for p in plans], how="vertical", rechunk=False)
    stages: dict[str, float] = {}
    for p in plans:
        for stage, seconds in p.stages.items():
            stages[stage] = stages.get(stage, 0.0) + seconds
    received_from = plans[0].received_from
    unconverted = sum(p.unconverted for p in plans)
    plans.clear()
    clock = time.perf_counter()
    po_lf = _prep(po, "po_lines", "po").select(
        "_row",
        *KEY,
        "item_id",
        "uom",
        "unit_price",
        _o=raw4(pl.col("qty_ordered")).fill_null(0),
    )
    # An inner join: PO rows that repeat a key were left out by the partitions.
    lines = public_lines(
        po_lf.join(values.lazy(), on="_row", how="inner", maintain_order="left"),
        receipts_given=receipts_given,
    ).collect(engine=engine)
    line_rows = values.get_column("_row").sort()
    del values
    by = ["invoice_date", *(["source"] if "source" in invoices.columns else []), "_first"]
    invoices = invoices.with_columns(_first=invoice_rows).sort(by, nulls_last=True)
    invoice_rows = invoices.get_column("_first")
    invoices = invoices.drop("_first")
    exceptions = exceptions.sort(
        "supplier_id",
        "po_number",
        "line_number",
        "code",
        "invoice_number",
        "shipment_id",
        nulls_last=True,
    )
    stages["combine"] = time.perf_counter() - clock
    return Plan(
        lines=lines,
        invoices=invoices,
        exceptions=exceptions,
        received_from=received_from,
        stages=stages,
        line_rows=line_rows,
        invoice_rows=invoice_rows,
        unconverted=unconverted,
    )


def reconcile_partitioned(
    po: Frame,
    asn: Frame,
    invoice: Frame,
    dest: str | Path,
    *,
    receipts: Frame | None = None,
    tolerances: Tolerances | None = None,
    conversions: Frame | None = None,
    partition_lines: int = 250_000,
    engine: Engine = "streaming",
) -> Reconciliation:
    """:func:`reconcile` in bounded memory: suppliers are packed into partitions of about
    ``partition_lines`` PO lines, each partition is matched on its own and written to
    ``dest/{lines,invoices,exceptions}/part-NNNNN.parquet``; the result scans those files.

    Every rule holds within a supplier, so the rows are those of :func:`reconcile` (lines and
    invoices in partition order, exceptions sorted within a partition). The only
    cross-supplier rule, ``SUPPLIER_MISMATCH``, looks up the few PO numbers of unmatched
    documents in ``po``. Peak memory follows the partition size, not the input size, as
    long as no single supplier is larger than a partition. Inputs are best given as
    ``pl.scan_parquet`` LazyFrames: each partition streams the inputs and keeps its own
    suppliers' rows.
    """
    tol = coerce(tolerances)
    for name, frame in {"po": po, "asn": asn, "invoice": invoice, "receipts": receipts}.items():
        if frame is not None:
            check_input(frame, name)
    if partition_lines < 1:
        raise ConfigurationError(f"partition_lines must be >= 1, not {partition_lines!r}")
    out = Path(dest)
    for name in ("lines", "invoices", "exceptions"):
        (out / name).mkdir(parents=True, exist_ok=True)
        for old in (out / name).glob("part-*.parquet"):
            old.unlink()
    members = _packing(po, partition_lines) or [[]]
    known = po.lazy().select(pl.col("po_number").cast(pl.String))
    stages: dict[str, float] = {}
    inputs = {"po": po, "asn": asn, "invoice": invoice, "receipts": receipts}
    unconverted = 0
    with tempfile.TemporaryDirectory(dir=out, prefix=".inputs-") as tmp:
        clock = time.perf_counter()
        # One pass over each input splits it by partition (rows keep their input number):
        # each partition then reads only its own rows, and the input is read once.
        folders = {
            name: _spill(frame, _TABLES[name], members, Path(tmp) / name, partition_lines)
            for name, frame in inputs.items()
            if frame is not None and len(members) > 1
        }
        stages["split inputs"] = time.perf_counter() - clock

        def part(name: str, b: int) -> pl.LazyFrame | None:
            frame = inputs[name]
            if frame is None:
                return None
            if name not in folders:
                return frame.lazy().with_row_index("_row")
            return _scan_part(folders[name][b], frame)

        for b in range(len(members)):
            plan = build(
                part("po", b),  # type: ignore[arg-type]
                part("asn", b),  # type: ignore[arg-type]
                part("invoice", b),  # type: ignore[arg-type]
                receipts=part("receipts", b),
                tol=tol,
                conversions=conversions,
                engine=engine,
                po_numbers=known,
                numbered=True,
            )
            for name in ("lines", "invoices", "exceptions"):
                result: pl.DataFrame = getattr(plan, name)
                tmp_file = out / name / f".part-{b:05d}.parquet.tmp"
                result.write_parquet(tmp_file)
                tmp_file.replace(out / name / f"part-{b:05d}.parquet")
            for stage, seconds in plan.stages.items():
                stages[stage] = stages.get(stage, 0.0) + seconds
            unconverted += plan.unconverted
            del plan
    warn_units(unconverted)
    return Reconciliation._from_lazy(
        *(
            pl.scan_parquet(out / name / "part-*.parquet")
            for name in ("lines", "invoices", "exceptions")
        ),
        received_from="receipts" if receipts is not None else "asn",
        tolerances=tol,
        stages=stages,
    )
