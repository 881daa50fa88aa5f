"""cXML documents <-> canonical tables.

``to_cxml`` (``_write``) writes the rows of one purchase order, one ship notice or one invoice
as a cXML 1.2 document; ``scan_xml`` / ``read_xml`` (``_read``) read such documents back into
canonical frames, through the guarded expat parser of ``_expat`` (or, for a small document
a byte check clears, ElementTree's C parser); ``_confirm`` reads cXML
ConfirmationRequests into ``po_acks``; ``_shapes`` holds what reading and writing share.

Document shapes (cXML 1.2 DTD, only the elements scfeeds reads or needs for validity)::

    cXML[@payloadID, @timestamp]
      Header  From/Credential/Identity  To/Credential/Identity  Sender/Credential/Identity
              (the supplier is To for an OrderRequest, which the buyer sends; From for ship
              notices and invoices, which the supplier sends, else Sender; Sender alone may
              be a network hub, so it never outranks From / To)
      Request
        OrderRequest
          OrderRequestHeader[@orderID, @orderDate]
          ItemOut[@lineNumber, @quantity]                              <- one po_lines row
            ItemID/SupplierPartID
            ItemDetail/UnitPrice/Money[@currency], Description, UnitOfMeasure
        ShipNoticeRequest
          ShipNoticeHeader[@shipmentID, @shipmentDate]
          ShipControl/CarrierIdentifier[@domain="SCAC"], ShipControl/ShipmentIdentifier
          ShipNoticePortion                                            (one per PO)
            OrderReference[@orderID]
            ShipNoticeItem[@lineNumber, @quantity]                     <- one asn_lines row
              ItemID/SupplierPartID, UnitOfMeasure,
              Packaging/ShippingContainerSerialCode                    (pack_id, an SSCC)
        InvoiceDetailRequest
          InvoiceDetailRequestHeader[@invoiceID, @invoiceDate, @purpose]
                                          (purpose="creditMemo": quantities and amounts are
                                           read as negative, unit prices as positive)
          InvoiceDetailOrder                                           (one per PO)
            InvoiceDetailOrderInfo/OrderReference[@orderID]
            InvoiceDetailItem[@invoiceLineNumber, @quantity]           <- one invoice_lines row
              UnitOfMeasure, UnitPrice/Money[@currency],
              InvoiceDetailItemReference[@lineNumber]/ItemID/SupplierPartID,
              SubtotalAmount/Money[@currency]                          (line_amount; one
                                          that disagrees with quantity x unit price beyond a
                                          cent is an AMOUNT_MISMATCH error row, the item is
                                          not delivered)

``position`` of a row is the XPath of its item element, with a 1-based ``[n]`` index among
same-named siblings on the item and on its repeating container (and on any other step whose
index is above 1)::

    /cXML/Request/OrderRequest/ItemOut[3]
    /cXML/Request/ShipNoticeRequest/ShipNoticePortion[2]/ShipNoticeItem[1]
    /cXML/Request/InvoiceDetailRequest/InvoiceDetailOrder[1]/InvoiceDetailItem[4]

A null value is written as an absent attribute or element and read back as null; dates are
written as ``YYYY-MM-DDT00:00:00+00:00`` and read from their first ten characters (the
sender's local calendar date).
"""

from __future__ import annotations

from scfeeds._cxml._read import XMLResult, XMLWarning, read_many, read_xml, scan_xml
from scfeeds._cxml._shapes import BUYER_ID, REQUEST, TABLE_OF
from scfeeds._cxml._write import cxml_positions, to_cxml

__all__ = [
    "BUYER_ID",
    "REQUEST",
    "TABLE_OF",
    "XMLResult",
    "XMLWarning",
    "cxml_positions",
    "read_many",
    "read_xml",
    "scan_xml",
    "to_cxml",
]
