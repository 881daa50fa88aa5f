"""Scaling of ``ingest(cluster=)`` and ``reconcile(lake, cluster=)`` from 1 to 2 Dask workers.

A synthetic world (8 suppliers, mixed formats) is served by the simulated portal in its own
process with 50 ms latency. The same ingest and reconcile run on a LocalCluster of 1 and then 2
worker processes (one thread each), and once in this process without a cluster.

    python bench/distributed.py             # a couple of minutes on 2 cores
    python bench/distributed.py --pos 2000  # quick
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

# This script is named like the package it benchmarks (distributed): never import from bench/.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import scfeeds  # noqa: E402
from scfeeds import portal, synth  # noqa: E402


def run_once(feeds: list[Any], lake: Path, client: Any) -> tuple[float, float, int]:
    shutil.rmtree(lake, ignore_errors=True)
    t0 = time.perf_counter()
    report = scfeeds.run(scfeeds.ingest(feeds, lake, limits=16, cluster=client, progress=None))
    ingest_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    # parts of about 20,000 PO lines: several tasks per worker
    rec = scfeeds.reconcile(lake, cluster=client, partition_lines=20_000)
    rec.summary()
    reconcile_s = time.perf_counter() - t0
    return ingest_s, reconcile_s, sum(report.rows.values())


def main() -> None:
    import distributed

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pos", type=int, default=8000)
    args = ap.parse_args()
    rows: list[tuple[str, float, float, int]] = []
    with tempfile.TemporaryDirectory(prefix="scfeeds-bench-dask-") as tmp:
        work = Path(tmp)
        synth.generate(work / "world", seed=3, pos=args.pos, suppliers=8)
        with portal.serve_in_process(work / "world", latency=0.05) as server:
            with urllib.request.urlopen(f"{server.url}/v1/feeds", timeout=60) as resp:
                feeds = json.load(resp)["feeds"]
            ingest_s, rec_s, n = run_once(feeds, work / "lake-local", None)
            rows.append(("no cluster (this process)", ingest_s, rec_s, n))
            for n_workers in (1, 2):
                with (
                    distributed.LocalCluster(
                        n_workers=n_workers,
                        threads_per_worker=1,
                        processes=True,
                        dashboard_address=None,
                        silence_logs=40,
                    ) as cluster,
                    distributed.Client(cluster) as client,
                ):
                    ingest_s, rec_s, n = run_once(feeds, work / f"lake-{n_workers}", client)
                    rows.append(
                        (f"LocalCluster, {n_workers} worker process(es)", ingest_s, rec_s, n)
                    )
    print(f"\nworld: pos={args.pos:,}, {len(feeds):,} feeds, {rows[0][3]:,} line items\n")
    print("| run | ingest | reconcile(lake) | lines/s (ingest) | speed-up vs 1 worker |")
    print("|---|---|---|---|---|")
    base = rows[1][1] + rows[1][2]
    for name, i, r, n in rows:
        print(f"| {name} | {i:.1f} s | {r:.1f} s | {n / i:,.0f} | {base / (i + r):.2f}x |")


if __name__ == "__main__":
    main()
