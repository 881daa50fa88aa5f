"""The X12 reader on 20 real public files (the shared corpus, see its SOURCES.md).

The corpus is looked for at ``../shared/x12-corpus`` beside the repository checkout, or where
the environment variable ``SCFEEDS_X12_CORPUS`` points; the tests skip, saying where they
looked, only when it is absent.

Expected delimiters, envelope counts and envelope errors are parsed from SOURCES.md itself;
expected line counts come from an independent naive split of each file.
"""

from __future__ import annotations

import ast
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from scfeeds._x12 import read_x12

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("SCFEEDS_X12_CORPUS") or REPO.parent / "shared" / "x12-corpus")
pytestmark = pytest.mark.skipif(
    not (CORPUS / "SOURCES.md").is_file(),
    reason=f"real X12 corpus not found at {CORPUS} (set SCFEEDS_X12_CORPUS)",
)
NOW = datetime(2026, 1, 15, 12, 0)
# "seg 24: GE02 123456709 != GS06 123456789" -> code of the trailer element
_CHECK = re.compile(r"seg (\d+): (\w\w\w?0\d) (\S+) != (.+)")
_CODE = {
    "GE01": "GE01_COUNT",
    "GE02": "GE02_CONTROL",
    "IEA01": "IEA01_COUNT",
    "IEA02": "IEA02_CONTROL",
    "SE01": "SE01_COUNT",
    "SE02": "SE02_CONTROL",
}


def _cell(text: str) -> str | None:
    text = text.strip()
    if text == "—":
        return None
    value = ast.literal_eval(text.replace("\\|", "|"))
    assert isinstance(value, str)
    return value


def _rows() -> list[dict[str, Any]]:
    if not (CORPUS / "SOURCES.md").is_file():
        return []
    out = []
    for line in (CORPUS / "SOURCES.md").read_text().splitlines():
        if not line.startswith("| ") or line.startswith(("| file", "|---")):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        isa, gs, st = (int(x) for x in cells[8].split("/"))
        out.append(
            {
                "file": cells[0],
                "delims": (_cell(cells[3]), _cell(cells[4]), _cell(cells[5]), _cell(cells[6])),
                "version": cells[7],
                "counts": (isa, gs, st),
                "check": cells[9],
            }
        )
    return out


ROWS = _rows()
BROKEN = [r for r in ROWS if r["check"] != "OK"]


def test_sources_md_lists_the_whole_corpus() -> None:
    assert len(ROWS) == 20
    assert {r["file"] for r in ROWS} == {p.name for p in CORPUS.glob("*.edi")}
    assert len(BROKEN) == 3


@pytest.mark.parametrize("row", ROWS, ids=[r["file"] for r in ROWS])
def test_delimiters_counts_and_envelope_errors(row: dict[str, Any]) -> None:
    res = read_x12(CORPUS / row["file"])
    env = res.envelopes
    counts = (env["interchange_index"].n_unique(), env["group_index"].n_unique(), env.height)
    assert counts == row["counts"]
    delims = env.select(
        "element_separator", "component_separator", "repetition_separator", "segment_terminator"
    ).unique()
    assert delims.rows() == [row["delims"]]
    assert env["isa_version"].unique().to_list() == [row["version"]]
    # every set of every file is intact, broken trailers included: all delivered
    assert env["valid"].all()
    assert (env["segment_count"] == env["declared_count"]).all()
    if row["check"] == "OK":
        assert res.errors.height == 0, res.errors
        assert env["group_valid"].all()
        assert env["interchange_valid"].all()
        return
    m = _CHECK.match(row["check"])
    assert m is not None
    seg, element, found, expected = m.groups()
    assert res.errors.select("code", "position", "element").rows() == [
        (_CODE[element], f"segment {seg}", element)
    ]
    message = res.errors["message"][0]
    assert found in message
    assert expected.split()[-2 if "sets" in expected else -1] in message
    assert res.errors["source"][0] == str(CORPUS / row["file"])


def _naive_count(row: dict[str, Any], segment_id: str, set_id: str) -> int:
    """Independent count: plain split with the documented delimiters, inside sets of a type."""
    ele, _, _, term = row["delims"]
    data = (CORPUS / row["file"]).read_bytes().removeprefix(b"\xef\xbb\xbf").decode("latin-1")
    if term not in "\r\n":
        data = data.replace("\r", "").replace("\n", "")
    count, current = 0, None
    for s in data.split(term):
        elements = s.strip(" \r\n").split(ele)
        if elements[0] == "ST":
            current = elements[1]
        count += elements[0] == segment_id and current == set_id
    return count


@pytest.mark.parametrize("row", ROWS, ids=[r["file"] for r in ROWS])
def test_line_counts_match_a_naive_split(row: dict[str, Any]) -> None:
    res = read_x12(CORPUS / row["file"], segments=False)
    assert res.po_lines.height == _naive_count(row, "PO1", "850")
    assert res.invoice_lines.height == _naive_count(row, "IT1", "810")
    assert res.asn_lines.height == _naive_count(row, "LIN", "856")


def test_segments_table_holds_every_segment() -> None:
    row = next(r for r in ROWS if r["file"] == "856_1.edi")
    res = read_x12(CORPUS / row["file"])
    assert res.segments.height == 194  # SOURCES.md: 194 segments (SE01 = 190, plus ISA/GS/GE/IEA)
    assert res.segments["segment"].to_list() == list(range(1, 195))
    assert res.envelopes["segment_count"].to_list() == [190]
    hl = res.segments.filter(pl.col("segment_id") == "HL")
    levels = hl["elements"].list.get(2).value_counts().sort("elements")
    assert dict(levels.rows()) == {"I": 58, "O": 1, "P": 3, "S": 1}


def test_856_tree_gives_every_item_its_order_and_pack() -> None:
    res = read_x12(CORPUS / "856_1.edi")
    asn = res.asn_lines
    assert asn.height == 58
    assert asn["po_number"].unique().to_list() == ["ordernumber"]
    assert asn["pack_id"].n_unique() == 3
    sn102 = re.findall(rb"SN1\*\*(\d+)\*", (CORPUS / "856_1.edi").read_bytes())
    assert asn["qty_shipped"].sum() == sum(int(q) for q in sn102) > 0
    # S/O/I without packs (856_3): pack_id null, PO from PRF
    s_o_i = read_x12(CORPUS / "856_3.edi").asn_lines
    assert s_o_i["pack_id"].is_null().all()
    assert s_o_i["po_number"].to_list() == ["99999817", "99999817"]


def test_810_line_amounts_and_supplier_from_n1() -> None:
    inv = read_x12(CORPUS / "810_1.edi").invoice_lines
    assert inv["supplier_id"].unique().to_list() == ["2055574240000"]  # N1*VN N104
    first = inv.row(0, named=True)
    assert first["line_amount"] == first["qty_invoiced"] * first["unit_price"]


@pytest.mark.parametrize("row", BROKEN, ids=[r["file"] for r in BROKEN])
def test_997_for_broken_files_accepts_intact_sets_and_flags_the_group(
    row: dict[str, Any],
) -> None:
    res = read_x12(CORPUS / row["file"])
    text = res.acknowledgment(now=NOW)
    back = read_x12(text.encode("latin-1"))
    assert back.errors.height == 0, back.errors
    assert back.envelopes["set_id"].unique().to_list() == ["997"]
    # the 997 uses the sender's delimiters
    ele, _comp, _, term = row["delims"]
    assert back.envelopes.select("element_separator", "segment_terminator").unique().rows() == [
        (ele, term)
    ]
    seg = back.segments
    ak2 = seg.filter(pl.col("segment_id") == "AK2")["elements"].to_list()
    assert sorted((a[0], a[1]) for a in ak2) == sorted(
        res.envelopes.select("set_id", "set_control").rows()
    )
    ak5 = seg.filter(pl.col("segment_id") == "AK5")["elements"].list.get(0).to_list()
    assert ak5 == ["A"] * res.envelopes.height
    ak9 = seg.filter(pl.col("segment_id") == "AK9")["elements"].to_list()
    code = _CODE[_CHECK.match(row["check"]).group(2)]  # type: ignore[union-attr]
    if code.startswith("GE"):
        # the group with the broken trailer: accepted with errors, AK905 names the rule
        assert ["E", *ak9[0][1:4], {"GE01_COUNT": "5", "GE02_CONTROL": "4"}[code]] == ak9[0]
        assert all(a[0] == "A" for a in ak9[1:])
    else:  # interchange trailer errors belong in a TA1, not the 997
        assert all(a[0] == "A" for a in ak9)
    # AK1 echoes each group's functional ID and control number
    ak1 = seg.filter(pl.col("segment_id") == "AK1")["elements"].to_list()
    groups = res.envelopes.select("functional_id", "group_control").unique(maintain_order=True)
    assert [(a[0], a[1]) for a in ak1] == groups.rows()


@pytest.mark.parametrize("name", ["810_1.edi", "810_5.edi"])
def test_810_tds_equals_lines_plus_charges(name: str) -> None:
    """TDS01 (two implied decimals) = sum of IT1 amounts + SAC charges - SAC allowances."""
    res = read_x12(CORPUS / name)
    lines = res.invoice_lines.group_by("set_control").agg(pl.col("line_amount").sum())
    sac = res.invoice_charges.with_columns(
        signed=pl.when(pl.col("indicator") == "A").then(-pl.col("amount")).otherwise("amount")
    )
    charges = sac.group_by("set_control").agg(pl.col("signed").sum())
    check = (
        res.invoice_totals.join(lines, on="set_control")
        .join(charges, on="set_control", how="left")
        .with_columns(pl.col("signed").fill_null(0))
    )
    assert check.height == 2
    assert (check["total_amount"] == check["line_amount"] + check["signed"]).all()
    sac_segments = res.segments.filter(pl.col("segment_id") == "SAC")["segment"]
    assert res.invoice_charges["position"].to_list() == [f"segment {n}" for n in sac_segments]
