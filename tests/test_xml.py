"""cXML: writer structure, streaming reader, damage and security."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
from decimal import Decimal

import polars as pl
import pytest

from scfeeds._xml import cxml_positions, to_cxml
from scfeeds.exceptions import ConfigurationError
from scfeeds.schemas import empty


def _frame(table: str, data: dict[str, list[object]]) -> pl.DataFrame:
    return pl.concat([empty(table), pl.DataFrame(data)], how="diagonal_relaxed")  # type: ignore[arg-type]


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
