"""Damaged copies of good feed files, each with the one error a correct reader reports.

The damage is applied to the bytes of a file the world already describes, so the rows a
reader must still deliver (``good_records``) follow from ``world/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from scfeeds._presets import PRESETS
from scfeeds._synth.config import DAMAGE_KINDS, Supplier
from scfeeds._synth.store import DAMAGED_SCHEMA, load_world
from scfeeds.exceptions import ConfigurationError


def _segments(data: bytes) -> tuple[list[tuple[int, int]], str]:
    """(start, end) byte spans of each segment (terminator excluded) and the element separator.

    Delimiters come from the ISA itself (X12.5): element separator at byte 3, segment
    terminator at byte 105; whitespace after a terminator (line breaks) is not data.
    """
    sep = chr(data[3])
    term = data[105:106]
    spans: list[tuple[int, int]] = []
    pos = 0
    while pos < len(data):
        end = data.find(term, pos)
        if end < 0:
            end = len(data)
        spans.append((pos, end))
        pos = end + 1
        while (
            pos < len(data) and data[pos : pos + 1] in (b"\r", b"\n") and term not in (b"\r", b"\n")
        ):
            pos += 1
    return spans, sep


def _rows_per_set(root: Path, rel: str, table: str) -> pl.DataFrame:
    return (
        load_world(root, table)  # type: ignore[arg-type]
        .filter(pl.col("source") == rel)
        .group_by("group_control", "set_control", maintain_order=True)
        .len()
        .collect()
    )


def _x12(root: Path, rel: str, table: str, kind: str) -> tuple[bytes, str, int] | None:
    data = (root / rel).read_bytes()
    spans, sep = _segments(data)
    ids = [data[a:b].split(sep.encode(), 1)[0].decode() for a, b in spans]
    sets = _rows_per_set(root, rel, table)
    total = int(sets["len"].sum())
    st = [i for i, s in enumerate(ids) if s == "ST"]
    if kind == "x12_bad_se_count":
        # SE01 of the first set one too high: that set is rejected, the others delivered
        se = ids.index("SE")
        new = _bump(data, spans[se], sep, 1)
        return new, f"segment {se + 1}", total - int(sets["len"][0])
    if kind == "x12_bad_ge_control":
        # GE02 differs from GS06: a group envelope error, the intact sets are still delivered
        ge = ids.index("GE")
        return _bump(data, spans[ge], sep, 2), f"segment {ge + 1}", total
    if kind == "x12_truncated":
        if len(st) < 2:
            return None
        # cut in the middle of the first segment after the second set's ST
        cut = st[1] + 2
        a, b = spans[cut]
        return data[: a + max((b - a) // 2, 4)], f"segment {cut + 1}", int(sets["len"][0])
    raise ConfigurationError(
        f"unknown X12 damage kind {kind!r}; expected one of "
        f"{', '.join(k for k in DAMAGE_KINDS if k.startswith('x12_'))}"
    )


def _bump(data: bytes, span: tuple[int, int], sep: str, element: int) -> bytes:
    """``data`` with the numeric ``element`` of the segment at ``span`` one higher."""
    a, b = span
    elems = data[a:b].decode().split(sep)
    elems[element] = str(int(elems[element]) + 1)
    return data[:a] + sep.join(elems).encode() + data[b:]


def make_damaged(
    root: Path,
    catalog: pl.DataFrame,
    kinds: Sequence[str],
    suppliers: Sequence[Supplier],
    *,
    strict: bool,
) -> pl.DataFrame:
    """Write one damaged file per kind in ``kinds`` under ``root/damaged``; their rows."""
    rows: list[dict[str, object]] = []
    for kind in kinds:
        made = _make_one(root, catalog, kind, suppliers)
        if made is None:
            if strict:
                raise ConfigurationError(
                    f"cannot make a {kind} damaged file: the world has no suitable feed file "
                    "(add the format, or more POs)"
                )
            continue
        rows.append(made)
    return (
        pl.DataFrame(rows, schema=DAMAGED_SCHEMA, orient="row")
        if rows
        else pl.DataFrame(schema=DAMAGED_SCHEMA)
    )


def _make_one(
    root: Path, catalog: pl.DataFrame, kind: str, suppliers: Sequence[Supplier]
) -> dict[str, object] | None:
    fmt = kind.split("_", 1)[0]
    # the largest document feed of the format (receipts CSVs only when there is no other CSV)
    candidates = catalog.filter(pl.col("format") == fmt).sort(
        pl.col("table") == "receipts", "records", "path", descending=[False, True, False]
    )
    if candidates.height == 0:
        return None
    pick = candidates.row(0, named=True)
    rel: str = pick["path"]
    table: str = pick["table"]
    name = rel.rsplit("/", 1)[-1]
    out_rel = f"damaged/{kind}_{pick['supplier_id']}_{name}"
    result: tuple[bytes, str | None, int] | None
    if fmt == "x12":
        result = _x12(root, rel, table, kind)
    elif fmt == "xml":
        result = _xml(root / rel)
    else:
        sup = next(s for s in suppliers if s.supplier_id == pick["supplier_id"])
        result = _csv(root / rel, table, sup)
    if result is None:
        return None
    data, position, good = result
    target = root / out_rel
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return {
        "path": out_rel,
        "format": fmt,
        "table": table,
        "rule": DAMAGE_KINDS[kind],
        "position": position,
        "good_records": good,
        "source": rel,
        "kind": kind,
    }


def _xml(path: Path) -> tuple[bytes, str | None, int]:
    # A closing tag that does not match its opening tag: a well-formedness error (XML 1.0,
    # "Element Type Match"). position is the XPath of the element left unclosed.
    data = path.read_bytes()
    at = data.index(b"</Header>")
    return data[:at] + b"</Headr>" + data[at + len(b"</Header>") :], "/cXML/Header", 0


def _csv(path: Path, table: str, sup: Supplier) -> tuple[bytes, str | None, int]:
    # the portal renamed a required column: the reader finds no column for po_number
    preset = PRESETS[sup.preset]
    header = preset.header(table)  # type: ignore[arg-type]
    data = path.read_bytes()
    nl = data.index(b"\n")
    old = header["po_number"].encode(preset.encoding.replace("-sig", ""))
    line = data[:nl].replace(old, b"Order Ref", 1)
    return line + data[nl:], "header", 0
