"""Simulated supplier portal: a real aiohttp server over a folder of feeds, with fault knobs.

Endpoints (JSON errors ``{"error": code, "message": ...}`` with 4xx/5xx):

- ``GET /v1/feeds?supplier=&table=&format=`` -> ``{"feeds": [{id, supplier_id, table, format,
  records, bytes, sha256, url, lines_url}]}`` (absolute URLs; ``lines_url`` null when the feed
  has no line items).
- ``GET|HEAD /v1/feeds/{id}``: the file streamed from disk. ``ETag`` is the quoted sha256,
  ``Last-Modified`` the file's mtime; ``If-None-Match`` / ``If-Modified-Since`` -> 304; one
  ``Range`` -> 206 with ``Content-Range`` (several ranges or a malformed one: the whole file,
  as RFC 9110 allows); ``If-Range`` honoured; a range past the end -> 416.
- ``GET /v1/feeds/{id}/lines?offset=&limit=&format=ndjson|csv``: a page of line items (also
  chosen by ``Accept``), ``X-Total-Count`` and a ``Link`` header (``rel="next"``/``"prev"``).
  For a synth world the lines are the feed's canonical rows (``world/<table>.parquet`` rows
  whose ``source`` is the feed's path, in world-file order); for a plain folder, the rows of
  ``.csv`` (as text) / ``.ndjson`` / ``.parquet`` files. Every CSV page has a header row.
  ``offset`` equal to the total gives an empty page; past it, 400 ``offset_out_of_range``.
  ``limit`` defaults to 1000 (max 1 000 000).
- ``GET|HEAD /v1/blob/{nbytes}?seed=&chunk=``: deterministic pseudo-random bytes (ETag, Range),
  for benchmarks that need a gigabyte without a gigabyte on disk.
- ``GET /v1/stats``: what was served (requests and body bytes by kind, status, fault, feed).

Running it: ``async with serve(root, **knobs) as portal`` on the current loop;
``serve_in_thread(root, **knobs)`` (own loop in a daemon thread) and
``serve_in_process(root, **knobs)`` (a child process) return a started portal that is also a
context manager (``with ... as portal:``, or keep it in a notebook and call ``portal.close()``);
``scfeeds portal DIR --port N`` runs :func:`run_forever`. Every portal has ``.url``,
``.stats()``, ``.reset_stats()`` and ``.set_knobs(**changes)``. Only loopback addresses are
bound unless ``allow_public=True``.

Knobs (:class:`PortalKnobs`) act on the list, file, lines and blob endpoints, never on stats.
Per request, in order: latency, bearer token (401), rate limit (429 + Retry-After), seeded
throttling (429), connection reset, 5xx error, then body faults (truncation or a reset in the
body, slow body). Each decision is drawn from an RNG
seeded by ``seed`` and the request's method, path+query, Range header and attempt number
(see :mod:`scfeeds._portal._knobs`), so a run is reproducible whatever the interleaving.
"""

from __future__ import annotations

from scfeeds._portal._app import blob_sha256
from scfeeds._portal._cli import add_cli, cli_portal
from scfeeds._portal._knobs import PortalKnobs
from scfeeds._portal._run import (
    Portal,
    ProcessPortal,
    ThreadPortal,
    run_forever,
    serve,
    serve_in_process,
    serve_in_thread,
)

__all__ = [
    "Portal",
    "PortalKnobs",
    "ProcessPortal",
    "ThreadPortal",
    "add_cli",
    "blob_sha256",
    "cli_portal",
    "run_forever",
    "serve",
    "serve_in_process",
    "serve_in_thread",
]
