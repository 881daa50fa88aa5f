"""Three-way match: purchase order lines vs ASN / receipts vs invoices."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from scfeeds._reconcile._engine import (
    LINE_CODES,
    PRECEDENCE,
    STATUSES,
    Engine,
    Frame,
    Plan,
    build,
    check_input,
)
from scfeeds._reconcile._invoices import normalize_invoice_number, normalize_invoice_number_py
from scfeeds._reconcile._result import Reconciliation, ReconciliationSummary, _Job
from scfeeds._reconcile._tolerances import Tolerances, coerce
from scfeeds._reconcile._uom import STANDARD_CONVERSIONS, factor_table
from scfeeds.exceptions import ConfigurationError

__all__ = [
    "LINE_CODES",
    "PRECEDENCE",
    "STANDARD_CONVERSIONS",
    "STATUSES",
    "Reconciliation",
    "ReconciliationSummary",
    "Tolerances",
    "normalize_invoice_number",
    "normalize_invoice_number_py",
    "reconcile",
    "reconcile_partitioned",
]


_EMPTY: dict[tuple[tuple[str, ...] | None, ...], Plan] = {}


def reconcile(
    po: Frame,
    asn: Frame,
    invoice: Frame,
    *,
    receipts: Frame | None = None,
    tolerances: Tolerances | None = None,
    conversions: Frame | None = None,
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
    the PO unit; billed = invoice amount (``line_amount``, else qty x unit price).

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
    ``DUPLICATE_SUSPECT``       invoice level: same supplier, normalised numbers at edit
                                distance 1, totals within ``duplicate_amount``, dates within
                                ``duplicate_days``; the later one is the suspect
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
        ``line_number``, ``item_id``; ``invoice_number`` / ``shipment_id``, ``source`` and
        ``position`` of the document that shows it (for ``PRICE_VARIANCE`` the first invoice
        line billed off price, for ``UOM_MISMATCH`` the first unconvertible line: invoice,
        else ASN, else receipt; null for pure quantity codes); ``variance_qty`` (PO unit,
        signed), ``variance_amount`` (signed), ``amount_at_risk`` and the ``tolerance_pct`` /
        ``tolerance_abs`` applied (null: unset).

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

    def run(engine: Engine) -> Plan:
        return build(
            po, asn, invoice, receipts=receipts, tol=tol, conversions=conversions, engine=engine
        )

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
    """:func:`reconcile` in bounded memory: suppliers are split into partitions of about
    ``partition_lines`` PO lines, each partition is matched on its own and written to
    ``dest/{lines,invoices,exceptions}/part-NNNNN.parquet``; the result scans those files.

    Every rule holds within a supplier, so the rows are those of :func:`reconcile` (in
    partition order): the only cross-supplier rule, ``SUPPLIER_MISMATCH``, gets the set of all
    PO numbers (one small column). Peak memory follows the partition size, not the input
    size, as long as no single supplier is larger than a partition. Inputs are best given as
    ``pl.scan_parquet`` LazyFrames: each partition reads only its suppliers' rows.
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
    n_lines = po.lazy().select(pl.len()).collect().item()
    parts = max(1, -(-n_lines // partition_lines))
    po_numbers = po.lazy().select("po_number").unique().collect()
    bucket = pl.col("supplier_id").hash(seed=5) % parts
    stages: dict[str, float] = {}
    for b in range(parts):

        def part(frame: Frame | None, b: int = b) -> pl.LazyFrame | None:
            return None if frame is None else frame.lazy().filter(bucket == b)

        plan = build(
            part(po),  # type: ignore[arg-type]
            part(asn),  # type: ignore[arg-type]
            part(invoice),  # type: ignore[arg-type]
            receipts=part(receipts),
            tol=tol,
            conversions=conversions,
            engine=engine,
            po_numbers=po_numbers.lazy(),
        )
        for name in ("lines", "invoices", "exceptions"):
            result: pl.DataFrame = getattr(plan, name)
            tmp = out / name / f".part-{b:05d}.parquet.tmp"
            result.write_parquet(tmp)
            tmp.replace(out / name / f"part-{b:05d}.parquet")
        for stage, seconds in plan.stages.items():
            stages[stage] = stages.get(stage, 0.0) + seconds
        del plan
    return Reconciliation._from_lazy(
        *(
            pl.scan_parquet(out / name / "part-*.parquet")
            for name in ("lines", "invoices", "exceptions")
        ),
        received_from="receipts" if receipts is not None else "asn",
        tolerances=tol,
        stages=stages,
    )
