"""The feeds a portal serves: read from ``catalog.parquet`` or found by scanning a folder."""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import polars as pl

from scfeeds._sources import FORMAT_OF_EXTENSION
from scfeeds.exceptions import ConfigurationError
from scfeeds.schemas import TABLES

logger = logging.getLogger("scfeeds.portal")

FORMATS: Final[dict[str, str]] = {
    ext: fmt for ext, fmt in FORMAT_OF_EXTENSION.items() if ext != ".jsonl"
}
# Formats whose own rows can be paged when there is no synth world to take canonical rows from.
TABULAR_FORMATS: Final = frozenset({"csv", "ndjson", "parquet"})
CATALOG_COLUMNS: Final = (
    "id",
    "supplier_id",
    "table",
    "format",
    "path",
    "records",
    "bytes",
    "sha256",
)
# X12 transaction set -> canonical table, for files named like `850_00001.x12`.
_X12_SETS: Final = {"850": "po_lines", "856": "asn_lines", "810": "invoice_lines"}
_SUPPLIER: Final = re.compile(r"^SUP\d+$", re.IGNORECASE)
_UNSAFE_ID: Final = re.compile(r"[^A-Za-z0-9._~-]")

LinesSource = Literal["world", "file"]


@dataclass(frozen=True, slots=True)
class Feed:
    """One served file."""

    id: str
    path: str  # relative to the root, POSIX separators
    file: Path
    supplier_id: str | None
    table: str | None
    format: str
    records: int | None
    bytes: int
    sha256: str
    mtime: float
    lines_source: LinesSource | None

    @property
    def etag(self) -> str:
        return f'"{self.sha256}"'


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in blocks."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _world_loader() -> Any:
    """``scfeeds.synth.load_world`` if that module provides it, else None."""
    try:
        synth = importlib.import_module("scfeeds.synth")
    except ModuleNotFoundError as exc:
        if exc.name != "scfeeds.synth":
            raise
        return None
    return getattr(synth, "load_world", None)


def world_files(root: Path, table: str) -> list[Path]:
    """The parquet files of a world table (``world/<table>.parquet`` or a folder of parts)."""
    world = root / "world"
    single = world / f"{table}.parquet"
    if single.is_file():
        return [single]
    parts = sorted((world / table).glob("*.parquet")) if (world / table).is_dir() else []
    return parts or sorted(world.glob(f"{table}-*.parquet")) + sorted(
        world.glob(f"{table}_*.parquet")
    )


class Catalog:
    """The feeds under ``root`` and a lazily filled cache of their line-item frames."""

    def __init__(self, root: Path, feeds: list[Feed], *, from_catalog: bool) -> None:
        self.root = root
        self.feeds: dict[str, Feed] = {feed.id: feed for feed in feeds}
        self.from_catalog = from_catalog

    @classmethod
    def load(cls, root: str | os.PathLike[str]) -> Catalog:
        """Read ``root/catalog.parquet`` if present, else scan ``root`` (hashing each file once)."""
        base = Path(root)
        if not base.is_dir():
            raise ConfigurationError(f"portal root {str(base)!r} is not a directory")
        base = base.resolve()
        catalog = base / "catalog.parquet"
        if catalog.is_file():
            return cls(base, _from_catalog(base, catalog), from_catalog=True)
        return cls(base, _scan(base), from_catalog=False)

    def lines_frame(self, feed: Feed) -> pl.DataFrame:
        """All line items of ``feed``, in a stable order (blocking: call from a thread)."""
        if feed.lines_source == "world":
            assert feed.table is not None
            return _world_rows(self.root, feed.table, feed.path)
        if feed.lines_source == "file":
            return read_rows(feed.file, feed.format)
        raise ConfigurationError(f"feed {feed.id!r} has no line items")


def _world_rows(root: Path, table: str, source: str) -> pl.DataFrame:
    loader = _world_loader()
    if loader is not None and (root / "world" / table).is_dir():
        # synth's own layout (world/<table>/part-*.parquet): let synth say how to read it.
        world = loader(root, table)
        frame = world.lazy() if isinstance(world, pl.DataFrame) else world
    else:
        frame = pl.scan_parquet(world_files(root, table))
    # Filtering keeps the world file's row order, which is the order synth wrote: stable.
    return frame.filter(pl.col("source") == source).collect()


def read_rows(file: Path, fmt: str) -> pl.DataFrame:
    """The rows of a tabular file; CSV cells stay text so they are served exactly as written."""
    if fmt == "csv":
        return pl.read_csv(file, infer_schema=False)
    if fmt == "ndjson":
        return pl.read_ndjson(file)
    if fmt == "parquet":
        return pl.read_parquet(file)
    raise ConfigurationError(f"{file}: format {fmt!r} has no rows to page")


def _count_rows(file: Path, fmt: str) -> int | None:
    try:
        if fmt == "csv":
            frame = pl.scan_csv(file, infer_schema=False)
        elif fmt == "ndjson":
            frame = pl.scan_ndjson(file)
        elif fmt == "parquet":
            frame = pl.scan_parquet(file)
        else:
            return None
        return int(frame.select(pl.len()).collect().item())
    except (pl.exceptions.PolarsError, OSError) as exc:
        logger.warning("portal: cannot count rows of %s (%s); serving it without lines", file, exc)
        return None


def _world_available(root: Path, table: str | None) -> bool:
    return table is not None and bool(world_files(root, table))


def _from_catalog(root: Path, path: Path) -> list[Feed]:
    frame = pl.read_parquet(path)
    missing = [c for c in CATALOG_COLUMNS if c not in frame.columns]
    if missing:
        raise ConfigurationError(f"{path}: missing column(s) {', '.join(missing)}")
    has_world: dict[str, bool] = {table: _world_available(root, table) for table in TABLES}
    feeds: list[Feed] = []
    for row in frame.select(CATALOG_COLUMNS).iter_rows(named=True):
        file = (root / str(row["path"])).resolve()
        if not file.is_relative_to(root):
            # A catalog must not make the portal serve files from outside its root.
            logger.warning(
                "portal: %s row id=%s: path %r leaves the root; skipped",
                path,
                row["id"],
                row["path"],
            )
            continue
        if not file.is_file():
            logger.warning(
                "portal: %s row id=%s: file %s is missing; skipped", path, row["id"], file
            )
            continue
        stat = file.stat()
        if row["bytes"] is not None and int(row["bytes"]) != stat.st_size:
            # The file is the truth: a stale size would make every Content-Length a lie.
            logger.warning(
                "portal: %s row id=%s: %s has %d bytes, the catalog says %s; serving the file",
                path,
                row["id"],
                file,
                stat.st_size,
                row["bytes"],
            )
        fmt = str(row["format"])
        table = row["table"]
        lines: LinesSource | None = None
        if table is not None and has_world.get(str(table), False):
            lines = "world"
        elif fmt in TABULAR_FORMATS:
            lines = "file"
        feeds.append(
            Feed(
                id=str(row["id"]),
                path=Path(str(row["path"])).as_posix(),
                file=file,
                supplier_id=row["supplier_id"],
                table=table,
                format=fmt,
                records=None if row["records"] is None else int(row["records"]),
                bytes=stat.st_size,
                sha256=str(row["sha256"]) if row["sha256"] else sha256_file(file),
                mtime=stat.st_mtime,
                lines_source=lines,
            )
        )
    return feeds


def _infer(parts: tuple[str, ...], fmt: str) -> tuple[str | None, str | None]:
    """(supplier_id, table) from a relative path such as ``feeds/SUP001/po_lines/850_1.x12``."""
    supplier = next((p for p in parts[:-1] if _SUPPLIER.match(p)), None)
    table: str | None = next((p for p in parts[:-1] if p in TABLES), None)
    if table is None:
        name = parts[-1].lower()
        table = next((t for t in TABLES if t in name), None)
        if table is None and fmt == "x12":
            table = _X12_SETS.get(name[:3])
    return supplier, table


def _scan(root: Path) -> list[Feed]:
    feeds: list[Feed] = []
    used: set[str] = set()
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in FORMATS)
    for file in files:
        rel = file.relative_to(root)
        fmt = FORMATS[file.suffix.lower()]
        supplier, table = _infer(rel.parts, fmt)
        # Ids are the relative path with "/" -> "." so they fit in one URL path segment.
        base_id = _UNSAFE_ID.sub("_", ".".join(rel.parts))
        feed_id, n = base_id, 1
        while feed_id in used:
            n += 1
            feed_id = f"{base_id}~{n}"
        used.add(feed_id)
        stat = file.stat()
        records = _count_rows(file, fmt) if fmt in TABULAR_FORMATS else None
        feeds.append(
            Feed(
                id=feed_id,
                path=rel.as_posix(),
                file=file,
                supplier_id=supplier,
                table=table,
                format=fmt,
                records=records,
                bytes=stat.st_size,
                sha256=sha256_file(file),
                mtime=stat.st_mtime,
                lines_source="file" if records is not None else None,
            )
        )
    return feeds
