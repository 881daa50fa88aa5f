"""The writer's state across batches and the feed files it has written (the catalog).

Shared by ``writer`` (850/856/810, exports, cXML) and ``acks`` (855s), which both write feed
files and record them in the catalog.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import polars as pl

from scfeeds._synth.config import Format, Supplier, SynthConfig

CATALOG_SCHEMA: Final = pl.Schema(
    {
        "id": pl.String(),
        "supplier_id": pl.String(),
        "table": pl.String(),
        "format": pl.String(),
        "path": pl.String(),
        "records": pl.Int64(),
        "bytes": pl.Int64(),
        "sha256": pl.String(),
    }
)


@dataclass
class WriterState:
    """What the writer carries across batches (all small)."""

    root: Path
    seed: int
    suppliers: tuple[Supplier, ...]
    formats: Mapping[tuple[int, str], tuple[Format, ...]]
    fallback: Format | None  # where capped cXML documents go; None: no cap (XML only)
    config: SynthConfig
    icn: dict[tuple[int, str], int] = field(default_factory=dict)
    xml_used: dict[tuple[int, str], int] = field(default_factory=dict)
    xlsx_fallback: Format | None = None  # where capped XLSX rows go; None: no cap
    xlsx_used: dict[tuple[int, str], int] = field(default_factory=dict)
    catalog: list[tuple[str, str, str, str, str, int, int, str]] = field(default_factory=list)
    # "documents": one interchange per document, daily exports (see synth.generate's layout)
    layout: str = "files"


def write_file(state: WriterState, rel: str, data: bytes) -> tuple[int, str]:
    """Write ``data`` at ``root/rel``; its size and SHA-256."""
    path = state.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return len(data), hashlib.sha256(data).hexdigest()


def record_file(
    state: WriterState,
    sup: Supplier,
    table: str,
    fmt: str,
    rel: str,
    records: int,
    size: int,
    sha: str,
) -> None:
    """One row of ``catalog.parquet`` for a feed file written."""
    name = rel.rsplit("/", 1)[-1]
    state.catalog.append(
        (f"{sup.supplier_id}-{table}-{name}", sup.supplier_id, table, fmt, rel, records, size, sha)
    )


def catalog_frame(state: WriterState) -> pl.DataFrame:
    """The catalog of every feed file written, sorted by path."""
    return pl.DataFrame(state.catalog, schema=CATALOG_SCHEMA, orient="row").sort("path")
