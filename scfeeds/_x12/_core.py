"""Per-piece processing: counters, envelope checks and error rows, as polars expressions.

Set numbers come from a cumulative sum over ``sid == "ST"`` (likewise GS and ISA), carried
from piece to piece, so a set's rows are found without a Python loop. Checks that decide
whether a set is delivered (ST/SE) are local to a piece because pieces hold whole sets;
group and interchange checks (GS/GE, ISA/IEA) run once per source on the small frame of
envelope segments and never withhold intact sets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import polars as pl

from scfeeds._x12._codes import CODES
from scfeeds._x12._tokenize import ENGINE, Delimiters, Piece, Tokens, split_elements, tokenize

ENV_CODE: Final = {"ISA": 1, "GS": 2, "ST": 3, "SE": 4, "GE": 5, "IEA": 6}
ENV_NAME: Final = {v: k for k, v in ENV_CODE.items()}
ERROR_SCHEMA: Final = pl.Schema(
    {
        "source": pl.String(),
        "interchange_index": pl.Int64(),
        "group_index": pl.Int64(),
        "set_index": pl.Int64(),
        "interchange_control": pl.String(),
        "group_control": pl.String(),
        "set_control": pl.String(),
        "position": pl.String(),
        "segment_id": pl.String(),
        "element": pl.String(),
        "code": pl.String(),
        "level": pl.String(),
        "message": pl.String(),
    }
)
# Internal error rows before the control numbers are joined in.
_RAW_ERROR: Final = pl.Schema(
    {
        "interchange_index": pl.Int64(),
        "group_index": pl.Int64(),
        "set_index": pl.Int64(),
        "pos": pl.Int64(),
        "segment_id": pl.String(),
        "element": pl.String(),
        "code": pl.String(),
        "message": pl.String(),
    }
)
# Codes that withhold a set's rows (and make the 997 reject it).
REJECTING: Final = frozenset(
    c for c, lvl in CODES.items() if lvl in ("set", "segment", "element")
) | {"TRUNCATED"}

ISA_SCHEMA: Final = pl.Schema(
    {
        "interchange_index": pl.Int64(),
        "interchange_control": pl.String(),
        "sender_qualifier": pl.String(),
        "sender_id": pl.String(),
        "receiver_qualifier": pl.String(),
        "receiver_id": pl.String(),
        "isa_version": pl.String(),
        "isa_date": pl.String(),
        "isa_time": pl.String(),
        "usage": pl.String(),
        "element_separator": pl.String(),
        "component_separator": pl.String(),
        "repetition_separator": pl.String(),
        "segment_terminator": pl.String(),
    }
)
GS_SCHEMA: Final = pl.Schema(
    {
        "group_index": pl.Int64(),
        "functional_id": pl.String(),
        "app_sender": pl.String(),
        "app_receiver": pl.String(),
        "group_control": pl.String(),
        "version": pl.String(),
    }
)
SET_SCHEMA: Final = pl.Schema(
    {
        "set_index": pl.Int64(),
        "interchange_index": pl.Int64(),
        "group_index": pl.Int64(),
        "st_pos": pl.Int64(),
        "set_id": pl.String(),
        "set_control": pl.String(),
        "segment_count": pl.Int64(),
        "declared_count": pl.Int64(),
    }
)
# Envelope elements kept for a whole source (GE01/GE02/IEA01/IEA02, GS06, ISA13); the rest
# of each envelope segment is read within its piece.
ENV_KEPT: Final = (1, 2, 6, 13)
ENV_SCHEMA: Final = pl.Schema(
    {
        "pos": pl.Int64(),
        "sid": pl.String(),
        "interchange_index": pl.Int64(),
        "group_index": pl.Int64(),
        "set_index": pl.Int64(),
        # the elements the source-wide checks read: counts and control numbers
        **{f"e{i:02d}": pl.String() for i in ENV_KEPT},
    }
)


def _env_code() -> pl.Expr:
    code: pl.Expr = pl.lit(0, dtype=pl.UInt8)
    for k, name in ((6, "IEA"), (5, "GE"), (2, "GS"), (1, "ISA"), (4, "SE"), (3, "ST")):
        code = pl.when(pl.col("sid") == name).then(pl.lit(k, dtype=pl.UInt8)).otherwise(code)
    return code


# Envelope segments as small integer codes: cheaper to compare and forward-fill than text.
_ENV_CODE_EXPR: Final = _env_code()


def ctl_eq(a: pl.Expr, b: pl.Expr) -> pl.Expr:
    """Control numbers compared as integers (zero padding exists), else as trimmed text."""
    ai, bi = (
        a.str.strip_chars().cast(pl.Int64, strict=False),
        b.str.strip_chars().cast(pl.Int64, strict=False),
    )
    return (
        pl.when(ai.is_not_null() & bi.is_not_null())
        .then(ai == bi)
        .otherwise(a.str.strip_chars().eq_missing(b.str.strip_chars()) & a.is_not_null())
    )


def seg(pos: pl.Expr) -> pl.Expr:
    """``"segment N"`` from a position column."""
    return pl.format("segment {}", pos)


_NULL_ERROR: Final = {n: pl.lit(None, dtype=d).alias(n) for n, d in _RAW_ERROR.items()}


def _err(frame: pl.LazyFrame, **cols: pl.Expr | str | None) -> pl.LazyFrame:
    exprs = []
    for name, dtype in _RAW_ERROR.items():
        v = cols.get(name)
        if v is None:
            exprs.append(_NULL_ERROR[name])
        elif isinstance(v, str):
            exprs.append(pl.lit(v, dtype=dtype).alias(name))
        else:
            exprs.append(v.cast(dtype).alias(name))
    return frame.select(exprs)


class Prov:
    """Provenance of rows as expressions over their segment position ``pos``.

    A source read alone names itself with a literal and numbers its segments from 1. Many
    small sources read together in one pass share one run of positions and indices; ``starts``
    holds, per source, the position of the last segment before it, so a row's source is one
    binary search away, and its position and envelope indices are made local to its source
    by subtracting that source's bases (``set_bases``).
    """

    __slots__ = ("_bases", "_delims", "_keys", "_sep", "_starts", "single")

    def __init__(
        self,
        keys: list[str],
        starts: list[int] | None = None,
        delimiters: list[Delimiters] | None = None,
    ) -> None:
        self.single = starts is None
        self._keys = pl.Series("k", keys, dtype=pl.String)
        self._starts = pl.Series("s", starts or [0], dtype=pl.Int64)
        self._bases: dict[str, pl.Series] = {}
        # Sources under different delimiters read in one pass: their element separators were
        # all replaced by one (``_sep``); each source's own delimiters, for envelopes and
        # for raw text quoted in messages.
        self._delims: dict[str, pl.Series] = {}
        self._sep: str | None = None
        if delimiters is not None:
            self._delims = {
                "element": pl.Series([d.element for d in delimiters], dtype=pl.String),
                "component": pl.Series([d.component for d in delimiters], dtype=pl.String),
                "repetition": pl.Series([d.repetition for d in delimiters], dtype=pl.String),
                "segment": pl.Series([d.segment for d in delimiters], dtype=pl.String),
            }

    def shared_separator(self, sep: str) -> None:
        """The element separator every source's segments were rewritten to."""
        self._sep = sep

    def delimiter(self, kind: str, default: str | None, pos: pl.Expr) -> pl.Expr:
        """The ``kind`` delimiter (element, component, repetition, segment) of a row's source."""
        if not self._delims:
            return pl.lit(default, dtype=pl.String)
        return pl.lit(self._delims[kind]).gather(self._src(pos))

    def raw_text(self, raw: pl.Expr, pos: pl.Expr) -> pl.Expr:
        """Segment text as its source wrote it (its own element separator)."""
        if self._sep is None:
            return raw
        return raw.str.replace_all(self._sep, self.delimiter("element", None, pos), literal=True)

    def set_bases(self, env: pl.DataFrame) -> None:
        """Per source, the envelope indices before it (from the ISA that opens it)."""
        if self.single:
            return
        first = pl.DataFrame({"pos": self._starts + 1}).join(
            env.select("pos", "interchange_index", "group_index", "set_index"),
            on="pos",
            how="left",
            maintain_order="left",
        )
        self._bases = {
            "interchange_index": first["interchange_index"] - 1,
            "group_index": first["group_index"],
            "set_index": first["set_index"],
        }

    def _src(self, pos: pl.Expr) -> pl.Expr:
        return pl.lit(self._starts).search_sorted(pos, side="left") - 1

    def source(self, pos: pl.Expr) -> pl.Expr:
        if self.single:
            return pl.lit(self._keys[0], dtype=pl.String)
        return pl.lit(self._keys).gather(self._src(pos))

    def local_pos(self, pos: pl.Expr) -> pl.Expr:
        if self.single:
            return pos
        return pos - pl.lit(self._starts).gather(self._src(pos))

    def position(self, pos: pl.Expr) -> pl.Expr:
        return seg(self.local_pos(pos))

    def local_index(self, name: str, pos: pl.Expr) -> pl.Expr:
        """Envelope index column ``name`` counted from 1 within the row's own source."""
        if self.single:
            return pl.col(name)
        return pl.col(name) - pl.lit(self._bases[name]).gather(self._src(pos))


@dataclass(slots=True)
class PieceOut:
    """What one piece yields: in-set data rows for the builders and its set table."""

    rows: pl.LazyFrame  # pos, raw, sid, set_index (data segments inside sets only)
    sets: pl.DataFrame  # SET_SCHEMA plus rejected: bool
    element: str


@dataclass(slots=True)
class SourceState:
    """Counters and accumulated small frames of one source, carried across its pieces."""

    source: str
    pos: int = 0
    isa: int = 0
    gs: int = 0
    st: int = 0
    last_env: str | None = None
    ends_cleanly: bool = True
    delimiters: Delimiters | None = None
    isa_info: list[pl.DataFrame] = field(default_factory=list)
    gs_info: list[pl.DataFrame] = field(default_factory=list)
    env: list[pl.DataFrame] = field(default_factory=list)
    sets: list[pl.DataFrame] = field(default_factory=list)
    errors: list[pl.DataFrame] = field(default_factory=list)
    segments: list[pl.DataFrame] = field(default_factory=list)
    totals: list[pl.DataFrame] = field(default_factory=list)
    charges: list[pl.DataFrame] = field(default_factory=list)
    # where rows came from: the source alone unless replaced (many sources in one pass)
    prov: Prov = field(init=False)

    def __post_init__(self) -> None:
        self.prov = Prov([self.source])


def process_piece(
    st: SourceState,
    piece: Piece,
    *,
    keep_segments: bool,
    keep_env: bool,
    tokens: Tokens | None = None,
) -> PieceOut | None:
    """Tokenize one piece (unless ``tokens`` has it already), check its sets and return its
    in-set rows."""
    if piece.delimiters is None:
        _not_x12(st, piece)
        return None
    d = piece.delimiters
    st.delimiters = d
    tok = tokens if tokens is not None else tokenize(piece.data, d)
    pc = _Checked(st, d, tok, _counted(st, tok.frame))
    pc.envelopes(keep_env)
    errs = [
        *pc.set_errors(),
        pc.open_at_end(piece.at_eof),
        *pc.stray_errors(),
        *pc.encoding_error(),
    ]
    err_frame = pl.concat(pl.collect_all(errs, engine=ENGINE), how="vertical")
    if err_frame.height:
        st.errors.append(err_frame)
    sets = pc.set_table(err_frame)
    st.sets.append(sets)
    if keep_segments:
        st.segments.append(pc.segments())
    pc.carry()
    # Lazy: each builder's own filter (segment types, set range) joins this one, so the
    # piece's rows are copied once, not twice.
    rows = pc.frame.lazy().filter(pl.col("inset")).select("pos", "raw", "sid", "set_index")
    return PieceOut(rows, sets, d.element)


def _not_x12(st: SourceState, piece: Piece) -> None:
    """The error row of bytes where an ISA must be (or of no data at all)."""
    st.pos += 1
    preview = piece.data[:24]
    kind = "EMPTY" if not piece.data.strip() else "BAD_ISA"
    msg = (
        "no X12 data"
        if kind == "EMPTY"
        else f"expected an ISA header, found {preview!r}: not X12 or a damaged ISA"
    )
    st.errors.append(
        _err(
            pl.LazyFrame({"_": [0]}),
            pos=pl.lit(st.pos),
            segment_id=None,
            code=kind,
            message=pl.lit(msg),
        ).collect(engine=ENGINE)
    )


def _counted(st: SourceState, tokens: pl.DataFrame) -> pl.DataFrame:
    """The piece's segments with their envelope code, position, envelope indices (carried
    on from the pieces before), the last envelope segment at or before each and ``inset``.

    Tokens from the C kernel arrive with these counted within the piece (``_code``, ``_isa``,
    ``_gs``, ``_st``, ``_last``: 0 before the piece's first envelope segment); only the carry
    from the pieces before is added here.
    """
    n = tokens.height
    carry = pl.lit(ENV_CODE.get(st.last_env or "", 0), dtype=pl.UInt8)
    pos = pl.int_range(1, n + 1, dtype=pl.Int64) + st.pos
    c = pl.col
    if "_code" in tokens.columns:
        counted = tokens.lazy().select(
            "raw",
            "sid",
            code=c("_code"),
            pos=pos,
            interchange_index=c("_isa") + st.isa,
            group_index=c("_gs") + st.gs,
            set_index=c("_st") + st.st,
            last_code=pl.when(c("_last") > 0).then(c("_last")).otherwise(carry),
        )
    else:
        counted = (
            tokens.lazy()
            .with_columns(code=_ENV_CODE_EXPR)
            .with_columns(
                pos=pos,
                interchange_index=(c("code") == 1).cum_sum().cast(pl.Int64) + st.isa,
                group_index=(c("code") == 2).cum_sum().cast(pl.Int64) + st.gs,
                set_index=(c("code") == 3).cum_sum().cast(pl.Int64) + st.st,
                last_code=pl.when(c("code") > 0).then(c("code")).forward_fill().fill_null(carry),
            )
        )
    return counted.with_columns(inset=(c("last_code") == 3) & (c("code") == 0)).collect(
        engine=ENGINE
    )


# Header columns from ISA / GS elements (``!``: spaces trimmed, fixed-width ISA IDs).
_ISA_FIELDS: Final = {
    "interchange_index": "",
    "interchange_control": "e13",
    "sender_qualifier": "!e05",
    "sender_id": "!e06",
    "receiver_qualifier": "!e07",
    "receiver_id": "!e08",
    "isa_version": "e12",
    "isa_date": "e09",
    "isa_time": "e10",
    "usage": "e15",
}
_GS_FIELDS: Final = {
    "group_index": "",
    "functional_id": "e01",
    "app_sender": "e02",
    "app_receiver": "e03",
    "group_control": "e06",
    "version": "e08",
}


def _fields(spec: dict[str, str]) -> list[pl.Expr]:
    """Columns named by ``spec``'s keys from its elements (an empty element: the key itself)."""
    out = []
    for name, src in spec.items():
        x = pl.col(src.lstrip("!") or name)
        out.append((x.str.strip_chars() if src.startswith("!") else x).alias(name))
    return out


_IDS: Final = {k: pl.col(k) for k in ("interchange_index", "group_index", "set_index")}


class _Checked:
    """The stages of checking one piece, over its counted segments (``frame``) and its
    envelope segments split into elements (``env``, then ``shifted`` and ``sts``)."""

    def __init__(self, st: SourceState, d: Delimiters, tok: Tokens, frame: pl.DataFrame) -> None:
        self.st, self.d, self.tok, self.frame = st, d, tok, frame
        self.n = frame.height
        self.last_pos = st.pos + self.n
        self.env = (
            frame.lazy()
            .filter(pl.col("code") > 0)
            .pipe(
                split_elements,
                ["pos", "sid", "interchange_index", "group_index", "set_index"],
                d.element,
                16,
                "e",
            )
            .collect(engine=ENGINE)
        )
        c, sid = pl.col, pl.col("sid")
        # Each envelope segment with what follows it, and each ST with its trailer: the
        # checks and the set list all read these two frames (collected once).
        self.shifted = (
            self.env.lazy()
            .with_columns(
                nxt_sid=sid.shift(-1),
                nxt_pos=c("pos").shift(-1),
                se01=c("e01").shift(-1),
                se02=c("e02").shift(-1),
                prv_sid=sid.shift(1).fill_null(pl.lit(st.last_env)),
            )
            .collect(engine=ENGINE)
            .lazy()
        )
        self.sts = (
            self.shifted.filter(sid == "ST")
            .with_columns(
                closed=c("nxt_sid") == "SE",
                count=c("nxt_pos") - c("pos") + 1,
            )
            .collect(engine=ENGINE)
            .lazy()
        )

    def envelopes(self, keep_env: bool) -> None:
        """The interchange and group headers (small), kept for the source."""
        st, d, env, c, sid = self.st, self.d, self.env, pl.col, pl.col("sid")
        if keep_env:
            st.env.append(env.select(list(ENV_SCHEMA)))
        delim, pos = st.prov.delimiter, c("pos")
        separators = [
            delim(kind, default, pos).alias(f"{kind}_{word}")
            for kind, default, word in (
                ("element", d.element, "separator"),
                ("component", d.component, "separator"),
                ("repetition", d.repetition, "separator"),
                ("segment", d.segment, "terminator"),
            )
        ]
        isa = env.lazy().filter(sid == "ISA").select(*_fields(_ISA_FIELDS), *separators)
        gs = env.lazy().filter(sid == "GS").select(*_fields(_GS_FIELDS))
        isa_df, gs_df = pl.collect_all([isa, gs], engine=ENGINE)
        st.isa_info.append(isa_df)
        st.gs_info.append(gs_df)

    def set_errors(self) -> list[pl.LazyFrame]:
        """SE01 count, SE02 control, SE missing before the next envelope, SE without ST."""
        c, sts, here = pl.col, self.sts, self.st.prov.local_pos
        return [
            *_trailer_errors(
                sts.filter(c("closed")),
                _IDS,
                ("SE", c("se01"), c("se02")),
                (c("count"), "segments counted from ST (segment {}) to SE", [here(c("pos"))]),
                (c("e02"), "ST02"),
            ),
            _err(
                sts.filter(~c("closed").fill_null(False) & c("nxt_sid").is_not_null()),
                **_IDS,
                pos=c("nxt_pos"),
                segment_id=c("nxt_sid"),
                code="SE_MISSING",
                message=pl.format(
                    "set {} (ST at segment {}) is not closed by SE before {} at segment {}",
                    c("e02"),
                    here(c("pos")),
                    c("nxt_sid"),
                    here(c("nxt_pos")),
                ),
            ),
            _err(
                self.shifted.filter((c("sid") == "SE") & (c("prv_sid").fill_null("") != "ST")),
                **_IDS,
                pos=c("pos"),
                segment_id=pl.lit("SE"),
                code="ST_MISSING",
                message=pl.format("SE {} without an open ST", c("e02").fill_null("(empty)")),
            ),
        ]

    def open_at_end(self, at_eof: bool) -> pl.LazyFrame:
        """The set still open at the end of the piece: TRUNCATED at the end of input, else
        not closed before the next piece (which starts with an ST or ISA)."""
        c, last_pos = pl.col, self.last_pos
        open_last = self.sts.filter(c("nxt_sid").is_null())
        if at_eof:
            where = "inside" if not self.tok.ends_cleanly else "after"
            return _err(
                open_last,
                **_IDS,
                pos=pl.lit(last_pos),
                segment_id=pl.lit(self.frame["sid"][-1] if self.n else None, dtype=pl.String),
                code="TRUNCATED",
                message=pl.format(
                    "input ends {} segment {} before SE of set {} (ST at segment {})",
                    pl.lit(where),
                    pl.lit(last_pos),
                    c("e02"),
                    c("pos"),
                ),
            )
        return _err(
            open_last,
            **_IDS,
            pos=pl.lit(last_pos + 1),
            code="SE_MISSING",
            message=pl.format(
                "set {} (ST at segment {}) is not closed by SE before segment {}",
                c("e02"),
                c("pos"),
                pl.lit(last_pos + 1),
            ),
        )

    def stray_errors(self) -> list[pl.LazyFrame]:
        """Segments without an ID inside sets, and data segments outside any set."""
        c, sid, raw_text = pl.col, pl.col("sid"), self.st.prov.raw_text
        outside = ~c("inset") & (c("code") == 0)
        # One pass over the piece for both kinds of stray segment (tiny result).
        stray = (
            self.frame.lazy()
            .with_columns(_o=outside)
            .filter((c("inset") & sid.is_null()) | (c("_o") & ~c("_o").shift(1).fill_null(False)))
            .collect(engine=ENGINE)
            .lazy()
        )
        in_group = c("last_code").is_in([2, 4])
        return [
            _err(
                stray.filter(c("inset")),
                **_IDS,
                pos=c("pos"),
                segment_id=raw_text(c("raw").str.slice(0, 3), c("pos")),
                code="SEGMENT_ID",
                message=pl.format(
                    "not a segment ID at the start of {}",
                    raw_text(c("raw").str.slice(0, 30), c("pos")),
                ),
            ),
            _err(
                stray.filter(c("_o")).with_columns(
                    _code=pl.when(in_group)
                    .then(pl.lit("ST_MISSING"))
                    .otherwise(pl.lit("UNEXPECTED_DATA"))
                ),
                interchange_index=c("interchange_index"),
                group_index=pl.when(in_group).then(c("group_index")),
                pos=c("pos"),
                segment_id=sid,
                code=c("_code"),
                message=pl.format(
                    "segment outside any transaction set: {}",
                    raw_text(c("raw").str.slice(0, 30), c("pos")),
                ),
            ),
        ]

    def encoding_error(self) -> list[pl.LazyFrame]:
        """The ENCODING row of a piece that is not UTF-8 (read as Latin-1)."""
        bad = self.tok.encoding_error
        if bad is None:
            return []
        at = self.st.pos + bad
        return [
            _err(
                pl.LazyFrame({"_": [0]}),
                pos=pl.lit(at),
                code="ENCODING",
                message=pl.lit(f"bytes in segment {at} are not UTF-8; read as Latin-1"),
            )
        ]

    def set_table(self, errors: pl.DataFrame) -> pl.DataFrame:
        """One row per set of the piece (SET_SCHEMA) and whether an error rejected it."""
        c = pl.col
        rejected = errors.filter(c("code").is_in(list(REJECTING)) & c("set_index").is_not_null())[
            "set_index"
        ].unique()
        return (
            self.sts.select(
                c("set_index"),
                c("interchange_index"),
                c("group_index"),
                c("pos").alias("st_pos"),
                c("e01").alias("set_id"),
                c("e02").alias("set_control"),
                pl.when(c("closed")).then(c("count")).alias("segment_count"),
                pl.when(c("closed"))
                .then(c("se01").cast(pl.Int64, strict=False))
                .alias("declared_count"),
            )
            .with_columns(rejected=c("set_index").is_in(rejected.implode()))
            .collect(engine=ENGINE)
        )

    def segments(self) -> pl.DataFrame:
        """Every segment of the piece in long form (SEGMENTS_SCHEMA of the reader)."""
        c, sid = pl.col, pl.col("sid")
        return self.frame.select(
            pl.lit(self.st.source).alias("source"),
            c("interchange_index"),
            pl.when(~c("last_code").is_in([5, 6]) & (c("code") != 1))
            .then(c("group_index"))
            .alias("group_index"),
            pl.when(c("inset") | sid.is_in(["ST", "SE"])).then(c("set_index")).alias("set_index"),
            c("pos").alias("segment"),
            sid.alias("segment_id"),
            c("raw").str.split(self.d.element).list.slice(1).alias("elements"),
        )

    def carry(self) -> None:
        """Counters on to the next piece of the source."""
        st, frame = self.st, self.frame
        if self.n:
            st.pos = self.last_pos
            st.isa = int(frame["interchange_index"][-1])
            st.gs = int(frame["group_index"][-1])
            st.st = int(frame["set_index"][-1])
            st.last_env = ENV_NAME.get(int(frame["last_code"][-1]))
        st.ends_cleanly = self.tok.ends_cleanly


def _trailer_errors(
    closed: pl.LazyFrame,
    ids: dict[str, pl.Expr],
    trailer: tuple[str, pl.Expr, pl.Expr],
    count: tuple[pl.Expr, str, list[pl.Expr]],
    control: tuple[pl.Expr, str],
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """Count and control-number errors of closed headers (ST, GS, ISA): ``trailer`` is the
    trailer's ID and its 01 / 02 elements, ``count`` what 01 must equal with the words (and
    their arguments) after it in the message, ``control`` the header's control number and
    its element name."""
    tail, t01, t02 = trailer
    counted, units, args = count
    ctl, ctl_name = control
    c = pl.col
    return (
        _err(
            closed.filter((t01.cast(pl.Int64, strict=False) != counted).fill_null(True)),
            **ids,
            pos=c("nxt_pos"),
            segment_id=pl.lit(tail),
            element=pl.lit(f"{tail}01"),
            code=f"{tail}01_COUNT",
            message=pl.format(
                f"{tail}01 {{}} != {{}} {units}", t01.fill_null("(empty)"), counted, *args
            ),
        ),
        _err(
            closed.filter(~ctl_eq(t02, ctl)),
            **ids,
            pos=c("nxt_pos"),
            segment_id=pl.lit(tail),
            element=pl.lit(f"{tail}02"),
            code=f"{tail}02_CONTROL",
            message=pl.format(
                f"{tail}02 {{}} != {ctl_name} {{}}",
                t02.fill_null("(empty)"),
                ctl.fill_null("(empty)"),
            ),
        ),
    )


@dataclass(frozen=True, slots=True)
class _Pair:
    """An envelope pair checked over a whole source: a header (GS / ISA) and its trailer
    (GE / IEA), whose 01 counts the units below (sets / groups) and whose 02 repeats the
    header's control number (GS06 / ISA13)."""

    head: str
    tail: str
    among: tuple[str, ...]  # the envelope segments that decide what follows a header
    control: str  # the header's control-number element
    counted: str  # index column of the units the trailer counts
    units: str  # "sets in the group" / "groups in the interchange"
    ids: tuple[str, ...]  # index columns of an error row
    unclosed_by: tuple[str, ...]  # the next segment that shows the header was not closed
    unclosed: str  # message of a header not closed (format: control, position, next ID)
    orphan: str  # message of a trailer without a header


_GROUP: Final = _Pair(
    "GS",
    "GE",
    ("ISA", "GS", "GE", "IEA"),
    "e06",
    "set_index",
    "sets in the group",
    ("interchange_index", "group_index"),
    ("GS", "ISA", "IEA"),
    "group {} (GS at segment {}) is not closed by GE before {}",
    "GE without an open GS",
)
_INTERCHANGE: Final = _Pair(
    "ISA",
    "IEA",
    ("ISA", "IEA"),
    "e13",
    "group_index",
    "groups in the interchange",
    ("interchange_index",),
    ("ISA",),
    "interchange {} (ISA at segment {}) is not closed by IEA before the next {}",
    "IEA without an open ISA",
)


def _pair_checks(env: pl.LazyFrame, pair: _Pair, prov: Prov) -> tuple[pl.LazyFrame, ...]:
    """Count, control, unclosed-header and orphan-trailer error rows of ``pair``, and (last)
    its header and trailer rows with what follows each."""
    c, sid = pl.col, pl.col("sid")
    rows = env.filter(sid.is_in(list(pair.among))).with_columns(
        nxt_sid=sid.shift(-1),
        nxt_pos=c("pos").shift(-1),
        _t01=c("e01").shift(-1),
        _t02=c("e02").shift(-1),
        _nxt_n=c(pair.counted).shift(-1),
        prv_sid=sid.shift(1),
    )
    head = rows.filter(sid == pair.head).with_columns(_n=c("_nxt_n") - c(pair.counted))
    closed = c("nxt_sid") == pair.tail
    ids = {k: c(k) for k in pair.ids}
    control = f"{pair.head}{pair.control[1:]}"
    return (
        *_trailer_errors(
            head.filter(closed),
            ids,
            (pair.tail, c("_t01"), c("_t02")),
            (c("_n"), pair.units, []),
            (c(pair.control), control),
        ),
        _err(
            head.filter(c("nxt_sid").is_in(list(pair.unclosed_by))),
            **ids,
            pos=c("nxt_pos"),
            segment_id=c("nxt_sid"),
            code=f"{pair.tail}_MISSING",
            message=pl.format(
                pair.unclosed, c(pair.control), prov.local_pos(c("pos")), c("nxt_sid")
            ),
        ),
        _err(
            rows.filter((sid == pair.tail) & (c("prv_sid").fill_null("") != pair.head)),
            **ids,
            pos=c("pos"),
            segment_id=pl.lit(pair.tail),
            code=f"{pair.head}_MISSING",
            message=pl.lit(pair.orphan),
        ),
        rows,
    )


def finish_source(st: SourceState) -> None:
    """Group and interchange checks over the envelope segments of a whole source."""
    if not st.env:
        if not st.errors:
            st.errors.append(
                _err(
                    pl.LazyFrame({"_": [0]}),
                    pos=pl.lit(1),
                    code="EMPTY",
                    message=pl.lit("no X12 data"),
                ).collect(engine=ENGINE)
            )
        return
    env = pl.concat(st.env, how="vertical").lazy()
    c, sid = pl.col, pl.col("sid")
    *group_errs, _ = _pair_checks(env, _GROUP, st.prov)
    *ic_errs, i = _pair_checks(env, _INTERCHANGE, st.prov)
    # ST outside a group: the last of GS/GE/ISA/IEA before it is not GS.
    outside = _err(
        env.with_columns(_g=pl.when(sid.is_in(list(_GROUP.among))).then(sid).forward_fill()).filter(
            (sid == "ST") & (c("_g").fill_null("") != "GS")
        ),
        interchange_index=c("interchange_index"),
        set_index=c("set_index"),
        pos=c("pos"),
        segment_id=pl.lit("ST"),
        code="GS_MISSING",
        message=pl.lit("ST outside a functional group (no open GS)"),
    )
    # An interchange still open at the end of input: TRUNCATED (once per source).
    last = i.select(sid.last(), c("interchange_index").last(), c("e13").last())
    *found, last_df = pl.collect_all([*group_errs, outside, *ic_errs, last], engine=ENGINE)
    out = pl.concat(found, how="vertical")
    if out.height:
        st.errors.append(out)
    _truncated_interchange(st, last_df)


def _truncated_interchange(st: SourceState, last: pl.DataFrame) -> None:
    """A TRUNCATED row when the source's last ISA is never closed and no set said so."""
    already = any(f.height and (f["code"] == "TRUNCATED").any() for f in st.errors)
    if last.height and last["sid"][0] == "ISA" and not already:
        where = "inside" if not st.ends_cleanly else "after"
        st.errors.append(
            _err(
                pl.LazyFrame({"_": [0]}),
                interchange_index=pl.lit(last["interchange_index"][0]),
                pos=pl.lit(st.pos),
                code="TRUNCATED",
                message=pl.lit(
                    f"input ends {where} segment {st.pos} before IEA of interchange "
                    f"{last['e13'][0]}"
                ),
            ).collect(engine=ENGINE)
        )
