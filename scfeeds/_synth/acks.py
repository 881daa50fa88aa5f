"""Supplier performance in a synth world: requested dates, 855 acknowledgments, OTIF answer key.

Only with ``SynthConfig(performance=True)``; drawn from its own random stream
(``[seed, 23, batch]``), so the rest of the world is the same with or without it.

Per PO line, from its receipts (first F and last L receipt date; none: not delivered):

- the class: ``late`` (requested = L - 2..10 days), ``early`` (requested = L + 8..12 days,
  so F < requested - 7) or ``due`` (requested = L). The slipping supplier (``SLIPPING``, the
  second one) has late lines at ``SLIP_RATE`` from ``SLIP_DAY`` days after the start date on,
  every supplier at ``LATE_RATE`` otherwise; early lines at ``EARLY_RATE``. Lines never
  delivered: requested = PO date + 10..20.
- the 855 (one per PO, sent by the supplier, ``ack_date`` = PO date + 1..3): lines never
  delivered are rejected (``IR`` or ``R2``, quantity 0); short shipments are acknowledged at
  the shipped quantity (``IQ``); late lines are rescheduled to L (``DR``) with probability
  0.6; others ``IA``, ``AC`` or ``IC``. The promised date is the requested one unless
  rescheduled; suppliers of even index send it as ``DTM*067`` after the ACK, the others in
  ACK04/ACK05 with qualifier ``068``.

The answer key (``world/otif_truth``) is stated for ``TRUTH_WINDOW`` (7 days early, 0 late)
and an exact quantity (tolerance 0): ``timing`` vs the requested date, ``on_time_promised``,
``in_full``, ``otif``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Final

import numpy as np
import polars as pl

from scfeeds._synth.config import BUYER_ISA, Supplier
from scfeeds._synth.files import WriterState, record_file, write_file
from scfeeds._synth.world import Batch
from scfeeds.schemas import columns, schema

c = pl.col

TRUTH_WINDOW: Final = (7, 0)  # (early, late) days
SLIPPING: Final = 1  # supplier index (SUP002)
SLIP_DAY: Final = 90
SLIP_RATE: Final = 0.5
LATE_RATE: Final = 0.05
EARLY_RATE: Final = 0.05
OTIF_TRUTH_SCHEMA: Final = pl.Schema(
    {
        **columns(
            "po_lines",
            *("supplier_id", "po_number", "line_number", "item_id", "po_date", "requested_date"),
        ),
        "promised_date": pl.Date(),
        "ack_code": pl.String(),
        "qty_ordered": pl.Decimal(18, 4),
        "qty_delivered": pl.Decimal(18, 4),
        "first_delivery": pl.Date(),
        "last_delivery": pl.Date(),
        "timing": pl.String(),
        "on_time_promised": pl.Boolean(),
        "in_full": pl.Boolean(),
        "otif": pl.Boolean(),
    }
)
_SHORT: Final = ("short_shipment", "short_shipment_billed_full")
_NEVER: Final = ("not_shipped", "invoiced_not_received")


def add_performance(
    state: WriterState, batch: Batch, b: int
) -> tuple[Batch, dict[str, pl.DataFrame]]:
    """Requested dates on the batch's PO lines; its 855 files written; world rows of
    ``po_acks`` and ``otif_truth``."""
    rng = np.random.default_rng([state.seed, 23, b])
    po = batch.po
    got = batch.receipts.group_by("po_number", "line_number").agg(
        qty_delivered=c("qty_received").sum(),
        first_delivery=c("receipt_date").min(),
        last_delivery=c("receipt_date").max(),
    )
    lines = po.join(got, on=["po_number", "line_number"], how="left", maintain_order="left")
    n = lines.height
    start = state.config.start_date
    slipping = (lines["sup"].to_numpy() == SLIPPING) & (
        (lines["po_date"] - start).dt.total_days().to_numpy() >= SLIP_DAY
    )
    u = rng.random(n)
    late = np.where(slipping, u < SLIP_RATE, u < LATE_RATE)
    early = ~late & (u > 1 - EARLY_RATE)
    shift = np.where(late, -rng.integers(2, 11, n), np.where(early, rng.integers(8, 13, n), 0))
    never_gap = rng.integers(10, 21, n)
    delivered = lines["last_delivery"].is_not_null().to_numpy()
    fault = lines["fault"].fill_null("").to_numpy()
    never = np.isin(fault, _NEVER) | ~delivered
    short = np.isin(fault, _SHORT)
    reschedule = late & (rng.random(n) < 0.6) & delivered
    pick = rng.integers(0, 3, n)
    doc = lines["doc"].to_numpy()
    doc0 = int(doc.min()) if n else 0
    ack_gap = rng.integers(1, 4, int(doc.max()) - doc0 + 1 if n else 0)
    code = np.where(
        never,
        np.where(pick % 2 == 0, "IR", "R2"),
        np.where(
            short,
            "IQ",
            np.where(reschedule, "DR", np.array(["IA", "AC", "IC"])[pick]),
        ),
    )
    lines = lines.with_columns(
        requested_date=pl.when(c("last_delivery").is_not_null())
        .then(c("last_delivery") + pl.duration(days=pl.lit(pl.Series(shift))))
        .otherwise(c("po_date") + pl.duration(days=pl.lit(pl.Series(never_gap)))),
        ack_code=pl.Series(code, dtype=pl.String),
        # one 855 per PO: one acknowledgment date per PO
        ack_date=c("po_date") + pl.duration(days=pl.lit(pl.Series(ack_gap[doc - doc0]))),
    ).with_columns(
        promised_date=pl.when(c("ack_code").is_in(["IR", "R2"]))
        .then(None)
        .when(c("ack_code") == "DR")
        .then(c("last_delivery"))
        .otherwise(c("requested_date")),
        qty_acked=pl.when(c("ack_code").is_in(["IR", "R2"]))
        .then(pl.lit(0).cast(pl.Decimal(18, 4)))
        .when(c("ack_code") == "IQ")
        .then(c("qty_delivered"))
        .otherwise(c("qty_ordered")),
    )
    new_po = po.with_columns(requested_date=lines["requested_date"])
    acks = _write_855s(state, lines, b)
    return dataclasses.replace(batch, po=new_po), {
        "po_acks": acks,
        "otif_truth": _truth(lines),
    }


def _truth(lines: pl.DataFrame) -> pl.DataFrame:
    early, late = TRUTH_WINDOW
    qty = c("qty_delivered").fill_null(0).cast(pl.Decimal(18, 4))

    def on_time(day: str) -> pl.Expr:
        return (
            c("first_delivery").is_not_null()
            & c(day).is_not_null()
            & (c("first_delivery") >= c(day) - pl.duration(days=early))
            & (c("last_delivery") <= c(day) + pl.duration(days=late))
        ).fill_null(False)

    return (
        lines.with_columns(qty_delivered=qty)
        .with_columns(
            timing=pl.when(c("first_delivery").is_null())
            .then(pl.lit("not_delivered"))
            .when(c("last_delivery") > c("requested_date") + pl.duration(days=late))
            .then(pl.lit("late"))
            .when(c("first_delivery") < c("requested_date") - pl.duration(days=early))
            .then(pl.lit("early"))
            .otherwise(pl.lit("on_time")),
            on_time_promised=on_time("promised_date"),
            in_full=c("qty_delivered") == c("qty_ordered"),
        )
        .with_columns(otif=(c("timing") == "on_time") & c("in_full"))
        .select([c(k).cast(v) for k, v in OTIF_TRUTH_SCHEMA.items()])
    )


def _write_855s(state: WriterState, lines: pl.DataFrame, b: int) -> pl.DataFrame:
    """One interchange per supplier and batch: one 855 per PO. Returns the canonical rows."""
    out: list[pl.DataFrame] = []
    for (s,), rows in sorted(
        lines.partition_by(["sup"], as_dict=True, maintain_order=True).items(),
        key=lambda kv: int(str(kv[0][0])),
    ):
        sup = state.suppliers[int(str(s))]
        rel = f"feeds/{sup.supplier_id}/po_acks/855_{b + 1:05d}_01.x12"
        data, positions, controls = _render(sup, rows, icn=b + 1)
        size, sha = write_file(state, rel, data)
        record_file(state, sup, "po_acks", "x12", rel, rows.height, size, sha)
        canon = rows.with_columns(
            source=pl.lit(rel),
            position=pl.Series(positions, dtype=pl.String),
            interchange_control=pl.lit(f"{b + 1:09d}"),
            group_control=pl.lit(str(b + 1)),
            set_control=pl.Series(controls, dtype=pl.String),
            ack_status=c("ack_code").replace_strict(
                {
                    "IR": "rejected",
                    "R2": "rejected",
                    "IQ": "changed",
                    "DR": "changed",
                    "IC": "changed",
                    "IA": "accepted",
                    "AC": "accepted",
                },
                return_dtype=pl.String,
            ),
            date_qualifier=pl.when(c("promised_date").is_null())
            .then(None)
            .otherwise(pl.lit("067" if sup.index % 2 == 0 else "068")),
        )
        sch = schema("po_acks")
        out.append(canon.select(sch.names()).cast(sch))
    return pl.concat(out, how="vertical") if out else pl.DataFrame(schema=schema("po_acks"))


def _render(sup: Supplier, rows: pl.DataFrame, icn: int) -> tuple[bytes, list[str], list[str]]:
    """The X12 text of one interchange, and per row the ACK position and ST02."""
    e, t = sup.element, sup.terminator + sup.suffix
    segs: list[str] = []
    positions: list[str] = []
    controls: list[str] = []
    day: dt.date = rows["ack_date"].min()  # type: ignore[assignment]
    isa = e.join(
        ["ISA", "00", " " * 10, "00", " " * 10, sup.isa_qualifier, f"{sup.isa_id:<15}",
         BUYER_ISA[0], f"{BUYER_ISA[1]:<15}", day.strftime("%y%m%d"), "1200", "U", "00401",
         f"{icn:09d}", "0", "P", sup.component]
    )  # fmt: skip
    segs += [isa, e.join(["GS", "PR", sup.isa_id, BUYER_ISA[1], day.strftime("%Y%m%d"), "1200",
                          str(icn), "X", "004010"])]  # fmt: skip
    n_sets = 0
    for po in rows.partition_by("po_number", maintain_order=True):
        n_sets += 1
        ctl = f"{n_sets:04d}"
        head = po.row(0, named=True)
        st = len(segs)
        segs.append(e.join(["ST", "855", ctl]))
        segs.append(
            e.join(
                ["BAK", "00", "AC", head["po_number"], head["po_date"].strftime("%Y%m%d"),
                 "", "", "", "", head["ack_date"].strftime("%Y%m%d")]
            )
        )  # fmt: skip
        segs.append(e.join(["N1", sup.n1_qualifier, sup.name, "92", sup.supplier_id]))
        for r in po.iter_rows(named=True):
            price = r["unit_price"]
            segs.append(
                e.join(
                    ["PO1", r["line_number"], _num(r["qty_ordered"]), r["uom"], _num(price), "",
                     "BP", r["item_id"]]
                )
            )  # fmt: skip
            ack = ["ACK", r["ack_code"], _num(r["qty_acked"]), r["uom"]]
            promised: dt.date | None = r["promised_date"]
            if promised is not None and sup.index % 2 == 1:
                ack += ["068", promised.strftime("%Y%m%d")]
            positions.append(f"segment {len(segs) + 1}")
            controls.append(ctl)
            segs.append(e.join(ack))
            if promised is not None and sup.index % 2 == 0:
                segs.append(e.join(["DTM", "067", promised.strftime("%Y%m%d")]))
        segs.append(e.join(["CTT", str(po.height)]))
        segs.append(e.join(["SE", str(len(segs) - st + 1), ctl]))
    segs.append(e.join(["GE", str(n_sets), str(icn)]))
    segs.append(e.join(["IEA", "1", f"{icn:09d}"]))
    return "".join(s + t for s in segs).encode("ascii"), positions, controls


def _num(value: object) -> str:
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text
