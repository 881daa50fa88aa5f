"""Kill -9 a fetch in a child process at different points, re-run it: nothing lost, nothing
duplicated, partial bodies resumed with Range, no temporary files left."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import sys
from pathlib import Path

from scfeeds._fetch import fetch
from tests.test_fetch_app import Server, serve, sha

CHILD = """
import asyncio, sys
from scfeeds._fetch import fetch
urls = sys.argv[2:]
asyncio.run(fetch(urls, sys.argv[1], limits=4, progress=None))
"""

N = 12
SIZE = 1_200_000  # above RESUME_MIN_BYTES, so partial bodies are resumable across runs


def manifest_lines(dest: Path) -> int:
    path = dest / ".scfeeds" / "manifest.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def partials(dest: Path) -> list[Path]:
    """Partial bodies with bytes in them."""
    if not (dest / ".scfeeds").exists():
        return []
    return sorted(p for p in (dest / ".scfeeds").rglob("*.part") if p.stat().st_size > 0)


def temp_files(dest: Path) -> list[Path]:
    return [p for p in dest.rglob("*") if p.suffix in (".tmp", ".part")]


def manifest(dest: Path) -> list[dict[str, object]]:
    text = (dest / ".scfeeds" / "manifest.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def landed(dest: Path) -> dict[str, str]:
    return {
        p.relative_to(dest).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in dest.rglob("*")
        if p.is_file() and ".scfeeds" not in p.relative_to(dest).parts
    }


async def kill_when(dest: Path, urls: list[str], *, landed_at_least: int) -> None:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", CHILD, str(dest), *urls)
    try:
        for _ in range(2000):
            if manifest_lines(dest) >= landed_at_least and partials(dest):
                break
            await asyncio.sleep(0.005)
        else:
            raise AssertionError("the child never reached the kill point")
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL


async def test_kill_and_resume_lands_everything_once(tmp_path: Path) -> None:
    async with serve() as server:
        await _scenario(server, tmp_path)


async def _scenario(server: Server, dest: Path) -> None:
    urls = [f"{server.url}/slow/k{i}?n={SIZE}&step=80000&pace=0.02" for i in range(N)]
    await kill_when(dest, urls, landed_at_least=0)  # killed while the first bodies stream
    first_kill = manifest_lines(dest)
    await kill_when(dest, urls, landed_at_least=first_kill + 4)  # killed mid-run
    assert manifest_lines(dest) < N
    assert partials(dest), "the kill should have left partial bodies to resume"

    report = await fetch(urls, dest, limits=4, progress=None)

    assert report.failed == 0
    assert report.succeeded + report.unchanged == N
    # Partial bodies were resumed, not downloaded again from byte 0.
    ranged = [h for hs in server.state.headers.values() for h in hs if "Range" in h]
    assert ranged
    assert all(h["If-Range"].startswith('"') for h in ranged)
    files = landed(dest)
    assert len(files) == N  # no duplicates, no leftovers under other names
    assert sorted(files.values()) == sorted(sha(f"k{i}", SIZE) for i in range(N))
    assert temp_files(dest) == []
    records = manifest(dest)
    assert len({r["key"] for r in records}) == N
    assert len(records) == N  # each item recorded once across three runs

    # A fourth run has nothing to do but revalidate.
    again = await fetch(urls, dest, limits=4, progress=None)
    assert again.unchanged == N
    assert again.bytes == 0
