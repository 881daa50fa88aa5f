"""997 functional acknowledgments written with the sender's own delimiters.

One 997 interchange answers each interchange read: sender and receiver swapped, the same
element / component / repetition separators and segment terminator, one ``GS*FA`` group with
one 997 set per acknowledged functional group (groups that are themselves acknowledgments,
``GS01 = FA``, are not acknowledged). Per set: ``AK2``, then ``AK3`` / ``AK4`` for segment and
element errors, then ``AK5`` (``A`` accepted, ``R`` rejected with the AK502 code). Per group:
``AK9`` (``A`` all accepted, ``E`` accepted with group envelope errors, ``P`` some sets
rejected, ``R`` all rejected) with the AK905 group error codes.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import polars as pl

from scfeeds._x12._codes import AK3_CODES, AK4_CODES, AK5_CODES, AK9_CODES


class Verdicts(Protocol):
    """What a 997 is written from: the ``envelopes`` and ``errors`` frames of a read
    (``X12Result`` has them)."""

    @property
    def envelopes(self) -> pl.DataFrame: ...

    @property
    def errors(self) -> pl.DataFrame: ...


def _num(position: str | None) -> int | None:
    if position is None:
        return None
    return int(position.rsplit(" ", 1)[-1])


def ack_997(
    result: Verdicts, *, control_number: int = 1, now: datetime | None = None
) -> Acknowledgment:
    """The 997 acknowledgment text for every functional group in ``result``.

    Parameters
    ----------
    result
        What ``read_x12`` returned (an ``X12Result``: its envelopes and errors are read).
    control_number
        ISA13 / GS06 of the first 997 interchange; each further interchange adds one.
    now
        Date and time written in ISA09/ISA10 and GS04/GS05 (default: the current UTC time).

    Returns
    -------
    Acknowledgment
        Concatenated 997 interchanges (empty when nothing can be acknowledged): a ``str``
        whose ``.groups`` and ``.sets`` give the verdicts as frames.

    Examples
    --------
    >>> from scfeeds._x12 import read_x12
    >>> res = read_x12("inbound/850_15.edi")  # doctest: +SKIP
    >>> "AK9*E*1*1*1*4" in ack_997(res)  # doctest: +SKIP
    True
    """
    stamp = now or datetime.now(UTC)
    env = result.envelopes
    if env.height == 0:
        return Acknowledgment("")
    errors = result.errors
    out: list[str] = []
    ctl = control_number
    keys = env.select("source", "interchange_index").unique(maintain_order=True).rows()
    for source, ic in keys:
        sets = env.filter((pl.col("source") == source) & (pl.col("interchange_index") == ic))
        sets = sets.filter(pl.col("functional_id").fill_null("") != "FA")
        if sets.height == 0:
            continue
        errs = errors.filter((pl.col("source") == source) & (pl.col("interchange_index") == ic))
        out.append(_interchange(sets, errs, ctl, stamp))
        ctl += 1
    return Acknowledgment("".join(out))


def _interchange(sets: pl.DataFrame, errs: pl.DataFrame, ctl: int, stamp: datetime) -> str:
    first: dict[str, Any] = sets.row(0, named=True)
    e, comp, t = (
        first["element_separator"],
        first["component_separator"],
        first["segment_terminator"],
    )
    rep = first["repetition_separator"] or "U"
    version = first["isa_version"] or "00401"
    segs: list[list[str]] = []
    isa: list[str] = [
        "ISA",
        "00",
        " " * 10,
        "00",
        " " * 10,
        (first["receiver_qualifier"] or "ZZ").ljust(2)[:2],
        (first["receiver_id"] or "").ljust(15)[:15],
        (first["sender_qualifier"] or "ZZ").ljust(2)[:2],
        (first["sender_id"] or "").ljust(15)[:15],
        stamp.strftime("%y%m%d"),
        stamp.strftime("%H%M"),
        rep,
        version,
        f"{ctl:09d}",
        "0",
        first["usage"] or "P",
        comp,
    ]
    gs: list[str] = [
        "GS",
        "FA",
        first["app_receiver"] or "",
        first["app_sender"] or "",
        stamp.strftime("%Y%m%d"),
        stamp.strftime("%H%M"),
        str(ctl),
        "X",
        first["version"] or "004010",
    ]
    segs.append(gs)
    groups = sets.select("group_index").unique(maintain_order=True)["group_index"].to_list()
    for n, g in enumerate(groups, start=1):
        segs.extend(_set(sets.filter(pl.col("group_index") == g), errs, g, n))
    segs.append(["GE", str(len(groups)), str(ctl)])
    lines = [isa, *segs, ["IEA", "1", f"{ctl:09d}"]]
    return "".join(f"{e.join(s)}{t}" for s in lines)


def _set(group: pl.DataFrame, errs: pl.DataFrame, g: int, n: int) -> list[list[str]]:
    head: dict[str, Any] = group.row(0, named=True)
    version = head["version"] or ""
    ak1 = ["AK1", head["functional_id"] or "", head["group_control"] or ""]
    if version.startswith("00501") or version[:6] > "005010":
        ak1.append(version)
    body: list[list[str]] = [ak1]
    accepted = 0
    for s in group.iter_rows(named=True):
        body.append(["AK2", s["set_id"] or "", s["set_control"] or ""])
        set_errs = errs.filter(pl.col("set_index") == s["set_index"])
        st_pos = _num(s["position"]) or 0
        for err in set_errs.filter(pl.col("code").is_in(list(AK3_CODES))).iter_rows(named=True):
            seg_pos = (_num(err["position"]) or st_pos) - st_pos + 1
            body.append(["AK3", err["segment_id"] or "", str(seg_pos), "", AK3_CODES[err["code"]]])
            if err["code"] in AK4_CODES and err["element"]:
                body.append(["AK4", str(int(err["element"][-2:])), "", AK4_CODES[err["code"]]])
        codes = sorted(
            {AK5_CODES[c] for c in set_errs["code"].to_list() if c in AK5_CODES},
            key=int,
        )
        if s["valid"]:
            accepted += 1
            body.append(["AK5", "A"])
        else:
            body.append(["AK5", "R", *(codes[:5] or ["5"])])
    group_codes = sorted(
        {
            AK9_CODES[c]
            for c in errs.filter((pl.col("group_index") == g) & pl.col("set_index").is_null())[
                "code"
            ].to_list()
            if c in AK9_CODES
        },
        key=int,
    )
    received = group.height
    declared = head.get("declared_sets")
    included = str(declared if declared is not None else received)
    if accepted == 0:
        status = "R"
    elif accepted < received:
        status = "P"
    elif group_codes:
        status = "E"
    else:
        status = "A"
    body.append(["AK9", status, included, str(received), str(accepted), *group_codes[:5]])
    st = ["ST", "997", f"{n:04d}"]
    se = ["SE", str(len(body) + 2), f"{n:04d}"]
    return [st, *body, se]


# -- reading a 997: the verdicts as frames ---------------------------------------------------------

# X12 997 code lists (X12.6 / the 997 implementation guides), for readable reasons.
AK5_VERDICTS: Final[dict[str, str]] = {
    "A": "accepted",
    "E": "accepted_with_errors",
    "M": "rejected",  # message authentication code failed
    "R": "rejected",
    "W": "rejected",  # assurance failed validity tests
    "X": "rejected",  # content after decryption could not be analysed
}
AK9_VERDICTS: Final[dict[str, str]] = {
    "A": "accepted",
    "E": "accepted_with_errors",
    "P": "partially_accepted",
    "M": "rejected",
    "R": "rejected",
    "W": "rejected",
    "X": "rejected",
}
AK502_REASONS: Final[dict[str, str]] = {
    "1": "transaction set not supported",
    "2": "transaction set trailer missing",
    "3": "control number in header and trailer do not match",
    "4": "number of included segments does not match actual count",
    "5": "one or more segments in error",
    "6": "missing or invalid transaction set identifier",
    "7": "missing or invalid transaction set control number",
    "8": "authentication key name unknown",
    "9": "encryption key name unknown",
    "10": "requested service not available",
    "11": "unknown security recipient",
    "12": "incorrect message length",
    "13": "message authentication code failed",
    "15": "unknown security originator",
    "16": "syntax error in decrypted text",
    "17": "security not supported",
    "23": "transaction set control number not unique within the functional group",
    "24": "S3E security end segment missing for S3S security start segment",
    "25": "S3S security start segment missing for S3E security end segment",
    "26": "S4E security end segment missing for S4S security start segment",
    "27": "S4S security start segment missing for S4E security end segment",
}
AK905_REASONS: Final[dict[str, str]] = {
    "1": "functional group not supported",
    "2": "functional group version not supported",
    "3": "functional group trailer missing",
    "4": "group control number in the functional group header and trailer do not agree",
    "5": "number of included transaction sets does not match actual count",
    "6": "group control number violates syntax",
    "10": "authentication key name unknown",
    "11": "encryption key name unknown",
    "12": "requested service not available",
    "13": "unknown security recipient",
    "14": "unknown security originator",
    "15": "syntax error in decrypted text",
    "16": "security not supported",
    "17": "incorrect message length",
    "18": "message authentication code failed",
    "19": "functional group control number not unique within interchange",
    "23": "S3E security end segment missing for S3S security start segment",
    "24": "S3S security start segment missing for S3E security end segment",
    "25": "S4E security end segment missing for S4S security start segment",
    "26": "S4S security start segment missing for S4E security end segment",
}
AK304_REASONS: Final[dict[str, str]] = {
    "1": "unrecognized segment ID",
    "2": "unexpected segment",
    "3": "mandatory segment missing",
    "4": "loop occurs over maximum times",
    "5": "segment exceeds maximum use",
    "6": "segment not in defined transaction set",
    "7": "segment not in proper sequence",
    "8": "segment has data element errors",
}
AK403_REASONS: Final[dict[str, str]] = {
    "1": "mandatory data element missing",
    "2": "conditional required data element missing",
    "3": "too many data elements",
    "4": "data element too short",
    "5": "data element too long",
    "6": "invalid character in data element",
    "7": "invalid code value",
    "8": "invalid date",
    "9": "invalid time",
    "10": "exclusion condition violated",
}

# Columns of the verdict frames: the group a verdict is about, then the verdict's own.
_TEXT: Final = pl.String()
_TEXTS: Final = pl.List(pl.String())
_GROUP_KEY: Final = dict.fromkeys(("interchange_control", "functional_id", "group_control"), _TEXT)
SETS_SCHEMA: Final = pl.Schema(
    _GROUP_KEY
    | dict.fromkeys(("set_id", "set_control", "verdict", "ak501"), _TEXT)
    | {"reasons": _TEXTS, "errors": _TEXTS}
)
GROUPS_SCHEMA: Final = pl.Schema(
    _GROUP_KEY
    | {"verdict": _TEXT, "ak901": _TEXT}
    | dict.fromkeys(("sets_included", "sets_received", "sets_accepted"), pl.Int64())
    | {"reasons": _TEXTS, "rejected_sets": _TEXTS}
)


def _reason(code: str, table: dict[str, str]) -> str:
    return f"{code}: {table.get(code, 'code not in the X12 list')}"


def _int(value: str | None) -> int | None:
    return int(value) if value and value.strip().isdigit() else None


def _segments(text: str) -> Iterator[tuple[str, list[str]]]:
    """(ISA13 of the interchange, elements) of every segment, interchange by interchange; each
    interchange's delimiters come from its own fixed-width ISA (element separator at 3,
    segment terminator at 105)."""
    pos = text.find("ISA")
    while pos != -1 and pos + 106 <= len(text):
        sep, term = text[pos + 3], text[pos + 105]
        ctl = ""
        cursor = pos
        while True:
            nxt = text.find(term, cursor)
            seg = text[cursor : len(text) if nxt == -1 else nxt].strip("\r\n ")
            if seg:
                elements = seg.split(sep)
                if elements[0] == "ISA":
                    ctl = elements[13].strip() if len(elements) > 13 else ""
                yield ctl, elements
                if elements[0] == "IEA":
                    break
            if nxt == -1:
                return
            cursor = nxt + 1
        pos = text.find("ISA", cursor + 1)


def acknowledgment_frames(text: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(groups, sets) verdict frames of 997 ``text`` (see :class:`Acknowledgment`)."""
    groups: list[dict[str, Any]] = []
    sets: list[dict[str, Any]] = []
    group: dict[str, Any] | None = None
    current: dict[str, Any] | None = None
    for ctl, el in _segments(text):
        sid = el[0]
        get = el.__getitem__
        n = len(el)
        if sid == "AK1":
            group = {
                "interchange_control": ctl,
                "functional_id": get(1) if n > 1 else None,
                "group_control": get(2) if n > 2 else None,
                "rejected_sets": [],
            }
        elif sid == "AK2":
            current = {
                "interchange_control": ctl,
                "functional_id": group["functional_id"] if group else None,
                "group_control": group["group_control"] if group else None,
                "set_id": get(1) if n > 1 else None,
                "set_control": get(2) if n > 2 else None,
                "errors": [],
            }
        elif sid == "AK3" and current is not None:
            where = f"{get(1) if n > 1 else '?'} (segment {get(2) if n > 2 else '?'} of the set)"
            why = _reason(get(4), AK304_REASONS) if n > 4 and get(4) else "error"
            current["errors"].append(f"{where}: {why}")
        elif sid == "AK4" and current is not None:
            element = get(1).split(":")[0] if n > 1 else "?"
            why = _reason(get(3), AK403_REASONS) if n > 3 and get(3) else "error"
            bad = f" (value {get(4)!r})" if n > 4 and get(4) else ""
            current["errors"].append(f"element {element}: {why}{bad}")
        elif sid == "AK5" and current is not None:
            code = get(1) if n > 1 else ""
            current["ak501"] = code
            current["verdict"] = AK5_VERDICTS.get(code, "unknown")
            current["reasons"] = [_reason(c, AK502_REASONS) for c in el[2:] if c]
            if current["verdict"] == "rejected" and group is not None:
                group["rejected_sets"].append(current["set_control"])
            sets.append(current)
            current = None
        elif sid == "AK9" and group is not None:
            code = get(1) if n > 1 else ""
            group.update(
                verdict=AK9_VERDICTS.get(code, "unknown"),
                ak901=code,
                sets_included=_int(get(2)) if n > 2 else None,
                sets_received=_int(get(3)) if n > 3 else None,
                sets_accepted=_int(get(4)) if n > 4 else None,
                reasons=[_reason(c, AK905_REASONS) for c in el[5:] if c],
            )
            groups.append(group)
            group = None
    return (
        pl.DataFrame(groups, schema=GROUPS_SCHEMA)
        if groups
        else pl.DataFrame(schema=GROUPS_SCHEMA),
        pl.DataFrame(sets, schema=SETS_SCHEMA) if sets else pl.DataFrame(schema=SETS_SCHEMA),
    )


class Acknowledgment(str):
    """A 997 functional acknowledgment: the text to send (it *is* the string), and its
    verdicts as frames.

    Works on any 997 text, the one :meth:`X12Result.acknowledgment` writes or one a trading
    partner sent back (``Acknowledgment(path.read_text("latin-1"))``).

    Attributes
    ----------
    groups
        One row per acknowledged functional group (``AK1`` .. ``AK9``): ``interchange_control``
        (of the 997), ``functional_id`` and ``group_control`` of the group acknowledged,
        ``verdict`` (``accepted``, ``accepted_with_errors``, ``partially_accepted``,
        ``rejected``), ``ak901``, ``sets_included`` / ``sets_received`` / ``sets_accepted``,
        ``reasons`` (AK905 codes with their meaning) and ``rejected_sets`` (set controls).
    sets
        One row per acknowledged transaction set (``AK2`` .. ``AK5``): the group's keys,
        ``set_id``, ``set_control``, ``verdict`` (``accepted``, ``accepted_with_errors``,
        ``rejected``), ``ak501``, ``reasons`` (AK502 codes with their meaning) and ``errors``
        (each ``AK3`` segment and ``AK4`` element error in words).

    Examples
    --------
    >>> ack = Acknowledgment(
    ...     "ISA*00*          *00*          *ZZ*SCFEEDSBUYER   *ZZ*SUP002         *261127*0930"
    ...     "*U*00401*000000001*0*P*>~GS*FA*BUYER*SUP002*20261127*0930*1*X*004010~ST*997*0001~"
    ...     "AK1*IN*1000~AK2*810*0001~AK3*IT1*5**8~AK4*2**6~AK5*R*5~AK2*810*0002~AK5*A~"
    ...     "AK9*P*2*2*1~SE*10*0001~GE*1*1~IEA*1*000000001~"
    ... )
    >>> ack.groups.select("verdict", "sets_accepted", "rejected_sets").row(0)
    ('partially_accepted', 1, ['0001'])
    >>> ack.sets.select("set_control", "verdict").rows()
    [('0001', 'rejected'), ('0002', 'accepted')]
    >>> for error in ack.sets["errors"][0]:
    ...     print(error)
    IT1 (segment 5 of the set): 8: segment has data element errors
    element 2: 6: invalid character in data element
    """

    __slots__ = ()

    @property
    def groups(self) -> pl.DataFrame:
        return acknowledgment_frames(str(self))[0]

    @property
    def sets(self) -> pl.DataFrame:
        return acknowledgment_frames(str(self))[1]
