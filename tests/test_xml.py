"""cXML: writer structure, streaming reader, damage and security."""

from __future__ import annotations

import datetime as dt
import tracemalloc
import xml.etree.ElementTree as ET
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from scfeeds._cxml import XMLWarning, cxml_positions, read_xml, scan_xml, to_cxml
from scfeeds.exceptions import ConfigurationError, XMLError
from scfeeds.schemas import TableName, empty, schema


def _frame(table: TableName, data: dict[str, list[object]]) -> pl.DataFrame:
    frame = pl.concat([empty(table), pl.DataFrame(data)], how="diagonal_relaxed")
    return frame.cast(dict(schema(table)))  # type: ignore[arg-type]


def _asn() -> pl.DataFrame:
    n = 3
    return _frame(
        "asn_lines",
        {
            "supplier_id": ["SUP002"] * n,
            "shipment_id": ["SH-9"] * n,
            "ship_date": [dt.date(2026, 2, 1)] * n,
            "po_number": ["P1", "P2", "P1"],
            "line_number": ["1", "1", None],
            "item_id": ["A", "B", "C"],
            "qty_shipped": [Decimal("5"), Decimal("2.5"), Decimal("1")],
            "uom": ["EA", "CS", "EA"],
            "pack_id": ["00012345678900001", None, "00012345678900002"],
            "carrier": ["UPSN"] * n,
            "tracking": ["1Z999"] * n,
        },
    )


def test_ship_notice_has_one_portion_per_po_and_positions_match() -> None:
    asn = _asn()
    root = ET.fromstring(to_cxml(asn, table="asn_lines", payload_id="p1", timestamp="t"))
    assert root.findtext("Header/From/Credential/Identity") == "SUP002"
    req = root.find("Request/ShipNoticeRequest")
    assert req is not None
    assert req.find("ShipNoticeHeader").get("shipmentID") == "SH-9"  # type: ignore[union-attr]
    assert req.findtext("ShipControl/CarrierIdentifier") == "UPSN"
    assert req.findtext("ShipControl/ShipmentIdentifier") == "1Z999"
    portions = req.findall("ShipNoticePortion")
    assert [p.find("OrderReference").get("orderID") for p in portions] == ["P1", "P2"]  # type: ignore[union-attr]
    first = portions[0].findall("ShipNoticeItem")
    assert [i.get("lineNumber") for i in first] == ["1", None]  # null line number: no attribute
    assert first[0].findtext("Packaging/ShippingContainerSerialCode") == "00012345678900001"
    assert cxml_positions(asn, table="asn_lines").to_list() == [
        "/cXML/Request/ShipNoticeRequest/ShipNoticePortion[1]/ShipNoticeItem[1]",
        "/cXML/Request/ShipNoticeRequest/ShipNoticePortion[2]/ShipNoticeItem[1]",
        "/cXML/Request/ShipNoticeRequest/ShipNoticePortion[1]/ShipNoticeItem[2]",
    ]


def test_order_request_carries_supplier_in_to_and_exact_decimals() -> None:
    po = _frame(
        "po_lines",
        {
            "supplier_id": ["SUP001"],
            "po_number": ["4500001"],
            "po_date": [dt.date(2026, 1, 15)],
            "line_number": ["10"],
            "item_id": ["SKU<&>"],
            "description": ["Widget"],
            "qty_ordered": [Decimal("1234567.125")],
            "uom": ["EA"],
            "unit_price": [Decimal("0.0001")],
            "currency": ["USD"],
        },
    )
    root = ET.fromstring(to_cxml(po, table="po_lines", payload_id="p", timestamp="t"))
    assert root.findtext("Header/To/Credential/Identity") == "SUP001"
    item = root.find("Request/OrderRequest/ItemOut")
    assert item is not None
    assert item.get("quantity") == "1234567.125"
    assert item.findtext("ItemID/SupplierPartID") == "SKU<&>"
    money = item.find("ItemDetail/UnitPrice/Money")
    assert money is not None
    assert (money.text, money.get("currency")) == ("0.0001", "USD")


def test_to_cxml_refuses_a_frame_holding_two_documents() -> None:
    asn = _asn().with_columns(shipment_id=pl.Series(["SH-1", "SH-2", "SH-1"]))
    with pytest.raises(ConfigurationError, match="shipment_id"):
        to_cxml(asn, table="asn_lines", payload_id="p", timestamp="t")
    with pytest.raises(ConfigurationError, match="receipts"):
        to_cxml(empty("receipts"), table="receipts", payload_id="p", timestamp="t")


# -- reading ------------------------------------------------------------------------------------


def _po(n: int = 3, po: str = "4500001") -> pl.DataFrame:
    return _frame(
        "po_lines",
        {
            "supplier_id": ["SUP001"] * n,
            "po_number": [po] * n,
            "po_date": [dt.date(2026, 1, 15)] * n,
            "line_number": [str(i + 1) for i in range(n)],
            "item_id": [f"SKU-{i}" for i in range(n)],
            "description": [f"Widget <{i}> & co" if i % 2 else None for i in range(n)],
            "qty_ordered": [Decimal(i + 1) * Decimal("1.5") for i in range(n)],
            "uom": ["EA"] * n,
            "unit_price": [Decimal("0.0001") * (i + 1) for i in range(n)],
            "currency": ["USD"] * n,
        },
    )


def _invoice() -> pl.DataFrame:
    n = 3
    return _frame(
        "invoice_lines",
        {
            "supplier_id": ["SUP004"] * n,
            "invoice_number": ["INV-000042K"] * n,
            "invoice_date": [dt.date(2026, 1, 31)] * n,
            "po_number": ["P1", "P2", "P1"],
            "line_number": ["1", "3", "2"],
            "item_id": ["A", "B", "C"],
            "qty_invoiced": [Decimal("2"), Decimal("1.25"), Decimal("1")],
            "uom": ["EA", "CS", "EA"],
            "unit_price": [Decimal("10"), Decimal("4"), Decimal("0")],
            "line_amount": [Decimal("20"), Decimal("5"), None],
            "currency": ["EUR", "EUR", None],
        },
    )


def _write(tmp_path: Path, frame: pl.DataFrame, table: TableName, name: str = "doc.xml") -> Path:
    path = tmp_path / name
    path.write_bytes(to_cxml(frame, table=table, payload_id=f"{name}@t", timestamp="2026-01-01"))
    return path


def _expected(frame: pl.DataFrame, table: TableName, source: Path) -> pl.DataFrame:
    out = frame.with_columns(
        source=pl.lit(str(source)), position=cxml_positions(frame, table=table)
    )
    return out.cast(dict(schema(table)))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("table", "make"),
    [("po_lines", _po), ("asn_lines", _asn), ("invoice_lines", _invoice)],
)
def test_round_trip_every_document_type(
    tmp_path: Path, table: TableName, make: Callable[[], pl.DataFrame]
) -> None:
    frame = make()
    path = _write(tmp_path, frame, table)
    got = read_xml(path)  # table recognised from the request element
    assert_frame_equal(got, _expected(frame, table, path), check_row_order=False)
    # rows come in document order: grouped by PO, then as written
    assert got["position"].to_list() == sorted(got["position"].to_list())


_code = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-", min_size=1, max_size=10)
_words = (
    st.text(
        alphabet=st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp", "Co", "Cn")),
        min_size=1,
        max_size=15,
    )
    .map(str.strip)
    .filter(bool)
)
_dec = st.decimals(
    min_value=Decimal("0"),
    max_value=Decimal("99999999.9999"),
    places=4,
    allow_nan=False,
    allow_infinity=False,
)


@st.composite
def _documents(draw: st.DrawFn) -> tuple[TableName, pl.DataFrame]:
    table: TableName = draw(st.sampled_from(["po_lines", "asn_lines", "invoice_lines"]))
    n = draw(st.integers(1, 6))
    col = lambda s: draw(st.lists(s, min_size=n, max_size=n))  # noqa: E731
    one = lambda s: [draw(s)] * n  # noqa: E731
    opt = lambda s: col(st.none() | s)  # noqa: E731
    pos = st.sampled_from(["P1", "P2", "P3"])
    common = {
        "supplier_id": one(_code),
        "item_id": col(_code),
        "uom": col(st.sampled_from(["EA", "CS", "LB"])),
        "line_number": opt(st.integers(1, 9999).map(str)),
    }
    if table == "po_lines":
        data = {
            **common,
            "po_number": one(_code),
            "po_date": one(st.dates(dt.date(2000, 1, 1), dt.date(2099, 1, 1))),
            "description": opt(_words),
            "qty_ordered": opt(_dec),
            "unit_price": opt(_dec),
            "currency": col(st.sampled_from(["USD", "EUR"])),
        }
    elif table == "asn_lines":
        data = {
            **common,
            "shipment_id": one(_code),
            "ship_date": one(st.none() | st.dates(dt.date(2000, 1, 1), dt.date(2099, 1, 1))),
            "po_number": col(pos),
            "qty_shipped": opt(_dec),
            "pack_id": opt(_code),
            "carrier": one(st.none() | _code),
            "tracking": one(st.none() | _code),
        }
    else:
        currency = draw(st.sampled_from(["USD", "EUR"]))
        qty, price = opt(_dec), col(_dec)
        # a credit memo: every quantity negative (written as purpose="creditMemo")
        sign = -1 if draw(st.booleans()) and all(q for q in qty) else 1
        qty = [None if q is None else sign * q for q in qty]
        # SubtotalAmount, when sent, agrees with quantity x unit price (AMOUNT_MISMATCH else)
        amounts = [
            None
            if q is None or not keep or abs(q * p) >= Decimal("1e13")
            else (q * p).quantize(Decimal("0.0001"))
            for q, p, keep in zip(qty, price, col(st.booleans()), strict=True)
        ]
        data = {
            **common,
            "invoice_number": one(_code),
            "invoice_date": one(st.dates(dt.date(2000, 1, 1), dt.date(2099, 1, 1))),
            "po_number": col(pos),
            "qty_invoiced": qty,
            "unit_price": price,
            "line_amount": amounts,
            "currency": [currency] * n,
        }
    return table, _frame(table, data).cast(dict(schema(table)))  # type: ignore[arg-type]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(doc=_documents())
def test_property_cxml_round_trip_is_exact(
    tmp_path: Path, doc: tuple[TableName, pl.DataFrame]
) -> None:
    table, frame = doc
    path = _write(tmp_path, frame, table)
    got = read_xml(path, table=table)
    assert_frame_equal(got.sort("position"), _expected(frame, table, path).sort("position"))


def test_truncated_document_delivers_items_before_the_break(tmp_path: Path) -> None:
    data = to_cxml(_po(5), table="po_lines", payload_id="p", timestamp="t")
    cut = data.index(b"<SupplierPartID>", data.index(b'lineNumber="4"')) + 18  # inside item 4
    path = tmp_path / "truncated.xml"
    path.write_bytes(data[:cut])
    rows, errors = read_xml(path, errors="collect")
    assert rows["line_number"].to_list() == ["1", "2", "3"]
    assert errors["rule"].to_list() == ["XML_SYNTAX"]
    where = "/cXML/Request/OrderRequest/ItemOut[4]/ItemID/SupplierPartID"
    assert errors["position"].to_list() == [where]
    line = data[:cut].count(b"\n") + 1
    assert f"line {line}, column" in errors["message"][0]
    with pytest.warns(XMLWarning, match="XML_SYNTAX"):
        assert read_xml(path).height == 3
    with pytest.raises(XMLError) as info:
        read_xml(path, errors="raise")
    assert info.value.rule == "XML_SYNTAX"
    assert info.value.position == where


def test_mismatched_tag_reports_line_column_and_xpath(tmp_path: Path) -> None:
    text = (
        '<?xml version="1.0"?>\n<cXML><Header/>\n<Request><OrderRequest>\n'
        '<OrderRequestHeader orderID="1" orderDate="2026-01-01"/>\n'
        '<ItemOut quantity="1" lineNumber="1"><ItemID><SupplierPartID>A</SupplierPartID>'
        "</ItemID></ItemOut>\n"
        '<ItemOut quantity="2" lineNumber="2"><ItemID><SupplierPartID>B</SupplierPartId>\n'
    )
    path = tmp_path / "mismatch.xml"
    path.write_text(text, encoding="utf-8")
    rows, errors = read_xml(path, errors="collect")
    assert rows["item_id"].to_list() == ["A"]
    assert errors.row(0, named=True)["position"] == (
        "/cXML/Request/OrderRequest/ItemOut[2]/ItemID/SupplierPartID"
    )
    assert "line 6, column" in errors["message"][0]
    assert "mismatched tag" in errors["message"][0]


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE cXML [
 <!ENTITY a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">
 <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
 <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
 <!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">
]>
<cXML><Request><OrderRequest><OrderRequestHeader orderID="&d;"/>
<ItemOut quantity="1" lineNumber="1"><ItemID><SupplierPartID>&d;</SupplierPartID></ItemID>
</ItemOut></OrderRequest></Request></cXML>
"""


def test_entity_expansion_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "laughs.xml"
    path.write_text(BILLION_LAUGHS, encoding="utf-8")
    rows, errors = read_xml(path, table="po_lines", errors="collect")
    assert rows.height == 0
    assert errors["rule"].to_list() == ["XML_ENTITY"]
    assert "'a' refused" in errors["message"][0]
    assert "line 3" in errors["message"][0]


def test_external_entities_are_never_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-VALUE", encoding="utf-8")
    for name, doctype in [
        ("xxe.xml", f'<!DOCTYPE cXML [ <!ENTITY xxe SYSTEM "{secret.as_uri()}"> ]>'),
        (
            "param.xml",
            f'<!DOCTYPE cXML [ <!ENTITY % p SYSTEM "{secret.as_uri()}"> %p; ]>',
        ),
    ]:
        path = tmp_path / name
        path.write_text(
            f'<?xml version="1.0"?>\n{doctype}\n<cXML><Request><OrderRequest>'
            '<OrderRequestHeader orderID="1"/><ItemOut quantity="1" lineNumber="1">'
            "<ItemID><SupplierPartID>&xxe;</SupplierPartID></ItemID></ItemOut>"
            "</OrderRequest></Request></cXML>",
            encoding="utf-8",
        )
        rows, errors = read_xml(path, table="po_lines", errors="collect")
        assert rows.height == 0
        assert errors["rule"].to_list() == ["XML_ENTITY"]
        dumped = str(rows.rows()) + str(errors.rows())
        assert "TOP-SECRET-VALUE" not in dumped


def test_an_external_dtd_reference_is_not_fetched(tmp_path: Path) -> None:
    # Real cXML carries <!DOCTYPE cXML SYSTEM "http://xml.cxml.org/...">: it must parse
    # offline, without a network access (nothing listens on that host in the sandbox).
    path = _write(tmp_path, _po(2), "po_lines")
    assert b"<!DOCTYPE cXML SYSTEM" in path.read_bytes()
    assert read_xml(path).height == 2


def test_values_that_do_not_parse_are_reported_and_other_items_delivered(tmp_path: Path) -> None:
    data = to_cxml(_po(3), table="po_lines", payload_id="p", timestamp="t")
    data = data.replace(b'quantity="3"', b'quantity="three"', 1)
    path = tmp_path / "badqty.xml"
    path.write_bytes(data)
    rows, errors = read_xml(path, errors="collect")
    assert rows["line_number"].to_list() == ["1", "3"]
    assert errors.select("position", "rule").rows() == [
        ("/cXML/Request/OrderRequest/ItemOut[2]", "BAD_NUMBER")
    ]
    assert "'three'" in errors["message"][0]


def test_many_files_glob_and_wrong_document_type(tmp_path: Path) -> None:
    _write(tmp_path, _po(2, "A"), "po_lines", "po_1.xml")
    _write(tmp_path, _po(3, "B"), "po_lines", "po_2.xml")
    _write(tmp_path, _asn(), "asn_lines", "po_3.xml")  # a ship notice among the orders
    (tmp_path / "po_4.xml").write_text("<html><body>portal login</body></html>")
    rows, errors = read_xml(str(tmp_path / "po_*.xml"), errors="collect")
    assert rows.group_by("po_number").len().sort("po_number").rows() == [("A", 2), ("B", 3)]
    assert errors.select("rule").to_series().to_list() == ["XML_WRONG_DOCUMENT", "XML_NOT_CXML"]
    lazy = scan_xml([tmp_path / "po_1.xml", tmp_path / "po_2.xml"], table="po_lines")
    assert lazy.filter(pl.col("po_number") == "B").select(pl.len()).collect().item() == 3
    assert lazy.head(1).collect().height == 1


def test_not_cxml_without_table_is_an_xml_error(tmp_path: Path) -> None:
    path = tmp_path / "page.xml"
    path.write_text("<html/>", encoding="utf-8")
    with pytest.raises(XMLError) as info:
        scan_xml(path)
    assert info.value.rule == "XML_NOT_CXML"


def test_streaming_memory_does_not_grow_with_document_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Python-side peak while reading: with items handed over in batches it is set by the batch
    # size, not by the document (the whole-document xmltodict tree grows with it).
    monkeypatch.setattr("scfeeds._cxml._read._FLUSH_ROWS", 500)
    peaks = []
    for n in (2_000, 8_000):
        path = _write(tmp_path, _po(n), "po_lines", f"po_{n}.xml")
        tracemalloc.start()
        count = scan_xml(path).select(pl.len()).collect().item()
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert count == n
    assert peaks[1] < 1.5 * peaks[0], peaks


# -- synth world -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synth_world(make_world: Callable[..., Path]) -> Path:
    return make_world(seed=5, suppliers=4, pos=40, formats=("xml",), damaged=["xml_malformed"])


def test_every_synth_cxml_feed_reads_back_as_the_world(
    synth_world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scfeeds import synth

    monkeypatch.chdir(synth_world)
    catalog = pl.read_parquet("catalog.parquet").filter(pl.col("format") == "xml")
    assert set(catalog["table"]) == {"po_lines", "asn_lines", "invoice_lines"}
    for table in ("po_lines", "asn_lines", "invoice_lines"):
        paths = catalog.filter(pl.col("table") == table)["path"].to_list()
        rows, errors = read_xml(paths, table=table, errors="collect")
        assert errors.height == 0, errors.rows()
        world = synth.load_world(synth_world, table).filter(pl.col("source").is_in(paths))
        assert_frame_equal(rows, world.collect(), check_row_order=False)


def test_synth_malformed_cxml_is_reported_with_xpath_and_line(
    synth_world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scfeeds import synth

    monkeypatch.chdir(synth_world)
    damaged = synth.load_damaged(synth_world)
    assert damaged.height == 1
    row = damaged.row(0, named=True)
    rows, errors = read_xml(row["path"], table=row["table"], errors="collect")
    assert rows.height == row["good_records"]
    assert errors["rule"].to_list() == [row["rule"]]
    assert errors["position"].to_list() == [row["position"]]  # the element left unclosed
    assert "mismatched tag" in errors["message"][0]
    assert "line 3, column" in errors["message"][0]


# -- hand-written real-world documents ------------------------------------------------------------

FIXTURES = Path(__file__).parent / "fixtures" / "xml"


def test_pretty_printed_latin1_order_with_cdata_two_languages_and_extrinsics() -> None:
    path = FIXTURES / "order_request_pretty_printed_latin1_cdata_extrinsics.xml"
    rows, errors = read_xml(path, errors="collect")
    assert errors.height == 0
    assert rows.select("supplier_id", "po_number", "po_date").unique().rows() == [
        ("SUP002", "4500077", dt.date(2026, 1, 15))  # sender's local date, padding stripped
    ]
    assert rows["line_number"].to_list() == ["10", "20"]  # "00010" -> "10"
    assert rows["item_id"].to_list() == ["ÄRM-01", "ÖSE-7"]  # declared ISO-8859-1
    assert rows["description"].to_list() == ['Armatur <groß> & "schwer"', "Öse"]  # first one
    assert rows["currency"].to_list() == ["EUR", "EUR"]  # "eur" upper-cased
    assert rows["qty_ordered"].to_list() == [Decimal("12"), Decimal("1.5")]


def test_ship_notice_portions_optional_line_numbers_and_nested_packaging() -> None:
    path = FIXTURES / "ship_notice_two_portions_no_packaging_date_only.xml"
    rows, errors = read_xml(path, errors="collect")
    assert errors.height == 0
    assert rows.select("po_number", "line_number", "pack_id").rows() == [
        ("4500100", "1", None),  # no Packaging at all
        ("4500100", "2", "000123456789000017"),  # the carton level, not the pallet
        ("4500101", None, None),  # no lineNumber: matched by item later
    ]
    assert rows["position"].to_list()[2] == (
        "/cXML/Request/ShipNoticeRequest/ShipNoticePortion[2]/ShipNoticeItem[1]"
    )
    assert rows.select("shipment_id", "ship_date", "carrier", "tracking").unique().rows() == [
        ("ASN-9", dt.date(2026, 2, 3), "FDEG", "7946 0000 1234")
    ]


def _invoice_text(
    *, purpose: str = "standard", qty: str = "3", amount: str = "6.00", parties: str = ""
) -> str:
    parties = parties or (
        "<From><Credential domain='NetworkID'><Identity>SUP9</Identity></Credential></From>"
        "<To><Credential domain='NetworkID'><Identity>BUYER</Identity></Credential></To>"
        "<Sender><Credential domain='NetworkID'><Identity>HUB</Identity></Credential></Sender>"
    )
    return (
        '<?xml version="1.0"?>\n<cXML payloadID="p" timestamp="t">'
        f"<Header>{parties}</Header><Request><InvoiceDetailRequest>"
        f'<InvoiceDetailRequestHeader invoiceID="CM-1" purpose="{purpose}" '
        'invoiceDate="2026-02-01T00:00:00+00:00"/>'
        '<InvoiceDetailOrder><InvoiceDetailOrderInfo><OrderReference orderID="P1"/>'
        "</InvoiceDetailOrderInfo>"
        f'<InvoiceDetailItem invoiceLineNumber="1" quantity="{qty}">'
        "<UnitOfMeasure>EA</UnitOfMeasure>"
        '<UnitPrice><Money currency="USD">2.00</Money></UnitPrice>'
        '<InvoiceDetailItemReference lineNumber="1"><ItemID><SupplierPartID>A</SupplierPartID>'
        "</ItemID></InvoiceDetailItemReference>"
        f'<SubtotalAmount><Money currency="USD">{amount}</Money></SubtotalAmount>'
        "</InvoiceDetailItem></InvoiceDetailOrder></InvoiceDetailRequest></Request></cXML>"
    )


@pytest.mark.parametrize(("qty", "amount"), [("3", "6.00"), ("-3", "-6.00")])
def test_credit_memo_is_read_with_its_sign(tmp_path: Path, qty: str, amount: str) -> None:
    path = tmp_path / "cm.xml"
    path.write_text(_invoice_text(purpose="creditMemo", qty=qty, amount=amount))
    rows = read_xml(path, table="invoice_lines")
    assert rows.select("qty_invoiced", "unit_price", "line_amount").rows() == [
        (Decimal("-3"), Decimal("2"), Decimal("-6"))
    ]


def test_credit_memo_round_trip_writes_purpose(tmp_path: Path) -> None:
    frame = read_xml(
        _write_text(tmp_path, _invoice_text(purpose="creditMemo")), table="invoice_lines"
    ).drop("source", "position")
    data = to_cxml(frame, table="invoice_lines", payload_id="p", timestamp="t")
    assert b'purpose="creditMemo"' in data
    assert b'quantity="-3' in data
    again = read_xml(_write_text(tmp_path, data.decode(), "again.xml"), table="invoice_lines")
    assert again["qty_invoiced"].to_list() == [Decimal("-3")]


def _write_text(tmp_path: Path, text: str, name: str = "doc.xml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_subtotal_disagreeing_with_quantity_times_price_is_reported(tmp_path: Path) -> None:
    path = _write_text(tmp_path, _invoice_text(amount="7.00"))
    rows, errors = read_xml(path, table="invoice_lines", errors="collect")
    assert rows.height == 0  # neither figure is taken
    assert errors["rule"].to_list() == ["AMOUNT_MISMATCH"]
    where = "/cXML/Request/InvoiceDetailRequest/InvoiceDetailOrder[1]/InvoiceDetailItem[1]"
    assert errors["position"].to_list() == [where]
    assert "SubtotalAmount 7" in errors["message"][0]
    assert "quantity 3" in errors["message"][0]
    with pytest.warns(XMLWarning, match="AMOUNT_MISMATCH"):
        read_xml(path, table="invoice_lines")
    # within a cent is agreement (rounding of the line total)
    assert read_xml(_write_text(tmp_path, _invoice_text(amount="6.01"), "ok.xml")).height == 1


def test_invoice_supplier_is_from_else_sender_never_to(tmp_path: Path) -> None:
    got = read_xml(_write_text(tmp_path, _invoice_text()), table="invoice_lines")
    assert got["supplier_id"].to_list() == ["SUP9"]
    relayed = _invoice_text(
        parties="<To><Credential domain='x'><Identity>BUYER</Identity></Credential></To>"
        "<Sender><Credential domain='x'><Identity>SUP7</Identity></Credential></Sender>"
    )
    got = read_xml(_write_text(tmp_path, relayed, "relayed.xml"), table="invoice_lines")
    assert got["supplier_id"].to_list() == ["SUP7"]
