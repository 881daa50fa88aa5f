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

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import polars as pl

from scfeeds._x12._codes import AK3_CODES, AK4_CODES, AK5_CODES, AK9_CODES

if TYPE_CHECKING:
    from scfeeds._x12._reader import X12Result


def _num(position: str | None) -> int | None:
    if position is None:
        return None
    return int(position.rsplit(" ", 1)[-1])


def ack_997(result: X12Result, *, control_number: int = 1, now: datetime | None = None) -> str:
    """The 997 acknowledgment text for every functional group in ``result``.

    Parameters
    ----------
    result
        What ``read_x12`` returned.
    control_number
        ISA13 / GS06 of the first 997 interchange; each further interchange adds one.
    now
        Date and time written in ISA09/ISA10 and GS04/GS05 (default: the current UTC time).

    Returns
    -------
    str
        Concatenated 997 interchanges (empty when nothing can be acknowledged).

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
        return ""
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
    return "".join(out)


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
