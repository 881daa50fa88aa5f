"""Helpers over a generated world (``make_world`` in ``conftest.py`` generates it)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from scfeeds import synth
from scfeeds._reconcile import Reconciliation, reconcile


def reconcile_world(root: Path) -> Reconciliation:
    """The three-way match of a world's tables, receipts and pack sizes included, collected."""
    load = synth.load_world
    return reconcile(
        load(root, "po_lines"),
        load(root, "asn_lines"),
        load(root, "invoice_lines"),
        receipts=load(root, "receipts"),
        conversions=pl.read_parquet(root / "world" / "conversions.parquet"),  # pack sizes
    ).collect()
