"""X12 reader benchmark: scfeeds vs pyx12, a naive Python split loop and polars.read_csv.

Run: ``.venv/bin/python bench/x12.py`` (``--pos 60000``, the default, writes about 28 MB of
850s, 43 MB of 856s, 34 MB of 810s and a 110 MB file of four copies of the 850s; ``--quick``
for a smoke run). The input is written by ``scfeeds.synth`` (one supplier, so every tool reads
the same single-dialect bytes), its 850 / 856 / 810 files concatenated into one file each.

For each of 850, 856 and 810, in the same run: ``read_x12`` (every table, envelopes and
errors: all envelope checks; no long segments frame), the same without the C kernel (its
polars path), ``scan_x12`` of its table, the naive
Python split loop, and ``polars.read_csv`` of the same X12 bytes (separator and line
terminator set to the file's delimiters, one column per element of the widest segment).
Then read_x12 with the segments frame, pyx12, polars.read_csv of the 850 line items written
as canonical CSV, peak RSS of read_x12 over the 110 MB file at two slice sizes, and the
memory its returned frames hold (a floor for any reader that returns these polars frames).

Every measurement runs in a fresh subprocess so that its peak RSS is its own; times are the
best of ``--repeat`` runs. pyx12 is time-capped and its throughput extrapolated from the share
of segments it got through.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this folder would come first on sys.path, and bench/xml.py would shadow the
# standard library's xml package: import from the project root instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))


def _status_mb(field: str) -> float:
    """``field`` of /proc/self/status in MB (VmHWM: peak RSS; unlike ru_maxrss it is not
    inherited across exec. VmRSS: RSS now)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _rss_mb() -> float:
    """Peak RSS of this process."""
    return _status_mb("VmHWM")


def _trim() -> None:
    """Return the C allocator's free pages to the OS (glibc keeps them in its arenas; the C
    kernel's buffers come from it), so RSS counts live memory only."""
    import contextlib
    import ctypes

    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL(None).malloc_trim(0)


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
    from scfeeds._x12 import read_x12, scan_x12

    base = _rss_mb()
    size = os.path.getsize(path)
    rows: int
    if name in ("scfeeds_po_lines", "scfeeds_asn_lines", "scfeeds_invoice_lines"):
        table = name.removeprefix("scfeeds_")
        secs, df = _best(lambda: scan_x12(path, table=table).collect(), repeat)  # type: ignore[arg-type]
        rows = df.height
    elif name == "scfeeds_read_x12":
        # every table, envelopes and errors (all envelope checks); ``extra`` = "segments"
        # also builds the long segments frame, "polars" reads without the C kernel, else a
        # slice size in bytes (or empty)
        kw: dict[str, Any] = {"segments": extra == "segments"}
        if extra == "polars":
            from scfeeds._x12 import _tokenize

            _tokenize._native = None
        if extra.isdigit():
            kw["slice_bytes"] = int(extra)
        secs, res = _best(lambda: read_x12(path, **kw), repeat)
        rows = sum(res.table(t).height for t in ("po_lines", "asn_lines", "invoice_lines"))
    elif name == "result_live":
        # bytes the returned frames keep alive: RSS with the result minus RSS once it is
        # dropped (run with an allocator that returns freed pages at once, see _LIVE_ENV)
        import gc

        res = read_x12(path, segments=False)
        rows = res.po_lines.height
        _trim()
        held = _status_mb("VmRSS")
        del res
        gc.collect()
        _trim()
        time.sleep(0.2)
        return {"name": name, "bytes": size, "rows": rows, "live_mb": held - _status_mb("VmRSS")}
    elif name == "naive_split":
        secs, rows = _best(lambda: _naive(path, extra), repeat)
    elif name == "read_csv_x12":
        secs, rows = _best(lambda: _read_csv_x12(path, int(extra)), repeat)
    elif name == "read_csv":
        import polars as pl

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


# The line-item segment of each set and the fields a naive reader takes from it (plus the
# document number from the set's header segment).
_NAIVE: dict[str, tuple[str, int, str]] = {
    "850": ("BEG", 3, "PO1"),
    "856": ("BSN", 2, "SN1"),
    "810": ("BIG", 2, "IT1"),
}


def _naive(path: str, set_id: str) -> int:
    """What most people write first: split on the terminator, then on the separator."""
    head_id, head_el, line_id = _NAIVE[set_id]
    text = Path(path).read_text("latin-1")
    e, t = text[3], text[105]
    rows = []
    doc = None
    for seg in text.split(t):
        el = seg.strip().split(e)
        sid = el[0]
        if sid == head_id:
            doc = el[head_el]
        elif sid == line_id:
            rows.append((doc, el[1], el[2], el[3], el[4] if len(el) > 4 else None))
    return len(rows)


def _read_csv_x12(path: str, width: int) -> int:
    """polars.read_csv of the X12 file itself: the element separator as ``separator``, the
    segment terminator as ``eol_char``, one string column per element of the widest
    segment (ragged rows padded with nulls). Tokenizing only: no segment is interpreted."""
    import polars as pl

    with open(path, "rb") as f:
        isa = f.read(106)
    e, t = chr(isa[3]), chr(isa[105])
    df = pl.read_csv(
        path,
        has_header=False,
        separator=e,
        eol_char=t,
        quote_char=None,
        schema={f"e{i:02d}": pl.String() for i in range(width)},
        truncate_ragged_lines=True,
        missing_columns="insert",
        raise_if_empty=False,
    )
    return df.height


def _width(path: Path) -> int:
    """Elements of the widest segment of ``path`` plus its ID (the read_csv column count)."""
    data = path.read_bytes()
    e, t = data[3:4], data[105:106]
    return max(seg.count(e) for seg in data.split(t)) + 1


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


# polars' allocator (jemalloc) keeps freed pages resident (``muzzy_decay_ms:-1``), so RSS
# after a drop says little; this setting makes it return them at once (slower: used only to
# measure what the result frames hold).
_LIVE_ENV: Final = {"_RJEM_MALLOC_CONF": "dirty_decay_ms:0,muzzy_decay_ms:0"}


def _run(
    name: str, path: Path, repeat: int, extra: str = "", env: dict[str, str] | None = None
) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--measure", name, str(path), str(repeat), extra],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
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
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs")
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
        sizes = "; ".join(
            f"{stem} {inputs[t].stat().st_size / 1e6:.1f} MB" for t, stem in _STEMS.items()
        )
        big = inputs["po_lines_x4"]
        print(f"input: {sizes}; 850 x4 {big.stat().st_size / 1e6:.1f} MB", flush=True)
        print(f"C kernel (scfeeds._x12._native): {_kernel()}", flush=True)
        rep = args.repeat
        per_set: dict[str, dict[str, dict[str, Any]]] = {}
        for table, stem in _STEMS.items():
            path = inputs[table]
            print(f"measuring {stem} ...", flush=True)
            per_set[stem] = {
                "read_x12": _run("scfeeds_read_x12", path, rep),
                "polars_path": _run("scfeeds_read_x12", path, rep, "polars"),
                "scan": _run(f"scfeeds_{table}", path, rep),
                "naive": _run("naive_split", path, rep, stem),
                "read_csv": _run("read_csv_x12", path, rep, str(_width(path))),
            }
        po = inputs["po_lines"]
        print("measuring the rest ...", flush=True)
        more = [
            ("850 read_x12 with the segments frame", _run("scfeeds_read_x12", po, rep, "segments")),
            ("850 pyx12 X12Reader (segments only)", _run("pyx12", po, 1, str(args.pyx12_seconds))),
            (
                "850 po_lines as canonical CSV, polars.read_csv",
                _run("read_csv", inputs["csv"], rep),
            ),
        ]
        slices = [
            (
                f"850 x4 read_x12, slices of {mib} MiB",
                _run("scfeeds_read_x12", big, 1, str(mib << 20)),
            )
            for mib in _BIG_SLICES_MIB
        ]
        live = _run("result_live", big, 1, env=_LIVE_ENV)
        _report(per_set, more, slices, live)
        print(
            "MB/cpu-s = MB per CPU-second of all threads; RSS/MB = (peak RSS - RSS after imports) "
            f"/ MB of input; cpus={os.cpu_count()}, load={os.getloadavg()[0]:.1f} (1 min), "
            f"total {time.perf_counter() - t_start:.0f} s"
        )


_STEMS: dict[str, str] = {"po_lines": "850", "asn_lines": "856", "invoice_lines": "810"}
# Slice sizes compared on the input of over 100 MB (memory must not follow the slice size).
_BIG_SLICES_MIB = (4, 16)


def _kernel() -> str:
    from scfeeds._x12 import _tokenize

    return "built" if _tokenize._native is not None else "not built (polars path only)"


def _line(label: str, r: dict[str, Any]) -> str:
    rate = r["bytes"] / r["seconds"] / 1e6
    cpu_rate = r["bytes"] / r["cpu_seconds"] / 1e6
    in_mb = r["bytes"] / 1e6
    per = (r["peak_rss_mb"] - r["base_rss_mb"]) / in_mb if in_mb else 0.0
    return (
        f"{label:50s} {rate:7.1f} {cpu_rate:8.1f} {r['rows']:8d} "
        f"{r['peak_rss_mb']:7.0f}MB {per:7.2f}"
    )


def _report(
    per_set: dict[str, dict[str, dict[str, Any]]],
    more: list[tuple[str, dict[str, Any]]],
    slices: list[tuple[str, dict[str, Any]]],
    live: dict[str, Any],
) -> None:
    print()
    print(
        f"{'what':50s} {'MB/s':>7s} {'MB/cpu-s':>8s} {'rows':>8s} {'peak RSS':>9s} {'RSS/MB':>7s}"
    )
    labels = {
        "read_x12": "read_x12 (tables, envelope checks, errors)",
        "polars_path": "read_x12 without the C kernel (polars path)",
        "scan": "scan_x12 -> its table",
        "naive": "naive Python split loop",
        "read_csv": "polars.read_csv of the same X12 bytes",
    }
    for stem, runs in per_set.items():
        for key, label in labels.items():
            print(_line(f"{stem} {label}", runs[key]))
    for label, r in [*more, *slices]:
        print(_line(label, r))
    print()

    def rate(r: dict[str, Any]) -> float:
        return float(r["bytes"] / r["seconds"])

    for stem, runs in per_set.items():
        mine = rate(runs["read_x12"])
        print(
            f"{stem}: read_x12 is {mine / rate(runs['naive']):.1f}x the naive loop (target 5x), "
            f"{mine / rate(runs['read_csv']):.2f}x polars.read_csv of the same bytes (target "
            f"0.3x); scan_x12 {rate(runs['scan']) / rate(runs['naive']):.1f}x the naive loop; "
            f"the C kernel makes read_x12 {mine / rate(runs['polars_path']):.2f}x its polars path"
        )
    pyx12 = dict(more)["850 pyx12 X12Reader (segments only)"]
    print(f"850: read_x12 is {rate(per_set['850']['read_x12']) / rate(pyx12):.0f}x pyx12")
    rss = ", ".join(
        f"{mib} MiB: {r['peak_rss_mb'] - r['base_rss_mb']:.0f} MB above imports"
        for mib, (_, r) in zip(_BIG_SLICES_MIB, slices, strict=True)
    )
    big_mb = slices[0][1]["bytes"] / 1e6
    print(f"850 x4 ({big_mb:.0f} MB) by slice size: {rss} (target at most 4x the input)")
    print(
        f"850 x4: the frames read_x12 returns hold {live['live_mb']:.0f} MB "
        f"({live['live_mb'] / big_mb:.1f}x the input) once read"
    )


if __name__ == "__main__":
    main()
