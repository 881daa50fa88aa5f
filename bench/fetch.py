"""Benchmarks of the fetch engine against the simulated portal (its own process, 50 ms latency).

    .venv/bin/python bench/fetch.py            # everything, a few minutes
    .venv/bin/python bench/fetch.py --quick    # smaller counts, under a minute

Sections (each prints a table with ratios):

1. throughput vs the ceiling ``concurrency / latency`` for 1 KiB and 256 KiB chunks at
   concurrency 8, 32, 128;
2. scfeeds vs the seed's skeleton (aiohttp + semaphore + gather + ``await resp.read()``), a
   sequential ``requests`` loop and a 20-thread ``requests`` pool: throughput, CPU seconds per
   request, peak RSS; then peak RSS while landing 1 GiB (scfeeds vs skeleton);
3. under faults (10% 5xx, 5% resets, 5% truncated bodies, 429s with Retry-After): share landed
   with the right sha256, requests sent vs the minimum;
4. adaptive vs fixed concurrency against a rate-limited portal: goodput and 429s.

Every client runs in a child process so that its CPU time and peak RSS are its own.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Run as a script, this folder is sys.path[0], and its xml.py (another benchmark) would shadow
# the standard library's xml package that scfeeds imports.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

LATENCY = 0.05
KIB = 1024


def blob_urls(base: str, n: int, size: int, *, seed0: int = 0) -> list[str]:
    return [f"{base}/v1/blob/{size}?seed={seed0 + i}" for i in range(n)]


def blob_sha256(size: int, seed: int) -> str:
    """The sha256 the portal's blob endpoint must deliver (computed from its generator)."""
    from scfeeds._portal._app import _BlobBody

    async def digest() -> str:
        body, h, left = _BlobBody(seed, 0), hashlib.sha256(), size
        while left:
            chunk = await body.read(min(left, 1 << 20))
            h.update(chunk)
            left -= len(chunk)
        return h.hexdigest()

    return asyncio.run(digest())


# -- clients (run in a child process) ------------------------------------------------------


async def client_scfeeds(urls: list[str], dest: Path, concurrency: int) -> dict[str, Any]:
    from scfeeds._config import Limits
    from scfeeds._fetch import fetch

    report = await fetch(urls, dest, limits=Limits(concurrency), progress=None, resume=False)
    mean = report.items.filter(status="ok")["seconds"].mean()
    return {
        "ok": report.succeeded,
        "requests": report.requests,
        "bytes": report.bytes,
        "latency_mean": mean,
    }


async def client_skeleton(urls: list[str], dest: Path, concurrency: int) -> dict[str, Any]:
    """The seed's sketch: one task per URL, a semaphore, whole payloads held until the end."""
    import aiohttp

    semaphore = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=45)) as session:

        async def one(url: str) -> bytes:
            async with semaphore, session.get(url) as resp:
                resp.raise_for_status()
                return await resp.read()

        results = await asyncio.gather(*(one(u) for u in urls), return_exceptions=True)
    ok = total = 0
    for i, result in enumerate(results):
        if isinstance(result, bytes):
            (dest / f"{i:06d}").write_bytes(result)
            ok += 1
            total += len(result)
    return {"ok": ok, "requests": len(urls), "bytes": total}


def client_requests_sequential(urls: list[str], dest: Path, concurrency: int) -> dict[str, Any]:
    import requests

    ok = total = 0
    with requests.Session() as session:
        for i, url in enumerate(urls):
            resp = session.get(url, timeout=45)
            if resp.ok:
                (dest / f"{i:06d}").write_bytes(resp.content)
                ok += 1
                total += len(resp.content)
    return {"ok": ok, "requests": len(urls), "bytes": total}


def client_requests_threads(urls: list[str], dest: Path, concurrency: int) -> dict[str, Any]:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import requests

    local = threading.local()

    def one(item: tuple[int, str]) -> int:
        i, url = item
        if not hasattr(local, "session"):
            local.session = requests.Session()
        resp = local.session.get(url, timeout=45)
        if not resp.ok:
            return -1
        (dest / f"{i:06d}").write_bytes(resp.content)
        return len(resp.content)

    with ThreadPoolExecutor(20) as pool:
        sizes = list(pool.map(one, enumerate(urls)))
    return {
        "ok": sum(s >= 0 for s in sizes),
        "requests": len(urls),
        "bytes": sum(s for s in sizes if s > 0),
    }


CLIENTS = {
    "scfeeds": client_scfeeds,
    "skeleton": client_skeleton,
    "requests-seq": client_requests_sequential,
    "requests-20-threads": client_requests_threads,
}


def vm_hwm_mb() -> float:
    """This process's peak RSS. Not ru_maxrss: on Linux a child inherits its parent's mark."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_main(variant: str, urls_file: str, dest: str, concurrency: int) -> None:
    urls = json.loads(Path(urls_file).read_text())
    client = CLIENTS[variant]
    # Import what the client needs first, so that "growth" is the transfer's own memory.
    if variant == "scfeeds":
        import scfeeds._fetch  # noqa: F401
    elif variant == "skeleton":
        import aiohttp  # noqa: F401
    else:
        import requests  # noqa: F401
    before = resource.getrusage(resource.RUSAGE_SELF)
    base_rss = vm_hwm_mb()
    start = time.perf_counter()
    if asyncio.iscoroutinefunction(client):
        out = asyncio.run(client(urls, Path(dest), concurrency))
    else:
        out = client(urls, Path(dest), concurrency)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    out.update(elapsed=elapsed, cpu=cpu, peak_rss_mb=vm_hwm_mb(), base_rss_mb=base_rss)
    print(json.dumps(out))


def run_child(variant: str, urls: list[str], concurrency: int, work: Path) -> dict[str, Any]:
    dest = work / f"dest-{variant}"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    urls_file = work / "urls.json"
    urls_file.write_text(json.dumps(urls))
    proc = subprocess.run(
        [sys.executable, __file__, "_child", variant, str(urls_file), str(dest), str(concurrency)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{proc.stderr[-3000:]}")
    shutil.rmtree(dest, ignore_errors=True)
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# -- sections ------------------------------------------------------------------------------


def table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    cells = [[str(h) for h in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n## {title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(cells[0], widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    sys.stdout.flush()


def section_ceiling(base: str, work: Path, quick: bool) -> None:
    rows = []
    for size, label in ((KIB, "1 KiB"), (256 * KIB, "256 KiB")):
        for c in (8, 32, 128):
            ceiling = c / LATENCY
            n = int(min(ceiling * (1.0 if quick else 2.5), 1200 if size > KIB else 4000))
            n = max(n, 2 * c)
            r = run_child("scfeeds", blob_urls(base, n, size, seed0=c), c, work)
            rate = r["ok"] / r["elapsed"]
            # Little's law with the latency actually seen: how full the pool was kept.
            little = c / r["latency_mean"]
            rows.append(
                [
                    label,
                    c,
                    n,
                    f"{ceiling:.0f}",
                    f"{rate:.0f}",
                    f"{rate / ceiling:.2f}",
                    f"{1000 * r['latency_mean']:.0f}",
                    f"{rate / little:.2f}",
                    f"{r['bytes'] / r['elapsed'] / 1e6:.1f}",
                    f"{r['cpu'] / r['elapsed']:.2f}",
                ]
            )
    table(
        "1. throughput vs ceiling (concurrency / 50 ms)",
        [
            "chunk",
            "concurrency",
            "requests",
            "ceiling req/s",
            "req/s",
            "ratio",
            "mean latency ms",
            "vs c/latency",
            "MB/s",
            "client CPU (cores)",
        ],
        rows,
    )


def section_baselines(base: str, work: Path, quick: bool) -> None:
    n = 200 if quick else 400
    size = 256 * KIB
    urls = blob_urls(base, n, size, seed0=10_000)
    results = {}
    for variant in ("scfeeds", "skeleton", "requests-20-threads"):
        results[variant] = run_child(variant, urls, 20, work)
    seq_n = 40 if quick else 80
    results["requests-seq"] = run_child("requests-seq", urls[:seq_n], 1, work)
    ours = results["scfeeds"]
    ours_rate = ours["ok"] / ours["elapsed"]
    rows = []
    for variant, r in results.items():
        rate = r["ok"] / r["elapsed"]
        rows.append(
            [
                variant,
                r["ok"],
                f"{rate:.0f}",
                f"{ours_rate / rate:.2f}",
                f"{r['bytes'] / r['elapsed'] / 1e6:.1f}",
                f"{1000 * r['cpu'] / r['ok']:.2f}",
                f"{r['peak_rss_mb']:.0f}",
                f"{r['peak_rss_mb'] - r['base_rss_mb']:.0f}",
            ]
        )
    table(
        f"2a. 256 KiB chunks at concurrency 20 (sequential: first {seq_n})",
        [
            "client",
            "landed",
            "req/s",
            "scfeeds speed-up",
            "MB/s",
            "CPU ms/request",
            "peak RSS MB",
            "growth MB",
        ],
        rows,
    )
    total = (256 if quick else 1024) * 1024 * KIB
    big = blob_urls(base, total // size, size, seed0=20_000)
    rows = []
    for variant in ("scfeeds", "skeleton"):
        r = run_child(variant, big, 32, work)
        rows.append(
            [
                variant,
                f"{r['bytes'] / 2**30:.2f} GiB",
                f"{r['elapsed']:.1f}",
                f"{r['bytes'] / r['elapsed'] / 1e6:.0f}",
                f"{r['peak_rss_mb']:.0f}",
                f"{r['peak_rss_mb'] - r['base_rss_mb']:.0f}",
            ]
        )
    table(
        "2b. peak RSS while landing (256 KiB chunks, concurrency 32)",
        ["client", "landed", "seconds", "MB/s", "peak RSS MB", "growth MB"],
        rows,
    )


def section_faults(portal: Any, work: Path, quick: bool) -> None:
    from scfeeds._config import Limits, Retry
    from scfeeds._fetch import fetch

    n, size = (150 if quick else 400), 64 * KIB
    knobs = {
        "error_rate": 0.10,
        "reset_rate": 0.05,
        "truncate_rate": 0.05,
        "throttle_rate": 0.02,
        "retry_after": 1,
        "seed": 11,
    }
    portal.set_knobs(**knobs)
    portal.reset_stats()
    urls = blob_urls(portal.url, n, size, seed0=30_000)
    rows = [
        {"url": u, "sha256": blob_sha256(size, 30_000 + i), "bytes": size}
        for i, u in enumerate(urls)
    ]
    dest = work / "faults"
    report = asyncio.run(
        fetch(rows, dest, limits=Limits(32), retry=Retry(12, budget=None), progress=None)
    )
    landed_ok = sum(
        hashlib.sha256((dest / p).read_bytes()).hexdigest() == row["sha256"]
        for p, row in zip(report.items["path"], rows, strict=True)
        if p is not None
    )
    stats = portal.stats()
    portal.set_knobs(error_rate=0.0, reset_rate=0.0, truncate_rate=0.0, throttle_rate=0.0)
    table(
        "3. under faults (10% 5xx, 5% resets, 5% truncated, 2% 429 + Retry-After: 1)",
        [
            "items",
            "landed, sha256 ok",
            "requests sent",
            "minimum",
            "ratio",
            "retried",
            "429s",
            "bytes received / minimum",
            "seconds",
        ],
        [
            [
                n,
                f"{landed_ok} ({100 * landed_ok / n:.0f}%)",
                stats["requests"],
                n,
                f"{stats['requests'] / n:.2f}",
                report.retried,
                report.throttled,
                f"{report.bytes / (n * size):.2f}",
                f"{report.elapsed:.1f}",
            ]
        ],
    )
    shutil.rmtree(dest, ignore_errors=True)


def section_adaptive(portal: Any, work: Path, quick: bool) -> None:
    from scfeeds._config import Limits, Retry
    from scfeeds._fetch import FetchController, fetch

    n = 150 if quick else 300
    # Low enough that the portal, not the machine, is the limit even on a busy 2-core box.
    rate = 50
    portal.set_knobs(rate_limit=rate, burst=10)
    rows = []
    for adaptive in (True, False):
        portal.reset_stats()
        ctl = FetchController()
        report = asyncio.run(
            fetch(
                blob_urls(portal.url, n, KIB, seed0=40_000 + 10_000 * adaptive),
                work / f"adaptive-{adaptive}",
                limits=Limits(64, adaptive=adaptive),
                retry=Retry(40, budget=None),
                progress=None,
                controller=ctl,
                resume=False,
            )
        )
        stats = portal.stats()
        n429 = stats["by_status"].get("429", 0)
        rows.append(
            [
                "adaptive (AIMD)" if adaptive else "fixed",
                report.succeeded,
                f"{report.succeeded / report.elapsed:.0f}",
                f"{report.succeeded / report.elapsed / rate:.2f}",
                n429,
                stats["requests"],
                report.concurrency,
                f"{report.elapsed:.1f}",
            ]
        )
        shutil.rmtree(work / f"adaptive-{adaptive}", ignore_errors=True)
    portal.set_knobs(rate_limit=None, burst=None)
    table(
        f"4. adaptive vs fixed max_at_once=64 against rate_limit={rate}/s (burst 10)",
        [
            "mode",
            "landed",
            "goodput items/s",
            "of the limit",
            "429s",
            "requests",
            "final concurrency",
            "seconds",
        ],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    parser.add_argument("--only", type=int, choices=[1, 2, 3, 4], action="append")
    args = parser.parse_args()
    from scfeeds.portal import serve_in_process

    sections = args.only or [1, 2, 3, 4]
    work = Path(tempfile.mkdtemp(prefix="scfeeds-bench-"))
    (work / "root").mkdir()
    t0 = time.perf_counter()
    print(
        f"# bench/fetch.py — portal in its own process, latency {LATENCY * 1000:.0f} ms, "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
    )
    try:
        with serve_in_process(work / "root", latency=LATENCY) as portal:
            if 1 in sections:
                section_ceiling(portal.url, work, args.quick)
            if 2 in sections:
                section_baselines(portal.url, work, args.quick)
            if 3 in sections:
                section_faults(portal, work, args.quick)
            if 4 in sections:
                section_adaptive(portal, work, args.quick)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child_main(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        main()
