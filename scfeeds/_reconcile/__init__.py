"""Three-way match: purchase order lines vs ASN / receipts vs invoices."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Mapping
from typing import Literal, overload

import polars as pl

from scfeeds._lake import lake_snapshot, lake_uri, scan_lake
from scfeeds._reconcile import _partition
from scfeeds._reconcile._engine import (
    LINE_CODES,
    PRECEDENCE,
    STATUSES,
    Engine,
    Frame,
    Plan,
    check_input,
)
from scfeeds._reconcile._invoices import normalize_invoice_number, normalize_invoice_number_py
from scfeeds._reconcile._partition import Frames, LakeTables, Task
from scfeeds._reconcile._result import Reconciliation, ReconciliationSummary, _Job
from scfeeds._reconcile._stages import build
from scfeeds._reconcile._tolerances import Tolerances, coerce
from scfeeds._reconcile._uom import STANDARD_CONVERSIONS, factor_table
from scfeeds.exceptions import ConfigurationError, ReconcileWarning

__all__ = [
    "LINE_CODES",
    "PRECEDENCE",
    "STANDARD_CONVERSIONS",
    "STATUSES",
    "Lake",
    "ReconcileWarning",
    "Reconciliation",
    "ReconciliationSummary",
    "Tolerances",
    "normalize_invoice_number",
    "normalize_invoice_number_py",
    "reconcile",
]

#: A lake written by :func:`scfeeds.ingest`: a folder or an object-store URI (``s3://...``).
Lake = str | os.PathLike[str]


@overload
def reconcile(
    po: Frame,
    asn: Frame,
    invoice: Frame,
    *,
    receipts: Frame | None = None,
    tolerances: Tolerances | None = None,
    conversions: Frame | None = None,
    partition_lines: int = 500_000,
    cluster: object | None = None,
) -> Reconciliation: ...


@overload
def reconcile(
    po: Lake,
    *,
    tolerances: Tolerances | None = None,
    conversions: Frame | None = None,
    partition_lines: int = 500_000,
    cluster: object | None = None,
    snapshot: Mapping[str, int] | None = None,
    as_of: dt.datetime | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> Reconciliation: ...


# Long only by its docstring: the contract of every exception code and output column.
def reconcile(
    po: Frame | Lake,
    asn: Frame | None = None,
    invoice: Frame | None = None,
    *,
    receipts: Frame | None = None,
    tolerances: Tolerances | None = None,
    conversions: Frame | None = None,
    partition_lines: int = 500_000,
    cluster: object | None = None,
    snapshot: Mapping[str, int] | None = None,
    as_of: dt.datetime | None = None,
    storage_options: Mapping[str, str] | None = None,
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
        ``po_lines``, ``asn_lines`` and ``invoice_lines`` frames; or ``po`` alone, a lake
        written by :func:`scfeeds.ingest` (a folder or an ``s3://`` URI), whose tables are
        read with :func:`scfeeds.scan_lake` (its receipts decide R when it has any).
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
        with the intermediates. Inputs are best given as LazyFrames (``pl.scan_parquet``, a
        lake); collected with ``engine="streaming"`` (``rec.collect(engine="streaming")``),
        the inputs are read once and split by partition into temporary Parquet files, so
        each partition reads only its own rows: the least memory. A partitioned result's
        ``lines`` columns are made when collected, only those asked for.
    cluster
        A Dask ``distributed.Client``, a cluster or a scheduler address: each partition runs
        as one task on a worker (a lake is read by the workers themselves, frames are sent to
        them) and the results are combined here. Needs the ``dask`` extra; without a cluster
        dask is never imported.
    snapshot, as_of
        A lake only: read the tables at these versions (``{table: version}``, e.g. a
        previous result's ``inputs``) or as of this time. Default: the versions current when
        the call is made, so every partition reads the same lake while ingests go on.
    storage_options
        A lake only: object-store options for delta-rs (see :func:`scfeeds.scan_lake`).

    Returns
    -------
    Reconciliation
        Lazy: nothing is matched until a frame, ``.summary()`` or ``.collect()`` is asked
        for (a lake's snapshot and whether it has receipts are read at the call); the match
        then runs once for all three frames. ``.inputs``: the lake versions read.
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
    # Check the arguments now (a wrong call fails here, not at collect time); run later.
    source, inputs = _source(
        po, asn, invoice, receipts, snapshot=snapshot, as_of=as_of, storage_options=storage_options
    )
    factor_table(conversions)
    if partition_lines < 1:
        raise ConfigurationError(f"partition_lines must be >= 1, not {partition_lines!r}")
    task = Task(source, tol, conversions)

    def run(engine: Engine) -> Plan:
        job = dataclasses.replace(task, engine=engine)
        return _partition.run(job, partition_lines=partition_lines, cluster=cluster)

    given = source.receipts if isinstance(source, LakeTables) else source.receipts is not None
    received_from: Literal["receipts", "asn"] = "receipts" if given else "asn"
    return Reconciliation._from_job(
        _Job(run),
        lambda: _empty_plan(source.frames(), tol, conversions),
        received_from,
        tol,
        inputs=inputs,
    )


def _source(
    po: Frame | Lake,
    asn: Frame | None,
    invoice: Frame | None,
    receipts: Frame | None,
    *,
    snapshot: Mapping[str, int] | None,
    as_of: dt.datetime | None,
    storage_options: Mapping[str, str] | None,
) -> tuple[Frames | LakeTables, dict[str, int]]:
    """The inputs of a call, checked: frames, or a lake's tables (and their versions)."""
    if isinstance(po, str | os.PathLike):
        given = [
            n
            for n, f in (("asn", asn), ("invoice", invoice), ("receipts", receipts))
            if f is not None
        ]
        if given:
            raise ConfigurationError(
                f"reconcile(lake) reads every table from the lake: drop {', '.join(given)} "
                "(or pass the po, asn and invoice frames instead of a lake)"
            )
        return _lake_tables(po, snapshot=snapshot, as_of=as_of, storage_options=storage_options)
    lake_only = {"snapshot": snapshot, "as_of": as_of, "storage_options": storage_options}
    misplaced = [n for n, v in lake_only.items() if v is not None]
    if misplaced:
        raise ConfigurationError(
            f"{'= and '.join(misplaced)}= apply to a lake: pass the lake's folder or URI as the "
            "only positional argument (reconcile('lake', ...)), or drop them"
        )
    if asn is None or invoice is None:
        raise ConfigurationError(
            "reconcile(po, asn, invoice): a PO frame needs the asn and invoice frames too "
            "(or pass a lake's folder or URI alone: reconcile('lake'))"
        )
    frames = Frames(po, asn, invoice, receipts)
    for name, frame in zip(("po", "asn", "invoice", "receipts"), frames, strict=True):
        if frame is not None:
            check_input(frame, name)
    return frames, {}


def _lake_tables(
    lake: Lake,
    *,
    snapshot: Mapping[str, int] | None,
    as_of: dt.datetime | None,
    storage_options: Mapping[str, str] | None,
) -> tuple[LakeTables, dict[str, int]]:
    """A lake read at one snapshot: the one given, else the versions current now (so that
    every part, on any worker, reads the same lake even while ingests go on). Receipts count
    when the lake has any, else the ASN stands in."""
    if snapshot is not None and as_of is not None:
        raise ConfigurationError("pass at most one of snapshot= and as_of=")
    root = lake_uri(lake)
    opts = dict(storage_options) if storage_options else None
    if snapshot is None and as_of is None:
        snapshot = lake_snapshot(root, storage_options=opts)
    pinned = dict(snapshot) if snapshot is not None else None
    receipts = scan_lake(root, "receipts", snapshot=pinned, as_of=as_of, storage_options=opts)
    has_receipts = bool(receipts.select(pl.len()).collect().item() > 0)
    return LakeTables(root, pinned, as_of, opts, has_receipts), pinned or {}


# The output schema depends only on which input columns exist. Every lazy result asks for it
# before it runs (collect_schema, a plan built on it), and notebooks and tests reconcile the
# same few layouts again and again: the match is run once on empty inputs per layout and
# remembered (a few dozen layouts at most; cleared beyond that).
_SCHEMAS: dict[tuple[tuple[str, ...] | None, ...], Plan] = {}


def _empty_plan(f: Frames, tol: Tolerances, conversions: Frame | None) -> Plan:
    key = tuple(None if x is None else tuple(x.lazy().collect_schema().names()) for x in f)
    if key not in _SCHEMAS:
        if len(_SCHEMAS) > 32:
            _SCHEMAS.clear()
        heads = [None if x is None else x.lazy().head(0) for x in f]
        _SCHEMAS[key] = build(
            *heads[:3],  # type: ignore[arg-type]
            receipts=heads[3],
            tol=tol,
            conversions=conversions,
            engine="in-memory",
        )
    return _SCHEMAS[key]
