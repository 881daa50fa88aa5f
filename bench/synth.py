"""Benchmark ``scfeeds.synth.generate``: throughput and peak memory at growing sizes.

Each size runs in a fresh subprocess so its peak RSS (``ru_maxrss``) is its own. Memory should
stay flat as the world grows (generation is streamed in batches of ``SynthConfig.batch_pos``
POs); the last column is the peak RSS relative to the smallest run. "per cpu-s" is PO lines
per CPU second (user + sys), the figure to compare on a shared machine.

    .venv/bin/python bench/synth.py                       # 0.1M, 1M and 3M PO lines, x12+csv
    .venv/bin/python bench/synth.py --lines 200000 --formats x12,csv,xlsx,xml
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = """
import json, resource, sys, time
from scfeeds import synth
dest, pos, formats = sys.argv[1], int(sys.argv[2]), tuple(sys.argv[3].split(","))
s = synth.generate(dest, seed=7, pos=pos, formats=formats)
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"po_lines": s.counts["po_lines"], "rows": sum(s.counts.values()),
                  "files": s.files, "elapsed": s.elapsed, "rss_mb": ru.ru_maxrss / 1024,
                  "cpu": ru.ru_utime + ru.ru_stime}))
"""

# lines_per_po defaults to (1, 8): 4.5 lines per PO on average
_LINES_PER_PO = 4.5


def run(lines: int, formats: str, root: Path) -> dict[str, float]:
    dest = root / f"w{lines}"
    pos = max(1, round(lines / _LINES_PER_PO))
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(dest), str(pos), formats],
        check=False,
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise SystemExit(f"generate failed for {lines:,} lines:\n{out.stderr}")
    result: dict[str, float] = json.loads(out.stdout)
    result["disk_mb"] = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()) / 2**20
    shutil.rmtree(dest)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--lines",
        type=int,
        nargs="+",
        default=[100_000, 1_000_000, 3_000_000],
        help="target PO lines per run (default: 100k 1M 3M)",
    )
    parser.add_argument("--formats", default="x12,csv")
    args = parser.parse_args()
    print(f"scfeeds.synth.generate, formats={args.formats}")
    # CPU seconds (user + sys, all threads) make runs comparable on a busy machine, where
    # wall-clock throughput mostly measures the neighbours.
    header = (
        f"{'PO lines':>10} {'all rows':>10} {'files':>6} {'wall s':>7} {'cpu s':>7} "
        f"{'PO lines/s':>11} {'per cpu-s':>10} {'disk MB':>8} {'peak RSS MB':>12} {'RSS ratio':>9}"
    )
    print(header)
    print("-" * len(header))
    base_rss = None
    with tempfile.TemporaryDirectory(prefix="synth-bench-") as tmp:
        for lines in args.lines:
            r = run(lines, args.formats, Path(tmp))
            base_rss = base_rss or r["rss_mb"]
            print(
                f"{int(r['po_lines']):>10,} {int(r['rows']):>10,} {int(r['files']):>6,} "
                f"{r['elapsed']:>7.1f} {r['cpu']:>7.1f} {r['po_lines'] / r['elapsed']:>11,.0f} "
                f"{r['po_lines'] / r['cpu']:>10,.0f} {r['disk_mb']:>8.0f} "
                f"{r['rss_mb']:>12.0f} {r['rss_mb'] / base_rss:>9.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
