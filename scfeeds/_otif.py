"""On time in full (OTIF) per PO line, and a supplier scorecard with its components and trend.

Definitions (docs/CONTRACTS.md "OTIF and scorecards"):

- Deliveries of a PO line are its receipts when ``receipts`` are given (``receipt_date``,
  ``qty_received``), else its ASN lines (``ship_date``, ``qty_shipped``); quantities in another
  unit than the PO line's are converted with ``conversions`` (item_id, from_uom, to_uom,
  factor) and left out when no factor is known.
- Dates: ``requested_date`` (po_lines); ``promised_date``: the last confirmation, i.e. from the
  855 with the latest ``ack_date`` for the line, the latest promised date of its rows that are
  not rejected (a line split into "60 now, 40 backordered" is due when its last part is);
  ``first_promised_date`` the same from the earliest 855. ``target_date`` is the one ``basis``
  names.
- On time against a date D with ``window = OnTimeWindow(early, late)``: the first delivery is
  on or after D - early days and the last on or before D + late days. ``on_time_requested`` and
  ``on_time_promised`` are both reported; ``on_time`` follows ``basis``. A line without any
  delivery or without the date is not on time (``timing`` says why).
- In full: the delivered quantity is within ``qty_tolerance`` percent of the ordered one,
  both ways (an over-delivery beyond it is not in full either).
- ``fill_rate`` = min(delivered, ordered) / ordered; ``lead_time_days`` = last delivery - PO date.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Final, Literal, TypeAlias

import polars as pl

from scfeeds._otif_report import write_excel, write_html
from scfeeds.exceptions import ConfigurationError
from scfeeds.schemas import MONEY, QTY, columns

Frame: TypeAlias = pl.DataFrame | pl.LazyFrame
Basis: TypeAlias = Literal["requested", "promised"]
Every: TypeAlias = Literal["week", "month"]

c = pl.col

KEY: Final = ["po_number", "line_number"]
LINE_COLUMNS: Final[dict[str, pl.DataType]] = {
    **columns(
        "po_lines",
        *("supplier_id", "po_number", "line_number", "item_id", "po_date", "requested_date"),
    ),
    "first_promised_date": pl.Date(),
    "promised_date": pl.Date(),
    "target_date": pl.Date(),
    "qty_ordered": QTY,
    "unit_price": MONEY,
    "qty_acked": QTY,
    "qty_delivered": QTY,
    "deliveries": pl.UInt32(),
    "first_delivery": pl.Date(),
    "last_delivery": pl.Date(),
    "days_late": pl.Int64(),
    "timing": pl.String(),
    "on_time_requested": pl.Boolean(),
    "on_time_promised": pl.Boolean(),
    "on_time": pl.Boolean(),
    "in_full": pl.Boolean(),
    "otif": pl.Boolean(),
    "fill_rate": pl.Float64(),
    "lead_time_days": pl.Int64(),
}
"""Columns of ``Otif.lines``, one row per PO line."""
TIMINGS: Final = ("on_time", "early", "late", "not_delivered", "no_date")
COMPONENTS: Final = ("on_time_rate", "in_full_rate", "otif_rate", "fill_rate")
SCORE_COLUMNS: Final[dict[str, pl.DataType]] = {
    "supplier_id": pl.String(),
    "lines": pl.UInt32(),
    "on_time_lines": pl.UInt32(),
    "in_full_lines": pl.UInt32(),
    "otif_lines": pl.UInt32(),
    "late_lines": pl.UInt32(),
    "early_lines": pl.UInt32(),
    "not_delivered_lines": pl.UInt32(),
    "qty_ordered": QTY,
    "qty_filled": QTY,
    "on_time_rate": pl.Float64(),
    "in_full_rate": pl.Float64(),
    "otif_rate": pl.Float64(),
    "fill_rate": pl.Float64(),
    "mean_days_late": pl.Float64(),
    "mean_lead_time_days": pl.Float64(),
    "value_late": MONEY,
    "score": pl.Float64(),
}
"""Columns of ``Scorecard.suppliers`` (``Scorecard.trend`` adds ``period`` after supplier_id)."""


@dataclass(frozen=True)
class OnTimeWindow:
    """How early and how late (in days) a delivery may be and still count as on time.

    ``OnTimeWindow(early=2, late=1)``: from two days before the date to one day after it. The
    shorthand ``window=3`` means ``OnTimeWindow(3, 3)``, ``window=(2, 1)`` ``OnTimeWindow(2, 1)``.
    """

    early: int = 0
    late: int = 0

    def __post_init__(self) -> None:
        for name in ("early", "late"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigurationError(
                    f"OnTimeWindow.{name}={value!r}: expected a whole number of days >= 0"
                )

    @classmethod
    def coerce(cls, value: OnTimeWindow | int | tuple[int, int] | None) -> OnTimeWindow:
        if value is None:
            return cls()
        if isinstance(value, OnTimeWindow):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(value, value)
        if isinstance(value, tuple) and len(value) == 2:
            return cls(value[0], value[1])
        raise ConfigurationError(
            f"window={value!r}: pass OnTimeWindow(early=, late=), a number of days or (early, late)"
        )


def percent_option(value: Decimal | int | float | str, name: str = "qty_tolerance") -> Decimal:
    """A tolerance option in percent as a Decimal; a ConfigurationError naming ``name``."""
    try:
        out = Decimal(str(value))
    except ArithmeticError as exc:
        raise ConfigurationError(f"{name}={value!r}: expected a percent, e.g. 2") from exc
    if not out.is_finite() or out < 0:
        raise ConfigurationError(f"{name}={value!r}: expected a percent >= 0, e.g. 2")
    return out


def as_lazy(frame: Frame) -> pl.LazyFrame:
    """``frame`` as a LazyFrame (a DataFrame made lazy)."""
    return frame.lazy() if isinstance(frame, pl.DataFrame) else frame


@dataclass(frozen=True)
class Scorecard:
    """A supplier scorecard over a period.

    Attributes
    ----------
    suppliers
        One row per supplier (``SCORE_COLUMNS``): counts, rates and ``score``.
    trend
        The same per supplier and ``period`` (the first day of the week or month in which the
        lines were due), oldest first.
    start, end
        The period (inclusive) of the lines' target dates; None when open.
    every
        The trend's bucket, ``"week"`` or ``"month"``.
    context
        How the lines were measured (basis, window, quantity tolerance), in words.
    """

    suppliers: pl.DataFrame
    trend: pl.DataFrame
    start: dt.date | None
    end: dt.date | None
    every: Every = "month"
    context: str = ""

    def to_html(self, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
        """Write the scorecard as one self-contained HTML page; returns the path.

        Suppliers lowest score first with every rate, count and quantity; the OTIF rate per
        supplier and period. Offline (no script, nothing fetched), every value escaped.

        Examples
        --------
        >>> scfeeds.otif(po, receipts=rec).scorecard().to_html("scorecard.html")  # doctest: +SKIP
        """
        return write_html(self, path, title=title)

    def to_excel(self, path: str | os.PathLike[str]) -> Path:
        """Write the workbook (sheets ``Scorecard`` and ``Trend``, each with an autofilter and
        a frozen header; rates as percentages, every text cell formula-safe); returns the path.

        Examples
        --------
        >>> scfeeds.otif(po, receipts=rec).scorecard().to_excel("scorecard.xlsx")  # doctest: +SKIP
        """
        return write_excel(self, path)


@dataclass(frozen=True)
class Otif:
    """``scfeeds.otif(...)``: one row per PO line (``lines``, columns ``LINE_COLUMNS``).

    ``scorecard()`` aggregates the lines per supplier.
    """

    lines: pl.DataFrame
    basis: Basis
    window: OnTimeWindow
    qty_tolerance: Decimal

    def scorecard(
        self,
        *,
        start: dt.date | None = None,
        end: dt.date | None = None,
        every: Every = "month",
        weights: Mapping[str, float] | None = None,
    ) -> Scorecard:
        """Per supplier over the lines due (``target_date``) from ``start`` to ``end``.

        Parameters
        ----------
        start, end
            Inclusive bounds on the target date; None leaves a side open. Lines without a
            target date are left out.
        every
            The trend's bucket: ``"week"`` (ISO weeks, Monday) or ``"month"``.
        weights
            ``score`` = the weighted mean of these components (names from ``COMPONENTS``);
            default: on-time rate and in-full rate, 0.5 each.

        Examples
        --------
        >>> card = scfeeds.otif(po, receipts=rec).scorecard(every="week")  # doctest: +SKIP
        >>> card.suppliers.sort("score").head(3)  # doctest: +SKIP
        """
        if every not in ("week", "month"):
            raise ConfigurationError(f"every={every!r}: expected 'week' or 'month'")
        w = dict(weights) if weights is not None else {"on_time_rate": 0.5, "in_full_rate": 0.5}
        bad = [k for k in w if k not in COMPONENTS]
        if bad or not w or sum(w.values()) <= 0:
            raise ConfigurationError(
                f"weights={weights!r}: use names from {', '.join(COMPONENTS)} with a positive sum"
            )
        lines = self.lines.lazy().filter(c("target_date").is_not_null())
        if start is not None:
            lines = lines.filter(c("target_date") >= start)
        if end is not None:
            lines = lines.filter(c("target_date") <= end)
        bucket = (
            c("target_date").dt.truncate("1w")
            if every == "week"
            else c("target_date").dt.truncate("1mo")
        )
        total = sum(w.values())
        score = pl.sum_horizontal([c(k) * (v / total) for k, v in w.items()])
        suppliers = _score(lines, ["supplier_id"], score).sort("supplier_id")
        trend = _score(lines.with_columns(period=bucket), ["supplier_id", "period"], score).sort(
            "supplier_id", "period"
        )
        return Scorecard(suppliers.collect(), trend.collect(), start, end, every, self.describe())

    def describe(self) -> str:
        """How the lines were measured, in words (shown on the scorecard's page)."""
        w = self.window
        tol = f"{self.qty_tolerance.normalize():f}".rstrip(".")
        return (
            f"on time vs the {self.basis} date, from {w.early} day(s) early to {w.late} day(s) "
            f"late; in full within {tol} % of the ordered quantity"
        )

    def to_html(
        self,
        path: str | os.PathLike[str],
        *,
        start: dt.date | None = None,
        end: dt.date | None = None,
        every: Every = "month",
        weights: Mapping[str, float] | None = None,
        title: str | None = None,
    ) -> Path:
        """``self.scorecard(start=, end=, every=, weights=).to_html(path, title=)``."""
        card = self.scorecard(start=start, end=end, every=every, weights=weights)
        return card.to_html(path, title=title)

    def to_excel(
        self,
        path: str | os.PathLike[str],
        *,
        start: dt.date | None = None,
        end: dt.date | None = None,
        every: Every = "month",
        weights: Mapping[str, float] | None = None,
    ) -> Path:
        """``self.scorecard(start=, end=, every=, weights=).to_excel(path)``."""
        card = self.scorecard(start=start, end=end, every=every, weights=weights)
        return card.to_excel(path)


def _score(lines: pl.LazyFrame, by: list[str], score: pl.Expr) -> pl.LazyFrame:
    n = pl.len()
    filled = pl.min_horizontal(c("qty_delivered"), c("qty_ordered"))
    late = c("timing") == "late"
    return (
        lines.group_by(by)
        .agg(
            lines=n.cast(pl.UInt32),
            on_time_lines=c("on_time").sum().cast(pl.UInt32),
            in_full_lines=c("in_full").sum().cast(pl.UInt32),
            otif_lines=c("otif").sum().cast(pl.UInt32),
            late_lines=late.sum().cast(pl.UInt32),
            early_lines=(c("timing") == "early").sum().cast(pl.UInt32),
            not_delivered_lines=(c("timing") == "not_delivered").sum().cast(pl.UInt32),
            qty_ordered=c("qty_ordered").sum().cast(QTY),
            qty_filled=filled.sum().cast(QTY),
            mean_days_late=c("days_late").filter(late).mean().cast(pl.Float64),
            mean_lead_time_days=c("lead_time_days").mean().cast(pl.Float64),
            value_late=(c("qty_ordered") * c("unit_price")).filter(late).sum().cast(MONEY),
        )
        .with_columns(
            on_time_rate=c("on_time_lines") / c("lines"),
            in_full_rate=c("in_full_lines") / c("lines"),
            otif_rate=c("otif_lines") / c("lines"),
            fill_rate=pl.when(c("qty_ordered") > 0).then(
                c("qty_filled").cast(pl.Float64) / c("qty_ordered").cast(pl.Float64)
            ),
        )
        .with_columns(score=score)
        .select(*by, *(k for k in SCORE_COLUMNS if k not in by))
    )


def _deliveries(
    po: pl.LazyFrame,
    asn_lines: Frame | None,
    receipts: Frame | None,
    conversions: Frame | None,
) -> pl.LazyFrame:
    """One row per delivery event: po_number, line_number, date, qty in the PO line's unit."""
    if receipts is not None:
        ev = as_lazy(receipts).select(
            *KEY, "item_id", "uom", date=c("receipt_date"), qty=c("qty_received")
        )
    elif asn_lines is not None:
        ev = as_lazy(asn_lines).select(
            *KEY, "item_id", "uom", date=c("ship_date"), qty=c("qty_shipped")
        )
    else:
        raise ConfigurationError("otif needs asn_lines or receipts (the deliveries to time)")
    ev = ev.join(
        po.select(*KEY, c("uom").alias("_po_uom"), c("item_id").alias("_po_item")),
        on=KEY,
        how="inner",
    )
    same = pl.when(c("uom") == c("_po_uom")).then(pl.lit(Decimal(1), dtype=QTY))
    factor: pl.Expr = same
    if conversions is not None:
        conv = as_lazy(conversions).select(
            c("item_id").alias("_po_item"),
            c("from_uom").alias("uom"),
            c("to_uom").alias("_po_uom"),
            c("factor").cast(QTY).alias("_f"),
        )
        ev = ev.join(conv, on=["_po_item", "uom", "_po_uom"], how="left")
        factor = same.otherwise(c("_f"))
    return (
        ev.with_columns(_factor=factor)
        .filter(c("_factor").is_not_null())
        .select(*KEY, "date", qty=(c("qty") * c("_factor")).cast(QTY))
    )


def _promises(acks: Frame) -> pl.LazyFrame:
    """Per PO line: first and last confirmed date, and the acknowledged quantity of the last
    confirmation (rejected rows give no date and no quantity)."""
    a = as_lazy(acks).filter(c("ack_status").fill_null("") != "rejected")
    per_ack = a.group_by(*KEY, "ack_date").agg(
        _promised=c("promised_date").max(), _qty=c("qty_acked").sum()
    )
    return per_ack.group_by(KEY).agg(
        first_promised_date=c("_promised").sort_by(c("ack_date")).first(),
        promised_date=c("_promised").sort_by(c("ack_date")).last(),
        qty_acked=c("_qty").sort_by(c("ack_date")).last().cast(QTY),
    )


def _on_time(date: str, window: OnTimeWindow) -> pl.Expr:
    lo = c(date) - pl.duration(days=window.early)
    hi = c(date) + pl.duration(days=window.late)
    return (
        c(date).is_not_null()
        & c("first_delivery").is_not_null()
        & (c("first_delivery") >= lo)
        & (c("last_delivery") <= hi)
    )


def _delivered_lines(
    po: pl.LazyFrame,
    asn_lines: Frame | None,
    receipts: Frame | None,
    acks: Frame | None,
    conversions: Frame | None,
) -> pl.LazyFrame:
    """Each PO line with what was delivered for it (quantity, count, first and last date)
    and what the supplier promised (null without ``acks``)."""
    ev = _deliveries(po, asn_lines, receipts, conversions)
    got = ev.group_by(KEY).agg(
        qty_delivered=c("qty").sum().cast(QTY),
        deliveries=pl.len().cast(pl.UInt32),
        first_delivery=c("date").min(),
        last_delivery=c("date").max(),
    )
    lines = po.select(
        "supplier_id",
        *KEY,
        "item_id",
        "po_date",
        "requested_date",
        "qty_ordered",
        "unit_price",
    ).join(got, on=KEY, how="left", maintain_order="left")
    if acks is not None:
        return lines.join(_promises(acks), on=KEY, how="left", maintain_order="left")
    return lines.with_columns(
        first_promised_date=pl.lit(None, dtype=pl.Date),
        promised_date=pl.lit(None, dtype=pl.Date),
        qty_acked=pl.lit(None, dtype=QTY),
    )


def _measured(lines: pl.LazyFrame, basis: Basis, win: OnTimeWindow, tol: Decimal) -> pl.LazyFrame:
    """Timing against the ``basis`` date within ``win``, in full within ``tol`` %, OTIF."""
    target = "requested_date" if basis == "requested" else "promised_date"
    ordered = c("qty_ordered")
    delivered = c("qty_delivered").fill_null(Decimal(0)).cast(QTY)
    slack = ordered * pl.lit(tol / 100, dtype=pl.Decimal(18, 8))
    lines = lines.with_columns(
        qty_delivered=delivered,
        deliveries=c("deliveries").fill_null(0),
        target_date=c(target),
    ).with_columns(
        days_late=(c("last_delivery") - c("target_date")).dt.total_days(),
        timing=pl.when(c("first_delivery").is_null())
        .then(pl.lit("not_delivered"))
        .when(c("target_date").is_null())
        .then(pl.lit("no_date"))
        # late before early: a line that started early but was completed late is late
        .when(c("last_delivery") > c("target_date") + pl.duration(days=win.late))
        .then(pl.lit("late"))
        .when(c("first_delivery") < c("target_date") - pl.duration(days=win.early))
        .then(pl.lit("early"))
        .otherwise(pl.lit("on_time")),
        on_time_requested=_on_time("requested_date", win),
        on_time_promised=_on_time("promised_date", win),
        in_full=(c("qty_delivered") - ordered).abs() <= slack,
        fill_rate=pl.when(ordered > 0).then(
            pl.min_horizontal(c("qty_delivered"), ordered).cast(pl.Float64)
            / ordered.cast(pl.Float64)
        ),
        lead_time_days=(c("last_delivery") - c("po_date")).dt.total_days(),
    )
    return lines.with_columns(
        on_time=c("on_time_requested") if basis == "requested" else c("on_time_promised")
    ).with_columns(otif=c("on_time") & c("in_full"))


def otif(
    po_lines: Frame,
    asn_lines: Frame | None = None,
    receipts: Frame | None = None,
    acks: Frame | None = None,
    *,
    window: OnTimeWindow | int | tuple[int, int] | None = None,
    qty_tolerance: Decimal | int | float | str = 0,
    basis: Basis = "requested",
    conversions: Frame | None = None,
) -> Otif:
    """On time and in full per PO line.

    Parameters
    ----------
    po_lines
        Canonical ``po_lines`` (``requested_date`` is the requested date).
    asn_lines, receipts
        The deliveries: receipts when given (arrival at the buyer), else ASN lines (ship date).
    acks
        Canonical ``po_acks``: gives ``promised_date`` (last confirmation),
        ``first_promised_date`` and ``qty_acked``.
    window
        ``OnTimeWindow(early, late)``: days around the target date; ``3`` or ``(2, 1)`` for short.
    qty_tolerance
        In percent of the ordered quantity, both ways (``2`` = within 2 %).
    basis
        ``"requested"`` or ``"promised"``: which date ``on_time`` (and ``target_date``) uses.
    conversions
        item_id, from_uom, to_uom, factor: for deliveries in another unit than the PO line.

    Returns
    -------
    Otif
        ``lines`` (``LINE_COLUMNS``) and ``scorecard()``.

    Examples
    --------
    >>> import datetime as dt, polars as pl
    >>> from decimal import Decimal
    >>> from scfeeds.schemas import empty
    >>> po = pl.concat([empty("po_lines"), pl.DataFrame({"supplier_id": ["S"], "po_number": ["P"],
    ...     "line_number": ["1"], "item_id": ["X"], "uom": ["EA"], "qty_ordered": [Decimal(10)],
    ...     "po_date": [dt.date(2026, 1, 1)], "requested_date": [dt.date(2026, 1, 10)]})],
    ...     how="diagonal_relaxed")
    >>> rec = pl.concat([empty("receipts"), pl.DataFrame({"po_number": ["P"], "line_number": ["1"],
    ...     "item_id": ["X"], "uom": ["EA"], "qty_received": [Decimal(10)],
    ...     "receipt_date": [dt.date(2026, 1, 11)]})], how="diagonal_relaxed")
    >>> otif(po, receipts=rec, window=(0, 1)).lines.select("timing", "in_full", "otif").row(0)
    ('on_time', True, True)
    """
    if basis not in ("requested", "promised"):
        raise ConfigurationError(f"basis={basis!r}: expected 'requested' or 'promised'")
    win = OnTimeWindow.coerce(window)
    tol = percent_option(qty_tolerance)
    lines = _delivered_lines(as_lazy(po_lines), asn_lines, receipts, acks, conversions)
    lines = _measured(lines, basis, win, tol)
    out = lines.select(*(c(k).cast(v) for k, v in LINE_COLUMNS.items())).collect()
    return Otif(out, basis, win, tol)
