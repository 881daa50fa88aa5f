"""Hand-written X12 fixtures, one per real-world deviation, and negative tests."""

from __future__ import annotations

import random
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from scfeeds._x12 import CODES, ack_997, read_x12
from scfeeds.exceptions import ConfigurationError
from scfeeds.schemas import schema

FIX = Path(__file__).parent / "fixtures" / "x12"
NOW = datetime(2026, 1, 15, 12, 0)


def read(name: str, **kw: int) -> pl.DataFrame:
    return read_x12(FIX / name, **kw)  # type: ignore[return-value]


def _only_po(name: str) -> pl.DataFrame:
    res = read_x12(FIX / name)
    assert res.errors.height == 0, res.errors
    return res.po_lines


ONE_LINE = {
    "po_number": "PO-1",
    "line_number": "1",
    "item_id": "ITEM-1",
    "description": "WIDGET ITEM-1",
    "uom": "EA",
    "currency": "USD",
    "supplier_id": "SUP001",
}


@pytest.mark.parametrize(
    ("name", "delims"),
    [
        ("control_char_delimiters.x12", ("\x07", "\x7f", None, "\x15")),
        ("bom_crlf_after_terminator.x12", ("*", ">", None, "~")),
        ("whitespace_after_terminator.x12", ("*", ">", None, "~")),
        ("isa_not_fixed_width.x12", ("*", ">", None, "~")),
        ("repetition_separator_00402.x12", ("*", ">", "^", "~")),
        ("isa11_not_repetition_before_00402.x12", ("*", ">", None, "~")),
        ("newline_terminator.x12", ("*", ">", None, "\n")),
        ("apostrophe_terminator.x12", ("+", ":", None, "'")),
        ("cr_terminator_crlf_lines.x12", ("*", ">", None, "\r")),
        ("control_numbers_zero_padded.x12", ("*", ">", None, "~")),
    ],
)
def test_deviation_is_read_like_a_clean_file(name: str, delims: tuple[str | None, ...]) -> None:
    res = read_x12(FIX / name)
    assert res.errors.height == 0, res.errors
    assert res.envelopes.select(
        "element_separator", "component_separator", "repetition_separator", "segment_terminator"
    ).rows() == [delims]
    po = res.po_lines
    assert po.schema == schema("po_lines")
    assert po.height == 1
    row = po.row(0, named=True)
    assert {k: row[k] for k in ONE_LINE} == ONE_LINE
    assert str(row["qty_ordered"]) == "10.0000"
    assert str(row["unit_price"]) == "2.5000"
    assert row["position"] == "segment 7"  # ISA GS ST BEG CUR N1 PO1
    assert row["po_date"].isoformat() == "2026-01-15"
    assert res.envelopes["valid"].all()


def test_wrapped_at_80_columns_even_inside_the_isa() -> None:
    raw = (FIX / "wrapped_80_columns.x12").read_bytes()
    assert b"\r\n" in raw[:106]  # the ISA itself is broken over two lines
    po = _only_po("wrapped_80_columns.x12")
    assert po.select("line_number", "item_id", "uom").rows() == [
        ("1", "ITEM-1", "EA"),
        ("2", "ITEM-2", "CS"),
    ]


def test_several_interchanges_with_their_own_delimiters() -> None:
    res = read("several_isa_different_delimiters.x12")
    assert res.errors.height == 0, res.errors
    env = res.envelopes
    assert env.select(
        "interchange_index", "set_control", "element_separator", "segment_terminator"
    ).rows() == [
        (1, "0001", "*", "~"),
        (1, "0002", "*", "~"),
        (2, "0001", "|", "\n"),
    ]
    assert res.po_lines.select("po_number", "interchange_control").rows() == [
        ("PO-A", "000000001"),
        ("PO-B", "000000001"),
        ("PO-C", "000000002"),
    ]


def test_mixed_set_types_and_group_versions() -> None:
    res = read("mixed_850_810_groups_versions.x12")
    assert res.errors.height == 0, res.errors
    assert res.envelopes.select("functional_id", "version", "set_id").rows() == [
        ("PO", "004010", "850"),
        ("IN", "005010", "810"),
    ]
    assert res.po_lines["po_number"].to_list() == ["PO-D"]
    inv = res.invoice_lines.row(0, named=True)
    assert (inv["invoice_number"], inv["po_number"], inv["item_id"]) == ("INV-1", "PO-1", "ITEM-1")
    assert str(inv["line_amount"]) == "25.0000"
    # an 850 and an 810 in the same group are both read
    one = read("mixed_set_types_one_group.x12")
    assert (one.po_lines.height, one.invoice_lines.height, one.errors.height) == (1, 1, 0)


@pytest.mark.parametrize(
    ("name", "code", "position", "good_po"),
    [
        ("se01_wrong_count.x12", "SE01_COUNT", "segment 18", ["PO-OK"]),
        ("se02_control_mismatch.x12", "SE02_CONTROL", "segment 18", ["PO-OK"]),
        ("se_missing.x12", "SE_MISSING", "segment 10", ["PO-OK"]),
        ("truncated_inside_segment.x12", "TRUNCATED", "segment 15", ["PO-OK"]),
        ("bad_number_and_date.x12", "BAD_NUMBER", "segment 15", ["PO-OK"]),
        ("ge01_wrong_count.x12", "GE01_COUNT", "segment 11", ["PO-1"]),
        ("iea01_wrong_count.x12", "IEA01_COUNT", "segment 12", ["PO-1"]),
        ("latin1_bytes.x12", "ENCODING", "segment 7", ["PO-1"]),
    ],
)
def test_damage_is_reported_precisely_and_good_sets_delivered(
    name: str, code: str, position: str, good_po: list[str]
) -> None:
    res = read_x12(FIX / name)
    assert res.errors.select("code", "position").rows() == [(code, position)]
    err = res.errors.row(0, named=True)
    assert err["source"] == str(FIX / name)
    assert err["level"] == CODES[code]
    assert err["message"]
    assert res.po_lines["po_number"].to_list() == good_po
    rejected = res.envelopes.filter(~pl.col("valid"))
    if CODES[code] in ("set", "segment", "element") or code == "TRUNCATED":
        assert rejected.height == 1
        assert rejected["set_control"].to_list() == [err["set_control"]]
    else:
        assert rejected.height == 0


def test_latin1_bytes_are_kept_not_replaced() -> None:
    res = read("latin1_bytes.x12")
    assert res.po_lines["item_id"].to_list() == ["CAFÉ-1"]


def test_997_rejects_the_broken_set_and_accepts_the_other() -> None:
    res = read("se01_wrong_count.x12")
    back = read_x12(ack_997(res, now=NOW).encode())
    assert back.errors.height == 0
    seg = back.segments
    ak2 = seg.filter(pl.col("segment_id") == "AK2")["elements"].to_list()
    ak5 = seg.filter(pl.col("segment_id") == "AK5")["elements"].to_list()
    assert list(zip([a[1] for a in ak2], ak5, strict=True)) == [
        ("0001", ["A"]),
        ("0002", ["R", "4"]),
    ]
    assert seg.filter(pl.col("segment_id") == "AK9")["elements"].to_list() == [["P", "2", "2", "1"]]


def test_997_names_bad_segment_and_element() -> None:
    res = read("bad_number_and_date.x12")
    seg = read_x12(res.acknowledgment(now=NOW).encode()).segments
    get = lambda sid: seg.filter(pl.col("segment_id") == sid)["elements"].to_list()  # noqa: E731
    assert get("AK3") == [["PO1", "5", "", "8"]]  # PO1 is the 5th segment of the set
    assert get("AK4") == [["2", "", "6"]]  # PO102: invalid character
    assert [a[0] for a in get("AK5")] == ["A", "R"]


def test_997_keeps_control_character_delimiters() -> None:
    text = read("control_char_delimiters.x12").acknowledgment(now=NOW)
    assert "\x07" in text
    assert text.endswith("\x15")
    assert "*" not in text
    back = read_x12(text.encode())
    assert back.envelopes["set_id"].to_list() == ["997"]
    assert back.envelopes["component_separator"].to_list() == ["\x7f"]


def test_truncated_file_keeps_complete_sets_and_997_says_trailer_missing() -> None:
    res = read("truncated_inside_segment.x12")
    assert "inside" in res.errors["message"][0]
    seg = read_x12(res.acknowledgment(now=NOW).encode()).segments
    assert seg.filter(pl.col("segment_id") == "AK5")["elements"].to_list() == [["A"], ["R", "2"]]


# --- negative tests -------------------------------------------------------------------------


def test_empty_input() -> None:
    for data in (b"", b"   \r\n", b"\xef\xbb\xbf"):
        res = read_x12(data)
        assert res.errors.select("code", "position").rows() == [("EMPTY", "segment 1")]
        assert res.po_lines.schema == schema("po_lines")
        assert res.po_lines.height == 0


def test_binary_garbage() -> None:
    rnd = random.Random(7)
    data = bytes(rnd.randrange(256) for _ in range(5000))
    res = read_x12(data)
    assert res.errors["code"].to_list() == ["BAD_ISA"]
    assert res.errors["source"].to_list() == ["<bytes>"]
    assert res.envelopes.height == 0


def test_garbage_between_two_good_files_is_reported_and_both_read() -> None:
    good = (FIX / "newline_terminator.x12").read_bytes()
    res = read_x12(good + b"\x00\x01garbage" + good.replace(b"PO-1", b"PO-2"))
    assert res.po_lines["po_number"].to_list() == ["PO-1", "PO-2"]
    assert (
        "BAD_ISA" in res.errors["code"].to_list()
        or "UNEXPECTED_DATA" in res.errors["code"].to_list()
    )


def test_segment_with_ten_thousand_elements() -> None:
    good = (FIX / "newline_terminator.x12").read_text()
    big = "REF*ZZ" + "*X" * 9_998
    res = read_x12(
        good.replace("CUR*BY*USD\n", f"CUR*BY*USD\n{big}\n").replace("SE*8*", "SE*9*").encode()
    )
    assert res.errors.height == 0, res.errors
    assert res.po_lines.height == 1
    ref = res.segments.filter(pl.col("segment_id") == "REF")
    assert ref["elements"].list.len().to_list() == [9_999]


def test_wrong_counts_in_every_trailer() -> None:
    good = (FIX / "newline_terminator.x12").read_text()
    bad = (
        good.replace("SE*8*0001", "SE*80*0001")
        .replace("GE*1*1", "GE*2*2")
        .replace("IEA*1*000000001", "IEA*3*000000009")
    )
    res = read_x12(bad.encode())
    assert sorted(res.errors["code"].to_list()) == sorted(
        ["SE01_COUNT", "GE01_COUNT", "GE02_CONTROL", "IEA01_COUNT", "IEA02_CONTROL"]
    )
    assert res.po_lines.height == 0  # the only set is rejected (its SE01 is wrong)


def test_missing_trailers() -> None:
    good = (FIX / "newline_terminator.x12").read_text()
    twice = good + good.replace("000000001", "000000002")
    res = read_x12(twice.replace("GE*1*1\nIEA*1*000000001\n", "").encode())
    assert sorted(res.errors["code"].to_list()) == ["GE_MISSING", "IEA_MISSING"]
    assert res.po_lines.height == 2


def test_slices_give_the_same_result_as_one_piece() -> None:
    data = b"".join(
        (FIX / n).read_bytes()
        for n in (
            "newline_terminator.x12",
            "se01_wrong_count.x12",
            "several_isa_different_delimiters.x12",
            "mixed_850_810_groups_versions.x12",
        )
    )
    whole = read_x12(data)
    sliced = read_x12(data, slice_bytes=1024)
    for name in ("po_lines", "invoice_lines", "envelopes", "errors", "segments"):
        assert_frame_equal(getattr(whole, name), getattr(sliced, name))


def test_sources_bytes_paths_globs_lists() -> None:
    one = read_x12(FIX / "newline_terminator.x12").po_lines
    assert one["source"].to_list() == [str(FIX / "newline_terminator.x12")]
    glob = read_x12(str(FIX / "*_terminator*.x12")).po_lines
    assert glob.height == 5  # apostrophe, bom_crlf, cr, newline, whitespace
    both = read_x12(
        [(FIX / "newline_terminator.x12").read_bytes(), FIX / "apostrophe_terminator.x12"]
    )
    assert both.po_lines["source"].to_list() == [
        "<bytes[0]>",
        str(FIX / "apostrophe_terminator.x12"),
    ]
    with pytest.raises(ConfigurationError, match="no file matches"):
        read_x12(str(FIX / "nothing-*.x12"))
    with pytest.raises(ConfigurationError, match="not a file"):
        read_x12(FIX / "missing.x12")
    with pytest.raises(ConfigurationError):
        read_x12(42)  # type: ignore[arg-type]


def test_codes_are_documented() -> None:
    from scfeeds._x12 import _codes

    assert _codes.__doc__ is not None
    for code in CODES:
        assert code in _codes.__doc__


def _856(body: list[str]) -> bytes:
    """One 856 set around ``body`` (the segments after BSN), envelope counts right."""
    isa = (
        "ISA*00*          *00*          *ZZ*SUP001         *ZZ*BUYER          "
        "*260115*1200*U*00401*000000001*0*P*>"
    )
    seg = ["ST*856*0001", "BSN*00*SHIP-1*20260115*1200", *body]
    seg.append(f"SE*{len(seg) + 1}*0001")
    env = [isa, "GS*SH*SUP001*BUYER*20260115*1200*1*X*004010", *seg, "GE*1*1", "IEA*1*000000001"]
    return ("~".join(env) + "~").encode()


@pytest.mark.parametrize("numbering", ["sparse", "sequential"])
def test_856_items_take_po_and_pack_from_the_nearest_ancestor_within_eight_levels(
    numbering: str,
) -> None:
    """PRF and MAN are looked up from the item up its HL02 parent chain: the nearest level
    that has one wins (the item's own first), at most seven levels up; a parent pointer to an
    HL that does not exist, or a cycle, ends the walk without an error. The same tree with HLs
    numbered 1, 2, 3... (parents found by arithmetic) and with gaps (found by a join)."""
    deep = [f"HL*{10 + k}*{10 + k - 1 if k else 2}*X" for k in range(8)]  # 8 levels under O=2
    body = [
        "HL*1**S",
        "HL*2*1*O",
        "PRF*PO-A",
        "HL*3*2*P",
        "MAN*GM*PACK-1",
        "HL*4*3*I",  # O's PO, P's pack
        "LIN*1*BP*ITEM-1",
        "SN1**5*EA",
        "HL*5*3*I",  # its own PRF wins over the order's
        "PRF*PO-OWN",
        "LIN*2*BP*ITEM-2",
        "SN1**6*EA",
        "HL*6*99*I",  # parent 99 does not exist
        "LIN*3*BP*ITEM-3",
        "SN1**7*EA",
        "HL*7*8*I",  # 7 -> 8 -> 7: a cycle without PRF
        "LIN*4*BP*ITEM-4",
        "SN1**8*EA",
        "HL*8*7*I",
        *deep,
        "HL*20*15*I",  # O=2 is 7 levels up (15, 14, ..., 10, 2): found
        "LIN*5*BP*ITEM-5",
        "SN1**9*EA",
        "HL*21*16*I",  # O=2 is 8 levels up: beyond the walk
        "LIN*6*BP*ITEM-6",
        "SN1**10*EA",
    ]
    if numbering == "sequential":
        ids = [seg.split("*")[1] for seg in body if seg.startswith("HL*")]
        new_id = {old: str(k) for k, old in enumerate(ids, 1)}
        assert list(new_id) != list(new_id.values())  # the sparse tree has gaps

        def renumber(seg: str) -> str:
            if not seg.startswith("HL*"):
                return seg
            _, me, up, level = seg.split("*")
            return f"HL*{new_id[me]}*{new_id.get(up, up)}*{level}"

        body = [renumber(seg) for seg in body]
    res = read_x12(_856(body))
    assert res.errors.height == 0, res.errors
    got = res.asn_lines.select("item_id", "po_number", "pack_id", "qty_shipped")
    assert got.rows() == [
        ("ITEM-1", "PO-A", "PACK-1", 5),
        ("ITEM-2", "PO-OWN", "PACK-1", 6),
        ("ITEM-3", None, None, 7),
        ("ITEM-4", None, None, 8),
        ("ITEM-5", "PO-A", None, 9),
        ("ITEM-6", None, None, 10),
    ]
