"""Canonical tables: one column set per document type, used by every parser.

The column names and dtypes here are the contract between readers (X12, CSV/XLSX, cXML),
validation, the lake and the match engine. Money and quantities are exact decimals.

Provenance columns come first in every table:

- ``source``: the file path or URL the row came from;
- ``position``: where in that source (``"segment 34"`` for X12, ``"row 12"`` for CSV/XLSX
  (1-based data row, header excluded), an XPath such as
  ``"/cXML/Request/InvoiceDetailRequest/InvoiceDetailOrder[2]/InvoiceDetailItem[1]"`` for XML);
- ``interchange_control``, ``group_control``, ``set_control``: ISA13 / GS06 / ST02 for X12,
  null otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import polars as pl

from scfeeds.exceptions import ConfigurationError

TableName = Literal["po_lines", "asn_lines", "invoice_lines", "receipts", "po_acks"]
# The tables the lake, validation and the portal know (every canonical table).
TABLES: Final[tuple[TableName, ...]] = (
    "po_lines",
    "asn_lines",
    "invoice_lines",
    "receipts",
    "po_acks",
)

QTY: Final = pl.Decimal(18, 4)
MONEY: Final = pl.Decimal(18, 4)

PROVENANCE: Final[dict[str, pl.DataType]] = {
    "source": pl.String(),
    "position": pl.String(),
    "interchange_control": pl.String(),
    "group_control": pl.String(),
    "set_control": pl.String(),
}

COLUMNS: Final[dict[TableName, dict[str, pl.DataType]]] = {
    "po_lines": {
        "supplier_id": pl.String(),
        "po_number": pl.String(),
        "po_date": pl.Date(),
        "line_number": pl.String(),
        "item_id": pl.String(),
        "description": pl.String(),
        "qty_ordered": QTY,
        "uom": pl.String(),
        "unit_price": MONEY,
        "currency": pl.String(),
        # last: readers that know no requested date leave it null (850 DTM*002, cXML
        # requestedDeliveryDate, an export column)
        "requested_date": pl.Date(),
    },
    "asn_lines": {
        "supplier_id": pl.String(),
        "shipment_id": pl.String(),
        "ship_date": pl.Date(),
        "po_number": pl.String(),
        "line_number": pl.String(),
        "item_id": pl.String(),
        "qty_shipped": QTY,
        "uom": pl.String(),
        "pack_id": pl.String(),
        "carrier": pl.String(),
        "tracking": pl.String(),
    },
    "invoice_lines": {
        "supplier_id": pl.String(),
        "invoice_number": pl.String(),
        "invoice_date": pl.Date(),
        "po_number": pl.String(),
        "line_number": pl.String(),
        "item_id": pl.String(),
        "qty_invoiced": QTY,
        "uom": pl.String(),
        "unit_price": MONEY,
        "line_amount": MONEY,
        "currency": pl.String(),
    },
    "receipts": {
        "supplier_id": pl.String(),
        "po_number": pl.String(),
        "line_number": pl.String(),
        "item_id": pl.String(),
        "qty_received": QTY,
        "uom": pl.String(),
        "receipt_date": pl.Date(),
        "location": pl.String(),
    },
    "po_acks": {
        "supplier_id": pl.String(),
        "po_number": pl.String(),
        "ack_date": pl.Date(),
        "line_number": pl.String(),
        "item_id": pl.String(),
        "ack_code": pl.String(),  # ACK01 as sent (X12 element 668)
        "ack_status": pl.String(),  # ack_code mapped: scfeeds._x12._ack855.ACK_STATUS
        "qty_acked": QTY,
        "uom": pl.String(),
        "unit_price": MONEY,
        "promised_date": pl.Date(),
        "date_qualifier": pl.String(),  # "067" delivery / "068" ship (X12 element 374)
    },
}


@dataclass(frozen=True, slots=True)
class TableSpec:
    """What the readers, the validation and the match know about one canonical table, in one
    place (the column dtypes are :data:`COLUMNS`)."""

    quantity: str
    """The line's quantity column (its sign rule: ``QTY_NOT_POSITIVE`` on PO and ASN lines,
    ``QTY_ZERO`` on invoices, where credit memos are negative, ``QTY_NEGATIVE`` on receipts
    and acknowledgments)."""
    date: str
    """The document date column (``DATE_OUT_OF_RANGE``)."""
    required: tuple[str, ...]
    """Columns that must be non-null and non-blank (validation rule ``REQUIRED``)."""
    key: tuple[str, ...]
    """Columns identifying a row within one source; a repeat is ``DUPLICATE_KEY``."""
    match: tuple[str, ...] = ()
    """Columns the three-way match reads from this table (empty: the match does not read it)."""
    export: tuple[str, ...] = ()
    """Columns a supplier export of this table must map (else ``MISSING_COLUMNS``); the others
    are read as null. Empty: no export preset exists for the table."""


SPECS: Final[dict[TableName, TableSpec]] = {
    "po_lines": TableSpec(
        quantity="qty_ordered",
        date="po_date",
        required=("supplier_id", "po_number", "po_date", "line_number", "item_id",
                  "qty_ordered", "uom", "unit_price"),
        key=("supplier_id", "po_number", "line_number"),
        match=("supplier_id", "po_number", "line_number", "item_id", "qty_ordered", "uom",
               "unit_price"),
        export=("po_number", "line_number", "item_id", "qty_ordered", "uom", "unit_price"),
    ),
    "asn_lines": TableSpec(
        quantity="qty_shipped",
        date="ship_date",
        required=("supplier_id", "shipment_id", "ship_date", "po_number", "item_id",
                  "qty_shipped", "uom"),
        key=("supplier_id", "shipment_id", "po_number", "line_number", "item_id", "pack_id"),
        match=("supplier_id", "shipment_id", "po_number", "line_number", "item_id",
               "qty_shipped", "uom"),
        # an ASN may carry no PO line numbers (856 without LIN line references)
        export=("shipment_id", "po_number", "item_id", "qty_shipped", "uom"),
    ),
    "invoice_lines": TableSpec(
        quantity="qty_invoiced",
        date="invoice_date",
        required=("supplier_id", "invoice_number", "invoice_date", "item_id", "qty_invoiced",
                  "uom", "unit_price"),
        key=("supplier_id", "invoice_number", "po_number", "line_number", "item_id"),
        match=("supplier_id", "invoice_number", "invoice_date", "po_number", "line_number",
               "item_id", "qty_invoiced", "uom", "unit_price", "line_amount"),
        export=("invoice_number", "po_number", "line_number", "item_id", "qty_invoiced", "uom",
                "unit_price"),
    ),
    "receipts": TableSpec(
        quantity="qty_received",
        date="receipt_date",
        required=("po_number", "line_number", "item_id", "qty_received", "uom",
                  "receipt_date"),
        # none: a receipt row is one (shipment, PO line), and the shipment is not a column;
        # two equal deliveries of a line on one day are two true rows
        key=(),
        match=("supplier_id", "po_number", "line_number", "item_id", "qty_received", "uom"),
        export=("po_number", "line_number", "item_id", "qty_received", "uom"),
    ),
    "po_acks": TableSpec(
        quantity="qty_acked",
        date="ack_date",
        # item_id may be null (an 855 may name the PO line only); ack_status is null when
        # neither ACK01 nor BAK02 says what happened to the line: such a row confirms nothing
        required=("supplier_id", "po_number", "ack_date", "line_number", "ack_status"),
        # none: one PO line may carry several ACKs of one code in one 855 (two backordered
        # quantities with two promised dates are two true rows)
        key=(),
    ),
}  # fmt: skip


#: The columns that say which exception a three-way match reports and on what: the first
#: columns of the match's exception rows and of the synthetic worlds' answer key.
EXCEPTION_KEY: Final[dict[str, pl.DataType]] = {
    "code": pl.String(),
    "level": pl.String(),
    "supplier_id": pl.String(),
    "po_number": pl.String(),
    "line_number": pl.String(),
    "item_id": pl.String(),
    "invoice_number": pl.String(),
    "shipment_id": pl.String(),
}


def schema(table: TableName) -> pl.Schema:
    """The full canonical schema of ``table``: provenance columns, then the table's own."""
    if table not in COLUMNS:
        raise ConfigurationError(f"unknown table {table!r}; expected one of {', '.join(TABLES)}")
    return pl.Schema({**PROVENANCE, **COLUMNS[table]})


def columns(table: TableName, *names: str) -> dict[str, pl.DataType]:
    """The canonical dtypes of some columns of ``table``, in the order named (for the schemas
    of frames derived from it, which then follow this one)."""
    full = schema(table)
    return {name: full[name] for name in names}


def empty(table: TableName) -> pl.DataFrame:
    """An empty frame with the canonical schema of ``table``."""
    return pl.DataFrame(schema=schema(table))


ERRORS: Final[dict[str, pl.DataType]] = {
    "source": pl.String(),
    "position": pl.String(),
    "rule": pl.String(),
    "message": pl.String(),
}
"""Columns of a reader's errors frame: one row per problem met while reading (a row that cannot
be parsed, a skipped totals row, a broken document), named by source, position and rule."""


def empty_errors() -> pl.DataFrame:
    """An empty errors frame (``ERRORS`` columns)."""
    return pl.DataFrame(schema=ERRORS)
