"""scfeeds.synth: determinism, X12 envelopes (checked independently), truth vs documents."""

from __future__ import annotations

import argparse
import datetime as dt
import decimal
import hashlib
import io
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest

from scfeeds import synth
from scfeeds._presets import PRESETS
from scfeeds._synth.config import make_supplier
from scfeeds.exceptions import ConfigurationError
from scfeeds.schemas import TABLES, schema

# -- an independent X12 envelope checker (deliberately not scfeeds._x12) ---------------------

_ISA_WIDTHS = (3, 2, 10, 2, 10, 2, 15, 2, 15, 6, 4, 1, 5, 9, 1, 1, 1)


@dataclass
class X12Set:
    group_control: str
    set_control: str
    first_segment: int  # 1-based ordinal of ST in the file
    segments: list[list[str]]


@dataclass
class X12Check:
    segments: list[list[str]]
    sets: list[X12Set] = field(default_factory=list)
    errors: list[tuple[str, int]] = field(default_factory=list)  # (rule, 1-based segment)
    n_groups: int = 0


def check_x12(data: bytes) -> X12Check:
    """Split on the ISA's own delimiters and check every count and control number."""
    text = data.decode("ascii")
    assert text.startswith("ISA")
    elem, comp, term = text[3], text[104], text[105]
    isa = text[:105].split(elem)
    assert [len(e) for e in isa] == list(_ISA_WIDTHS), isa
    assert isa[16] == comp
    assert comp != elem
    assert term not in (elem, comp)
    assert isa[12] == "00401"
    raw = text.split(term)
    segs = [s.strip("\r\n") if term not in "\r\n" else s for s in raw]
    truncated = segs[-1] != ""
    if not truncated:
        segs = segs[:-1]
    out = X12Check(segments=[s.split(elem) for s in segs])
    if truncated:
        out.errors.append(("TRUNCATED", len(segs)))
        return out
    s = out.segments
    assert s[-1][0] == "IEA"
    i = 1
    while s[i][0] == "GS":
        gs = s[i]
        assert gs[8] == "004010"
        gs_at = i
        i += 1
        n_sets = 0
        while s[i][0] == "ST":
            start = i
            while s[i][0] != "SE":
                i += 1
            se = s[i]
            if int(se[1]) != i - start + 1:
                out.errors.append(("SE01_COUNT", i + 1))
            if se[2] != s[start][2]:
                out.errors.append(("SE02_CONTROL", i + 1))
            out.sets.append(X12Set(gs[6], s[start][2], start + 1, s[start : i + 1]))
            n_sets += 1
            i += 1
        assert s[i][0] == "GE", s[i]
        if int(s[i][1]) != n_sets:
            out.errors.append(("GE01_COUNT", i + 1))
        if s[i][2] != s[gs_at][6]:
            out.errors.append(("GE02_CONTROL", i + 1))
        out.n_groups += 1
        i += 1
    assert s[i][0] == "IEA"
    assert i == len(s) - 1
    if int(s[i][1]) != out.n_groups:
        out.errors.append(("IEA01_COUNT", i + 1))
    if s[i][2] != isa[13]:
        out.errors.append(("IEA02_CONTROL", i + 1))
    return out


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(make_world: Callable[..., Path]) -> Path:
    return make_world(seed=11, pos=240, damaged=True)


@pytest.fixture(scope="module")
def frames(world: Path) -> dict[str, pl.DataFrame]:
    # a world without performance=True has no 855s: its po_acks table is empty
    return {t: synth.load_world(world, t).collect() for t in TABLES if t != "po_acks"}


def _tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# -- determinism -----------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    kw = {"pos": 60, "damaged": True}
    synth.generate(tmp_path / "a", seed=5, **kw)  # type: ignore[arg-type]
    synth.generate(tmp_path / "b", seed=5, **kw)  # type: ignore[arg-type]
    synth.generate(tmp_path / "c", seed=6, **kw)  # type: ignore[arg-type]
    a, b, c = (_tree(tmp_path / x) for x in "abc")
    assert len(a) > 20
    assert a == b
    shared = set(a) & set(c)
    assert any(a[k] != c[k] for k in shared)


def test_rerun_replaces_previous_world_and_refuses_foreign_folder(tmp_path: Path) -> None:
    synth.generate(tmp_path / "w", seed=1, pos=30, formats=("x12",))
    before = _tree(tmp_path / "w")
    synth.generate(tmp_path / "w", seed=1, pos=30, formats=("x12",))
    assert _tree(tmp_path / "w") == before
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ConfigurationError, match="not empty"):
        synth.generate(foreign, pos=10)


# -- layout and world ------------------------------------------------------------------------


def test_world_schemas_and_catalog_agree(world: Path, frames: dict[str, pl.DataFrame]) -> None:
    catalog = pl.read_parquet(world / "catalog.parquet")
    for table in frames:
        assert frames[table].schema == schema(table)
        per_file = frames[table].group_by("source").len()
        joined = catalog.filter(pl.col("table") == table).join(
            per_file, left_on="path", right_on="source", how="full"
        )
        assert joined.height > 0
        assert (joined["records"] == joined["len"]).all(), table
    for row in catalog.iter_rows(named=True):
        data = (world / row["path"]).read_bytes()
        assert len(data) == row["bytes"]
        assert hashlib.sha256(data).hexdigest() == row["sha256"]
        ext = row["path"].rsplit(".", 1)[-1]
        assert ext == row["format"]
        assert row["path"].startswith(f"feeds/{row['supplier_id']}/{row['table']}/")
    assert catalog["id"].is_unique().all()
    assert set(catalog["format"]) == {"x12", "csv", "xlsx", "xml"}
    conv = pl.read_parquet(world / "world" / "conversions.parquet")
    assert conv.columns == ["item_id", "from_uom", "to_uom", "factor"]
    assert (conv["factor"] > 1).all()


def test_line_numbers_canonical_and_supplier_ids_match_folders(
    frames: dict[str, pl.DataFrame],
) -> None:
    for table in frames:
        f = frames[table]
        assert not f["line_number"].str.contains(r"^0|\s").any()
        folder = f["source"].str.extract(r"^feeds/(SUP\d{3})/")
        assert (folder == f["supplier_id"]).all()


# -- X12 -------------------------------------------------------------------------------------


def test_x12_envelopes_valid_by_independent_check(
    world: Path, frames: dict[str, pl.DataFrame]
) -> None:
    catalog = pl.read_parquet(world / "catalog.parquet").filter(pl.col("format") == "x12")
    assert catalog.height >= 6
    seen_dialects: set[tuple[str, str]] = set()
    credits_seen = 0
    for row in catalog.iter_rows(named=True):
        data = (world / row["path"]).read_bytes()
        check = check_x12(data)
        assert check.errors == [], row["path"]
        assert check.sets
        text = data.decode("ascii")
        seen_dialects.add((text[3], text[105]))
        sup = make_supplier(int(row["supplier_id"][3:]) - 1)
        isa = text[:105].split(text[3])
        # the buyer sends 850s to the supplier; the supplier sends 856s and 810s
        partner = isa[8] if row["table"] == "po_lines" else isa[6]
        assert partner.strip() == sup.isa_id
        set_id = {"po_lines": "850", "asn_lines": "856", "invoice_lines": "810"}[row["table"]]
        for s in check.sets:
            assert s.segments[0][1] == set_id
            n1 = [seg for seg in s.segments if seg[0] == "N1" and seg[1] in ("SU", "SE", "VN")]
            if row["table"] == "po_lines" and not sup.po_n1:
                assert n1 == []  # the receiver is the supplier
                assert partner.strip() == row["supplier_id"]
            else:
                assert [seg[4] for seg in n1] == [row["supplier_id"]]
            if set_id == "810":  # a credit memo is BIG07 = CR with positive quantities
                (big,) = [seg for seg in s.segments if seg[0] == "BIG"]
                credit = len(big) > 7 and big[7] == "CR"
                assert all(
                    (seg[2] != "0") and not seg[2].startswith("-")
                    for seg in s.segments
                    if seg[0] == "IT1"
                )
                credits_seen += credit
        # world rows: X12 controls and positions point at the segment that opens each line
        rows = frames[row["table"]].filter(pl.col("source") == row["path"])
        assert rows.height == row["records"]
        opener = {"po_lines": "PO1", "asn_lines": "HL", "invoice_lines": "IT1"}[row["table"]]
        for r in rows.iter_rows(named=True):
            n = int(r["position"].removeprefix("segment "))
            seg = check.segments[n - 1]
            assert seg[0] == opener
            assert r["interchange_control"] == isa[13]
            if opener == "HL":
                assert seg[3] == "I"
                seg = check.segments[n]  # LIN
                assert seg[0] == "LIN"
                assert check.segments[n + 1][2] == str(int(r["qty_shipped"]))
            else:
                qty = int(r[f"qty_{'ordered' if opener == 'PO1' else 'invoiced'}"])
                assert seg[2] == str(abs(qty))
            assert seg[1].lstrip("0") == r["line_number"]
            pairs = dict(zip(seg[-4::2], seg[-3::2], strict=True))
            assert pairs["BP"] == r["item_id"]
    assert len(seen_dialects) >= 3  # delimiters vary by supplier
    assert credits_seen > 0


def test_x12_several_groups_and_sets_per_interchange(tmp_path: Path) -> None:
    cfg = synth.SynthConfig(x12_sets_per_file=500)
    synth.generate(tmp_path, seed=2, pos=600, suppliers=2, formats=("x12",), config=cfg)
    catalog = pl.read_parquet(tmp_path / "catalog.parquet").filter(pl.col("format") == "x12")
    checks = [check_x12((tmp_path / p).read_bytes()) for p in catalog["path"]]
    assert all(c.errors == [] for c in checks)
    assert max(c.n_groups for c in checks) >= 2  # SUP002 closes a group every 100 sets
    assert max(len(c.sets) for c in checks) >= 100


def test_tds_total_and_asn_tree(world: Path) -> None:
    catalog = pl.read_parquet(world / "catalog.parquet").filter(pl.col("format") == "x12")
    for path, table in catalog.select("path", "table").iter_rows():
        check = check_x12((world / path).read_bytes())
        for s in check.sets:
            if table == "invoice_lines":
                total = sum(
                    decimal.Decimal(seg[2]) * decimal.Decimal(seg[4])
                    for seg in s.segments
                    if seg[0] == "IT1"
                )
                (tds,) = [seg for seg in s.segments if seg[0] == "TDS"]
                assert decimal.Decimal(tds[1]) / 100 == total
            if table == "asn_lines":
                hls = [seg for seg in s.segments if seg[0] == "HL"]
                ids = [int(h[1]) for h in hls]
                assert ids == list(range(1, len(hls) + 1))
                levels = {h[1]: h[3] for h in hls}
                parent_level = {"S": None, "O": "S", "P": "O", "I": "P"}
                for h in hls:
                    assert (levels.get(h[2]) if h[2] else None) == parent_level[h[3]]


# -- truth vs documents ----------------------------------------------------------------------


def _line_sums(world: Path, frames: dict[str, pl.DataFrame]) -> pl.DataFrame:
    conv = pl.read_parquet(world / "world" / "conversions.parquet")
    po = frames["po_lines"].select(
        "supplier_id", "po_number", "line_number", "item_id", "uom", "qty_ordered", "unit_price"
    )

    def to_po_unit(f: pl.DataFrame, qty: str) -> pl.DataFrame:
        f = f.join(
            po.select("po_number", "line_number", po_uom="uom"),
            on=["po_number", "line_number"],
            how="inner",
        ).join(
            conv.select("item_id", uom="from_uom", factor="factor"),
            on=["item_id", "uom"],
            how="left",
        )
        return f.with_columns(
            q=pl.when(pl.col("uom") == pl.col("po_uom"))
            .then(pl.col(qty))
            .when(pl.col("factor").is_not_null())
            .then(pl.col(qty) * pl.col("factor"))
            .otherwise(None)
        )

    asn = to_po_unit(frames["asn_lines"], "qty_shipped")
    inv = to_po_unit(
        frames["invoice_lines"].filter(~pl.col("source").str.contains("_resend")), "qty_invoiced"
    )
    rec = frames["receipts"]
    keys = ["po_number", "line_number"]
    return (
        po.join(asn.group_by(keys).agg(R=pl.col("q").sum()), on=keys, how="left")
        .join(rec.group_by(keys).agg(RC=pl.col("qty_received").sum()), on=keys, how="left")
        .join(
            inv.group_by(keys).agg(
                I=pl.col("q").sum(),
                inv_uoms=pl.col("uom").unique(),
                bad_uom=pl.col("q").is_null().any(),
                prices=(pl.col("line_amount") / pl.col("q")).unique(),
                credited=pl.col("q").filter(pl.col("q") < 0).sum(),
            ),
            on=keys,
            how="left",
        )
        .with_columns(pl.col("R", "RC", "I").fill_null(0))
    )


def test_every_fault_kind_present_and_codes_match(world: Path) -> None:
    truth = synth.load_truth(world)
    assert set(truth["fault"]) == set(synth.FAULTS)
    for fault, codes in synth.FAULTS.items():
        rows = truth.filter(pl.col("fault") == fault)
        per_instance = rows.group_by("po_number", "line_number", "invoice_number").agg(
            pl.col("code").sort()
        )
        # a fault with no code (a credit memo netting out) has one row, code null
        want = sorted(codes) if codes else [None]
        assert all(c == want for c in per_instance["code"].to_list()), fault


def test_truth_consistent_with_documents(world: Path, frames: dict[str, pl.DataFrame]) -> None:
    sums = _line_sums(world, frames)
    truth = synth.load_truth(world)
    line_faults = truth.filter(pl.col("level") == "line").unique(
        ["fault", "po_number", "line_number"]
    )
    lines = sums.join(
        line_faults.select("po_number", "line_number", "fault"),
        on=["po_number", "line_number"],
        how="left",
    )
    assert (lines["R"] == lines["RC"]).all()  # received = shipped, always
    ratio_r = (lines["R"].cast(pl.Float64) / lines["qty_ordered"].cast(pl.Float64)).to_list()
    ratio_i = (lines["I"].cast(pl.Float64) / lines["qty_ordered"].cast(pl.Float64)).to_list()
    checked = set()
    for row, rr, ri in zip(lines.iter_rows(named=True), ratio_r, ratio_i, strict=True):
        f, o, r, i = row["fault"], row["qty_ordered"], row["R"], row["I"]
        if f is None:
            assert (r, i) == (o, o), row
            assert row["prices"] == [row["unit_price"]], row
            continue
        checked.add(f)
        if f == "not_shipped":
            assert (r, i) == (0, 0)
        elif f == "short_shipment":
            assert 0.5 <= rr <= 0.9
            assert o - r >= 1
            assert i == r
        elif f == "short_shipment_billed_full":
            assert 0.5 <= rr <= 0.9
            assert o - r >= 1
            assert i == o
        elif f == "over_shipment":
            assert 1.1 <= rr <= 1.5
            assert i == o
        elif f == "not_invoiced":
            assert r == o
            assert i == 0
        elif f == "over_invoiced":
            assert r == o
            assert 1.1 <= ri <= 1.5
        elif f == "invoiced_not_received":
            assert r == 0
            assert i == o
        elif f == "price_variance":
            (p,) = row["prices"]
            change = abs(float(p / row["unit_price"]) - 1)
            assert 0.10 <= change <= 0.25
            assert r == o
            assert i == o
        elif f == "credit_memo":
            # billed 110-150 %, the excess credited: nets to the ordered quantity
            assert r == o
            assert i == o
            assert row["credited"] is not None
            assert 0.1 * float(o) <= float(-row["credited"]) <= 0.5 * float(o) + 1
        elif f == "uom_mismatch":
            assert row["bad_uom"]
            assert row["inv_uoms"] == ["BX"]
            assert r == o
    assert checked == {
        f for f in synth.FAULTS if truth.filter(pl.col("fault") == f)["level"].first() == "line"
    }
    # clean pack-size lines exist and match exactly through conversions
    assert frames["asn_lines"].filter(pl.col("uom") == "CS").height > 0


def _normalise(number: str) -> str:
    import re

    lower = re.sub(r"[^a-z0-9]", "", number.lower())
    return re.sub(r"\d+", lambda m: m.group(0).lstrip("0") or "0", lower)


def _typed(number: str) -> str:
    import re

    return re.sub(r"[^a-z0-9]", "", number.lower())


def _distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def test_invoice_level_faults_match_documents(world: Path, frames: dict[str, pl.DataFrame]) -> None:
    truth = synth.load_truth(world).filter(pl.col("level") == "invoice")
    inv = frames["invoice_lines"]
    headers = inv.group_by("supplier_id", "invoice_number", "source").agg(
        pl.col("invoice_date").first(),
        pl.col("po_number").first(),
        total=pl.col("line_amount").sum(),
        lines=pl.struct("line_number", "qty_invoiced", "unit_price").sort_by("line_number"),
    )
    po_numbers = set(frames["po_lines"]["po_number"])
    for row in truth.iter_rows(named=True):
        copy = headers.filter(
            (pl.col("invoice_number") == row["invoice_number"])
            & (pl.col("supplier_id") == row["supplier_id"])
        )
        if row["fault"] == "no_po":
            assert row["po_number"] not in po_numbers
            assert copy.height == 1
            continue
        copy = copy.filter(pl.col("source").str.contains("_resend"))
        assert copy.height == 1, row
        c = copy.row(0, named=True)
        same_supplier = headers.filter(
            (pl.col("supplier_id") == c["supplier_id"]) & (pl.col("source") != c["source"])
        )
        if row["fault"] == "duplicate_invoice":
            orig = same_supplier.filter(pl.col("invoice_number") == c["invoice_number"])
        elif row["fault"] == "duplicate_rekeyed":
            assert c["invoice_number"] == c["invoice_number"].lower()
            orig = same_supplier.filter(
                pl.col("invoice_number").map_elements(_normalise, return_dtype=pl.String)
                == _normalise(c["invoice_number"])
            )
        else:
            # one keystroke off the original as typed (letters and digits, padding kept)
            orig = same_supplier.filter(
                pl.col("invoice_number").map_elements(
                    lambda n, x=c["invoice_number"]: _distance(_typed(n), _typed(x)),
                    return_dtype=pl.Int64,
                )
                == 1
            )
        assert orig.height == 1, row
        o = orig.row(0, named=True)
        assert o["lines"] == c["lines"]
        assert o["total"] == c["total"]
        assert o["source"] < c["source"]  # the original is seen first
        days = (c["invoice_date"] - o["invoice_date"]).days
        assert days == 0 if row["fault"] != "duplicate_suspect" else 1 <= days <= 3


def test_invoice_numbers_are_sequential_per_supplier_in_date_order(
    frames: dict[str, pl.DataFrame],
) -> None:
    """Real suppliers number invoices (and credit memos) in one running sequence: clean
    numbers one edit apart, several on one billing day."""
    inv = frames["invoice_lines"].filter(~pl.col("source").str.contains("_resend"))
    docs = inv.group_by("supplier_id", "invoice_number").agg(pl.col("invoice_date").first())
    for (supplier,), d in docs.group_by("supplier_id"):
        numbers = sorted(d["invoice_number"])
        assert numbers == [f"INV-{k:06d}" for k in range(1, len(numbers) + 1)], supplier
        dates = d.sort("invoice_number")["invoice_date"]
        assert dates.is_sorted(), supplier  # one batch: numbered in date order
        assert len(numbers) > 10
        # neighbours are one edit apart: the number alone cannot tell a copy
        assert _distance(numbers[0], numbers[1]) == 1
    per_day = docs.group_by("supplier_id", "invoice_date").len()
    assert per_day["len"].max() >= 3  # many invoices on one (billing) day
    # credit memos are invoices with negative quantities, in the same sequence
    assert inv.filter(pl.col("qty_invoiced") < 0).height > 0


def test_rekeyed_copies_are_one_keystroke_off_and_never_an_issued_number(
    world: Path, frames: dict[str, pl.DataFrame]
) -> None:
    inv = frames["invoice_lines"].filter(~pl.col("source").str.contains("_resend"))
    issued = {
        (sup, _normalise(n))
        for sup, n in inv.select("supplier_id", "invoice_number").unique().iter_rows()
    }
    truth = synth.load_truth(world).filter(pl.col("fault") == "duplicate_suspect")
    assert truth.height > 0
    for supplier, number in truth.select("supplier_id", "invoice_number").iter_rows():
        assert (supplier, _normalise(number)) not in issued, number
        near = [
            n
            for s, n in inv.select("supplier_id", "invoice_number").unique().iter_rows()
            if s == supplier and _distance(_typed(n), _typed(number)) == 1
        ]
        assert near, number


def test_lines_per_po_takes_an_int_or_a_range(tmp_path: Path) -> None:
    s = synth.generate(tmp_path / "a", seed=1, pos=20, lines_per_po=3, formats=("csv",))
    assert s.counts["po_lines"] == 60
    s = synth.generate(tmp_path / "b", seed=1, pos=20, lines_per_po=(2, 2), formats=("csv",))
    assert s.counts["po_lines"] == 40
    for bad in (0, (3, 1), "3", (1, 2, 3), True):
        with pytest.raises(ConfigurationError, match="lines_per_po"):
            synth.generate(tmp_path / "c", seed=1, pos=5, lines_per_po=bad)  # type: ignore[arg-type]


def test_some_850s_name_no_supplier_and_the_receiver_is_it(world: Path) -> None:
    """As in real files: the buyer sends the 850 (ISA06), the supplier receives it (ISA08)."""
    catalog = pl.read_parquet(world / "catalog.parquet").filter(
        (pl.col("format") == "x12") & (pl.col("table") == "po_lines")
    )
    without = 0
    for supplier, path in catalog.select("supplier_id", "path").iter_rows():
        check = check_x12((world / path).read_bytes())
        isa = check.segments[0]
        assert isa[6].strip() == "SCFEEDSBUYER"
        for st in check.sets:
            n1 = [seg for seg in st.segments if seg[0] == "N1" and seg[1] in ("SU", "SE", "VN")]
            if not n1:
                without += 1
                assert isa[8].strip() == supplier
    assert without > 0


# -- exports and cXML hold exactly the world rows --------------------------------------------


def _csv_value(text: str, *, preset: str) -> decimal.Decimal:
    p = PRESETS[preset]
    if p.thousands:
        text = text.replace(p.thousands, "")
    if p.decimal_comma:
        text = text.replace(",", ".")
    return decimal.Decimal(text)


def test_csv_files_hold_world_rows(world: Path, frames: dict[str, pl.DataFrame]) -> None:
    catalog = pl.read_parquet(world / "catalog.parquet").filter(pl.col("format") == "csv")
    assert set(catalog["table"]) >= {"receipts", "po_lines"}
    qty_col = {
        "po_lines": "qty_ordered",
        "asn_lines": "qty_shipped",
        "invoice_lines": "qty_invoiced",
        "receipts": "qty_received",
    }
    for row in catalog.iter_rows(named=True):
        preset = PRESETS[make_supplier(int(row["supplier_id"][3:]) - 1).preset]
        text = (world / row["path"]).read_bytes().decode(preset.encoding)
        got = pl.read_csv(io.StringIO(text), separator=preset.delimiter, infer_schema=False)
        header = preset.header(row["table"])
        assert got.columns == list(header.values())
        want = frames[row["table"]].filter(pl.col("source") == row["path"])
        assert want["position"].to_list() == [f"row {i}" for i in range(1, want.height + 1)]
        for col in ("po_number", "line_number", "item_id", "supplier_id"):
            assert got[header[col]].to_list() == want[col].to_list()
        qty = [_csv_value(v, preset=preset.name) for v in got[header[qty_col[row["table"]]]]]
        assert qty == want[qty_col[row["table"]]].to_list()
        date_col = next(c for c in header if c.endswith("date"))
        dates = [dt.datetime.strptime(v, preset.date_format).date() for v in got[header[date_col]]]
        assert dates == want[date_col].to_list()


def test_cxml_positions_resolve(world: Path, frames: dict[str, pl.DataFrame]) -> None:
    catalog = pl.read_parquet(world / "catalog.parquet").filter(pl.col("format") == "xml")
    assert catalog.height > 0
    attr = {"po_lines": "qty_ordered", "asn_lines": "qty_shipped", "invoice_lines": "qty_invoiced"}
    for row in catalog.head(40).iter_rows(named=True):
        root = ET.parse(world / row["path"]).getroot()
        want = frames[row["table"]].filter(pl.col("source") == row["path"])
        assert want.height == row["records"]
        for r in want.iter_rows(named=True):
            el = root.find("." + r["position"].removeprefix("/cXML"))
            assert el is not None, r["position"]
            assert decimal.Decimal(el.get("quantity", "nan")) == r[attr[row["table"]]]


# -- damaged files ---------------------------------------------------------------------------


def test_damaged_files_are_damaged_as_declared(
    world: Path, frames: dict[str, pl.DataFrame]
) -> None:
    damaged = synth.load_damaged(world)
    assert set(damaged["rule"]) == set(synth.DAMAGE_KINDS.values())
    for row in damaged.iter_rows(named=True):
        data = (world / row["path"]).read_bytes()
        source = frames[row["table"]].filter(pl.col("source") == row["source"])
        assert data != (world / row["source"]).read_bytes()
        if row["format"] == "x12":
            check = check_x12(data)
            n = int(row["position"].removeprefix("segment "))
            assert check.errors == [(row["rule"], n)]
            if row["rule"] == "TRUNCATED":
                st = [s[2] for s in check.segments if s[0] == "ST"]
                # every set before the last ST is complete; the last one is cut
                good = source.filter(pl.col("set_control").is_in(st[:-1])).height
            else:
                bad = {
                    s.set_control
                    for s in check.sets
                    if row["rule"] == "SE01_COUNT" and s.segments[-1] is check.segments[n - 1]
                }
                good = source.filter(~pl.col("set_control").is_in(list(bad))).height
            assert good == row["good_records"]
        elif row["format"] == "xml":
            with pytest.raises(ET.ParseError, match="mismatched tag"):
                ET.fromstring(data)
            # the element named by position is the one whose closing tag was broken
            original = ET.parse(world / row["source"]).getroot()
            tag = row["position"].rsplit("/", 1)[-1]
            assert original.find("." + row["position"].removeprefix("/cXML")) is not None
            assert data.count(f"</{tag}>".encode()) == 0
            assert row["good_records"] == 0
        else:
            preset = PRESETS[make_supplier(int(row["source"].split("/")[1][3:]) - 1).preset]
            header = data.decode(preset.encoding).splitlines()[0].split(preset.delimiter)
            assert preset.header(row["table"])["po_number"] not in header
            assert row["good_records"] == 0


def test_damage_kinds_on_request_only(tmp_path: Path) -> None:
    synth.generate(tmp_path / "a", pos=20, formats=("x12",))
    assert not (tmp_path / "a" / "damaged").exists()
    assert synth.load_damaged(tmp_path / "a").height == 0
    with pytest.raises(ConfigurationError, match="xml_malformed"):
        synth.generate(tmp_path / "b", pos=20, formats=("x12",), damaged=["xml_malformed"])
    with pytest.raises(ConfigurationError, match="unknown damage"):
        synth.generate(tmp_path / "c", pos=20, damaged=["bogus"])


# -- options ---------------------------------------------------------------------------------


def test_faults_none_is_clean_and_rates_mapping(tmp_path: Path) -> None:
    s = synth.generate(tmp_path / "clean", seed=3, pos=80, formats=("x12",), faults="none")
    assert s.faults == 0
    assert synth.load_truth(tmp_path / "clean").height == 0
    s = synth.generate(
        tmp_path / "some", seed=3, pos=200, formats=("x12",), faults={"not_shipped": 0.2}
    )
    truth = synth.load_truth(tmp_path / "some")
    assert set(truth["fault"]) == {"not_shipped"}
    assert s.faults == truth.height > 20
    with pytest.raises(ConfigurationError, match="unknown fault"):
        synth.generate(tmp_path / "bad", faults={"lost_in_space": 0.1})
    with pytest.raises(ConfigurationError, match="formats"):
        synth.generate(tmp_path / "bad", formats=("edifact",))


def test_supplier_formats_and_xml_cap(tmp_path: Path) -> None:
    cfg = synth.SynthConfig(
        supplier_formats={"SUP001": {"invoice_lines": ("xml",), "po_lines": ("csv", "xlsx")}},
        xml_max_files=5,
    )
    synth.generate(tmp_path, seed=4, pos=120, suppliers=1, formats=("x12", "xml"), config=cfg)
    cat = pl.read_parquet(tmp_path / "catalog.parquet")
    inv = cat.filter(pl.col("table") == "invoice_lines")
    assert inv.filter(pl.col("format") == "xml").height == 5  # the cap; resends excluded
    assert set(inv["format"]) == {"xml", "x12"}  # overflow to the first non-XML format
    assert set(cat.filter(pl.col("table") == "po_lines")["format"]) == {"csv", "xlsx"}


def test_xlsx_rows_capped(tmp_path: Path) -> None:
    cfg = synth.SynthConfig(
        supplier_formats={"SUP001": {"po_lines": ("xlsx",)}}, xlsx_max_rows=50, batch_pos=30
    )
    synth.generate(tmp_path, seed=4, pos=120, suppliers=1, formats=("x12", "xlsx"), config=cfg)
    po = pl.read_parquet(tmp_path / "catalog.parquet").filter(pl.col("table") == "po_lines")
    xlsx = po.filter(pl.col("format") == "xlsx")
    assert 30 < xlsx["records"].sum() <= 50  # whole documents up to the cap, over batches
    assert po.filter(pl.col("format") == "x12")["records"].sum() > 200


def test_summary_repr_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    synth.add_cli(sub)
    args = parser.parse_args(
        [
            "synth",
            str(tmp_path),
            "--seed",
            "4",
            "--pos",
            "30",
            "--suppliers",
            "2",
            "--lines-per-po",
            "2-3",
            "--formats",
            "x12,csv",
            "--faults",
            "none",
            "--damaged",
        ]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("SynthSummary(")
    assert "lines/s=" in out
    po = synth.load_world(tmp_path, "po_lines").collect()
    assert po.group_by("po_number").len()["len"].is_between(2, 3).all()
    assert set(po["supplier_id"]) == {"SUP001", "SUP002"}
    assert pl.read_parquet(tmp_path / "damaged.parquet").height == 4  # no XML: no xml_malformed


# -- memory stays flat -----------------------------------------------------------------------

_RSS_SCRIPT = """
import json, resource, sys
from scfeeds import synth
s = synth.generate(sys.argv[1], seed=1, pos=int(sys.argv[2]), formats=("x12", "csv"))
print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "lines": s.counts["po_lines"], "rate": s.lines_per_s}))
"""


@pytest.mark.slow
def test_peak_rss_does_not_grow_with_size(tmp_path: Path) -> None:
    def run(pos: int) -> dict[str, float]:
        out = subprocess.run(
            [sys.executable, "-c", _RSS_SCRIPT, str(tmp_path / str(pos)), str(pos)],
            check=True,
            capture_output=True,
            text=True,
        )
        return json.loads(out.stdout)  # type: ignore[no-any-return]

    small = run(10_000)  # one batch of SynthConfig.batch_pos POs
    large = run(120_000)  # twelve batches, ~540k PO lines
    assert large["lines"] > 10 * small["lines"]
    assert large["rss_mb"] < small["rss_mb"] * 1.3 + 64, (small, large)


def test_progress_reports_each_batch_and_batches_do_not_change_the_answer_key(
    tmp_path: Path,
) -> None:
    calls: list[tuple[int, int]] = []
    cfg = synth.SynthConfig(batch_pos=40)
    s = synth.generate(
        tmp_path / "small_batches",
        seed=8,
        pos=100,
        formats=("x12",),
        config=cfg,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(40, 100), (80, 100), (100, 100)]
    assert s.counts["po_lines"] == synth.load_world(s.dest, "po_lines").collect().height
    parts = sorted(p.name for p in (tmp_path / "small_batches" / "world" / "po_lines").iterdir())
    assert parts == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    # ids stay unique across batches
    asn = synth.load_world(s.dest, "asn_lines").collect()
    assert asn.group_by("shipment_id").agg(pl.col("po_number").n_unique())["po_number"].max() == 1
    inv = synth.load_world(s.dest, "invoice_lines").collect()
    clean = inv.filter(~pl.col("source").str.contains("_resend"))
    per_number = clean.group_by("supplier_id", "invoice_number").agg(pl.col("source").n_unique())
    assert per_number["source"].max() == 1
