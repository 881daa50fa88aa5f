"""Read back a world that :func:`scfeeds.synth.generate` wrote (re-exported by ``synth``)."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import polars as pl

from scfeeds.schemas import TableName, empty, schema

DAMAGED_SCHEMA: Final = pl.Schema(
    {
        "path": pl.String(),
        "format": pl.String(),
        "table": pl.String(),
        "rule": pl.String(),
        "position": pl.String(),
        "good_records": pl.Int64(),
        "source": pl.String(),
        "kind": pl.String(),
    }
)


def load_world(dest: str | Path, table: TableName) -> pl.LazyFrame:
    """The canonical rows every feed file of ``table`` holds (what a correct reader returns).

    Parameters
    ----------
    dest
        Root of a world written by :func:`generate`.
    table
        ``"po_lines"``, ``"asn_lines"``, ``"invoice_lines"`` or ``"receipts"``.

    Returns
    -------
    pl.LazyFrame
        ``schema(table)``, provenance included (``source`` = path relative to ``dest``).
    """
    sch = schema(table)  # validates the name
    folder = Path(dest) / "world" / table
    if not any(folder.glob("part-*.parquet")):
        return empty(table).lazy()
    return pl.scan_parquet(folder / "part-*.parquet", schema=sch)


def load_truth(dest: str | Path) -> pl.DataFrame:
    """The answer key: one row per (injected fault, exception code); see docs/CONTRACTS.md."""
    return pl.read_parquet(Path(dest) / "truth.parquet")


def load_damaged(dest: str | Path) -> pl.DataFrame:
    """Damaged files with the rule a reader must report (empty when none were asked for).

    Columns: path, format, table, rule, position, good_records, source, kind (see
    ``docs/CONTRACTS.md``, "Damaged files").
    """
    path = Path(dest) / "damaged.parquet"
    if not path.exists():
        return pl.DataFrame(schema=DAMAGED_SCHEMA)
    return pl.read_parquet(path)
