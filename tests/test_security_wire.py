"""Secrets stay with their origin, and the wire's faults get their own names.

Every test runs real servers on loopback: two ``aiohttp.web`` origins on different ports (a
redirect or a listing can point from one to the other), a raw socket server for responses
whose Content-Length lies, and the project's portal for its access log and the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from scfeeds import portal
from scfeeds._config import Retry
from scfeeds._fetch import fetch, redact_url
from scfeeds._fetch._plan import url_key
from scfeeds._ingest import ingest
from scfeeds._lake import scan_lake
from scfeeds.cli import main as cli_main
from scfeeds.exceptions import StorageError
from tests.web_support import serve_app

FAST = Retry(3, backoff=0.01, max_backoff=0.02)
REPO = Path(__file__).resolve().parents[1]

#: One value per secret header name; none of them may reach another origin or a file.
SECRET_HEADERS = {
    "Authorization": "Bearer tok-auth-7f3a",
    "Proxy-Authorization": "Basic cHJveHktc2VjcmV0LTk5",
    "Cookie": "sid=cookie-8e1b",
    "X-Api-Key": "key-xapi-55c2",
    "Api-Key": "key-api-0d4e",
    "X-Auth-Token": "tok-xauth-a9b1",
}


@pytest.fixture(scope="module")
def docs(make_world: Callable[..., Path]) -> dict[str, bytes]:
    """Two small real X12 documents: an 850 (po_lines) and an 810 (invoice_lines)."""
    world = make_world(seed=3, pos=6, suppliers=2)
    files = sorted((world / "feeds").rglob("*.x12"))
    po = next(p for p in files if p.name.startswith("850_"))
    inv = next(p for p in files if p.name.startswith("810_"))
    return {"po.x12": po.read_bytes(), "inv.x12": inv.read_bytes()}


@dataclass
class Origin:
    """One loopback origin: serves documents, redirects, a listing; records what it was sent."""

    docs: dict[str, bytes]
    token: str | None = None
    url: str = ""
    other: str = ""
    listing: list[dict[str, Any]] = field(default_factory=list)
    listing_moved_to: str | None = None
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def values_seen(self) -> str:
        return "\n".join(f"{k}: {v}" for _, h in self.seen for k, v in h.items())

    def headers_of(self, path: str) -> list[dict[str, str]]:
        return [h for p, h in self.seen if p == path]

    def app(self) -> web.Application:
        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            self.seen.append((request.path, dict(request.headers)))
            response: web.StreamResponse = await handler(request)
            return response

        async def doc(request: web.Request) -> web.StreamResponse:
            if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
                return web.json_response({"error": "unauthorized"}, status=401)
            name = request.match_info["name"]
            if name not in self.docs:
                raise web.HTTPNotFound()
            return web.Response(body=self.docs[name])

        async def keyed(request: web.Request) -> web.StreamResponse:
            # The secret query value chooses the document (as a signed URL would).
            return web.Response(body=self.docs[request.query["key"].split("-")[0] + ".x12"])

        async def to_other(request: web.Request) -> web.StreamResponse:
            raise web.HTTPFound(f"{self.other}/doc/{request.match_info['name']}")

        async def to_self(request: web.Request) -> web.StreamResponse:
            raise web.HTTPFound(f"/doc/{request.match_info['name']}")

        async def loop(request: web.Request) -> web.StreamResponse:
            raise web.HTTPFound(f"/loop/{int(request.match_info['n']) + 1}")

        async def to_file(request: web.Request) -> web.StreamResponse:
            raise web.HTTPFound("file:///etc/passwd")

        async def feeds(request: web.Request) -> web.StreamResponse:
            if self.listing_moved_to:
                raise web.HTTPFound(self.listing_moved_to)
            if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
                return web.json_response({"error": "unauthorized"}, status=401)
            return web.json_response({"feeds": self.listing})

        app = web.Application(middlewares=[record])
        app.router.add_get("/doc/{name}", doc)
        app.router.add_get("/keyed/{name}", keyed)
        app.router.add_get("/to-other/{name}", to_other)
        app.router.add_get("/to-self/{name}", to_self)
        app.router.add_get("/loop/{n}", loop)
        app.router.add_get("/to-file", to_file)
        app.router.add_get("/v1/feeds", feeds)
        return app


@contextlib.asynccontextmanager
async def serve_origin(docs: dict[str, bytes], token: str | None = None) -> AsyncIterator[Origin]:
    origin = Origin(docs=docs, token=token)
    async with serve_app(origin.app()) as url:
        origin.url = url
        yield origin


def written_text(dest: Path) -> str:
    """Everything fetch wrote under ``dest/.scfeeds`` (manifest, partial metadata)."""
    return "\n".join(
        p.read_text(errors="replace") for p in (dest / ".scfeeds").rglob("*") if p.is_file()
    )


# -- item 2: secret headers do not follow a redirect to another origin -----------------------


async def test_secret_headers_do_not_follow_a_redirect_to_another_origin(
    docs: dict[str, bytes], tmp_path: Path
) -> None:
    async with serve_origin(docs) as a, serve_origin(docs) as b:
        a.other = b.url  # same host, another port: another origin (RFC 6454)
        report = await fetch(
            [f"{a.url}/to-other/po.x12", f"{a.url}/to-self/inv.x12"],
            tmp_path,
            headers=SECRET_HEADERS,
            progress=None,
            retry=False,
        )
    assert report.succeeded == 2, report.items
    assert b.headers_of("/doc/po.x12"), "the redirect was followed"
    for name, value in SECRET_HEADERS.items():
        assert value not in b.values_seen(), f"{name} reached another origin"
        # a same-origin redirect keeps every header
        assert a.headers_of("/doc/inv.x12")[0][name] == value
    stored = written_text(tmp_path) + report.items.write_csv() + repr(report)
    for value in SECRET_HEADERS.values():
        assert value not in stored


async def test_credentials_for_the_redirect_target_are_its_own(
    docs: dict[str, bytes], tmp_path: Path
) -> None:
    async with serve_origin(docs) as a, serve_origin(docs) as b:
        a.other = b.url
        report = await fetch(
            [f"{a.url}/to-other/po.x12"],
            tmp_path,
            credentials={a.url: {"X-Api-Key": "key-of-a"}, f"{b.url}/": {"X-Api-Key": "key-of-b"}},
            progress=None,
            retry=False,
        )
    assert report.succeeded == 1, report.items
    assert a.headers_of("/to-other/po.x12")[0]["X-Api-Key"] == "key-of-a"
    assert b.headers_of("/doc/po.x12")[0]["X-Api-Key"] == "key-of-b"
    assert "key-of-a" not in b.values_seen()


async def test_redirect_loops_and_non_http_targets_fail_without_retry(
    docs: dict[str, bytes], tmp_path: Path
) -> None:
    async with serve_origin(docs) as a:
        report = await fetch(
            [f"{a.url}/loop/0", f"{a.url}/to-file"], tmp_path, progress=None, retry=FAST
        )
    loop, to_file = report.items.rows(named=True)
    assert loop["status"] == "failed"
    assert "more than 10 redirects" in loop["error"]
    assert len(a.headers_of("/loop/0")) == 1  # a loop is not retried
    assert to_file["status"] == "failed"
    assert "not an http(s) URL" in to_file["error"]
    assert to_file["path"] is None


def test_credentials_repr_shows_origins_never_values() -> None:
    from scfeeds import Credentials

    creds = Credentials.coerce({"https://Portal.example.com": {"Authorization": "Bearer zz-77"}})
    assert "zz-77" not in repr(creds)
    assert "https://portal.example.com:443" in repr(creds)
    assert creds.headers_for("https://portal.example.com/v1/feeds") == {
        "Authorization": "Bearer zz-77"
    }
    assert creds.headers_for("http://portal.example.com/v1/feeds") == {}  # another scheme
    assert creds.headers_for("https://portal.example.com:8443/x") == {}  # another port
    with pytest.raises(ValueError, match="scheme://host"):
        Credentials.coerce({"portal.example.com": {"Authorization": "x"}})


# -- item 3: a portal listing does not decide where the token goes ----------------------------


async def test_a_listing_cannot_send_the_portal_token_to_another_origin(
    docs: dict[str, bytes], tmp_path: Path
) -> None:
    token = "portal-token-3c9d"
    async with serve_origin(docs, token=token) as own, serve_origin(docs) as foreign:
        own.listing = [
            {"url": f"{own.url}/doc/po.x12", "format": "x12", "table": "po_lines"},
            {"url": f"{foreign.url}/doc/inv.x12", "format": "x12", "table": "invoice_lines"},
        ]
        report = await ingest(
            own.url,
            tmp_path / "lake",
            headers={"Authorization": f"Bearer {token}"},
            pool="threads",
            progress=None,
        )
    assert foreign.headers_of("/doc/inv.x12"), "the foreign feed was fetched"
    assert token not in foreign.values_seen()
    # the portal's own feed still got its token (it answers 401 without it)
    assert own.headers_of("/doc/po.x12")[0]["Authorization"] == f"Bearer {token}"
    assert set(report.batches["status"]) == {"committed"}, report.batches
    assert scan_lake(tmp_path / "lake", "po_lines").collect().height > 0


async def test_per_origin_credentials_reach_only_their_origin(
    docs: dict[str, bytes], tmp_path: Path
) -> None:
    token = "portal-token-41aa"
    async with serve_origin(docs, token=token) as own, serve_origin(docs) as other:
        own.listing = [
            {"url": f"{own.url}/doc/po.x12", "format": "x12", "table": "po_lines"},
            {"url": f"{other.url}/doc/inv.x12", "format": "x12", "table": "invoice_lines"},
        ]
        report = await ingest(
            own.url,
            tmp_path / "lake",
            credentials={
                own.url: {"Authorization": f"Bearer {token}"},
                other.url: {"X-Api-Key": "other-key-19"},
            },
            pool="threads",
            progress=None,
        )
    assert set(report.batches["status"]) == {"committed"}, report.batches
    assert other.headers_of("/doc/inv.x12")[0]["X-Api-Key"] == "other-key-19"
    assert token not in other.values_seen()
    assert "other-key-19" not in own.values_seen()


async def test_a_listing_redirected_to_another_origin_gets_no_token(
    docs: dict[str, bytes], tmp_path: Path
) -> None:
    token = "portal-token-77ee"
    async with serve_origin(docs, token=token) as own, serve_origin(docs) as elsewhere:
        own.listing_moved_to = f"{elsewhere.url}/v1/feeds"
        elsewhere.listing = [{"url": f"{elsewhere.url}/doc/po.x12", "format": "x12"}]
        await ingest(
            own.url,
            tmp_path / "lake",
            headers={"Authorization": f"Bearer {token}"},
            pool="threads",
            progress=None,
        )
        assert elsewhere.headers_of("/v1/feeds"), "the redirect was followed"
        assert token not in elsewhere.values_seen()


async def test_enqueue_listing_redirected_to_another_origin_gets_no_token(
    docs: dict[str, bytes],
) -> None:
    """``scfeeds enqueue`` reads a portal listing with urllib (which copies Authorization
    to any redirect target by default)."""
    from scfeeds._service._cli import expand_sources
    from scfeeds._service._secrets import Secrets

    token = "enqueue-token-5b"
    async with serve_origin(docs, token=token) as own, serve_origin(docs) as elsewhere:
        own.listing_moved_to = f"{elsewhere.url}/v1/feeds"
        elsewhere.listing = [{"url": f"{elsewhere.url}/doc/po.x12"}]
        host = own.url.removeprefix("http://")
        rows = await asyncio.to_thread(expand_sources, [own.url], Secrets({host: token}))
        assert [r["url"] for r in rows] == [f"{elsewhere.url}/doc/po.x12"]
        assert own.headers_of("/v1/feeds")[0]["Authorization"] == f"Bearer {token}"
        assert token not in elsewhere.values_seen()


# -- item 10: sources that differ only in a secret keep their own provenance ------------------


def test_redaction_keeps_sources_distinct_without_revealing_them() -> None:
    a = redact_url("https://h/feed.x12?key=alpha-s3cr3t&n=1")
    b = redact_url("https://h/feed.x12?key=beta-s3cr3t&n=1")
    assert a != b
    assert a.startswith("https://h/feed.x12?key=REDACTED-")
    assert a.endswith("&n=1")
    assert "s3cr3t" not in a + b
    assert redact_url("https://h/feed.x12?key=alpha-s3cr3t&n=1") == a  # stable


async def test_urls_differing_only_in_a_secret_keep_their_own_provenance(
    docs: dict[str, bytes], tmp_path: Path
) -> None:
    async with serve_origin(docs) as server:
        urls = [
            f"{server.url}/keyed/doc.x12?key=po-secret-1a",
            f"{server.url}/keyed/doc.x12?key=inv-secret-2b",
        ]
        report = await ingest(urls, tmp_path / "lake", pool="threads", progress=None)
    assert report.batches.height == 2
    assert set(report.batches["status"]) == {"committed"}, report.batches
    po = scan_lake(tmp_path / "lake", "po_lines").select("source").unique().collect()
    inv = scan_lake(tmp_path / "lake", "invoice_lines").select("source").unique().collect()
    assert po.height == 1
    assert inv.height == 1
    po_source, inv_source = po.item(), inv.item()
    assert po_source != inv_source
    for source in (po_source, inv_source):
        assert "key=REDACTED-" in source
        assert "secret" not in source
    assert "secret" not in report.batches.write_csv()


async def test_manifest_keys_of_secret_urls_are_keyed_and_old_manifests_still_resume(
    docs: dict[str, bytes], tmp_path: Path
) -> None:
    import hashlib

    async with serve_origin(docs) as server:
        url = f"{server.url}/keyed/doc.x12?key=po-secret-1a"
        plain = hashlib.sha256(url.encode()).hexdigest()[:32]
        first = await fetch([url], tmp_path, progress=None)
        # a plain hash of a URL would let the manifest confirm a guessed secret
        assert plain not in written_text(tmp_path)
        # a manifest written before keys were keyed (plain sha256) still resumes
        rekey_manifest(tmp_path, plain)
        again = await fetch([url], tmp_path, progress=None)
    assert first.items["status"].to_list() == ["ok"]
    assert again.items["status"].to_list() == ["unchanged"]
    assert len(server.headers_of("/keyed/doc.x12")) == 1  # not downloaded again
    assert len(landed_files(tmp_path)) == 1


def rekey_manifest(dest: Path, key: str) -> None:
    manifest = dest / ".scfeeds" / "manifest.jsonl"
    record = json.loads(manifest.read_text().splitlines()[-1])
    manifest.write_text(json.dumps({**record, "key": key}) + "\n")


def landed_files(dest: Path) -> list[Path]:
    return [p for p in dest.rglob("*") if p.is_file() and ".scfeeds" not in p.parts]


async def test_on_item_hands_over_the_callers_own_source(
    docs: dict[str, bytes], tmp_path: Path
) -> None:
    async with serve_origin(docs) as server:
        mine = [
            {"url": f"{server.url}/keyed/doc.x12?key=po-secret-1a", "tag": "first"},
            {"url": f"{server.url}/keyed/doc.x12?key=inv-secret-2b", "tag": "second"},
        ]
        seen: list[Any] = []
        await fetch(mine, tmp_path, progress=None, on_item=seen.append)
    by_tag = {o.source["tag"]: o for o in seen}
    assert by_tag["first"].source is mine[0]
    assert by_tag["second"].source is mine[1]
    assert by_tag["first"].url != by_tag["second"].url
    assert {o.status for o in seen} == {"ok"}
    with pytest.raises(AttributeError):
        seen[0].status = "failed"  # a frozen record


# -- item 13: a Content-Length that lies is named ---------------------------------------------


@contextlib.asynccontextmanager
async def lying_server() -> AsyncIterator[str]:
    """``/long``: Content-Length 10, 30 body bytes; ``/short``: Content-Length 100, 30 bytes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                while (await reader.readline()) not in (b"\r\n", b""):
                    pass
                if b"/long" in line:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n" + b"x" * 30)
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"y" * 30)
                    await writer.drain()
                    break
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


async def test_a_body_longer_than_content_length_is_named(tmp_path: Path) -> None:
    async with lying_server() as url:
        report = await fetch(f"{url}/long", tmp_path, progress=None, retry=FAST)
    row = report.items.row(0, named=True)
    assert row["status"] == "failed"
    assert "body longer than its Content-Length" in row["error"]
    assert "ClientResponseError" not in row["error"]
    # retried on a fresh connection: a pooled connection that an earlier response's extra
    # bytes poisoned is cured that way
    assert row["attempts"] == FAST.attempts


async def test_a_truncated_body_says_how_much_arrived(tmp_path: Path) -> None:
    async with lying_server() as url:
        report = await fetch(f"{url}/short", tmp_path, progress=None, retry=FAST)
    row = report.items.row(0, named=True)
    assert row["status"] == "failed"
    assert "truncated: got 30 of 100 bytes" in row["error"]
    assert row["attempts"] == FAST.attempts  # a cut connection is worth another try


# -- item 9: a full disk is not a transfer fault -----------------------------------------------


async def test_a_full_disk_is_not_retried_nor_blamed_on_the_url(
    docs: dict[str, bytes], tmp_path: Path
) -> None:
    async with serve_origin(docs) as server:
        urls = [f"{server.url}/doc/po.x12", f"{server.url}/doc/inv.x12"]
        # The kernel's /dev/full answers every write with ENOSPC: make the first body's
        # partial file be it (no root, no mock: the real error from a real write).
        partial = tmp_path / ".scfeeds" / "partial"
        partial.mkdir(parents=True)
        (partial / f"{url_key(urls[0])}.part").symlink_to("/dev/full")
        report = await fetch(urls, tmp_path, progress=None, retry=FAST, limits=1)
    first = report.items.row(0, named=True)
    assert first["status"] == "failed"
    assert first["attempts"] == 1
    assert "no space left on device" in first["error"]
    assert str(partial) in first["error"]  # where, not which URL
    assert "TransferError" not in first["error"]
    assert server.headers_of("/doc/po.x12")
    assert len(server.headers_of("/doc/po.x12")) == 1
    # nothing more is attempted on a full disk
    assert not server.headers_of("/doc/inv.x12")
    assert report.stopped is not None
    assert "no space left on device" in report._repr_html_()
    assert "no space left on device" in report.stopped
    with pytest.raises(StorageError, match="no space left on device"):
        report.raise_for_failures()


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs (needs the right to mount; skipped elsewhere)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_cli_fetch_onto_a_full_filesystem_exits_with_one_line(
    small_fs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "root").mkdir()
    with portal.serve_in_thread(tmp_path / "root", access_log=False) as server:
        code = cli_main(
            ["fetch", f"{server.url}/v1/blob/{1 << 20}?seed=1", "--dest", str(small_fs)]
        )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1, err
    assert "no space left on device" in err[0]
    assert str(small_fs) in err[0]
    assert not list(small_fs.rglob("*.part"))  # the partial body was freed


async def test_cli_ingest_on_a_full_disk_exits_with_one_line(
    docs: dict[str, bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with serve_origin(docs) as server:
        url = f"{server.url}/doc/po.x12"
        partial = tmp_path / "lake" / "_landing" / ".scfeeds" / "partial"
        partial.mkdir(parents=True)
        (partial / f"{url_key(url)}.part").symlink_to("/dev/full")
        code = await asyncio.to_thread(cli_main, ["ingest", url, "--lake", str(tmp_path / "lake")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1, err
    assert err[0].startswith("scfeeds ingest: no space left on device writing ")
    assert str(partial) in err[0]


def test_cli_fetch_onto_a_filesystem_already_full_exits_with_one_line(
    small_fs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with (small_fs / "filler").open("wb", buffering=0) as fh, contextlib.suppress(OSError):
        while True:
            fh.write(b"\0" * 4096)
    (tmp_path / "root").mkdir()
    with portal.serve_in_thread(tmp_path / "root", access_log=False) as server:
        code = cli_main(["fetch", f"{server.url}/v1/blob/4096?seed=1", "--dest", str(small_fs)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1, err
    assert err[0].startswith("scfeeds fetch: no space left on device writing ")
    assert str(small_fs) in err[0]


# -- item 7: no token on the command line --------------------------------------------------------


@pytest.fixture
def token_portal(tmp_path: Path) -> Iterator[Any]:
    (tmp_path / "root").mkdir()
    with portal.serve_in_thread(tmp_path / "root", token="cli-t0ken-61", access_log=False) as s:
        yield s


@pytest.mark.parametrize("command", ["fetch", "ingest"])
def test_token_on_the_command_line_is_refused_with_one_line(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    where = ["--dest", str(tmp_path)] if command == "fetch" else ["--lake", str(tmp_path)]
    code = cli_main([command, "http://127.0.0.1:9/x", *where, "--token", "cli-t0ken-61"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1, err
    assert "--token-file" in err[0]
    assert "SCFEEDS_TOKEN" in err[0]
    assert "cli-t0ken-61" not in err[0]


def test_token_from_a_file_or_the_environment(
    token_portal: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"{token_portal.url}/v1/blob/100?seed=1"
    token_file = tmp_path / "token"
    token_file.write_text("cli-t0ken-61\n")
    assert (
        cli_main(["fetch", url, "--dest", str(tmp_path / "a"), "--token-file", str(token_file)])
        == 0
    )
    monkeypatch.setenv("SCFEEDS_TOKEN", "cli-t0ken-61")
    assert cli_main(["fetch", url, "--dest", str(tmp_path / "b")]) == 0
    monkeypatch.setenv("SCFEEDS_TOKEN", "wrong")
    assert cli_main(["fetch", url, "--dest", str(tmp_path / "c")]) == 1
    monkeypatch.setenv("SUPPLIER_TOKEN", "cli-t0ken-61")  # as `scfeeds portal --token-env`
    assert (
        cli_main(["fetch", url, "--dest", str(tmp_path / "e"), "--token-env", "SUPPLIER_TOKEN"])
        == 0
    )


def test_token_never_in_the_process_arguments(token_portal: Any, tmp_path: Path) -> None:
    """The token reaches the command through its environment; argv holds no secret."""
    url = f"{token_portal.url}/v1/blob/100?seed=2"
    env = {**os.environ, "SCFEEDS_TOKEN": "cli-t0ken-61"}
    args = [sys.executable, "-m", "scfeeds.cli", "fetch", url, "--dest", str(tmp_path / "d")]
    done = subprocess.run(args, env=env, capture_output=True, text=True, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr
    assert "cli-t0ken-61" not in " ".join(args) + done.stdout + done.stderr


# -- item 12: the portal's access log keeps secrets out --------------------------------------------


async def test_portal_access_log_never_writes_secret_query_values(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import aiohttp

    caplog.set_level(logging.INFO, logger="aiohttp.access")
    (tmp_path / "root").mkdir()
    secrets = {
        "access_token": "qa-tok-111",
        "token": "qa-tok-222",
        "key": "qa-key-333",
        "api_key": "qa-key-444",
        "sig": "qa-sig-555",
        "signature": "qa-sig-666",
    }
    query = "&".join(f"{k}={v}" for k, v in secrets.items())
    async with (
        portal.serve(tmp_path / "root", access_log=True) as server,
        aiohttp.ClientSession() as session,
        session.get(
            f"{server.url}/v1/feeds?{query}&limit=5",
            headers={
                "Authorization": "Bearer qa-auth-777",
                "Referer": f"{server.url}/page?access_token=qa-ref-888",
            },
        ) as resp,
    ):
        # the portal refuses unknown parameters (400); the line is logged all the same
        await resp.read()
    log = caplog.text
    assert "/v1/feeds?" in log
    assert "limit=5" in log
    for value in [*secrets.values(), "qa-auth-777", "qa-ref-888"]:
        assert value not in log
    assert "access_token=REDACTED" in log


async def test_portal_debug_log_of_a_simulated_reset_keeps_secrets_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import aiohttp

    caplog.set_level(logging.DEBUG, logger="scfeeds.portal")
    (tmp_path / "root").mkdir()
    async with (
        portal.serve(tmp_path / "root", reset_rate=1.0, reset_at="start", seed=1) as server,
        aiohttp.ClientSession() as session,
    ):
        with pytest.raises(aiohttp.ClientError):
            async with session.get(f"{server.url}/v1/blob/64?seed=1&sig=qa-sig-999") as resp:
                await resp.read()
    assert "resetting connection for GET /v1/blob/64?seed=1&sig=REDACTED-" in caplog.text
    assert "qa-sig-999" not in caplog.text
