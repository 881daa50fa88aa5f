"""Many small X12 sources tokenized in one pass.

Supplier traffic is mostly one small interchange per file. Reading each alone pays a fixed
cost per file (a slice reader, a thread pool, some 50 small polars queries); reading them
together pays it once. The sources' bytes are joined, each after a marker segment that no X12
data holds, and tokenized as one piece; the marker rows give every source's first segment,
so positions, envelope indices and ``source`` are made local to each source again
(``scfeeds._x12._core.Prov``) and the output equals reading every source alone.

Only sources whose edges are whole take this path: an ISA at the start, the last segment an
IEA closed by its terminator, UTF-8 (or ASCII) bytes, every interchange with the delimiters
of the first, and no segment indented after its terminator. Their envelope checks then never
look across a source boundary (each source opens with an ISA and closes with an IEA). Any
other source (truncated, not X12, mixed delimiters, Latin-1 ...) is read alone, by the same
code, so its error rows are exactly those of a single-source read.
"""

from __future__ import annotations

import re
from typing import Final

import polars as pl

from scfeeds._x12._tokenize import (
    _FIXED_ISA,
    BOM,
    WHITESPACE,
    Delimiters,
    Tokens,
    _at_segment_start,
    parse_isa,
    skip_ws,
    tokenize,
)

# A segment that cannot occur in X12 (a segment ID is two or three capitals or digits); a
# source holding these bytes anywhere is read alone.
MARK: Final = b"#SCFEEDS-SOURCE#"
_MARK_TEXT: Final = MARK.decode("ascii")


def small_source(data: bytes) -> tuple[bytes, Delimiters] | None:
    """The bytes (BOM and surrounding whitespace dropped) and delimiters of a source that can
    be read together with others, or None when it must be read alone."""
    if data.startswith(BOM):
        data = data[len(BOM) :]
    data = data[skip_ws(data) :]
    d = parse_isa(data)
    if d is None or MARK in data:
        return None
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return None  # one ENCODING row per piece: alone, the row is this source's own
    e, comp, t = d.bytes_
    data = data.rstrip(bytes(b for b in WHITESPACE if bytes([b]) != t))
    if not data.endswith(t):
        return None
    last = data[data.rfind(t, 0, len(data) - 1) + 1 : -1].lstrip(WHITESPACE)
    if not last.startswith(b"IEA" + e):
        return None
    # Segments indented after their terminator make the tokenizer strip every segment.
    if re.search(re.escape(t) + rb"[\r\n]*[ \t]", data):
        return None
    if data.find(b"ISA", 1) >= 0:
        for m in _FIXED_ISA.finditer(data, 1):
            if (m.group(1), m.group(2), m.group(3)) != (e, comp, t) and _at_segment_start(
                data, m.start(), t
            ):
                return None
    return data, d


def join_tokens(docs: list[bytes], d: Delimiters) -> tuple[Tokens, list[int]]:
    """Tokens of many sources (all under ``d``) and, per source, the number of segments
    before its first one."""
    mark = MARK + d.segment.encode("latin-1")
    tok = tokenize(b"".join(mark + doc for doc in docs), d)
    frame = tok.frame
    is_mark = frame["raw"] == _MARK_TEXT
    at = is_mark.arg_true()
    if at.len() != len(docs):
        # builtin-raise: an internal invariant (small_source() rules this out), not bad input
        raise AssertionError(f"{at.len()} source markers for {len(docs)} sources")
    before = (at.cast(pl.Int64) - pl.int_range(0, at.len(), eager=True, dtype=pl.Int64)).to_list()
    return Tokens(frame.filter(~is_mark), None, True), before
