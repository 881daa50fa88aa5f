"""``scan_x12``: a lazy polars source over many X12 files (``register_io_source``)."""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl

from scfeeds._iosource import Pushdown, scan_batches
from scfeeds._x12._reader import DEFAULT_SLICE, X12_TABLES, X12Source, expand_sources, iter_units
from scfeeds.exceptions import ConfigurationError
from scfeeds.schemas import TableName, schema


def scan_x12(
    source: X12Source, *, table: TableName = "po_lines", slice_bytes: int = DEFAULT_SLICE
) -> pl.LazyFrame:
    """Lazily read one canonical table from X12 files.

    Parameters
    ----------
    source
        Bytes, a path, a glob or a list of them (globs are expanded now, files read at
        ``collect`` time, one slice of whole sets at a time; small files many at a time, in
        one pass, as in ``read_x12``).
    table
        ``"po_lines"`` (850), ``"asn_lines"`` (856) or ``"invoice_lines"`` (810).
    slice_bytes
        Target bytes per slice (or per run of small files); each becomes one batch.

    Returns
    -------
    pl.LazyFrame
        With ``scfeeds.schemas.schema(table)``. Only the projected columns are built (for
        example no PID join without ``description``, no N1 lookup without ``supplier_id``);
        a predicate that only uses ``source`` skips whole files, other predicates filter
        each batch. Envelope checks still run: rows of damaged sets are not returned (use
        ``read_x12`` to see the errors).

    Examples
    --------
    >>> lf = scan_x12("feeds/**/*.x12", table="po_lines")  # doctest: +SKIP
    >>> mine = lf.filter(pl.col("supplier_id") == "SUP001")  # doctest: +SKIP
    >>> mine.select("po_number", "qty_ordered").collect()  # doctest: +SKIP
    """
    if table not in X12_TABLES:
        raise ConfigurationError(f"X12 has no table {table!r}; use one of {', '.join(X12_TABLES)}")
    if slice_bytes < 1024:
        raise ConfigurationError("slice_bytes must be at least 1024")
    sources = expand_sources(source)
    sch = schema(table)

    def batches(ask: Pushdown) -> Iterator[pl.DataFrame]:
        # batches are runs of small sources or slices of whole sets (batch_size is not used)
        pred = ask.predicate
        todo = sources
        if pred is not None and set(pred.meta.root_names()) == {"source"}:
            names = pl.DataFrame({"source": [n for n, _ in sources]}, schema={"source": pl.String})
            todo = [sources[i] for i in names.with_row_index().filter(pred)["index"]]
        cols = ask.needed(sch)
        if cols is not None and not cols:
            cols = ["position"]
        for unit in iter_units(todo, [table], columns=cols, slice_bytes=slice_bytes):
            df = unit.tables.get(table)
            if df is not None and df.height:
                yield df

    return scan_batches(
        batches,
        schema=sch,
        name="scfeeds.scan_x12",
        detail=f"{table} from {len(sources)} source(s)",
    )
