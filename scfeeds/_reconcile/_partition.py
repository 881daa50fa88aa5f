"""One partitioned run under every way in: frames or a lake, here or on a Dask cluster.

POs are split into parts of whole suppliers of about ``partition_lines`` PO lines (every
rule holds within a supplier); each part runs the same match (:func:`run_part`, a plain
top-level function so that a Dask worker can run it) and the parts are combined into the
rows a single run gives (:func:`combine`). The only cross-supplier rule,
``SUPPLIER_MISMATCH``, looks up the few PO numbers of unmatched documents in every supplier's
POs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import heapq
import shutil
import tempfile
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import polars as pl

from scfeeds._distributed import map_on_cluster
from scfeeds._lake import scan_lake
from scfeeds._reconcile._engine import (
    KEY,
    MATCHED,
    Engine,
    Frame,
    Plan,
    _prep,
    public_lines,
    used_columns,
    warn_units,
)
from scfeeds._reconcile._num import raw4
from scfeeds._reconcile._stages import EXCEPTION_ORDER, build
from scfeeds._reconcile._tolerances import Tolerances
from scfeeds.schemas import TableName


class Frames(NamedTuple):
    """The four inputs of a match (``receipts``: ``None`` when the ASN stands in)."""

    po: Frame
    asn: Frame
    invoice: Frame
    receipts: Frame | None

    def frames(self) -> Frames:
        return self


@dataclass(frozen=True, slots=True)
class LakeTables:
    """The tables of a lake read at one snapshot (or ``as_of``): what a worker needs to scan
    them itself (small, picklable)."""

    lake: str
    snapshot: Mapping[str, int] | None
    as_of: dt.datetime | None
    storage_options: Mapping[str, str] | None
    receipts: bool

    def frames(self) -> Frames:
        opts = dict(self.storage_options) if self.storage_options else None

        def scan(table: str) -> pl.LazyFrame:
            return scan_lake(
                self.lake, table, snapshot=self.snapshot, as_of=self.as_of, storage_options=opts
            )

        receipts = scan("receipts") if self.receipts else None
        return Frames(scan("po_lines"), scan("asn_lines"), scan("invoice_lines"), receipts)


@dataclass(frozen=True, slots=True)
class Task:
    """Everything one part's match needs besides its supplier filter. ``po_numbers``: every
    supplier's PO numbers when ``source`` holds one part's rows only (split on disk), whose
    ``_row`` column then numbers the rows of the whole input (``numbered``)."""

    source: Frames | LakeTables
    tol: Tolerances
    conversions: Frame | None
    engine: Engine = "auto"
    po_numbers: pl.LazyFrame | None = None
    numbered: bool = False


def run_part(task: Task, where: pl.Expr | None) -> Plan:
    """The match of one part (``where``: its supplier filter), compact (see :func:`combine`)."""
    return _match(task, task.source.frames(), where=where)


def _match(task: Task, f: Frames, *, where: pl.Expr | None = None, whole: bool = False) -> Plan:
    """The match of ``f``: the whole input in one go, or a part of it (``where``)."""
    # a part looks the PO numbers of its unmatched documents up in every supplier's POs
    known = task.po_numbers
    if known is None and not whole:
        known = f.po.lazy().select(pl.col("po_number").cast(pl.String))
    return build(
        f.po,
        f.asn,
        f.invoice,
        receipts=f.receipts,
        tol=task.tol,
        conversions=task.conversions,
        engine=task.engine,
        where=where,
        compact=not whole,
        po_numbers=known,
        numbered=task.numbered,
    )


def run(task: Task, *, partition_lines: int, cluster: object | None) -> Plan:
    """The whole match: in one go when the POs fit in one part and no cluster is given,
    else part by part (here, one after the other, or one task per part on the cluster).

    Parts run here on the streaming engine read the inputs once, split by part into
    temporary Parquet files (each part then reads only its own rows): the least memory.
    Otherwise each part filters the inputs to its suppliers.
    """
    f = task.source.frames()
    members = packing(f.po, partition_lines)
    if members is None and cluster is None:
        plan = _match(task, f, whole=True)
    elif cluster is not None:
        parts = _filters(members) if members is not None else [None]
        plans = map_on_cluster(cluster, run_part, [(task, where) for where in parts])
        plan = combine(plans, f.po, receipts_given=f.receipts is not None)
    elif task.engine == "streaming" and members is not None:
        # memory bounded by one part: its inputs and its results both go to disk
        results = Path(tempfile.mkdtemp(prefix="scfeeds-reconcile-results-"))
        try:
            with tempfile.TemporaryDirectory(prefix="scfeeds-reconcile-") as tmp:
                clock = time.perf_counter()
                tasks = _split(task, f, members, Path(tmp), partition_lines)
                split = time.perf_counter() - clock
                plans = [
                    _on_disk(run_part(t, None), results / f"{b:05d}") for b, t in enumerate(tasks)
                ]
            plan = combine(plans, f.po, receipts_given=f.receipts is not None)
        except BaseException:
            shutil.rmtree(results, ignore_errors=True)
            raise
        # the result files go with the plan (kept by the Reconciliation and its frames)
        weakref.finalize(plan, shutil.rmtree, results, True)
        plan.stages["split inputs"] = split
    else:
        # (the inputs opened above: a lake's tables are not opened again for every part)
        plans = [_match(task, f, where=where) for where in _filters(members or [])]
        plan = combine(plans, f.po, receipts_given=f.receipts is not None)
    warn_units(plan.unconverted)
    return plan


def _split(
    task: Task, f: Frames, members: list[list[str]], dest: Path, chunk_rows: int
) -> list[Task]:
    """One task per part over its own rows of every input (see :func:`_spill`)."""
    folders = [
        None if frame is None else _spill(frame, table, members, dest / table, chunk_rows)
        for table, frame in zip(MATCHED, f, strict=True)
    ]

    def part(b: int) -> Frames:
        return Frames(
            *(
                None if frame is None or where is None else _scan_part(where[b], frame)
                for frame, where in zip(f, folders, strict=True)
            )  # type: ignore[arg-type]
        )

    known = f.po.lazy().select(pl.col("po_number").cast(pl.String))
    return [
        dataclasses.replace(task, source=part(b), po_numbers=known, numbered=True)
        for b in range(len(members))
    ]


def _spill(
    frame: Frame, table: TableName, members: list[list[str]], dest: Path, chunk_rows: int
) -> list[Path]:
    """Split ``frame`` by part into ``dest/<part>/<chunk>.parquet``, reading it one slice of
    ``chunk_rows`` rows at a time (memory: one slice) and keeping only the columns the match
    reads. Rows keep their input number in ``_row`` and their order. One folder per part."""
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
    return folders


def _scan_part(folder: Path, frame: Frame) -> pl.LazyFrame:
    """The rows of one part (see :func:`_spill`); an empty frame when it has none."""
    if any(folder.glob("*.parquet")):
        return pl.scan_parquet(folder / "*.parquet")
    return frame.lazy().with_row_index("_row").head(0)


def _filters(members: list[list[str]]) -> list[pl.Expr | None]:
    """Supplier filters, one per part; the first also takes rows without a supplier or of
    suppliers without PO lines."""
    if not members:
        return [None]
    col = pl.col("supplier_id")

    def among(values: list[str]) -> pl.Expr:
        return col.is_in(pl.Series(values, dtype=pl.String).implode())

    filters: list[pl.Expr | None] = [among(m) for m in members]
    known = [s for m in members for s in m]
    filters[0] = among(members[0]) | col.is_null() | ~among(known)
    return filters


def packing(po: Frame, partition_lines: int) -> list[list[str]] | None:
    """The suppliers of each part, or ``None`` when the input fits in one.

    Suppliers are packed largest first into the part with the fewest PO lines so far (so
    parts stay near ``partition_lines`` however many suppliers there are; a supplier larger
    than that is a part of its own). Rows of suppliers without PO lines, and rows without a
    supplier, go with the first part.
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


def _on_disk(plan: Plan, folder: Path) -> Plan:
    """A part's result written to ``folder`` (values, invoices with their first input row,
    exceptions) and a plan that scans it: the part's memory is freed before the next runs."""
    folder.mkdir(parents=True)
    invoices = plan.invoices.lazy()
    if plan.invoice_rows is not None:
        invoices = invoices.with_columns(_first=pl.lit(plan.invoice_rows))
    frames = {"values": plan.lines.lazy(), "invoices": invoices, "exceptions": plan.exceptions}
    for name, frame in frames.items():
        frame.lazy().collect().write_parquet(folder / f"{name}.parquet", compression="lz4")
    return dataclasses.replace(
        plan,
        lines=pl.scan_parquet(folder / "values.parquet"),
        invoices=pl.scan_parquet(folder / "invoices.parquet"),
        exceptions=pl.scan_parquet(folder / "exceptions.parquet"),
        invoice_rows=None,
    )


def combine(plans: list[Plan], po: Frame, *, receipts_given: bool) -> Plan:
    """One plan from part plans (run with ``compact=True``), rows in the order a single run
    gives: lines in PO input order, invoices in "first seen" order, exceptions sorted as in
    :func:`build`.

    The parts keep only a few integers per PO line (:data:`LINE_VALUES`); the public lines
    are a plan over the PO input in its own order joined with those integers on the PO row:
    no reordering copy of the results, and no decimal column held until one is asked for.
    """
    if all(isinstance(p.exceptions, pl.LazyFrame) for p in plans):
        return _combine_on_disk(plans, po, receipts_given=receipts_given)
    values = pl.concat([p.lines.lazy().collect() for p in plans], rechunk=False)
    invoices = pl.concat([_eager(p.invoices) for p in plans], how="vertical", rechunk=False)
    invoice_rows = pl.concat([p.invoice_rows for p in plans if p.invoice_rows is not None])
    exceptions = pl.concat([_eager(p.exceptions) for p in plans], how="vertical", rechunk=False)
    stages: dict[str, float] = {}
    for p in plans:
        for stage, seconds in p.stages.items():
            stages[stage] = stages.get(stage, 0.0) + seconds
    received_from = plans[0].received_from
    unconverted = sum(p.unconverted for p in plans)
    plans.clear()  # the caller's list: the parts' frames are freed as they are combined
    clock = time.perf_counter()
    po_lf = _prep(po, "po_lines", "po").select(
        "_row", *KEY, "item_id", "uom", "unit_price", _o=raw4(pl.col("qty_ordered")).fill_null(0)
    )
    # An inner join: PO rows that repeat a key were left out by the parts. Left lazy: the
    # public columns (16-byte decimals, strings) are made when asked for, and only those.
    lines = public_lines(
        po_lf.join(values.lazy(), on="_row", how="inner", maintain_order="left"),
        receipts_given=receipts_given,
    )
    by = ["invoice_date", *(["source"] if "source" in invoices.columns else []), "_first"]
    invoices = invoices.with_columns(_first=invoice_rows).sort(by, nulls_last=True)
    stages["combine"] = time.perf_counter() - clock
    return Plan(
        lines=lines,
        invoices=invoices.drop("_first"),
        exceptions=exceptions.sort(*EXCEPTION_ORDER, nulls_last=True),
        received_from=received_from,
        stages=stages,
        invoice_rows=invoices.get_column("_first"),
        unconverted=unconverted,
    )


def _eager(frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    return frame if isinstance(frame, pl.DataFrame) else frame.collect()


def _combine_on_disk(plans: list[Plan], po: Frame, *, receipts_given: bool) -> Plan:
    """:func:`combine` of parts kept on disk (:func:`_on_disk`): the same rows, as scans."""
    stages: dict[str, float] = {}
    for p in plans:
        for stage, seconds in p.stages.items():
            stages[stage] = stages.get(stage, 0.0) + seconds
    clock = time.perf_counter()
    values = pl.concat([p.lines.lazy() for p in plans])
    po_lf = _prep(po, "po_lines", "po").select(
        "_row", *KEY, "item_id", "uom", "unit_price", _o=raw4(pl.col("qty_ordered")).fill_null(0)
    )
    lines = public_lines(
        po_lf.join(values, on="_row", how="inner", maintain_order="left"),
        receipts_given=receipts_given,
    )
    invoices = pl.concat([p.invoices.lazy() for p in plans], how="vertical")
    names = invoices.collect_schema().names()
    by = ["invoice_date", *(["source"] if "source" in names else []), "_first"]
    exceptions = pl.concat([p.exceptions.lazy() for p in plans], how="vertical")
    stages["combine"] = time.perf_counter() - clock
    return Plan(
        lines=lines,
        invoices=invoices.sort(by, nulls_last=True).drop("_first"),
        exceptions=exceptions.sort(*EXCEPTION_ORDER, nulls_last=True),
        received_from=plans[0].received_from,
        stages=stages,
        invoice_rows=None,
        unconverted=sum(p.unconverted for p in plans),
    )
