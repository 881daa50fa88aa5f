"""Benchmark: scfeeds.reconcile vs a plain polars script vs a pandas script, same run.

    .venv/bin/python bench/reconcile.py                 # 2 M PO lines (a few minutes)
    .venv/bin/python bench/reconcile.py --lines 500000  # quicker
    .venv/bin/python bench/reconcile.py --lines 2000000 --scaling 500000,1000000,4000000

Inputs are canonical frames generated here with polars (2 M PO lines, about 2.8 M ASN lines
and 1.9 M invoice lines at the default size): ``scfeeds.synth`` writes every feed file in four
formats and makes about a thousand lines per second, far too slow for millions. The shapes
follow synth: 1-9 lines per PO, shipments split over 1-2 ASN lines, 15 % of ASN lines without a
line number (matched by item), dozens shipped as eaches, one invoice per PO with check-letter
numbers, and a few faults (short shipments, price variances, duplicate invoices).

Each contender runs in its own child process; its peak RSS is that process's ``VmHWM``, so it
covers everything the process did: Python, reading the Parquet inputs, the match, the results.
Modes given DataFrames also report the RSS once their inputs were in memory and the peak above
it (the inputs are the caller's, not the job's).

- ``scfeeds``: ``reconcile(...)`` on DataFrames already in memory (timed from there), then
  collect ``lines`` and ``exceptions``; ``RECONCILE_ENGINE=in-memory`` to compare engines;
- ``scfeeds-scan``: the same on ``pl.scan_parquet`` LazyFrames: reading the inputs is part of
  the timed job and of its memory (the figure the 1.5 GB target is about);
- ``scfeeds-partitioned``: ``reconcile(..., partition_lines=250_000)`` on the scans (suppliers
  in parts of about 250 000 PO lines, each part streaming its own rows of the inputs on the
  streaming engine, then the status of every line and the code of every exception): memory
  bounded by a part's working set plus the results;
- ``polars``: a plain join-and-group-by script (string keys, no key encoding, no staging);
- ``pandas``: the equivalent pandas script (same rules as the polars script).

``--scaling`` runs the scan and partitioned modes at further sizes and prints peak RSS per size
with a fitted slope in MB per million PO lines.

Both scripts implement the same core: fallback of unnumbered ASN lines to the item, DZ -> EA,
exact duplicate invoices (normalised numbers) left out, per-line sums, the shipping, billing
and price checks; neither finds edit-distance suspects nor evidence rows, which scfeeds does.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# bench/ holds scripts named like stdlib modules (xml.py): never import from this folder.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

KEY = ["supplier_id", "po_number", "line_number"]


# -- data --------------------------------------------------------------------------------


def generate(n_lines: int, dest: Path, seed: int = 7) -> dict[str, int]:
    """Write po/asn/invoice Parquet files with about ``n_lines`` PO lines."""
    rng = np.random.default_rng(seed)
    n_po = max(1, n_lines // 5)
    per_po = rng.integers(1, 10, n_po)
    per_po[-1] += max(0, n_lines - int(per_po.sum()))
    keep = np.cumsum(per_po) <= n_lines
    keep[np.argmin(keep) if not keep.all() else -1] = True
    per_po = per_po[keep]
    n_po = len(per_po)
    po_of = np.repeat(np.arange(n_po), per_po)
    n = len(po_of)
    line = np.arange(n) - np.repeat(np.cumsum(per_po) - per_po, per_po) + 1
    sup = rng.integers(1, 61, n_po)[po_of]
    item = rng.integers(0, 50_000, n)
    dozen = rng.random(n) < 0.05
    qty = rng.integers(1, 200, n)
    price = rng.integers(100, 50_000, n)  # cents

    def z(col: str, width: int) -> pl.Expr:
        return pl.col(col).cast(pl.String).str.zfill(width)

    def money(col: str) -> pl.Expr:
        return (pl.col(col).cast(pl.Decimal(18, 4)) / 100).cast(pl.Decimal(18, 4))

    base = pl.DataFrame(
        {
            "po": po_of,
            "sup": sup,
            "line": line,
            "item": item,
            "qty": qty,
            "price": price,
            "dozen": dozen,
        }
    )
    po = base.select(
        source=pl.format(
            "feeds/SUP{}/po_lines/850_{}.x12", z("sup", 3), z("po", 8).str.slice(0, 5)
        ),
        supplier_id=pl.format("SUP{}", z("sup", 3)),
        po_number=pl.format("45{}", z("po", 8)),
        po_date=pl.lit(dt.date(2026, 1, 5)),
        line_number=pl.col("line").cast(pl.String),
        item_id=pl.format("ITM{}", z("item", 6)),
        description=pl.lit("Zinc plated hex bolt"),
        qty_ordered=pl.col("qty").cast(pl.Decimal(18, 4)),
        uom=pl.when("dozen").then(pl.lit("DZ")).otherwise(pl.lit("EA")),
        unit_price=money("price"),
        currency=pl.lit("USD"),
    )
    # shipments: 40 % of lines split in two; short shipments on 1 %; dozens shipped as eaches
    short = rng.random(n) < 0.01
    shipped = np.where(short, np.maximum(qty // 2, 1), qty)
    shipped_each = np.where(dozen, shipped * 12, shipped)
    split = (rng.random(n) < 0.4) & (shipped_each >= 2)
    first = np.where(split, shipped_each // 2, shipped_each)
    a_line = np.concatenate([np.arange(n), np.flatnonzero(split)])
    a = pl.DataFrame(
        {
            "po": po_of[a_line],
            "sup": sup[a_line],
            "line": line[a_line],
            "item": item[a_line],
            "qty": np.concatenate([first, (shipped_each - first)[split]]),
            "ship": np.concatenate([po_of, po_of[split] + n_po]),
            "no_line": rng.random(len(a_line)) < 0.15,
        }
    )
    asn = a.select(
        source=pl.format(
            "feeds/SUP{}/asn_lines/856_{}.x12", z("sup", 3), z("ship", 9).str.slice(0, 6)
        ),
        supplier_id=pl.format("SUP{}", z("sup", 3)),
        shipment_id=pl.format("SH{}", z("ship", 9)),
        ship_date=pl.lit(dt.date(2026, 1, 20)),
        po_number=pl.format("45{}", z("po", 8)),
        line_number=pl.when("no_line").then(None).otherwise(pl.col("line").cast(pl.String)),
        item_id=pl.format("ITM{}", z("item", 6)),
        qty_shipped=pl.col("qty").cast(pl.Decimal(18, 4)),
        uom=pl.lit("EA"),  # dozens are shipped as eaches
        carrier=pl.lit("UPSN"),
    )
    # invoices: 95 % of lines, one invoice per PO; price variance on 0.5 %; 0.2 % duplicated
    pv = rng.random(n) < 0.005
    digits = np.array([(po_of // 10**k) % 10 for k in range(7, -1, -1)]).T  # 8 digits
    # weighted digit sum mod 23: numbers one digit apart never share the check letter
    check = (digits * np.arange(1, 9)).sum(axis=1) % 23
    i = base.with_columns(
        inv_price=pl.Series(np.where(pv, price * 12 // 10, price)),
        letter=pl.Series(np.array(list("ABCDEFGHIJKLMNOPQRSTUVW"))[check]),
        billed=pl.Series(rng.random(n) < 0.95),
    ).filter("billed")
    inv = i.select(
        source=pl.format(
            "feeds/SUP{}/invoice_lines/810_{}.x12", z("sup", 3), z("po", 8).str.slice(0, 5)
        ),
        supplier_id=pl.format("SUP{}", z("sup", 3)),
        invoice_number=pl.format("INV-{}{}", z("po", 8), "letter"),
        invoice_date=pl.lit(dt.date(2026, 2, 1)),
        po_number=pl.format("45{}", z("po", 8)),
        line_number=pl.col("line").cast(pl.String),
        item_id=pl.format("ITM{}", z("item", 6)),
        qty_invoiced=pl.col("qty").cast(pl.Decimal(18, 4)),
        uom=pl.when("dozen").then(pl.lit("DZ")).otherwise(pl.lit("EA")),
        unit_price=money("inv_price"),
        line_amount=((pl.col("qty") * pl.col("inv_price")).cast(pl.Decimal(18, 4)) / 100).cast(
            pl.Decimal(18, 4)
        ),
        currency=pl.lit("USD"),
    )
    dup_po = pl.Series(np.flatnonzero(rng.random(n_po) < 0.002)).cast(pl.String).str.zfill(8)
    copies = inv.filter(pl.col("po_number").str.slice(2).is_in(dup_po.implode())).with_columns(
        source=pl.col("source") + ".copy"
    )
    inv = pl.concat([inv, copies])
    dest.mkdir(parents=True, exist_ok=True)
    po.write_parquet(dest / "po_lines.parquet")
    asn.write_parquet(dest / "asn_lines.parquet")
    inv.write_parquet(dest / "invoice_lines.parquet")
    return {"po": po.height, "asn": asn.height, "invoice": inv.height}


# -- contenders --------------------------------------------------------------------------


def _norm_line(e: pl.Expr) -> pl.Expr:
    return e.str.strip_chars_start("0")


def plain_polars(po: pl.DataFrame, asn: pl.DataFrame, inv: pl.DataFrame) -> pl.DataFrame:
    """A straightforward polars script: string keys, group-bys, joins."""
    po = po.with_columns(line_number=_norm_line(pl.col("line_number")))
    by_item = po.group_by("supplier_id", "po_number", "item_id").agg(
        pl.col("line_number").min().alias("_fb")
    )
    a = (
        asn.join(by_item, on=["supplier_id", "po_number", "item_id"], how="left")
        .with_columns(line_number=pl.coalesce(_norm_line(pl.col("line_number")), "_fb"))
        .join(po.select(*KEY, pl.col("uom").alias("po_uom")), on=KEY, how="left")
        .with_columns(
            q=pl.when((pl.col("uom") == "EA") & (pl.col("po_uom") == "DZ"))
            .then(pl.col("qty_shipped").cast(pl.Float64) / 12)
            .otherwise(pl.col("qty_shipped").cast(pl.Float64))
        )
        .group_by(KEY)
        .agg(shipped=pl.col("q").sum(), n_asn=pl.col("shipment_id").n_unique())
    )
    norm = pl.col("invoice_number").str.to_lowercase().str.replace_all("[^a-z0-9]", "")
    i = (
        inv.with_columns(_n=norm)
        .with_columns(_rank=pl.col("source").rank("dense").over("supplier_id", "_n"))
        .filter(pl.col("_rank") == 1)
        .with_columns(line_number=_norm_line(pl.col("line_number")))
        .group_by(KEY)
        .agg(
            invoiced=pl.col("qty_invoiced").cast(pl.Float64).sum(),
            billed=pl.col("line_amount").cast(pl.Float64).sum(),
            n_inv=pl.col("invoice_number").n_unique(),
        )
    )
    o, r, q = (
        pl.col("qty_ordered").cast(pl.Float64),
        pl.col("shipped").fill_null(0),
        pl.col("invoiced").fill_null(0),
    )
    return (
        po.join(a, on=KEY, how="left")
        .join(i, on=KEY, how="left")
        .with_columns(
            not_shipped=(o > 0) & (r == 0),
            short=(r > 0) & (r < o),
            over_shipped=r > o,
            over_invoiced=(r > 0) & (q > r),
            over_ordered=q > o,
            not_invoiced=(r > 0) & (q == 0),
            price=(pl.col("billed") - q * pl.col("unit_price").cast(pl.Float64)).abs()
            > 0.01 * q * pl.col("unit_price").cast(pl.Float64),
        )
    )


def pandas_script(po, asn, inv):  # type: ignore[no-untyped-def]
    """The same rules in pandas (the shape of a typical analyst notebook)."""
    import numpy as np

    po = po.copy()
    po["line_number"] = po["line_number"].str.lstrip("0")
    by_item = (
        po.groupby(["supplier_id", "po_number", "item_id"], sort=False)["line_number"]
        .min()
        .rename("_fb")
        .reset_index()
    )
    a = asn.merge(by_item, on=["supplier_id", "po_number", "item_id"], how="left")
    a["line_number"] = a["line_number"].str.lstrip("0").fillna(a["_fb"])
    a = a.merge(po[[*KEY, "uom"]].rename(columns={"uom": "po_uom"}), on=KEY, how="left")
    a["q"] = np.where(
        (a["uom"] == "EA") & (a["po_uom"] == "DZ"), a["qty_shipped"] / 12, a["qty_shipped"]
    )
    a = (
        a.groupby(KEY, sort=False)
        .agg(shipped=("q", "sum"), n_asn=("shipment_id", "nunique"))
        .reset_index()
    )
    i = inv.copy()
    i["_n"] = i["invoice_number"].str.lower().str.replace("[^a-z0-9]", "", regex=True)
    first = i.groupby(["supplier_id", "_n"], sort=False)["source"].transform("min")
    i = i[i["source"] == first]
    i["line_number"] = i["line_number"].str.lstrip("0")
    i = (
        i.groupby(KEY, sort=False)
        .agg(
            invoiced=("qty_invoiced", "sum"),
            billed=("line_amount", "sum"),
            n_inv=("invoice_number", "nunique"),
        )
        .reset_index()
    )
    out = po.merge(a, on=KEY, how="left").merge(i, on=KEY, how="left")
    o, r, q = out["qty_ordered"], out["shipped"].fillna(0), out["invoiced"].fillna(0)
    out["not_shipped"] = (o > 0) & (r == 0)
    out["short"] = (r > 0) & (r < o)
    out["over_shipped"] = r > o
    out["over_invoiced"] = (r > 0) & (q > r)
    out["over_ordered"] = q > o
    out["not_invoiced"] = (r > 0) & (q == 0)
    out["price"] = (out["billed"] - q * out["unit_price"]).abs() > 0.01 * q * out["unit_price"]
    return out


def _to_pandas(df: pl.DataFrame):  # type: ignore[no-untyped-def]
    import pandas as pd

    # no pyarrow in this environment: numpy columns (decimals as float64, as a pandas user would)
    return pd.DataFrame(
        {
            c: (df[c].cast(pl.Float64) if df[c].dtype == pl.Decimal else df[c]).to_numpy()
            for c in df.columns
        }
    )


def child(mode: str, data: Path) -> dict[str, object]:
    """Run one contender; peak RSS covers the whole child: reading the inputs included."""
    files = {t: data / f"{t}.parquet" for t in ("po_lines", "asn_lines", "invoice_lines")}
    out: dict[str, object] = {"mode": mode, "start_rss_mb": rss_mb()}
    if mode == "scfeeds-partitioned":
        from scfeeds._reconcile import reconcile

        t = time.perf_counter()
        scans = (pl.scan_parquet(f) for f in files.values())
        # the streaming engine keeps each part's memory bounded by its output
        rec = reconcile(*scans, partition_lines=250_000).collect(engine="streaming")
        # the status of every line and the code of every exception, as the other modes
        lines = rec.lines.select("status").collect()
        exc = rec.exceptions.select("code").collect()
        out["seconds"] = time.perf_counter() - t
        out["stages"] = rec.timings()
    elif mode == "scfeeds-scan":
        from scfeeds._reconcile import reconcile

        t = time.perf_counter()
        rec = reconcile(*(pl.scan_parquet(f) for f in files.values()))
        lines, exc = rec.lines.collect(), rec.exceptions.collect()
        out["seconds"] = time.perf_counter() - t
        out["stages"] = rec.timings()
        out["exceptions"] = exc.group_by("code").len().sort("code").rows()
    else:
        frames = [pl.read_parquet(f) for f in files.values()]
        if mode == "scfeeds":
            from scfeeds._reconcile import reconcile

            out["inputs_rss_mb"] = rss_mb()
            t = time.perf_counter()
            rec = reconcile(*frames).collect(engine=os.environ.get("RECONCILE_ENGINE", "auto"))
            lines, exc = rec.lines.collect(), rec.exceptions.collect()
            out["seconds"] = time.perf_counter() - t
            out["stages"] = rec.timings()
            out["exceptions"] = exc.group_by("code").len().sort("code").rows()
        elif mode == "polars":
            out["inputs_rss_mb"] = rss_mb()
            t = time.perf_counter()
            lines = plain_polars(*frames)
            out["seconds"] = time.perf_counter() - t
        elif mode == "pandas":
            pdf = [_to_pandas(f) for f in frames]
            del frames
            out["inputs_rss_mb"] = rss_mb()
            t = time.perf_counter()
            lines = pandas_script(*pdf)
            out["seconds"] = time.perf_counter() - t
        else:
            raise SystemExit(f"unknown mode {mode}")
    out["lines"] = len(lines)
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def rss_mb() -> float:
    """This process's resident set now (``VmRSS``)."""
    for row in Path("/proc/self/status").read_text().splitlines():
        if row.startswith("VmRSS:"):
            return int(row.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    """This process's peak resident set: ``VmHWM`` (per address space, so not inherited from
    the parent the way ``ru_maxrss`` is across fork + exec), else ``ru_maxrss``."""
    try:
        for row in Path("/proc/self/status").read_text().splitlines():
            if row.startswith("VmHWM:"):
                return int(row.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(mode: str, data: Path, timeout: float) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, __file__, "_child", mode, str(data)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        check=False,
    )
    if proc.returncode != 0:
        return {"mode": mode, "error": proc.stderr.strip().splitlines()[-1:]}
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        print(json.dumps(child(sys.argv[2], Path(sys.argv[3]))))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=int, default=2_000_000, help="PO lines (default 2 M)")
    ap.add_argument(
        "--scaling",
        default="",
        help="comma-separated further sizes (PO lines) for the memory scaling table of the "
        "scan and partitioned modes, e.g. 500000,1000000,4000000",
    )
    ap.add_argument("--timeout", type=float, default=600, help="seconds per contender")
    ap.add_argument("--repeat", type=int, default=2, help="runs per contender (best counts)")
    ap.add_argument("--modes", default="scfeeds,scfeeds-scan,scfeeds-partitioned,polars,pandas")
    args = ap.parse_args()
    load = os.getloadavg()
    print(
        f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} cores)"
    )
    with tempfile.TemporaryDirectory(prefix="scfeeds-bench-reconcile-") as tmp:
        data = Path(tmp) / "big"
        t = time.perf_counter()
        shape = generate(args.lines, data)
        print(f"data: {shape} generated in {time.perf_counter() - t:.1f} s")
        # Contenders alternate, each run --repeat times; the fastest run of each counts (the
        # machine is shared: the minimum is the least disturbed measurement).
        runs: dict[str, list[dict[str, object]]] = {m: [] for m in args.modes.split(",")}
        for _ in range(args.repeat):
            for m in runs:
                runs[m].append(measure(m, data, args.timeout))
        results = {
            m: min(
                rs,
                key=lambda r: float(r["seconds"]) if "seconds" in r else float("inf"),  # type: ignore[arg-type]
            )
            for m, rs in runs.items()
        }
        print(
            "peak RSS: the child process's VmHWM, everything included (Python, reading the "
            "Parquet inputs, the results); 'above inputs': peak minus the RSS once the inputs "
            "were in memory (modes given DataFrames; the scan and partitioned modes read the "
            "Parquet files themselves, inside the timed job)"
        )
        print(
            f"{'contender':>20}  {'seconds':>8}  {'peak RSS':>9}  {'inputs':>7}  {'above':>7}  runs"
        )
        for m, r in results.items():
            if "error" in r:
                print(f"{m:>20}: FAILED {r['error']}")
                continue
            secs, rss = float(r["seconds"]), float(r["peak_rss_mb"])  # type: ignore[arg-type]
            all_s = ", ".join(f"{float(x['seconds']):.2f}" for x in runs[m] if "seconds" in x)  # type: ignore[arg-type]
            peaks = ", ".join(
                f"{float(x['peak_rss_mb']):.0f}" for x in runs[m] if "peak_rss_mb" in x
            )  # type: ignore[arg-type]
            if "inputs_rss_mb" in r:
                base = float(r["inputs_rss_mb"])  # type: ignore[arg-type]
                inputs, above = f"{base:5.0f} MB", f"{rss - base:5.0f} MB"
            else:
                inputs, above = "(read)", "-"
            print(
                f"{m:>20}  {secs:6.2f} s  {rss:6.0f} MB  {inputs:>8}  {above:>8}  "
                f"{all_s} s; peaks {peaks} MB"
            )
        for name in ("scfeeds", "scfeeds-scan", "scfeeds-partitioned"):
            base = results.get(name, {})
            for other in ("polars", "pandas"):
                if "seconds" in base and "seconds" in results.get(other, {}):
                    ratio = float(results[other]["seconds"]) / float(base["seconds"])  # type: ignore[arg-type]
                    print(f"{name} is {ratio:.1f}x faster than the {other} script")
        for name in ("scfeeds", "scfeeds-scan"):
            if "stages" in results.get(name, {}):
                stages = results[name]["stages"]
                print(f"{name} stages (s):", {k: round(float(v), 2) for k, v in stages.items()})  # type: ignore[union-attr]
        for name in ("scfeeds", "scfeeds-scan"):
            if "exceptions" in results.get(name, {}):
                print(f"{name} exceptions:", results[name]["exceptions"])
        if args.scaling:
            sizes = sorted({int(x) for x in args.scaling.split(",") if x.strip()} | {args.lines})
            shapes = {args.lines: shape}
            points: dict[str, list[tuple[int, float, float]]] = {}
            for n in sizes:
                where = data if n == args.lines else Path(tmp) / f"n{n}"
                if n != args.lines:
                    shapes[n] = generate(n, where)
                for mode in ("scfeeds-scan", "scfeeds-partitioned"):
                    r = results.get(mode) if n == args.lines else None
                    r = r or measure(mode, where, args.timeout)
                    if "peak_rss_mb" in r:
                        points.setdefault(mode, []).append(
                            (shapes[n]["po"], float(r["peak_rss_mb"]), float(r["seconds"]))  # type: ignore[arg-type]
                        )
            print("memory scaling (one run per size; 1.4 ASN and 0.95 invoice lines per PO line):")
            for mode, pts in points.items():
                cells = ", ".join(f"{n / 1e6:.1f} M: {mb:.0f} MB in {s:.1f} s" for n, mb, s in pts)
                xs = np.array([p[0] / 1e6 for p in pts])
                ys = np.array([p[1] for p in pts])
                slope = float(np.polyfit(xs, ys, 1)[0]) if len(pts) > 1 else float("nan")
                print(f"  {mode}: {cells}; fitted slope {slope:+.0f} MB per million PO lines")
        load = os.getloadavg()
        print(f"load average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
