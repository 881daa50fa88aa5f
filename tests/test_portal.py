"""The simulated supplier portal, exercised by a real aiohttp client over loopback."""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import io
import json
import logging
import random
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import polars as pl
import psutil  # type: ignore[import-untyped]
import pytest
from multidict import CIMultiDict
from polars.testing import assert_frame_equal

from scfeeds._portal._http import UNSATISFIABLE, ByteRange, parse_range
from scfeeds.exceptions import ConfigurationError
from scfeeds.portal import (
    Portal,
    PortalKnobs,
    ThreadPortal,
    add_cli,
    blob_sha256,
    cli_portal,
    serve,
    serve_in_process,
    serve_in_thread,
)
from scfeeds.schemas import schema

X12_BYTES = random.Random(1).randbytes(300_000)
CSV_ID = "feeds.SUP001.po_lines.export.csv"
X12_ID = "feeds.SUP001.po_lines.850_00001.x12"
TOKEN = "s3cret-Token-4f9a1c"  # a test token whose absence from logs is checked


# -- fixtures -----------------------------------------------------------------------------------


def _rows(n: int) -> pl.DataFrame:
    # Commas and quotes in a cell make CSV quoting matter.
    return pl.DataFrame(
        {
            "po_number": [f"PO{i:04d}" for i in range(n)],
            "qty": [str(i * 3) for i in range(n)],
            "note": [f'n,"{i}"' for i in range(n)],
        }
    )


@pytest.fixture
def plain_root(tmp_path: Path) -> Path:
    """A plain folder (no catalog): CSV, NDJSON, Parquet, X12 and a file the portal ignores."""
    root = tmp_path / "plain"
    po = root / "feeds" / "SUP001" / "po_lines"
    inv = root / "feeds" / "SUP002" / "invoice_lines"
    po.mkdir(parents=True)
    inv.mkdir(parents=True)
    _rows(57).write_csv(po / "export.csv")
    (po / "850_00001.x12").write_bytes(X12_BYTES)
    _rows(23).write_ndjson(inv / "inv.ndjson")
    _rows(31).write_parquet(inv / "inv.parquet")
    (root / "README.txt").write_text("not a feed")
    return root


def _world_rows(source: str, n: int, start: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "source": [source] * n,
            "position": [f"segment {10 + 3 * i}" for i in range(n)],
            "interchange_control": ["000000001"] * n,
            "group_control": ["1"] * n,
            "set_control": ["0001"] * n,
            "supplier_id": ["SUP001"] * n,
            "po_number": [f"PO{start + i // 4:05d}" for i in range(n)],
            "po_date": [date(2026, 1, 1 + i % 28) for i in range(n)],
            "line_number": [str(1 + i % 4) for i in range(n)],
            "item_id": [f"ITEM{i}" for i in range(n)],
            "description": [f"widget, size {i}" for i in range(n)],
            "qty_ordered": [Decimal(i + 1) for i in range(n)],
            "uom": ["EA"] * n,
            "unit_price": [Decimal("1.25") * (i + 1) for i in range(n)],
            "currency": ["USD"] * n,
            "requested_date": [date(2026, 2, 1 + i % 28) for i in range(n)],
        },
        schema=schema("po_lines"),
    )


@pytest.fixture
def world_root(tmp_path: Path) -> Path:
    """A synth-shaped world: catalog.parquet, feed files and world/po_lines.parquet."""
    root = tmp_path / "synth"
    paths = ["feeds/SUP001/po_lines/850_00001.x12", "feeds/SUP001/po_lines/850_00002.x12"]
    for i, rel in enumerate(paths):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(random.Random(10 + i).randbytes(4000 + i))
    a, b = _world_rows(paths[0], 30, 0), _world_rows(paths[1], 12, 100)
    # Interleave the two feeds' rows so a correct filter has something to do.
    world = pl.concat([a[:10], b[:6], a[10:], b[6:]])
    (root / "world").mkdir()
    world.write_parquet(root / "world" / "po_lines.parquet")
    catalog = pl.DataFrame(
        {
            "id": ["po-1", "po-2", "po-missing", "escape"],
            "supplier_id": ["SUP001"] * 4,
            "table": ["po_lines"] * 4,
            "format": ["x12"] * 4,
            "path": [*paths, "feeds/SUP001/po_lines/gone.x12", "../secret.x12"],
            "records": [30, 12, 5, 1],
            "bytes": [4000, 9999, 10, 6],  # po-2's size is stale
            "sha256": [hashlib.sha256((root / p).read_bytes()).hexdigest() for p in paths]
            + ["0" * 64] * 2,
        }
    )
    catalog.write_parquet(root / "catalog.parquet")
    (tmp_path / "secret.x12").write_text("secret")  # outside the root: never served
    return root


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def _get(
    session: aiohttp.ClientSession, url: str, **kwargs: Any
) -> tuple[int, CIMultiDict[str], bytes]:
    async with session.get(url, **kwargs) as resp:
        return resp.status, resp.headers.copy(), await resp.read()


def _feed_url(portal: Portal | ThreadPortal, feed_id: str) -> str:
    return f"{portal.url}/v1/feeds/{feed_id}"


# -- listing ------------------------------------------------------------------------------------


async def test_listing_scans_a_plain_folder(
    plain_root: Path, session: aiohttp.ClientSession
) -> None:
    async with serve(plain_root) as portal:
        status, headers, body = await _get(session, f"{portal.url}/v1/feeds")
        assert status == 200
        assert headers["Content-Type"].startswith("application/json")
        feeds = {f["id"]: f for f in json.loads(body)["feeds"]}
        assert set(feeds) == {
            CSV_ID,
            X12_ID,
            "feeds.SUP002.invoice_lines.inv.ndjson",
            "feeds.SUP002.invoice_lines.inv.parquet",
        }
        x12 = feeds[X12_ID]
        assert (x12["supplier_id"], x12["table"], x12["format"]) == ("SUP001", "po_lines", "x12")
        assert x12["records"] is None
        assert x12["lines_url"] is None
        assert x12["bytes"] == len(X12_BYTES)
        assert x12["sha256"] == hashlib.sha256(X12_BYTES).hexdigest()
        assert x12["url"] == f"{portal.url}/v1/feeds/{X12_ID}"
        assert feeds[CSV_ID]["records"] == 57
        assert feeds["feeds.SUP002.invoice_lines.inv.ndjson"]["records"] == 23
        assert feeds["feeds.SUP002.invoice_lines.inv.parquet"]["records"] == 31
        assert feeds[CSV_ID]["lines_url"] == f"{portal.url}/v1/feeds/{CSV_ID}/lines"
        # Every listed URL serves bytes with the listed digest.
        for feed in feeds.values():
            _, _, data = await _get(session, feed["url"])
            assert hashlib.sha256(data).hexdigest() == feed["sha256"]
            assert len(data) == feed["bytes"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("format=csv", {CSV_ID}),
        (
            "supplier=SUP002",
            {"feeds.SUP002.invoice_lines.inv.ndjson", "feeds.SUP002.invoice_lines.inv.parquet"},
        ),
        ("table=po_lines&format=x12", {X12_ID}),
        ("supplier=SUP999", set()),
    ],
)
async def test_listing_filters(
    plain_root: Path, session: aiohttp.ClientSession, query: str, expected: set[str]
) -> None:
    async with serve(plain_root) as portal:
        _, _, body = await _get(session, f"{portal.url}/v1/feeds?{query}")
        assert {f["id"] for f in json.loads(body)["feeds"]} == expected


async def test_listing_from_catalog(
    world_root: Path, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    async with serve(world_root) as portal:
        _, _, body = await _get(session, f"{portal.url}/v1/feeds")
    feeds = json.loads(body)["feeds"]
    # Rows whose file is missing or outside the root are skipped, with a warning naming them.
    assert [f["id"] for f in feeds] == ["po-1", "po-2"]
    assert "gone.x12" in caplog.text
    assert "'../secret.x12' leaves the root" in caplog.text
    assert [f["records"] for f in feeds] == [30, 12]
    assert [f["bytes"] for f in feeds] == [4000, 4001]  # the file's size, not the stale one
    assert "the catalog says 9999" in caplog.text
    # Canonical lines come from the world tables, so even X12 feeds have a lines_url.
    assert all(f["lines_url"] == f["url"] + "/lines" for f in feeds)


async def test_a_tiny_synth_world(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    from scfeeds import synth

    root = tmp_path / "world"
    synth.generate(root, seed=3, suppliers=2, pos=5)
    catalog = pl.read_parquet(root / "catalog.parquet")
    async with serve(root) as portal:
        _, _, body = await _get(session, f"{portal.url}/v1/feeds")
        feeds = json.loads(body)["feeds"]
        assert [f["id"] for f in feeds] == catalog["id"].to_list()
        assert {f["format"] for f in feeds} >= {"x12", "csv"}
        for feed, row in zip(feeds, catalog.iter_rows(named=True), strict=True):
            _, _, data = await _get(session, feed["url"])
            assert hashlib.sha256(data).hexdigest() == row["sha256"] == feed["sha256"]
            bodies, headers = await _pages(session, feed["lines_url"], "csv", 5)
            assert headers[0]["X-Total-Count"] == str(row["records"])
            expected = (
                synth.load_world(root, row["table"])
                .filter(pl.col("source") == row["path"])
                .collect()
            )
            assert_frame_equal(
                pl.concat([_parse(b, "csv") for b in bodies]),
                _parse(expected.write_csv().encode(), "csv"),
            )


# -- whole files: validators, conditional requests, ranges --------------------------------------


async def test_etag_last_modified_and_304(plain_root: Path, session: aiohttp.ClientSession) -> None:
    async with serve(plain_root) as portal:
        url = _feed_url(portal, X12_ID)
        status, headers, body = await _get(session, url)
        etag = f'"{hashlib.sha256(X12_BYTES).hexdigest()}"'
        assert (status, headers["ETag"], body) == (200, etag, X12_BYTES)
        assert headers["Accept-Ranges"] == "bytes"
        last_modified = headers["Last-Modified"]
        assert email.utils.parsedate_to_datetime(last_modified) is not None

        for validator in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            status, headers, body = await _get(session, url, headers={"If-None-Match": validator})
            assert (status, body, headers["ETag"]) == (304, b"", etag)
        status, _, body = await _get(session, url, headers={"If-None-Match": '"stale"'})
        assert (status, len(body)) == (200, len(X12_BYTES))
        status, _, _ = await _get(session, url, headers={"If-Modified-Since": last_modified})
        assert status == 304
        old = "Mon, 01 Jan 2001 00:00:00 GMT"
        status, _, _ = await _get(session, url, headers={"If-Modified-Since": old})
        assert status == 200


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=100-199", 100, 199),
        ("bytes=0-0", 0, 0),
        ("bytes=-50", 299_950, 299_999),
        ("bytes=299990-", 299_990, 299_999),
        ("bytes=299990-999999999", 299_990, 299_999),
    ],
)
async def test_range_206(
    plain_root: Path, session: aiohttp.ClientSession, header: str, first: int, last: int
) -> None:
    async with serve(plain_root) as portal:
        status, headers, body = await _get(
            session, _feed_url(portal, X12_ID), headers={"Range": header}
        )
    assert status == 206
    assert headers["Content-Range"] == f"bytes {first}-{last}/{len(X12_BYTES)}"
    assert int(headers["Content-Length"]) == last - first + 1
    assert body == X12_BYTES[first : last + 1]


async def test_range_416_and_ignored_ranges(
    plain_root: Path, session: aiohttp.ClientSession
) -> None:
    async with serve(plain_root) as portal:
        url = _feed_url(portal, X12_ID)
        status, headers, body = await _get(session, url, headers={"Range": "bytes=300000-"})
        assert status == 416
        assert headers["Content-Range"] == f"bytes */{len(X12_BYTES)}"
        assert json.loads(body)["error"] == "range_not_satisfiable"
        # Several ranges, other units and malformed specs: the whole file (RFC 9110 s. 14.2).
        for header in ("bytes=0-1,5-6", "items=0-4", "bytes=abc", "bytes=9-3"):
            status, headers, body = await _get(session, url, headers={"Range": header})
            assert (status, body) == (200, X12_BYTES), header
            assert "Content-Range" not in headers


async def test_if_range(plain_root: Path, session: aiohttp.ClientSession) -> None:
    async with serve(plain_root) as portal:
        url = _feed_url(portal, X12_ID)
        _, headers, _ = await _get(session, url)
        etag, last_modified = headers["ETag"], headers["Last-Modified"]
        for validator in (etag, last_modified):
            status, _, body = await _get(
                session, url, headers={"Range": "bytes=10-19", "If-Range": validator}
            )
            assert (status, body) == (206, X12_BYTES[10:20])
        # A changed representation (or a weak tag) means: send it all.
        for validator in ('"changed"', f"W/{etag}", "Mon, 01 Jan 2001 00:00:00 GMT"):
            status, _, body = await _get(
                session, url, headers={"Range": "bytes=10-19", "If-Range": validator}
            )
            assert (status, len(body)) == (200, len(X12_BYTES))


async def test_head(plain_root: Path, session: aiohttp.ClientSession) -> None:
    async with serve(plain_root) as portal:
        async with session.head(_feed_url(portal, X12_ID), headers={"Range": "bytes=0-9"}) as resp:
            # Range is defined for GET only: HEAD describes the whole representation.
            assert resp.status == 200
            assert int(resp.headers["Content-Length"]) == len(X12_BYTES)
            assert resp.headers["ETag"] == f'"{hashlib.sha256(X12_BYTES).hexdigest()}"'
            assert await resp.read() == b""
        assert portal.stats()["by_kind"]["file"]["bytes"] == 0


# -- lines ----------------------------------------------------------------------------------------


async def _pages(
    session: aiohttp.ClientSession, lines_url: str, fmt: str, limit: int
) -> tuple[list[bytes], list[CIMultiDict[str]]]:
    bodies, headers_seen, offset = [], [], 0
    while True:
        status, headers, body = await _get(
            session, lines_url, params={"offset": offset, "limit": limit, "format": fmt}
        )
        assert status == 200, body
        bodies.append(body)
        headers_seen.append(headers)
        offset += limit
        if offset >= int(headers["X-Total-Count"]):
            return bodies, headers_seen


def _parse(body: bytes, fmt: str) -> pl.DataFrame:
    if fmt == "csv":
        return pl.read_csv(io.BytesIO(body), infer_schema=False)
    return pl.read_ndjson(io.BytesIO(body), infer_schema_length=None).cast(pl.String)


@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
@pytest.mark.parametrize(
    ("feed_id", "n"),
    [
        (CSV_ID, 57),
        ("feeds.SUP002.invoice_lines.inv.ndjson", 23),
        ("feeds.SUP002.invoice_lines.inv.parquet", 31),
    ],
)
async def test_lines_pages_concatenate_to_all_rows(
    plain_root: Path, session: aiohttp.ClientSession, fmt: str, feed_id: str, n: int
) -> None:
    async with serve(plain_root) as portal:
        bodies, headers = await _pages(session, f"{_feed_url(portal, feed_id)}/lines", fmt, 10)
    assert len(bodies) == -(-n // 10)
    assert {h["X-Total-Count"] for h in headers} == {str(n)}
    expected_type = "application/x-ndjson" if fmt == "ndjson" else "text/csv"
    assert all(h["Content-Type"].startswith(expected_type) for h in headers)
    assert 'rel="next"' in headers[0]["Link"]
    assert 'rel="next"' not in headers[-1]["Link"]
    got = pl.concat([_parse(b, fmt) for b in bodies])
    assert_frame_equal(got, _rows(n))


@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
async def test_lines_of_a_world_feed_are_its_canonical_rows(
    world_root: Path, session: aiohttp.ClientSession, fmt: str
) -> None:
    world = pl.read_parquet(world_root / "world" / "po_lines.parquet")
    async with serve(world_root) as portal:
        for feed_id, path, n in (
            ("po-1", "feeds/SUP001/po_lines/850_00001.x12", 30),
            ("po-2", "feeds/SUP001/po_lines/850_00002.x12", 12),
        ):
            bodies, headers = await _pages(session, f"{_feed_url(portal, feed_id)}/lines", fmt, 7)
            assert headers[0]["X-Total-Count"] == str(n)
            expected = world.filter(pl.col("source") == path)
            # Compare on the wire form: decimals and dates as text, exactly as served.
            expected_text = _parse(
                expected.write_csv().encode() if fmt == "csv" else expected.write_ndjson().encode(),
                fmt,
            )
            assert_frame_equal(pl.concat([_parse(b, fmt) for b in bodies]), expected_text)
            assert expected_text.height == n


async def test_lines_negotiation_and_errors(
    plain_root: Path, session: aiohttp.ClientSession
) -> None:
    async with serve(plain_root) as portal:
        lines = f"{_feed_url(portal, CSV_ID)}/lines"
        status, headers, body = await _get(session, lines, headers={"Accept": "text/csv"})
        assert status == 200
        assert headers["Content-Type"].startswith("text/csv")
        assert body.startswith(b"po_number,qty,note\n")
        accept = "text/csv;q=0.5, application/x-ndjson"
        _, headers, _ = await _get(session, lines, headers={"Accept": accept})
        assert headers["Content-Type"].startswith("application/x-ndjson")
        # The end of the collection is an empty page; past it is an error.
        status, headers, body = await _get(session, lines, params={"offset": 57})
        assert (status, body, headers["X-Total-Count"]) == (200, b"", "57")
        cases = [
            ({"offset": "58"}, {}, 400, "offset_out_of_range"),
            ({"offset": "-1"}, {}, 400, "invalid_offset"),
            ({"limit": "0"}, {}, 400, "invalid_limit"),
            ({"limit": "ten"}, {}, 400, "invalid_limit"),
            ({"limit": "²"}, {}, 400, "invalid_limit"),
            ({"format": "xml"}, {}, 400, "invalid_format"),
            ({"ofset": "3"}, {}, 400, "unknown_parameter"),
            ({}, {"Accept": "image/png"}, 406, "not_acceptable"),
        ]
        for params, req_headers, want_status, code in cases:
            status, headers, body = await _get(session, lines, params=params, headers=req_headers)
            assert status == want_status, (params, body)
            assert headers["Content-Type"].startswith("application/json")
            error = json.loads(body)
            assert error["error"] == code
            assert error["message"]
        status, _, body = await _get(session, f"{_feed_url(portal, X12_ID)}/lines")
        assert (status, json.loads(body)["error"]) == (404, "no_lines")


async def test_unknown_feed_and_route_are_json_404(
    plain_root: Path, session: aiohttp.ClientSession
) -> None:
    async with serve(plain_root) as portal:
        for path in ("/v1/feeds/nope", "/v1/feeds/nope/lines", "/v1/elsewhere"):
            status, headers, body = await _get(session, portal.url + path)
            assert status == 404
            assert headers["Content-Type"].startswith("application/json")
            assert json.loads(body)["error"] in {"unknown_feed", "not_found"}
        async with session.post(f"{portal.url}/v1/feeds") as resp:
            assert resp.status == 405
            assert (await resp.json())["error"] == "method_not_allowed"


# -- blob -----------------------------------------------------------------------------------------


async def test_blob_is_deterministic_and_rangeable(
    plain_root: Path, session: aiohttp.ClientSession
) -> None:
    size = 3 * (1 << 20) + 12345
    async with serve(plain_root) as portal:
        url = f"{portal.url}/v1/blob/{size}"
        status, headers, full = await _get(session, url, params={"seed": 5})
        assert (status, len(full)) == (200, size)
        _, headers2, again = await _get(session, url, params={"seed": 5, "chunk": 4096})
        assert again == full  # chunking changes the stream, not the content
        assert headers["ETag"] == headers2["ETag"]
        _, headers6, other = await _get(session, url, params={"seed": 6})
        assert other != full
        assert headers6["ETag"] != headers["ETag"]
        # No two 1 MiB blocks are equal, so misplaced chunks are caught.
        blocks = {full[i : i + (1 << 20)] for i in range(0, 3 << 20, 1 << 20)}
        assert len(blocks) == 3
        for first, last in ((0, 15), (1048570, 1048600), (size - 100, size - 1)):
            status, headers, part = await _get(
                session, url, params={"seed": 5}, headers={"Range": f"bytes={first}-{last}"}
            )
            assert status == 206
            assert part == full[first : last + 1]
        status, _, _ = await _get(
            session, url, params={"seed": 5}, headers={"If-None-Match": headers["ETag"]}
        )
        assert status == 304
        status, _, body = await _get(session, f"{portal.url}/v1/blob/12x")
        assert (status, json.loads(body)["error"]) == (400, "invalid_nbytes")
        status, _, body = await _get(session, url, params={"chunk": "0"})
        assert (status, json.loads(body)["error"]) == (400, "invalid_chunk")


# -- knobs ----------------------------------------------------------------------------------------


async def test_latency_and_jitter(plain_root: Path, session: aiohttp.ClientSession) -> None:
    async with serve(plain_root) as portal:
        url = f"{portal.url}/v1/blob/10"
        started = time.perf_counter()
        await _get(session, url)
        fast = time.perf_counter() - started
        portal.set_knobs(latency=0.2)
        started = time.perf_counter()
        await _get(session, url)
        slow = time.perf_counter() - started
        assert slow >= 0.2 > fast
        portal.set_knobs(latency=0.1, jitter=0.08, seed=3)
        delays = []
        for i in range(6):
            started = time.perf_counter()
            await _get(session, f"{url}?seed={i}")
            delays.append(time.perf_counter() - started)
        assert min(delays) >= 0.02  # latency - jitter is a floor no load can lower
        assert max(delays) < 0.18 + 0.5  # generous: the machine may be busy
        assert max(delays) - min(delays) > 0.01  # jitter varies the delay


async def _statuses(session: aiohttp.ClientSession, portal: Portal, n: int) -> list[int]:
    out = []
    for i in range(n):
        # Distinct paths and one repeated path: both go through the seeded decisions.
        path = f"/v1/blob/64?seed={i % 50}"
        async with session.get(portal.url + path) as resp:
            await resp.read()
            out.append(resp.status)
    return out


async def test_error_rate_close_to_setting_and_deterministic(
    plain_root: Path, session: aiohttp.ClientSession
) -> None:
    async with serve(plain_root, error_rate=0.3, seed=11) as portal:
        first = await _statuses(session, portal, 200)
        errors = [s for s in first if s != 200]
        assert set(errors) <= {500, 502, 503}
        assert len(set(errors)) == 3
        assert abs(len(errors) / len(first) - 0.3) < 0.07
        assert portal.stats()["faults"]["error"] == len(errors)
        portal.set_knobs(seed=11)  # same seed: the same answers, request by request
        assert await _statuses(session, portal, 200) == first
        portal.set_knobs(seed=12)
        assert await _statuses(session, portal, 200) != first
        status, _, _body = await _get(session, f"{portal.url}/v1/stats")
        assert status == 200  # stats never fail


async def test_same_seed_same_faults_across_servers(
    plain_root: Path, session: aiohttp.ClientSession
) -> None:
    runs = []
    for _ in range(2):
        async with serve(plain_root, error_rate=0.5, seed=4) as portal:
            runs.append(await _statuses(session, portal, 60))
    assert runs[0] == runs[1]
    assert 0 < runs[0].count(200) < 60


@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_rate_limit_429_with_retry_after(
    plain_root: Path, session: aiohttp.ClientSession, form: str
) -> None:
    async with serve(plain_root, rate_limit=1.0, burst=3, retry_after_form=form) as portal:
        url = f"{portal.url}/v1/blob/16"
        results = [await _get(session, url) for _ in range(6)]
        statuses = [status for status, _, _ in results]
        assert statuses[:3] == [200, 200, 200]  # the burst
        assert 429 in statuses[3:]
        _status, headers, body = next(r for r in results if r[0] == 429)
        assert json.loads(body)["error"] == "rate_limited"
        retry_after = headers["Retry-After"]
        if form == "seconds":
            assert retry_after == "1"  # under a second to the next token, rounded up
        else:
            when = email.utils.parsedate_to_datetime(retry_after).timestamp()
            assert time.time() - 1 <= when <= time.time() + 3
            assert retry_after.endswith(" GMT")
        # Another client (identified by its bearer token) has its own bucket.
        other = {"Authorization": "Bearer someone-else"}
        assert (await _get(session, url, headers=other))[0] == 200
        await asyncio.sleep(1.1)  # 1 token/s: one is back
        assert (await _get(session, url))[0] == 200
        assert portal.stats()["faults"]["rate_limited"] == statuses.count(429)


@pytest.mark.parametrize(("retry_after", "form"), [(0, "seconds"), (2, "http-date")])
async def test_seeded_throttling(
    plain_root: Path, session: aiohttp.ClientSession, retry_after: int, form: str
) -> None:
    async with serve(
        plain_root, throttle_rate=0.25, retry_after=retry_after, retry_after_form=form, seed=8
    ) as portal:
        first = await _statuses(session, portal, 200)
        assert set(first) == {200, 429}
        assert abs(first.count(429) / 200 - 0.25) < 0.07
        assert portal.stats()["faults"]["throttled"] == first.count(429)
        portal.set_knobs(seed=8)
        assert await _statuses(session, portal, 200) == first  # no clock involved
        portal.set_knobs(throttle_rate=1.0)
        status, headers, _ = await _get(session, f"{portal.url}/v1/blob/1")
        assert status == 429
        if form == "seconds":
            assert headers["Retry-After"] == str(retry_after)
        else:
            when = email.utils.parsedate_to_datetime(headers["Retry-After"]).timestamp()
            assert time.time() + retry_after - 1 <= when <= time.time() + retry_after + 2


async def test_set_knobs_validates_and_admin_needs_the_secret(
    plain_root: Path, session: aiohttp.ClientSession
) -> None:
    async with serve(plain_root, error_rate=0.1) as portal:
        with pytest.raises(ConfigurationError, match="error_rate"):
            portal.set_knobs(error_rate=2.0)
        assert portal.knobs.error_rate == 0.1  # unchanged
        async with session.put(f"{portal.url}/v1/admin/knobs", json={"error_rate": 1.0}) as resp:
            assert resp.status == 403
            assert (await resp.json())["error"] == "forbidden"
        assert portal.knobs.error_rate == 0.1


async def test_stopping_cuts_in_flight_responses_promptly(
    plain_root: Path, session: aiohttp.ClientSession
) -> None:
    async def slow_download(url: str) -> Exception | None:
        async with session.get(url) as resp:
            return (await _read_until_error(resp))[1]

    async with serve(plain_root, slow_body=2000) as portal:
        task = asyncio.create_task(slow_download(f"{portal.url}/v1/blob/100000"))
        await asyncio.sleep(0.2)
        started = time.perf_counter()
    assert time.perf_counter() - started < 2.0
    assert isinstance(await task, aiohttp.ClientPayloadError)


async def test_reset_is_a_client_connection_error(
    plain_root: Path, session: aiohttp.ClientSession
) -> None:
    async with serve(plain_root, reset_rate=1.0) as portal:
        with pytest.raises(aiohttp.ClientConnectionError):
            await _get(session, _feed_url(portal, X12_ID))
        stats = portal.stats()
        # aiohttp may retry an idempotent GET once on a dropped connection: count, not 1.
        assert stats["faults"]["reset"] == stats["requests"] >= 1
        assert stats["by_status"] == {"reset": stats["requests"]}
        assert stats["bytes"] == 0
        portal.set_knobs(reset_rate=0.0)  # and the portal is still fine afterwards
        assert (await _get(session, _feed_url(portal, X12_ID)))[2] == X12_BYTES


async def _read_until_error(resp: aiohttp.ClientResponse) -> tuple[int, Exception | None]:
    received = 0
    try:
        async for chunk in resp.content.iter_any():
            received += len(chunk)
    except aiohttp.ClientError as exc:
        return received, exc
    return received, None


async def test_truncated_body_is_a_payload_error(
    plain_root: Path, session: aiohttp.ClientSession
) -> None:
    async with serve(plain_root, truncate_rate=1.0, seed=2) as portal:
        async with session.get(_feed_url(portal, X12_ID)) as resp:
            assert resp.status == 200
            assert int(resp.headers["Content-Length"]) == len(X12_BYTES)  # promised in full
            received, error = await _read_until_error(resp)
        assert isinstance(error, aiohttp.ClientPayloadError)
        assert "ConnectionResetError" not in str(error)  # a clean close, not an RST
        assert 0 <= received < len(X12_BYTES)
        stats = portal.stats()
        assert stats["faults"]["truncated"] == 1
        assert stats["bytes"] == received  # what was served is exactly what arrived


async def test_reset_in_the_body(plain_root: Path, session: aiohttp.ClientSession) -> None:
    async with serve(plain_root, reset_rate=1.0, reset_at="body", seed=5) as portal:
        async with session.get(_feed_url(portal, X12_ID)) as resp:
            assert resp.status == 200
            received, error = await _read_until_error(resp)
        assert isinstance(error, aiohttp.ClientPayloadError)
        assert "ConnectionResetError" in str(error)  # an RST, not a clean close
        assert received < len(X12_BYTES)
        stats = portal.stats()
        assert (stats["faults"]["reset"], stats["by_status"]) == (1, {"200": 1})
        # A response without a body cannot be cut: a 304 goes through.
        status, _, _ = await _get(
            session, _feed_url(portal, X12_ID), headers={"If-None-Match": "*"}
        )
        assert status == 304


async def test_slow_body_is_measurably_slow(
    plain_root: Path, session: aiohttp.ClientSession
) -> None:
    async with serve(plain_root) as portal:
        url = f"{portal.url}/v1/blob/60000"
        started = time.perf_counter()
        await _get(session, url)
        fast = time.perf_counter() - started
        portal.set_knobs(slow_body=100_000)
        started = time.perf_counter()
        _, _, body = await _get(session, url)
        slow = time.perf_counter() - started
    assert len(body) == 60_000
    assert 0.5 <= slow < 3.0  # 60 kB at 100 kB/s is 0.6 s; the bound above allows a busy host
    assert fast < slow / 2


async def test_token_required_and_never_logged(
    plain_root: Path, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with serve(plain_root, token=TOKEN, latency=0.001) as portal:
        url = f"{portal.url}/v1/feeds"
        status, headers, body = await _get(session, url)
        assert status == 401
        assert headers["WWW-Authenticate"].startswith("Bearer ")
        assert json.loads(body)["error"] == "unauthorized"
        status, headers, _ = await _get(session, url, headers={"Authorization": "Bearer wrong"})
        assert status == 401
        assert 'error="invalid_token"' in headers["WWW-Authenticate"]
        auth = {"Authorization": f"Bearer {TOKEN}"}
        status, _, body = await _get(session, url, headers=auth)
        assert status == 200
        feed_url = json.loads(body)["feeds"][0]["url"]
        assert (await _get(session, feed_url, headers=auth))[0] == 200
        assert (await _get(session, feed_url))[0] == 401
        # Stats need no token and do not reveal it.
        status, _, stats_body = await _get(session, f"{portal.url}/v1/stats")
        assert status == 200
        assert portal.stats()["faults"]["unauthorized"] == 3
        shown = repr(portal) + repr(portal.knobs) + str(portal.stats())
    assert TOKEN not in caplog.text
    assert TOKEN.encode() not in stats_body
    assert TOKEN not in shown
    assert "GET /v1/feeds" in caplog.text  # the access log was captured, so the check is real


async def test_knobs_spare_the_endpoints_not_listed_in_apply_to(
    plain_root: Path, session: aiohttp.ClientSession
) -> None:
    async with serve(plain_root, error_rate=1.0, apply_to=("blob",)) as portal:
        assert (await _get(session, f"{portal.url}/v1/feeds"))[0] == 200
        assert (await _get(session, f"{portal.url}/v1/blob/5"))[0] >= 500


async def test_stats_count_what_the_client_received(
    plain_root: Path, session: aiohttp.ClientSession
) -> None:
    async with serve(plain_root) as portal:
        received = 0
        requests = [
            (f"{portal.url}/v1/feeds", {}),
            (_feed_url(portal, X12_ID), {}),
            (_feed_url(portal, X12_ID), {"Range": "bytes=5-104"}),
            (_feed_url(portal, X12_ID), {"If-None-Match": "*"}),
            (f"{_feed_url(portal, CSV_ID)}/lines?limit=20", {}),
            (f"{_feed_url(portal, CSV_ID)}/lines?limit=20&offset=40&format=csv", {}),
            (f"{portal.url}/v1/blob/2500000?seed=9", {}),
            (f"{portal.url}/v1/feeds/missing", {}),
        ]
        for url, headers in requests:
            received += len((await _get(session, url, headers=headers))[2])
        stats = portal.stats()
        assert stats["bytes"] == received
        assert stats["requests"] == len(requests)
        assert stats["by_status"] == {"200": 5, "206": 1, "304": 1, "404": 1}
        assert stats["by_kind"]["blob"] == {"requests": 1, "bytes": 2_500_000}
        assert stats["by_feed"][X12_ID] == {"requests": 3, "bytes": len(X12_BYTES) + 100}
        _, _, body = await _get(session, f"{portal.url}/v1/stats")
        over_http = json.loads(body)
        assert (over_http["bytes"], over_http["requests"]) == (received, len(requests))
        portal.reset_stats()
        assert (portal.stats()["bytes"], portal.stats()["requests"]) == (0, 0)


# -- running it -----------------------------------------------------------------------------------


def _portal_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "scfeeds-portal"]


def _urlopen(url: str, **headers: str) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_serve_in_thread_from_sync_code(plain_root: Path) -> None:
    before = set(threading.enumerate())
    with serve_in_thread(plain_root, error_rate=0.0) as portal:
        assert portal.url.startswith("http://127.0.0.1:")
        status, body = _urlopen(f"{portal.url}/v1/feeds")
        assert status == 200
        assert len(json.loads(body)["feeds"]) == 4
        assert portal.stats()["by_status"] == {"200": 1}
        portal.set_knobs(error_rate=1.0)
        assert _urlopen(f"{portal.url}/v1/feeds")[0] >= 500
        portal.reset_stats()
        assert portal.stats()["requests"] == 0
        assert len(_portal_threads()) == 1
    assert _portal_threads() == []
    assert set(threading.enumerate()) <= before


async def test_serve_in_thread_from_a_running_loop(
    plain_root: Path, session: aiohttp.ClientSession
) -> None:
    # The notebook case: the client's loop is running; the portal has its own.
    with serve_in_thread(plain_root) as portal:
        status, _, body = await _get(session, _feed_url(portal, X12_ID))
        assert (status, body) == (200, X12_BYTES)
        assert portal.stats()["bytes"] == len(X12_BYTES)
    assert _portal_threads() == []


def test_serve_in_thread_without_a_with_block(plain_root: Path) -> None:
    # The notebook style: start in one cell, use it in others, close it at the end.
    portal = serve_in_thread(plain_root)
    assert _urlopen(f"{portal.url}/v1/feeds")[0] == 200
    assert "running" in repr(portal)
    portal.close()
    portal.close()  # idempotent
    assert "closed" in repr(portal)
    assert _portal_threads() == []
    with pytest.raises(RuntimeError, match="closed"):
        portal.stats()


def test_blob_sha256_matches_the_served_bytes(plain_root: Path) -> None:
    with serve_in_thread(plain_root) as portal:
        status, body = _urlopen(f"{portal.url}/v1/blob/2100000?seed=17")
    assert status == 200
    assert hashlib.sha256(body).hexdigest() == blob_sha256(2_100_000, seed=17)
    assert blob_sha256(2_100_000, seed=18) != blob_sha256(2_100_000, seed=17)


def test_serve_in_thread_reports_startup_errors(tmp_path: Path) -> None:
    with (
        pytest.raises(ConfigurationError, match="not a directory"),
        serve_in_thread(tmp_path / "nope"),
    ):
        pass
    assert _portal_threads() == []


def test_serve_in_process(plain_root: Path) -> None:
    me = psutil.Process()
    with serve_in_process(plain_root, token=TOKEN) as portal:
        child = psutil.Process(portal.pid)
        assert child.ppid() == me.pid
        assert TOKEN not in " ".join(child.cmdline())  # settings travel on stdin
        status, denied = _urlopen(f"{portal.url}/v1/feeds")
        assert status == 401
        status, body = _urlopen(f"{portal.url}/v1/feeds", Authorization=f"Bearer {TOKEN}")
        assert status == 200
        stats = portal.stats()
        assert (stats["requests"], stats["bytes"]) == (2, len(denied) + len(body))
        portal.set_knobs(error_rate=1.0)
        assert portal.knobs.error_rate == 1.0
        status, _ = _urlopen(f"{portal.url}/v1/feeds", Authorization=f"Bearer {TOKEN}")
        assert status in {500, 502, 503}
        portal.reset_stats()
        assert portal.stats()["requests"] == 0
        with pytest.raises(ConfigurationError):
            portal.set_knobs(error_rate=2.0)
    assert portal.process.poll() is not None
    assert not psutil.pid_exists(portal.pid) or psutil.Process(portal.pid).status() == "zombie"
    # (other tests may leave long-lived children such as a forkserver: only ours must be gone)
    assert portal.pid not in {c.pid for c in me.children()}
    portal.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        portal.stats()


def test_serve_in_process_startup_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not a directory"):
        serve_in_process(tmp_path / "nope")
    # Only the child reads the catalog: its error comes back with its type and message.
    pl.DataFrame({"id": ["x"]}).write_parquet(tmp_path / "catalog.parquet")
    before = {c.pid for c in psutil.Process().children()}
    with pytest.raises(ConfigurationError, match="missing column"):
        serve_in_process(tmp_path)
    # the failed child is reaped (other tests' long-lived children, e.g. a forkserver, stay)
    assert {c.pid for c in psutil.Process().children()} <= before


# -- configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "8.8.8.8", "::"])
async def test_refuses_public_bind(plain_root: Path, host: str) -> None:
    with pytest.raises(ConfigurationError, match="allow_public"):
        async with serve(plain_root, host=host):
            pass
    with (
        pytest.raises(ConfigurationError, match="allow_public"),
        serve_in_thread(plain_root, host=host),
    ):
        pass
    assert _portal_threads() == []


@pytest.mark.parametrize(
    ("knobs", "match"),
    [
        ({"error_rate": 1.5}, "error_rate"),
        ({"latency": -1}, "latency"),
        ({"latency": True}, "latency"),
        ({"rate_limit": 0}, "rate_limit"),
        ({"burst": 0}, "burst"),
        ({"retry_after_form": "minutes"}, "retry_after_form"),
        ({"error_statuses": (404,)}, "error_statuses"),
        ({"slow_body": 0}, "slow_body"),
        ({"token": "has space"}, "token"),
        ({"apply_to": ("stats",)}, "apply_to"),
        ({"laggy": 1}, "unknown portal knob"),
    ],
)
async def test_bad_knobs_raise_configuration_error(
    plain_root: Path, knobs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigurationError, match=match):
        async with serve(plain_root, **knobs):
            pass


def test_knobs_hide_the_token() -> None:
    knobs = PortalKnobs(token=TOKEN, error_rate=0.1)
    assert TOKEN not in repr(knobs)
    assert knobs.describe()["token"] == "<set>"
    assert knobs.replace(seed=3).token == TOKEN
    with pytest.raises(ConfigurationError) as info:
        PortalKnobs(token=TOKEN + " ")
    assert TOKEN not in str(info.value)


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, None),
        ("bytes=0-4", 10, ByteRange(0, 4)),
        ("bytes=5-", 10, ByteRange(5, 9)),
        ("bytes=-3", 10, ByteRange(7, 9)),
        ("bytes=-30", 10, ByteRange(0, 9)),
        ("bytes=8-100", 10, ByteRange(8, 9)),
        ("bytes=10-", 10, UNSATISFIABLE),
        ("bytes=-0", 10, UNSATISFIABLE),
        ("bytes=0-", 0, UNSATISFIABLE),
        ("bytes=4-2", 10, None),
        ("bytes=1-2,4-5", 10, None),
        ("bytes=x-2", 10, None),
        ("lines=1-2", 10, None),
        ("bytes=²-3", 10, None),
    ],
)
def test_parse_range(header: str | None, size: int, expected: object) -> None:
    assert parse_range(header, size) == expected


def test_cli_runs_until_sigterm(plain_root: Path) -> None:
    script = (
        "import argparse, sys\n"
        "from scfeeds.portal import add_cli\n"
        "parser = argparse.ArgumentParser()\n"
        "add_cli(parser.add_subparsers())\n"
        "args = parser.parse_args(sys.argv[1:])\n"
        "sys.exit(args.func(args))\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script, "portal", str(plain_root), "--port", "0", "--quiet"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("scfeeds portal: 4 feeds at http://127.0.0.1:")
        url = line.split(" at ")[1].split()[0]
        status, body = _urlopen(f"{url}/v1/feeds")
        assert (status, len(json.loads(body)["feeds"])) == (200, 4)
        process.terminate()  # SIGTERM to this PID: a graceful stop, exit code 0
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def test_cli_parser(plain_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="scfeeds")
    add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["portal", str(plain_root), "--port", "0", "--error-rate", "0.2", "--token-env", "PT_TOK"]
    )
    assert args.func is cli_portal
    assert (args.port, args.error_rate, args.host) == (0, 0.2, "127.0.0.1")
    monkeypatch.delenv("PT_TOK", raising=False)
    assert cli_portal(args) == 2  # the named variable is unset: refuse rather than run open
    args = parser.parse_args(["portal", str(plain_root), "--host", "0.0.0.0", "--quiet"])
    assert cli_portal(args) == 2
