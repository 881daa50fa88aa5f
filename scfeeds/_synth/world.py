"""One batch of the seeded world, built with numpy arrays (no Python loop per line).

A batch is a run of consecutive POs. Everything in it is drawn from
``numpy.random.default_rng([seed, stream, batch])`` so a batch depends only on the seed, its
index and the counters carried over from earlier batches (:class:`Counters`), never on
wall-clock time or hash order.

Quantities are whole units; money is held as integer cents, so every sum is exact.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt
import polars as pl

from scfeeds._synth.config import DUPLICATE_FAULTS, FAULTS, LINE_FAULTS, Supplier, SynthConfig
from scfeeds.schemas import EXCEPTION_KEY

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

CLEAN: Final = -1
_F = {name: i for i, name in enumerate(LINE_FAULTS)}
_CARRIERS: Final = ("UPSN", "FDEG", "ODFL", "RDWY", "SAIA", "XPOL")
_UOMS: Final = ("EA", "EA", "EA", "EA", "EA", "EA", "LB", "FT", "PR")
_PACK_SIZES: Final = (6, 12, 24, 48)
_ADJ: Final = (
    "Steel",
    "Brass",
    "Nylon",
    "Zinc plated",
    "Stainless",
    "Heavy duty",
    "Galvanized",
    "Coated",
)
_NOUN: Final = (
    "hex bolt",
    "washer",
    "hinge",
    "bracket",
    "cable tie",
    "pipe clamp",
    "bearing",
    "gasket",
    "fuse",
    "relay",
    "caster",
    "spring",
)
_EPOCH: Final = dt.date(1970, 1, 1)
# The PO line columns an ASN or invoice line repeats (then its unit, and an invoice its currency)
_LINE_COLUMNS: Final = (
    "sup",
    "supplier_id",
    "po_number",
    "line_number",
    "item_id",
    "vendor_part",
    "description",
)


@dataclass
class Counters:
    """Sequence numbers carried from one batch to the next (keeps ids unique and stable)."""

    shipment: int = 0
    pack: int = 0
    invoice: list[int] = field(default_factory=list)  # per supplier


@dataclass(frozen=True)
class ItemCatalog:
    """Every supplier's items; index = supplier * per_supplier + local index."""

    per_supplier: int
    item_id: pl.Series
    vendor_part: pl.Series
    description: pl.Series
    price_cents: IntArray
    uom: pl.Series
    pack_size: IntArray  # EA per CS, 0 when the item has no pack size

    def conversions(self) -> pl.DataFrame:
        """``world/conversions.parquet``: item_id, from_uom, to_uom, factor."""
        has = self.pack_size > 0
        return pl.DataFrame(
            {
                "item_id": self.item_id.filter(pl.Series(has)),
                "from_uom": "CS",
                "to_uom": "EA",
                "factor": pl.Series(self.pack_size[has]).cast(pl.String),
            }
        ).with_columns(pl.col("factor").cast(pl.Decimal(18, 4)))


def make_catalog(seed: int, n_suppliers: int, per_supplier: int) -> ItemCatalog:
    rng = np.random.default_rng([seed, 0])
    n = n_suppliers * per_supplier
    sup = np.repeat(np.arange(n_suppliers), per_supplier)
    local = np.tile(np.arange(per_supplier), n_suppliers)
    frame = pl.DataFrame({"s": sup + 1, "l": local + 1})
    item_id = frame.select(
        pl.format(
            "P{}-{}",
            pl.col("s").cast(pl.String).str.zfill(2),
            pl.col("l").cast(pl.String).str.zfill(5),
        )
    ).to_series()
    vp = (local * 7919 + sup * 104_729 + 13) % 100_000
    vendor_part = (
        pl.DataFrame({"s": sup + 1, "v": vp})
        .select(
            pl.format(
                "V{}{}",
                pl.col("s").cast(pl.String).str.zfill(2),
                pl.col("v").cast(pl.String).str.zfill(5),
            )
        )
        .to_series()
    )
    adj = np.array(_ADJ, dtype=object)[rng.integers(0, len(_ADJ), n)]
    noun = np.array(_NOUN, dtype=object)[rng.integers(0, len(_NOUN), n)]
    size = rng.integers(4, 65, n)
    # some descriptions carry a comma, as real ones do, to exercise CSV quoting
    comma = rng.random(n) < 0.2
    desc = [
        f"{a} {b}, {c} mm" if k else f"{a} {b} {c} mm"
        for a, b, c, k in zip(adj, noun, size.tolist(), comma.tolist(), strict=True)
    ]
    # A skewed price list ($1.00 to about $2,500) from integers only: libm exp/log may differ
    # in the last bit between CPUs, which would break "same seed, same bytes" across machines.
    scale = np.array([1, 1, 1, 1, 2, 2, 5, 10, 25, 100])[rng.integers(0, 10, n)]
    price = (rng.integers(100, 2_500, n) * scale).astype(np.int64)
    uom = np.array(_UOMS, dtype=object)[rng.integers(0, len(_UOMS), n)]
    pack = np.where(
        (uom == "EA") & (rng.random(n) < 0.35),
        np.array(_PACK_SIZES)[rng.integers(0, len(_PACK_SIZES), n)],
        0,
    ).astype(np.int64)
    return ItemCatalog(
        per_supplier=per_supplier,
        item_id=item_id,
        vendor_part=vendor_part,
        description=pl.Series(desc, dtype=pl.String),
        price_cents=price,
        uom=pl.Series(uom.tolist(), dtype=pl.String),
        pack_size=pack,
    )


def _pick(
    values: tuple[str | None, ...] | list[str | None], idx: npt.NDArray[np.int64]
) -> pl.Series:
    """``values[idx]`` as a String Series, gathered by polars (no Python loop per row)."""
    return pl.Series(list(values), dtype=pl.String).gather(pl.Series(idx, dtype=pl.Int64))


def _money(cents: pl.Expr) -> pl.Expr:
    """Integer cents -> ``"12.50"`` (``"-12.50"``: credit memos)."""
    sign = pl.when(cents < 0).then(pl.lit("-")).otherwise(pl.lit(""))
    whole = cents.abs()
    return pl.format(
        "{}{}.{}", sign, (whole // 100).cast(pl.String), (whole % 100).cast(pl.String).str.zfill(2)
    )


def _dates(days: IntArray) -> pl.Series:
    return pl.Series(days, dtype=pl.Int32).cast(pl.Date)


@dataclass(frozen=True)
class Batch:
    """The rows of one batch, before they are routed to files.

    ``po``: one row per PO line; ``asn``: one row per ASN line (in document order: shipment,
    pack, line); ``invoice``: one row per invoice line (document order), copies included
    (``copy_of`` >= 0); ``receipts``: one row per received (shipment, line); ``truth``: the
    answer key. Every frame has ``sup`` (supplier index) and ``doc`` (document key, unique in
    the batch for its table).
    """

    po: pl.DataFrame
    asn: pl.DataFrame
    invoice: pl.DataFrame
    receipts: pl.DataFrame
    truth: pl.DataFrame


TRUTH_SCHEMA: Final = pl.Schema({"fault": pl.String(), **EXCEPTION_KEY})


def _uniform_int(rng: np.random.Generator, low: IntArray | int, high: IntArray) -> IntArray:
    """Uniform ints in [low, high) elementwise; high <= low gives low."""
    span = np.maximum(np.asarray(high) - low, 1)
    return np.asarray(low + (rng.random(span.shape) * span).astype(np.int64), dtype=np.int64)


@dataclass(frozen=True)
class _Draw:
    """What every stage of :func:`make_batch` draws from and writes into."""

    rng: np.random.Generator
    batch: int
    n_po: int
    suppliers: tuple[Supplier, ...]
    catalog: ItemCatalog
    rates: Mapping[str, float]
    config: SynthConfig
    counters: Counters
    start: int  # config.start_date as days since the epoch


@dataclass(frozen=True)
class _Lines:
    """The batch's POs (``po_*``: one entry per PO) and PO lines (the rest: one per line)."""

    po_sup: IntArray
    po_date: IntArray
    line_po: IntArray
    line_no: IntArray
    sup: IntArray
    item: IntArray
    price: IntArray
    pack_size: IntArray
    qty: IntArray
    fault: IntArray
    faulted: BoolArray
    cs: BoolArray  # ordered in cases (CS) of pack_size
    shipped: IntArray
    invoiced: IntArray
    inv_price: IntArray
    uom_bad: BoolArray
    inv_qty_unit: IntArray
    force_all: bool  # every fault at least once (the batch is big enough)


@dataclass(frozen=True)
class _Shipments:
    """Shipment parts (one per shipment and PO line) and the shipments' POs and dates."""

    part_line: IntArray
    part_ship: IntArray
    part_qty: IntArray
    ship_po: IntArray
    ship_date: IntArray


@dataclass(frozen=True)
class _Billing:
    """Invoice lines of real POs (``il_*``), their invoices (``inv_*``), no-PO invoices
    (``np_*``, one line each) and credit memos (``cm_*``, one line each), with the invoice
    numbers of each (``*_seq``)."""

    il_line: IntArray
    il_inv: IntArray
    il_qty: IntArray
    inv_date: IntArray
    inv_sup: IntArray
    inv_clean: BoolArray
    np_sup: IntArray
    np_item: IntArray
    np_po: IntArray
    np_date: IntArray
    np_qty: IntArray
    cm_line: IntArray
    cm_qty: IntArray
    cm_date: IntArray
    cm_sup: IntArray
    inv_seq: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    np_seq: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    cm_seq: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def n_inv(self) -> int:
        return len(self.inv_date)


def make_batch(
    *,
    seed: int,
    batch: int,
    po_start: int,
    n_po: int,
    lines_per_po: tuple[int, int],
    suppliers: tuple[Supplier, ...],
    catalog: ItemCatalog,
    rates: Mapping[str, float],
    config: SynthConfig,
    counters: Counters,
    force_all: bool,
) -> Batch:
    """Draw one batch of ``n_po`` POs (global index ``po_start`` ...).

    The stages draw from one random stream in a fixed order (lines, shipments, receipts,
    invoices, duplicates): reordering them changes every world.
    """
    d = _Draw(
        rng=np.random.default_rng([seed, 1, batch]),
        batch=batch,
        n_po=n_po,
        suppliers=suppliers,
        catalog=catalog,
        rates=rates,
        config=config,
        counters=counters,
        start=(config.start_date - _EPOCH).days,
    )
    lines = _draw_lines(d, lines_per_po, force_all)
    po_frame = _po_frame(
        po_start,
        lines.po_sup,
        lines.po_date,
        lines.line_po,
        lines.line_no,
        lines.item,
        lines.qty,
        lines.price,
        lines.fault,
        suppliers,
        catalog,
    )
    ships, asn_frame = _draw_shipments(d, lines, po_frame)
    receipts = _draw_receipts(d, lines, ships, po_frame)
    billing = _draw_billing(d, lines, ships)
    invoice = _invoice_frame(d, lines, billing, po_frame)
    invoice, dup_truth = _draw_duplicates(d, invoice, billing.inv_clean, lines.force_all)
    return Batch(
        po=po_frame,
        asn=asn_frame,
        invoice=invoice,
        receipts=receipts,
        truth=_batch_truth(po_frame, dup_truth, invoice),
    )


def _draw_lines(d: _Draw, lines_per_po: tuple[int, int], force_all: bool) -> _Lines:
    """POs, their lines, each line's fault and what is shipped and invoiced for it."""
    rng, n_po, catalog, rates, config = d.rng, d.n_po, d.catalog, d.rates, d.config
    # -- purchase orders ----------------------------------------------------------------
    po_sup = rng.integers(0, len(d.suppliers), n_po)
    po_date = d.start + rng.integers(0, config.days, n_po)
    n_lines = rng.integers(lines_per_po[0], lines_per_po[1] + 1, n_po)
    n_l = int(n_lines.sum())
    line_po = np.repeat(np.arange(n_po), n_lines)
    first = np.cumsum(n_lines) - n_lines
    line_no = np.arange(n_l) - first[line_po] + 1
    sup = po_sup[line_po]
    item = sup * catalog.per_supplier + rng.integers(0, catalog.per_supplier, n_l)
    price = catalog.price_cents[item]
    pack_size = catalog.pack_size[item]
    qty = rng.integers(1, 61, n_l)

    # -- faults: at most one line fault per line ----------------------------------------
    line_rates = np.array([rates[f] for f in LINE_FAULTS])
    fault = np.searchsorted(np.cumsum(line_rates), rng.random(n_l), side="right")
    fault = np.where(fault >= len(LINE_FAULTS), CLEAN, fault).astype(np.int64)
    # "every fault at least once" only when the batch is big enough for it not to swamp it
    force_all = force_all and n_l >= 40
    if force_all:
        _force_line_faults(rng, fault, line_rates)
    faulted = fault != CLEAN
    # faults are large: at least 10 units so 10 % is at least one unit
    qty = np.where(faulted, rng.integers(10, 101, n_l), qty)
    cs = ~faulted & (pack_size > 0) & (rng.random(n_l) < config.pack_size_rate)
    qty = np.where(cs, pack_size * rng.integers(1, 6, n_l), qty)

    f_short = rng.uniform(0.5, 0.9, n_l)
    f_over = rng.uniform(1.1, 1.5, n_l)
    shipped = qty.copy()
    shipped[np.isin(fault, [_F["not_shipped"], _F["invoiced_not_received"]])] = 0
    short = np.isin(fault, [_F["short_shipment"], _F["short_shipment_billed_full"]])
    shipped[short] = np.floor(qty[short] * f_short[short]).astype(np.int64)
    over = fault == _F["over_shipment"]
    shipped[over] = np.ceil(qty[over] * f_over[over]).astype(np.int64)

    invoiced = qty.copy()
    invoiced[np.isin(fault, [_F["not_shipped"], _F["not_invoiced"]])] = 0
    short_only = fault == _F["short_shipment"]
    invoiced[short_only] = shipped[short_only]
    over_inv = np.isin(fault, [_F["over_invoiced"], _F["credit_memo"]])
    invoiced[over_inv] = np.ceil(qty[over_inv] * f_over[over_inv]).astype(np.int64)
    # invoice unit and price per line
    inv_price = price.copy()
    pv = fault == _F["price_variance"]
    sign = np.where(rng.random(n_l) < 0.5, -1.0, 1.0)
    inv_price[pv] = np.round(price[pv] * (1 + sign[pv] * rng.uniform(0.11, 0.25, n_l)[pv]))
    uom_bad = fault == _F["uom_mismatch"]
    box = np.array([5, 10, 12])[rng.integers(0, 3, n_l)]
    inv_qty_unit = np.where(cs, invoiced // np.maximum(pack_size, 1), invoiced)
    inv_qty_unit = np.where(uom_bad, -(-invoiced // box), inv_qty_unit)
    inv_price = np.where(cs, price * pack_size, inv_price)
    inv_price = np.where(uom_bad, price * box, inv_price)
    return _Lines(
        po_sup=po_sup,
        po_date=po_date,
        line_po=line_po,
        line_no=line_no,
        sup=sup,
        item=item,
        price=price,
        pack_size=pack_size,
        qty=qty,
        fault=fault,
        faulted=faulted,
        cs=cs,
        shipped=shipped,
        invoiced=invoiced,
        inv_price=inv_price,
        uom_bad=uom_bad,
        inv_qty_unit=inv_qty_unit,
        force_all=force_all,
    )


def _draw_shipments(
    d: _Draw, lines: _Lines, po_frame: pl.DataFrame
) -> tuple[_Shipments, pl.DataFrame]:
    """Shipments (a PO line split over up to two), their packs, and the ASN lines."""
    rng, config, counters = d.rng, d.config, d.counters
    shipped, cs, line_po, po_date = lines.shipped, lines.cs, lines.line_po, lines.po_date
    n_l = len(shipped)
    k_po = rng.choice(np.array([1, 2, 3]), size=d.n_po, p=[0.6, 0.3, 0.1])
    k_line = k_po[line_po]
    has = shipped > 0
    split = has & (shipped >= 2) & (k_line >= 2) & ~cs & (rng.random(n_l) < config.ship_split)
    s_a = _uniform_int(rng, 0, k_line)
    s_b = (s_a + _uniform_int(rng, 1, k_line)) % k_line
    q_a = np.where(split, _uniform_int(rng, 1, shipped), shipped)
    part_line = np.concatenate([np.flatnonzero(has), np.flatnonzero(split)])
    part_slot = np.concatenate([s_a[has], s_b[split]])
    part_qty = np.concatenate([q_a[has], (shipped - q_a)[split]])
    ship_key, part_ship = np.unique(line_po[part_line] * 4 + part_slot, return_inverse=True)
    n_ship = len(ship_key)
    ship_po = ship_key // 4
    ship_slot = ship_key % 4
    ship_date = (
        po_date[ship_po] + rng.integers(2, 12, n_ship) + ship_slot * rng.integers(3, 9, n_ship)
    )
    ship_seq = counters.shipment + np.arange(n_ship) + 1
    counters.shipment += n_ship
    n_packs = rng.integers(1, 4, n_ship)
    carrier = rng.integers(0, len(_CARRIERS), n_ship)
    tracking = rng.integers(10**11, 10**12, n_ship)

    part_pack = _uniform_int(rng, 0, n_packs[part_ship])
    n_parts = len(part_line)
    psplit = (
        (part_qty >= 2)
        & (n_packs[part_ship] >= 2)
        & ~cs[part_line]
        & (rng.random(n_parts) < config.pack_split)
    )
    p_a = np.where(psplit, _uniform_int(rng, 1, part_qty), part_qty)
    al_part = np.concatenate([np.arange(n_parts), np.flatnonzero(psplit)])
    al_pack = np.concatenate([part_pack, ((part_pack + 1) % n_packs[part_ship])[psplit]])
    al_qty = np.concatenate([p_a, (part_qty - p_a)[psplit]])
    al_ship = part_ship[al_part]
    al_line = part_line[al_part]
    order = np.lexsort((al_line, al_pack, al_ship))
    al_part, al_pack, al_qty, al_ship, al_line = (
        a[order] for a in (al_part, al_pack, al_qty, al_ship, al_line)
    )
    pack_key, pack_ord = np.unique(al_ship * 4 + al_pack, return_inverse=True)
    pack_seq = counters.pack + pack_ord + 1
    counters.pack += len(pack_key)
    asn_frame = _asn_frame(
        al_ship,
        al_line,
        al_qty,
        al_pack,
        pack_seq,
        ship_seq,
        ship_date,
        carrier,
        tracking,
        cs,
        lines.pack_size,
        po_frame,
        lines.po_sup,
        line_po,
    )
    ships = _Shipments(
        part_line=part_line,
        part_ship=part_ship,
        part_qty=part_qty,
        ship_po=ship_po,
        ship_date=ship_date,
    )
    return ships, asn_frame


def _draw_receipts(
    d: _Draw, lines: _Lines, ships: _Shipments, po_frame: pl.DataFrame
) -> pl.DataFrame:
    """One receipt per (shipment, line), in the PO line's unit."""
    part_line, part_ship = ships.part_line, ships.part_ship
    rc_order = np.lexsort((part_line, part_ship))
    rc_line = part_line[rc_order]
    rc_ship = part_ship[rc_order]
    rc_date = ships.ship_date[rc_ship] + d.rng.integers(1, 5, len(rc_order))
    return (
        po_frame[rc_line]
        .select("sup", "supplier_id", "po_number", "line_number", "item_id", "uom")
        .with_columns(
            doc=pl.Series(rc_ship),
            qty_received=pl.Series(ships.part_qty[rc_order])
            .cast(pl.String)
            .cast(pl.Decimal(18, 4)),
            receipt_date=_dates(rc_date),
            location=_supplier_col(lines.sup[rc_line], d.suppliers, "location"),
        )
    )


def _draw_billing(d: _Draw, lines: _Lines, ships: _Shipments) -> _Billing:
    """Invoices of the POs' lines, invoices without a PO, credit memos, and their numbers."""
    rng, n_po, config, suppliers = d.rng, d.n_po, d.config, d.suppliers
    line_po, invoiced, faulted = lines.line_po, lines.invoiced, lines.faulted
    n_l = len(line_po)
    last_ship = lines.po_date + rng.integers(5, 15, n_po)
    np.maximum.at(last_ship, ships.ship_po, ships.ship_date)
    k_inv = np.where(rng.random(n_po) < config.invoice_split, 2, 1)
    billable = (invoiced > 0) | lines.uom_bad
    fixed = faulted | lines.cs
    kl = k_inv[line_po]
    i_a = np.where(fixed, 0, _uniform_int(rng, 0, kl))
    isplit = (
        billable
        & ~fixed
        & (kl == 2)
        & (invoiced >= 2)
        & (rng.random(n_l) < config.invoice_line_split)
    )
    iq_a = np.where(isplit, _uniform_int(rng, 1, invoiced), lines.inv_qty_unit)
    il_line = np.concatenate([np.flatnonzero(billable), np.flatnonzero(isplit)])
    il_slot = np.concatenate([i_a[billable], (1 - i_a)[isplit]])
    il_qty = np.concatenate([iq_a[billable], (invoiced - iq_a)[isplit]])
    inv_key, il_inv = np.unique(line_po[il_line] * 2 + il_slot, return_inverse=True)
    order = np.lexsort((il_line, il_inv))
    il_line, il_inv, il_qty = il_line[order], il_inv[order], il_qty[order]
    n_inv = len(inv_key)
    inv_po = inv_key // 2
    inv_sup = lines.po_sup[inv_po]
    inv_date = _billing_run(
        last_ship[inv_po] + rng.integers(0, 10, n_inv) + (inv_key % 2) * rng.integers(1, 6, n_inv),
        inv_sup,
        suppliers,
    )
    inv_clean = np.ones(n_inv, dtype=bool)
    np.logical_and.at(inv_clean, il_inv, ~faulted[il_line])

    # no-PO invoices: one line, a PO number from a range no real PO uses
    rates = d.rates
    n_nopo = int((rng.random(n_inv) < rates["no_po"]).sum())  # no libm: same on every CPU
    if lines.force_all and n_nopo == 0 and rates["no_po"] > 0 and n_inv:
        n_nopo = 1
    np_sup = rng.integers(0, len(suppliers), n_nopo)
    np_item = np_sup * d.catalog.per_supplier + rng.integers(0, d.catalog.per_supplier, n_nopo)
    np_po = 49_000_000 + rng.integers(0, 1_000_000, n_nopo) * 100 + d.batch % 100
    np_date = _billing_run(d.start + rng.integers(10, config.days + 20, n_nopo), np_sup, suppliers)
    np_qty = rng.integers(1, 61, n_nopo)

    # credit memos: one per credit_memo line, returning what was billed beyond the order
    cm_line = np.flatnonzero(lines.fault == _F["credit_memo"])
    cm_qty = -(invoiced[cm_line] - lines.qty[cm_line])
    # a credit_memo line is billed on one invoice (faulted lines are never split)
    inv_of_line = np.zeros(n_l, dtype=np.int64)
    inv_of_line[il_line] = il_inv
    cm_inv = inv_of_line[cm_line]
    cm_sup = lines.sup[cm_line]
    cm_date = _billing_run(inv_date[cm_inv] + rng.integers(3, 21, len(cm_line)), cm_sup, suppliers)
    billing = _Billing(
        il_line=il_line,
        il_inv=il_inv,
        il_qty=il_qty,
        inv_date=inv_date,
        inv_sup=inv_sup,
        inv_clean=inv_clean,
        np_sup=np_sup,
        np_item=np_item,
        np_po=np_po,
        np_date=np_date,
        np_qty=np_qty,
        cm_line=cm_line,
        cm_qty=cm_qty,
        cm_date=cm_date,
        cm_sup=cm_sup,
    )
    return _numbered(billing, d.counters, len(suppliers))


def _numbered(billing: _Billing, counters: Counters, n_sup: int) -> _Billing:
    """Every supplier numbers its invoices and credit memos in one sequence, in date order
    (INV-000041, INV-000042, ...: many a day, one edit apart)."""
    b = billing
    all_sup = np.concatenate([b.inv_sup, b.np_sup, b.cm_sup])
    all_date = np.concatenate([b.inv_date, b.np_date, b.cm_date])
    by_date = np.lexsort((np.arange(len(all_sup)), all_date))
    all_seq = np.zeros(len(all_sup), dtype=np.int64)
    all_seq[by_date] = _sequence(all_sup[by_date], counters, n_sup)
    inv_seq, np_seq, cm_seq = np.split(all_seq, [b.n_inv, b.n_inv + len(b.np_sup)])
    return dataclasses.replace(b, inv_seq=inv_seq, np_seq=np_seq, cm_seq=cm_seq)


def _draw_duplicates(
    d: _Draw, invoice: pl.DataFrame, inv_clean: BoolArray, force_all: bool
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Copies of clean invoices (resent, re-keyed, suspect); the invoices and their truth."""
    rng, n_inv = d.rng, len(inv_clean)
    dup_rates = np.array([d.rates[f] for f in DUPLICATE_FAULTS])
    dup = np.searchsorted(np.cumsum(dup_rates), rng.random(n_inv), side="right")
    dup = np.where(inv_clean & (dup < len(DUPLICATE_FAULTS)), dup, CLEAN)
    if force_all:
        _force_duplicates(rng, dup, inv_clean, dup_rates)
    shift = rng.integers(1, 4, n_inv)
    return _add_copies(invoice, dup, shift)


def _batch_truth(
    po_frame: pl.DataFrame, dup_truth: pl.DataFrame, invoice: pl.DataFrame
) -> pl.DataFrame:
    """The answer key of the batch: line faults, duplicates and invoices without a PO."""
    truth = pl.concat(
        [
            _line_truth(po_frame).select(TRUTH_SCHEMA.names()),
            dup_truth.select(TRUTH_SCHEMA.names()),
            invoice.filter(pl.col("no_po")).select(
                fault=pl.lit("no_po"),
                code=pl.lit("NO_PO_REFERENCE"),
                level=pl.lit("invoice"),
                supplier_id="supplier_id",
                po_number="po_number",
                line_number="line_number",
                item_id="item_id",
                invoice_number="invoice_number",
                shipment_id=pl.lit(None, pl.String),
            ),
        ],
        how="vertical_relaxed",
    ).match_to_schema(TRUTH_SCHEMA)
    # evidence for single-invoice faults: the invoice carrying the wrong price / unit
    evidence = (
        invoice.filter(~pl.col("no_po") & (pl.col("copy_of") < 0))
        .select("po_number", "line_number", ev="invoice_number")
        .unique(["po_number", "line_number"], keep="first", maintain_order=True)
    )
    return (
        truth.join(evidence, on=["po_number", "line_number"], how="left", maintain_order="left")
        .with_columns(
            invoice_number=pl.when(pl.col("fault").is_in(["price_variance", "uom_mismatch"]))
            .then(pl.col("ev"))
            .otherwise(pl.col("invoice_number"))
        )
        .drop("ev")
    )


def _force_line_faults(
    rng: np.random.Generator, fault: IntArray, rates: npt.NDArray[np.float64]
) -> None:
    """Make sure each line fault with a positive rate occurs at least once (if lines allow)."""
    for k in range(len(LINE_FAULTS)):
        if rates[k] <= 0 or (fault == k).any():
            continue
        clean = np.flatnonzero(fault == CLEAN)
        # keep at least half the lines clean so invoice-level faults have clean invoices
        if len(clean) <= len(fault) // 2:
            return
        fault[clean[rng.integers(0, len(clean))]] = k


def _force_duplicates(
    rng: np.random.Generator,
    dup: IntArray,
    inv_clean: BoolArray,
    rates: npt.NDArray[np.float64],
) -> None:
    for k in range(len(DUPLICATE_FAULTS)):
        if rates[k] <= 0 or (dup == k).any():
            continue
        free = np.flatnonzero(inv_clean & (dup == CLEAN))
        if len(free) < 2:
            return
        dup[free[rng.integers(0, len(free))]] = k


def _billing_run(days: IntArray, sup: IntArray, suppliers: tuple[Supplier, ...]) -> IntArray:
    """Move invoice dates of suppliers with a weekly billing run to its next weekday (day
    numbers count from 1970-01-01, a Thursday: weekday = (day + 3) % 7, Monday = 0)."""
    run = np.array([-1 if s.billing_day is None else s.billing_day for s in suppliers])[sup]
    shift = np.where(run >= 0, (run - (days + 3)) % 7, 0)
    return np.asarray(days + shift, dtype=np.int64)


def _sequence(sup: IntArray, counters: Counters, n_sup: int) -> IntArray:
    """Per-supplier running invoice sequence numbers, in array order."""
    if not counters.invoice:
        counters.invoice = [0] * n_sup
    seq = np.zeros(len(sup), dtype=np.int64)
    for s in range(n_sup):
        mask = sup == s
        n = int(mask.sum())
        seq[mask] = counters.invoice[s] + np.arange(n) + 1
        counters.invoice[s] += n
    return seq


def _supplier_col(sup: IntArray, suppliers: tuple[Supplier, ...], attr: str) -> pl.Series:
    return _pick([getattr(s, attr) for s in suppliers], sup)


def _po_frame(
    po_start: int,
    po_sup: IntArray,
    po_date: IntArray,
    line_po: IntArray,
    line_no: IntArray,
    item: IntArray,
    qty: IntArray,
    price: IntArray,
    fault: IntArray,
    suppliers: tuple[Supplier, ...],
    catalog: ItemCatalog,
) -> pl.DataFrame:
    sup = po_sup[line_po]
    names = (*LINE_FAULTS, None)
    return pl.DataFrame(
        {
            "sup": sup,
            "doc": line_po,
            "supplier_id": _supplier_col(sup, suppliers, "supplier_id"),
            "po_number": pl.Series(po_start + line_po + 1).cast(pl.String).str.zfill(8),
            "po_date": _dates(po_date[line_po]),
            "line_number": pl.Series(line_no).cast(pl.String),
            "item_id": catalog.item_id.gather(item),
            "vendor_part": catalog.vendor_part.gather(item),
            "description": catalog.description.gather(item),
            "qty": qty,
            "uom": catalog.uom.gather(item),
            "price_cents": price,
            "currency": _supplier_col(sup, suppliers, "currency"),
            "fault": _pick(names, np.where(fault < 0, len(LINE_FAULTS), fault)),
        }
    ).with_columns(
        po_number="45" + pl.col("po_number"),
        qty_ordered=pl.col("qty").cast(pl.String).cast(pl.Decimal(18, 4)),
        unit_price=_money(pl.col("price_cents")).cast(pl.Decimal(18, 4)),
        requested_date=pl.lit(None, dtype=pl.Date),
    )


def _asn_frame(
    al_ship: IntArray,
    al_line: IntArray,
    al_qty: IntArray,
    al_pack: IntArray,
    pack_seq: IntArray,
    ship_seq: IntArray,
    ship_date: IntArray,
    carrier: IntArray,
    tracking: IntArray,
    cs: BoolArray,
    pack_size: IntArray,
    po_frame: pl.DataFrame,
    po_sup: IntArray,
    line_po: IntArray,
) -> pl.DataFrame:
    line_cs = cs[al_line]
    qty = np.where(line_cs, al_qty // np.maximum(pack_size[al_line], 1), al_qty)
    base = po_frame[al_line].select(*_LINE_COLUMNS, "uom")
    return base.with_columns(
        doc=pl.Series(al_ship),
        pack=pl.Series(al_pack),
        shipment_id=pl.format("SH{}", pl.Series(ship_seq[al_ship]).cast(pl.String).str.zfill(9)),
        ship_date=_dates(ship_date[al_ship]),
        qty=pl.Series(qty),
        uom=pl.when(pl.Series(line_cs)).then(pl.lit("CS")).otherwise(pl.col("uom")),
        # SSCC-18 shaped: extension digit 1, company prefix 0614141, 10-digit serial
        pack_id=pl.format("10614141{}", pl.Series(pack_seq).cast(pl.String).str.zfill(10)),
        carrier=_pick(_CARRIERS, carrier[al_ship]),
        tracking=pl.Series(tracking[al_ship]).cast(pl.String),
        bol=pl.format("BOL{}", pl.Series(ship_seq[al_ship]).cast(pl.String).str.zfill(9)),
    ).with_columns(
        tracking=pl.col("carrier").str.slice(0, 2) + pl.col("tracking"),
        qty_shipped=pl.col("qty").cast(pl.String).cast(pl.Decimal(18, 4)),
    )


def _invoice_frame(d: _Draw, lines: _Lines, b: _Billing, po_frame: pl.DataFrame) -> pl.DataFrame:
    """Every invoice line of the batch: of POs, without a PO, of credit memos."""
    billed = _billed_lines(lines, b, po_frame)
    nopo = _no_po_lines(d, b)
    n_cm = len(b.cm_line)
    credit = (
        po_frame[b.cm_line]
        .select(*_LINE_COLUMNS, "currency", "uom")
        .with_columns(
            doc=pl.Series(b.n_inv + len(b.np_sup) + np.arange(n_cm), dtype=pl.Int64),
            seq=pl.Series(b.cm_seq, dtype=pl.Int64),
            invoice_date=_dates(b.cm_date),
            qty=pl.Series(b.cm_qty, dtype=pl.Int64),
            price_cents=pl.Series(lines.inv_price[b.cm_line], dtype=pl.Int64),
            no_po=pl.lit(False),
        )
    )
    out = pl.concat(
        [billed.cast({"doc": pl.Int64, "seq": pl.Int64}), nopo, credit.select(nopo.columns)],
        how="vertical",
    )
    return out.with_columns(
        invoice_number=pl.format("INV-{}", pl.col("seq").cast(pl.String).str.zfill(6)),
        credit=pl.col("qty") < 0,
        copy_of=pl.lit(-1, pl.Int64),
        qty_invoiced=pl.col("qty").cast(pl.String).cast(pl.Decimal(18, 4)),
        unit_price=_money(pl.col("price_cents")).cast(pl.Decimal(18, 4)),
        amount_cents=pl.col("qty") * pl.col("price_cents"),
    ).with_columns(line_amount=_money(pl.col("amount_cents")).cast(pl.Decimal(18, 4)))


def _billed_lines(lines: _Lines, b: _Billing, po_frame: pl.DataFrame) -> pl.DataFrame:
    """Invoice lines of the POs' lines: in cases, in boxes (a unit mismatch) or as ordered."""
    il_line, il_inv = b.il_line, b.il_inv
    base = po_frame[il_line].select(*_LINE_COLUMNS, "currency", "uom")
    uom = (
        pl.when(pl.Series(lines.cs[il_line]))
        .then(pl.lit("CS"))
        .when(pl.Series(lines.uom_bad[il_line]))
        .then(pl.lit("BX"))
        .otherwise(pl.col("uom"))
    )
    return base.with_columns(
        doc=pl.Series(il_inv),
        seq=pl.Series(b.inv_seq[il_inv]),
        invoice_date=_dates(b.inv_date[il_inv]),
        qty=pl.Series(b.il_qty),
        uom=uom,
        price_cents=pl.Series(lines.inv_price[il_line]),
        no_po=pl.lit(False),
    )


def _no_po_lines(d: _Draw, b: _Billing) -> pl.DataFrame:
    """The one line of each invoice without a PO, at the catalog price."""
    np_sup, np_item, catalog = b.np_sup, b.np_item, d.catalog
    n_np = len(np_sup)
    return pl.DataFrame(
        {
            "sup": np_sup,
            "supplier_id": _supplier_col(np_sup, d.suppliers, "supplier_id"),
            "po_number": pl.Series(b.np_po).cast(pl.String),
            "line_number": pl.Series(["1"] * n_np, dtype=pl.String),
            "item_id": catalog.item_id.gather(np_item),
            "vendor_part": catalog.vendor_part.gather(np_item),
            "description": catalog.description.gather(np_item),
            "currency": _supplier_col(np_sup, d.suppliers, "currency"),
            "uom": catalog.uom.gather(np_item),
            "doc": b.n_inv + np.arange(n_np),
            "seq": b.np_seq,
            "invoice_date": _dates(b.np_date),
            "qty": b.np_qty,
            "price_cents": catalog.price_cents[np_item],
            "no_po": pl.Series([True] * n_np, dtype=pl.Boolean),
        }
    ).cast({"doc": pl.Int64, "seq": pl.Int64, "qty": pl.Int64, "price_cents": pl.Int64})


def _add_copies(
    invoice: pl.DataFrame, dup: IntArray, shift: IntArray
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Append duplicate copies (``copy_of`` = original doc) and their truth rows."""
    picked = pl.DataFrame(
        {
            "doc": np.flatnonzero(dup != CLEAN),
            "kind": _pick(DUPLICATE_FAULTS, dup[dup != CLEAN]),
            "shift": shift[dup != CLEAN],
        }
    ).cast({"doc": pl.Int64})
    n_docs = int(invoice["doc"].to_numpy().max()) + 1 if invoice.height else 0
    copies = invoice.join(picked, on="doc", how="inner", maintain_order="left").with_columns(
        copy_of=pl.col("doc"),
        doc=pl.col("doc") + n_docs,
        invoice_number=pl.when(pl.col("kind") == "duplicate_rekeyed")
        # the same number keyed without its padding and dash: INV-000042 -> inv42
        .then(pl.format("inv{}", pl.col("seq").cast(pl.String)))
        .when(pl.col("kind") == "duplicate_suspect")
        .then(_rekeyed(pl.col("seq")))
        .otherwise(pl.col("invoice_number")),
        invoice_date=pl.when(pl.col("kind") == "duplicate_suspect")
        .then(pl.col("invoice_date") + pl.duration(days=pl.col("shift")))
        .otherwise(pl.col("invoice_date")),
    )
    truth = (
        copies.group_by("doc", maintain_order=True)
        .agg(pl.col("kind", "supplier_id", "po_number", "invoice_number").first())
        .select(
            fault="kind",
            code=pl.col("kind").replace_strict(
                {k: FAULTS[k][0] for k in DUPLICATE_FAULTS}, return_dtype=pl.String
            ),
            level=pl.lit("invoice"),
            supplier_id="supplier_id",
            po_number="po_number",
            line_number=pl.lit(None, pl.String),
            item_id=pl.lit(None, pl.String),
            invoice_number="invoice_number",
            shipment_id=pl.lit(None, pl.String),
        )
    )
    out = pl.concat([invoice, copies.drop("kind", "shift")], how="vertical")
    return out, truth


def _rekeyed(seq: pl.Expr) -> pl.Expr:
    """The number of a re-keyed copy: one keystroke off ``INV-{seq:06d}`` as typed, and never
    a number the supplier issues (a slip onto an issued number would be that invoice's
    duplicate, another fault): the first padding zero typed as the letter O; or, by
    ``seq % 3``, the leading padding zero typed as 7, 8 or 9 (numbers from 700000 on are
    never reached); or, without padding, one more digit in front (seven digits)."""
    digits = seq.cast(pl.String).str.zfill(6)
    padded = digits.str.starts_with("0")
    kind = seq % 2
    letter_o = digits.str.replace("0", "O", literal=True)
    lead = pl.format("{}{}", (7 + seq % 3).cast(pl.String), digits.str.slice(1))
    longer = pl.format("{}{}", (7 + seq % 3).cast(pl.String), digits)
    return pl.format(
        "INV-{}",
        pl.when(padded & (kind == 0)).then(letter_o).when(padded).then(lead).otherwise(longer),
    )


def _line_truth(po: pl.DataFrame) -> pl.DataFrame:
    # a fault a correct matcher reports nothing for (a credit memo netting out) has one
    # row with a null code
    pairs = [(f, c) for f in LINE_FAULTS for c in (FAULTS[f] or (None,))]
    codes = pl.DataFrame(
        {"fault": [f for f, _ in pairs], "code": [c for _, c in pairs]},
        schema={"fault": pl.String, "code": pl.String},
    )
    return (
        po.filter(pl.col("fault").is_not_null())
        .select("fault", "supplier_id", "po_number", "line_number", "item_id")
        .join(codes, on="fault", how="inner", maintain_order="left_right")
        .with_columns(
            level=pl.lit("line"),
            invoice_number=pl.lit(None, pl.String),
            shipment_id=pl.lit(None, pl.String),
        )
    )
