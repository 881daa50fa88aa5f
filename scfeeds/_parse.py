"""One landed file -> canonical frames + parse errors, whatever its format.

This is the CPU-bound half of ingest. It runs off the event loop: in a worker thread for the
polars-based readers (X12, CSV, XLSX, NDJSON pages: polars releases the GIL) and in a process
pool for pure-Python parsing (cXML: expat callbacks and tree walks in Python). Everything it
returns is small enough to pickle; nothing here knows about the network.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple

import polars as pl

from scfeeds._archive import is_reader_panic
from scfeeds._sources import FORMAT_OF_EXTENSION
from scfeeds.exceptions import ConfigurationError
from scfeeds.schemas import ERRORS, TABLES, TableName, schema

Format = Literal["x12", "csv", "xlsx", "xml", "ndjson"]
FORMATS: tuple[Format, ...] = ("x12", "csv", "xlsx", "xml", "ndjson")

_EXTENSIONS: Final[dict[str, Format]] = {
    ext: fmt for ext, fmt in FORMAT_OF_EXTENSION.items() if fmt in FORMATS
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
    except BaseException as exc:  # a native reader's panic: BaseException, not Exception
        if not is_reader_panic(exc):
            raise
        return Parsed(errors=_error(name, "file", "READER_PANIC", f"{type(exc).__name__}: {exc}"))
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


@dataclass(frozen=True, slots=True)
class Job:
    """One document for ``parse_batch``: where it is, and what to call it.

    ``source`` is the provenance the rows and error rows carry (a URL, typically; default
    the path as given); ``fmt`` and ``table`` override the batch-wide ones.
    """

    path: str | os.PathLike[str]
    source: str | None = None
    fmt: Format | None = None
    table: TableName | None = None


class ParsedBatch(NamedTuple):
    """Canonical frames (one per table met) and the errors of every document of a batch."""

    tables: dict[TableName, pl.DataFrame]
    errors: pl.DataFrame


def parse_batch(
    jobs: Sequence[Job | str | os.PathLike[str]],
    *,
    fmt: Format | None = None,
    table: TableName | None = None,
) -> ParsedBatch:
    """Read many documents in as few reader calls as their formats allow.

    X12 documents are read by one ``read_x12`` pass (small interchanges tokenized together),
    cXML documents of one table by one run (parsed in this thread, typed in one query), CSV
    exports by one typing query per header layout (the header planned once per distinct
    header); other formats (XLSX, NDJSON and CSV pages of canonical columns) one document at
    a time. Provenance is set once, by the reader: ``source`` is the job's ``source`` (else
    its path as given), ``position`` the reader's. Errors are
    ``schemas.ERRORS`` rows (``rule``, never ``code``). A damaged document gives its own error
    rows and every other document's rows are delivered; a reader failure on a group falls back
    to one call per document, so it costs at most that document. Rows come grouped by format
    (X12 first, then cXML, then CSV exports, then the rest), in job order within a group.

    Examples
    --------
    >>> tables, errors = parse_batch([Job("a.x12", source="https://a"), "b.xml"])  # doctest: +SKIP
    """
    todo: list[tuple[Path, str, Format | None, TableName | None]] = []
    errors: list[pl.DataFrame] = []
    for job in jobs:
        j = job if isinstance(job, Job) else Job(job)
        path = Path(j.path)
        name = j.source or os.fspath(j.path)
        if not path.is_file():
            errors.append(_error(name, "file", "READER_FAILED", f"{name}: no such file"))
            continue
        f = j.fmt or fmt or guess_format(os.fspath(j.path)) or sniff_format(path)
        todo.append((path, name, f, j.table or table))
    parts: dict[TableName, list[pl.DataFrame]] = {}

    def add(got: Parsed | ParsedBatch) -> None:
        for t, frame in got.tables.items():
            parts.setdefault(t, []).append(frame)
        errors.append(got.errors)

    x12 = [(name, path) for path, name, f, _ in todo if f == "x12"]
    if x12:
        add(_guarded(_x12_batch, x12, todo, "x12"))
    xml = [(path, name, t) for path, name, f, t in todo if f == "xml"]
    if xml:
        add(_guarded(_xml_batch, xml, todo, "xml"))
    # CSV pages of canonical columns (the portal's) are read as pages, one by one.
    csv = [
        job
        for job in todo
        if job[2] == "csv" and (job[3] is None or not _has_canonical_header(job[0], job[3]))
    ]
    if csv:
        add(_guarded(_csv_batch, [(p, n, t) for p, n, _, t in csv], csv, "csv"))
    batched = {id(item) for item in csv}
    for item in todo:
        path, name, f, t = item
        if f not in ("x12", "xml") and id(item) not in batched:
            add(parse_file(path, fmt=f, table=t, source=name))
    tables = {t: pl.concat(frames, how="vertical") for t, frames in parts.items()}
    return ParsedBatch(tables, pl.concat([pl.DataFrame(schema=ERRORS), *errors]))


def _guarded(
    read: Callable[[Any], ParsedBatch],
    items: Any,
    todo: list[tuple[Path, str, Format | None, TableName | None]],
    fmt: Format,
) -> ParsedBatch | Parsed:
    try:
        return read(items)
    except Exception:  # a reader bug: read the group one by one so it costs one document
        parts: dict[TableName, list[pl.DataFrame]] = {}
        errors: list[pl.DataFrame] = []
        for path, name, f, t in todo:
            if f == fmt:
                got = parse_file(path, fmt=f, table=t, source=name)
                for k, frame in got.tables.items():
                    parts.setdefault(k, []).append(frame)
                errors.append(got.errors)
        return ParsedBatch({k: pl.concat(v) for k, v in parts.items()}, pl.concat(errors))


def _csv_batch(items: list[tuple[Path, str, TableName | None]]) -> ParsedBatch:
    """Supplier CSV exports: one query per header layout; declined files one call each."""
    from scfeeds._exports import read_export_batch

    got = read_export_batch(items)
    parts = {t: [f] for t, f in got.rows.items()}
    errors = [got.errors]
    for job in got.declined:
        path, name, t = items[job]
        one = parse_file(path, fmt="csv", table=t, source=name)
        for k, frame in one.tables.items():
            parts.setdefault(k, []).append(
                frame.with_columns(pl.lit(job, dtype=pl.UInt32).alias("__job"))
            )
        errors.append(one.errors.with_columns(pl.lit(job, dtype=pl.UInt32).alias("__job")))
    tables = {
        t: pl.concat(v).sort("__job", maintain_order=True).drop("__job") for t, v in parts.items()
    }
    merged = pl.concat(errors).sort("__job", maintain_order=True).drop("__job")
    return ParsedBatch(tables, merged)


def _x12_batch(items: list[tuple[str, Path]]) -> ParsedBatch:
    from scfeeds._x12._reader import X12_TABLES, read_sources

    result = read_sources(items, segments=False, extras=False)
    tables = {t: f for t in X12_TABLES if (f := result.table(t)).height}
    return ParsedBatch(tables, _x12_errors(result.errors))


def _xml_batch(items: list[tuple[Path, str, TableName | None]]) -> ParsedBatch:
    from scfeeds._cxml import TABLE_OF, _read

    runs: dict[TableName, list[tuple[Path, str, str | None]]] = {}
    errors: list[pl.DataFrame] = []
    for path, name, table in items:
        request = _read._sniff(path)
        t = table or (TABLE_OF[request] if request is not None else _cxml_table(path))
        if t is None:
            errors.append(
                _error(name, "/", "XML_NOT_CXML", f"{name}: no cXML request found; pass table=")
            )
            continue
        runs.setdefault(t, []).append((path, name, request))
    tables: dict[TableName, pl.DataFrame] = {}
    for t, files in runs.items():
        rows: list[pl.DataFrame] = []
        if t == "po_acks":
            for good, bad in _confirmations(files):
                rows.append(good)
                errors.append(bad)
            tables[t] = pl.concat(rows)
            continue
        for good, bad in _read._batches(files, t):
            rows.append(good)
            errors.append(_as_errors(bad))
        tables[t] = pl.concat(rows)
    return ParsedBatch(tables, pl.concat([pl.DataFrame(schema=ERRORS), *errors]))


_CONFIRMATION = re.compile(rb"<(?:\w+:)?ConfirmationRequest[\s/>]")


def _cxml_table(path: Path) -> TableName | None:
    """The table a cXML document fills, from its request element (None: not cXML we read)."""
    from scfeeds._cxml import TABLE_OF, _read

    request = _read._sniff(path)
    if request is not None:
        return TABLE_OF[request]
    with path.open("rb") as fh:
        head = fh.read(1 << 16)
    return "po_acks" if _CONFIRMATION.search(head) else None


def _confirmations(
    files: list[tuple[Path, str, str | None]],
) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    """cXML ConfirmationRequests (small documents, each parsed whole), named by ``source``."""
    from scfeeds._cxml._confirm import read_confirmations

    for path, name, _ in files:
        rows, bad = read_confirmations(path, errors="collect")
        yield (
            rows.with_columns(pl.lit(name, dtype=pl.String).alias("source")),
            _as_errors(bad).with_columns(pl.lit(name, dtype=pl.String).alias("source")),
        )


def _parse_x12(path: Path) -> Parsed:
    from scfeeds._x12 import read_x12

    result = read_x12(path)
    tables: dict[TableName, pl.DataFrame] = {}
    for t in ("po_lines", "asn_lines", "invoice_lines", "po_acks"):
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
    from scfeeds._cxml import read_xml

    rows, errors = read_xml(path, table=table or _cxml_table(path), errors="collect")
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
    errors = pl.concat([errors.cast(pl.String), _control_rows(frame.filter(~bad), path)])
    good = cast.filter(~bad).filter(~_has_control(frame.filter(~bad)))
    if good.height and good["source"].null_count() == good.height:
        good = good.with_columns(pl.lit(str(path)).alias("source"))
    return Parsed(tables={table: good.select(list(target))}, errors=errors)


def _has_control(frame: pl.DataFrame) -> pl.Series:
    """Rows with a C0 control character (not TAB, LF, CR) in a value: see ``_exports``."""
    from scfeeds._exports import _CONTROL

    text = [c for c, dt in frame.schema.items() if dt == pl.String() and c != "source"]
    if not text or frame.height == 0:
        return pl.Series([False] * frame.height)
    return frame.select(
        pl.any_horizontal([pl.col(c).str.contains(_CONTROL).fill_null(False) for c in text])
    ).to_series()


def _control_rows(frame: pl.DataFrame, path: Path) -> pl.DataFrame:
    from scfeeds._exports import _CONTROL

    hit = frame.filter(_has_control(frame))
    text = [c for c, dt in frame.schema.items() if dt == pl.String() and c != "source"]
    return hit.select(
        pl.lit(str(path)).alias("source"),
        pl.format("row {}", pl.col("__row")).alias("position"),
        pl.lit("CONTROL_CHARACTER").alias("rule"),
        pl.concat_str(
            [
                pl.when(pl.col(c).str.contains(_CONTROL)).then(
                    pl.format(
                        "{}: '{}' holds a control character",
                        pl.lit(c),
                        pl.col(c).str.replace_all(_CONTROL, "\ufffd"),
                    )
                )
                for c in text
            ],
            separator="; ",
            ignore_nulls=True,
        ).alias("message"),
    ).cast(pl.String)


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
    raise ConfigurationError(
        f"rows with columns {frame.columns} match no canonical table: pass table= "
        f"(one of {', '.join(TABLES)})"
    )


def _as_errors(errors: pl.DataFrame) -> pl.DataFrame:
    if errors.height == 0:
        return pl.DataFrame(schema=ERRORS)
    return errors.select(
        [
            (pl.col(c) if c in errors.columns else pl.lit(None)).cast(pl.String).alias(c)
            for c in ERRORS
        ]
    )
