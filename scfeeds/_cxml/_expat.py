"""The guarded expat parser of the cXML readers: entity declarations refused (no XXE, no
entity expansion), no external DTD, and a tracker of the element path (XPath positions with
sibling indexes) and of the header values readers need. (Small documents that a byte check
shows to hold no entity declaration, namespace or NUL byte are read with ElementTree's C
parser instead: ``_read._tree_of``.)"""

from __future__ import annotations

from typing import Any, Final
from xml.parsers import expat as pyexpat

# Steps that always carry their [n] index in positions (they repeat in every real document).
_REPEATING: Final = frozenset(
    {"ItemOut", "ShipNoticePortion", "ShipNoticeItem", "InvoiceDetailOrder", "InvoiceDetailItem"}
)
_HEADER_ATTRS: Final = frozenset(
    {"OrderRequestHeader", "ShipNoticeHeader", "InvoiceDetailRequestHeader", "OrderReference"}
)


class _EntityRefused(Exception):
    """An entity declaration was met (XXE, billion laughs): the document is refused."""


class _Tracker:
    """Follows the element path with sibling indexes, and keeps header attributes."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.indexes: list[int] = []
        self.counts: list[dict[str, int]] = [{}]
        self.header: dict[str, dict[str, str]] = {}
        self.order_ref: str | None = None
        self.texts: dict[str, str | None] = {}
        self._text: list[str] | None = None

    def start(self, name: str, attrs: dict[str, str]) -> None:
        counts = self.counts[-1]
        counts[name] = counts.get(name, 0) + 1
        self.names.append(name)
        self.indexes.append(counts[name])
        self.counts.append({})
        if name in _CONTAINERS:
            self.order_ref = None
        if name in _TEXTS and name not in self.texts:
            self._text = []
        if name in _HEADER_ATTRS:
            self.header[name] = attrs
            if name == "OrderReference":
                self.order_ref = attrs.get("orderID")

    def characters(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)

    def end(self) -> None:
        if self._text is not None and self.names[-1] in _TEXTS:
            self.texts[self.names[-1]] = "".join(self._text).strip() or None
            self._text = None
        self.names.pop()
        self.indexes.pop()
        self.counts.pop()

    def xpath(self) -> str:
        steps = [
            f"{n}[{i}]" if n in _REPEATING or i > 1 else n
            for n, i in zip(self.names, self.indexes, strict=True)
        ]
        return "/" + "/".join(steps) if steps else "/"


_CONTAINERS: Final = frozenset({"ShipNoticePortion", "InvoiceDetailOrder"})
# Header-level text the tracker keeps itself (<CarrierIdentifier domain="SCAC">UPSN</...>),
# whatever the depth it appears at.
_TEXTS: Final = frozenset({"CarrierIdentifier", "ShipmentIdentifier"})


class _ParserProxy:
    """A guarded parser as xmltodict sees it: xmltodict sets its handlers as attributes, and
    its ``EntityDeclHandler`` is ignored so that ours stays (any ``<!ENTITY`` stops the
    parse)."""

    def __init__(self, parser: Any) -> None:
        object.__setattr__(self, "_parser", parser)

    def __setattr__(self, name: str, value: Any) -> None:
        if name != "EntityDeclHandler":
            setattr(self._parser, name, value)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)


class _GuardedExpat:
    """Stands in for the ``expat`` module that ``xmltodict.parse(expat=...)`` accepts: its
    parsers are :func:`guarded_parser` ones."""

    def ParserCreate(
        self, encoding: str | None = None, namespace_separator: str | None = None
    ) -> Any:
        return _ParserProxy(guarded_parser(encoding, namespace_separator))


def _txt(value: Any) -> str | None:
    """Text of an xmltodict value (str, {'#text': ...}, list of either, or None)."""
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, dict):
        value = value.get("#text")
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def guarded_parser(encoding: str | None = None, namespace_separator: str | None = None) -> Any:
    """A pyexpat parser that refuses any entity declaration (``_EntityRefused``: no XXE, no
    entity expansion; cXML never needs entities) and never reads an external DTD."""
    parser = pyexpat.ParserCreate(encoding, namespace_separator)

    def refuse(name: str, *_: Any) -> None:
        raise _EntityRefused(name)

    parser.EntityDeclHandler = refuse
    parser.SetParamEntityParsing(pyexpat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.buffer_text = True
    parser.buffer_size = 1 << 16
    return parser
