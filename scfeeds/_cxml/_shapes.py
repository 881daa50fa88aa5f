"""What reading and writing share: the cXML version, the request element of each table, the
item element (see the package docstring for the document shapes)."""

from __future__ import annotations

from typing import Final, NamedTuple

import polars as pl

from scfeeds.exceptions import ConfigurationError
from scfeeds.schemas import TableName

CXML_VERSION: Final = "1.2.063"
CXML_DOCTYPE: Final = (
    f'<!DOCTYPE cXML SYSTEM "http://xml.cxml.org/schemas/cXML/{CXML_VERSION}/cXML.dtd">'
)
_LANG: Final = ' xml:lang="en"'
BUYER_ID: Final = "SCFEEDS-BUYER"
"""Identity of the buying organisation in the documents ``to_cxml`` writes."""

REQUEST: Final[dict[TableName, str]] = {
    "po_lines": "OrderRequest",
    "asn_lines": "ShipNoticeRequest",
    "invoice_lines": "InvoiceDetailRequest",
}
"""cXML request element for each canonical table that cXML carries."""

# Columns that are one value per document (header level): they must not vary across rows.
_DOCUMENT_COLUMNS: Final[dict[TableName, tuple[str, ...]]] = {
    "po_lines": ("supplier_id", "po_number", "po_date"),
    "asn_lines": ("supplier_id", "shipment_id", "ship_date", "carrier", "tracking"),
    "invoice_lines": ("supplier_id", "invoice_number", "invoice_date"),
}
_CONTAINER: Final[dict[TableName, str]] = {
    "asn_lines": "ShipNoticePortion",
    "invoice_lines": "InvoiceDetailOrder",
}
_ITEM: Final[dict[TableName, str]] = {
    "po_lines": "ItemOut",
    "asn_lines": "ShipNoticeItem",
    "invoice_lines": "InvoiceDetailItem",
}


def _request(table: TableName) -> str:
    try:
        return REQUEST[table]
    except KeyError:
        raise ConfigurationError(
            f"cXML carries no {table!r}; expected one of {', '.join(REQUEST)}"
        ) from None


TABLE_OF: Final[dict[str, TableName]] = {v: k for k, v in REQUEST.items()}


class XMLResult(NamedTuple):
    """Rows read from cXML documents, and the problems met while reading them."""

    rows: pl.DataFrame
    errors: pl.DataFrame
