"""The acknowledgment leg: PO lines vs their 855s and shipments, by hand and on synth."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

import scfeeds
from scfeeds._synth.config import SynthConfig
from scfeeds.schemas import empty
from scfeeds.synth import generate, load_truth, load_world

c = pl.col
D = dt.date


def _frame(table: str, rows: list[dict[str, object]]) -> pl.DataFrame:
    return pl.concat([empty(table), pl.DataFrame(rows)], how="diagonal_relaxed")  # type: ignore[arg-type]


def _po(po: str, ln: str, qty: int, price: str, sup: str = "S1") -> dict[str, object]:
    return {"supplier_id": sup, "po_number": po, "line_number": ln, "item_id": f"I{ln}",
            "uom": "EA", "qty_ordered": Decimal(qty), "unit_price": Decimal(price),
            "requested_date": D(2026, 3, 1)}  # fmt: skip


def _ack(po: str, ln: str, status: str, qty: int, price: str, day: int, promised: int = 1,
         sup: str = "S1") -> dict[str, object]:  # fmt: skip
    return {"supplier_id": sup, "po_number": po, "line_number": ln, "item_id": f"I{ln}",
            "ack_status": status, "ack_code": status[:2].upper(), "qty_acked": Decimal(qty),
            "unit_price": Decimal(price), "ack_date": D(2026, 2, day),
            "promised_date": D(2026, 3, promised)}  # fmt: skip


def test_each_code_by_hand_with_the_last_confirmation_winning() -> None:
    po = _frame(
        "po_lines",
        [
            _po("P1", "1", 10, "2.00"),  # accepted as ordered: no exception
            _po("P1", "2", 10, "2.00"),  # quantity cut to 8, then shipped 9
            _po("P1", "3", 10, "2.00"),  # price raised
            _po("P1", "4", 10, "2.00"),  # first rejected, then accepted: last wins
            _po("P1", "5", 10, "2.00"),  # rejected in the last 855
            _po("P2", "1", 10, "2.00"),  # no 855 at all
            _po("P3", "1", 10, "2.00", sup="S9"),  # a supplier who sends no 855s
        ],
    )
    acks = _frame(
        "po_acks",
        [
            _ack("P1", "1", "accepted", 10, "2.00", 2),
            _ack("P1", "2", "changed", 8, "2.00", 2),
            _ack("P1", "3", "changed", 10, "2.10", 2, promised=5),
            _ack("P1", "4", "rejected", 0, "2.00", 2),
            _ack("P1", "4", "accepted", 10, "2.00", 3),
            _ack("P1", "5", "accepted", 10, "2.00", 2),
            _ack("P1", "5", "rejected", 0, "2.00", 4),
            _ack("P9", "1", "accepted", 1, "1.00", 2),  # no such PO
        ],
    )
    asn = _frame(
        "asn_lines",
        [{"po_number": "P1", "line_number": "2", "qty_shipped": Decimal(9), "uom": "EA"}],
    )
    exc = scfeeds.ack_exceptions(po, acks.lazy(), asn_lines=asn)
    assert exc.select("code", "po_number", "line_number").rows() == [
        ("ACK_REJECTED", "P1", "5"),
        ("ACK_QTY_CHANGED", "P1", "2"),
        ("ACK_PRICE_CHANGED", "P1", "3"),
        ("ACK_DATE_CHANGED", "P1", "3"),
        ("SHIPPED_BEYOND_ACK", "P1", "2"),
        ("NOT_ACKNOWLEDGED", "P2", "1"),
        ("ACK_NO_PO", "P9", "1"),
    ]
    beyond = exc.filter(c("code") == "SHIPPED_BEYOND_ACK").row(0, named=True)
    assert (beyond["qty_acked"], beyond["qty_shipped"]) == (Decimal(8), Decimal(9))
    # within 25 % the quantity changes pass; within 5 % the 2.10 price passes
    loose = scfeeds.ack_exceptions(po, acks, asn_lines=asn, qty_tolerance=25, price_tolerance=5)
    assert "ACK_QTY_CHANGED" not in set(loose["code"])
    assert "SHIPPED_BEYOND_ACK" not in set(loose["code"])
    assert "ACK_PRICE_CHANGED" not in set(loose["code"])
    with pytest.raises(scfeeds.ConfigurationError, match=r"^qty_tolerance=-1: .* >= 0"):
        scfeeds.ack_exceptions(po, acks, qty_tolerance=-1)
    with pytest.raises(scfeeds.ConfigurationError, match=r"^price_tolerance='x': .*percent"):
        scfeeds.ack_exceptions(po, acks, price_tolerance="x")


def test_on_synth_the_exceptions_equal_the_answer_key(tmp_path: Path) -> None:
    root = tmp_path / "w"
    generate(root, seed=21, suppliers=3, pos=250, config=SynthConfig(performance=True))
    exc = scfeeds.ack_exceptions(
        load_world(root, "po_lines"),
        load_world(root, "po_acks"),
        asn_lines=load_world(root, "asn_lines"),
    )
    truth = pl.read_parquet(root / "world" / "otif_truth" / "*.parquet")
    key = ["po_number", "line_number"]

    def keys(frame: pl.DataFrame) -> set[tuple[str, str]]:
        return set(frame.select(key).iter_rows())  # type: ignore[arg-type]

    by = {code: keys(exc.filter(c("code") == code)) for code in exc["code"].unique()}
    assert by.pop("ACK_REJECTED") == keys(truth.filter(c("ack_code").is_in(["IR", "R2"])))
    assert by.pop("ACK_QTY_CHANGED") == keys(truth.filter(c("ack_code") == "IQ"))
    assert by.pop("ACK_DATE_CHANGED") == keys(truth.filter(c("ack_code") == "DR"))
    over = load_truth(root).filter(c("fault") == "over_shipment")
    assert by.pop("SHIPPED_BEYOND_ACK") == keys(over)
    assert by == {}  # nothing else
