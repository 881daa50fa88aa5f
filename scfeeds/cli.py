"""The ``scfeeds`` command.

Every subcommand is a thin shell over the public API; anything it does a notebook can do with
the same calls. Heavy modules are imported inside the handlers so ``scfeeds --help`` is fast.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scfeeds._config import DEFAULT_MAX_AT_ONCE
from scfeeds.exceptions import ConfigurationError

EPILOG = """\
examples:
  scfeeds demo                               the whole job on a generated demo world
  scfeeds synth world --seed 7 --pos 500     write a synthetic supplier world with its answer key
  scfeeds portal world --port 8080           serve it as a supplier portal on 127.0.0.1
  scfeeds ingest http://127.0.0.1:8080 --lake lake
  scfeeds reconcile --lake lake --html exceptions.html --xlsx exceptions.xlsx
  scfeeds otif --lake lake --every week --html scorecard.html --xlsx scorecard.xlsx
  scfeeds lake compact lake                  merge small files (and vacuum, history)
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


TOKEN_ENV = "SCFEEDS_TOKEN"


def _add_token_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--token-file",
        default=None,
        metavar="PATH",
        help=f"read the bearer token from this file (default: ${TOKEN_ENV}); it is sent only "
        "to the origins of the sources given here, never logged",
    )
    p.add_argument(
        "--token-env",
        default=None,
        metavar="VAR",
        help=f"read the bearer token from this environment variable instead of ${TOKEN_ENV}",
    )
    # Refused with a message, not left undefined: argparse would otherwise take `--token X`
    # as an abbreviation of --token-file and read a file named after the secret.
    p.add_argument("--token", default=None, help=argparse.SUPPRESS)


def _bearer(args: argparse.Namespace, command: str) -> tuple[dict[str, str] | None, str | None]:
    """``(headers, error line)``: the token from --token-file, --token-env VAR or
    $SCFEEDS_TOKEN, never from argv."""
    import os

    if args.token is not None:
        return None, (
            f"scfeeds {command}: --token is not accepted (a token on the command line shows "
            f"in ps and shell history; consider the one given exposed); use --token-file PATH, "
            f"--token-env VAR or the {TOKEN_ENV} environment variable"
        )
    if args.token_file:
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            return (
                None,
                f"scfeeds {command}: cannot read --token-file {args.token_file}: {exc.strerror}",
            )
        if not token:
            return None, f"scfeeds {command}: --token-file {args.token_file} is empty"
    elif args.token_env:
        token = os.environ.get(args.token_env, "").strip()
        if not token:
            return (
                None,
                f"scfeeds {command}: environment variable {args.token_env} is empty or unset",
            )
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
    return ({"Authorization": f"Bearer {token}"} if token else None), None


def _fail(line: str, code: int) -> int:
    print(line, file=sys.stderr, flush=True)
    return code


def cmd_fetch(args: argparse.Namespace) -> int:
    from scfeeds._config import Limits
    from scfeeds._fetch import fetch
    from scfeeds._runner import run
    from scfeeds.exceptions import StorageError

    headers, error = _bearer(args, "fetch")
    if error:
        return _fail(error, 2)
    try:
        report = run(
            fetch(
                args.urls,
                args.dest,
                limits=Limits(args.concurrency, max_per_second=args.rate),
                headers=headers,
                progress="auto",
            )
        )
    except StorageError as exc:
        return _fail(f"scfeeds fetch: {exc}", 1)
    if report.stopped:
        landed = report.succeeded + report.unchanged
        return _fail(
            f"scfeeds fetch: {report.stopped} ({landed} of {report.total} items landed; "
            "free space and run again to resume)",
            1,
        )
    _print(repr(report))
    return 0 if report.failed == 0 else 1


def cmd_ingest(args: argparse.Namespace) -> int:
    from scfeeds._ingest import ingest
    from scfeeds._runner import run

    sources: list[Any] = list(args.sources)  # a portal root URL expands to its listing
    for source in sources:
        if "://" not in source and not Path(source).exists():
            raise _UsageError(
                f"{source}: no such file (pass a portal URL, feed URLs or existing files)"
            )
    from scfeeds.exceptions import StorageError

    headers, error = _bearer(args, "ingest")
    if error:
        return _fail(error, 2)
    try:
        report = run(
            ingest(sources, args.lake, limits=args.concurrency, headers=headers, progress="auto")
        )
    except StorageError as exc:
        return _fail(f"scfeeds ingest: {exc}", 1)
    stopped = getattr(report.fetch, "stopped", None)
    if stopped:
        return _fail(f"scfeeds ingest: {stopped}; free space and run again to resume", 1)
    _print(report.summary_line())
    return 0


def _check_lake_and_conversions(args: argparse.Namespace) -> None:
    """A local lake folder and a ``--conversions`` file that exist (an object-store lake is
    checked by the first read)."""
    from scfeeds._lake import is_remote

    if not is_remote(args.lake) and not Path(args.lake).is_dir():
        raise _UsageError(
            f"{args.lake}: no such lake (ingest into it first: scfeeds ingest SOURCES "
            f"--lake {args.lake})"
        )
    if args.conversions and not Path(args.conversions).is_file():
        raise _UsageError(
            f"{args.conversions}: no such file (pass the parquet of item/unit factors, "
            "e.g. a synth world's world/conversions.parquet)"
        )


def cmd_reconcile(args: argparse.Namespace) -> int:
    import polars as pl

    from scfeeds._reconcile import reconcile

    _check_lake_and_conversions(args)
    conversions = pl.read_parquet(args.conversions) if args.conversions else None
    rec = reconcile(args.lake, conversions=conversions)
    _print(repr(rec.summary()))
    if args.html:
        _write_report(rec, Path(args.html))
        _print(f"exceptions report: {args.html}")
    if args.xlsx:
        rec.to_excel(args.xlsx)
        _print(f"exceptions workbook: {args.xlsx}")
    return 0


def _window(text: str) -> tuple[int, int]:
    """``--window 7`` (7 days either side) or ``--window 7,0`` (7 early, 0 late)."""
    try:
        parts = [int(p) for p in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        return parts[0], parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise argparse.ArgumentTypeError(f"{text!r}: expected DAYS or EARLY,LATE (e.g. 7,0)")


def cmd_otif(args: argparse.Namespace) -> int:
    """OTIF of the lake's PO lines and the supplier scorecard; HTML and XLSX on request."""
    import polars as pl

    from scfeeds._lake import scan_lake
    from scfeeds._otif import otif

    _check_lake_and_conversions(args)
    lake = args.lake
    receipts = scan_lake(lake, "receipts")
    # deliveries are receipts when the lake has any, else what the ASNs say was shipped
    has_receipts = receipts.select(pl.len()).collect().item() > 0
    res = otif(
        scan_lake(lake, "po_lines"),
        asn_lines=scan_lake(lake, "asn_lines"),
        receipts=receipts if has_receipts else None,
        acks=scan_lake(lake, "po_acks"),
        window=args.window,
        qty_tolerance=args.qty_tolerance,
        basis=args.basis,
        conversions=pl.read_parquet(args.conversions) if args.conversions else None,
    )
    card = res.scorecard(every=args.every)
    _print(
        f"{res.lines.height:,} PO lines; deliveries from "
        f"{'receipts' if has_receipts else 'ASNs (no receipts in the lake)'}; {res.describe()}"
    )
    shown = card.suppliers.sort("score", "supplier_id", nulls_last=True).select(
        "supplier_id",
        "lines",
        *(pl.col(c).mul(100).round(1) for c in ("score", "otif_rate", "on_time_rate")),
        *(pl.col(c).mul(100).round(1) for c in ("in_full_rate", "fill_rate")),
        pl.col("mean_days_late").round(1),
        pl.col("value_late").round(2).cast(pl.Decimal(18, 2)),
    )
    with pl.Config(
        tbl_rows=-1,
        tbl_cols=-1,
        tbl_hide_dataframe_shape=True,
        tbl_hide_column_data_types=True,
        tbl_hide_dtype_separator=True,
        tbl_width_chars=160,
    ):
        _print("supplier scorecard (rates in %, lowest score first):")
        _print(str(shown))
    if args.html:
        card.to_html(args.html)
        _print(f"scorecard page: {args.html}")
    if args.xlsx:
        card.to_excel(args.xlsx)
        _print(f"scorecard workbook: {args.xlsx}")
    return 0


def cmd_x12(args: argparse.Namespace) -> int:
    from scfeeds._x12 import read_x12

    if not any(ch in args.source for ch in "*?[") and not Path(args.source).is_file():
        raise _UsageError(
            f"{args.source}: no such file (pass an X12 file, or a quoted glob such as "
            "'inbound/*.x12')"
        )
    result = read_x12(args.source)
    for table in ("po_lines", "asn_lines", "invoice_lines", "po_acks"):
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
        ack = result.acknowledgment()
        if ack:
            Path(args.ack).write_bytes(_as_bytes(ack))
            _print(f"997 written to {args.ack}")
        else:  # only acknowledgments (997/999, group FA) read, or no envelope at all
            _print(
                f"nothing to acknowledge: no functional group other than 997/999 was read; "
                f"{args.ack} not written"
            )
    return 1 if result.errors.height else 0


class _UsageError(Exception):
    """A path or argument the command cannot use: reported in one line, no traceback."""


def _one_line(exc: BaseException) -> str:
    """The error as one line that names the file and what to do."""
    if isinstance(exc, OSError) and exc.filename is not None:
        hint = "check its permissions" if isinstance(exc, PermissionError) else "check the path"
        text = f"{exc.filename}: {(exc.strerror or type(exc).__name__).lower()} ({hint})"
    else:
        text = str(exc) or type(exc).__name__
        if isinstance(exc, FileNotFoundError):  # polars': "... (os error 2): <path>"
            text += " (check the path)"
    return " ".join(text.split())


# -- lake maintenance -----------------------------------------------------------------------


def cmd_lake(args: argparse.Namespace) -> int:
    import datetime as dt

    import polars as pl

    from scfeeds._lake import all_tables, compact_lake, lake_history, vacuum_lake

    if args.lake_command == "compact":
        result = compact_lake(
            args.lake,
            target_size=args.target_size,
            grace=dt.timedelta(hours=args.grace_hours),
        )
    elif args.lake_command == "vacuum":
        result = vacuum_lake(
            args.lake, retention=dt.timedelta(hours=args.retention_hours), dry_run=args.dry_run
        )
    else:
        if args.table not in all_tables():
            _print(f"scfeeds lake history: unknown table {args.table!r}; one of {all_tables()}")
            return 2
        with pl.Config(tbl_rows=args.limit, tbl_hide_dataframe_shape=True):
            _print(str(lake_history(args.lake, args.table, limit=args.limit)))
        return 0
    for table, stats in result.tables.items():
        _print(f"{table}: " + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in stats.items()))
    return 0


def _add_lake_cli(sub: Any) -> None:
    p = sub.add_parser(
        "lake",
        help="lake maintenance: compact, vacuum, history",
        description="Maintain a Delta lake (a folder or s3://bucket/prefix; object-store "
        "credentials from the usual environment variables). Readers are unaffected while it "
        "runs.",
    )
    lake_sub = p.add_subparsers(dest="lake_command", metavar="ACTION", required=True)
    c = lake_sub.add_parser("compact", help="merge small files; drop rows no reader can see")
    c.add_argument("lake")
    c.add_argument("--target-size", type=int, default=None, help="bytes per file")
    c.add_argument(
        "--grace-hours",
        type=float,
        default=24.0,
        help="keep uncommitted rows younger than this (a writer may still be running)",
    )
    v = lake_sub.add_parser("vacuum", help="delete files older versions no longer need")
    v.add_argument("lake")
    v.add_argument(
        "--retention-hours",
        type=float,
        default=168.0,
        help="keep what versions of the last N hours need (time travel); default 7 days",
    )
    v.add_argument("--dry-run", action="store_true", help="only count what would go")
    h = lake_sub.add_parser("history", help="commits of one lake table, newest first")
    h.add_argument("lake")
    h.add_argument("--table", default="_ledger", help="po_lines, _errors, _ledger, ...")
    h.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_lake)


def _as_bytes(data: str | bytes) -> bytes:
    return data.encode("latin-1") if isinstance(data, str) else data


# -- parser ---------------------------------------------------------------------------------


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``scfeeds demo``."""
    p = sub.add_parser("demo", help="run the whole job on a generated demo world")
    p.add_argument("--dest", default="demo", help="output folder (default: demo)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--pos", type=int, default=300, help="purchase orders to generate")
    p.add_argument("--suppliers", type=int, default=6)
    p.add_argument("--concurrency", type=int, default=DEFAULT_MAX_AT_ONCE)
    p.add_argument("--latency", type=float, default=0.02, help="portal latency in seconds")
    p.set_defaults(func=cmd_demo)


def _add_fetch_and_ingest(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``scfeeds fetch`` and ``scfeeds ingest``."""
    p = sub.add_parser("fetch", help="download URLs to a folder (bounded, retried, resumable)")
    p.add_argument("urls", nargs="+")
    p.add_argument("--dest", required=True)
    p.add_argument(
        "--concurrency", type=int, default=DEFAULT_MAX_AT_ONCE, help="max requests at once"
    )
    p.add_argument("--rate", type=float, default=None, help="max requests per second")
    _add_token_options(p)
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("ingest", help="fetch, parse, validate and commit feeds to a lake")
    p.add_argument("sources", nargs="+", help="portal root URL, feed URLs or local files")
    p.add_argument("--lake", required=True)
    p.add_argument("--concurrency", type=int, default=DEFAULT_MAX_AT_ONCE)
    _add_token_options(p)
    p.set_defaults(func=cmd_ingest)


def _add_otif(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``scfeeds otif``."""
    p = sub.add_parser("otif", help="on time in full per supplier: the scorecard of a lake")
    p.add_argument("--lake", required=True)
    p.add_argument(
        "--every", choices=("week", "month"), default="month", help="trend bucket (default month)"
    )
    p.add_argument(
        "--basis",
        choices=("requested", "promised"),
        default="requested",
        help="on time against the requested date (PO) or the promised one (855); default requested",
    )
    p.add_argument(
        "--window",
        type=_window,
        default=(0, 0),
        metavar="DAYS|EARLY,LATE",
        help="days a delivery may be early / late and still be on time (default 0)",
    )
    p.add_argument(
        "--qty-tolerance",
        default="0",
        metavar="PCT",
        help="in full within this percent of the ordered quantity (default 0)",
    )
    p.add_argument("--conversions", default=None, help="parquet of item/unit factors")
    p.add_argument("--html", default=None, help="write the scorecard page (HTML) here")
    p.add_argument("--xlsx", default=None, help="write the scorecard workbook (XLSX) here")
    p.set_defaults(func=cmd_otif)


def _add_x12(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``scfeeds x12``."""
    p = sub.add_parser("x12", help="read X12 files, report envelope errors, write a 997")
    p.add_argument("source", help="file or glob")
    p.add_argument("--ack", default=None, help="write the 997 acknowledgment to this file")
    p.set_defaults(func=cmd_x12)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scfeeds",
        description="Fetch, parse, validate and reconcile supplier feeds "
        "(X12 850/856/810, CSV/Excel exports, cXML).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    _add_demo(sub)

    from scfeeds import synth
    from scfeeds._portal._cli import add_cli as add_portal_cli  # light: no aiohttp.web import
    from scfeeds._service._cli import add_cli as add_service_cli  # light: no redis import

    synth.add_cli(sub)
    add_portal_cli(sub)
    add_service_cli(sub)

    _add_fetch_and_ingest(sub)

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

    _add_otif(sub)
    _add_x12(sub)
    _add_lake_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = _stop_on_sigterm()
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        # Ctrl-C, or the SIGTERM of systemd / `timeout` / a process-group kill: the run was
        # cancelled cleanly (landed files and lake commits are whole; a re-run resumes)
        print(f"scfeeds {args.command}: interrupted; run it again to resume", file=sys.stderr)
        return 130
    except asyncio.CancelledError:
        return 130
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            # a full disk is not a bug of ours: one line, not a traceback
            print(f"scfeeds: {exc.strerror or exc}", file=sys.stderr)
            return 1
        if not isinstance(
            exc, (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)
        ):
            raise
        print(f"scfeeds {args.command}: {_one_line(exc)}", file=sys.stderr, flush=True)
        return 2
    except (
        _UsageError,
        ConfigurationError,
    ) as exc:
        # a missing or unusable path, or a call the API refuses: one line, no traceback
        print(f"scfeeds {args.command}: {_one_line(exc)}", file=sys.stderr, flush=True)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return code


def _stop_on_sigterm() -> Any:
    """Make SIGTERM stop a command the way Ctrl-C does (SIGINT's handler: inside
    ``asyncio.run`` a cancel of the main task, which lets the fetch or ingest clean up; else a
    KeyboardInterrupt), instead of killing the process mid-write. Returns the handler it
    replaced (None: not installed)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum: int, frame: Any) -> None:
        # Exactly what Ctrl-C does: inside asyncio.run, its SIGINT handler cancels the main
        # task (a KeyboardInterrupt raised here instead would land in whichever task runs,
        # leaving its exception unretrieved); elsewhere the default handler raises
        # KeyboardInterrupt.
        on_sigint = signal.getsignal(signal.SIGINT)
        if callable(on_sigint):
            on_sigint(signal.SIGINT, frame)
            return
        raise KeyboardInterrupt  # builtin-raise: SIGTERM stops the command as Ctrl-C does

    return signal.signal(signal.SIGTERM, stop)


if __name__ == "__main__":
    sys.exit(main())
