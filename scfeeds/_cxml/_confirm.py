"""cXML ConfirmationRequest (the cXML counterpart of the 855) to ``po_acks``.

::

    cXML/Header/From/Credential/Identity                               supplier_id
    cXML/Request/ConfirmationRequest
      ConfirmationHeader[@type, @noticeDate]                            ack_date, header type
      OrderReference[@orderID]                                          po_number
      ConfirmationItem[@lineNumber, @quantity]/UnitOfMeasure            one item of the PO
        ConfirmationStatus[@type, @quantity, @deliveryDate, @shipmentDate]   <- one po_acks row
          UnitOfMeasure, ItemIn/ItemID/SupplierPartID, ItemIn/ItemDetail/UnitPrice/Money

``ack_code`` is the status type as sent (the header's when an item has no status);
``ack_status``: ``accept`` -> accepted, ``detail`` / ``allDetail`` / ``except`` -> changed,
``backordered`` -> backordered, ``reject`` -> rejected, anything else unknown. The promised
date is ``deliveryDate`` (``date_qualifier`` ``"067"``, as X12 DTM*067) or else
``shipmentDate`` (``"068"``). ``position`` is the XPath of the ConfirmationStatus (of the
ConfirmationItem when it has none). Documents are small: each is parsed whole.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Final, Literal, overload

import polars as pl
import xmltodict

from scfeeds._cxml._expat import _EntityRefused, _GuardedExpat
from scfeeds._cxml._expat import _txt as _text
from scfeeds._cxml._shapes import XMLResult
from scfeeds._sources import resolve_sources
from scfeeds.exceptions import XMLError, XMLWarning
from scfeeds.schemas import empty, empty_errors, schema

STATUS: Final[dict[str, str]] = {
    "accept": "accepted",
    "detail": "changed",
    "allDetail": "changed",
    "except": "changed",
    "backordered": "backordered",
    "reject": "rejected",
}
_BASE: Final = "/cXML/Request/ConfirmationRequest"


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _attr(node: Any, name: str) -> str | None:
    return _text(node.get(f"@{name}")) if isinstance(node, dict) else None


def _get(node: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
        if isinstance(node, list):
            node = node[0] if node else None
    return node


def _document(data: bytes, name: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Text rows and error rows of one document."""

    def error(position: str, rule: str, message: str) -> dict[str, Any]:
        return {"source": name, "position": position, "rule": rule, "message": message}

    # the guarded parser of the cXML readers: any <!ENTITY declaration stops the parse,
    # whatever the document's encoding
    try:
        doc = xmltodict.parse(data, expat=_GuardedExpat(), disable_entities=True)
    except _EntityRefused:
        return [], [error("/", "XML_ENTITY", "entity declarations are refused")]
    except Exception as exc:  # expat's ExpatError, or a decoding error: the document is bad
        return [], [error("/", "XML_SYNTAX", f"not well-formed XML: {exc}")]
    request = _get(doc, "cXML", "Request", "ConfirmationRequest")
    if not isinstance(request, dict):
        rule = "XML_NOT_CXML" if not isinstance(_get(doc, "cXML"), dict) else "XML_WRONG_DOCUMENT"
        return [], [error("/cXML", rule, "not a cXML ConfirmationRequest")]
    head = _get(request, "ConfirmationHeader")
    header_type = _attr(head, "type")
    notice = _attr(head, "noticeDate")
    supplier = _text(_get(doc, "cXML", "Header", "From", "Credential", "Identity"))
    po_number = _attr(_get(request, "OrderReference"), "orderID")
    rows: list[dict[str, Any]] = []
    for i, item in enumerate(_list(request.get("ConfirmationItem")), start=1):
        item_path = f"{_BASE}/ConfirmationItem[{i}]"
        statuses = _list(item.get("ConfirmationStatus")) if isinstance(item, dict) else []
        for j, status in enumerate(statuses or [None], start=1):
            item_in = _get(status, "ItemIn")
            delivery, ship = _attr(status, "deliveryDate"), _attr(status, "shipmentDate")
            rows.append(
                {
                    "source": name,
                    "position": f"{item_path}/ConfirmationStatus[{j}]" if status else item_path,
                    "supplier_id": supplier,
                    "po_number": po_number,
                    "ack_date": notice,
                    "line_number": _attr(item, "lineNumber"),
                    "item_id": _text(_get(item_in, "ItemID", "SupplierPartID")),
                    "ack_code": _attr(status, "type") or header_type,
                    "qty_acked": _attr(status, "quantity") or _attr(item, "quantity"),
                    "uom": _text(_get(status, "UnitOfMeasure"))
                    or _text(_get(item, "UnitOfMeasure")),
                    "unit_price": _text(_get(item_in, "ItemDetail", "UnitPrice", "Money")),
                    "promised_date": delivery or ship,
                    "date_qualifier": "067" if delivery else ("068" if ship else None),
                }
            )
    return rows, []


def _typed(text: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Text rows -> canonical rows; a value that does not parse drops its row (an error row)."""
    sch = schema("po_acks")
    c = pl.col
    exprs: dict[str, pl.Expr] = {}
    checks: list[tuple[str, pl.Expr]] = []
    for col in ("ack_date", "promised_date"):
        exprs[col] = c(col).str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False)
        checks.append((col, c(col).is_not_null() & exprs[col].is_null()))
    for col in ("qty_acked", "unit_price"):
        ok = c(col).str.contains(r"^[+-]?(\d+\.?\d*|\.\d+)$")
        exprs[col] = pl.when(ok).then(c(col)).cast(sch[col], strict=False)
        checks.append((col, c(col).is_not_null() & exprs[col].is_null()))
    exprs["line_number"] = c("line_number").str.replace(r"^0+(\d)", "${1}")
    exprs["uom"] = c("uom").str.to_uppercase()
    exprs["ack_status"] = c("ack_code").replace_strict(
        STATUS, default="unknown", return_dtype=pl.String
    )
    bad = pl.any_horizontal([cond for _, cond in checks])
    which = pl.coalesce([pl.when(cond).then(pl.lit(col)) for col, cond in checks])
    typed = text.with_columns(_bad=bad, _which=which, **{f"_{k}": v for k, v in exprs.items()})
    errors = typed.filter(c("_bad")).select(
        "source",
        "position",
        rule=pl.when(c("_which").is_in(["ack_date", "promised_date"]))
        .then(pl.lit("BAD_DATE"))
        .otherwise(pl.lit("BAD_NUMBER")),
        message=pl.format("{} does not parse", c("_which")),
    )
    rows = typed.filter(~c("_bad")).select(
        [
            (c(f"_{n}") if n in exprs else c(n) if n in text.columns else pl.lit(None))
            .cast(d)
            .alias(n)
            for n, d in sch.items()
        ]
    )
    return rows, errors


@overload
def read_confirmations(
    source: str | Path | list[str | Path], *, errors: Literal["warn", "raise"] = ...
) -> pl.DataFrame: ...
@overload
def read_confirmations(
    source: str | Path | list[str | Path], *, errors: Literal["collect"]
) -> tuple[pl.DataFrame, pl.DataFrame]: ...
def read_confirmations(
    source: str | Path | list[str | Path],
    *,
    errors: Literal["warn", "raise", "collect"] = "warn",
) -> pl.DataFrame | tuple[pl.DataFrame, pl.DataFrame]:
    """``po_acks`` rows from cXML ConfirmationRequests (``read_xml(..., table="po_acks")``)."""
    text_rows: list[dict[str, Any]] = []
    problems: list[dict[str, Any]] = []
    for path, name in resolve_sources(source):
        got, bad = _document(path.read_bytes(), name)
        text_rows += got
        problems += bad
    text_schema = {k: pl.String() for k in schema("po_acks") if k != "ack_status"}
    text = pl.DataFrame(text_rows or None, schema=text_schema)
    rows, typed_errors = _typed(text)
    err = pl.concat(
        [empty_errors(), pl.DataFrame(problems, schema=empty_errors().schema), typed_errors],
        how="vertical",
    )
    if errors == "collect":
        return XMLResult(pl.concat([empty("po_acks"), rows]), err)
    if err.height:
        first = err.row(0, named=True)
        if errors == "raise":
            raise XMLError(
                first["message"], source=first["source"], position=first["position"],
                rule=first["rule"],
            )  # fmt: skip
        warnings.warn(
            f"{err.height} problem(s) reading cXML confirmations (first: {first['source']} "
            f"{first['position']}: {first['rule']}); read_xml(..., errors='collect') returns them",
            XMLWarning,
            stacklevel=3,
        )
    return pl.concat([empty("po_acks"), rows])


__all__ = ["STATUS", "read_confirmations"]
