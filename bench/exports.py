"""Export reading: scfeeds.read_export vs pandas on the same CSV / XLSX files.

Writes portal exports with ``write_export`` (acme: US dialect with thousands commas and
quoted fields; globex: latin-1, ``;``, decimal comma), then times

- scfeeds: ``read_export`` (header detection, dialect, exact Decimal(18, 4), dates, row checks)
- pandas: ``read_csv`` with the same dialect (thousands, decimal, encoding, dates), floats;
  ``read_excel`` (openpyxl) for XLSX,

each best of ``--repeat`` runs, and prints rows/s and the ratio. Bounded: about a minute with
the defaults on two cores.

    .venv/bin/python bench/exports.py [--rows 1000000] [--xlsx-rows 50000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
import warnings
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pandas as pd
import polars as pl

from scfeeds._exports import read_export, write_export
from scfeeds._presets import PRESETS
from scfeeds.schemas import COLUMNS, empty


def make_po_lines(n: int) -> pl.DataFrame:
    i = pl.int_range(n, dtype=pl.Int64)
    frame = pl.select(
        supplier_id=pl.format("SUP{}", i % 7 + 1),
        po_number=pl.format("45{}", (i // 8).cast(pl.String).str.zfill(6)),
        po_date=(pl.lit(dt.date(2026, 1, 1)) + pl.duration(days=i % 300)).cast(pl.Date),
        line_number=(i % 8 + 1).cast(pl.String),
        item_id=pl.format("SKU-{}", i % 5000),
        description=pl.format("Widget {}, size {}", i % 977, i % 13),
        qty_ordered=((i % 5000) + 1).cast(pl.Decimal(18, 4)),
        uom=pl.when(i % 5 == 0).then(pl.lit("CS")).otherwise(pl.lit("EA")),
        unit_price=((i * 37 % 250000) / 100).cast(pl.Decimal(18, 4)),
        currency=pl.lit("USD"),
    )
    return pl.concat([empty("po_lines"), frame], how="diagonal").cast(
        dict(empty("po_lines").schema)
    )


def race(
    ours: Callable[[], object], theirs: Callable[[], object], repeat: int, theirs_repeat: int
) -> tuple[float, object, float, object]:
    """Best time of each, runs interleaved so that load from other processes hits both."""
    t_ours, t_theirs, out_ours, out_theirs = [], [], None, None
    for i in range(repeat):
        t0 = time.perf_counter()
        out_ours = ours()
        t_ours.append(time.perf_counter() - t0)
        if i < theirs_repeat:
            t0 = time.perf_counter()
            out_theirs = theirs()
            t_theirs.append(time.perf_counter() - t0)
    return min(t_ours), out_ours, min(t_theirs), out_theirs


def pandas_csv(path: Path, preset: str) -> pd.DataFrame:
    p = PRESETS[preset]
    header = p.header("po_lines")
    names = {v: k for k, v in header.items()}
    frame = pd.read_csv(
        path,
        sep=p.delimiter,
        encoding=p.encoding,
        thousands=p.thousands,
        decimal="," if p.decimal_comma else ".",
        # ids and dates as text (else a "." thousands separator eats "15.01.2026")
        dtype={header[c]: str for c in ("line_number", "po_number", "po_date")},
    )
    frame = frame.rename(columns=names)
    frame["po_date"] = pd.to_datetime(frame["po_date"], format=p.date_format).dt.date
    return frame


def pandas_xlsx(path: Path) -> pd.DataFrame:
    header = PRESETS["acme"].header("po_lines")
    frame = pd.read_excel(path, engine="openpyxl", dtype={header["line_number"]: str})
    return frame.rename(columns={v: k for k, v in header.items()})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--xlsx-rows", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    warnings.simplefilter("error")  # a clean file must read without a single warning
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        frame = make_po_lines(args.rows)
        print(f"{'file':<34} {'rows':>9} {'MB':>6} {'scfeeds s':>10} {'pandas s':>9} {'ratio':>6}")
        for preset in ("acme", "globex"):
            path = root / f"po_{preset}.csv"
            write_export(frame, path, table="po_lines", preset=preset, fmt="csv")
            ours, got, theirs, base = race(
                lambda path=path: read_export(path),
                lambda path=path, p=preset: pandas_csv(path, p),
                args.repeat,
                args.repeat,
            )
            assert isinstance(got, pl.DataFrame)
            assert isinstance(base, pd.DataFrame)
            assert got.height == len(base) == args.rows
            assert got["qty_ordered"].sum() == Decimal(float(base["qty_ordered"].sum()))
            mb = path.stat().st_size / 1e6
            label = f"CSV {preset} ({PRESETS[preset].encoding}, {PRESETS[preset].delimiter!r})"
            print(
                f"{label:<34} {args.rows:>9,} {mb:>6.1f} {ours:>10.2f} {theirs:>9.2f} "
                f"{theirs / ours:>5.1f}x"
            )
        small = frame.head(args.xlsx_rows)
        path = root / "po_acme.xlsx"
        write_export(small, path, table="po_lines", preset="acme", fmt="xlsx")
        # openpyxl is slow: one run of it
        ours, got, theirs, base = race(
            lambda: read_export(path), lambda: pandas_xlsx(path), args.repeat, 1
        )
        assert isinstance(got, pl.DataFrame)
        assert isinstance(base, pd.DataFrame)
        assert got.height == len(base) == args.xlsx_rows
        mb = path.stat().st_size / 1e6
        print(
            f"{'XLSX acme (calamine vs openpyxl)':<34} {args.xlsx_rows:>9,} {mb:>6.1f} "
            f"{ours:>10.2f} {theirs:>9.2f} {theirs / ours:>5.1f}x"
        )
        print("ratio = pandas time / scfeeds time (higher is faster for scfeeds)")
        print(f"columns compared: {', '.join(COLUMNS['po_lines'])}")


if __name__ == "__main__":
    main()
