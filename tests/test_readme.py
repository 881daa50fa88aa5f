"""The README's example runs as written (in a plain script: no main guard, on purpose)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(tmp_path: Path) -> None:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"## A short example\n\n```python\n(.*?)```", text, re.S)
    assert match, "the README lost its example"
    code = match.group(1).replace("pos=300", "pos=40")  # same code, a smaller world
    code += "\nassert report.batches.height > 0\nprint(rec.summary())\n"
    script = tmp_path / "example.py"
    script.write_text(code)
    out = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "by supplier" in out.stdout
    assert "ingested" in out.stdout


def test_readme_names_the_two_commands_and_ci_calls_the_test_command() -> None:
    text = README.read_text(encoding="utf-8")
    assert "./dev demo" in text
    assert "./dev test" in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert "./dev test" in ci
