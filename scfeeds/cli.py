"""The ``scfeeds`` command.

Every subcommand is a thin shell over the public API; anything it does a notebook can do with
the same calls. Heavy modules are imported inside the handlers so ``scfeeds --help`` is fast.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EPILOG = """\
examples:
  scfeeds demo                               the whole job on a generated demo world
  scfeeds synth world --seed 7 --pos 500     write a synthetic supplier world with its answer key
  scfeeds portal world --port 8080           serve it as a supplier portal on 127.0.0.1
  scfeeds ingest http://127.0.0.1:8080 --lake lake
  scfeeds reconcile --lake lake --html exceptions.html --xlsx exceptions.xlsx
  scfeeds x12 orders.x12 --ack orders.997    read X12, check envelopes, write the 997
  scfeeds worker --queue redis://127.0.0.1:6379/0 --lake lake    service mode (see deploy/)
"""


def _print(msg: str) -> None:
    print(msg, flush=True)


# -- demo -----------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    """Generate the demo world, serve it, ingest it, reconcile, print the summary."""
    import polars as pl

    from scfeeds import portal, synth
    from scfeeds._ingest import ingest
    from scfeeds._lake import scan_lake
    from scfeeds._reconcile import reconcile
    from scfeeds._runner import run

    dest = Path(args.dest)
    world = dest / "world"
    lake = dest / "lake"
    t0 = time.perf_counter()
    _print(f"1/4 generating the demo world in {world} (seed {args.seed}, {args.pos} POs)")
    summary = synth.generate(world, seed=args.seed, pos=args.pos, suppliers=args.suppliers)
    _print(f"    {summary!r}")
    with portal.serve_in_thread(world, latency=args.latency, seed=args.seed) as server:
        _print(f"2/4 serving it from the simulated supplier portal at {server.url}")
        listing = _listing(server.url)
        _print(f"    {len(listing)} feeds listed; ingesting into {lake}")
        report = run(ingest(listing, lake, limits=args.concurrency, progress="auto"))
        _print(f"3/4 {report.summary_line()}")
    frames = {t: scan_lake(lake, t) for t in ("po_lines", "asn_lines", "invoice_lines")}
    receipts = scan_lake(lake, "receipts")
    conversions_path = world / "world" / "conversions.parquet"
    conversions = pl.read_parquet(conversions_path) if conversions_path.exists() else None
    rec = reconcile(
        frames["po_lines"],
        frames["asn_lines"],
        frames["invoice_lines"],
        receipts=receipts,
        conversions=conversions,
    )
    summ = rec.summary()
    _print("4/4 reconciliation")
    _print(repr(summ))
    html_path = dest / "exceptions.html"
    _write_report(rec, html_path)
    _print(f"exceptions report: {html_path}")
    _print(f"exceptions workbook: {rec.to_excel(dest / 'exceptions.xlsx')}")
    _print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0


def _listing(url: str) -> list[dict[str, Any]]:
    import json
    import urllib.request

    with urllib.request.urlopen(f"{url}/v1/feeds", timeout=30) as resp:  # loopback only
        data: dict[str, Any] = json.load(resp)
    feeds: list[dict[str, Any]] = data["feeds"]
    return feeds


def _write_report(rec: Any, path: Path) -> None:
    """The HTML exceptions report at ``path`` and every exception row as CSV beside it."""
    from scfeeds._cells import write_csv

    rec.to_html(path)
    write_csv(rec.exceptions.collect(), path.with_suffix(".csv"))


# -- fetch / ingest / reconcile / x12 -----------------------------------------------------------


def cmd_fetch(args: argparse.Namespace) -> int:
    from scfeeds._config import Limits
    from scfeeds._fetch import fetch
    from scfeeds._runner import run

    headers = {"Authorization": f"Bearer {args.token}"} if args.token else None
    report = run(
        fetch(
            args.urls,
            args.dest,
            limits=Limits(args.concurrency, max_per_second=args.rate),
            headers=headers,
            progress="auto",
        )
    )
    _print(repr(report))
    return 0 if report.failed == 0 else 1


def cmd_ingest(args: argparse.Namespace) -> int:
    from scfeeds._ingest import ingest
    from scfeeds._runner import run

    sources: list[Any] = list(args.sources)  # a portal root URL expands to its listing
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else None
    report = run(
        ingest(sources, args.lake, limits=args.concurrency, headers=headers, progress="auto")
    )
    _print(report.summary_line())
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    import polars as pl

    from scfeeds._lake import scan_lake
    from scfeeds._reconcile import reconcile

    conversions = pl.read_parquet(args.conversions) if args.conversions else None
    rec = reconcile(
        scan_lake(args.lake, "po_lines"),
        scan_lake(args.lake, "asn_lines"),
        scan_lake(args.lake, "invoice_lines"),
        receipts=scan_lake(args.lake, "receipts"),
        conversions=conversions,
    )
    _print(repr(rec.summary()))
    if args.html:
        _write_report(rec, Path(args.html))
        _print(f"exceptions report: {args.html}")
    if args.xlsx:
        rec.to_excel(args.xlsx)
        _print(f"exceptions workbook: {args.xlsx}")
    return 0


def cmd_x12(args: argparse.Namespace) -> int:
    from scfeeds._x12 import read_x12

    result = read_x12(args.source)
    for table in ("po_lines", "asn_lines", "invoice_lines"):
        frame = getattr(result, table)
        if frame.height:
            _print(f"{table}: {frame.height:,} rows")
    env = result.envelopes
    _print(f"transaction sets: {env.height:,}")
    if result.errors.height:
        _print(f"errors: {result.errors.height}")
        for e in result.errors.iter_rows(named=True):
            _print(f"  {e['source']}: {e['position']}: {e['code']}: {e['message']}")
    if args.ack:
        Path(args.ack).write_bytes(_as_bytes(result.acknowledgment()))
        _print(f"997 written to {args.ack}")
    return 1 if result.errors.height else 0


def _as_bytes(data: str | bytes) -> bytes:
    return data.encode("latin-1") if isinstance(data, str) else data


# -- parser ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scfeeds",
        description="Fetch, parse, validate and reconcile supplier feeds "
        "(X12 850/856/810, CSV/Excel exports, cXML).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("demo", help="run the whole job on a generated demo world")
    p.add_argument("--dest", default="demo", help="output folder (default: demo)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--pos", type=int, default=300, help="purchase orders to generate")
    p.add_argument("--suppliers", type=int, default=6)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--latency", type=float, default=0.02, help="portal latency in seconds")
    p.set_defaults(func=cmd_demo)

    from scfeeds import synth
    from scfeeds._portal._cli import add_cli as add_portal_cli  # light: no aiohttp.web import
    from scfeeds._service._cli import add_cli as add_service_cli  # light: no redis import

    synth.add_cli(sub)
    add_portal_cli(sub)
    add_service_cli(sub)

    p = sub.add_parser("fetch", help="download URLs to a folder (bounded, retried, resumable)")
    p.add_argument("urls", nargs="+")
    p.add_argument("--dest", required=True)
    p.add_argument("--concurrency", type=int, default=16, help="max requests at once")
    p.add_argument("--rate", type=float, default=None, help="max requests per second")
    p.add_argument("--token", default=None, help="bearer token (never logged)")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("ingest", help="fetch, parse, validate and commit feeds to a lake")
    p.add_argument("sources", nargs="+", help="portal root URL, feed URLs or local files")
    p.add_argument("--lake", required=True)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--token", default=None, help="bearer token (never logged)")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("reconcile", help="three-way match of the lake's POs, ASNs and invoices")
    p.add_argument("--lake", required=True)
    p.add_argument("--conversions", default=None, help="parquet of item/unit factors")
    p.add_argument(
        "--html",
        default=None,
        help="write the HTML exceptions report here (sortable, filterable, offline) "
        "and every exception as CSV beside it",
    )
    p.add_argument("--xlsx", default=None, help="write the exceptions workbook (XLSX) here")
    p.set_defaults(func=cmd_reconcile)

    p = sub.add_parser("x12", help="read X12 files, report envelope errors, write a 997")
    p.add_argument("source", help="file or glob")
    p.add_argument("--ack", default=None, help="write the 997 acknowledgment to this file")
    p.set_defaults(func=cmd_x12)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except asyncio.CancelledError:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
