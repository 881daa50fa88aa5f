"""End-to-end ingest benchmark: fetch and parse overlap, and memory that does not grow.

A synthetic world (mixed formats: X12, CSV, XLSX, cXML) is served by the simulated portal in its
own process with 50 ms latency. Each measurement runs in a fresh child process so its peak RSS
is its own:

- fetch only: ``scfeeds.fetch`` of every feed into a landing folder;
- parse only: ``scfeeds.ingest`` of the landed files as local paths (parse, validate, commit);
- end to end: ``scfeeds.ingest`` of the portal listing (fetch -> parse -> validate -> lake).

Overlap = (fetch + parse - end_to_end) / min(fetch, parse): 1.0 means the shorter stage was
hidden completely behind the longer one, 0 means the stages ran one after the other.
Peak RSS (the child and its parse processes, summed) is measured at two world sizes, 8x
apart: it must not grow with the number of line items or chunks.

    python bench/ingest.py                # ~1 M line items, a few minutes on 2 cores
    python bench/ingest.py --pos 5000     # quick
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

CHILD = r"""
import json, sys, time
import scfeeds
def main():
    mode, arg, lake = sys.argv[1], sys.argv[2], sys.argv[3]
    feeds = json.load(open(arg))
    t0 = time.perf_counter()
    if mode == "fetch":
        report = scfeeds.run(scfeeds.fetch([f["url"] for f in feeds], lake, limits=32,
                                           progress=None))
        extra = {"ok": report.succeeded, "failed": report.failed}
    else:
        report = scfeeds.run(scfeeds.ingest(feeds, lake, limits=32, progress=None))
        extra = {"rows": sum(report.rows.values()), "failed": report.n_errors}
    wall = time.perf_counter() - t0
    print(json.dumps({"wall": wall, **extra}))
if __name__ == "__main__":
    main()
"""


def child(mode: str, feeds: list[Any], lake: Path, work: Path) -> dict[str, Any]:
    spec = work / f"{mode}-{lake.name}.json"
    spec.write_text(json.dumps(feeds))
    script = work / "child.py"
    script.write_text(CHILD)
    # Peak RSS of the child and its own children (parse processes), sampled every 20 ms.
    # (ru_maxrss would not do: on Linux a child inherits its parent's high-water mark.)
    proc = subprocess.Popen(
        [sys.executable, str(script), mode, str(spec), str(lake)],
        stdout=subprocess.PIPE,
        text=True,
    )
    peak = 0
    ps = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [ps, *ps.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree))
        except psutil.Error:
            pass
        time.sleep(0.02)
    stdout = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} child failed with {proc.returncode}")
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    result["rss_mb"] = peak / 2**20
    return result


def measure(pos: int, seed: int, work: Path) -> dict[str, Any]:
    from scfeeds import portal, synth

    world = work / f"world-{pos}"
    t0 = time.perf_counter()
    summary = synth.generate(world, seed=seed, pos=pos, suppliers=8)
    synth_s = time.perf_counter() - t0
    lines = sum(summary.counts.values())
    with portal.serve_in_process(world, latency=0.05, seed=seed) as server:
        with urllib.request.urlopen(f"{server.url}/v1/feeds", timeout=60) as resp:
            feeds = json.load(resp)["feeds"]
        fetched = child("fetch", feeds, work / f"landing-{pos}", work)
        landed = [
            {"url": str(p), "format": None}
            for p in sorted((work / f"landing-{pos}").rglob("*"))
            if p.is_file() and ".scfeeds" not in p.parts
        ]
        parsed = child("parse", landed, work / f"lake-parse-{pos}", work)
        e2e = child("ingest", feeds, work / f"lake-e2e-{pos}", work)
    overlap = (fetched["wall"] + parsed["wall"] - e2e["wall"]) / min(
        fetched["wall"], parsed["wall"]
    )
    return {
        "pos": pos,
        "lines": lines,
        "chunks": len(feeds),
        "synth_s": synth_s,
        "fetch": fetched,
        "parse": parsed,
        "e2e": e2e,
        "overlap": overlap,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pos", type=int, default=52_000, help="POs in the large world")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="scfeeds-bench-ingest-") as tmp:
        work = Path(tmp)
        runs = [measure(args.pos // 8, args.seed, work), measure(args.pos, args.seed, work)]
    print()
    print(
        "| world | line items | chunks (files) | fetch only | parse only | end to end "
        "| overlap | lines/s | peak RSS e2e |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        print(
            f"| pos={r['pos']:,} | {r['lines']:,} | {r['chunks']:,} | {r['fetch']['wall']:.1f} s "
            f"| {r['parse']['wall']:.1f} s | {r['e2e']['wall']:.1f} s | {r['overlap']:.2f} "
            f"| {r['lines'] / r['e2e']['wall']:,.0f} | {r['e2e']['rss_mb']:.0f} MB |"
        )
    small, large = runs
    print()
    print(
        f"line items x{large['lines'] / small['lines']:.1f}, "
        f"chunks x{large['chunks'] / small['chunks']:.1f} -> peak RSS "
        f"x{large['e2e']['rss_mb'] / small['e2e']['rss_mb']:.2f} "
        f"(fetch-only RSS {small['fetch']['rss_mb']:.0f} -> {large['fetch']['rss_mb']:.0f} MB)"
    )
    print(
        f"bench process maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )


if __name__ == "__main__":
    main()
