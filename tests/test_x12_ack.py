"""The 997's verdicts as frames: ``ack.groups`` and ``ack.sets``."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from scfeeds._x12 import read_x12
from scfeeds._x12._ack import Acknowledgment

FIX = Path(__file__).parent / "fixtures" / "x12"
NOW = datetime(2026, 1, 15, 12, 0)
SE01_REASON = "4: number of included segments does not match actual count"


def ack_of(name: str) -> Acknowledgment:
    ack = read_x12(FIX / name).acknowledgment(now=NOW)
    assert isinstance(ack, Acknowledgment)
    return ack


def test_a_rejected_set_is_named_with_its_reason() -> None:
    ack = ack_of("se01_wrong_count.x12")
    sets = ack.sets.select("set_id", "set_control", "verdict", "ak501", "reasons").rows()
    assert sets == [
        ("850", "0001", "accepted", "A", []),
        ("850", "0002", "rejected", "R", [SE01_REASON]),
    ]
    (group,) = ack.groups.to_dicts()
    assert group["verdict"] == "partially_accepted"
    assert (group["sets_included"], group["sets_received"], group["sets_accepted"]) == (2, 2, 1)
    assert group["rejected_sets"] == ["0002"]
    assert group["reasons"] == []


def test_segment_and_element_errors_in_words() -> None:
    ack = ack_of("bad_number_and_date.x12")
    rejected = ack.sets.filter(pl.col("verdict") == "rejected").row(0, named=True)
    assert rejected["reasons"] == ["5: one or more segments in error"]
    assert rejected["errors"] == [
        "PO1 (segment 5 of the set): 8: segment has data element errors",
        "element 2: 6: invalid character in data element",
    ]
    assert ack.sets.filter(pl.col("verdict") == "accepted")["errors"].to_list() == [[]]


def test_a_group_envelope_error_is_accepted_with_errors_and_says_why() -> None:
    ack = ack_of("ge01_wrong_count.x12")
    (group,) = ack.groups.to_dicts()
    assert group["verdict"] == "accepted_with_errors"
    assert group["ak901"] == "E"
    assert group["reasons"] == [
        "5: number of included transaction sets does not match actual count"
    ]
    assert set(ack.sets["verdict"]) == {"accepted"}


def test_each_interchange_is_read_with_its_own_delimiters() -> None:
    ack = ack_of("several_isa_different_delimiters.x12")
    segs = read_x12(ack.encode("latin-1")).segments
    assert segs.filter(pl.col("segment_id") == "ISA").height > 1
    assert ack.groups.height == segs.filter(pl.col("segment_id") == "AK1").height
    assert ack.groups["interchange_control"].n_unique() == ack.groups.height
    ctrl = ack_of("control_char_delimiters.x12")
    assert ctrl.groups["verdict"].to_list() == ["accepted"]
    assert ctrl.sets.height == ctrl.groups["sets_received"].sum()


@pytest.mark.parametrize("name", sorted(p.name for p in FIX.glob("*.x12")))
def test_frames_agree_with_the_997_segments(name: str) -> None:
    """Against the segments the X12 reader itself sees in the 997 (an independent parse)."""
    ack = ack_of(name)
    if not ack:
        assert ack.groups.is_empty()
        assert ack.sets.is_empty()
        return
    segs = read_x12(ack.encode("latin-1")).segments
    ak5 = [e[0] for e in segs.filter(pl.col("segment_id") == "AK5")["elements"].to_list()]
    ak9 = segs.filter(pl.col("segment_id") == "AK9")["elements"].to_list()
    assert ack.sets["ak501"].to_list() == ak5
    assert ack.groups["ak901"].to_list() == [e[0] for e in ak9]
    assert ack.groups["sets_accepted"].to_list() == [int(e[3]) for e in ak9]
    accepted = ack.sets.group_by("interchange_control", "group_control", maintain_order=True).agg(
        (pl.col("verdict") != "rejected").sum().alias("n")
    )
    assert accepted["n"].to_list() == ack.groups["sets_accepted"].to_list()


def test_a_partners_997_text_reads_the_same_way() -> None:
    text = (
        "ISA|00|          |00|          |ZZ|BUYER          |ZZ|SUP009         |260115|1200"
        "|^|00401|000000042|0|P|>\nGS|FA|BUYER|SUP009|20260115|1200|42|X|004010\n"
        "ST|997|0001\nAK1|PO|77\nAK2|850|0003\nAK5|E\nAK2|850|0004\nAK5|R|1|23\n"
        "AK9|P|2|2|1|19\nSE|8|0001\nGE|1|42\nIEA|1|000000042\n"
    )
    ack = Acknowledgment(text)
    assert ack.sets["verdict"].to_list() == ["accepted_with_errors", "rejected"]
    assert ack.sets["reasons"][1].to_list() == [
        "1: transaction set not supported",
        "23: transaction set control number not unique within the functional group",
    ]
    (group,) = ack.groups.to_dicts()
    assert group["interchange_control"] == "000000042"
    assert (group["functional_id"], group["group_control"]) == ("PO", "77")
    assert group["reasons"] == ["19: functional group control number not unique within interchange"]
    assert str(ack) == text  # still the text to send
