"""855 acknowledgments into ``po_acks`` and 850 requested dates, from hand-written fixtures."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import scfeeds
from scfeeds import read_x12, scan_x12
from scfeeds._x12._ack855 import ACK_STATUS, ACK_STATUSES
from scfeeds.schemas import schema

FIX = Path(__file__).parent / "fixtures" / "x12"
D = dt.date


def test_every_ack01_code_maps_to_its_status_and_keeps_the_raw_code() -> None:
    res = read_x12(FIX / "855_every_ack_code.x12")
    acks = res.po_acks
    assert acks.schema == schema("po_acks")
    assert res.errors.height == 0
    assert res.envelopes["valid"].to_list() == [True]
    # every mapped code appears once, plus one code nobody maps
    assert set(ACK_STATUS) <= set(acks["ack_code"].to_list())
    got = dict(zip(acks["ack_code"], acks["ack_status"], strict=True))
    assert {k: got[k] for k in ACK_STATUS} == ACK_STATUS
    assert got["ZZ"] == "unknown"
    assert set(acks["ack_status"]) <= set(ACK_STATUSES)
    # the supplier sends the 855: N1*SU wins over the interchange sender
    assert acks["supplier_id"].unique().to_list() == ["SUPACME"]
    assert acks["ack_date"].unique().to_list() == [D(2026, 1, 5)]  # BAK09
    assert acks["po_number"].unique().to_list() == ["4500000777"]
    # ACK04/ACK05: odd lines 067 (delivery), even lines 068 (ship)
    first, second = acks.row(0, named=True), acks.row(1, named=True)
    assert (first["promised_date"], first["date_qualifier"]) == (D(2026, 1, 1), "067")
    assert (second["promised_date"], second["date_qualifier"]) == (D(2026, 1, 2), "068")
    iq = acks.filter(pl.col("ack_code") == "IQ").row(0, named=True)
    assert (iq["qty_acked"], iq["unit_price"], iq["item_id"]) == (
        Decimal(8),
        Decimal("7.25"),
        "ITEM-07",
    )


def test_dates_by_precedence_split_lines_and_lines_without_ack() -> None:
    res = read_x12(FIX / "855_dates_and_split_lines.x12")
    assert res.errors.height == 0
    got = res.po_acks.select(
        "position",
        "line_number",
        "item_id",
        "ack_code",
        "ack_status",
        "qty_acked",
        "uom",
        "promised_date",
        "date_qualifier",
    )
    want = pl.DataFrame(
        {
            "position": [f"segment {n}" for n in (7, 9, 13, 16, 17, 19)],
            "line_number": ["1", "1", "2", "3", "4", "5"],
            "item_id": ["BOLT-1", "BOLT-1", "NUT-2", "WASHER-3", "PIN-4", "CLIP-5"],
            "ack_code": ["IA", "IB", "IP", "DR", None, "IS"],
            # a PO1 without ACK under BAK02 = AT (accepted) is accepted
            "ack_status": ["accepted", "backordered", "changed", "changed", "accepted", "changed"],
            "qty_acked": [Decimal(60), Decimal(40), Decimal(5), Decimal(7), Decimal(3), Decimal(2)],
            "uom": ["EA", "EA", "CS", "EA", "EA", "EA"],
            # DTM after the ACK; DTM after the ACK beats ACK05; ACK05 beats the DTM before the
            # loop's first ACK; that DTM; header DTM; ACK04 010 is no promise -> header DTM
            "promised_date": [
                D(2026, 1, 20),
                D(2026, 2, 10),
                D(2026, 1, 18),
                D(2026, 1, 22),
                D(2026, 1, 30),
                D(2026, 1, 30),
            ],
            "date_qualifier": ["067", "068", "068", "068", "068", "068"],
        },
        schema_overrides={"qty_acked": pl.Decimal(18, 4)},
    )
    assert_frame_equal(got, want)
    assert res.po_acks["supplier_id"].unique().to_list() == ["SUPBOLT"]  # ISA06: the sender


def test_bad_elements_withhold_their_set_and_the_997_rejects_it() -> None:
    res = read_x12(FIX / "855_bad_elements_withhold_their_set.x12")
    assert res.po_acks["po_number"].to_list() == ["4500000903"]
    errs = res.errors.select("set_control", "element", "code").sort("set_control")
    assert errs.rows() == [("0001", "ACK02", "BAD_NUMBER"), ("0002", "ACK05", "BAD_DATE")]
    ack = res.acknowledgment()
    assert "AK1*PR*503~" in ack
    assert "AK2*855*0001~" in ack
    assert "AK2*855*0003~AK5*A~" in ack
    assert ack.count("AK5*R") == 2


def test_public_sample_shape_reads_with_its_envelope_checked() -> None:
    res = read_x12(FIX / "855_public_shape_up_vp_bp.x12")
    assert res.envelopes.select("set_id", "set_control", "valid").rows() == [("855", "3152", True)]
    row = res.po_acks.row(0, named=True)
    assert row["item_id"] == "888800001"  # BP preferred over UP and VP
    assert (row["ack_status"], row["qty_acked"]) == ("accepted", Decimal(140))
    assert row["promised_date"] is None  # ACK04 010 is the requested ship date, not a promise
    assert row["supplier_id"] == "111222333"


def test_850_requested_date_line_level_with_header_fallback() -> None:
    res = read_x12(FIX / "850_requested_dates_line_and_header.x12")
    # a DTM*002 that is not a date is reported and withholds its set, like any bad element
    assert res.errors.select("element", "code").rows() == [("DTM02", "BAD_DATE")]
    assert res.po_lines.height == 0
    fixed = (FIX / "850_requested_dates_line_and_header.x12").read_bytes()
    fixed = fixed.replace(b"DTM*002*2026013X", b"DTM*002*20260130")
    ok = read_x12(fixed)
    assert ok.errors.height == 0
    assert ok.po_lines.select("line_number", "description", "requested_date").rows() == [
        ("1", None, D(2026, 1, 20)),
        ("2", "Hex nut", D(2026, 2, 1)),  # DTM*010 is not a requested date: header DTM*002
        ("3", None, D(2026, 1, 30)),
    ]


@pytest.mark.parametrize("table", ["po_acks", "po_lines"])
def test_scan_matches_read(table: str) -> None:
    files = sorted(str(p) for p in FIX.glob("855_*.x12"))
    got = scan_x12(files, table=table).collect()  # type: ignore[arg-type]
    want = read_x12(files).table(table)  # type: ignore[arg-type]
    assert_frame_equal(got, want)


XML = Path(__file__).parent / "fixtures" / "xml"


def test_cxml_confirmation_request_reads_into_po_acks() -> None:
    from scfeeds import read_xml

    rows, errors = read_xml(
        XML / "confirmation_detail_every_status.xml", table="po_acks", errors="collect"
    )
    assert rows.schema == schema("po_acks")
    got = rows.select(
        "position", "supplier_id", "po_number", "ack_date", "line_number", "item_id", "ack_code",
        "ack_status", "qty_acked", "uom", "unit_price", "promised_date", "date_qualifier",
    ).rows()  # fmt: skip
    base = "/cXML/Request/ConfirmationRequest/ConfirmationItem"
    day = D(2026, 1, 6)
    assert got == [
        (f"{base}[1]/ConfirmationStatus[1]", "SUPCX", "4500000990", day, "1", None, "accept",
         "accepted", Decimal(10), "EA", None, D(2026, 1, 20), "067"),
        (f"{base}[2]/ConfirmationStatus[1]", "SUPCX", "4500000990", day, "2", "BOLT-2", "detail",
         "changed", Decimal(60), "EA", Decimal("2.75"), D(2026, 1, 18), "068"),
        (f"{base}[2]/ConfirmationStatus[2]", "SUPCX", "4500000990", day, "2", None, "backordered",
         "backordered", Decimal(40), "EA", None, D(2026, 2, 10), "067"),
        (f"{base}[3]/ConfirmationStatus[1]", "SUPCX", "4500000990", day, "3", None, "reject",
         "rejected", Decimal(5), "CS", None, None, None),
        # no status of its own: the header's type, the item's quantity and unit
        (f"{base}[4]", "SUPCX", "4500000990", day, "4", None, "detail", "changed", Decimal(7),
         "EA", None, None, None),
    ]  # fmt: skip
    assert errors.select("position", "rule").rows() == [
        (f"{base}[5]/ConfirmationStatus[1]", "BAD_NUMBER")
    ]
    with pytest.warns(scfeeds.XMLWarning, match="BAD_NUMBER"):
        assert read_xml(XML / "confirmation_detail_every_status.xml", table="po_acks").height == 5
    with pytest.raises(scfeeds.XMLError):
        read_xml(XML / "confirmation_detail_every_status.xml", table="po_acks", errors="raise")


def test_cxml_confirmation_refuses_entities_and_other_documents(tmp_path: Path) -> None:
    from scfeeds import read_xml

    evil = tmp_path / "evil.xml"
    evil.write_text('<!DOCTYPE cXML [<!ENTITY x "y">]><cXML><Request/></cXML>')
    other = tmp_path / "order.xml"
    other.write_text("<cXML><Request><OrderRequest/></Request></cXML>")
    broken = tmp_path / "broken.xml"
    broken.write_text("<cXML><Request>")
    # the same declaration in UTF-16: no byte string "<!ENTITY" in the file, still refused
    wide = tmp_path / "wide.xml"
    wide.write_bytes(
        '<?xml version="1.0" encoding="UTF-16"?>\n'
        '<!DOCTYPE cXML [<!ENTITY x "y">]><cXML><Request/></cXML>'.encode("utf-16")
    )
    rows, errors = read_xml([evil, other, broken, wide], table="po_acks", errors="collect")
    assert rows.height == 0
    assert errors["rule"].to_list() == [
        "XML_ENTITY",
        "XML_WRONG_DOCUMENT",
        "XML_SYNTAX",
        "XML_ENTITY",
    ]


def test_scan_xml_po_acks_is_read_xml() -> None:
    path = XML / "confirmation_detail_every_status.xml"
    with pytest.warns(scfeeds.XMLWarning):
        lazy = scfeeds.scan_xml(path, table="po_acks").collect()
    with pytest.warns(scfeeds.XMLWarning):
        assert_frame_equal(lazy, scfeeds.read_xml(path, table="po_acks"))
