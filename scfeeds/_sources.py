"""File sources for the readers: a path, a glob, or a list of them."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from scfeeds.exceptions import ConfigurationError

#: File name extension -> the format of the file (the readers', plus Parquet, which the
#: portal serves and pages).
FORMAT_OF_EXTENSION: Final[dict[str, str]] = {
    ".x12": "x12",
    ".edi": "x12",
    ".csv": "csv",
    ".xlsx": "xlsx",
    ".xml": "xml",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".parquet": "parquet",
}


def resolve_sources(source: str | Path | Sequence[str | Path]) -> list[tuple[Path, str]]:
    """``(path, name as given)`` per file; globs expand in sorted order, an empty match raises."""
    items = [source] if isinstance(source, str | Path) else list(source)
    out: list[tuple[Path, str]] = []
    for item in items:
        text = str(item)
        if any(ch in text for ch in "*?[") and not Path(text).exists():
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise ConfigurationError(f"no file matches {text!r}")
            out.extend((Path(m), m) for m in matches)
        else:
            out.append((Path(item), text))
    if not out:
        raise ConfigurationError("no source given")
    return out
