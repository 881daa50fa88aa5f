"""cXML reading: streaming scan_xml vs xmltodict.parse of the whole document.

(Named cxml.py, not xml.py: a bench/xml.py shadows the standard library's ``xml`` package for
every script run from bench/, since Python puts the script's folder first on sys.path.)

Writes one cXML InvoiceDetailRequest per size (``to_cxml``), then, each in a fresh process so
that peak RSS is its own:

- ``scan_xml(...)``: the guarded expat reader, whose handlers build rows as the document
  streams past, handed to polars in batches, then counted (nothing kept) or written to Parquet;
- ``read_xml``: the same, collected into one DataFrame (memory holds the output);
- ``xmltodict.parse`` of the whole document (the tree only; no canonical frame at all).

Prints MB per CPU second (wall time is shown too; on a shared machine it mostly measures the
neighbours) and peak RSS (and RSS above a process that only imports the modules). Streaming
RSS should stay flat as the document grows; the whole-document tree grows with it. Bounded
to about a minute with the defaults.

    .venv/bin/python bench/cxml.py [--items 20000 80000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

import polars as pl

CHILD = r"""
import json, sys, time
mode, path, out = sys.argv[1], sys.argv[2], sys.argv[3]
import polars as pl, xmltodict
from scfeeds._cxml import read_xml, scan_xml
t0, c0 = time.perf_counter(), time.process_time()
rows = None
if mode == "scan_xml -> count":
    rows = scan_xml(path).select(pl.len()).collect(engine="streaming").item()
elif mode == "scan_xml -> parquet":
    scan_xml(path).sink_parquet(out, row_group_size=10_000)
    rows = pl.scan_parquet(out).select(pl.len()).collect().item()
elif mode == "read_xml (DataFrame)":
    rows = read_xml(path).height
elif mode == "xmltodict.parse (whole)":
    with open(path, "rb") as fh:
        doc = xmltodict.parse(fh)
    rows = len(doc["cXML"]["Request"]["InvoiceDetailRequest"]["InvoiceDetailOrder"])
elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking parent.
peak_kb = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"seconds": elapsed, "cpu": cpu, "peak_mb": peak_kb / 1024, "rows": rows}))
"""

MODES = (
    "scan_xml -> count",
    "scan_xml -> parquet",
    "read_xml (DataFrame)",
    "xmltodict.parse (whole)",
)


def make_invoice(items: int) -> pl.DataFrame:
    from scfeeds.schemas import empty, schema

    i = pl.int_range(items, dtype=pl.Int64)
    frame = pl.select(
        supplier_id=pl.lit("SUP001"),
        invoice_number=pl.lit("INV-000042K"),
        invoice_date=pl.lit(dt.date(2026, 1, 31)),
        po_number=pl.format("45{}", (i // 50).cast(pl.String).str.zfill(6)),
        line_number=(i % 50 + 1).cast(pl.String),
        item_id=pl.format("SKU-{}", i % 5000),
        qty_invoiced=(i % 40 + 1).cast(pl.Decimal(18, 4)),
        uom=pl.lit("EA"),
        unit_price=pl.lit(Decimal("2.5")).cast(pl.Decimal(18, 4)),
        currency=pl.lit("USD"),
    ).with_columns(line_amount=pl.col("qty_invoiced") * pl.col("unit_price"))
    out = pl.concat([empty("invoice_lines"), frame], how="diagonal_relaxed")
    return out.cast(dict(schema("invoice_lines")))  # type: ignore[arg-type]


def run(mode: str, path: Path, out: Path) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(path), str(out)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def baseline_mb() -> float:
    code = (
        "import polars, scfeeds._cxml;"
        "print(next(int(l.split()[1]) for l in open('/proc/self/status')"
        " if l.startswith('VmHWM')) / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, nargs="+", default=[10_000, 40_000])
    args = ap.parse_args()
    from scfeeds._cxml import to_cxml

    base = baseline_mb()
    print(f"baseline RSS after imports: {base:.0f} MB")
    print(
        f"{'mode':<26} {'items':>8} {'MB':>6} {'wall s':>6} {'cpu s':>6} {'MB/cpu s':>8} "
        f"{'peak MB':>8} {'+base':>6}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.items:
            path = Path(tmp) / f"invoice_{n}.xml"
            data = to_cxml(make_invoice(n), table="invoice_lines", payload_id="b", timestamp="t")
            path.write_bytes(data)
            size = len(data) / 1e6
            del data
            for mode in MODES:
                r = run(mode, path, Path(tmp) / "out.parquet")
                if mode != MODES[-1]:
                    assert r["rows"] == n, r
                print(
                    f"{mode:<26} {n:>8,} {size:>6.1f} {r['seconds']:>6.2f} {r['cpu']:>6.2f} "
                    f"{size / r['cpu']:>8.1f} {r['peak_mb']:>8.0f} {r['peak_mb'] - base:>6.0f}"
                )


if __name__ == "__main__":
    main()
