"""Route a batch's documents to formats and files; write feeds, world parts and the catalog."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import numpy as np
import polars as pl

from scfeeds._cxml import cxml_positions, to_cxml
from scfeeds._exports import write_export
from scfeeds._synth import x12
from scfeeds._synth.acks import add_performance
from scfeeds._synth.config import DOC_TABLES, DocTable, Supplier
from scfeeds._synth.files import WriterState, record_file, write_file
from scfeeds._synth.world import Batch
from scfeeds.schemas import PROVENANCE, TableName, schema

_PREFIX: Final[Mapping[tuple[str, str], str]] = {
    ("po_lines", "x12"): "850",
    ("asn_lines", "x12"): "856",
    ("invoice_lines", "x12"): "810",
}
_SHORT: Final[Mapping[str, str]] = {
    "po_lines": "po",
    "asn_lines": "asn",
    "invoice_lines": "inv",
    "receipts": "receipts",
}
_DOC_DATE: Final[Mapping[str, str]] = {
    "po_lines": "po_date",
    "asn_lines": "ship_date",
    "invoice_lines": "invoice_date",
}


def _canonical(frame: pl.DataFrame, table: TableName) -> pl.DataFrame:
    """Canonical columns of ``frame`` plus its provenance, in schema order and dtypes."""
    sch = schema(table)
    return frame.select(sch.names()).cast(sch)


def route(
    batch_frame: pl.DataFrame, table: DocTable, state: WriterState, rng: np.random.Generator
) -> pl.DataFrame:
    """Add ``fmt`` to every row: one format per document, from the supplier's formats."""
    docs = (
        batch_frame.filter(pl.col("copy_of") < 0)
        if "copy_of" in batch_frame.columns
        else batch_frame
    )
    docs = (
        docs.group_by("doc", maintain_order=True)
        .agg(pl.col("sup").first(), n=pl.len().cast(pl.Int64))
        .sort("doc")
    )
    sup = docs["sup"].to_numpy()
    n_rows = docs["n"].to_numpy()
    u = rng.random(len(sup))
    fmt = np.empty(len(sup), dtype=object)
    for s in np.unique(sup).tolist():
        mask = sup == s
        choices = state.formats[(s, table)]
        picked = np.array(choices, dtype=object)[(u[mask] * len(choices)).astype(np.int64)]
        # one cXML file per document: cap them, overflow goes to another format
        xml = np.flatnonzero(picked == "xml")
        used = state.xml_used.get((s, table), 0)
        allowed = max(state.config.xml_max_files - used, 0)
        if state.fallback is None:
            allowed = len(xml)
        if len(xml) > allowed:
            other = [f for f in choices if f != "xml"]
            picked[xml[allowed:]] = other[0] if other else state.fallback
        state.xml_used[(s, table)] = used + min(len(xml), allowed)
        # xlsxwriter writes cell by cell in Python: cap the rows, overflow to another format
        xlsx = np.flatnonzero(picked == "xlsx")
        if len(xlsx) and state.xlsx_fallback is not None:
            used = state.xlsx_used.get((s, table), 0)
            rows = np.cumsum(n_rows[mask][xlsx])
            keep = rows <= state.config.xlsx_max_rows - used
            flat = [f for f in choices if f not in ("xlsx", "xml")]
            picked[xlsx[~keep]] = flat[0] if flat else state.xlsx_fallback
            state.xlsx_used[(s, table)] = used + int(rows[keep][-1]) if keep.any() else used
        fmt[mask] = picked
    routes = pl.DataFrame({"doc": docs["doc"], "fmt": pl.Series(fmt.tolist(), dtype=pl.String)})
    key = pl.col("copy_of") if "copy_of" in batch_frame.columns else pl.col("doc")
    out = batch_frame.with_columns(_key=pl.when(key >= 0).then(key).otherwise(pl.col("doc")))
    return out.join(
        routes.rename({"doc": "_key"}), on="_key", how="left", maintain_order="left"
    ).drop("_key")


def write_batch(state: WriterState, batch: Batch, b: int) -> dict[str, pl.DataFrame]:
    """Write every feed file of batch ``b``; return its world rows per table."""
    rng = np.random.default_rng([state.seed, 2, b])
    extra: dict[str, pl.DataFrame] = {}
    if state.config.performance:
        batch, extra = add_performance(state, batch, b)
    world: dict[str, list[pl.DataFrame]] = {t: [] for t in (*DOC_TABLES, "receipts")}
    frames: dict[DocTable, pl.DataFrame] = {
        "po_lines": batch.po,
        "asn_lines": batch.asn,
        "invoice_lines": batch.invoice,
    }
    for doc_table in DOC_TABLES:
        routed = route(frames[doc_table], doc_table, state, rng)
        for (s, fmt), rows in sorted(
            routed.partition_by(["sup", "fmt"], as_dict=True, maintain_order=True).items(),
            key=lambda kv: (int(str(kv[0][0])), str(kv[0][1])),
        ):
            sup = state.suppliers[int(str(s))]
            world[doc_table] += _write_group(state, rows, doc_table, sup, str(fmt), b)
    if state.config.receipts and batch.receipts.height:
        daily = state.layout == "documents"
        for key, rows in sorted(
            batch.receipts.partition_by(
                ["sup", "receipt_date"] if daily else ["sup"], as_dict=True, maintain_order=True
            ).items(),
            key=lambda kv: (int(str(kv[0][0])), str(kv[0][1:])),
        ):
            sup = state.suppliers[int(str(key[0]))]
            stem = f"receipts_{b + 1:05d}_{key[1]:%Y%m%d}" if daily else "receipts"
            world["receipts"] += _write_exports(state, rows, "receipts", sup, "csv", b, stem)
    out: dict[str, pl.DataFrame] = {}
    for table, parts in world.items():
        if parts:
            out[table] = pl.concat(parts, how="vertical")
    return out | extra


def _write_group(
    state: WriterState, rows: pl.DataFrame, table: DocTable, sup: Supplier, fmt: str, b: int
) -> list[pl.DataFrame]:
    """Write one supplier's documents of one table and format for batch ``b``."""
    # originals first, in document order; copies (resends) go to a file named after the
    # original's file + "_resend", which sorts after it (a duplicate is "seen later")
    rows = rows.sort("doc", maintain_order=True)
    if table == "invoice_lines":
        originals = rows.filter(pl.col("copy_of") < 0)
        copies = rows.filter(pl.col("copy_of") >= 0)
    else:
        originals, copies = rows, rows.clear()
    doc_ids = originals["doc"].unique(maintain_order=True)
    daily = state.layout == "documents"
    if fmt == "x12":
        per_file = 1 if daily else state.config.x12_sets_per_file
        chunk = pl.Series(np.arange(len(doc_ids)) // per_file)
    elif fmt == "xml":
        chunk = pl.Series(np.arange(len(doc_ids)))
    elif daily:  # a daily export: the documents of one document date (chunk = YYYYMMDD)
        days = originals.group_by("doc", maintain_order=True).agg(pl.col(_DOC_DATE[table]).min())
        chunk = days[_DOC_DATE[table]].dt.strftime("%Y%m%d").cast(pl.Int64)
    else:  # exports: whole documents, at most export_rows_per_file rows per file
        sizes = originals.group_by("doc", maintain_order=True).len()["len"].to_numpy()
        chunk = pl.Series((np.cumsum(sizes) - sizes) // state.config.export_rows_per_file)
    chunks = pl.DataFrame({"doc": doc_ids, "_chunk": chunk.cast(pl.Int64)})
    originals = originals.join(chunks, on="doc", how="left", maintain_order="left")
    if copies.height:
        copies = copies.join(
            chunks.rename({"doc": "copy_of"}), on="copy_of", how="left", maintain_order="left"
        )
    out: list[pl.DataFrame] = []
    for resend, part in ((False, originals), (True, copies)):
        if part.height == 0:
            continue
        if fmt == "x12":  # every interchange of the group in one vectorised pass
            out.append(_write_x12(state, part, table, sup, b, resend))
        elif fmt == "xml":
            out.append(_write_xml(state, part, table, sup, b, resend))
        else:
            for (c,), file_rows in part.partition_by(
                ["_chunk"], as_dict=True, maintain_order=True
            ).items():
                stem = _stem(table, fmt, b, int(str(c)), resend, daily=daily)
                out += _write_exports(state, file_rows, table, sup, fmt, b, stem)
    return out


def _stem(table: str, fmt: str, b: int, chunk: int, resend: bool, *, daily: bool = False) -> str:
    prefix = _PREFIX.get((table, fmt), _SHORT[table])
    suffix = "_resend" if resend else ""
    if daily and fmt not in ("x12", "xml"):  # a daily export: chunk is its day, YYYYMMDD
        return f"{prefix}_{b + 1:05d}_{chunk}{suffix}"
    # one file per document: six digits, so that names sort in document order
    width = 6 if daily else 4 if fmt == "xml" else 2
    return f"{prefix}_{b + 1:05d}_{chunk + 1:0{width}d}{suffix}"


def _write_x12(
    state: WriterState, rows: pl.DataFrame, table: DocTable, sup: Supplier, b: int, resend: bool
) -> pl.DataFrame:
    direction = "out" if table == "po_lines" else "in"
    chunks = rows["_chunk"].unique(maintain_order=True).to_list()
    icn_start = state.icn.get((sup.index, direction), 0) + 1
    state.icn[(sup.index, direction)] = icn_start + len(chunks) - 1
    rendered = x12.render(rows, table=table, supplier=sup, icn_start=icn_start)
    rels = [
        f"feeds/{sup.supplier_id}/{table}/"
        f"{_stem(table, 'x12', b, int(c), resend, daily=state.layout == 'documents')}.x12"
        for c in chunks
    ]
    counts = rendered.provenance.group_by("_file", maintain_order=True).len()["len"].to_list()
    for rel, data, n in zip(rels, rendered.files, counts, strict=True):
        size, sha = write_file(state, rel, data)
        record_file(state, sup, table, "x12", rel, n, size, sha)
    prov = rendered.provenance.with_columns(
        source=pl.Series(rels, dtype=pl.String).gather(rendered.provenance["_file"])
    ).drop("_file")
    return _canonical(rows.drop([c for c in PROVENANCE if c in rows.columns]).hstack(prov), table)


def _write_xml(
    state: WriterState, rows: pl.DataFrame, table: DocTable, sup: Supplier, b: int, resend: bool
) -> pl.DataFrame:
    """One cXML document per file (``_chunk`` = document)."""
    # canonical columns once for the group, then one slice per document
    canonical = _canonical(
        rows.with_columns([pl.lit(None, d).alias(c) for c, d in PROVENANCE.items()]), table
    ).with_columns(rows["_chunk"])
    date_col = _DOC_DATE[table]
    out: list[pl.DataFrame] = []
    for (c,), doc in canonical.partition_by(
        ["_chunk"], as_dict=True, maintain_order=True, include_key=False
    ).items():
        stem = _stem(table, "xml", b, int(str(c)), resend, daily=state.layout == "documents")
        rel = f"feeds/{sup.supplier_id}/{table}/{stem}.xml"
        day: dt.date = doc[date_col].min()  # type: ignore[assignment]
        data = to_cxml(
            doc,
            table=table,
            payload_id=f"{state.seed}.{stem}.{sup.supplier_id}@synth.scfeeds",
            timestamp=f"{day.isoformat()}T12:00:00+00:00",
        )
        size, sha = write_file(state, rel, data)
        record_file(state, sup, table, "xml", rel, doc.height, size, sha)
        out.append(doc.with_columns(source=pl.lit(rel), position=cxml_positions(doc, table=table)))
    return pl.concat(out, how="vertical")


def _write_exports(
    state: WriterState,
    rows: pl.DataFrame,
    table: TableName,
    sup: Supplier,
    fmt: str,
    b: int,
    stem: str,
) -> list[pl.DataFrame]:
    out: list[pl.DataFrame] = []
    limit = state.config.export_rows_per_file
    for i, start in enumerate(range(0, rows.height, limit)):
        part = rows.slice(start, limit)
        name = stem if rows.height <= limit else f"{stem}_{i + 1:02d}"
        if table == "receipts" and stem == "receipts":
            name = f"receipts_{b + 1:05d}" + (f"_{i + 1:02d}" if rows.height > limit else "")
        rel = f"feeds/{sup.supplier_id}/{table}/{name}.{fmt}"
        canonical = _canonical(
            part.with_columns([pl.lit(None, d).alias(c) for c, d in PROVENANCE.items()]), table
        ).with_columns(
            source=pl.lit(rel),
            position=pl.format("row {}", pl.int_range(1, pl.len() + 1)),
        )
        path = state.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write_export(canonical, path, table=table, preset=sup.preset, fmt=fmt)  # type: ignore[arg-type]
        resent = state.layout == "documents" and stem.endswith("_resend")
        if fmt == "xlsx":
            _pin_xlsx_dates(path, part, later=resent)
        elif resent:
            _title_resent(path)
        data = path.read_bytes()
        record_file(
            state, sup, table, fmt, rel, part.height, len(data), hashlib.sha256(data).hexdigest()
        )
        out.append(canonical)
    return out


_ISO_STAMP: Final = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def _title_resent(path: Path) -> None:
    """A title line above the header of a resent daily export.

    A daily export resent alone can hold exactly the documents of the original's file: its
    bytes would be the original's, and an ingest that drops content it already holds would
    drop the duplicates the answer key expects. The portal stamps the resend instead.
    """
    data = path.read_bytes()
    bom = b"\xef\xbb\xbf" if data.startswith(b"\xef\xbb\xbf") else b""
    eol = b"\r\n" if b"\r\n" in data else b"\n"
    path.write_bytes(bom + b"Resent export" + eol + data[len(bom) :])


def _pin_xlsx_dates(path: Path, rows: pl.DataFrame, *, later: bool = False) -> None:
    """Replace the wall-clock creation date xlsxwriter stamps into docProps/core.xml.

    Same seed, same bytes: the date becomes the latest document date of the file, the day
    after it for a resent file (``later``). (xlsxwriter already pins the zip entries' own
    timestamps to 1980-01-01.)
    """
    date_col = next(c for c in rows.columns if c.endswith("_date"))
    day: dt.date = rows[date_col].max()  # type: ignore[assignment]
    stamp = ((day + dt.timedelta(days=int(later))).isoformat() + "T00:00:00Z").encode()
    with zipfile.ZipFile(path) as zin:
        entries = [(info, zin.read(info.filename)) for info in zin.infolist()]
    with zipfile.ZipFile(path, "w") as zout:
        for info, data in entries:
            if info.filename == "docProps/core.xml":
                data = _ISO_STAMP.sub(stamp, data)
            zout.writestr(info, data)
