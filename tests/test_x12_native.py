"""The C tokenizer (``scfeeds/_x12/_native.c``): the same segment frame as the polars path.

Every other X12 test runs with the kernel (it is what ``tokenize`` uses where it is built);
these compare the two paths on the real corpus, synthetic worlds and generated segment soups,
and read whole worlds with the kernel taken away.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from scfeeds import synth
from scfeeds._x12 import _tokenize, read_x12
from scfeeds._x12._core import SourceState, _counted
from scfeeds._x12._tokenize import Delimiters, split_elements, tokenize

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("SCFEEDS_X12_CORPUS", ROOT.parent / "shared" / "x12-corpus"))
FRAMES = ("po_lines", "asn_lines", "invoice_lines", "po_acks", "segments", "envelopes", "errors")


def _pieces(path: Path) -> list[_tokenize.Piece]:
    """The pieces the reader tokenizes (small slices: many piece boundaries)."""
    with open(path, "rb") as f:
        return [p for p in _tokenize.iter_pieces(f, 4096) if p.delimiters is not None]


def _kernel_reads(piece: _tokenize.Piece) -> bool:
    d, native = piece.delimiters, _tokenize._native
    assert d is not None
    assert native is not None
    return native.segments(piece.data, ord(d.element), ord(d.segment)) is not None


# What earlier pieces of a source counted: the kernel counts within its piece, _counted adds it.
_CARRIES = [
    SourceState("a"),
    SourceState("b", pos=1200, isa=3, gs=4, st=97, last_env="ST"),
    SourceState("c", pos=7, isa=1, gs=1, st=2, last_env="GE"),
]


def _same(data: bytes, d: Delimiters) -> _tokenize.Tokens:
    fast = tokenize(data, d)
    slow = tokenize(data, d, native=False)
    assert_frame_equal(fast.frame.select("raw", "sid"), slow.frame)
    assert fast.ends_cleanly == slow.ends_cleanly
    assert fast.encoding_error == slow.encoding_error
    for carry in _CARRIES:
        assert_frame_equal(_counted(carry, fast.frame), _counted(carry, slow.frame))
    return fast


def test_the_kernel_is_built() -> None:
    # The README's install builds it (gcc and the Python headers); without them the package
    # still works on its polars path, but this environment is meant to test the kernel.
    assert _tokenize._native is not None, (
        "scfeeds._x12._native was not built: install with a C compiler and the Python headers "
        "(./dev test does)"
    )


def test_tokenize_reads_plain_ascii_without_polars_csv_reader(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The polars path is a CSV read: with it broken, only the kernel can make the frame.
    data = b"ISA*00~\r\nGS*PO~  ST*850*0001~PO1*1*2*EA~\n\tSE*3*0001~~"
    d = Delimiters(element="*", component=">", repetition=None, segment="~")
    expected = tokenize(data, d, native=False).frame

    def broken(*args: object, **kwargs: object) -> pl.DataFrame:
        raise AssertionError("the polars path ran")

    monkeypatch.setattr(_tokenize.pl, "read_csv", broken)
    got = tokenize(data, d)
    assert_frame_equal(got.frame.select("raw", "sid"), expected)
    assert got.frame["sid"].to_list() == ["ISA", "GS", "ST", "PO1", "SE"]
    assert got.frame["raw"][2] == "ST*850*0001"  # blanks after the terminator dropped
    assert got.ends_cleanly
    # the envelope counters within the piece
    assert got.frame["_code"].to_list() == [1, 2, 3, 0, 4]
    assert got.frame["_st"].to_list() == [0, 0, 1, 1, 1]
    assert got.frame["_last"].to_list() == [1, 2, 3, 3, 4]


def test_what_the_kernel_leaves_to_polars() -> None:
    native = _tokenize._native
    assert native is not None
    assert native.segments(b"ST*850~", ord("*"), ord("~")).height == 1
    # bytes above 0x7F (a BOM, UTF-8 text, Latin-1 bytes to report): the polars path
    assert native.segments(b"\xef\xbb\xbfST*850~", ord("*"), ord("~")) is None
    assert native.segments("N1*ST*Müller~".encode(), ord("*"), ord("~")) is None
    # delimiters that could be part of an ID or are blanks
    assert native.segments(b"ST*850~", ord("A"), ord("~")) is None
    assert native.segments(b"ST*850~", ord("*"), ord(" ")) is None
    # and the tokenizer still gives the polars path's frame for them
    d = Delimiters(element="*", component=">", repetition=None, segment="~")
    bad = _same(b"ST*850*\xe9~SE*2~", d)
    assert bad.encoding_error == 1
    # line breaks as the component separator are data, not formatting
    _same(b"ST*850~PO1*1*A\nB~SE*2~", Delimiters("*", "\n", None, "~"))


def test_each_column_is_its_own_allocation_and_exported_once() -> None:
    native = _tokenize._native
    assert native is not None
    got = native.segments(b"ST*850~SE*2~", ord("*"), ord("~"))
    columns = got.columns()
    assert [pl.Series(c).name for c in columns] == [
        "raw", "sid", "_code", "_isa", "_gs", "_st", "_last"
    ]  # fmt: skip
    with pytest.raises(RuntimeError, match="exported already"):
        got.columns()
    with pytest.raises(RuntimeError, match="exported already"):
        columns[0].__arrow_c_array__()
    assert native.segments(b"", ord("*"), ord("~")).height == 0
    # Columns imported apart are freed apart: a table that keeps one element column (PO103,
    # the unit) must not keep the others' memory. The kernel counts the bytes of the buffers
    # it made that are not yet freed.
    rows = pl.Series("raw", [f"PO1*{i}*{'9' * 40}*EA*{'7' * 40}" for i in range(200_000)])
    elements = native.split(rows.__arrow_c_stream__(), ord("*"), 4)
    assert elements is not None
    kept, *others = (pl.Series(c) for c in elements.columns())
    del elements  # (also frees the views of the columns beyond the fourth element)
    before = native.buffer_bytes()
    del others
    gc.collect()
    # two columns of 200,000 values of 40 bytes, and their views
    assert before - native.buffer_bytes() >= 2 * 200_000 * (40 + 16)
    assert kept.to_list()[:2] == ["0", "1"]
    # and the kept column's own buffers go when it does
    before = native.buffer_bytes()
    del kept
    gc.collect()
    assert before - native.buffer_bytes() >= 200_000 * 16


def test_column_buffers_come_from_polars_allocator() -> None:
    # shared by polars for its extensions: freed column memory is reused as polars' own is
    native = _tokenize._native
    assert native is not None
    assert native.allocator() == "polars"


_IDS = ["ISA", "GS", "ST", "SE", "GE", "IEA", "PO1", "N1", "BEG", "AB", "ABCD", "po1", "1X", "X"]
_TEXT = st.text(alphabet="AZaz09 \t\r\n*>^:|.-", max_size=12)


@st.composite
def _soup(draw: st.DrawFn) -> tuple[bytes, Delimiters]:
    e, t = draw(
        st.sampled_from([("*", "~"), ("\x1d", "\x1c"), ("|", "\n"), ("*", "\r"), ("^", "'")])
    )
    segments = []
    for _ in range(draw(st.integers(0, 25))):
        head = draw(st.sampled_from([*_IDS, ""])) if draw(st.booleans()) else draw(_TEXT)
        parts = [head, *draw(st.lists(_TEXT, max_size=4))]
        lead = draw(st.sampled_from(["", " ", "\t", "\r\n", "\n  ", " \r"]))
        segments.append(lead + e.join(p.replace(e, "").replace(t, "") for p in parts))
    tail = draw(st.sampled_from(["", t, t + "\r\n", t + "  ", "\n"]))
    data = (t.join(segments) + tail).encode("latin-1")
    return data, Delimiters(element=e, component=">", repetition=None, segment=t)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_soup())
def test_generated_segment_soups_give_the_polars_frame(case: tuple[bytes, Delimiters]) -> None:
    _same(*case)


@settings(max_examples=200, deadline=None)
@given(
    raw=st.lists(st.one_of(st.none(), st.text(alphabet="PO1*AZ09 é-~^", max_size=60)), max_size=30),
    n=st.integers(0, 31),
    chunks=st.integers(1, 3),
)
def test_the_kernel_splits_elements_as_polars_does(
    raw: list[str | None], n: int, chunks: int
) -> None:
    # nulls, empty and missing elements, multi-byte text, several chunks (rows gathered
    # from more than one frame)
    parts = [raw[i::chunks] for i in range(chunks)]
    series = pl.concat([pl.Series("raw", p, dtype=pl.String) for p in parts], rechunk=False)
    frame = pl.DataFrame({"k": range(series.len()), "raw": series}).lazy()
    fast = split_elements(frame, ["k"], "*", n, "PO1").collect()
    slow = split_elements(frame, ["k"], "*", n, "PO1", native=False).collect()
    assert_frame_equal(fast, slow)


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"real X12 corpus not found at {CORPUS}")
def test_real_corpus_files_give_the_polars_frame() -> None:
    files = [p for p in sorted(CORPUS.iterdir()) if p.suffix in (".edi", ".x12")]
    assert files
    native = 0
    for path in files:
        for piece in _pieces(path):
            assert piece.delimiters is not None
            _same(piece.data, piece.delimiters)
            native += _kernel_reads(piece)
    assert native  # most of the corpus is plain ASCII: the kernel read it


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("native") / "world"
    synth.generate(root, seed=11, pos=120, suppliers=2, formats=("x12",))
    files = sorted((root / "feeds").glob("*/*/*.x12"))
    assert len(files) >= 6
    return files


def test_synthetic_feeds_give_the_polars_frame(world: list[Path]) -> None:
    for path in world:
        pieces = _pieces(path)
        assert pieces, path.name
        for piece in pieces:
            assert piece.delimiters is not None
            _same(piece.data, piece.delimiters)


def test_read_x12_without_the_kernel_gives_the_same_frames(
    world: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    native = _tokenize._native
    assert native is not None
    held = native.buffer_bytes()
    with_kernel = read_x12(world, segments=True)
    assert native.buffer_bytes() > held  # the frames hold some of the kernel's columns
    monkeypatch.setattr(_tokenize, "_native", None)
    without = read_x12(world, segments=True)
    for name in FRAMES:
        assert_frame_equal(getattr(with_kernel, name), getattr(without, name), check_exact=True)
    assert with_kernel.po_lines.height > 0
    # every buffer the kernel made is freed with the frames (none leaks, none is orphaned)
    del with_kernel
    gc.collect()
    assert native.buffer_bytes() == held
