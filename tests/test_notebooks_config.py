"""The validated notebooks' conventions, checked without a kernel (nbval re-executes them).

The notebooks in ``notebooks/`` are generated from ``notebooks/_src`` by ``notebooks/_build.py``
and their outputs are committed. These tests catch what nbval would only catch late or not at
all: a notebook edited by hand and out of step with its source, a committed error or warning,
a sanitize pattern that masks too little (a port, an address) or too much (the numbers the
stories are about), a cell that could never pass strict nbval.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from nbval.plugin import get_sanitize_patterns

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SANITIZE = ROOT / ".meta" / "nbval.ini"
SOURCES = sorted((NOTEBOOKS / "_src").glob("[0-9][0-9]_*.py"))
IGNORE = "nbval-ignore-output"


def _load_build() -> ModuleType:
    # _build.py lives outside the package; the sources import it as `_build`.
    sys.path.insert(0, str(NOTEBOOKS))
    try:
        spec = importlib.util.spec_from_file_location("_build", NOTEBOOKS / "_build.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(NOTEBOOKS))


def _notebook(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _sanitize(text: str) -> str:
    for regex, replace in get_sanitize_patterns(SANITIZE.read_text(encoding="utf-8")):
        text = re.sub(regex, replace, text)
    return text


def _code_cells(nb: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def _texts(cell: dict[str, Any]) -> list[str]:
    out = []
    for o in cell.get("outputs", []):
        if o["output_type"] == "stream":
            out.append("".join(o["text"]))
        for value in o.get("data", {}).values():
            if isinstance(value, list):
                out.append("".join(value))
            elif isinstance(value, str):
                out.append(value)
    return out


def test_every_source_has_its_notebook_and_back() -> None:
    built = {p.stem for p in SOURCES}
    committed = {p.stem for p in NOTEBOOKS.glob("*.ipynb")}
    assert built == committed
    assert len(built) == 6


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("portal listening on http://127.0.0.1:40901", "portal listening on http://127.0.0.1:PORT"),
        ("<LazyFrame at 0x7F19266C5750>", "<LazyFrame at 0xADDRESS>"),
        ("/tmp/scfeeds-nb-ab_12c9x/landing/v1", "TMPDIR/landing/v1"),
        ("'/var/folders/x/T/scfeeds-nb-q1w2e3r4'", "'TMPDIR'"),
        (
            "0.0 MB in 0.02 s (2.1 MB/s, 201 items/s)",
            "0.0 MB in DURATION (THROUGHPUT, RATE items/s)",
        ),
        ("done in 1.2s, p90 90 ms", "done in DURATION, p90 DURATION"),
    ],
)
def test_sanitize_masks_what_varies(raw: str, masked: str) -> None:
    assert _sanitize(raw) == masked


@pytest.mark.parametrize(
    "stable",
    [
        "4 landed, 0 failed, 42,348 bytes",
        "SE01 25 != 24 segments counted from ST (segment 3) to SE",
        "segment 856",
        "31 sets, 2 suppliers, 0.5 s".replace(", 0.5 s", ""),
        "AK9*P*2*2*1~",
        "INV-000017F 14689.8400 2026-10-17",
        "throttled at max_at_once=16: True",
    ],
)
def test_sanitize_keeps_what_the_stories_are_about(stable: str) -> None:
    assert _sanitize(stable) == stable


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_matches_its_source(source: Path, tmp_path: Path) -> None:
    build = _load_build()
    sys.path.insert(0, str(NOTEBOOKS))
    try:
        fresh = build.build(source)
    finally:
        sys.path.remove(str(NOTEBOOKS))
    import nbformat

    target = tmp_path / f"{source.stem}.ipynb"
    nbformat.write(fresh, target)
    # The build formats code cells with ruff before executing; do the same here.
    subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--quiet", str(target)], check=True, cwd=ROOT
    )
    expected = [(c["cell_type"], c["source"]) for c in _notebook(target)["cells"]]
    committed = _notebook(NOTEBOOKS / f"{source.stem}.ipynb")
    got = [(c["cell_type"], "".join(c["source"])) for c in committed["cells"]]
    expected = [(t, "".join(s) if isinstance(s, list) else s) for t, s in expected]
    assert got == expected, f"{source.stem}.ipynb is out of date: run notebooks/_build.py"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_committed_outputs_are_complete_and_clean(source: Path) -> None:
    nb = _notebook(NOTEBOOKS / f"{source.stem}.ipynb")
    cells = _code_cells(nb)
    assert cells
    counts = [c["execution_count"] for c in cells]
    assert counts == list(range(1, len(cells) + 1)), "execute every cell, in order, once"
    for i, cell in enumerate(cells):
        kinds = {o["output_type"] for o in cell["outputs"]}
        assert "error" not in kinds, f"cell {i} has a committed error"
        # Strict nbval cannot pass a cell whose display was updated or cleared.
        assert "update_display_data" not in kinds
        assert "clear_output" not in "".join(cell["source"])
        streams = [o for o in cell["outputs"] if o["output_type"] == "stream"]
        assert all(o["name"] == "stdout" for o in streams), f"cell {i} wrote to stderr"
        tags = cell["metadata"].get("tags", [])
        assert set(tags) <= {IGNORE}
        if IGNORE not in tags:
            for text in _texts(cell):
                # Unmasked variable parts would make every re-run differ.
                assert "0x" not in _sanitize(text).replace("0xADDRESS", ""), f"cell {i}"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_ignored_cells_are_few_and_followed_by_a_checked_conclusion(source: Path) -> None:
    cells = _code_cells(_notebook(NOTEBOOKS / f"{source.stem}.ipynb"))
    ignored = [i for i, c in enumerate(cells) if IGNORE in c["metadata"].get("tags", [])]
    assert len(ignored) <= len(cells) // 2
    for i in ignored:
        later = cells[i + 1 :]
        assert any(IGNORE not in c["metadata"].get("tags", []) and c["outputs"] for c in later), (
            f"cell {i}: nothing checked after an ignored measurement"
        )


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_cleans_up_what_it_starts(source: Path) -> None:
    code = "\n".join(
        "".join(c["source"]) for c in _code_cells(_notebook(NOTEBOOKS / f"{source.stem}.ipynb"))
    )
    assert 'TemporaryDirectory(prefix="scfeeds-nb-")' in code
    last = "".join(_code_cells(_notebook(NOTEBOOKS / f"{source.stem}.ipynb"))[-1]["source"])
    assert "tmp.cleanup()" in last
    if "portal.serve_in" in code:
        assert "portal.close()" in code
    # Public API only: no private modules in the stories.
    assert not re.search(r"scfeeds\.\w*\._|from scfeeds\._|import scfeeds\._", code)
