"""Column-name presets for supplier portal exports (CSV / XLSX).

Each preset describes how one supplier portal writes its exports: dialect (delimiter,
encoding, decimal comma, thousands separator, date format) and, per canonical table, the
header the portal uses for each canonical column. ``scfeeds.synth`` writes exports with these
presets and ``scfeeds.scan_export`` reads them back, so the two never drift apart.

Provenance columns (``source``, ``position``, X12 controls) are never in an export: the reader
fills them. A canonical column missing from a preset's mapping is not exported by that portal
and is read back as null.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from scfeeds.schemas import TableName


@dataclass(frozen=True, kw_only=True)
class ExportPreset:
    """How one supplier portal writes its exports."""

    name: str
    delimiter: str = ","
    encoding: str = "utf-8"  # "utf-8", "utf-8-sig" (BOM) or "latin-1"
    decimal_comma: bool = False
    thousands: str | None = None
    date_format: str = "%Y-%m-%d"
    columns: Mapping[TableName, Mapping[str, str]] = field(default_factory=dict)

    def header(self, table: TableName) -> dict[str, str]:
        """Canonical column -> export header for ``table``."""
        return dict(self.columns[table])


ACME: Final = ExportPreset(
    name="acme",
    delimiter=",",
    encoding="utf-8",
    thousands=",",
    date_format="%m/%d/%Y",
    columns={
        "po_lines": {
            "supplier_id": "Vendor ID",
            "po_number": "PO Number",
            "po_date": "PO Date",
            "line_number": "Line",
            "item_id": "Item #",
            "description": "Description",
            "qty_ordered": "Qty Ordered",
            "uom": "UOM",
            "unit_price": "Unit Price",
            "currency": "Currency",
            "requested_date": "Need By",
        },
        "asn_lines": {
            "supplier_id": "Vendor ID",
            "shipment_id": "Shipment",
            "ship_date": "Ship Date",
            "po_number": "PO Number",
            "line_number": "Line",
            "item_id": "Item #",
            "qty_shipped": "Qty Shipped",
            "uom": "UOM",
            "pack_id": "Carton",
            "carrier": "Carrier",
            "tracking": "Tracking #",
        },
        "invoice_lines": {
            "supplier_id": "Vendor ID",
            "invoice_number": "Invoice #",
            "invoice_date": "Invoice Date",
            "po_number": "PO Number",
            "line_number": "Line",
            "item_id": "Item #",
            "qty_invoiced": "Qty Billed",
            "uom": "UOM",
            "unit_price": "Unit Price",
            "line_amount": "Extended Amount",
            "currency": "Currency",
        },
        "receipts": {
            "supplier_id": "Vendor ID",
            "po_number": "PO Number",
            "line_number": "Line",
            "item_id": "Item #",
            "qty_received": "Qty Received",
            "uom": "UOM",
            "receipt_date": "Received On",
            "location": "Dock",
        },
    },
)

GLOBEX: Final = ExportPreset(
    name="globex",
    delimiter=";",
    encoding="latin-1",
    decimal_comma=True,
    thousands=".",
    date_format="%d.%m.%Y",
    columns={
        "po_lines": {
            "supplier_id": "Lieferant",
            "po_number": "Bestellnummer",
            "po_date": "Bestelldatum",
            "line_number": "Pos",
            "item_id": "Artikelnummer",
            "description": "Bezeichnung",
            "qty_ordered": "Menge",
            "uom": "ME",
            "unit_price": "Preis",
            "currency": "Währung",
            "requested_date": "Wunschtermin",
        },
        "asn_lines": {
            "supplier_id": "Lieferant",
            "shipment_id": "Lieferschein",
            "ship_date": "Versanddatum",
            "po_number": "Bestellnummer",
            "line_number": "Pos",
            "item_id": "Artikelnummer",
            "qty_shipped": "Liefermenge",
            "uom": "ME",
            "pack_id": "Packstück",
            "carrier": "Spediteur",
            "tracking": "Sendungsnummer",
        },
        "invoice_lines": {
            "supplier_id": "Lieferant",
            "invoice_number": "Rechnungsnummer",
            "invoice_date": "Rechnungsdatum",
            "po_number": "Bestellnummer",
            "line_number": "Pos",
            "item_id": "Artikelnummer",
            "qty_invoiced": "Menge",
            "uom": "ME",
            "unit_price": "Preis",
            "line_amount": "Betrag",
            "currency": "Währung",
        },
        "receipts": {
            "supplier_id": "Lieferant",
            "po_number": "Bestellnummer",
            "line_number": "Pos",
            "item_id": "Artikelnummer",
            "qty_received": "Eingangsmenge",
            "uom": "ME",
            "receipt_date": "Eingangsdatum",
            "location": "Lagerort",
        },
    },
)

INITECH: Final = ExportPreset(
    name="initech",
    delimiter=",",
    encoding="utf-8-sig",
    date_format="%Y-%m-%d",
    columns={
        "po_lines": {
            "supplier_id": "supplier",
            "po_number": "po_no",
            "po_date": "po_dt",
            "line_number": "ln",
            "item_id": "sku",
            "description": "desc",
            "qty_ordered": "quantity",
            "uom": "unit",
            "unit_price": "price",
            "currency": "ccy",
            "requested_date": "need_by",
        },
        "asn_lines": {
            "supplier_id": "supplier",
            "shipment_id": "asn_no",
            "ship_date": "shipped",
            "po_number": "po_no",
            "line_number": "ln",
            "item_id": "sku",
            "qty_shipped": "quantity",
            "uom": "unit",
            "pack_id": "sscc",
            "carrier": "scac",
            "tracking": "pro_no",
        },
        "invoice_lines": {
            "supplier_id": "supplier",
            "invoice_number": "inv_no",
            "invoice_date": "inv_dt",
            "po_number": "po_no",
            "line_number": "ln",
            "item_id": "sku",
            "qty_invoiced": "quantity",
            "uom": "unit",
            "unit_price": "price",
            "line_amount": "amount",
            "currency": "ccy",
        },
        "receipts": {
            "supplier_id": "supplier",
            "po_number": "po_no",
            "line_number": "ln",
            "item_id": "sku",
            "qty_received": "quantity",
            "uom": "unit",
            "receipt_date": "received",
            "location": "warehouse",
        },
    },
)

PRESETS: Final[dict[str, ExportPreset]] = {p.name: p for p in (ACME, GLOBEX, INITECH)}
