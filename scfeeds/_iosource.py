"""One ``register_io_source`` wrapper for every reader's ``scan_*``.

A reader gives a function that yields frames of its canonical table for a ``Pushdown`` (the
columns and predicate polars asks for, and its batch size hint); this module applies the
predicate, the projection and the row limit, the same way for X12, cXML and exports.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import polars as pl
from polars.io.plugins import register_io_source


@dataclass(frozen=True, slots=True)
class Pushdown:
    """What polars asks of a scan: ``columns`` (None: all), a ``predicate`` the reader may use
    to skip work (the rows are filtered again here), and a ``batch_size`` hint."""

    columns: list[str] | None
    predicate: pl.Expr | None
    batch_size: int | None

    def needed(self, schema: pl.Schema) -> list[str] | None:
        """Columns of ``schema`` the reader must build (projection plus predicate inputs)."""
        if self.columns is None:
            return None
        need = set(self.columns)
        if self.predicate is not None:
            need |= set(self.predicate.meta.root_names())
        return [n for n in schema if n in need]


def scan_batches(
    batches: Callable[[Pushdown], Iterable[pl.DataFrame]],
    *,
    schema: pl.Schema | Callable[[], pl.Schema],
    name: str,
    detail: str | None = None,
) -> pl.LazyFrame:
    """A LazyFrame over the frames ``batches`` yields (each with ``schema``'s columns, or the
    subset ``Pushdown.needed`` names); ``schema`` may be a function, asked only when polars
    needs it."""

    def generate(
        with_columns: list[str] | None,
        predicate: pl.Expr | None,
        n_rows: int | None,
        batch_size: int | None,
    ) -> Iterator[pl.DataFrame]:
        produced = 0
        for frame in batches(Pushdown(with_columns, predicate, batch_size)):
            out = frame if predicate is None else frame.filter(predicate)
            if with_columns is not None:
                out = out.select(with_columns)
            if n_rows is not None:
                out = out.head(n_rows - produced)
            produced += out.height
            yield out
            if n_rows is not None and produced >= n_rows:
                return

    return register_io_source(
        generate, schema=schema, is_pure=True, explain_name=name, explain_detail=detail
    )
