"""scfeeds.otif: on time / in full per PO line and the supplier scorecard, on hand-made lines."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import polars as pl
import pytest

import scfeeds
from scfeeds import ConfigurationError, OnTimeWindow
from scfeeds._otif import LINE_COLUMNS, SCORE_COLUMNS
from scfeeds.schemas import empty

D = dt.date


def _frame(table: str, rows: list[dict[str, object]]) -> pl.DataFrame:
    return pl.concat([empty(table), pl.DataFrame(rows)], how="diagonal_relaxed")  # type: ignore[arg-type]


def _po() -> pl.DataFrame:
    def line(sup: str, po: str, ln: str, qty: int, req: dt.date | None) -> dict[str, object]:
        return {
            "supplier_id": sup, "po_number": po, "line_number": ln, "item_id": f"I{po}{ln}",
            "uom": "EA", "qty_ordered": Decimal(qty), "unit_price": Decimal("2.5"),
            "po_date": D(2026, 1, 1), "requested_date": req,
        }  # fmt: skip

    return _frame(
        "po_lines",
        [
            line("A", "P1", "1", 10, D(2026, 1, 10)),  # on time, in full
            line("A", "P1", "2", 10, D(2026, 1, 10)),  # late (last part), in full
            line("A", "P1", "3", 10, D(2026, 1, 20)),  # early
            line("A", "P2", "1", 100, D(2026, 2, 10)),  # on time, 98 delivered: in full at 2 %
            line("B", "P3", "1", 10, D(2026, 2, 3)),  # never delivered
            line("B", "P3", "2", 24, None),  # no requested date; delivered in CS
        ],
    )


def _receipts() -> pl.DataFrame:
    def rec(po: str, ln: str, qty: int, day: dt.date, uom: str = "EA") -> dict[str, object]:
        return {"po_number": po, "line_number": ln, "item_id": f"I{po}{ln}", "uom": uom,
                "qty_received": Decimal(qty), "receipt_date": day}  # fmt: skip

    return _frame(
        "receipts",
        [
            rec("P1", "1", 10, D(2026, 1, 10)),
            rec("P1", "2", 4, D(2026, 1, 9)),
            rec("P1", "2", 6, D(2026, 1, 13)),
            rec("P1", "3", 10, D(2026, 1, 15)),
            rec("P2", "1", 98, D(2026, 2, 11)),
            rec("P3", "2", 1, D(2026, 2, 1), "CS"),
            rec("NOPO", "1", 5, D(2026, 2, 1)),  # no such PO line: ignored
        ],
    )


CONV = pl.DataFrame(
    {"item_id": ["IP32"], "from_uom": ["CS"], "to_uom": ["EA"], "factor": [Decimal(24)]}
)


@pytest.mark.parametrize("lazy", [False, True])
def test_lines_timing_in_full_fill_rate_and_lead_time(lazy: bool) -> None:
    po, rec = _po(), _receipts()
    res = scfeeds.otif(
        po.lazy() if lazy else po,
        receipts=rec.lazy() if lazy else rec,
        window=(0, 1),
        qty_tolerance=2,
        conversions=CONV,
    )
    lines = res.lines
    assert lines.schema == pl.Schema(LINE_COLUMNS)
    got = lines.select(
        "po_number", "line_number", "timing", "on_time", "in_full", "otif", "days_late",
        "qty_delivered", "deliveries", "lead_time_days",
    ).rows()  # fmt: skip
    assert got == [
        ("P1", "1", "on_time", True, True, True, 0, Decimal(10), 1, 9),
        ("P1", "2", "late", False, True, False, 3, Decimal(10), 2, 12),
        ("P1", "3", "early", False, True, False, -5, Decimal(10), 1, 14),
        ("P2", "1", "on_time", True, True, True, 1, Decimal(98), 1, 41),
        ("P3", "1", "not_delivered", False, False, False, None, Decimal(0), 0, None),
        ("P3", "2", "no_date", False, True, False, None, Decimal(24), 1, 31),
    ]
    assert lines["fill_rate"].to_list() == [1.0, 1.0, 1.0, 0.98, 0.0, 1.0]
    # without the tolerance 98 of 100 is not in full; without conversions the CS receipt is out
    strict = scfeeds.otif(po, receipts=rec, window=(0, 1)).lines
    assert strict["in_full"].to_list() == [True, True, True, False, False, False]
    assert strict["qty_delivered"][5] == Decimal(0)


def test_window_shorthands_and_bad_options() -> None:
    assert OnTimeWindow.coerce(3) == OnTimeWindow(3, 3)
    assert OnTimeWindow.coerce((2, 1)) == OnTimeWindow(early=2, late=1)
    assert OnTimeWindow.coerce(None) == OnTimeWindow(0, 0)
    po, rec = _po(), _receipts()
    wide = scfeeds.otif(po, receipts=rec, window=5).lines
    assert wide["timing"].to_list()[:3] == ["on_time", "on_time", "on_time"]
    for bad in ({"window": -1}, {"window": "2d"}, {"qty_tolerance": "x"}, {"basis": "due"}):
        with pytest.raises(ConfigurationError):
            scfeeds.otif(po, receipts=rec, **bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="asn_lines or receipts"):
        scfeeds.otif(po)


def test_asn_ship_dates_when_no_receipts() -> None:
    asn = _frame(
        "asn_lines",
        [{"po_number": "P1", "line_number": "1", "item_id": "IP11", "uom": "EA",
          "qty_shipped": Decimal(10), "ship_date": D(2026, 1, 8), "shipment_id": "S1"}],
    )  # fmt: skip
    lines = scfeeds.otif(_po(), asn_lines=asn).lines
    assert lines.row(0, named=True)["timing"] == "early"
    assert lines.row(0, named=True)["first_delivery"] == D(2026, 1, 8)


def test_promised_basis_uses_the_last_confirmation_and_skips_rejected_rows() -> None:
    acks = _frame(
        "po_acks",
        [
            # first 855: promised Jan 12; a later one moves it to Jan 14 (60/40 split, 40 later)
            {"po_number": "P1", "line_number": "2", "ack_date": D(2026, 1, 2),
             "ack_status": "accepted", "qty_acked": Decimal(10), "promised_date": D(2026, 1, 12)},
            {"po_number": "P1", "line_number": "2", "ack_date": D(2026, 1, 5),
             "ack_status": "accepted", "qty_acked": Decimal(6), "promised_date": D(2026, 1, 11)},
            {"po_number": "P1", "line_number": "2", "ack_date": D(2026, 1, 5),
             "ack_status": "backordered", "qty_acked": Decimal(4), "promised_date": D(2026, 1, 14)},
            {"po_number": "P1", "line_number": "1", "ack_date": D(2026, 1, 2),
             "ack_status": "rejected", "qty_acked": Decimal(0), "promised_date": D(2026, 1, 1)},
        ],
    )  # fmt: skip
    res = scfeeds.otif(_po(), receipts=_receipts(), acks=acks, basis="promised", window=(5, 0))
    l2 = res.lines.row(1, named=True)
    assert (l2["first_promised_date"], l2["promised_date"]) == (D(2026, 1, 12), D(2026, 1, 14))
    assert l2["qty_acked"] == Decimal(10)
    assert (l2["on_time_requested"], l2["on_time_promised"], l2["on_time"]) == (False, True, True)
    assert l2["target_date"] == D(2026, 1, 14)
    l1 = res.lines.row(0, named=True)
    assert l1["promised_date"] is None  # only a rejected row: nothing promised
    assert (l1["timing"], l1["on_time_requested"], l1["on_time"]) == ("no_date", True, False)


def test_scorecard_counts_rates_trend_and_period() -> None:
    res = scfeeds.otif(_po(), receipts=_receipts(), window=(0, 1), qty_tolerance=2)
    card = res.scorecard(every="month")
    assert card.suppliers.schema == pl.Schema(SCORE_COLUMNS)
    a, b = card.suppliers.rows(named=True)
    assert (a["supplier_id"], a["lines"], a["on_time_lines"], a["in_full_lines"]) == ("A", 4, 2, 4)
    assert (a["late_lines"], a["early_lines"], a["otif_lines"]) == (1, 1, 2)
    assert (a["on_time_rate"], a["in_full_rate"], a["score"]) == (0.5, 1.0, 0.75)
    assert (a["qty_ordered"], a["qty_filled"]) == (Decimal(130), Decimal(128))
    assert a["value_late"] == Decimal(25)  # 10 x 2.5 of the late line
    assert a["mean_days_late"] == 3.0
    # B: the undated line is left out; the other was never delivered
    assert (b["lines"], b["not_delivered_lines"], b["fill_rate"]) == (1, 1, 0.0)
    trend = card.trend.filter(pl.col("supplier_id") == "A")
    assert trend.select("period", "lines", "otif_lines").rows() == [
        (D(2026, 1, 1), 3, 1),
        (D(2026, 2, 1), 1, 1),
    ]
    weekly = res.scorecard(every="week", start=D(2026, 1, 12), end=D(2026, 1, 31))
    assert weekly.trend.select("supplier_id", "period", "lines").rows() == [
        ("A", D(2026, 1, 19), 1)
    ]
    only_fill = res.scorecard(weights={"fill_rate": 1})
    assert only_fill.suppliers["score"].to_list() == only_fill.suppliers["fill_rate"].to_list()
    with pytest.raises(ConfigurationError):
        res.scorecard(weights={"speed": 1})
    with pytest.raises(ConfigurationError):
        res.scorecard(every="day")  # type: ignore[arg-type]
