"""X12 reader benchmark: scfeeds vs pyx12, a naive Python split loop and polars.read_csv.

Run: ``.venv/bin/python bench/x12.py`` (``--pos 60000`` for about 30 MB of 850s; ``--quick``
for a smoke run). The input is written by ``scfeeds.synth`` (one supplier, so every tool reads
the same single-dialect bytes), its 850 / 856 / 810 files concatenated into one file each.
Every measurement runs in a fresh subprocess so that its peak RSS is its own; times are the
best of ``--repeat`` runs. pyx12 is time-capped and its throughput extrapolated from the share
of segments it got through.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this folder would come first on sys.path, and bench/xml.py would shadow the
# standard library's xml package: import from the project root instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))


def _rss_mb() -> float:
    """Peak RSS of this process (VmHWM: unlike ru_maxrss it is not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


CPU: list[float] = []  # CPU seconds (all threads) of the best run, for loaded machines


def _best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        secs = time.perf_counter() - t0
        if secs < best:
            best = secs
            CPU[:] = [time.process_time() - c0]
    return best, out


def measure(name: str, path: str, repeat: int, extra: str) -> dict[str, Any]:
    """One measurement, in this (fresh) process."""
    import polars as pl

    from scfeeds._x12 import read_x12, scan_x12

    base = _rss_mb()
    size = os.path.getsize(path)
    rows: int
    if name == "scfeeds_po_lines":
        secs, df = _best(lambda: scan_x12(path, table="po_lines").collect(), repeat)
        rows = df.height
    elif name == "scfeeds_read_x12":
        secs, res = _best(lambda: read_x12(path), repeat)
        rows = res.po_lines.height
    elif name in ("scfeeds_asn_lines", "scfeeds_invoice_lines"):
        table = name.removeprefix("scfeeds_")
        secs, df = _best(lambda: scan_x12(path, table=table).collect(), repeat)  # type: ignore[arg-type]
        rows = df.height
    elif name == "naive_split":
        secs, rows = _best(lambda: _naive(path), repeat)
    elif name == "read_csv":
        from scfeeds.schemas import schema

        sch = schema("po_lines")
        secs, df = _best(lambda: pl.read_csv(path, schema=sch), repeat)
        rows = df.height
    elif name == "pyx12":
        secs, rows, size = _pyx12(path, float(extra))
    else:
        raise SystemExit(f"unknown measurement {name}")
    return {
        "name": name,
        "seconds": secs,
        "cpu_seconds": CPU[0] if CPU else secs,
        "bytes": size,
        "rows": rows,
        "peak_rss_mb": _rss_mb(),
        "base_rss_mb": base,
    }


def _naive(path: str) -> int:
    """What most people write first: split on the terminator, then on the separator."""
    text = Path(path).read_text("latin-1")
    e, t = text[3], text[105]
    rows = []
    po = None
    for seg in text.split(t):
        el = seg.strip().split(e)
        sid = el[0]
        if sid == "BEG":
            po = el[3]
        elif sid == "PO1":
            rows.append((po, el[1], el[2], el[3], el[4], el[7] if len(el) > 7 else None))
    return len(rows)


def _pyx12(path: str, cap: float) -> tuple[float, int, int]:
    """pyx12's read-only segment iterator (X12Reader), stopped after ``cap`` seconds."""
    import pyx12.x12file

    total = Path(path).read_bytes().count(b"~")
    t0 = time.perf_counter()
    c0 = time.process_time()
    n = 0
    with open(path, encoding="latin-1") as fd:
        for _seg in pyx12.x12file.X12Reader(fd):
            n += 1
            if n % 1000 == 0 and time.perf_counter() - t0 > cap:
                break
    secs = time.perf_counter() - t0
    CPU[:] = [time.process_time() - c0]
    # bytes equivalent of the segments read (the file is uniform)
    return secs, n, int(os.path.getsize(path) * n / max(total, 1))


def _run(name: str, path: Path, repeat: int, extra: str = "") -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--measure", name, str(path), str(repeat), extra],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _inputs(dest: Path, pos: int) -> dict[str, Path]:
    import polars as pl

    from scfeeds import synth

    world = dest / "world"
    t0 = time.perf_counter()
    synth.generate(world, seed=7, suppliers=1, pos=pos, formats=("x12",), faults="none")
    print(f"synth: {pos} POs in {time.perf_counter() - t0:.1f} s", flush=True)
    out = {}
    for table, stem in (("po_lines", "850"), ("asn_lines", "856"), ("invoice_lines", "810")):
        files = sorted((world / "feeds").glob(f"*/{table}/*.x12"))
        target = dest / f"all_{stem}.x12"
        with open(target, "wb") as f:
            for p in files:
                f.write(p.read_bytes())
        out[table] = target
    # four copies of the 850s: throughput and peak RSS at 4x the size (memory follows the
    # slice size and the result, not the file)
    big = dest / "all_850_x4.x12"
    chunk = out["po_lines"].read_bytes()
    with open(big, "wb") as f:
        for _ in range(4):
            f.write(chunk)
    out["po_lines_x4"] = big
    # the same line items as CSV, for polars.read_csv
    from scfeeds._x12 import scan_x12

    csv = dest / "po_lines.csv"
    scan_x12(out["po_lines"], table="po_lines").collect().write_csv(csv)
    out["csv"] = csv
    del pl
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pos", type=int, default=60_000, help="purchase orders to synthesise")
    ap.add_argument("--repeat", type=int, default=5, help="best of this many runs")
    ap.add_argument("--pyx12-seconds", type=float, default=8.0)
    ap.add_argument("--quick", action="store_true", help="small input, one repeat")
    ap.add_argument("--measure", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        name, path, repeat, extra = args.measure
        print(json.dumps(measure(name, path, int(repeat), extra)))
        return
    if args.quick:
        args.pos, args.repeat, args.pyx12_seconds = 2_000, 1, 1.0
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="scfeeds-bench-x12-") as tmp:
        inputs = _inputs(Path(tmp), args.pos)
        po = inputs["po_lines"]
        mb = po.stat().st_size / 1e6
        print(
            f"input: {po.name} {mb:.1f} MB; 856 {inputs['asn_lines'].stat().st_size / 1e6:.1f} MB; "
            f"810 {inputs['invoice_lines'].stat().st_size / 1e6:.1f} MB",
            flush=True,
        )
        runs = [
            (
                "scfeeds scan_x12 -> po_lines (envelope checks on)",
                _run("scfeeds_po_lines", po, args.repeat),
            ),
            (
                "scfeeds scan_x12 -> po_lines, input x4",
                _run("scfeeds_po_lines", inputs["po_lines_x4"], max(1, args.repeat // 2)),
            ),
            ("scfeeds read_x12 (all frames + segments)", _run("scfeeds_read_x12", po, args.repeat)),
            (
                "scfeeds scan_x12 -> asn_lines (856)",
                _run("scfeeds_asn_lines", inputs["asn_lines"], args.repeat),
            ),
            (
                "scfeeds scan_x12 -> invoice_lines (810)",
                _run("scfeeds_invoice_lines", inputs["invoice_lines"], args.repeat),
            ),
            ("naive Python split loop -> PO1 tuples", _run("naive_split", po, args.repeat)),
            ("pyx12 X12Reader (segments only)", _run("pyx12", po, 1, str(args.pyx12_seconds))),
            (
                "polars.read_csv of the same po_lines (CSV)",
                _run("read_csv", inputs["csv"], args.repeat),
            ),
        ]
        ref = runs[0][1]["bytes"] / runs[0][1]["seconds"] / 1e6
        rate_of = {r["name"]: r["bytes"] / r["seconds"] / 1e6 for _, r in runs}
        print()
        head = f"{'what':52s} {'MB/s':>7s} {'x scfeeds':>9s} {'MB/cpu-s':>8s} {'rows':>8s}"
        print(f"{head} {'peak RSS':>9s} {'RSS/MB in':>9s}")
        for label, r in runs:
            rate = r["bytes"] / r["seconds"] / 1e6
            cpu_rate = r["bytes"] / r["cpu_seconds"] / 1e6
            in_mb = r["bytes"] / 1e6
            per = (r["peak_rss_mb"] - r["base_rss_mb"]) / in_mb if in_mb else 0.0
            print(
                f"{label:52s} {rate:7.1f} {rate / ref:9.2f} {cpu_rate:8.1f} {r['rows']:8d} "
                f"{r['peak_rss_mb']:7.0f}MB {per:9.2f}"
            )
        print()
        print(
            "ratios: scfeeds po_lines is "
            f"{ref / rate_of['naive_split']:.1f}x the naive loop, "
            f"{ref / rate_of['pyx12']:.0f}x pyx12, "
            f"{ref / rate_of['read_csv']:.2f}x polars.read_csv"
        )
        print(
            "MB/cpu-s = MB per CPU-second of all threads; RSS/MB in = (peak RSS - RSS after "
            f"imports) / MB of input; cpus={os.cpu_count()}, load={os.getloadavg()[0]:.1f}, "
            f"total {time.perf_counter() - t_start:.0f} s"
        )


if __name__ == "__main__":
    main()
