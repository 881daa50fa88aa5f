"""One landed file -> canonical frames + parse errors, whatever its format.

This is the CPU-bound half of ingest. It runs off the event loop: in a worker thread for the
polars-based readers (X12, CSV, XLSX, NDJSON pages: polars releases the GIL) and in a process
pool for pure-Python parsing (cXML through xmltodict). Everything it returns is small enough to
pickle; nothing here knows about the network.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import polars as pl

from scfeeds.schemas import ERRORS, TABLES, TableName, schema

Format = Literal["x12", "csv", "xlsx", "xml", "ndjson"]
FORMATS: tuple[Format, ...] = ("x12", "csv", "xlsx", "xml", "ndjson")

_EXTENSIONS: dict[str, Format] = {
    ".x12": "x12",
    ".edi": "x12",
    ".csv": "csv",
    ".xlsx": "xlsx",
    ".xml": "xml",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
}


def guess_format(name: str) -> Format | None:
    """Format from a file name or URL path (``None`` if the extension says nothing)."""
    path = name.split("?", 1)[0].lower()
    for ext, fmt in _EXTENSIONS.items():
        if path.endswith(ext):
            return fmt
    if path.rstrip("/").endswith("/lines"):  # the portal's pages: NDJSON unless format=csv
        return "csv" if "format=csv" in name.lower() else "ndjson"
    return None


def sniff_format(path: str | os.PathLike[str]) -> Format | None:
    """Format from the first bytes of a file."""
    with open(path, "rb") as fh:
        head = fh.read(512).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"ISA"):
        return "x12"
    if head.startswith(b"PK\x03\x04"):
        return "xlsx"
    if head.startswith((b"<?xml", b"<cXML", b"<!DOCTYPE")):
        return "xml"
    if head.startswith(b"{"):
        return "ndjson"
    return "csv" if head else None


@dataclass(frozen=True)
class Parsed:
    """Canonical frames found in one file, and the problems met while reading it."""

    tables: dict[TableName, pl.DataFrame] = field(default_factory=dict)
    errors: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=ERRORS))


def _error(source: str, position: str, rule: str, message: str) -> pl.DataFrame:
    return pl.DataFrame(
        {"source": [source], "position": [position], "rule": [rule], "message": [message]},
        schema=ERRORS,
    )


def parse_file(
    path: str | os.PathLike[str],
    *,
    fmt: Format | None = None,
    table: TableName | None = None,
    source: str | None = None,
) -> Parsed:
    """Read one file into canonical frames.

    ``source`` (a URL, typically) replaces the local path in the frames' provenance. A file
    the reader cannot make sense of at all becomes one error row, never an exception: the
    batch goes on.
    """
    from scfeeds.exceptions import ParseError

    path = Path(path)
    name = source or str(path)
    fmt = fmt or guess_format(str(path)) or sniff_format(path)
    try:
        if fmt == "x12":
            parsed = _parse_x12(path)
        elif fmt in ("csv", "xlsx"):
            parsed = _parse_export(path, fmt=fmt, table=table)
        elif fmt == "xml":
            parsed = _parse_xml(path, table=table)
        elif fmt == "ndjson":
            parsed = _parse_ndjson(path, table=table)
        else:
            return Parsed(errors=_error(name, "file", "UNKNOWN_FORMAT", "cannot tell the format"))
    except ParseError as exc:
        return Parsed(
            errors=_error(name, exc.position or "file", exc.rule or "PARSE_ERROR", exc.detail)
        )
    except Exception as exc:  # a reader bug or unforeseen input must not stop the batch
        return Parsed(errors=_error(name, "file", "READER_FAILED", f"{type(exc).__name__}: {exc}"))
    if source is None:
        return parsed
    # Every row of this file names where the analyst got it (the URL), whatever the reader
    # put there (a landing path, or the original file a portal page was cut from).
    return Parsed(
        tables={
            t: f.with_columns(pl.lit(source, dtype=pl.String).alias("source"))
            for t, f in parsed.tables.items()
        },
        errors=parsed.errors.with_columns(pl.lit(source).alias("source")),
    )


def _parse_x12(path: Path) -> Parsed:
    from scfeeds._x12 import read_x12

    result = read_x12(path)
    tables: dict[TableName, pl.DataFrame] = {}
    for t in ("po_lines", "asn_lines", "invoice_lines"):
        frame: pl.DataFrame = getattr(result, t)
        if frame.height:
            tables[t] = frame
    errors = _x12_errors(result.errors)
    return Parsed(tables=tables, errors=errors)


def _x12_errors(errors: pl.DataFrame) -> pl.DataFrame:
    if errors.height == 0:
        return pl.DataFrame(schema=ERRORS)
    return errors.select(
        pl.col("source"),
        pl.col("position").fill_null("file"),
        pl.col("code").alias("rule"),
        pl.col("message"),
    )


def _parse_export(path: Path, *, fmt: Format, table: TableName | None) -> Parsed:
    from scfeeds._exports import read_export

    if fmt == "csv" and table is not None and _has_canonical_header(path, table):
        return _parse_canonical_csv(path, table=table)

    rows, errors = read_export(
        path, table=table, fmt="xlsx" if fmt == "xlsx" else "csv", errors="collect"
    )
    return Parsed(tables={_table_of(rows, table): rows}, errors=_as_errors(errors))


def _parse_xml(path: Path, *, table: TableName | None) -> Parsed:
    from scfeeds._xml import read_xml

    rows, errors = read_xml(path, table=table, errors="collect")
    return Parsed(tables={_table_of(rows, table): rows}, errors=_as_errors(errors))


def _has_canonical_header(path: Path, table: TableName) -> bool:
    """A page of the portal's line-items endpoint in CSV: canonical column names as header."""
    with open(path, "rb") as fh:
        first = fh.readline().decode("utf-8", "replace").strip().lstrip("\ufeff")
    return first.split(",") == list(schema(table))


def _parse_canonical_csv(path: Path, *, table: TableName) -> Parsed:
    target = schema(table)
    frame = pl.read_csv(path, schema={k: pl.String() for k in target})
    return _cast_canonical(frame, table, path)


def _from_string(col: str, dtype: pl.DataType) -> pl.Expr:
    if dtype == pl.Date():
        return pl.col(col).str.to_date("%Y-%m-%d", strict=False)
    return pl.col(col).cast(dtype, strict=False)


def _cast_canonical(frame: pl.DataFrame, table: TableName, path: Path) -> Parsed:
    """Cast a page of canonical strings; a value that does not cast is an error row."""
    target = schema(table)
    typed = [c for c, dt in target.items() if dt != pl.String()]
    frame = frame.with_row_index("__row", offset=1)
    cast = frame.with_columns([_from_string(c, target[c]) for c in typed])
    bad = pl.any_horizontal(
        [frame[c].is_not_null() & cast[c].is_null() for c in typed] or [pl.lit(False)]
    )
    failed = frame.filter(bad)
    errors = failed.select(
        pl.lit(str(path)).alias("source"),
        pl.format("row {}", pl.col("__row")).alias("position"),
        pl.lit("BAD_VALUE").alias("rule"),
        pl.format(
            "a value does not fit its column type ({})",
            pl.concat_str(
                [pl.format("{}={}", pl.lit(c), pl.col(c)) for c in typed],
                separator=", ",
                ignore_nulls=True,
            ),
        ).alias("message"),
    )
    good = cast.filter(~bad)
    if good.height and good["source"].null_count() == good.height:
        good = good.with_columns(pl.lit(str(path)).alias("source"))
    return Parsed(tables={table: good.select(list(target))}, errors=errors.cast(pl.String))


def _parse_ndjson(path: Path, *, table: TableName | None) -> Parsed:
    if table is None:
        from scfeeds.exceptions import ParseError

        raise ParseError(
            "NDJSON line pages carry no table name: pass table=",
            source=str(path),
            position="file",
            rule="UNKNOWN_TABLE",
        )
    target = schema(table)
    frame = (
        pl.read_ndjson(path, schema={k: pl.String() for k in target})
        if os.path.getsize(path)
        else pl.DataFrame(schema={k: pl.String() for k in target})
    )
    return _cast_canonical(frame, table, path)


def _table_of(frame: pl.DataFrame, table: TableName | None) -> TableName:
    if table is not None:
        return table
    for t in TABLES:
        if set(schema(t)) == set(frame.columns):
            return t
    raise ValueError(f"frame with columns {frame.columns} matches no canonical table")


def _as_errors(errors: pl.DataFrame) -> pl.DataFrame:
    if errors.height == 0:
        return pl.DataFrame(schema=ERRORS)
    return errors.select(
        [
            (pl.col(c) if c in errors.columns else pl.lit(None)).cast(pl.String).alias(c)
            for c in ERRORS
        ]
    )
