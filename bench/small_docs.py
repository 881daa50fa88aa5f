"""Many small documents: one reader call for all of them vs one call per document vs a naive loop.

Run: ``.venv/bin/python bench/small_docs.py`` (``--docs 2000`` by default; ``--quick`` for a
smoke run). Supplier traffic is mostly small documents: one X12 interchange (1-4 KB), one cXML
document, one small CSV export per file. ``scfeeds.synth`` writes such a world (one set per
interchange, a few rows per CSV); the first ``--docs`` documents of its catalogue, X12 850 /
856 / 810, cXML and CSV mixed, are read three ways in the same run:

- ``parse_batch``: every document in one call (X12 in one pass, cXML typed together);
- one ``parse_file`` call per document (the per-document cost the batch removes);
- a naive loop that checks nothing: split X12 on its delimiters and collect the PO1 / IT1 /
  SN1 rows, walk cXML with ElementTree, read CSV with the csv module.

It prints documents/s and line items/s per format and for the mix, each way's speed as a
multiple of the per-document calls' and of the naive loop's, and (when the shared X12 corpus
is found) the time of one ``read_x12`` call per small corpus file.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this folder would come first on sys.path: import from the project root.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

CORPUS = Path(os.environ.get("SCFEEDS_X12_CORPUS", ROOT.parent / "shared" / "x12-corpus"))
CORPUS_FILES = ("850_13.edi", "850_9.edi", "810_1.edi", "856_1.edi")
_ITEMS = {"ItemOut", "ShipNoticeItem", "InvoiceDetailItem"}


def _world(dest: Path, docs: int) -> list[tuple[Path, str, str]]:
    """(path, table, format) of ``docs`` small documents, formats interleaved."""
    import polars as pl

    from scfeeds import synth
    from scfeeds._synth.config import SynthConfig

    cfg = SynthConfig(x12_sets_per_file=1, export_rows_per_file=8, xml_max_files=1_000_000)
    synth.generate(
        dest,
        seed=15,
        suppliers=6,
        pos=max(10, docs // 3),
        formats=("x12", "xml", "csv"),
        faults="none",
        config=cfg,
    )
    cat = (
        pl.read_parquet(dest / "catalog.parquet")
        .filter(pl.col("table") != "receipts")
        .sort("path")
        .with_columns(pl.int_range(pl.len()).shuffle(seed=1).alias("_r"))
        .sort("_r")
        .head(docs)
    )
    return [(dest / p, t, f) for p, t, f in cat.select("path", "table", "format").iter_rows()]


def _naive_x12(data: bytes) -> int:
    text = data.decode("latin-1")
    e, t = text[3], text[105]
    rows = []
    for seg in text.split(t):
        el = seg.strip().split(e)
        if el[0] in ("PO1", "IT1", "SN1"):
            rows.append(tuple(el[1:5]))
    return len(rows)


def _naive_xml(path: Path) -> int:
    rows = []
    for el in ET.parse(path).iter():
        if el.tag in _ITEMS:
            rows.append(dict(el.attrib))
    return len(rows)


def _naive_csv(path: Path) -> int:
    with open(path, newline="", encoding="latin-1") as fh:  # presets use several encodings
        return sum(1 for _ in csv.reader(fh)) - 1


def naive(docs: list[tuple[Path, str, str]]) -> int:
    n = 0
    for path, _, fmt in docs:
        if fmt == "x12":
            n += _naive_x12(path.read_bytes())
        elif fmt == "xml":
            n += _naive_xml(path)
        else:
            n += _naive_csv(path)
    return n


def batch(docs: list[tuple[Path, str, str]]) -> int:
    from scfeeds._parse import Job, parse_batch

    tables, errors = parse_batch([Job(p, table=t) for p, t, _ in docs])  # type: ignore[arg-type]
    assert errors.height == 0, errors
    return sum(f.height for f in tables.values())


def one_by_one(docs: list[tuple[Path, str, str]]) -> int:
    from scfeeds._parse import parse_file

    n = 0
    for p, t, _ in docs:
        got = parse_file(p, table=t)  # type: ignore[arg-type]
        n += sum(f.height for f in got.tables.values())
    return n


def _best(fn: Callable[[], int], repeat: int) -> tuple[float, int]:
    best, items = float("inf"), 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        items = fn()
        best = min(best, time.perf_counter() - t0)
    return best, items


def _corpus(repeat: int) -> None:
    from scfeeds import read_x12

    if not all((CORPUS / f).is_file() for f in CORPUS_FILES):
        print(f"(X12 corpus not found at {CORPUS}: per-file read_x12 skipped)")
        return
    print("\none read_x12 call per small corpus file (best of runs of 5 calls):")
    for name in CORPUS_FILES:
        path = CORPUS / name
        read_x12(path)

        def five(p: Path = path) -> int:
            for _ in range(5):
                read_x12(p)
            return 0

        secs, _ = _best(five, repeat)
        print(f"  {name:12s} {path.stat().st_size:6d} B  {secs / 5 * 1000:6.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--docs", type=int, default=2_000, help="documents to read")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    ap.add_argument("--quick", action="store_true", help="200 documents, one run")
    args = ap.parse_args()
    if args.quick:
        args.docs, args.repeat = 200, 1
    with tempfile.TemporaryDirectory(prefix="scfeeds-bench-small-") as tmp:
        t0 = time.perf_counter()
        docs = _world(Path(tmp) / "world", args.docs)
        sizes = [p.stat().st_size for p, _, _ in docs]
        print(
            f"synth: {len(docs)} documents ({sum(sizes) / 1e6:.1f} MB, "
            f"{min(sizes)}-{max(sizes)} B) in {time.perf_counter() - t0:.1f} s"
        )
        batch(docs[:50])  # warm imports and pools (every mode pays them once)
        groups: dict[str, list[tuple[Path, str, str]]] = {"mix": docs}
        for fmt in ("x12", "xml", "csv"):
            groups[fmt] = [d for d in docs if d[2] == fmt]
        head = f"{'documents':10s} {'n':>5s} {'how':12s} {'docs/s':>9s} {'items/s':>10s}"
        print(f"\n{head} {'vs per-doc':>10s} {'vs naive':>8s}  (speed ratios)")
        for label, group in groups.items():
            if not group:
                continue
            res: dict[str, tuple[float, int]] = {}
            for how, fn in (("batch", batch), ("per-doc", one_by_one), ("naive", naive)):
                res[how] = _best(lambda f=fn, g=group: f(g), args.repeat)  # type: ignore[misc]
            for how, (secs, items) in res.items():
                ratio_doc = res["per-doc"][0] / secs
                ratio_naive = res["naive"][0] / secs
                print(
                    f"{label:10s} {len(group):5d} {how:12s} {len(group) / secs:9.0f} "
                    f"{items / secs:10.0f} {ratio_doc:10.2f} {ratio_naive:8.2f}"
                )
        _corpus(args.repeat)


if __name__ == "__main__":
    main()
