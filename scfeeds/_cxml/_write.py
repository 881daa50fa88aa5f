"""Writing: the rows of one purchase order, ship notice or invoice as a cXML 1.2 document."""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterator, Sequence
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import polars as pl

from scfeeds._cxml._shapes import (
    _CONTAINER,
    _DOCUMENT_COLUMNS,
    _ITEM,
    _LANG,
    BUYER_ID,
    CXML_DOCTYPE,
    _request,
)
from scfeeds.exceptions import ConfigurationError
from scfeeds.schemas import TableName


def _qty(value: decimal.Decimal) -> str:
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _money(value: decimal.Decimal) -> str:
    whole, _, frac = format(value, "f").partition(".")
    frac = frac.rstrip("0")
    return f"{whole}.{frac.ljust(2, '0')}"


def _date(value: dt.date) -> str:
    return f"{value.isoformat()}T00:00:00+00:00"


def _attrs(**values: str | None) -> str:
    return "".join(f" {k}={quoteattr(v)}" for k, v in values.items() if v is not None)


def _text(tag: str, value: str | None, attrs: str = "") -> str:
    if value is None:
        return ""
    return f"<{tag}{attrs}>{escape(value)}</{tag}>"


def _credential(identity: str | None) -> str:
    return (
        f'<Credential domain="NetworkID"><Identity>{escape(identity or "")}</Identity></Credential>'
    )


def _price(value: decimal.Decimal | None, currency: str | None) -> str:
    if value is None:
        # An empty Money still carries the currency of a line without a price.
        return f"<Money{_attrs(currency=currency)}/>" if currency is not None else ""
    return f"<Money{_attrs(currency=currency)}>{_money(value)}</Money>"


def _groups(frame: pl.DataFrame, table: TableName) -> list[tuple[str | None, list[int]]]:
    """Row indices grouped by PO, groups in order of first appearance, rows in frame order."""
    if table not in _CONTAINER:
        return [(None, list(range(frame.height)))]
    groups: dict[str | None, list[int]] = {}
    for i, po in enumerate(frame.get_column("po_number").to_list()):
        groups.setdefault(po, []).append(i)
    return list(groups.items())


def _document_values(frame: pl.DataFrame, table: TableName) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for col in _DOCUMENT_COLUMNS[table]:
        distinct = frame.get_column(col).unique(maintain_order=True).to_list()
        if len(distinct) > 1:
            raise ConfigurationError(
                f"a cXML {_request(table)} holds one {col}; rows carry {len(distinct)} "
                f"({', '.join(map(str, distinct[:3]))}...): split the frame per document"
            )
        values[col] = distinct[0] if distinct else None
    return values


def cxml_positions(frame: pl.DataFrame, *, table: TableName) -> pl.Series:
    """The ``position`` each row of ``frame`` gets in the document ``to_cxml`` writes.

    Aligned with ``frame`` (row i of the result is row i of the frame). ``to_cxml`` groups
    ship-notice and invoice rows by ``po_number`` (groups in order of first appearance), so
    rows of a PO that are not contiguous in ``frame`` come out contiguous in the document;
    sort the world by these positions' document order if you need the reader's row order.
    """
    request = _request(table)
    out: list[str] = [""] * frame.height
    item = _ITEM[table]
    for g, (_, rows) in enumerate(_groups(frame, table), start=1):
        prefix = f"/cXML/Request/{request}"
        if table in _CONTAINER:
            prefix += f"/{_CONTAINER[table]}[{g}]"
        for k, row in enumerate(rows, start=1):
            out[row] = f"{prefix}/{item}[{k}]"
    return pl.Series("position", out, dtype=pl.String)


def _po_items(rows: Sequence[dict[str, Any]]) -> Iterator[str]:
    for r in rows:
        desc = r["description"]
        attrs = _attrs(quantity=_none(r["qty_ordered"], _qty), lineNumber=r["line_number"])
        attrs += _attrs(requestedDeliveryDate=_none(r.get("requested_date"), _date))
        yield (
            f"<ItemOut{attrs}>"
            f"<ItemID>{_text('SupplierPartID', r['item_id'])}</ItemID>"
            "<ItemDetail>"
            f"<UnitPrice>{_price(r['unit_price'], r['currency'])}</UnitPrice>"
            f"{_text('Description', desc, _LANG)}"
            f"{_text('UnitOfMeasure', r['uom'])}"
            '<Classification domain="UNSPSC">00000000</Classification>'
            "</ItemDetail>"
            "</ItemOut>"
        )


def _none(value: Any, fmt: Any) -> str | None:
    return None if value is None else str(fmt(value))


def _order_reference(po: str | None) -> str:
    return f'<OrderReference{_attrs(orderID=po)}><DocumentReference payloadID=""/></OrderReference>'


def _order_request(frame: pl.DataFrame, doc: dict[str, Any]) -> str:
    rows = frame.to_dicts()
    total = None
    if rows and all(r["qty_ordered"] is not None and r["unit_price"] is not None for r in rows):
        total = sum((r["qty_ordered"] * r["unit_price"] for r in rows), decimal.Decimal(0))
    currency = next((r["currency"] for r in rows if r["currency"] is not None), None)
    date = _none(doc["po_date"], _date)
    header = (
        f'<OrderRequestHeader{_attrs(orderID=doc["po_number"], orderDate=date)} type="new">'
        + (f"<Total>{_price(total, currency)}</Total>" if total is not None else "")
        + "</OrderRequestHeader>"
    )
    return "<OrderRequest>" + header + "\n" + "\n".join(_po_items(rows)) + "\n</OrderRequest>"


def _ship_notice(frame: pl.DataFrame, doc: dict[str, Any]) -> str:
    date = _none(doc["ship_date"], _date)
    parts = [
        "<ShipNoticeRequest>",
        f"<ShipNoticeHeader{_attrs(shipmentID=doc['shipment_id'], operation='new')}"
        f"{_attrs(noticeDate=date, shipmentDate=date)}/>",
    ]
    if doc["carrier"] is not None or doc["tracking"] is not None:
        parts.append(
            "<ShipControl>"
            + _text("CarrierIdentifier", doc["carrier"], ' domain="SCAC"')
            + _text("ShipmentIdentifier", doc["tracking"])
            + "</ShipControl>"
        )
    rows = frame.to_dicts()
    for po, idx in _groups(frame, "asn_lines"):
        parts.append("<ShipNoticePortion>" + _order_reference(po))
        for i in idx:
            r = rows[i]
            pack = (
                "<Packaging>"
                '<PackagingCode xml:lang="en">Carton</PackagingCode>'
                f"{_text('ShippingContainerSerialCode', r['pack_id'])}"
                "</Packaging>"
                if r["pack_id"] is not None
                else ""
            )
            attrs = _attrs(quantity=_none(r["qty_shipped"], _qty), lineNumber=r["line_number"])
            parts.append(
                f"<ShipNoticeItem{attrs}>"
                f"<ItemID>{_text('SupplierPartID', r['item_id'])}</ItemID>"
                f"{_text('UnitOfMeasure', r['uom'])}{pack}</ShipNoticeItem>"
            )
        parts.append("</ShipNoticePortion>")
    parts.append("</ShipNoticeRequest>")
    return "\n".join(parts)


def _invoice(frame: pl.DataFrame, doc: dict[str, Any]) -> str:
    date = _none(doc["invoice_date"], _date)
    # A document whose every quantity is negative is a credit memo (its amounts as given).
    qtys = frame["qty_invoiced"].drop_nulls()
    purpose = "creditMemo" if qtys.len() and bool((qtys < 0).all()) else "standard"
    parts = [
        "<InvoiceDetailRequest>",
        f"<InvoiceDetailRequestHeader{_attrs(invoiceID=doc['invoice_number'])}"
        f' purpose="{purpose}" operation="new"{_attrs(invoiceDate=date)}>'
        "<InvoiceDetailHeaderIndicator/><InvoiceDetailLineIndicator/>"
        "</InvoiceDetailRequestHeader>",
    ]
    rows = frame.to_dicts()
    line = 0
    for po, idx in _groups(frame, "invoice_lines"):
        parts.append(
            "<InvoiceDetailOrder><InvoiceDetailOrderInfo>"
            + _order_reference(po)
            + "</InvoiceDetailOrderInfo>"
        )
        for i in idx:
            r = rows[i]
            line += 1
            attrs = _attrs(invoiceLineNumber=str(line), quantity=_none(r["qty_invoiced"], _qty))
            parts.append(
                f"<InvoiceDetailItem{attrs}>"
                f"{_text('UnitOfMeasure', r['uom'])}"
                f"<UnitPrice>{_price(r['unit_price'], r['currency'])}</UnitPrice>"
                f"<InvoiceDetailItemReference{_attrs(lineNumber=r['line_number'])}>"
                f"<ItemID>{_text('SupplierPartID', r['item_id'])}</ItemID>"
                "</InvoiceDetailItemReference>"
                + (
                    f"<SubtotalAmount>{_price(r['line_amount'], r['currency'])}</SubtotalAmount>"
                    if r["line_amount"] is not None
                    else ""
                )
                + "</InvoiceDetailItem>"
            )
        parts.append("</InvoiceDetailOrder>")
    amounts = [r["line_amount"] for r in rows]
    currency = next((r["currency"] for r in rows if r["currency"] is not None), None)
    if rows and all(a is not None for a in amounts):
        subtotal = sum(amounts, decimal.Decimal(0))
        parts.append(
            "<InvoiceDetailSummary>"
            f"<SubtotalAmount>{_price(subtotal, currency)}</SubtotalAmount>"
            f"<Tax>{_price(decimal.Decimal(0), currency)}"
            '<Description xml:lang="en">No tax</Description></Tax>'
            f"<NetAmount>{_price(subtotal, currency)}</NetAmount>"
            "</InvoiceDetailSummary>"
        )
    parts.append("</InvoiceDetailRequest>")
    return "\n".join(parts)


def to_cxml(frame: pl.DataFrame, *, table: TableName, payload_id: str, timestamp: str) -> bytes:
    """Write the rows of one document as a cXML 1.2 document (UTF-8 bytes).

    Parameters
    ----------
    frame
        Canonical rows of one purchase order (``po_lines``: one supplier, po_number and
        po_date), one ship notice (``asn_lines``: one shipment_id, ship_date, carrier and
        tracking; may span several POs) or one invoice (``invoice_lines``: one invoice_number
        and invoice_date; may span several POs). Provenance columns are ignored.
    table
        ``"po_lines"``, ``"asn_lines"`` or ``"invoice_lines"``.
    payload_id, timestamp
        The cXML envelope's ``payloadID`` (unique per document, e.g.
        ``"1700000000.123@supplier.example"``) and ``timestamp`` (ISO 8601).

    Returns
    -------
    bytes
        The document. Ship-notice and invoice rows are grouped by ``po_number`` (one
        ``ShipNoticePortion`` / ``InvoiceDetailOrder`` per PO, in order of first appearance);
        :func:`cxml_positions` gives each row's XPath. Invoice ``invoiceLineNumber`` counts
        1..n over the document; the PO line is ``InvoiceDetailItemReference/@lineNumber``.

    Raises
    ------
    ConfigurationError
        A header-level column (see above) varies across rows, or ``table`` is not carried by
        cXML.

    Examples
    --------
    >>> import datetime, decimal
    >>> from scfeeds.schemas import empty
    >>> po = pl.concat([empty("po_lines"), pl.DataFrame({
    ...     "supplier_id": ["SUP001"], "po_number": ["4500001"],
    ...     "po_date": [datetime.date(2026, 1, 15)], "line_number": ["1"],
    ...     "item_id": ["SKU-1"], "description": ["Widget"],
    ...     "qty_ordered": [decimal.Decimal("12")], "uom": ["EA"],
    ...     "unit_price": [decimal.Decimal("2.5")], "currency": ["USD"],
    ... })], how="diagonal_relaxed")
    >>> doc = to_cxml(po, table="po_lines", payload_id="1@x", timestamp="2026-01-15T08:00:00Z")
    >>> b'<ItemOut quantity="12" lineNumber="1">' in doc
    True
    """
    request = _request(table)
    doc = _document_values(frame, table)
    supplier = doc["supplier_id"]
    # The buyer sends the order, the supplier sends ship notices and invoices.
    sender, receiver = (BUYER_ID, supplier) if request == "OrderRequest" else (supplier, BUYER_ID)
    if request == "OrderRequest":
        body = _order_request(frame, doc)
    elif request == "ShipNoticeRequest":
        body = _ship_notice(frame, doc)
    else:
        body = _invoice(frame, doc)
    text = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"{CXML_DOCTYPE}\n"
        f'<cXML{_attrs(payloadID=payload_id, timestamp=timestamp)} xml:lang="en-US">'
        "<Header>"
        f"<From>{_credential(sender)}</From>"
        f"<To>{_credential(receiver)}</To>"
        f"<Sender>{_credential(sender)}<UserAgent>scfeeds</UserAgent></Sender>"
        "</Header>"
        f'<Request deploymentMode="production">{body}</Request>'
        "</cXML>\n"
    )
    return text.encode("utf-8")
