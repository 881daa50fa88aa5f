"""Result objects: the lazy reconciliation and its summary (data separate from rendering)."""

from __future__ import annotations

import html
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

import polars as pl

from scfeeds._iosource import Pushdown, scan_batches
from scfeeds._reconcile._engine import LINE_CODES, OUT, STATUSES, Engine, Plan
from scfeeds._reconcile._tolerances import Tolerances


@dataclass(frozen=True, slots=True)
class ReconciliationSummary:
    """Counts and money at risk: totals, then by status, by supplier and by code.

    Money is counted **once per line** (a PO line's ``amount_at_risk``, the largest of its
    exceptions') and once per invoice document; the line totals of every view equal the sum
    of ``lines.amount_at_risk``.

    Attributes
    ----------
    totals
        ``level`` ('line' | 'invoice'), ``count``, ``with_exceptions``, ``amount_at_risk``.
    by_status
        ``level``, ``status``, ``count``, ``amount_at_risk``: each line (invoice) once, under
        its status; every status of :data:`STATUSES` that occurs, in precedence order.
    by_supplier
        ``supplier_id``, ``lines``, ``lines_with_exceptions``, ``line_amount_at_risk``,
        ``invoices``, ``invoices_with_exceptions``, ``invoice_amount_at_risk``.
    by_code
        ``code``, ``level``, ``count`` (exception rows: a line with two codes counts under
        both), ``amount_at_risk`` (line level: each line's money once, under its first line
        code in precedence order; other levels: each row's own amount) and ``exposure`` (each
        row's own amount: a line's money under every code it has, so these overlap and do
        not add up). A line whose status is a duplicate code (the invoice's) counts here under
        its first line code, which is why by_code and by_status differ.
    """

    by_status: pl.DataFrame
    by_supplier: pl.DataFrame
    by_code: pl.DataFrame
    totals: pl.DataFrame

    _TITLES = (
        ("totals", "totals (money at risk counted once per line / invoice)"),
        ("by_status", "by status (each line once, under its status)"),
        ("by_supplier", "by supplier"),
        (
            "by_code",
            "by code (count: rows, a line can have several codes; amount_at_risk: "
            "each line once, under its first code; exposure: every row, overlapping)",
        ),
    )

    def __repr__(self) -> str:
        # every row of every view (a summary that hides rows does not add up)
        with pl.Config(tbl_rows=-1, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
            parts = [f"{title}\n{getattr(self, name)}" for name, title in self._TITLES]
            return "Reconciliation summary\n\n" + "\n\n".join(parts)

    def _repr_html_(self) -> str:
        parts = ["<div><strong>Reconciliation summary</strong>"]
        with pl.Config(tbl_rows=-1):
            for name, title in self._TITLES:
                parts.append(f"<h4>{html.escape(title[0].upper() + title[1:])}</h4>")
                parts.append(getattr(self, name)._repr_html_())
        parts.append("</div>")
        return "".join(parts)


class _Job:
    """Runs the match on first demand and keeps the result, with the engine it ran on."""

    def __init__(self, run: Callable[[Engine], Plan]) -> None:
        self._run = run
        self._plan: Plan | None = None
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        """The engine the kept result ran on (``"auto"`` before any run)."""
        return self._engine or "auto"

    def stages(self) -> dict[str, float]:
        """Seconds per stage of the run (run now if needed)."""
        return dict(self.plan().stages)

    def plan(self, engine: Engine | None = None) -> Plan:
        """The result: the one kept when ``engine`` is ``None`` or the one it ran on, else
        (first demand, or another engine asked for) run now with ``engine`` (default
        ``"auto"``) and kept."""
        with self._lock:
            if self._plan is None or (engine is not None and engine != self._engine):
                self._engine = engine if engine is not None else "auto"
                self._plan = self._run(self._engine)
            return self._plan


def _lazy(
    job: _Job, name: Literal["lines", "invoices", "exceptions"], schema: Callable[[], pl.Schema]
) -> pl.LazyFrame:
    """A LazyFrame whose rows come from the job: nothing runs until it is collected."""

    def frames(pushdown: Pushdown) -> Iterator[pl.DataFrame]:
        frame: pl.DataFrame | pl.LazyFrame = getattr(job.plan(), name)
        if isinstance(frame, pl.LazyFrame):  # made on demand: only the columns asked for
            need = pushdown.needed(frame.collect_schema())
            # on the engine the match ran on: a streaming run's lines stream from the PO input
            frame = (frame if need is None else frame.select(need)).collect(engine=job.engine)
        yield frame

    return scan_batches(frames, schema=schema, name=f"scfeeds.reconcile {name}")


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """The outcome of :func:`scfeeds.reconcile`: lazy frames, computed when first collected.

    The match runs once, the first time any of the three frames (or :meth:`summary`) is
    collected, and is shared by all three.

    Attributes
    ----------
    lines
        One row per PO line (see :func:`scfeeds.reconcile` for the columns).
    invoices
        One row per invoice document.
    exceptions
        One row per exception (line, invoice, ASN or receipt level).
    received_from
        ``"receipts"`` when receipts were given, else ``"asn"`` (ASN quantity stood in for the
        receipt); also the ``received_from`` column of :attr:`lines`.
    tolerances
        The tolerances applied.
    inputs
        ``{table: version}`` of the lake tables the match read, when it read a lake
        (``reconcile(lake)``; empty otherwise): ``scan_lake(lake, table,
        snapshot=rec.inputs)`` reads exactly the same rows again, so a report can be
        reproduced after later ingests.
    """

    lines: pl.LazyFrame
    invoices: pl.LazyFrame
    exceptions: pl.LazyFrame
    received_from: Literal["receipts", "asn"]
    tolerances: Tolerances
    _job: _Job = field(repr=False, compare=False)
    inputs: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def _from_job(
        cls,
        job: _Job,
        empty: Callable[[], Plan],
        received_from: Literal["receipts", "asn"],
        tolerances: Tolerances,
        *,
        inputs: Mapping[str, int] | None = None,
    ) -> Reconciliation:
        cache: list[Plan] = []

        def schema_of(name: str) -> Callable[[], pl.Schema]:
            def get() -> pl.Schema:
                if not cache:
                    cache.append(empty())
                frame: pl.DataFrame = getattr(cache[0], name)
                return frame.schema

            return get

        return cls(
            lines=_lazy(job, "lines", schema_of("lines")),
            invoices=_lazy(job, "invoices", schema_of("invoices")),
            exceptions=_lazy(job, "exceptions", schema_of("exceptions")),
            received_from=received_from,
            tolerances=tolerances,
            _job=job,
            inputs=dict(inputs or {}),
        )

    @classmethod
    def from_frames(
        cls,
        lines: pl.DataFrame,
        invoices: pl.DataFrame,
        exceptions: pl.DataFrame,
        *,
        received_from: Literal["receipts", "asn"],
        tolerances: Tolerances | None = None,
    ) -> Reconciliation:
        """A reconciliation over frames already computed (e.g. per-supplier results read back
        from disk and concatenated); they must have the columns :func:`reconcile` produces."""
        plan = Plan(
            lines=lines,
            invoices=invoices,
            exceptions=exceptions,
            received_from=received_from,
            stages={},
        )
        job = _Job(lambda _engine: plan)
        return cls(
            lines=lines.lazy(),
            invoices=invoices.lazy(),
            exceptions=exceptions.lazy(),
            received_from=received_from,
            tolerances=tolerances if tolerances is not None else Tolerances(),
            _job=job,
        )

    def collect(self, *, engine: Engine | None = None) -> Reconciliation:
        """Run the match now, all three frames in one pass, and return a reconciliation whose
        frames are computed (still exposed as ``LazyFrame``): in memory, or for a partitioned
        run on the streaming engine in the parts' files on disk, kept while any of the frames
        lives. A partitioned run's ``lines`` are made when collected, from the parts' few
        integers per PO line and the PO input, only the columns asked for.

        ``engine``: the polars engine every stage is collected with (``"streaming"`` keeps
        each stage's memory bounded by its output). ``None`` (default): the result already
        computed, if any, else ``"auto"``; another engine than the one the kept result ran
        on runs the match again with it.
        """
        plan = self._job.plan(engine)

        def kept(name: Literal["lines", "invoices", "exceptions"]) -> pl.LazyFrame:
            frame: pl.DataFrame | pl.LazyFrame = getattr(plan, name)
            if isinstance(frame, pl.DataFrame):
                return frame.lazy()
            # Made on demand, or read from the parts' files on disk, which live as long as
            # the job's result: the frame holds the job, not only the files' paths.
            return _lazy(self._job, name, frame.collect_schema)

        return Reconciliation(
            lines=kept("lines"),
            invoices=kept("invoices"),
            exceptions=kept("exceptions"),
            received_from=self.received_from,
            tolerances=self.tolerances,
            _job=self._job,
            inputs=self.inputs,
        )

    def timings(self) -> dict[str, float]:
        """Seconds spent in each stage of the match (runs it if it has not run yet)."""
        return self._job.stages()

    def summary(self, *, engine: Engine = "auto") -> ReconciliationSummary:
        """Counts and amount at risk by status, by supplier and by code (computed now)."""
        plans = _summary_plans(self.lines, self.invoices, self.exceptions)
        done = dict(zip(plans, pl.collect_all(list(plans.values()), engine=engine), strict=True))
        return ReconciliationSummary(
            by_status=_by_status(done["line_status"], done["invoice_status"]),
            by_supplier=_by_supplier(done["line_supplier"], done["invoice_supplier"]),
            by_code=_by_code(done["codes"], done["line_once"]),
            totals=pl.concat([done["line_total"], done["invoice_total"]]).with_columns(
                pl.col("count", "with_exceptions").cast(pl.UInt32)
            ),
        )

    def to_html(
        self,
        path: str | os.PathLike[str],
        *,
        title: str | None = None,
        currency: str | None = None,
    ) -> Path:
        """Write the exceptions report: one self-contained HTML page, usable offline.

        A header with money at risk per currency, per supplier and per code, then every
        exception row (largest amount at risk first), sortable by any column and filterable
        by text, supplier, code and minimum amount. Money has two decimals, separators and
        its currency; the evidence shows as document name and position. All text is escaped.

        Parameters
        ----------
        path
            File to write (folders are created); returned.
        title
            Heading and page title (default "Three-way match exceptions").
        currency
            Currency shown for every amount; by default each row's invoice currency, else
            the supplier's most frequent one.
        """
        from scfeeds._report import write_html

        return write_html(self, path, title=title, currency=currency)

    def to_excel(self, path: str | os.PathLike[str], *, currency: str | None = None) -> Path:
        """Write the exceptions workbook (XLSX) and return ``path``.

        Sheet ``Summary`` (totals, money at risk by supplier and by code), ``Exceptions``
        (every row) and one sheet per exception code; every sheet a table with autofilter,
        the row sheets with a frozen header, amounts as numbers in ``#,##0.00`` with a
        ``Currency`` column. Text cells never start a formula (a leading ``'`` is added to
        ``=``, ``+``, ``-``, ``@``, tab and CR). ``currency`` as for :meth:`to_html`.
        """
        from scfeeds._report import write_excel

        return write_excel(self, path, currency=currency)

    def __repr__(self) -> str:
        return (
            f"Reconciliation(received_from={self.received_from!r}, "
            "lines=<LazyFrame>, invoices=<LazyFrame>, exceptions=<LazyFrame>; "
            "call .summary() or .collect())"
        )


_RANK: Final = {s: i for i, s in enumerate(STATUSES)}
_MATCHED: Final = ["MATCHED", "MATCHED_WITHIN_TOLERANCE"]


def _invoice_risk() -> pl.Expr:
    """An invoice's money at risk: nothing when matched, its total when it is a duplicate or
    bills no PO line, else its amount variance."""
    documents = ["DUPLICATE_INVOICE", "DUPLICATE_SUSPECT", "NO_PO_REFERENCE", "SUPPLIER_MISMATCH"]
    return (
        pl.when(pl.col("status").is_in(_MATCHED))
        .then(pl.lit(0, OUT))
        .when(pl.col("status").is_in(documents))
        .then(pl.col("total_amount").abs())
        .otherwise(pl.col("amount_variance").abs())
        .cast(OUT)
    )


def _summary_plans(
    lines: pl.LazyFrame, invoices: pl.LazyFrame, exceptions: pl.LazyFrame
) -> dict[str, pl.LazyFrame]:
    """Every aggregate of the summary, as plans collected together."""
    inv = invoices.with_columns(pl.col("status").cast(pl.String), _risk=_invoice_risk())
    exc = pl.col("status").is_in(_MATCHED).not_()
    line_risk = pl.col("amount_at_risk").sum().cast(OUT)
    inv_risk = pl.col("_risk").sum().cast(OUT)
    # each line's money once, under its first line code (its status when that is one)
    primary = (
        pl.col("flags")
        .cast(pl.List(pl.String))
        .list.eval(pl.element().filter(pl.element().is_in(list(LINE_CODES))))
        .list.first()
    )
    return {
        "line_status": lines.with_columns(pl.col("status").cast(pl.String))
        .group_by("status")
        .agg(count=pl.len(), amount_at_risk=line_risk),
        "invoice_status": inv.group_by("status").agg(count=pl.len(), amount_at_risk=inv_risk),
        "line_supplier": lines.group_by("supplier_id").agg(
            lines=pl.len(), lines_with_exceptions=exc.sum(), line_amount_at_risk=line_risk
        ),
        "invoice_supplier": inv.group_by("supplier_id").agg(
            invoices=pl.len(), invoices_with_exceptions=exc.sum(), invoice_amount_at_risk=inv_risk
        ),
        "codes": exceptions.group_by("code", "level").agg(
            count=pl.len(), exposure=pl.col("amount_at_risk").sum().cast(OUT)
        ),
        "line_once": lines.filter(pl.col("amount_at_risk") != 0)
        .group_by(primary.alias("code"))
        .agg(_once=line_risk)
        .with_columns(level=pl.lit("line")),
        "line_total": lines.select(
            pl.lit("line").alias("level"),
            count=pl.len(),
            with_exceptions=exc.sum(),
            amount_at_risk=line_risk,
        ),
        "invoice_total": inv.select(
            pl.lit("invoice").alias("level"),
            count=pl.len(),
            with_exceptions=exc.sum(),
            amount_at_risk=inv_risk,
        ),
    }


def _by_status(lines: pl.DataFrame, invoices: pl.DataFrame) -> pl.DataFrame:
    return (
        pl.concat(
            [
                lines.select(pl.lit("line").alias("level"), pl.all()),
                invoices.select(pl.lit("invoice").alias("level"), pl.all()),
            ]
        )
        .with_columns(_r=pl.col("status").replace_strict(_RANK, default=len(_RANK)))
        .sort("level", "_r", descending=[True, False])
        .drop("_r")
    )


def _by_supplier(lines: pl.DataFrame, invoices: pl.DataFrame) -> pl.DataFrame:
    return (
        lines.join(invoices, on="supplier_id", how="full", coalesce=True)
        .with_columns(
            pl.col(
                "lines", "lines_with_exceptions", "invoices", "invoices_with_exceptions"
            ).fill_null(0),
            pl.col("line_amount_at_risk", "invoice_amount_at_risk").fill_null(pl.lit(0, OUT)),
        )
        .sort("supplier_id")
    )


def _by_code(codes: pl.DataFrame, line_once: pl.DataFrame) -> pl.DataFrame:
    return (
        codes.join(line_once, on=["code", "level"], how="left")
        .with_columns(
            amount_at_risk=pl.when(pl.col("level") == "line")
            .then(pl.col("_once").fill_null(pl.lit(0, OUT)))
            .otherwise(pl.col("exposure"))
            .cast(OUT)
        )
        .select("code", "level", "count", "amount_at_risk", "exposure")
        .with_columns(_r=pl.col("code").replace_strict(_RANK, default=len(_RANK)))
        .sort("_r", "level")
        .drop("_r")
    )
