"""The ``scfeeds portal`` subcommand: argument parsing only, so ``scfeeds --help`` stays fast."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from scfeeds._portal import DEFAULT_PORT
from scfeeds.exceptions import ConfigurationError


def add_cli(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add the ``portal`` subcommand to an ``argparse`` subparsers object.

    The parser's default ``func`` is :func:`cli_portal` (``args.func(args)`` -> exit code).
    """
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "portal",
        help="serve a folder of feeds as a simulated supplier portal",
        description=(
            "Serve DIR (a synth world or any folder of .x12/.csv/.xlsx/.xml/.ndjson/.parquet "
            "files) over HTTP on loopback, with optional latency and fault knobs. "
            "Endpoints: /v1/feeds, /v1/feeds/{id}, /v1/feeds/{id}/lines, /v1/blob/{n}, /v1/stats."
        ),
    )
    parser.add_argument("root", metavar="DIR", help="folder to serve")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port (default {DEFAULT_PORT}; 0 = any free)",
    )
    parser.add_argument("--allow-public", action="store_true", help="allow a non-loopback --host")
    parser.add_argument("--quiet", action="store_true", help="no access log")
    _add_knob_args(parser)
    parser.set_defaults(func=cli_portal)
    return parser


def _add_knob_args(parser: argparse.ArgumentParser) -> None:
    """The fault knobs (:class:`PortalKnobs`) as options."""
    knobs = parser.add_argument_group("fault knobs (all deterministic under --seed)")
    knobs.add_argument("--seed", type=int, default=0)
    knobs.add_argument(
        "--latency", type=float, default=0.0, metavar="S", help="seconds before each response"
    )
    knobs.add_argument(
        "--jitter", type=float, default=0.0, metavar="S", help="± seconds around --latency"
    )
    knobs.add_argument(
        "--error-rate", type=float, default=0.0, metavar="P", help="share of 5xx answers"
    )
    knobs.add_argument(
        "--rate-limit",
        type=float,
        default=None,
        metavar="R",
        help="requests/s per client (429 beyond)",
    )
    knobs.add_argument(
        "--burst", type=int, default=None, metavar="N", help="token bucket size of --rate-limit"
    )
    knobs.add_argument(
        "--throttle-rate",
        type=float,
        default=0.0,
        metavar="P",
        help="share of requests answered 429 regardless of rate (seeded, timing-free)",
    )
    knobs.add_argument(
        "--retry-after",
        type=int,
        default=1,
        metavar="S",
        help="Retry-After seconds of --throttle-rate 429s",
    )
    knobs.add_argument("--retry-after-form", choices=("seconds", "http-date"), default="seconds")
    knobs.add_argument(
        "--reset-rate", type=float, default=0.0, metavar="P", help="share of reset connections"
    )
    knobs.add_argument(
        "--reset-at",
        choices=("start", "body"),
        default="start",
        help="reset before the response (default) or in the middle of the body",
    )
    knobs.add_argument(
        "--truncate-rate", type=float, default=0.0, metavar="P", help="share of truncated bodies"
    )
    knobs.add_argument(
        "--slow-body",
        type=float,
        default=None,
        metavar="BPS",
        help="throttle bodies to BPS bytes/s",
    )
    knobs.add_argument(
        "--token-env",
        metavar="VAR",
        default=None,
        help="require 'Authorization: Bearer $VAR' (the token is read from the environment "
        "variable VAR, never from the command line)",
    )


def cli_portal(args: argparse.Namespace) -> int:
    """Run ``scfeeds portal`` from parsed arguments; returns the exit code."""
    token = None
    if args.token_env:
        token = os.environ.get(args.token_env)
        if not token:
            print(
                f"scfeeds portal: environment variable {args.token_env} is empty or unset",
                file=sys.stderr,
            )
            return 2
    if not args.quiet and not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from scfeeds._portal._run import run_forever  # aiohttp and polars only when serving

    try:
        run_forever(
            args.root,
            host=args.host,
            port=args.port,
            allow_public=args.allow_public,
            access_log=not args.quiet,
            seed=args.seed,
            latency=args.latency,
            jitter=args.jitter,
            error_rate=args.error_rate,
            rate_limit=args.rate_limit,
            burst=args.burst,
            retry_after_form=args.retry_after_form,
            reset_rate=args.reset_rate,
            reset_at=args.reset_at,
            throttle_rate=args.throttle_rate,
            retry_after=args.retry_after,
            truncate_rate=args.truncate_rate,
            slow_body=args.slow_body,
            token=token,
        )
    except ConfigurationError as exc:
        print(f"scfeeds portal: {exc}", file=sys.stderr)
        return 2
    return 0
