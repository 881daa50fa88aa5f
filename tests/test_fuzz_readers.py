"""Every reader on mutated real documents: no crash, no hang, every failure a row.

Seeds: the real public X12 files (``../shared/x12-corpus`` beside the repository, or
``SCFEEDS_X12_CORPUS``) and small cXML, CSV and XLSX documents made here with
:mod:`scfeeds.synth`. Mutations: byte flips, truncations, insertions and delimiter swaps (for
XLSX both on the archive bytes and on the worksheet XML inside a well-formed archive).

Each reader runs twice: directly (``read_x12``, ``read_xml``, ``read_export`` with
``errors="collect"``), where no exception may escape, and through ``parse_file``, the boundary
ingest uses, where every error row must name the file and a position. Time is bounded by
hypothesis' deadline per example and ``max_examples`` per reader (``SCFEEDS_FUZZ_EXAMPLES``
scales it for longer local runs).
"""

from __future__ import annotations

import io
import itertools
import os
import zipfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scfeeds._cxml import read_xml
from scfeeds._exports import read_export
from scfeeds._parse import Format, parse_file
from scfeeds._x12 import read_x12
from scfeeds.schemas import ERRORS, TableName, schema

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("SCFEEDS_X12_CORPUS", ROOT.parent / "shared" / "x12-corpus"))
EXAMPLES = int(os.environ.get("SCFEEDS_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=5),  # a hang (or a quadratic blow-up) fails the example
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
pytestmark = pytest.mark.timeout(240)

DELIMITERS = b'*~>:|^,;\t"<>/=\n\r\x00'
_names = itertools.count()


def mutate(data: bytes, ops: list[tuple[str, int, bytes]]) -> bytes:
    out = bytearray(data)
    for op, at, blob in ops:
        i = at % (len(out) + 1)
        if op == "flip" and out:
            out[i % len(out)] ^= blob[0] or 0x20
        elif op == "truncate":
            del out[i:]
        elif op == "insert":
            out[i:i] = blob
        elif op == "swap" and len(blob) >= 2:
            out = bytearray(bytes(out).replace(blob[:1], blob[1:2]))
    return bytes(out)


OPS = st.lists(
    st.tuples(
        st.sampled_from(["flip", "truncate", "insert", "swap"]),
        st.integers(min_value=0, max_value=1 << 20),
        st.one_of(
            st.binary(min_size=1, max_size=16),
            st.lists(st.sampled_from(list(DELIMITERS)), min_size=2, max_size=2).map(bytes),
        ),
    ),
    min_size=1,
    max_size=4,
)


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def world(make_world: Callable[..., Path]) -> Path:
    return make_world(seed=17, suppliers=1, pos=4, formats=("csv", "xlsx", "xml"))


def seeds(world: Path, fmt: str) -> list[tuple[TableName, bytes]]:
    catalog = pl.read_parquet(world / "catalog.parquet").filter(pl.col("format") == fmt)
    picked = catalog.sort("bytes").unique("table", keep="first", maintain_order=True)
    return [(t, (world / p).read_bytes()) for t, p in picked.select("table", "path").rows()]


def write(out_dir: Path, data: bytes, suffix: str) -> Path:
    path = out_dir / f"doc{next(_names):05d}{suffix}"
    path.write_bytes(data)
    return path


def assert_rows_and_errors(path: Path, rows: pl.DataFrame | None, errors: pl.DataFrame) -> None:
    """Errors name this file and a position; delivered rows are canonical and from it."""
    assert errors.columns[:4] == list(ERRORS)[:4] or set(ERRORS) <= set(errors.columns)
    assert errors["source"].to_list() == [str(path)] * errors.height
    assert errors["position"].null_count() == 0, errors
    assert (errors["position"].str.len_chars() > 0).all()
    if rows is not None and rows.height:
        assert rows["source"].unique().to_list() == [str(path)]


def assert_parse_file(path: Path, fmt: Format, table: TableName | None) -> None:
    parsed = parse_file(path, fmt=fmt, table=table)
    assert parsed.errors.schema == pl.Schema(ERRORS)
    assert_rows_and_errors(path, None, parsed.errors)
    assert parsed.errors["rule"].null_count() == 0
    for t, frame in parsed.tables.items():
        assert frame.schema == schema(t)
        assert frame.height == 0 or frame["source"].unique().to_list() == [str(path)]


# -- X12 ----------------------------------------------------------------------------------


def corpus() -> list[bytes]:
    if not CORPUS.is_dir():
        return []
    return [p.read_bytes() for p in sorted(CORPUS.iterdir()) if p.suffix in (".edi", ".x12")]


X12_SEEDS = corpus()


@pytest.mark.skipif(not X12_SEEDS, reason=f"real X12 corpus not found at {CORPUS}")
@FUZZ
@given(seed=st.sampled_from(range(max(1, len(X12_SEEDS)))), ops=OPS)
def test_x12_reader_on_mutated_corpus_files(
    out_dir: Path, seed: int, ops: list[tuple[str, int, bytes]]
) -> None:
    path = write(out_dir, mutate(X12_SEEDS[seed], ops), ".x12")
    result = read_x12(path)  # "damaged input never raises"
    errors = result.errors.with_columns(pl.col("position").fill_null("file"))
    assert errors["source"].to_list() == [str(path)] * errors.height
    for t in ("po_lines", "asn_lines", "invoice_lines"):
        frame: pl.DataFrame = getattr(result, t)
        assert frame.schema == schema(t)  # type: ignore[arg-type]
    assert_parse_file(path, "x12", None)


# -- cXML -----------------------------------------------------------------------------------


@FUZZ
@given(data=st.data(), ops=OPS)
def test_cxml_reader_on_mutated_documents(
    world: Path, out_dir: Path, data: st.DataObject, ops: list[tuple[str, int, bytes]]
) -> None:
    table, doc = data.draw(st.sampled_from(seeds(world, "xml")))
    path = write(out_dir, mutate(doc, ops), ".xml")
    rows, errors = read_xml(path, table=table, errors="collect")
    assert rows.schema == schema(table)
    assert_rows_and_errors(path, rows, errors)
    assert_parse_file(path, "xml", table)


# -- CSV and XLSX exports ----------------------------------------------------------------------


@FUZZ
@given(data=st.data(), ops=OPS)
def test_csv_export_reader_on_mutated_exports(
    world: Path, out_dir: Path, data: st.DataObject, ops: list[tuple[str, int, bytes]]
) -> None:
    table, doc = data.draw(st.sampled_from(seeds(world, "csv")))
    path = write(out_dir, mutate(doc, ops), ".csv")
    rows, errors = read_export(path, table=table, errors="collect")
    assert rows.schema == schema(table)
    assert_rows_and_errors(path, rows, errors)
    assert_parse_file(path, "csv", table)


def rezip(archive: bytes, mutate_member: Callable[[str, bytes], bytes]) -> bytes:
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(archive)) as src,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst,
    ):
        for info in src.infolist():
            dst.writestr(info.filename, mutate_member(info.filename, src.read(info)))
    return out.getvalue()


@FUZZ
@given(
    data=st.data(),
    ops=OPS,
    inside=st.sampled_from(["", "xl/worksheets/sheet1.xml", "xl/sharedStrings.xml"]),
)
def test_xlsx_export_reader_on_mutated_workbooks(
    world: Path,
    out_dir: Path,
    data: st.DataObject,
    ops: list[tuple[str, int, bytes]],
    inside: str,
) -> None:
    table, doc = data.draw(st.sampled_from(seeds(world, "xlsx")))
    if inside:  # a well-formed archive around a damaged part: reaches calamine itself
        doc = rezip(doc, lambda name, body: mutate(body, ops) if name == inside else body)
    else:
        doc = mutate(doc, ops)
    path = write(out_dir, doc, ".xlsx")
    rows, errors = read_export(path, table=table, errors="collect")
    assert rows.schema == schema(table)
    assert_rows_and_errors(path, rows, errors)
    assert_parse_file(path, "xlsx", table)


# -- found by the fuzz: each a tiny named case ---------------------------------------------------


def test_cxml_declaring_an_unknown_encoding_is_an_xml_syntax_row(tmp_path: Path) -> None:
    # pyexpat raises LookupError (not ExpatError) for encoding="UTF.8"
    path = tmp_path / "unknown_encoding.xml"
    path.write_bytes(
        b'<?xml version="1.0" encoding="UTF.8"?>\n<cXML><Request><OrderRequest/></Request></cXML>'
    )
    rows, errors = read_xml(path, table="po_lines", errors="collect")
    assert rows.height == 0
    assert errors.select("source", "rule").rows() == [(str(path), "XML_SYNTAX")]
    assert "UTF.8" in errors["message"][0]
    assert_parse_file(path, "xml", "po_lines")
