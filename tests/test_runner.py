"""scfeeds.run: a plain script, a running loop (background thread or nested), a real kernel."""

from __future__ import annotations

import asyncio
import signal
import sys
import textwrap
import threading
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from scfeeds._runner import run
from scfeeds.exceptions import ConfigurationError, StateError
from tests.test_fetch_app import serve, sha


async def answer() -> int:
    await asyncio.sleep(0)
    return 42


async def python(code: str, *args: str, seconds: float = 60) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        textwrap.dedent(code),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), seconds)
    assert proc.returncode == 0, err.decode()
    return out.decode()


def test_run_without_a_loop_uses_asyncio_run() -> None:
    assert run(answer()) == 42


def test_run_accepts_any_awaitable_and_rejects_a_function() -> None:
    class Later:
        def __await__(self):  # type: ignore[no-untyped-def]
            return answer().__await__()

    assert run(Later()) == 42
    with pytest.raises(ConfigurationError, match=r"run\(fetch\(\.\.\.\)\)"):
        run(answer)  # type: ignore[arg-type]


async def test_inside_a_running_loop_it_uses_one_background_thread() -> None:
    async def where() -> str:
        await asyncio.sleep(0.01)
        return threading.current_thread().name

    assert run(where()) == "scfeeds-run-loop"
    assert run(where()) == "scfeeds-run-loop"  # the same persistent loop, reused

    async def reentrant() -> int:
        return run(answer())

    with pytest.raises(StateError, match="use `await` there"):
        run(reentrant())

    async def boom() -> None:
        raise LookupError("from the coroutine")

    with pytest.raises(LookupError, match="from the coroutine"):
        run(boom())


async def test_fetch_from_a_plain_script(tmp_path: Path) -> None:
    async with serve() as server:
        out = await python(
            """
            import sys
            from scfeeds._runner import run
            from scfeeds._fetch import fetch
            report = run(fetch([sys.argv[1]], sys.argv[2], progress="auto"))
            print(report.succeeded, report.items["sha256"][0])
            """,
            f"{server.url}/data/script?n=777",
            str(tmp_path),
        )
    assert out.split() == ["1", sha("script", 777)]


async def test_nested_mode_runs_on_the_callers_loop() -> None:
    out = await python(
        """
        import asyncio, threading
        from scfeeds._runner import run, enable_nested

        async def inner():
            await asyncio.sleep(0.01)
            assert asyncio.current_task() is not None
            return threading.current_thread().name, id(asyncio.get_running_loop())

        async def main():
            outer = id(asyncio.get_running_loop())
            background = run(inner())
            nested = run(inner(), nested=True)
            assert enable_nested() is True
            default_after_enable = run(inner())
            print(background[0], background[1] == outer)
            print(nested[0], nested[1] == outer)
            print(default_after_enable[0], default_after_enable[1] == outer)

        asyncio.run(main())
        """
    )
    assert out.splitlines() == [
        "scfeeds-run-loop False",
        "MainThread True",
        "MainThread True",
    ]


async def test_keyboard_interrupt_cancels_the_background_task(tmp_path: Path) -> None:
    marker = tmp_path / "cleaned-up"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        textwrap.dedent(
            """
            import asyncio, signal, sys
            from pathlib import Path
            from scfeeds._runner import run

            async def slow():
                try:
                    await asyncio.sleep(60)
                finally:
                    Path(sys.argv[1]).write_text("yes")

            async def main():
                # As in a Jupyter kernel: SIGINT raises KeyboardInterrupt in the main thread.
                signal.signal(signal.SIGINT, signal.default_int_handler)
                print("started", flush=True)
                try:
                    run(slow())
                except KeyboardInterrupt:
                    print("interrupted", flush=True)

            asyncio.run(main())
            """
        ),
        str(marker),
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"started"
    await asyncio.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    rest, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert rest.split() == [b"interrupted"]
    assert marker.read_text() == "yes"  # the task's finally ran before run() returned


def _notebook(*cells: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(c)) for c in cells]
    return nb


def _outputs(nb: nbformat.NotebookNode) -> list[str]:
    texts = []
    for cell in nb.cells:
        texts.append(
            "".join(
                o.get("text", "")
                for o in cell.outputs
                if o.output_type == "stream" and o.get("name") == "stdout"
            ).strip()
        )
    return texts


@pytest.mark.slow
async def test_run_inside_a_real_jupyter_kernel(tmp_path: Path) -> None:
    async with serve() as server:
        url = server.url
        nb = _notebook(
            f"""
            import asyncio, threading
            from scfeeds._runner import run, enable_nested
            from scfeeds._fetch import fetch
            URL, DEST = {url!r}, {str(tmp_path)!r}

            async def where():
                await asyncio.sleep(0.01)
                return threading.current_thread().name
            """,
            "print(run(where()))",
            """
            report = run(fetch([URL + "/data/k1?n=1000"], DEST, progress=None))
            print(report.succeeded, report.items["sha256"][0])
            """,
            # "auto" inside a kernel: the notebook widget when available, never a crash.
            """
            report = run(fetch([URL + "/data/k2?n=1000"], DEST, progress="auto"))
            print(report.succeeded)
            """,
            "report = await fetch([URL + '/data/k3?n=1000'], DEST, progress=None)\n"
            "print(report.succeeded)",
            """
            print(enable_nested(), run(where()))
            report = run(fetch([URL + "/data/k4?n=1000"], DEST, progress=None))
            print(report.succeeded, report.items["sha256"][0])
            """,
        )
        client = NotebookClient(nb, timeout=60, kernel_name="python3", allow_errors=False)
        await client.async_execute()
    out = _outputs(nb)
    assert out[1] == "scfeeds-run-loop"
    assert out[2] == f"1 {sha('k1', 1000)}"
    assert out[3] == "1"
    assert out[4] == "1"
    assert out[5].splitlines() == ["True MainThread", f"1 {sha('k4', 1000)}"]
