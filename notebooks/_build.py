"""Regenerate the validated notebooks from their sources and execute them with nbclient.

The notebooks in this folder are reports whose outputs are committed (GitHub shows them
without running anything) and re-checked by nbval. Their cells live as plain Python in
``notebooks/_src/NN_name.py`` (a list ``CELLS`` of :func:`md` / :func:`code` cells), so a
change is a reviewable diff of source, and this script rebuilds the ``.ipynb`` from it::

    .venv/bin/python notebooks/_build.py                 # every notebook
    .venv/bin/python notebooks/_build.py 04 05           # the ones whose name starts so
    .venv/bin/python notebooks/_build.py --no-execute    # cells only, no outputs

Execution uses the project's own interpreter as the kernel (like ``--nbval-current-env``),
saves the final widget state (``store_widget_state``) and no per-cell timestamps, so that a
re-run changes only what really changed. Then check them::

    .venv/bin/pytest --nbval --nbval-current-env \
        --nbval-sanitize-with .meta/nbval.ini notebooks/
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from pathlib import Path
from textwrap import dedent
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbformat import NotebookNode

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "_src"
#: nbval skips the output comparison of cells with this tag (their output is inherently
#: variable: timings, throughput, heap peaks); they are still executed and must not fail.
IGNORE_OUTPUT = "nbval-ignore-output"


def md(text: str) -> NotebookNode:
    """A markdown cell (the text is dedented and stripped)."""
    return nbformat.v4.new_markdown_cell(dedent(text).strip())


def code(source: str, *, ignore_output: bool = False) -> NotebookNode:
    """A code cell; ``ignore_output=True`` tags it ``nbval-ignore-output``."""
    cell = nbformat.v4.new_code_cell(dedent(source).strip())
    if ignore_output:
        cell.metadata["tags"] = [IGNORE_OUTPUT]
    return cell


def load_cells(path: Path) -> list[NotebookNode]:
    """Import a source module and return its ``CELLS``."""
    spec = importlib.util.spec_from_file_location(f"_nbsrc_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cells: list[NotebookNode] = module.CELLS
    return cells


def build(path: Path) -> NotebookNode:
    """The notebook of source ``path``, not executed."""
    nb = nbformat.v4.new_notebook()
    nb.cells = load_cells(path)
    for number, cell in enumerate(nb.cells):
        # Stable ids (nbformat draws random ones), so a rebuild diffs only what changed.
        cell["id"] = f"cell-{number:02d}"
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def ruff_format(target: Path) -> None:
    """Format the notebook's code cells with the project's ruff, then lint them.

    The repository's ``ruff check`` / ``ruff format --check`` include ``.ipynb`` files, so the
    generated cells must pass as written; a lint error stops the build before executing.
    """
    ruff = [sys.executable, "-m", "ruff"]
    subprocess.run([*ruff, "format", "--quiet", str(target)], check=True)
    subprocess.run([*ruff, "check", "--quiet", str(target)], check=True)


def execute(nb: NotebookNode, *, timeout: int) -> None:
    """Run every cell in a fresh kernel from this folder; raise on the first error."""
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        store_widget_state=True,
        record_timing=False,
        resources={"metadata": {"path": str(HERE)}},
    )
    client.execute()
    # Only the major.minor of the interpreter: the patch level is noise in a diff.
    info: dict[str, Any] = nb.metadata.get("language_info", {})
    version = str(info.get("version", ""))
    if version.count(".") >= 2:
        info["version"] = ".".join(version.split(".")[:2])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("only", nargs="*", help="name prefixes (e.g. 01 04_recon); default all")
    parser.add_argument("--no-execute", action="store_true", help="write cells without outputs")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per cell")
    args = parser.parse_args(argv)
    sources = sorted(SOURCES.glob("[0-9][0-9]_*.py"))
    if args.only:
        sources = [s for s in sources if any(s.stem.startswith(p) for p in args.only)]
    if not sources:
        parser.error(f"no notebook source matches {args.only}")
    for src in sources:
        target = HERE / f"{src.stem}.ipynb"
        nbformat.write(build(src), target)
        ruff_format(target)
        nb = nbformat.read(target, as_version=4)
        started = time.perf_counter()
        if not args.no_execute:
            try:
                execute(nb, timeout=args.timeout)
            except Exception:
                # Keep what ran, so the failing cell can be inspected in the notebook.
                nbformat.write(nb, target)
                raise
        seconds = time.perf_counter() - started
        nbformat.validate(nb)
        nbformat.write(nb, target)
        ran = "" if args.no_execute else f" (executed in {seconds:.1f} s)"
        print(f"wrote {target.relative_to(HERE.parent)}{ran}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
