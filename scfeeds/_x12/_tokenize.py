"""Bytes to segment frames: delimiters from each ISA, slices of whole sets, vectorized split.

The hot path never loops over segments in Python. A slice of whole transaction sets is cleaned
with bulk ``bytes`` operations (line breaks that are not delimiters removed, a BOM dropped) and
handed to polars' multi-threaded CSV reader as *one column* whose line terminator is the X12
segment terminator: every row is then one raw segment. Segment IDs come from one regex over the
column; elements are split later, only for the segment types a table needs.

Where the optional C kernel (``_native.c``) is built, it makes the same frame in one pass over
the bytes (about a third of the polars path's time) for every slice of plain ASCII with
single-byte delimiters, and splits segments into elements; anything else (a BOM, UTF-8 text or
bad bytes to report, line breaks used as component separators) takes the polars path, which
handles everything.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, BinaryIO, Final

import polars as pl

if TYPE_CHECKING:
    from polars._typing import ArrowArrayExportable

_native: ModuleType | None
try:
    import scfeeds._x12._native as _native
except ImportError:  # built without a C compiler: the polars path reads everything
    _native = None
else:
    # Column buffers from polars' own allocator (the capsule it shares with extensions), so
    # that they are reused and returned as polars' own are; else the kernel's fallback.
    with contextlib.suppress(ImportError, AttributeError, ValueError):
        from polars import _plr

        _native.use_allocator(_plr._allocator)  # type: ignore[union-attr]

BOM: Final = b"\xef\xbb\xbf"
WHITESPACE: Final = b" \t\r\n"
ENVELOPE: Final[tuple[str, ...]] = ("ISA", "GS", "ST", "SE", "GE", "IEA")
# polars 2 collects on its streaming engine by default; the reader runs dozens of small
# queries per slice, which cost less CPU on the in-memory engine (measured on 30 MB of
# 850s: 87 -> 106 MB/s wall, 59 -> 67 MB per CPU-second).
ENGINE: Final = "in-memory"

# ISA01..ISA15 are fixed width (X12.5); ISA16 is one character and the terminator follows it,
# so a conforming ISA is 106 bytes with the element separator at these offsets.
_ISA_WIDTHS: Final = (2, 10, 2, 10, 2, 15, 2, 15, 6, 4, 1, 5, 9, 1, 1)
_SEP_OFFSETS: Final[tuple[int, ...]] = tuple(
    3 + sum(w + 1 for w in _ISA_WIDTHS[:i]) for i in range(len(_ISA_WIDTHS) + 1)
)
ISA_LENGTH: Final = 106
# A fixed-width ISA anywhere in a buffer, found in one C-level pass (used to spot interchanges
# whose delimiters differ from the previous one).
_FIXED_ISA: Final = re.compile(
    b"ISA(.)" + b"\\1".join(b".{%d}" % w for w in _ISA_WIDTHS) + b"\\1(.)(.)", re.DOTALL
)


@dataclass(frozen=True, slots=True)
class Delimiters:
    """The delimiters of one interchange, as read from its ISA.

    ``repetition`` is ISA11 when the ISA version (ISA12) is 00402 or later, else None.
    """

    element: str
    component: str
    repetition: str | None
    segment: str

    @property
    def bytes_(self) -> tuple[bytes, bytes, bytes]:
        """Element separator, component separator and terminator as Latin-1 bytes."""
        return (
            self.element.encode("latin-1"),
            self.component.encode("latin-1"),
            self.segment.encode("latin-1"),
        )


def _make(e: bytes, comp: bytes, term: bytes, isa11: bytes, version: bytes) -> Delimiters | None:
    if len(e) != 1 or len(comp) != 1 or len(term) != 1:
        return None
    if len({e, comp, term}) != 3 or any(b.isalnum() for b in (e, comp, term)):
        return None
    if term == b" " or e == b" ":
        return None
    rep: str | None = None
    # ISA11 is the repetition separator from version 00402 on (the standards ID "U" before).
    if (
        version.isdigit()
        and int(version) >= 402
        and len(isa11) == 1
        and not isa11.isalnum()
        and isa11 not in (e, comp, term, b" ")
    ):
        rep = isa11.decode("latin-1")
    return Delimiters(e.decode("latin-1"), comp.decode("latin-1"), rep, term.decode("latin-1"))


def _fixed(h: bytes) -> Delimiters | None:
    if len(h) < ISA_LENGTH or h[:3] != b"ISA":
        return None
    e = h[3:4]
    if any(h[p : p + 1] != e for p in _SEP_OFFSETS) or h.count(e, 0, 105) != 16:
        return None
    return _make(e, h[104:105], h[105:106], h[82:83], h[84:89])


def _split(h: bytes) -> Delimiters | None:
    """Fallback for an ISA that is not fixed width: find the 16 separators."""
    if h[:3] != b"ISA" or len(h) < 20:
        return None
    e = h[3:4]
    if e.isalnum() or e in WHITESPACE:
        return None
    seps = [3]
    while len(seps) < 16:
        nxt = h.find(e, seps[-1] + 1)
        if nxt < 0:
            return None
        seps.append(nxt)
    last = seps[-1]
    fields = [h[a + 1 : b] for a, b in itertools.pairwise(seps)]
    return _make(e, h[last + 1 : last + 2], h[last + 2 : last + 3], fields[10], fields[11].strip())


def parse_isa(buf: bytes, start: int = 0) -> Delimiters | None:
    """Delimiters of the ISA at ``buf[start:]``, or None when there is no valid ISA there.

    Tries the fixed 106-byte layout first, then the same with line breaks removed (files
    wrapped at 80 columns break lines inside the ISA), then splitting on the element separator
    (ISAs padded or trimmed to the wrong width).
    """
    head = buf[start : start + 1024]
    unwrapped = head.replace(b"\r", b"").replace(b"\n", b"")
    for attempt in (_fixed, _split):
        for h in (head, unwrapped):
            d = attempt(h)
            if d is not None:
                return d
    return None


def skip_ws(buf: bytes, pos: int = 0) -> int:
    """Index of the first byte at or after ``pos`` that is not whitespace."""
    n = len(buf)
    while pos < n and buf[pos] in WHITESPACE:
        pos += 1
    return pos


def _at_segment_start(buf: bytes, pos: int, term: bytes) -> bool:
    i = pos - 1
    while i >= 0 and buf[i] in WHITESPACE and buf[i : i + 1] != term:
        i -= 1
    return i < 0 or buf[i : i + 1] == term


def last_boundary(buf: bytes, d: Delimiters, lo: int) -> int:
    """Start of the last ST or ISA segment after ``lo`` (0 when there is none): a cut there
    leaves whole transaction sets on the left."""
    e, _, t = d.bytes_
    best = 0
    for marker in (b"ST" + e, b"ISA" + e):
        hi = len(buf)
        while True:
            p = buf.rfind(marker, lo + 1, hi)
            if p <= lo:
                break
            if _at_segment_start(buf, p, t):
                best = max(best, p)
                break
            hi = p
    return best


@dataclass(slots=True)
class Piece:
    """A slice of a source holding whole sets, all under the same delimiters."""

    data: bytes
    delimiters: Delimiters | None  # None: bytes that are not X12 (reported as BAD_ISA)
    at_eof: bool


def iter_pieces(stream: BinaryIO, slice_bytes: int) -> Iterator[Piece]:
    """Cut a byte stream into pieces of whole sets (about ``slice_bytes`` each).

    A new piece also starts wherever an interchange's delimiters differ from the previous
    one's. Garbage where an ISA must be is yielded as a piece without delimiters.
    """
    buf = b""
    eof = False
    first = True
    delims: Delimiters | None = None

    def fill(need: int) -> None:
        nonlocal buf, eof
        while not eof and len(buf) < need:
            more = stream.read(max(slice_bytes, need - len(buf)))
            if not more:
                eof = True
            buf += more

    while True:
        fill(slice_bytes)
        if first:
            first = False
            if buf.startswith(BOM):
                buf = buf[len(BOM) :]
        if delims is None:
            start = skip_ws(buf)
            buf = buf[start:]
            if not buf and eof:
                return
            fill(ISA_LENGTH + 1024)
            delims = parse_isa(buf)
            if delims is None:
                # Not X12 here: hand the bytes up to the next parseable ISA to the caller.
                nxt = _next_isa(buf, 1)
                while nxt < 0 and not eof:
                    fill(len(buf) + slice_bytes)
                    nxt = _next_isa(buf, 1)
                cut = len(buf) if nxt < 0 else nxt
                yield Piece(buf[:cut], None, eof and cut == len(buf))
                buf = buf[cut:]
                if not buf and eof:
                    return
                continue
        e, comp, t = delims.bytes_
        cut = 0
        # An interchange with other delimiters starts a new piece.
        for m in _FIXED_ISA.finditer(buf, 1):
            if (m.group(1), m.group(2), m.group(3)) != (e, comp, t) and _at_segment_start(
                buf, m.start(), t
            ):
                cut = m.start()
                break
        if cut:
            yield Piece(buf[:cut], delims, False)
            buf = buf[cut:]
            delims = None
            continue
        if eof:
            yield Piece(buf, delims, True)
            return
        cut = last_boundary(buf, delims, len(buf) // 4)
        if cut <= 0:
            cut = last_boundary(buf, delims, 0)
        if cut <= 0:
            # One set larger than a slice: read on (memory is bounded by the largest set).
            fill(len(buf) + slice_bytes)
            if eof:
                continue
            continue
        yield Piece(buf[:cut], delims, False)
        buf = buf[cut:]


def _next_isa(buf: bytes, lo: int) -> int:
    pos = buf.find(b"ISA", lo)
    while pos >= 0:
        if parse_isa(buf, pos) is not None:
            return pos
        pos = buf.find(b"ISA", pos + 1)
    return -1


@dataclass(slots=True)
class Tokens:
    """Raw segments of a piece: ``frame`` has columns raw (str) and sid (str or null), and
    from the C kernel also the envelope counters within the piece (see ``_core._counted``)."""

    frame: pl.DataFrame
    encoding_error: int | None  # 1-based segment index (within the piece) of the first bad byte
    ends_cleanly: bool  # the piece ends with a segment terminator (not cut inside a segment)


def _frame(columns: tuple[ArrowArrayExportable, ...]) -> pl.DataFrame:
    """The kernel's columns as a frame (each imported on its own, so each is freed on its
    own)."""
    return pl.DataFrame([pl.Series(col) for col in columns])


def _free_byte(data: bytes, t: bytes) -> str | None:
    for b in range(1, 32):
        c = bytes([b])
        if c != t and c not in data:
            return chr(b)
    return None


def tokenize(data: bytes, d: Delimiters, *, native: bool = True) -> Tokens:
    """Split a piece into raw segments and their IDs, with bulk operations only (the C
    kernel where it is built and ``native``; else, or for what it leaves, polars)."""
    e, _, t = d.bytes_
    delim_bytes = {e, t, d.component.encode("latin-1")}
    if d.repetition is not None:
        delim_bytes.add(d.repetition.encode("latin-1"))
    if native and _native is not None and not delim_bytes & {b"\r", b"\n"} - {e, t}:
        got = _native.segments(data, e[0], t[0]) if len(e) == len(t) == 1 else None
        if got is not None:
            # (line breaks are whitespace here: the end is the same before and after the
            # kernel drops them)
            end = data.rstrip(bytes(b for b in WHITESPACE if bytes([b]) != t))
            return Tokens(_frame(got.columns()), None, end.endswith(t))
    # Line breaks that are not delimiters are formatting (CR/LF after terminators, lines
    # wrapped at 80 columns); X12 data never contains them.
    for nl in (b"\r", b"\n"):
        if nl not in delim_bytes and nl in data:
            data = data.replace(nl, b"")
    # (a one-byte search first: a three-byte search of a slice costs as much as reading it)
    if BOM[:1] in data and BOM in data:
        data = data.replace(BOM, b"")
    stripped_end = data.rstrip(bytes(b for b in WHITESPACE if bytes([b]) != t))
    ends_cleanly = stripped_end.endswith(t)
    encoding_error: int | None = None
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            encoding_error = data.count(t, 0, exc.start) + 1
            # Latin-1 maps every byte, so nothing is lost; the error row says so.
            data = data.decode("latin-1").encode("utf-8")
    sep = _free_byte(data, t)
    fast = sep is not None and all(len(b) == 1 and b < b"\x80" for b in delim_bytes)
    fast = fast and b"\r" not in delim_bytes
    if fast and data:
        assert sep is not None
        raw = pl.read_csv(
            data,
            has_header=False,
            separator=sep,
            eol_char=d.segment,
            quote_char=None,
            schema={"raw": pl.String},
            raise_if_empty=False,
        ).to_series()
    else:
        raw = pl.Series("raw", data.decode("utf-8").split(d.segment), dtype=pl.String)
    # Spaces or tabs after terminators (pretty-printed files): does any segment start so?
    # (asked of the column: searching the bytes for a two-byte pattern is slower)
    needs_strip = bool(raw.str.starts_with(" ").any() or raw.str.starts_with("\t").any())
    col = pl.col("raw")
    if needs_strip:
        col = col.str.strip_chars_start(" \t")
    kept = (
        raw.to_frame()
        .lazy()
        .select(col)
        .filter(col.is_not_null() & (col != ""))
        .collect(engine=ENGINE)["raw"]
    )
    frame = pl.DataFrame([kept, segment_ids(kept, d.element)])
    return Tokens(frame, encoding_error, ends_cleanly)


def segment_ids(raw: pl.Series, element: str) -> pl.Series:
    """The segment ID of each raw segment (two or three capitals or digits, then the element
    separator or the end), null where there is none.

    A segment ID lies in a segment's first four characters, and a slice holds only a few
    distinct such prefixes: the pattern is matched once per distinct prefix and the answers
    are gathered by the prefix's index in an Enum (half the cost of a regex on every row).
    """
    head = raw.str.head(4)
    prefixes = head.unique().drop_nulls().to_list()
    pattern = re.compile(rf"([A-Z0-9]{{2,3}})(?:{re.escape(element)}|\Z)")
    ids = [m.group(1) if (m := pattern.match(p)) else None for p in prefixes]
    index = head.cast(pl.Enum(prefixes)).to_physical()
    return pl.Series("sid", ids, dtype=pl.String).gather(index)


def split_elements(
    frame: pl.LazyFrame,
    keep: list[str | pl.Expr],
    element: str,
    n: int,
    prefix: str,
    *,
    native: bool = True,
) -> pl.LazyFrame:
    """``keep`` columns plus elements 1..n of ``raw`` as ``{prefix}01``... (empty -> null).

    Only as many elements as the longest segment has are extracted (most PO1s stop long
    before PO125), the rest are null columns. The C kernel splits the column in one pass
    where it is built (and ``native``); else polars splits it into a list column once.
    """
    if native and _native is not None and len(element) == 1 and element < "\x80" and n <= 40:
        df = frame.select(*keep, pl.col("raw")).collect(engine=ENGINE)
        got = _native.split(df["raw"].__arrow_c_stream__(), ord(element), n)
        if got is not None:
            m = got.width
            names = [f"{prefix}{i:02d}" for i in range(1, n + 1)]
            out = df.drop("raw")
            if m:
                elements = _frame(got.columns())
                out = out.hstack(elements.rename(dict(zip(elements.columns, names, strict=False))))
            return out.lazy().with_columns(
                pl.lit(None, dtype=pl.String).alias(name) for name in names[m:]
            )
    df = frame.select(*keep, pl.col("raw").str.split(element).alias("_l")).collect(engine=ENGINE)
    longest = df["_l"].list.len().max() if df.height else 0
    m = min(n, max(int(longest) - 1, 0)) if isinstance(longest, int) else 0
    return df.lazy().select(*(x for x in df.columns if x != "_l"), *_element_exprs(prefix, n, m))


@functools.cache
def _element_exprs(prefix: str, n: int, m: int) -> tuple[pl.Expr, ...]:
    """Elements 1..m of ``_l`` (empty -> null) and null columns m+1..n, named ``{prefix}NN``
    (built once per shape: building the expressions cost more than a small query)."""
    names = [f"{prefix}{i:02d}" for i in range(1, n + 1)]
    got = [pl.col("_l").list.get(i, null_on_oob=True) for i in range(1, m + 1)]
    return (
        *(pl.when(g != "").then(g).alias(name) for g, name in zip(got, names, strict=False)),
        *(pl.lit(None, dtype=pl.String).alias(name) for name in names[m:]),
    )
