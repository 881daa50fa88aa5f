"""Many cXML documents in one reader call: the same frames as one call per document, read
in the calling thread and typed together."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from scfeeds._cxml import _read as _xml
from scfeeds._cxml import read_xml, scan_xml


@pytest.fixture(scope="module")
def world(make_world: Callable[..., Path]) -> Path:
    return make_world(seed=9, suppliers=3, pos=40, formats=("xml",), damaged=True)


def _docs(world: Path, table: str) -> list[str]:
    return sorted(str(p) for p in (world / "feeds").glob(f"*/{table}/*.xml"))


def _one_by_one(files: list[str], table: Any) -> tuple[pl.DataFrame, pl.DataFrame]:
    parts = [read_xml(f, table=table, errors="collect") for f in files]
    return pl.concat([p.rows for p in parts]), pl.concat([p.errors for p in parts])


@pytest.mark.parametrize("table", ["po_lines", "asn_lines", "invoice_lines"])
def test_many_documents_equal_one_call_per_document(world: Path, table: Any) -> None:
    files = _docs(world, table)
    assert len(files) > 10
    many = read_xml(files, table=table, errors="collect")
    rows, errors = _one_by_one(files, table)
    assert_frame_equal(many.rows, rows)
    assert_frame_equal(many.errors, errors)
    assert_frame_equal(scan_xml(files, table=table).collect(), rows)
    assert many.rows["source"].n_unique() == len(files)


def _damage(tmp: Path, good: str, kind: str) -> str:
    text = Path(good).read_text(encoding="utf-8")
    out = tmp / f"{kind}_{Path(good).name}"
    if kind == "cut":
        text = text[: int(len(text) * 0.7)]
    elif kind == "number":
        text = text.replace('quantity="', 'quantity="x', 1)
    elif kind == "html":
        text = "<html><body>not cXML</body></html>"
    out.write_text(text, encoding="utf-8")
    return str(out)


def test_damaged_documents_in_the_middle_report_their_own_rows(world: Path, tmp_path: Path) -> None:
    files = _docs(world, "invoice_lines")[:12]
    damaged = [_damage(tmp_path, files[3], k) for k in ("cut", "number", "html")]
    asn = _docs(world, "asn_lines")[0]  # a ship notice among invoices
    mixed = [*files[:4], damaged[0], *files[4:7], damaged[1], asn, *files[7:], damaged[2]]
    many = read_xml(mixed, table="invoice_lines", errors="collect")
    rows, errors = _one_by_one(mixed, "invoice_lines")
    assert_frame_equal(many.rows, rows)
    assert_frame_equal(many.errors, errors)
    by_source = dict(many.errors.group_by("source").agg(pl.col("rule").unique()).iter_rows())
    assert set(by_source) == {*damaged, asn}
    assert by_source[damaged[0]] == ["XML_SYNTAX"]
    assert by_source[damaged[1]] == ["BAD_NUMBER"]
    assert by_source[damaged[2]] == ["XML_NOT_CXML"]
    assert by_source[asn] == ["XML_WRONG_DOCUMENT"]
    bad_item = many.errors.filter(pl.col("rule") == "BAD_NUMBER").row(0, named=True)
    assert bad_item["position"].startswith("/cXML/Request/InvoiceDetailRequest/")
    # every intact document delivers all its rows
    for f in files:
        assert (
            many.rows.filter(pl.col("source") == f).height
            == rows.filter(pl.col("source") == f).height
        )
        assert many.rows.filter(pl.col("source") == f).height > 0


def test_small_documents_parse_without_a_thread_each(
    world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = _docs(world, "po_lines")
    random.Random(2).shuffle(files)
    started: list[str] = []
    real_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        started.append(self.name)
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    read_xml(files, table="po_lines", errors="collect")
    read_xml(files[0], table="po_lines", errors="collect")
    assert [n for n in started if n.startswith("scfeeds-xml")] == []


def test_many_small_documents_are_typed_in_one_query(
    world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = _docs(world, "asn_lines")
    calls = [0]
    real: Callable[..., Any] = _xml._typed_rows

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(_xml, "_typed_rows", counted)
    rows = read_xml(files, table="asn_lines", errors="collect").rows
    assert rows["source"].n_unique() == len(files)
    assert calls[0] == 1


def test_a_credit_memo_typed_with_other_documents_keeps_its_sign(tmp_path: Path) -> None:
    # The purpose is a per-document value: typed together, each document keeps its own.
    text = (
        '<?xml version="1.0"?>\n<cXML payloadID="p" timestamp="t"><Header/><Request>'
        '<InvoiceDetailRequest><InvoiceDetailRequestHeader invoiceID="{id}" purpose="{purpose}" '
        'invoiceDate="2026-02-01T00:00:00+00:00"/><InvoiceDetailOrder><InvoiceDetailOrderInfo>'
        '<OrderReference orderID="P1"/></InvoiceDetailOrderInfo>'
        '<InvoiceDetailItem invoiceLineNumber="1" quantity="3"><UnitOfMeasure>EA</UnitOfMeasure>'
        '<UnitPrice><Money currency="USD">2.00</Money></UnitPrice>'
        '<InvoiceDetailItemReference lineNumber="1"><ItemID><SupplierPartID>A</SupplierPartID>'
        "</ItemID></InvoiceDetailItemReference>"
        '<SubtotalAmount><Money currency="USD">{amount}</Money></SubtotalAmount>'
        "</InvoiceDetailItem></InvoiceDetailOrder></InvoiceDetailRequest></Request></cXML>"
    )
    files = []
    for i, (purpose, amount) in enumerate(
        [("standard", "6.00"), ("creditMemo", "-6.00"), ("standard", "6.00")]
    ):
        path = tmp_path / f"inv{i}.xml"
        path.write_text(text.format(id=f"I{i}", purpose=purpose, amount=amount))
        files.append(str(path))
    together = read_xml(files, table="invoice_lines")
    assert together["qty_invoiced"].cast(pl.Float64).to_list() == [3.0, -3.0, 3.0]
    assert together["line_amount"].cast(pl.Float64).to_list() == [6.0, -6.0, 6.0]
    assert_frame_equal(together, _one_by_one(files, "invoice_lines")[0])
