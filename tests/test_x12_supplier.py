"""supplier_id of X12 documents by their direction, checked on real files.

An 850 is sent by the buyer: without an ``N1*SU/SE/VN`` loop its supplier is the interchange
receiver (ISA08), not the sender. The expected values here come from a naive split of each
file, independent of the reader.
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest

from scfeeds._x12 import read_x12

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("SCFEEDS_X12_CORPUS", ROOT.parent / "shared" / "x12-corpus"))
SUPPLIER_N1 = ("SU", "SE", "VN")


def _naive_sets(data: bytes) -> list[dict[str, object]]:
    """Per transaction set: ISA06, ISA08, GS02, GS03, ISA13, ST02, set id, N1 supplier id."""
    text = data.removeprefix(b"\xef\xbb\xbf").decode("latin-1").lstrip()
    element, terminator = text[3], text[105]
    segments = [s.strip("\r\n ") for s in text.split(terminator)]
    out: list[dict[str, object]] = []
    isa: list[str] = []
    gs: list[str] = []
    current: dict[str, object] | None = None
    for raw in segments:
        el = raw.split(element)
        tag = el[0]
        if tag == "ISA":
            isa = [x.strip() for x in el]
        elif tag == "GS":
            gs = el
        elif tag == "ST":
            current = {
                "set_id": el[1],
                "isa06": isa[6],
                "isa08": isa[8],
                "gs02": gs[2] if len(gs) > 2 else None,
                "gs03": gs[3] if len(gs) > 3 else None,
                "interchange_control": isa[13],
                "set_control": el[2],
                "n1": None,
            }
            out.append(current)
        elif tag == "N1" and current is not None and current["n1"] is None:
            if len(el) > 4 and el[1] in SUPPLIER_N1 and el[4].strip():
                current["n1"] = el[4].strip()
        elif tag == "SE":
            current = None
    return out


def _corpus_files(prefix: str) -> list[Path]:
    if not CORPUS.is_dir():
        pytest.skip(f"real X12 corpus not found at {CORPUS} (set SCFEEDS_X12_CORPUS)")
    files = sorted(CORPUS.glob(f"{prefix}_*.edi"))
    if not files:
        pytest.skip(f"no {prefix} files in the X12 corpus at {CORPUS}")
    return files


def _check(files: list[Path], table: str, side: str) -> tuple[int, int]:
    """Compare every row's supplier_id with the naive expectation; (sets checked without N1,
    sets checked with N1)."""
    without = with_n1 = 0
    for path in files:
        expected = {
            (s["interchange_control"], s["set_control"]): s for s in _naive_sets(path.read_bytes())
        }
        rows = getattr(read_x12(path), table)
        got = rows.select("interchange_control", "set_control", "supplier_id").unique(
            maintain_order=True
        )
        for ic, sc, supplier in got.iter_rows():
            exp = expected[(ic, sc)]
            if exp["n1"] is not None:
                assert supplier == exp["n1"], (path.name, sc)
                with_n1 += 1
                continue
            partner = exp["isa08"] if side == "receiver" else exp["isa06"]
            assert supplier == partner, (path.name, sc, supplier, exp)
            # and never the other side, unless both sides carry the same id
            other = exp["isa06"] if side == "receiver" else exp["isa08"]
            assert supplier != other or partner == other
            without += 1
    return without, with_n1


def test_real_850s_without_n1_get_the_receiver() -> None:
    without, _ = _check(_corpus_files("850"), "po_lines", "receiver")
    # most real 850s name no supplier in an N1 loop (11 of 12 files when this was measured)
    assert without >= 5


def test_real_810s_and_856s_get_the_sender() -> None:
    w810, n810 = _check(_corpus_files("810"), "invoice_lines", "sender")
    w856, n856 = _check(_corpus_files("856"), "asn_lines", "sender")
    assert w810 + n810 > 0
    assert w856 + n856 > 0


def _interchange(body: list[str], *, sender: str, receiver: str, gs: tuple[str, str]) -> bytes:
    segs = [
        f"ISA*00*          *00*          *ZZ*{sender:<15}*ZZ*{receiver:<15}*260101*1200*U*00401"
        "*000000001*0*P*>",
        f"GS*XX*{gs[0]}*{gs[1]}*20260101*1200*1*X*004010",
        "ST*XXX*0001",
        *body,
        f"SE*{len(body) + 2}*0001",
        "GE*1*1",
        "IEA*1*000000001",
    ]
    return ("~".join(segs) + "~").encode()


def _850(n1: list[str], *, sender: str, receiver: str, gs: tuple[str, str] = ("B", "S")) -> bytes:
    body = ["BEG*00*SA*PO1**20260101", *n1, "PO1*1*5*EA*2.00**BP*ITEM1"]
    return (
        _interchange(body, sender=sender, receiver=receiver, gs=gs)
        .replace(b"ST*XXX", b"ST*850")
        .replace(b"GS*XX", b"GS*PO")
    )


def _810(n1: list[str], *, sender: str, receiver: str, big07: str = "", qty: str = "5") -> bytes:
    body = [
        f"BIG*20260110*INV1**PO1***{big07}".rstrip("*"),
        *n1,
        f"IT1*1*{qty}*EA*2.00**BP*ITEM1",
        "TDS*1000",
    ]
    return (
        _interchange(body, sender=sender, receiver=receiver, gs=("S", "B"))
        .replace(b"ST*XXX", b"ST*810")
        .replace(b"GS*XX", b"GS*IN")
    )


def test_850_without_n1_is_the_receivers_and_n1_wins() -> None:
    assert read_x12(_850([], sender="BUYER", receiver="SUPPLIER")).po_lines[
        "supplier_id"
    ].to_list() == ["SUPPLIER"]
    # N1*BY / N1*ST name the buyer's side: not the supplier
    assert read_x12(
        _850(["N1*BY*Buyer*92*BUY1", "N1*ST*Dock*92*DC1"], sender="BUYER", receiver="SUPPLIER")
    ).po_lines["supplier_id"].to_list() == ["SUPPLIER"]
    assert read_x12(_850(["N1*SU*Acme*92*ACME"], sender="BUYER", receiver="SUPPLIER")).po_lines[
        "supplier_id"
    ].to_list() == ["ACME"]


def test_blank_isa_party_falls_back_to_the_group() -> None:
    got = read_x12(_850([], sender="BUYER", receiver=" ", gs=("BUYERAPP", "SUPPLIERAPP")))
    assert got.po_lines["supplier_id"].to_list() == ["SUPPLIERAPP"]


def test_810_without_n1_is_the_senders() -> None:
    got = read_x12(_810([], sender="SUPPLIER", receiver="BUYER")).invoice_lines
    assert got["supplier_id"].to_list() == ["SUPPLIER"]


@pytest.mark.parametrize(("big07", "qty"), [("CR", "5"), ("CR", "-5"), ("", "-5")])
def test_810_credit_memo_is_read_with_its_sign(big07: str, qty: str) -> None:
    got = read_x12(_810([], sender="S", receiver="B", big07=big07, qty=qty)).invoice_lines
    assert got.select("qty_invoiced", "line_amount").rows() == [
        (pl.Series([-5]).cast(pl.Decimal(18, 4))[0], pl.Series([-10]).cast(pl.Decimal(18, 4))[0])
    ]


def test_810_other_big07_keeps_positive_quantities() -> None:
    got = read_x12(_810([], sender="S", receiver="B", big07="DI", qty="5")).invoice_lines
    assert got["qty_invoiced"].cast(pl.Float64).to_list() == [5.0]
