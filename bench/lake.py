"""Lake benchmark: many small documents into the lake, then one scan over the result.

Generates N small X12 850 interchanges (one PO per file, 8-40 lines: 1-4 KB, as suppliers send
them), ingests them from local files into a fresh lake in a child process, and prints
documents/s, the number of files the lake holds afterwards and the time of a full
``scan_lake`` of ``po_lines`` (collect, count). With ``--compact`` it also compacts the lake and
scans again.

    python bench/lake.py                 # 10,000 documents
    python bench/lake.py --docs 2000     # quick

Measured on the project's 2-core machine (shared, load average 3-10), 10,000 documents of
936-3,626 bytes, 239,258 line items:

    lake                               documents/s   lake files   scan_lake(po_lines)
    Parquet + _commits/*.json (before)          22       20,000              2,758 ms
    Delta, micro-batches (this lake)         22-30           29         166-401 ms
      after compact_lake (0.6-1.5 s)                                     176-273 ms

Parsing (one ``read_x12`` call per document, ~40 ms each) dominates both ingest figures; the
lake's share is the file count and the scan. The old lake's figure comes from running this
script with ``PYTHONPATH`` pointing at a checkout of the code before the Delta lake.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CHILD = r"""
import json, sys, time
import scfeeds
def main():
    folder, lake, compact = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    from pathlib import Path
    paths = sorted(str(p) for p in Path(folder).glob("*.x12"))
    t0 = time.perf_counter()
    report = scfeeds.run(scfeeds.ingest(paths, lake, progress=None))
    wall = time.perf_counter() - t0
    files = sum(1 for p in Path(lake).rglob("*") if p.is_file() and "_landing" not in p.parts)
    t1 = time.perf_counter()
    rows = scfeeds.scan_lake(lake, "po_lines").collect().height
    scan = time.perf_counter() - t1
    out = {"wall": wall, "rows": rows, "files": files, "scan": scan,
           "committed": report.committed}
    if compact:
        from scfeeds._lake import compact_lake
        t2 = time.perf_counter()
        compact_lake(lake)
        out["compact"] = time.perf_counter() - t2
        t3 = time.perf_counter()
        out["rows_after"] = scfeeds.scan_lake(lake, "po_lines").collect().height
        out["scan_after"] = time.perf_counter() - t3
    print(json.dumps(out))
if __name__ == "__main__":
    main()
"""


def x12_850(n: int, rng: random.Random) -> tuple[bytes, int]:
    """One interchange holding one 850 with 3-30 lines (1-4 KB)."""
    lines = rng.randint(8, 40)
    ctrl = f"{n + 1:09d}"
    supplier = f"SUP{rng.randint(1, 20):03d}"
    seg = [
        f"ISA*00*          *00*          *ZZ*SCFEEDSBUYER   *ZZ*{supplier:<15}"
        f"*261101*1200*U*00401*{ctrl}*0*P*>",
        f"GS*PO*SCFEEDSBUYER*{supplier}*20261101*1200*{n + 1}*X*004010",
        "ST*850*0001",
        f"BEG*00*SA*PO{n + 1:07d}**20261101",
        "CUR*BY*USD",
        f"N1*SU*Supplier {supplier}*92*{supplier}",
    ]
    for i in range(1, lines + 1):
        qty = rng.randint(1, 500)
        price = f"{rng.randint(100, 99999) / 100:.2f}"
        seg.append(f"PO1*{i}*{qty}*EA*{price}**BP*ITEM{rng.randint(1, 9999):05d}*VP*V{i:04d}")
        seg.append(f"PID*F****Widget model {rng.randint(1, 999)} for line {i}")
    count = len(seg) - 2 + 1  # ST..SE inclusive
    seg += [f"SE*{count}*0001", f"GE*1*{n + 1}", f"IEA*1*{ctrl}"]
    return ("~\n".join(seg) + "~\n").encode(), lines


def generate(folder: Path, docs: int, seed: int) -> int:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    for n in range(docs):
        body, lines = x12_850(n, rng)
        (folder / f"850_{n:06d}.x12").write_bytes(body)
        total += lines
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--compact", action="store_true", help="also compact and scan again")
    ap.add_argument("--python", default=sys.executable, help="interpreter for the child")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="scfeeds-bench-lake-") as tmp:
        work = Path(tmp)
        lines = generate(work / "docs", args.docs, args.seed)
        sizes = [p.stat().st_size for p in (work / "docs").glob("*.x12")]
        script = work / "child.py"
        script.write_text(CHILD)
        t0 = time.perf_counter()
        out = subprocess.run(
            [
                args.python,
                str(script),
                str(work / "docs"),
                str(work / "lake"),
                "1" if args.compact else "0",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        elapsed = time.perf_counter() - t0
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{args.docs:,} documents ({min(sizes):,}-{max(sizes):,} bytes), {lines:,} line items")
    print(
        f"  ingest: {result['wall']:.1f} s = {args.docs / result['wall']:,.0f} documents/s "
        f"({elapsed:.1f} s with interpreter start)"
    )
    print(f"  lake files: {result['files']:,}; rows {result['rows']:,} (want {lines:,})")
    print(f"  scan_lake(po_lines).collect(): {result['scan'] * 1000:.0f} ms")
    if "compact" in result:
        print(
            f"  compact: {result['compact']:.1f} s; rows {result['rows_after']:,}; "
            f"scan after: {result['scan_after'] * 1000:.0f} ms"
        )
    if result["rows"] != lines:
        sys.exit("row count differs from the generated line items")


if __name__ == "__main__":
    main()
