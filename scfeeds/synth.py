"""Seeded synthetic supplier feeds with a ground truth of injected faults.

``generate`` writes a coherent world of purchase orders, ship notices, invoices and warehouse
receipts in every format scfeeds reads (X12 850/856/810, CSV and XLSX portal exports, cXML),
together with what a correct reader returns for each file (``world/``), the answer key of the
injected discrepancies (``truth.parquet``) and, on request, damaged files with the error a
reader must report (``damaged.parquet``). The layout is specified in ``docs/CONTRACTS.md``.

>>> import tempfile
>>> from scfeeds import synth
>>> s = synth.generate(tempfile.mkdtemp(), seed=1, pos=40, formats=("x12", "csv"))
>>> s.counts["po_lines"] > 40
True
>>> set(synth.load_truth(s.dest)["fault"]) == set(synth.FAULTS)  # each fault at least once
True
>>> synth.load_world(s.dest, "invoice_lines").collect().height > 0
True

Public names: :func:`generate` -> :class:`SynthSummary`, :class:`SynthConfig`,
:func:`load_world`, :func:`load_truth`, :func:`load_damaged`, :data:`FAULTS` (fault -> exception
codes), :data:`DAMAGE_KINDS` (damage kind -> reader rule), :func:`add_cli` for ``scfeeds synth``.

Same seed, same bytes: nothing depends on the clock, hash order or the machine. Generation is
streamed in batches of ``SynthConfig.batch_pos`` POs, so memory stays flat however many
lines are asked for.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal

import polars as pl
from tqdm import tqdm

from scfeeds._synth.config import (
    DAMAGE_KINDS,
    DOC_TABLES,
    FAULTS,
    FORMATS,
    Format,
    Supplier,
    SynthConfig,
    default_formats,
    make_supplier,
    resolve_faults,
)
from scfeeds._synth.damage import make_damaged
from scfeeds._synth.files import WriterState, catalog_frame
from scfeeds._synth.store import load_damaged, load_truth, load_world
from scfeeds._synth.world import TRUTH_SCHEMA, Counters, ItemCatalog, make_batch, make_catalog
from scfeeds._synth.writer import write_batch
from scfeeds.exceptions import ConfigurationError
from scfeeds.schemas import TABLES

__all__ = [
    "DAMAGE_KINDS",
    "FAULTS",
    "SynthConfig",
    "SynthSummary",
    "add_cli",
    "generate",
    "load_damaged",
    "load_truth",
    "load_world",
]

# What generate() owns inside dest: removed before a re-run so stale files never linger.
_OWNED: Final = ("feeds", "world", "damaged", "catalog.parquet", "truth.parquet", "damaged.parquet")


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`generate` wrote.

    Attributes
    ----------
    dest
        The world's root folder.
    counts
        Canonical rows per table (``po_lines``, ``asn_lines``, ``invoice_lines``, ``receipts``).
    files
        Feed files written (rows of ``catalog.parquet``).
    faults
        Injected faults (distinct fault instances; ``truth.parquet`` has one row per code).
    damaged
        Damaged files written.
    elapsed
        Wall-clock seconds.
    """

    dest: Path
    counts: Mapping[str, int] = field(hash=False)
    files: int
    faults: int
    damaged: int
    elapsed: float

    @property
    def lines_per_s(self) -> float:
        """PO lines generated per second."""
        return self.counts.get("po_lines", 0) / self.elapsed if self.elapsed > 0 else 0.0

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}={v:,}" for k, v in self.counts.items())
        return (
            f"SynthSummary(dest='{self.dest}', {counts}, files={self.files:,}, "
            f"faults={self.faults:,}, damaged={self.damaged}, elapsed={self.elapsed:.2f}s, "
            f"lines/s={self.lines_per_s:,.0f})"
        )


def _supplier_formats(
    n: int, formats: tuple[Format, ...], config: SynthConfig
) -> dict[tuple[int, str], tuple[Format, ...]]:
    out: dict[tuple[int, str], tuple[Format, ...]] = {}
    custom = config.supplier_formats or {}
    unknown = sorted(set(custom) - {f"SUP{i + 1:03d}" for i in range(n)})
    if unknown:
        raise ConfigurationError(f"supplier_formats names unknown supplier(s) {', '.join(unknown)}")
    for i in range(n):
        chosen: dict[str, tuple[Format, ...]] = {
            str(k): v for k, v in default_formats(i, formats).items()
        }
        for table, fmts in custom.get(f"SUP{i + 1:03d}", {}).items():
            if table not in DOC_TABLES:
                raise ConfigurationError(
                    f"supplier_formats: unknown table {table!r}; expected {', '.join(DOC_TABLES)}"
                )
            bad = [f for f in fmts if f not in FORMATS]
            if not fmts or len(fmts) > 2 or bad:
                raise ConfigurationError(
                    f"supplier_formats[SUP{i + 1:03d}][{table}] must be one or two of "
                    f"{', '.join(FORMATS)}, got {fmts!r}"
                )
            chosen[table] = tuple(fmts)
        for table, fmts in chosen.items():
            out[(i, table)] = fmts
    return out


def _prepare(root: Path) -> None:
    if root.exists() and any(root.iterdir()):
        if not (root / "catalog.parquet").exists():
            raise ConfigurationError(
                f"{root} is not empty and holds no synth world; pass an empty or new folder"
            )
        for name in _OWNED:
            target = root / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    root.mkdir(parents=True, exist_ok=True)


def _damage_kinds(damaged: bool | Iterable[str]) -> tuple[str, ...]:
    if damaged is True:
        return tuple(DAMAGE_KINDS)
    if damaged is False or damaged is None:
        return ()
    kinds = tuple(damaged)
    unknown = sorted(set(kinds) - set(DAMAGE_KINDS))
    if unknown:
        raise ConfigurationError(
            f"unknown damage kind(s) {', '.join(unknown)}; expected {', '.join(DAMAGE_KINDS)}"
        )
    return kinds


def generate(
    dest: str | Path,
    *,
    seed: int = 0,
    suppliers: int = 6,
    pos: int = 200,
    lines_per_po: int | tuple[int, int] = (1, 8),
    formats: Iterable[str] = ("x12", "csv", "xlsx", "xml"),
    faults: str | Mapping[str, float] = "default",
    damaged: bool | Iterable[str] = False,
    config: SynthConfig | None = None,
    progress: Callable[[int, int], object] | None = None,
    layout: Literal["files", "documents"] = "files",
) -> SynthSummary:
    """Write a seeded synthetic supplier world with its answer key.

    Parameters
    ----------
    dest
        Folder to write (created; a previous synth world in it is replaced, any other
        non-empty folder is refused).
    seed
        Everything is drawn from it: the same seed gives byte-identical files.
    suppliers
        Number of trading partners ``SUP001`` ... Each has an export preset, an X12 dialect
        (separators, terminator, ID qualifier, N1 qualifier) and formats per table.
    pos
        Purchase orders to generate (lines per PO drawn from ``lines_per_po``).
    lines_per_po
        Lines per PO: an int for a fixed count, or an inclusive range ``(low, high)``.
    formats
        Formats the suppliers send (``x12``, ``csv``, ``xlsx``, ``xml``); each supplier sends
        each table in one or two of them (see ``SynthConfig.supplier_formats``). Receipts are
        always warehouse CSVs.
    faults
        ``"default"``: each fault of :data:`FAULTS` at a small rate, each at least once when
        the first batch has at least 40 PO lines; ``"none"``: a clean world; or a mapping
        fault -> rate.
    damaged
        ``True`` writes one damaged file of each kind of :data:`DAMAGE_KINDS` that the
        formats allow, an iterable writes the kinds named (an error if impossible); see
        ``damaged.parquet``.
    config
        :class:`SynthConfig` for everything else (rates, formats per supplier, dates, split
        probabilities, batch and file sizes).
    progress
        Called after each batch with ``(POs written, POs in total)``; ``None`` is silent.
    layout
        How documents are cut into files. ``"files"`` (default): a few big files per supplier
        and table (up to ``SynthConfig.x12_sets_per_file`` transaction sets per interchange,
        one export per batch). ``"documents"``, as suppliers send them: one X12 interchange
        per PO / ship notice / invoice, one cXML document per document, one export per
        supplier, table and document date (a daily CSV / XLSX; receipts per receipt date).
        Same seed, same world: the documents, formats and answer key (``truth.parquet``) are
        those of ``"files"``; only the files (and so ``source``, ``position`` and the
        interchange control numbers of the world's rows) differ.

    Returns
    -------
    SynthSummary
        Counts, files, faults, timing.

    Examples
    --------
    >>> import tempfile
    >>> s = generate(tempfile.mkdtemp(), seed=3, pos=30, formats=("x12",), faults="none")
    >>> s.faults
    0
    """
    # Long only by its docstring (every option documented); the body is stages, ~45 lines.
    t0 = time.perf_counter()
    cfg = config or SynthConfig()
    ordered = _check_options(tuple(formats), seed=seed, suppliers=suppliers, pos=pos, layout=layout)
    lo, hi = _lines_per_po(lines_per_po)
    rates = resolve_faults(cfg.fault_rates if cfg.fault_rates is not None else faults)
    kinds = _damage_kinds(damaged)

    root = Path(dest)
    _prepare(root)
    sups = tuple(make_supplier(i) for i in range(suppliers))
    catalog = make_catalog(seed, suppliers, cfg.items_per_supplier)
    (root / "world").mkdir(parents=True, exist_ok=True)
    catalog.conversions().write_parquet(root / "world" / "conversions.parquet")
    run = _Run(
        root=root,
        seed=seed,
        suppliers=sups,
        catalog=catalog,
        rates=rates,
        lines_per_po=(lo, hi),
        config=cfg,
        writer=WriterState(
            root=root,
            seed=seed,
            suppliers=sups,
            formats=_supplier_formats(suppliers, ordered, cfg),
            fallback=next((f for f in ordered if f != "xml"), None),
            xlsx_fallback=next((f for f in ordered if f not in ("xml", "xlsx")), None),
            config=cfg,
            layout=layout,
        ),
    )
    for b, start in enumerate(range(0, pos, cfg.batch_pos)):
        force_all = b == 0 and faults == "default" and cfg.fault_rates is None
        _write_one_batch(run, b, start, min(cfg.batch_pos, pos - start), force_all=force_all)
        if progress is not None:
            progress(min(start + cfg.batch_pos, pos), pos)
    _write_truth(run)
    cat = catalog_frame(run.writer)
    cat.write_parquet(root / "catalog.parquet")

    dmg = make_damaged(root, cat, kinds, sups, strict=damaged is not True)
    if kinds:
        dmg.write_parquet(root / "damaged.parquet")
    return SynthSummary(
        dest=root,
        counts=MappingProxyType(run.counts),
        files=cat.height,
        faults=run.n_faults,
        damaged=dmg.height,
        elapsed=time.perf_counter() - t0,
    )


def _check_options(
    fmts: tuple[str, ...], *, seed: object, suppliers: object, pos: object, layout: object
) -> tuple[Format, ...]:
    """The formats asked for, in order without repeats; a ConfigurationError for a bad option."""
    bad = [f for f in fmts if f not in FORMATS]
    if not fmts or bad:
        raise ConfigurationError(f"formats must be a non-empty subset of {FORMATS}, got {fmts!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ConfigurationError(f"seed must be an int >= 0, got {seed!r}")
    if not isinstance(suppliers, int) or suppliers < 1:
        raise ConfigurationError(f"suppliers must be a positive int, got {suppliers!r}")
    if not isinstance(pos, int) or pos < 1:
        raise ConfigurationError(f"pos must be a positive int, got {pos!r}")
    if layout not in ("files", "documents"):
        raise ConfigurationError(f"layout must be 'files' or 'documents', got {layout!r}")
    return tuple(dict.fromkeys(fmts))  # type: ignore[arg-type]


@dataclass
class _Run:
    """One :func:`generate` call: what every batch draws from, and what they have written."""

    root: Path
    seed: int
    suppliers: tuple[Supplier, ...]
    catalog: ItemCatalog
    rates: Mapping[str, float]
    lines_per_po: tuple[int, int]
    config: SynthConfig
    writer: WriterState
    counters: Counters = field(default_factory=Counters)
    # po_acks is counted only in a world that has 855s (performance=True)
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys((t for t in TABLES if t != "po_acks"), 0)
    )
    truth_parts: list[Path] = field(default_factory=list)
    n_faults: int = 0

    @property
    def tmp_truth(self) -> Path:
        return self.root / "world" / "_truth"


def _write_one_batch(run: _Run, b: int, start: int, n_po: int, *, force_all: bool) -> None:
    """Draw batch ``b`` and write its feed files, world parts and answer-key part."""
    batch = make_batch(
        seed=run.seed,
        batch=b,
        po_start=start,
        n_po=n_po,
        lines_per_po=run.lines_per_po,
        suppliers=run.suppliers,
        catalog=run.catalog,
        rates=run.rates,
        config=run.config,
        counters=run.counters,
        force_all=force_all,
    )
    for table, rows in write_batch(run.writer, batch, b).items():
        part = run.root / "world" / table / f"part-{b:05d}.parquet"
        part.parent.mkdir(parents=True, exist_ok=True)
        rows.write_parquet(part)
        run.counts[table] = run.counts.get(table, 0) + rows.height
    if batch.truth.height:
        run.tmp_truth.mkdir(parents=True, exist_ok=True)
        run.truth_parts.append(run.tmp_truth / f"part-{b:05d}.parquet")
        batch.truth.write_parquet(run.truth_parts[-1])
        run.n_faults += batch.truth.unique(
            ["fault", "supplier_id", "po_number", "line_number", "invoice_number"]
        ).height


def _write_truth(run: _Run) -> None:
    """``truth.parquet`` from the batches' parts (streamed), or empty."""
    if run.truth_parts:
        pl.scan_parquet(run.truth_parts).sink_parquet(run.root / "truth.parquet")
        shutil.rmtree(run.tmp_truth)
    else:
        pl.DataFrame(schema=TRUTH_SCHEMA).write_parquet(run.root / "truth.parquet")


def _lines_per_po(value: object) -> tuple[int, int]:
    """``3`` -> ``(3, 3)``; ``(low, high)`` as is; anything else is a configuration error."""

    def whole(v: object) -> int | None:
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    if whole(value) is not None:
        lo = hi = whole(value)
    elif isinstance(value, tuple | list) and len(value) == 2:
        lo, hi = whole(value[0]), whole(value[1])
    else:
        lo = hi = None
    if lo is None or hi is None or not 1 <= lo <= hi:
        raise ConfigurationError(
            "lines_per_po must be an int >= 1 (a fixed count) or (low, high) with "
            f"1 <= low <= high, got {value!r}"
        )
    return lo, hi


# -- command line ------------------------------------------------------------------------


def _lines_range(text: str) -> tuple[int, int]:
    try:
        lo, _, hi = text.partition("-")
        out = (int(lo), int(hi or lo))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A-B (e.g. 1-8), got {text!r}") from None
    if not 1 <= out[0] <= out[1]:
        raise argparse.ArgumentTypeError(f"expected 1 <= A <= B, got {text!r}")
    return out


def add_cli(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Register ``scfeeds synth`` on an ``argparse`` subparsers object.

    Parameters
    ----------
    subparsers
        What ``ArgumentParser.add_subparsers()`` returned; the new parser's ``func`` default is
        :func:`cmd_synth`.

    Returns
    -------
    argparse.ArgumentParser
        The ``synth`` subparser.
    """
    p: argparse.ArgumentParser = subparsers.add_parser(
        "synth",
        help="write a seeded synthetic supplier world with its answer key",
        description="Write POs, ship notices, invoices and receipts in X12/CSV/XLSX/cXML, "
        "the canonical rows they hold (world/), the injected faults (truth.parquet) and, "
        "with --damaged, damaged files (damaged.parquet).",
    )
    p.add_argument("dest", help="output folder (a previous synth world in it is replaced)")
    p.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default 0)")
    p.add_argument("--pos", type=int, default=200, help="purchase orders (default 200)")
    p.add_argument("--suppliers", type=int, default=6, help="trading partners (default 6)")
    p.add_argument(
        "--lines-per-po",
        type=_lines_range,
        default=(1, 8),
        metavar="A-B",
        help="inclusive range of lines per PO (default 1-8)",
    )
    p.add_argument(
        "--formats",
        default="x12,csv,xlsx,xml",
        help="comma-separated subset of x12,csv,xlsx,xml (default: all)",
    )
    p.add_argument(
        "--faults",
        choices=("default", "none"),
        default="default",
        help="default: every fault kind at a small rate; none: a clean world",
    )
    p.add_argument("--damaged", action="store_true", help="also write damaged files")
    p.set_defaults(func=cmd_synth)
    return p


def cmd_synth(args: argparse.Namespace) -> int:
    """Handler of ``scfeeds synth``: generate and print the summary line.

    A progress bar goes to stderr when it is a terminal; CI logs get the summary line only.
    """
    bar: Any = None
    if sys.stderr.isatty():
        bar = tqdm(total=args.pos, unit="PO", desc="synth", file=sys.stderr)

    def step(done: int, total: int) -> None:
        if bar is not None:
            bar.update(done - bar.n)

    try:
        summary = _generate_from_args(args, step)
    finally:
        if bar is not None:
            bar.close()
    print(repr(summary), flush=True)
    return 0


def _generate_from_args(args: argparse.Namespace, step: Callable[[int, int], None]) -> SynthSummary:
    return generate(
        args.dest,
        seed=args.seed,
        suppliers=args.suppliers,
        pos=args.pos,
        lines_per_po=args.lines_per_po,
        formats=tuple(f.strip() for f in args.formats.split(",") if f.strip()),
        faults=args.faults,
        damaged=args.damaged,
        progress=step,
    )
