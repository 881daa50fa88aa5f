"""Many X12 sources in one reader call: the same frames as one call per source, one pass."""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from scfeeds._x12 import _reader, read_x12, scan_x12
from scfeeds._x12._reader import X12Result

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("SCFEEDS_X12_CORPUS", ROOT.parent / "shared" / "x12-corpus"))
FRAMES = (
    "po_lines",
    "asn_lines",
    "invoice_lines",
    "invoice_totals",
    "invoice_charges",
    "segments",
    "envelopes",
    "errors",
)


def _isa(sender: str, control: int, e: str = "*", comp: str = ">", t: str = "~") -> str:
    fields = [
        "ISA", "00", " " * 10, "00", " " * 10, "ZZ", f"{sender:<15}", "ZZ", f"{'BUYER':<15}",
        "260101", "1200", "U", "00401", f"{control:09d}", "0", "P", comp,
    ]  # fmt: skip
    return e.join(fields) + t


def _interchange(
    po: str,
    control: int,
    *,
    e: str = "*",
    t: str = "~",
    lines: int = 3,
    se_count: int | None = None,
) -> bytes:
    body = [
        f"GS{e}PO{e}SUP{e}BUYER{e}20260101{e}1200{e}{control}{e}X{e}004010",
        f"ST{e}850{e}0001",
        f"BEG{e}00{e}SA{e}{po}{e}{e}20260101",
        *(f"PO1{e}{i}{e}{i + 1}{e}EA{e}2.5{e}{e}BP{e}ITEM{i}" for i in range(1, lines + 1)),
    ]
    count = len(body) if se_count is None else se_count  # ST .. SE
    body += [f"SE{e}{count}{e}0001", f"GE{e}1{e}{control}", f"IEA{e}1{e}{control:09d}"]
    return (_isa("SUP", control, e=e, t=t) + t.join(body) + t).encode()


def _concat(results: list[X12Result]) -> dict[str, pl.DataFrame]:
    return {f: pl.concat([getattr(r, f) for r in results], how="vertical_relaxed") for f in FRAMES}


def _assert_same(many: X12Result, one_by_one: list[X12Result]) -> None:
    want = _concat(one_by_one)
    for f in FRAMES:
        assert_frame_equal(getattr(many, f), want[f], check_dtypes=True)


def _write(tmp: Path, docs: dict[str, bytes]) -> list[str]:
    out = []
    for name, data in docs.items():
        p = tmp / name
        p.write_bytes(data)
        out.append(str(p))
    return out


@pytest.mark.skipif(not (CORPUS / "SOURCES.md").is_file(), reason=f"no X12 corpus at {CORPUS}")
def test_corpus_many_sources_equal_one_call_per_source() -> None:
    files = sorted(str(p) for p in CORPUS.glob("*.edi"))
    random.Random(3).shuffle(files)  # interleave delimiter sets
    many = read_x12(files)
    _assert_same(many, [read_x12(f) for f in files])
    assert many.po_lines["source"].n_unique() > 5


@pytest.mark.skipif(not (CORPUS / "SOURCES.md").is_file(), reason=f"no X12 corpus at {CORPUS}")
def test_corpus_scan_many_equals_scan_each() -> None:
    files = sorted(str(p) for p in CORPUS.glob("*.edi"))
    for table in ("po_lines", "asn_lines", "invoice_lines"):
        many = scan_x12(files, table=table).collect()
        each = pl.concat([scan_x12(f, table=table).collect() for f in files])
        assert_frame_equal(many, each)


@pytest.fixture(scope="module")
def world(make_world: Callable[..., Path]) -> Path:
    return make_world(seed=5, suppliers=4, pos=60, formats=("x12",), damaged=True)


def test_synth_many_sources_equal_one_call_per_source(world: Path) -> None:
    files = sorted(str(p) for p in (world / "feeds").glob("*/*/*.x12"))
    files += sorted(str(p) for p in (world / "damaged").glob("*.x12"))
    random.Random(1).shuffle(files)
    many = read_x12(files)
    _assert_same(many, [read_x12(f) for f in files])
    assert many.errors.height > 0
    assert many.po_lines.height > 0


def test_synth_scan_many_equals_scan_each(world: Path) -> None:
    files = sorted(str(p) for p in (world / "feeds").glob("*/asn_lines/*.x12"))
    many = scan_x12(files, table="asn_lines").collect()
    each = pl.concat([scan_x12(f, table="asn_lines").collect() for f in files])
    assert_frame_equal(many, each)
    cols = scan_x12(files, table="asn_lines").select("po_number", "qty_shipped").collect()
    assert_frame_equal(cols, each.select("po_number", "qty_shipped"))


def test_mixed_delimiters_across_documents(tmp_path: Path) -> None:
    styles = [("*", "~"), ("|", "~"), ("*", "\n"), ("^", "'")]
    docs = {
        f"d{i:02d}.x12": _interchange(f"PO{i}", i + 1, e=styles[i % 4][0], t=styles[i % 4][1])
        for i in range(12)
    }
    files = _write(tmp_path, docs)
    many = read_x12(files)
    _assert_same(many, [read_x12(f) for f in files])
    assert many.po_lines["po_number"].unique(maintain_order=True).to_list() == [
        f"PO{i}" for i in range(12)
    ]
    assert many.po_lines["position"].unique(maintain_order=True).to_list() == [
        "segment 5",
        "segment 6",
        "segment 7",
    ]
    assert many.envelopes["interchange_index"].to_list() == [1] * 12
    assert many.envelopes["element_separator"].to_list() == [styles[i % 4][0] for i in range(12)]


def test_segment_text_in_messages_keeps_its_own_separator(tmp_path: Path) -> None:
    # stray data between two interchanges, and a bad segment ID inside a set, in a file whose
    # element separator is "|", read in one pass with files separated by "*"
    first = _interchange("PA", 1, e="|").replace(b"BEG|", b"bx|1~BEG|")
    second = _interchange("PB", 2, e="|")
    docs = {
        "a.x12": _interchange("P0", 3),
        "odd.x12": first + b"STRAY|DATA|1~" + second,
        "c.x12": _interchange("P1", 4, e="^"),
    }
    files = _write(tmp_path, docs)
    many = read_x12(files)
    _assert_same(many, [read_x12(f) for f in files])
    errs = many.errors.filter(pl.col("source") == files[1])
    assert "segment outside any transaction set: STRAY|DATA|1" in errs["message"].to_list()
    seg_id = errs.filter(pl.col("code") == "SEGMENT_ID").row(0, named=True)
    assert seg_id["segment_id"] == "bx|"
    assert seg_id["message"] == "not a segment ID at the start of bx|1"


def _damaged_batch(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    docs = {f"ok{i:02d}.x12": _interchange(f"PO{i}", i + 1) for i in range(8)}
    bad = {
        "m1_count.x12": _interchange("BADCOUNT", 50, se_count=99),
        "m2_cut.x12": _interchange("CUT", 51)[:-40],
        "m3_junk.x12": b"this is not X12 at all",
        "m4_latin1.x12": _interchange("LATIN\xe9", 52).replace(b"\xc3\xa9", b"\xe9"),
    }
    names = list(docs)
    for i, (k, v) in enumerate(bad.items()):
        docs[k] = v
        names.insert(2 + 2 * i, k)
    files = _write(tmp_path, {k: docs[k] for k in names})
    rules = {
        "m1_count.x12": "SE01_COUNT",
        "m2_cut.x12": "TRUNCATED",
        "m3_junk.x12": "BAD_ISA",
        "m4_latin1.x12": "ENCODING",
    }
    return files, rules


def test_damaged_document_in_the_middle_reports_its_own_rows(tmp_path: Path) -> None:
    files, rules = _damaged_batch(tmp_path)
    many = read_x12(files)
    _assert_same(many, [read_x12(f) for f in files])
    for name, rule in rules.items():
        mine = many.errors.filter(pl.col("source").str.ends_with(name))
        assert rule in mine["code"].to_list(), (name, mine)
        assert mine["position"].str.starts_with("segment ").all()
    bad_set = many.errors.filter(pl.col("code") == "SE01_COUNT").row(0, named=True)
    assert bad_set["source"].endswith("m1_count.x12")
    assert bad_set["position"] == "segment 8"  # the SE of the one set in that file
    assert bad_set["set_index"] == 1
    assert bad_set["interchange_index"] == 1
    # every intact document is delivered, the set with the wrong count is not
    delivered = set(many.po_lines["po_number"].to_list())
    assert {f"PO{i}" for i in range(8)} <= delivered
    assert "BADCOUNT" not in delivered
    # only the damaged documents have error rows
    assert {Path(s).name for s in many.errors["source"]} == set(rules)


def _count(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    calls = [0]
    real: Callable[..., Any] = getattr(_reader, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(_reader, name, counted)
    return calls


def test_small_sources_one_pass_per_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = {
        f"d{i:03d}.x12": _interchange(f"PO{i}", i + 1, e="*|^"[i % 3], t="~\n"[i % 2])
        for i in range(60)
    }
    files = _write(tmp_path, docs)
    pieces = _count(monkeypatch, "process_piece")
    slicer = _count(monkeypatch, "iter_pieces")
    res = read_x12(files)
    assert res.po_lines.height == 180
    assert pieces[0] == 1  # one pass for six delimiter sets, not one per document or set
    assert slicer[0] == 0  # no slice machinery for small whole interchanges
    assert res.envelopes["element_separator"].to_list() == ["*|^"[i % 3] for i in range(60)]
    assert res.envelopes["segment_terminator"].to_list() == ["~\n"[i % 2] for i in range(60)]


def test_one_pass_per_delimiter_set_when_no_shared_separator_is_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = {f"d{i:02d}.x12": _interchange(f"PO{i}", i + 1, e="*|"[i % 2]) for i in range(10)}
    docs["odd.x12"] = _interchange("PO\x1c\x1d\x1e\x1f", 77, e="|")
    files = _write(tmp_path, docs)
    pieces = _count(monkeypatch, "process_piece")
    many = read_x12(files)
    assert pieces[0] == 2
    _assert_same(many, [read_x12(f) for f in files])
    assert "PO\x1c\x1d\x1e\x1f" in many.po_lines["po_number"].to_list()


def test_small_sources_start_no_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = _write(tmp_path, {f"d{i}.x12": _interchange(f"PO{i}", i + 1) for i in range(20)})
    pools = _count(monkeypatch, "ThreadPoolExecutor")
    started: list[str] = []
    real_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        started.append(self.name)
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    read_x12(files)
    read_x12(files[0])
    assert pools[0] == 0
    # (the builders' module-level side pool, "x12-side", lives as long as the process)
    assert [n for n in started if not n.startswith("x12-side")] == []


def test_runs_of_small_sources_are_bounded_by_slice_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = {f"d{i:03d}.x12": _interchange(f"PO{i}", i + 1, lines=1 + i % 4) for i in range(40)}
    docs["big.x12"] = _interchange("BIG", 99, lines=120)  # over slice_bytes: read alone
    files = _write(tmp_path, docs)
    random.Random(4).shuffle(files)
    pieces = _count(monkeypatch, "process_piece")
    many = read_x12(files, slice_bytes=4096)
    runs = pieces[0]
    _assert_same(many, [read_x12(f, slice_bytes=4096) for f in files])
    total = sum(len(d) for d in docs.values())
    assert total // 4096 < runs < len(files)  # several runs of many sources each


def test_empty_frames_are_not_shared_between_reads(tmp_path: Path) -> None:
    (f,) = _write(tmp_path, {"one.x12": _interchange("PO1", 1)})
    first = read_x12(f)
    assert first.asn_lines.height == 0
    first.asn_lines.insert_column(0, pl.Series("extra", [], dtype=pl.Int64))
    assert "extra" not in read_x12(f).asn_lines.columns


_STYLES = [("*", ">", "~"), ("|", "^", "~"), ("*", ":", "\n"), ("^", ">", "'"), ("*", ">", "\r")]


@st.composite
def _documents(draw: st.DrawFn) -> list[bytes]:
    docs = []
    for i in range(draw(st.integers(2, 7))):
        e, _, t = draw(st.sampled_from(_STYLES))
        doc = _interchange(f"P{i}", i + 1, e=e, t=t, lines=draw(st.integers(1, 4)))
        how = draw(st.sampled_from(["ok", "ok", "ok", "cut", "count", "junk", "crlf", "lead"]))
        if how == "cut":
            doc = doc[: draw(st.integers(1, len(doc) - 1))]
        elif how == "count":
            doc = _interchange(f"P{i}", i + 1, e=e, t=t, se_count=draw(st.integers(0, 9)))
        elif how == "junk":
            doc = doc + draw(st.binary(min_size=1, max_size=12))
        elif how == "crlf" and t == "~":
            doc = doc.replace(b"~", b"~\r\n")
        elif how == "lead":
            doc = b"\xef\xbb\xbf \n" + doc
        docs.append(doc)
    return docs


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(docs=_documents())
def test_any_mix_of_documents_equals_one_read_per_document(
    docs: list[bytes], tmp_path: Path
) -> None:
    files = _write(tmp_path, {f"doc{i}.x12": d for i, d in enumerate(docs)})
    many = read_x12(files)
    _assert_same(many, [read_x12(f) for f in files])
