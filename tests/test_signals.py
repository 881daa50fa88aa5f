"""SIGTERM / SIGINT to the whole process group (systemd, Ctrl-C, ``timeout``): the parse
children stay, the parent drains; a child never outlives its parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from scfeeds._service._job import Job
from scfeeds.portal import serve_in_thread
from tests.service_support import wait_until
from tests.test_service import assert_lake_exactly_once, enqueue, stats, stream_name
from tests.web_support import listing

ROOT = Path(__file__).resolve().parents[1]


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# The forkserver is one per process and keeps the signal dispositions it was started with:
# once an ingest in this test process started it deaf (scfeeds._children.start_forkserver),
# every child is born ignoring SIGTERM. The pool tests below therefore run in a fresh
# interpreter, whose first pool starts its own forkserver.
POOL_PRELUDE = """
import concurrent.futures, multiprocessing, os, signal, sys, time
import psutil
from scfeeds._children import init_parse_worker, start_forkserver

def _gone(pid):
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True

def wait_gone(pid, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return
        time.sleep(0.02)
    raise AssertionError(f"child {pid} still alive after {timeout} s")

def pool(initializer):
    return concurrent.futures.ProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context("forkserver"), initializer=initializer
    )
"""


def _run_fresh(body: str) -> None:
    script = (
        POOL_PRELUDE
        + "\nif __name__ == '__main__':\n"
        + textwrap.indent(textwrap.dedent(body), "    ")
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]


def test_parse_children_leave_the_group_yet_a_broken_pool_can_still_terminate_them() -> None:
    _run_fresh(
        """
        start_forkserver()  # deaf, as ingest starts it: children are born ignoring SIGTERM
        with pool(init_parse_worker) as p:
            child = p.submit(os.getpid).result(timeout=60)
            assert os.getpgid(child) == child != os.getpgid(0)  # out of reach of group signals
            os.kill(child, signal.SIGINT)
            time.sleep(0.3)
            assert p.submit(os.getpid).result(timeout=60) == child  # same child, still serving
            os.kill(child, signal.SIGTERM)  # what the pool's terminate() sends: still fatal
            wait_gone(child)
        """
    )


def test_without_the_initializer_a_sigterm_breaks_the_pool() -> None:
    """What the initializer prevents (Python's default: the child dies of SIGTERM)."""
    _run_fresh(
        """
        with pool(None) as p:
            child = p.submit(os.getpid).result(timeout=60)
            os.kill(child, signal.SIGTERM)
            wait_gone(child)
            try:
                p.submit(os.getpid).result(timeout=60)
            except concurrent.futures.process.BrokenProcessPool:
                pass
            else:
                raise AssertionError("the pool survived the death of its child")
        """
    )


def test_a_parse_child_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import concurrent.futures, multiprocessing, os, sys, time
        from scfeeds._children import init_parse_worker

        if __name__ == "__main__":
            pool = concurrent.futures.ProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context("forkserver"),
                initializer=init_parse_worker,
            )
            print(pool.submit(os.getpid).result(), flush=True)
            time.sleep(120)
        """
    )
    main = tmp_path / "main.py"
    main.write_text(script)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        [sys.executable, str(main)], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT
    )
    try:
        assert proc.stdout is not None
        child = int(proc.stdout.readline())
        assert not _gone(child)
        proc.kill()  # no drain, no pool shutdown
        proc.wait(10)
        wait_until(lambda: _gone(child), 10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


DRAINING_SCRIPT = """
import signal, sys
import scfeeds
from scfeeds._ingest import ingest

if __name__ == "__main__":
    # a parent that drains: note the signal, finish the ingest (as the service worker does)
    signal.signal(signal.SIGTERM, lambda *_: print("SIGTERM", flush=True))
    report = scfeeds.run(ingest(sys.argv[1], sys.argv[2], limits=1, pool="processes"))
    print("done", report.committed, report.n_errors, flush=True)
"""


@pytest.fixture(scope="module")
def xml_world(make_world: Callable[..., Path]) -> Path:
    return make_world(seed=5, suppliers=2, pos=16, formats=("xml",))


def _parse_children(pid: int) -> list[psutil.Process]:
    """The pool's processes: forked by the forkserver, a child of ``pid``."""
    out: list[psutil.Process] = []
    try:
        for kid in psutil.Process(pid).children():
            if "forkserver" in " ".join(kid.cmdline()):
                out += kid.children()
    except psutil.NoSuchProcess:
        pass
    return out


def test_sigterm_to_the_group_of_an_ingest_parsing_in_processes(
    xml_world: Path, tmp_path: Path
) -> None:
    main = tmp_path / "drain.py"
    main.write_text(DRAINING_SCRIPT)
    lake = tmp_path / "lake"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    with serve_in_thread(xml_world, latency=0.05, access_log=False) as portal:
        proc = subprocess.Popen(
            [sys.executable, str(main), portal.url, str(lake)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp_path,
            start_new_session=True,  # its own process group, as a shell job or a unit
        )
        try:
            # mid-run: the pool is up (cXML parsed in it), feeds still coming one at a time
            wait_until(lambda: _parse_children(proc.pid) or proc.poll() is not None, 60)
            assert proc.poll() is None
            os.killpg(proc.pid, signal.SIGTERM)
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "BrokenProcessPool" not in err, err
    assert out.splitlines()[0] == "SIGTERM"
    done = out.splitlines()[-1].split()
    assert done[0] == "done"
    assert int(done[1]) == len(listing_of(xml_world)), out
    assert done[2] == "0"


def listing_of(world: Path) -> list[str]:
    import polars as pl

    return list(pl.read_parquet(world / "catalog.parquet")["path"])


# -- the service worker, SIGTERM to its process group ---------------------------------------


@pytest.mark.slow
def test_sigterm_to_the_process_group_drains_with_process_parsing(
    redis_url: str, xml_world: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    stream = stream_name(request)
    lake = tmp_path / "lake"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    # one request at a time with latency: the job is still landing (and parsing cXML in the
    # process pool) when the signal comes
    with serve_in_thread(xml_world, latency=0.05, access_log=False) as portal:
        feeds = listing(portal.url)
        assert len(feeds) >= 20
        job = Job(sources=feeds)
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "scfeeds._service",
                "worker",
                "--queue",
                redis_url,
                "--stream",
                stream,
                "--lake",
                str(lake),
                "--health-port",
                "0",
                "--parse-pool",
                "auto",  # processes: `python -m scfeeds._service` has a __main__ guard
                "--requests-per-job",
                "1",
                "--drain-seconds",
                "60",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group, as under systemd
        )
        lines: list[str] = []

        def read() -> None:
            assert worker.stderr is not None
            for line in worker.stderr:
                lines.append(line)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            wait_until(lambda: "health on" in "".join(lines) or worker.poll() is not None, 30)
            assert worker.poll() is None, "".join(lines)
            enqueue(redis_url, stream, [job])

            # the pool is up and some feeds are committed, most are still to come
            wait_until(lambda: _parse_children(worker.pid) and (lake / "_ledger").is_dir(), 60)
            children = _parse_children(worker.pid)
            os.killpg(worker.pid, signal.SIGTERM)
            assert worker.wait(90) == 0, "".join(lines)
        finally:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(10)
            reader.join(5)
            if worker.stderr is not None:
                worker.stderr.close()
    log = "".join(lines)
    assert "draining" in log
    assert "BrokenProcessPool" not in log, log
    assert "succeeded" in log, log
    assert all(_gone(c.pid) for c in children)  # shut down by the drain, not left behind
    s = stats(redis_url, stream)
    assert (s.length, s.pending) == (0, 0)
    assert_lake_exactly_once(lake, feeds)


def test_sigterm_to_the_group_of_the_ingest_command_stops_it_in_one_line_and_a_rerun_completes(
    xml_world: Path, tmp_path: Path
) -> None:
    """`scfeeds ingest` under systemd / `timeout`: SIGTERM to its group cancels the run like
    Ctrl-C (exit 130, one line, no traceback), and the next run lands exactly the rest."""
    import polars as pl

    from scfeeds import scan_lake

    lake = tmp_path / "lake"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [sys.executable, "-m", "scfeeds.cli", "ingest", "--lake", str(lake), "--concurrency", "1"]
    with serve_in_thread(xml_world, latency=0.1, access_log=False) as portal:
        proc = subprocess.Popen(
            [*cmd, portal.url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp_path,
            start_new_session=True,
        )
        try:
            # mid-run: some feeds landed (the landing folder exists), most still to come
            wait_until(lambda: (lake / "_landing").is_dir() or proc.poll() is not None, 60)
            time.sleep(0.5)
            assert proc.poll() is None
            os.killpg(proc.pid, signal.SIGTERM)
            _, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate(timeout=10)
        assert proc.returncode == 130, err
        assert "Traceback" not in err, err
        assert err.strip().splitlines()[-1] == "scfeeds ingest: interrupted; run it again to resume"
        again = subprocess.run(
            [*cmd, portal.url], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
        )
    assert again.returncode == 0, again.stderr
    from scfeeds import synth

    want = synth.load_world(xml_world, "po_lines").select(pl.len()).collect().item()
    got = scan_lake(lake, "po_lines").select(pl.len()).collect().item()
    assert got == want


# A command whose running task is not the main one when SIGTERM arrives (the fetch heartbeat,
# a worker): the signal must cancel the main task as Ctrl-C does. Raised inside the running
# task instead, the KeyboardInterrupt was re-raised by its task group while asyncio.run was
# cancelling the rest, which left the main task pending and printed a traceback.
SIGTERM_IN_A_TASK = """
import asyncio, os, signal, threading
from scfeeds.cli import _stop_on_sigterm

_stop_on_sigterm()

def busy():  # Python bytecode for most of each step: the signal's handler runs in here
    n = 0
    for i in range(200_000):
        n += i
    return n

async def spin():
    try:
        while True:
            busy()
            await asyncio.sleep(0)
    except KeyboardInterrupt:
        print("KeyboardInterrupt inside a task", flush=True)
        raise

async def land():  # a task group under a task of its own, as the fetch engine runs
    async with asyncio.TaskGroup() as tg:
        tg.create_task(spin())

async def main():
    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()
    try:
        await asyncio.gather(land())
    except asyncio.CancelledError:
        print("main cleaned up", flush=True)
        raise

try:
    asyncio.run(main())
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def test_sigterm_while_another_task_runs_cancels_the_main_task_like_ctrl_c() -> None:
    for _ in range(5):  # where the signal lands is timing: five tries
        out = subprocess.run(
            [sys.executable, "-c", SIGTERM_IN_A_TASK],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        assert out.stdout.splitlines() == ["main cleaned up", "interrupted"], out
        assert "Traceback" not in out.stderr, out.stderr
        assert "never retrieved" not in out.stderr, out.stderr
