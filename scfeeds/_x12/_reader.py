"""``read_x12``: sources to an ``X12Result`` (canonical tables, segments, envelopes, errors)."""

from __future__ import annotations

import glob
import io
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Final, TypeAlias, TypeVar

import polars as pl

from scfeeds._x12._ack import Acknowledgment, ack_997
from scfeeds._x12._batch import join_tokens, small_source
from scfeeds._x12._codes import CODES
from scfeeds._x12._core import (
    _RAW_ERROR,
    ENV_SCHEMA,
    ERROR_SCHEMA,
    GS_SCHEMA,
    ISA_SCHEMA,
    SET_SCHEMA,
    PieceOut,
    Prov,
    SourceState,
    finish_source,
    process_piece,
)
from scfeeds._x12._tables import (
    CHARGES_COLUMNS,
    PROV_STR,
    SET_OF,
    TOTALS_COLUMNS,
    build,
    invoice_extras,
)
from scfeeds._x12._tokenize import ENGINE, Delimiters, Piece, Tokens, iter_pieces, tokenize
from scfeeds.exceptions import ConfigurationError
from scfeeds.schemas import TableName, empty, schema

if TYPE_CHECKING:
    from datetime import datetime

X12Source: TypeAlias = (
    bytes
    | bytearray
    | memoryview
    | str
    | os.PathLike[str]
    | Sequence["bytes | str | os.PathLike[str]"]
)
# Measured: every slice costs a fixed ~20 ms (some 50 small polars queries); 8 MiB halves
# that share against 4 MiB (+12 % throughput) for about 20 % more peak RSS; 16 MiB gains
# little more.
DEFAULT_SLICE: Final = 8 * 1024 * 1024
# Sources up to this size are read whole and, when their edges are intact, together with
# their neighbours in one pass (``_batch``); larger ones are streamed slice by slice.
SMALL_SOURCE: Final = 1024 * 1024
T = TypeVar("T")
X12_TABLES: Final[tuple[TableName, ...]] = ("po_lines", "asn_lines", "invoice_lines", "po_acks")

SEGMENTS_SCHEMA: Final = pl.Schema(
    {
        "source": pl.String(),
        "interchange_index": pl.Int64(),
        "group_index": pl.Int64(),
        "set_index": pl.Int64(),
        "segment": pl.Int64(),
        "segment_id": pl.String(),
        "elements": pl.List(pl.String()),
    }
)
ENVELOPES_SCHEMA: Final = pl.Schema(
    {
        "source": pl.String(),
        "interchange_index": pl.Int64(),
        "group_index": pl.Int64(),
        "set_index": pl.Int64(),
        "position": pl.String(),
        **{k: v for k, v in ISA_SCHEMA.items() if k != "interchange_index"},
        **{k: v for k, v in GS_SCHEMA.items() if k != "group_index"},
        "set_id": pl.String(),
        "set_control": pl.String(),
        "segment_count": pl.Int64(),
        "declared_count": pl.Int64(),
        "declared_sets": pl.Int64(),
        "valid": pl.Boolean(),
        "group_valid": pl.Boolean(),
        "interchange_valid": pl.Boolean(),
    }
)


@dataclass(frozen=True)
class X12Result:
    """Everything read from X12 sources.

    Attributes
    ----------
    po_lines, asn_lines, invoice_lines
        Canonical tables (``scfeeds.schemas.schema(table)``) from the intact 850 / 856 / 810
        sets. A set with a set-level error (``errors.level`` set, segment or element) is left
        out; sets beside it are delivered.
    invoice_totals
        One row per intact 810: provenance, invoice_number and ``total_amount`` (TDS01, two
        implied decimals).
    invoice_charges
        One row per SAC of an intact 810: provenance (position of the SAC), invoice_number,
        line_number (null at invoice level), indicator (SAC01 ``A`` allowance / ``C``
        charge), code (SAC02), amount (SAC05, two implied decimals), percent (SAC08),
        description (SAC15).
    segments
        Every segment in long form: source, interchange / group / set index (1-based per
        source; null outside), ``segment`` (position in the file), ``segment_id`` and
        ``elements`` (element 01 first; composites keep their component separator).
    envelopes
        One row per transaction set: ISA / GS / ST identifiers and control numbers, sender,
        receiver, versions, delimiters, counted and declared segment counts, and whether the
        set, its group and its interchange passed the envelope checks.
    errors
        One row per problem: source, indices and control numbers, ``position``
        (``"segment N"``), segment ID, element, ``code`` (see ``scfeeds._x12._codes``),
        ``level`` and a message.
    """

    po_lines: pl.DataFrame
    asn_lines: pl.DataFrame
    invoice_lines: pl.DataFrame
    invoice_totals: pl.DataFrame
    invoice_charges: pl.DataFrame
    segments: pl.DataFrame
    envelopes: pl.DataFrame
    errors: pl.DataFrame
    po_acks: pl.DataFrame = field(default_factory=lambda: empty("po_acks"))
    """855 acknowledgments (``schema("po_acks")``), from the intact 855 sets."""

    def table(self, name: TableName) -> pl.DataFrame:
        """The canonical table ``name`` (``"po_lines"``, ``"asn_lines"`` or ``"invoice_lines"``)."""
        if name not in X12_TABLES:
            raise ConfigurationError(
                f"X12 has no table {name!r}; use one of {', '.join(X12_TABLES)}"
            )
        frame: pl.DataFrame = getattr(self, name)
        return frame

    def acknowledgment(
        self, *, control_number: int = 1, now: datetime | None = None
    ) -> Acknowledgment:
        """The 997 functional acknowledgment of every group read (see ``ack_997``): the text
        to send, with the verdicts as frames in ``.groups`` and ``.sets``."""
        return ack_997(self, control_number=control_number, now=now)


def expand_sources(source: X12Source) -> list[tuple[str, bytes | Path]]:
    """(name, bytes-or-path) for every input: bytes, a path, a glob, or a list of them."""
    if isinstance(source, bytes | bytearray | memoryview):
        return [("<bytes>", bytes(source))]
    if isinstance(source, str | os.PathLike):
        text = os.fspath(source)
        if any(ch in text for ch in "*?["):
            matches = sorted(glob.glob(text, recursive=True))
            files = [m for m in matches if os.path.isfile(m)]
            if not files:
                raise ConfigurationError(f"no file matches the glob {text!r}")
            return [(m, Path(m)) for m in files]
        if not os.path.isfile(text):
            raise ConfigurationError(
                f"X12 source {text!r} is not a file (pass bytes, a path or a glob)"
            )
        return [(text, Path(text))]
    if isinstance(source, Sequence):
        out: list[tuple[str, bytes | Path]] = []
        for i, item in enumerate(source):
            if isinstance(item, bytes | bytearray | memoryview):
                out.append((f"<bytes[{i}]>", bytes(item)))
            elif isinstance(item, str | os.PathLike):
                out.extend(expand_sources(item))
            else:
                raise ConfigurationError(f"unsupported X12 source in list: {type(item).__name__}")
        return out
    raise ConfigurationError(
        f"read_x12 takes bytes, a path, a glob or a list of them, not {type(source).__name__}"
    )


def _open(data: bytes | Path) -> BinaryIO:
    """The one place a source's bytes are opened (files are read only through it)."""
    if isinstance(data, bytes):
        return io.BytesIO(data)
    return open(data, "rb")


def _ctx(st: SourceState, sets: pl.DataFrame) -> pl.DataFrame:
    isa = pl.concat([_empty(ISA_SCHEMA), *st.isa_info], how="vertical")
    gs = pl.concat([_empty(GS_SCHEMA), *st.gs_info], how="vertical")
    return (
        sets.lazy()
        .join(
            isa.lazy().select(
                "interchange_index", "interchange_control", "sender_id", "receiver_id"
            ),
            on="interchange_index",
            how="left",
        )
        .join(
            gs.lazy().select("group_index", "group_control", "app_sender", "app_receiver"),
            on="group_index",
            how="left",
        )
        .select(
            "set_index",
            "set_id",
            "rejected",
            "interchange_control",
            "group_control",
            "set_control",
            "sender_id",
            "receiver_id",
            "app_sender",
            "app_receiver",
        )
        .collect(engine=ENGINE)
    )


@dataclass(slots=True)
class _Built:
    """What the builders made of one piece (appended to the source state in order)."""

    tables: dict[TableName, pl.DataFrame]
    errors: list[pl.DataFrame]
    totals: list[pl.DataFrame]
    charges: list[pl.DataFrame]


def _build_piece(
    name: str | Prov,
    out: PieceOut,
    ctx: pl.DataFrame,
    wanted: list[TableName],
    columns: list[str] | None,
    extras: bool,
) -> _Built:
    got = _Built({}, [], [], [])
    for t in wanted:
        got.tables[t], err = build(t, out.rows, ctx, out.element, name, columns)
        if err.height:
            got.errors.append(err)
        if extras and t == "invoice_lines":
            totals, charges = invoice_extras(
                out.rows, ctx, out.element, name, err["set_index"].unique()
            )
            got.totals.append(totals)
            got.charges.append(charges)
    return got


class _Inline:
    """An executor that runs each task at once: a source of one piece has nothing to overlap,
    and starting threads would cost more than the work."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        fut: Future[T] = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the caller by result(), as a pool would
            fut.set_exception(exc)
        return fut

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _pool(data: bytes | Path, slice_bytes: int) -> ThreadPoolExecutor | _Inline:
    """Overlapping pieces (about three in flight) for a source of several slices of at most
    ``_OVERLAP_MAX``; larger slices run one at a time, so that the bytes in flight, and with
    them peak memory, do not grow with the slice size (measured on 110 MB of 850s: 16 MiB
    slices 737 MB above the import baseline overlapped, 616 MB one at a time; 4 MiB slices
    overlapped 538 MB)."""
    size = len(data) if isinstance(data, bytes) else os.path.getsize(data)
    if size <= slice_bytes or slice_bytes > _OVERLAP_MAX:
        return _Inline()
    return ThreadPoolExecutor(2, thread_name_prefix="x12")


_OVERLAP_MAX: Final = DEFAULT_SLICE


# Pieces tokenized ahead / built behind the sequential envelope pass. polars releases the
# GIL inside its kernels, so the stages of neighbouring pieces overlap on separate cores;
# memory stays bounded by a few pieces in flight.
_AHEAD: Final = 1


def iter_tables(
    name: str,
    data: bytes | Path,
    tables: Sequence[TableName],
    *,
    columns: list[str] | None = None,
    slice_bytes: int = DEFAULT_SLICE,
    keep_segments: bool = False,
    keep_env: bool = False,
    state: SourceState | None = None,
    extras: bool = False,
) -> Iterator[dict[TableName, pl.DataFrame]]:
    """Per piece of one source: the requested tables (rows of intact sets only).

    Three stages per piece: tokenizing (independent of other pieces, run ahead in a worker
    thread), the envelope pass (sequential: counters carry from piece to piece) and the
    table builders (independent again, run in a worker while the next piece is checked).
    """
    st = state if state is not None else SourceState(name)
    toks: deque[tuple[Piece, Future[Tokens] | None]] = deque()
    built: deque[Future[_Built]] = deque()

    def drain(limit: int) -> Iterator[dict[TableName, pl.DataFrame]]:
        while len(built) > limit:
            got = built.popleft().result()
            st.errors.extend(got.errors)
            st.totals.extend(got.totals)
            st.charges.extend(got.charges)
            yield got.tables

    def check(piece: Piece, fut: Future[Tokens] | None) -> None:
        tok = fut.result() if fut is not None else None
        out = process_piece(st, piece, keep_segments=keep_segments, keep_env=keep_env, tokens=tok)
        if out is None:
            return
        wanted = [t for t in tables if (out.sets["set_id"] == SET_OF[t]).any()]
        if wanted:
            ctx = _ctx(st, out.sets)
            built.append(pool.submit(_build_piece, name, out, ctx, wanted, columns, extras))

    with _open(data) as stream, _pool(data, slice_bytes) as pool:
        for piece in iter_pieces(stream, slice_bytes):
            d = piece.delimiters
            toks.append((piece, pool.submit(tokenize, piece.data, d) if d is not None else None))
            if len(toks) > _AHEAD:
                check(*toks.popleft())
                yield from drain(1)
        while toks:
            check(*toks.popleft())
            yield from drain(1)
        yield from drain(0)


def read_x12(
    source: X12Source,
    *,
    segments: bool = True,
    slice_bytes: int = DEFAULT_SLICE,
) -> X12Result:
    """Read X12 850 / 856 / 810 interchanges into polars frames, with envelope checks.

    Parameters
    ----------
    source
        Bytes, a path, a glob (``"feeds/**/*.x12"``) or a list of them. Large files are read
        in slices of whole transaction sets, so memory follows the slice size, not the file.
        Small ones (up to 1 MiB, the usual one interchange per file) are read together, up
        to ``slice_bytes`` at a time, in one pass: the fixed cost of a read
        is paid per call, not per file, and the frames equal one call per file concatenated
        (each file keeps its own delimiters, envelope checks, ``source`` and positions).
    segments
        Also return every segment in long form (``X12Result.segments``); turn off to save
        time and memory when only the tables matter.
    slice_bytes
        Target size of a slice. Delimiters are detected per ISA, so interchanges with
        different delimiters in one file are read correctly.

    Returns
    -------
    X12Result
        Canonical tables of the intact sets, the segments, one row per set in
        ``envelopes`` and one row per problem in ``errors``. Damaged input never raises.

    Examples
    --------
    >>> isa = b"ISA*00*" + b" " * 10 + b"*00*" + b" " * 10 + b"*ZZ*SUP001         *ZZ*BUYER"
    >>> isa += b"          *260101*1200*U*00401*000000001*0*P*>~"
    >>> body = b"GS*PO*SUP001*BUYER*20260101*1200*1*X*004010~ST*850*0001~BEG*00*SA*PO1**20260101~"
    >>> body += b"PO1*1*2*EA*3.5**BP*X1~SE*4*0001~GE*1*1~IEA*1*000000001~"
    >>> res = read_x12(isa + body)
    >>> res.po_lines.select("po_number", "line_number", "item_id", "qty_ordered").row(0)
    ('PO1', '1', 'X1', Decimal('2.0000'))
    """
    if slice_bytes < 1024:
        raise ConfigurationError("slice_bytes must be at least 1024")
    return read_sources(expand_sources(source), segments=segments, slice_bytes=slice_bytes)


def read_sources(
    sources: Sequence[tuple[str, bytes | Path]],
    *,
    segments: bool = True,
    slice_bytes: int = DEFAULT_SLICE,
    extras: bool = True,
) -> X12Result:
    """``read_x12`` of ``(name, bytes or path)`` pairs: ``name`` is the rows' ``source``.
    ``extras=False`` leaves ``invoice_totals`` / ``invoice_charges`` empty (not built)."""
    units = list(
        iter_units(
            sources,
            X12_TABLES,
            slice_bytes=slice_bytes,
            keep_segments=segments,
            full=True,
            extras=extras,
        )
    )
    tables = {
        t: pl.concat(
            [_empty(schema(t)), *(u.tables[t] for u in units if t in u.tables)], how="vertical"
        )
        for t in X12_TABLES
    }
    prov = {k: pl.String() for k in PROV_STR}

    def cat(what: str, sch: pl.Schema | dict[str, pl.DataType]) -> pl.DataFrame:
        frames: list[pl.DataFrame] = [f for u in units if (f := getattr(u, what)) is not None]
        return pl.concat([_empty(sch), *frames], how="vertical")

    return X12Result(
        po_lines=tables["po_lines"],
        asn_lines=tables["asn_lines"],
        invoice_lines=tables["invoice_lines"],
        invoice_totals=cat("totals", {**prov, **TOTALS_COLUMNS}),
        invoice_charges=cat("charges", {**prov, **CHARGES_COLUMNS}),
        segments=cat("segments", SEGMENTS_SCHEMA),
        envelopes=cat("envelopes", ENVELOPES_SCHEMA),
        errors=cat("errors", ERROR_SCHEMA),
        po_acks=tables["po_acks"],
    )


_EMPTY: dict[tuple[tuple[str, pl.DataType], ...], pl.DataFrame] = {}


def _empty(sch: pl.Schema | dict[str, pl.DataType]) -> pl.DataFrame:
    """An empty frame of ``sch`` (cached: building one costs a Series per column; handed
    out as a clone, since ``pl.concat`` of one frame returns that frame, which its caller
    may change in place)."""
    key = tuple(sch.items())
    got = _EMPTY.get(key)
    if got is None:
        got = _EMPTY[key] = pl.DataFrame(schema=sch)
    return got.clone()


@dataclass(slots=True)
class Unit:
    """Frames read from a run of sources (many small ones in one pass, or one alone), with
    ``source`` the names as given and rows in source order."""

    tables: dict[TableName, pl.DataFrame]
    totals: pl.DataFrame | None = None
    charges: pl.DataFrame | None = None
    segments: pl.DataFrame | None = None
    envelopes: pl.DataFrame | None = None
    errors: pl.DataFrame | None = None


def iter_units(
    sources: Sequence[tuple[str, bytes | Path]],
    tables: Sequence[TableName],
    *,
    slice_bytes: int = DEFAULT_SLICE,
    columns: list[str] | None = None,
    keep_segments: bool = False,
    full: bool = False,
    extras: bool | None = None,
) -> Iterator[Unit]:
    """Read ``sources`` in order: consecutive small sources with intact edges together, up to
    ``slice_bytes`` per pass; any other source alone, streamed in slices.

    ``full`` also makes envelopes, errors and (unless ``extras`` is False) invoice totals /
    charges (``read_x12``); otherwise only ``tables`` (``scan_x12``).
    """
    ex = full if extras is None else extras
    small = min(SMALL_SOURCE, slice_bytes)
    pending: list[tuple[str, bytes, Delimiters]] = []
    size = 0
    for name, data in sources:
        raw: bytes | None = None
        if isinstance(data, bytes):
            raw = data if len(data) <= small else None
        elif os.path.getsize(data) <= small:
            with _open(data) as f:
                raw = f.read()
        fit = small_source(raw) if raw is not None else None
        if fit is not None:
            if pending and size + len(fit[0]) > slice_bytes:
                yield _read_batch(pending, tables, columns, keep_segments, full, ex)
                pending, size = [], 0
            pending.append((name, *fit))
            size += len(fit[0])
            continue
        if pending:
            yield _read_batch(pending, tables, columns, keep_segments, full, ex)
            pending, size = [], 0
        whole = raw if raw is not None else data
        yield from _read_alone(name, whole, tables, columns, slice_bytes, keep_segments, full, ex)
    if pending:
        yield _read_batch(pending, tables, columns, keep_segments, full, ex)


def _read_alone(
    name: str,
    data: bytes | Path,
    tables: Sequence[TableName],
    columns: list[str] | None,
    slice_bytes: int,
    keep_segments: bool,
    full: bool,
    extras: bool,
) -> Iterator[Unit]:
    """One source in slices: a unit per slice (memory follows the slice, not the file), then
    one with the source's envelopes and errors when ``full``."""
    st = SourceState(name)
    for got in iter_tables(
        name,
        data,
        tables,
        columns=columns,
        slice_bytes=slice_bytes,
        keep_segments=keep_segments,
        keep_env=full,
        state=st,
        extras=extras,
    ):
        yield Unit(dict(got))
    if full:
        finish_source(st)
        unit = Unit({})
        _finish(unit, [st])
        yield unit


def _cat(frames: list[pl.DataFrame], table: TableName, columns: list[str] | None) -> pl.DataFrame:
    sch = schema(table)
    empty = _empty({n: d for n, d in sch.items() if columns is None or n in columns})
    return pl.concat([empty, *frames], how="vertical") if frames else empty


def _finish(unit: Unit, states: list[SourceState]) -> None:
    unit.envelopes, unit.errors = _assemble(states)
    prov = {k: pl.String() for k in PROV_STR}
    unit.segments = pl.concat(
        [_empty(SEGMENTS_SCHEMA), *(f for st in states for f in st.segments)], how="vertical"
    )
    unit.totals = pl.concat(
        [_empty({**prov, **TOTALS_COLUMNS}), *(f for s in states for f in s.totals)],
        how="vertical",
    )
    unit.charges = pl.concat(
        [_empty({**prov, **CHARGES_COLUMNS}), *(f for s in states for f in s.charges)],
        how="vertical",
    )


def _read_batch(
    docs: list[tuple[str, bytes, Delimiters]],
    tables: Sequence[TableName],
    columns: list[str] | None,
    keep_segments: bool,
    full: bool,
    extras: bool,
) -> Unit:
    """Many small sources in one pass (``_passes``); rows keyed by the source's index in
    ``docs`` (as text in ``source``) until ``_in_order`` puts names and order back."""
    groups: dict[Delimiters, list[int]] = {}
    for i, (_, _, d) in enumerate(docs):
        groups.setdefault(d, []).append(i)
    if columns is not None and "source" not in columns:
        columns = ["source", *columns]
    parts: dict[TableName, list[pl.DataFrame]] = {t: [] for t in tables}
    states: list[SourceState] = []
    for d, tok, prov in _passes(docs, groups):
        st = SourceState("")
        st.prov = prov
        out = process_piece(
            st, Piece(b"", d, True), keep_segments=keep_segments, keep_env=full, tokens=tok
        )
        if out is not None:
            wanted = [t for t in tables if (out.sets["set_id"] == SET_OF[t]).any()]
            if wanted:
                got = _build_piece(st.prov, out, _ctx(st, out.sets), wanted, columns, extras)
                st.errors.extend(got.errors)
                st.totals.extend(got.totals)
                st.charges.extend(got.charges)
                for t, f in got.tables.items():
                    parts[t].append(f)
        if full:
            finish_source(st)
            st.prov.set_bases(pl.concat(st.env, how="vertical"))
            st.segments = [_localize_segments(f, st.prov) for f in st.segments]
        states.append(st)
    names = pl.Series("source", [n for n, _, _ in docs], dtype=pl.String)
    unit = Unit({t: _in_order(_cat(parts[t], t, columns), names) for t in tables})
    if full:
        _finish(unit, states)
        for what in ("totals", "charges", "segments", "envelopes", "errors"):
            setattr(unit, what, _in_order(getattr(unit, what), names))
    return unit


# Element separators for a pass over sources with different delimiters: the first of these
# that no source of the run holds.
_SHARED_SEPARATORS: Final = ("\x1f", "\x1e", "\x1d", "\x1c")


def _passes(
    docs: list[tuple[str, bytes, Delimiters]], groups: dict[Delimiters, list[int]]
) -> Iterator[tuple[Delimiters, Tokens, Prov]]:
    """The passes that read ``docs``: one for the whole run. Each delimiter set is tokenized
    on its own, then its element separator is rewritten to one no source holds, so every
    later step splits all segments alike; ``Prov`` keeps each source's own delimiters for the
    envelopes and for segment text quoted in messages. When every candidate separator occurs
    in the data, one pass per delimiter set."""
    keys = [[str(i) for i in members] for members in groups.values()]
    if len(groups) == 1:
        ((d, members),) = groups.items()
        tok, before = join_tokens([docs[i][1] for i in members], d)
        # (one source: its positions and indices are already its own)
        yield d, tok, Prov(keys[0], before if len(members) > 1 else None)
        return
    every = b"".join(doc for _, doc, _ in docs)
    sep = next((x for x in _SHARED_SEPARATORS if x.encode() not in every), None)
    if sep is None:
        for (d, members), k in zip(groups.items(), keys, strict=True):
            tok, before = join_tokens([docs[i][1] for i in members], d)
            yield d, tok, Prov(k, before if len(members) > 1 else None)
        return
    frames: list[pl.DataFrame] = []
    starts: list[int] = []
    own: list[Delimiters] = []
    rows = 0
    for d, members in groups.items():
        tok, before = join_tokens([docs[i][1] for i in members], d)
        # (the kernel's envelope counters count within one tokenized buffer: the joined
        # frame is counted afresh)
        frame = tok.frame.select("raw", "sid")
        if d.element != sep:
            frame = frame.with_columns(pl.col("raw").str.replace_all(d.element, sep, literal=True))
        frames.append(frame)
        starts += [rows + b for b in before]
        own += [d] * len(members)
        rows += frame.height
    first = next(iter(groups))
    shared = Delimiters(sep, first.component, first.repetition, first.segment)
    prov = Prov([k for ks in keys for k in ks], starts, own)
    prov.shared_separator(sep)
    yield shared, Tokens(pl.concat(frames, how="vertical"), None, True), prov


def _localize_segments(frame: pl.DataFrame, prov: Prov) -> pl.DataFrame:
    pos = pl.col("segment")
    return frame.with_columns(
        source=prov.source(pos),
        segment=prov.local_pos(pos),
        **{k: prov.local_index(k, pos) for k in _INDEXES},
    )


def _in_order(frame: pl.DataFrame, names: pl.Series) -> pl.DataFrame:
    """Rows keyed by source index (text in ``source``) in source order, named again."""
    if frame.height == 0:
        return frame
    key = frame["source"].cast(pl.Int64)
    if not key.is_sorted():
        frame = frame.sort(pl.col("source").cast(pl.Int64), maintain_order=True)
        key = frame["source"].cast(pl.Int64)
    return frame.with_columns(source=names.gather(key))


_INDEXES: Final = ("interchange_index", "group_index", "set_index")


def _assemble(states: list[SourceState]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The envelopes (one row per set) and errors frames of ``states``."""
    levels = pl.DataFrame({"code": list(CODES), "level": list(CODES.values())}).lazy()
    envs: list[pl.DataFrame] = []
    errs: list[pl.DataFrame] = []
    for st in states:
        env, err = _Assembly(st, levels).frames()
        envs.append(env)
        errs.append(err)
    envelopes = pl.concat([_empty(ENVELOPES_SCHEMA), *envs], how="vertical")
    errors = pl.concat([_empty(ERROR_SCHEMA), *errs], how="vertical")
    return envelopes, errors


def _rows_of(keys: pl.Series, table_keys: pl.Series) -> pl.Series:
    """Row number in ``table_keys`` (unique) of each of ``keys``; null where it has none."""
    index = table_keys.rename("k").to_frame().with_row_index("_r")
    return keys.rename("k").to_frame().join(index, on="k", how="left", maintain_order="left")["_r"]


class _Assembly:
    """One source state's envelope headers, sets and raw error rows, as lazy frames."""

    def __init__(self, st: SourceState, levels: pl.LazyFrame) -> None:
        c = pl.col
        self.where = st.prov
        self.levels = levels
        self.isa = pl.concat([_empty(ISA_SCHEMA), *st.isa_info], how="vertical").lazy()
        self.gs = pl.concat([_empty(GS_SCHEMA), *st.gs_info], how="vertical").lazy()
        self.sets = pl.concat(
            [_empty({**SET_SCHEMA, "rejected": pl.Boolean()}), *st.sets], how="vertical"
        ).lazy()
        self.env = pl.concat([_empty(ENV_SCHEMA), *st.env], how="vertical").lazy()
        raw = pl.concat([_empty(_RAW_ERROR), *st.errors], how="vertical").lazy()
        # Element errors know only their set: fill in its group and interchange.
        self.raw = (
            raw.join(
                self.sets.select(
                    "set_index", c("interchange_index").alias("_i"), c("group_index").alias("_g")
                ),
                on="set_index",
                how="left",
            )
            .with_columns(
                interchange_index=pl.coalesce("interchange_index", "_i"),
                group_index=pl.coalesce("group_index", "_g"),
            )
            .drop("_i", "_g")
        )

    def errors(self) -> pl.LazyFrame:
        """ERROR_SCHEMA rows: control numbers and level joined in, in position order."""
        c, where = pl.col, self.where
        return (
            self.raw.join(
                self.isa.select("interchange_index", "interchange_control"),
                on="interchange_index",
                how="left",
            )
            .join(self.gs.select("group_index", "group_control"), on="group_index", how="left")
            .join(self.sets.select("set_index", "set_control"), on="set_index", how="left")
            .join(self.levels, on="code", how="left")
            .sort("pos", maintain_order=True)
            .with_columns(
                source=where.source(c("pos")),
                position=where.position(c("pos")),
                **{k: where.local_index(k, c("pos")) for k in _INDEXES},
            )
            .select(list(ERROR_SCHEMA))
        )

    def frames(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(envelopes, errors) of the source; one query for the three small lists of bad
        sets, groups and interchanges that the envelope flags need, and the errors."""
        c, where = pl.col, self.where
        bad = self.raw.join(self.levels, on="code", how="left")
        set_bad = (
            bad.filter(
                c("set_index").is_not_null() & c("level").is_in(["set", "segment", "element"])
                | (c("code") == "TRUNCATED")
            )
            .select("set_index")
            .unique()
        )
        grp_bad = bad.filter(c("level") == "group").select("group_index").unique()
        ic_bad = bad.filter(c("level") == "interchange").select("interchange_index").unique()
        ge = (
            self.env.filter(c("sid") == "GE")
            .select("group_index", c("e01").cast(pl.Int64, strict=False).alias("declared_sets"))
            .unique("group_index", keep="first")
        )
        s_bad, g_bad, i_bad, err, sets, isa, gs, ge_df = pl.collect_all(
            [set_bad, grp_bad, ic_bad, self.errors(), self.sets, self.isa, self.gs, ge],
            engine=ENGINE,
        )
        if not sets["set_index"].is_sorted():
            sets = sets.sort("set_index")
        # The headers' columns gathered onto the sets by row number: a left join would copy
        # every column of the (wide) frame once per header table.
        cols = {n: sets[n] for n in sets.columns}
        for table, key in ((isa, "interchange_index"), (gs, "group_index"), (ge_df, "group_index")):
            rows = _rows_of(sets[key], table[key])
            cols.update((n, table[n].gather(rows)) for n in table.columns if n != key)
        env = (
            pl.DataFrame(cols)
            .lazy()
            .with_columns(
                source=where.source(c("st_pos")),
                position=where.position(c("st_pos")),
                valid=~c("rejected") & ~c("set_index").is_in(s_bad["set_index"].implode()),
                group_valid=~c("group_index").is_in(g_bad["group_index"].implode()),
                interchange_valid=~c("interchange_index").is_in(
                    i_bad["interchange_index"].implode()
                ),
                **{k: where.local_index(k, c("st_pos")) for k in _INDEXES},
            )
            .select(list(ENVELOPES_SCHEMA))
        )
        return env.collect(engine=ENGINE), err
