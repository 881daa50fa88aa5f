"""Small cXML documents are read through the C parser's tree: the same rows and error rows as
the guarded streaming reader, which still reads every document the fast path declines."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from scfeeds import synth
from scfeeds._cxml import _read as _xml

TABLES = ("po_lines", "asn_lines", "invoice_lines")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("world")
    synth.generate(dest, seed=3, pos=30, suppliers=3, formats=("xml",), layout="documents")
    return dest


def files_of(world: Path, table: str) -> list[tuple[Path, str, str | None]]:
    cat = pl.read_parquet(world / "catalog.parquet")
    rows = cat.filter((pl.col("format") == "xml") & (pl.col("table") == table))
    return [(world / p, p, _xml._sniff(world / p)) for p in rows["path"]]


@pytest.mark.parametrize("table", TABLES)
def test_the_tree_path_equals_the_streaming_reader(
    world: Path, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = files_of(world, table)
    assert files
    streamed: list[Path] = []
    real = _xml._run_parse

    def spy(path: Path, *args: object, **kw: object) -> None:
        streamed.append(path)
        real(path, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(_xml, "_run_parse", spy)
    fast_rows, fast_errors = _xml.read_many(files, table)  # type: ignore[arg-type]
    assert streamed == []  # every document of the world took the tree path
    assert fast_rows.height > 0
    monkeypatch.setattr(_xml, "_tree_of", lambda data: None)
    slow_rows, slow_errors = _xml.read_many(files, table)  # type: ignore[arg-type]
    assert len(streamed) == len(files)
    assert_frame_equal(fast_rows, slow_rows)
    assert_frame_equal(fast_errors, slow_errors)


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        (
            lambda t: re.sub(r"<!DOCTYPE[^>]*>", "", t).replace(
                "<cXML", '<!DOCTYPE cXML [<!ENTITY x "boom">]>\n<cXML', 1
            ),
            "XML_ENTITY",
        ),
        (lambda t: t[: len(t) * 2 // 3], "XML_SYNTAX"),
    ],
)
def test_declined_documents_go_through_the_guarded_reader(
    world: Path, tmp_path: Path, change: object, rule: str
) -> None:
    path, _, request = files_of(world, "po_lines")[0]
    text = path.read_text(encoding="utf-8")
    bad = tmp_path / "bad.xml"
    bad.write_text(change(text), encoding="utf-8")  # type: ignore[operator]
    assert _xml._tree_of(bad.read_bytes()) is None
    rows, errors = _xml.read_many([(bad, "bad.xml", request)], "po_lines")
    assert errors["rule"].to_list() == [rule]
    if rule == "XML_SYNTAX":  # the items before the break are delivered
        assert rows.height > 0


def test_a_namespaced_document_keeps_its_prefixes_as_written(tmp_path: Path, world: Path) -> None:
    path, _, request = files_of(world, "po_lines")[0]
    text = path.read_text(encoding="utf-8").replace("<cXML", '<cXML xmlns:x="urn:x"', 1)
    doc = tmp_path / "ns.xml"
    doc.write_text(text, encoding="utf-8")
    assert _xml._tree_of(doc.read_bytes()) is None  # the streaming reader's names, not {urn}
    plain_rows, _ = _xml.read_many([(path, "a", request)], "po_lines")
    ns_rows, _ = _xml.read_many([(doc, "a", request)], "po_lines")
    assert_frame_equal(plain_rows, ns_rows)


def test_text_rows_turned_into_frames_in_chunks_give_the_same_rows(
    world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = files_of(world, "invoice_lines")
    whole_rows, whole_errors = _xml.read_many(files, "invoice_lines")  # type: ignore[arg-type]
    made: list[int] = []
    real = _xml._text_frame

    def spy(texts: dict[str, list[str | None]], owner: list[int]) -> pl.DataFrame:
        made.append(len(owner))
        return real(texts, owner)

    monkeypatch.setattr(_xml, "_TEXT_CHUNK", 7)
    monkeypatch.setattr(_xml, "_text_frame", spy)
    rows, errors = _xml.read_many(files, "invoice_lines")  # type: ignore[arg-type]
    assert len(made) > 2  # several chunks, none much above the bound
    assert max(made) < 7 + 60
    assert_frame_equal(rows, whole_rows)
    assert_frame_equal(errors, whole_errors)


@pytest.mark.parametrize(
    ("encoding", "rule"),
    # expat reads no UTF-32: the document is refused as unreadable before any entity is seen
    [("utf-8", "XML_ENTITY"), ("utf-16", "XML_ENTITY"), ("utf-16-le", "XML_ENTITY"),
     ("utf-32", "XML_SYNTAX")],
)  # fmt: skip
def test_an_entity_declaration_is_refused_in_any_encoding(
    tmp_path: Path, encoding: str, rule: str
) -> None:
    declared = encoding.upper().removesuffix("-LE")
    text = (
        f'<?xml version="1.0" encoding="{declared}"?>\n'
        '<!DOCTYPE cXML [<!ENTITY sup "ACME">]>'
        '<cXML><Request><OrderRequest><OrderRequestHeader orderID="PO-1" orderDate="2024-01-02">'
        "<Comments>&sup;</Comments></OrderRequestHeader>"
        '<ItemOut quantity="1" lineNumber="1"><ItemID><SupplierPartID>A</SupplierPartID></ItemID>'
        "</ItemOut></OrderRequest></Request></cXML>"
    )
    bad = tmp_path / "entity.xml"
    bad.write_bytes(text.encode(encoding))
    assert _xml._tree_of(bad.read_bytes()) is None
    rows, errors = _xml.read_many([(bad, "entity.xml", "OrderRequest")], "po_lines")
    assert rows.height == 0
    assert errors["rule"].to_list() == [rule]
