"""Options, fault names and supplier profiles of the synthetic world."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

from scfeeds.exceptions import ConfigurationError

Format = Literal["x12", "csv", "xlsx", "xml"]
FORMATS: Final[tuple[Format, ...]] = ("x12", "csv", "xlsx", "xml")
DocTable = Literal["po_lines", "asn_lines", "invoice_lines"]
DOC_TABLES: Final[tuple[DocTable, ...]] = ("po_lines", "asn_lines", "invoice_lines")

#: Fault name -> the exception codes a correct matcher reports for it (and nothing else).
FAULTS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "not_shipped": ("NOT_SHIPPED",),
        "short_shipment": ("SHORT_SHIPPED",),
        "short_shipment_billed_full": ("SHORT_SHIPPED", "OVER_INVOICED"),
        "over_shipment": ("OVER_SHIPPED",),
        "not_invoiced": ("NOT_INVOICED",),
        "over_invoiced": ("OVER_INVOICED", "OVER_ORDERED"),
        "invoiced_not_received": ("NOT_SHIPPED", "INVOICED_NOT_RECEIVED"),
        "price_variance": ("PRICE_VARIANCE",),
        # billed 110-150 %, then a credit memo returns the excess: nets out, nothing to report
        "credit_memo": (),
        "duplicate_invoice": ("DUPLICATE_INVOICE",),
        "duplicate_rekeyed": ("DUPLICATE_INVOICE",),
        "duplicate_suspect": ("DUPLICATE_SUSPECT",),
        "no_po": ("NO_PO_REFERENCE",),
        "uom_mismatch": ("UOM_MISMATCH",),
    }
)

#: Faults injected on a PO line (one at most per line), in the order used for sampling.
LINE_FAULTS: Final[tuple[str, ...]] = (
    "not_shipped",
    "short_shipment",
    "short_shipment_billed_full",
    "over_shipment",
    "not_invoiced",
    "over_invoiced",
    "invoiced_not_received",
    "price_variance",
    "uom_mismatch",
    "credit_memo",
)
#: Faults that copy a clean invoice (drawn per clean invoice).
DUPLICATE_FAULTS: Final[tuple[str, ...]] = (
    "duplicate_invoice",
    "duplicate_rekeyed",
    "duplicate_suspect",
)

#: Damage kind -> the rule (reader error code) a reader reports for the damaged file.
DAMAGE_KINDS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "x12_bad_se_count": "SE01_COUNT",
        "x12_bad_ge_control": "GE02_CONTROL",
        "x12_truncated": "TRUNCATED",
        "xml_malformed": "XML_SYNTAX",
        "csv_wrong_headers": "MISSING_COLUMNS",
    }
)

DEFAULT_RATES: Final[Mapping[str, float]] = MappingProxyType(
    {
        **dict.fromkeys(LINE_FAULTS, 0.01),
        # per clean invoice
        **dict.fromkeys(DUPLICATE_FAULTS, 0.01),
        # extra one-line invoices per invoice written
        "no_po": 0.005,
    }
)


def _fraction(name: str, value: object) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
        raise ConfigurationError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


@dataclass(frozen=True, kw_only=True)
class SynthConfig:
    """Options of :func:`scfeeds.synth.generate` that do not fit a notebook call.

    Parameters
    ----------
    fault_rates
        Fault name -> rate, overriding the ``faults=`` argument of ``generate`` when given.
        Line faults are drawn per PO line, duplicate faults per clean invoice, ``no_po`` as
        extra one-line invoices per invoice written.
    supplier_formats
        ``{"SUP001": {"po_lines": ("x12", "csv"), ...}, ...}``: the formats each supplier sends
        each document table in (one or two; documents are split between them at random).
        Suppliers and tables not listed get a default rotation over ``formats``.
    start_date, days
        PO dates are drawn uniformly from ``[start_date, start_date + days)``; ship, receipt and
        invoice dates follow them.
    ship_split, pack_split
        Probability that a shipped PO line is split over two shipments (when its PO ships in
        more than one), and that a shipment line is split over two packs (two ASN lines).
    invoice_split, invoice_line_split
        Probability that a PO is billed on two invoices, and that a line of such a PO has its
        quantity split over both.
    pack_size_rate
        Probability that a clean line of an item with a pack size is ordered in whole packs and
        shipped / invoiced in ``CS`` (see ``world/conversions.parquet``).
    receipts
        Write warehouse receipts (``feeds/<supplier>/receipts/*.csv``).
    batch_pos
        POs generated per batch: memory is bounded by the batch, not by ``pos``.
    x12_sets_per_file
        Transaction sets per X12 file (one interchange per file).
    export_rows_per_file
        Upper bound on rows per CSV/XLSX file (documents are never split across files).
    xml_max_files
        Cap on cXML files (one document each) per supplier and table; further documents go
        to the supplier's other format for that table, else to the first non-XML format of
        ``formats`` (no cap when ``formats`` is XML only).
    xlsx_max_rows
        Cap on XLSX rows per supplier and table (Excel exports are written cell by cell, and
        portals export small extracts); further documents go to the supplier's other non-XML
        format for that table, else to the first format of ``formats`` that is neither XLSX
        nor XML (no cap when there is none).
    items_per_supplier
        Size of each supplier's item catalog.
    performance
        Supplier performance data (``scfeeds._synth.acks``): requested dates on PO lines, 855
        acknowledgments (``feeds/<supplier>/po_acks/855_*.x12``, ``world/po_acks``) and the
        OTIF answer key (``world/otif_truth``); one supplier starts to slip half-way through.
    """

    fault_rates: Mapping[str, float] | None = None
    supplier_formats: Mapping[str, Mapping[str, tuple[Format, ...]]] | None = None
    start_date: dt.date = dt.date(2026, 1, 5)
    days: int = 180
    ship_split: float = 0.15
    pack_split: float = 0.15
    invoice_split: float = 0.2
    invoice_line_split: float = 0.2
    pack_size_rate: float = 0.1
    receipts: bool = True
    batch_pos: int = 10_000
    x12_sets_per_file: int = 500
    export_rows_per_file: int = 200_000
    xml_max_files: int = 200
    xlsx_max_rows: int = 5_000
    items_per_supplier: int = 400
    performance: bool = False

    def __post_init__(self) -> None:
        for name in (
            "ship_split",
            "pack_split",
            "invoice_split",
            "invoice_line_split",
            "pack_size_rate",
        ):
            _fraction(name, getattr(self, name))
        for name in (
            "days",
            "batch_pos",
            "x12_sets_per_file",
            "export_rows_per_file",
            "xml_max_files",
            "xlsx_max_rows",
            "items_per_supplier",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigurationError(f"{name} must be a positive int, got {value!r}")
        rates = resolve_faults(self.fault_rates) if self.fault_rates is not None else DEFAULT_RATES
        object.__setattr__(self, "_frozen_rates", rates)


def resolve_faults(faults: str | Mapping[str, float]) -> Mapping[str, float]:
    """``"default"`` / ``"none"`` / a mapping -> a full fault -> rate mapping (validated)."""
    if isinstance(faults, str):
        if faults == "default":
            return DEFAULT_RATES
        if faults == "none":
            return MappingProxyType(dict.fromkeys(FAULTS, 0.0))
        raise ConfigurationError(
            f"faults={faults!r}: expected 'default', 'none' or a mapping fault -> rate"
        )
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown:
        raise ConfigurationError(
            f"unknown fault(s) {', '.join(unknown)}; expected names from {', '.join(FAULTS)}"
        )
    rates = {name: _fraction(f"rate of {name}", faults.get(name, 0.0)) for name in FAULTS}
    if sum(rates[f] for f in LINE_FAULTS) > 0.5:
        raise ConfigurationError("line fault rates add up to more than 0.5; lower them")
    if sum(rates[f] for f in DUPLICATE_FAULTS) > 0.5:
        raise ConfigurationError("duplicate fault rates add up to more than 0.5; lower them")
    return MappingProxyType(rates)


@dataclass(frozen=True)
class Supplier:
    """One trading partner: identity, export preset and X12 dialect."""

    index: int
    supplier_id: str
    name: str
    preset: str
    currency: str
    isa_qualifier: str
    isa_id: str
    element: str
    component: str
    terminator: str
    suffix: str
    line_width: int
    vp_first: bool
    sets_per_group: int
    n1_qualifier: str
    location: str
    #: Whether the supplier's 850s name it in an N1 loop; without one, the supplier is the
    #: interchange receiver (ISA08), whose ID is then the supplier_id itself.
    po_n1: bool
    #: Weekday (0 = Monday) of the supplier's weekly billing run, or None: invoices follow
    #: each shipment.
    billing_day: int | None


_NAMES: Final = (
    "ACME INDUSTRIAL SUPPLY",
    "GLOBEX COMPONENTS GMBH",
    "INITECH FASTENERS",
    "UMBRELLA PACKAGING",
    "STARK TOOLING",
    "WAYNE ELECTRICAL",
    "HOOLI LOGISTICS",
    "VANDELAY IMPORTS",
)
_PRESETS: Final = ("acme", "globex", "initech")
# X12 dialects seen in the wild: element / component separator, segment terminator and what
# follows it (ISA16 is the component separator; the terminator is the byte after ISA16).
_DIALECTS: Final = (
    ("*", ">", "~", "\n"),
    ("|", "^", "~", ""),
    ("*", ":", "\n", ""),
    ("*", ">", "~", "\r\n"),
)

BUYER_ISA: Final = ("ZZ", "SCFEEDSBUYER")


def make_supplier(index: int) -> Supplier:
    """The deterministic profile of supplier ``index`` (0-based)."""
    element, component, terminator, suffix = _DIALECTS[index % len(_DIALECTS)]
    number = index + 1
    name = _NAMES[index % len(_NAMES)]
    if index >= len(_NAMES):
        name = f"{name} {index // len(_NAMES) + 1}"
    preset = _PRESETS[index % len(_PRESETS)]
    po_n1 = index % 4 != 0
    if not po_n1:  # 850s name no supplier: the receiver ID must be the supplier's own
        isa = ("ZZ", f"SUP{number:03d}")
    elif index % 2 == 0:
        isa = ("ZZ", f"SUP{number:03d}EDI")
    else:  # a DUNS-like number, as many suppliers use
        isa = ("01", f"{(number * 104_729 + 61_414) % 1_000_000_000:09d}")
    return Supplier(
        index=index,
        supplier_id=f"SUP{number:03d}",
        name=name,
        preset=preset,
        currency="EUR" if preset == "globex" else "USD",
        isa_qualifier=isa[0],
        isa_id=isa[1],
        element=element,
        component=component,
        terminator=terminator,
        suffix=suffix,
        line_width=(0, 4, 0, 3)[index % 4],
        vp_first=index % 3 == 1,
        sets_per_group=(10_000, 100, 50, 10_000)[index % 4],
        n1_qualifier=("SU", "SE", "VN")[index % 3],
        location=f"DC{index % 3 + 1:02d}",
        po_n1=po_n1,
        billing_day=None if index % 2 == 0 else index % 5,
    )


def default_formats(index: int, formats: tuple[Format, ...]) -> dict[DocTable, tuple[Format, ...]]:
    """Formats per table for supplier ``index``: a rotation so every format is used."""
    out: dict[DocTable, tuple[Format, ...]] = {}
    n = len(formats)
    for t, table in enumerate(DOC_TABLES):
        first = formats[(index + t) % n]
        if index % 2 == 1 and n > 1:
            out[table] = (first, formats[(index + t + 1) % n])
        else:
            out[table] = (first,)
    return out
