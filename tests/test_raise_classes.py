"""Every error scfeeds raises is a ``ScfeedsError`` subclass (exceptions.py lists them).

Walks the source with ``ast`` and reports every ``raise`` of a builtin exception class
(``raise ValueError(...)``, ``raise RuntimeError``). A builtin is allowed only where a comment
on the ``raise`` line or the line above it says why, starting ``builtin-raise:`` (for
example ``NotImplementedError`` in a protocol, ``StopIteration``, ``SystemExit`` in a CLI).

``CHECKED`` lists the files checked: the whole package.
"""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

import pytest

import scfeeds
from scfeeds.exceptions import ScfeedsError

PACKAGE = Path(scfeeds.__file__).parent

#: Files (globs relative to the package) whose raises are checked.
CHECKED = ("**/*.py",)

MARK = "builtin-raise:"
BUILTIN_ERRORS = {
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
}


def checked_files() -> list[Path]:
    files = {p for pattern in CHECKED for p in PACKAGE.glob(pattern)}
    return sorted(files)


def _raised_name(node: ast.Raise) -> str | None:
    exc = node.exc
    if isinstance(exc, ast.Call):
        exc = exc.func
    if isinstance(exc, ast.Name):
        return exc.id
    if (
        isinstance(exc, ast.Attribute)
        and isinstance(exc.value, ast.Name)
        and exc.value.id == "builtins"
    ):
        return exc.attr
    return None


def builtin_raises(path: Path, root: Path = PACKAGE.parent) -> list[str]:
    """``file:line: raise Name`` for each unjustified raise of a builtin exception class."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    found = []
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if not isinstance(node, ast.Raise):
            continue
        name = _raised_name(node)
        if name not in BUILTIN_ERRORS:
            continue
        near = lines[max(node.lineno - 2, 0) : node.end_lineno or node.lineno]
        if any(MARK in line for line in near):
            continue
        found.append(f"{path.relative_to(root)}:{node.lineno}: raise {name}")
    return found


def test_checked_files_exist() -> None:
    for pattern in CHECKED:
        assert list(PACKAGE.glob(pattern)), f"{pattern} matches no file of the package"


def test_no_builtin_exception_is_raised_without_a_reason() -> None:
    offenders = [hit for path in checked_files() for hit in builtin_raises(path)]
    assert not offenders, (
        "raise a scfeeds.exceptions.ScfeedsError subclass (ConfigurationError for misuse), "
        f"or say why on the line with '# {MARK} ...':\n" + "\n".join(offenders)
    )


def test_the_walker_finds_builtin_raises(tmp_path: Path) -> None:
    """The check itself: it flags builtin raises and accepts justified or scfeeds ones."""
    src = tmp_path / "sample.py"
    src.write_text(
        "def f(x):\n"
        "    if x == 1:\n"
        "        raise ValueError('bad')\n"
        "    if x == 2:\n"
        "        raise RuntimeError\n"
        "    if x == 3:\n"
        "        # builtin-raise: iterator protocol\n"
        "        raise StopIteration\n"
        "    if x == 4:\n"
        "        raise ConfigurationError('fine')\n"
        "    raise\n",
        encoding="utf-8",
    )
    assert builtin_raises(src, root=tmp_path) == [
        "sample.py:3: raise ValueError",
        "sample.py:5: raise RuntimeError",
    ]


@pytest.mark.parametrize("name", sorted(n for n in dir(scfeeds.exceptions) if n.endswith("Error")))
def test_every_error_class_is_a_scfeeds_error(name: str) -> None:
    assert issubclass(getattr(scfeeds.exceptions, name), ScfeedsError)
