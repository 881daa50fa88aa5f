"""Reading: cXML documents into canonical rows and error rows, small documents through
ElementTree's C tree, others streamed through the guarded expat parser (``_expat``)."""

from __future__ import annotations

import decimal
import queue
import re
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias, overload
from xml.etree import ElementTree as ET
from xml.parsers import expat as pyexpat

import polars as pl

from scfeeds._cxml._confirm import read_confirmations
from scfeeds._cxml._expat import (
    _CONTAINERS,
    _HEADER_ATTRS,
    _REPEATING,
    _TEXTS,
    _EntityRefused,
    _Tracker,
    guarded_parser,
)
from scfeeds._cxml._shapes import _ITEM, TABLE_OF, XMLResult, _request
from scfeeds._iosource import Pushdown, scan_batches
from scfeeds._sources import resolve_sources
from scfeeds.exceptions import ConfigurationError, XMLError, XMLWarning
from scfeeds.schemas import COLUMNS, ERRORS, TableName, empty, empty_errors, schema

ErrorMode = Literal["warn", "raise", "collect"]


# Depth (1 = cXML) of the item elements, each one row, forgotten once read: the
# ItemOut of an order sits one level higher than the items inside a ShipNoticePortion or an
# InvoiceDetailOrder. Elements above this depth are tiny (header, references).
_ITEM_DEPTH: Final[dict[TableName, int]] = {"po_lines": 4, "asn_lines": 5, "invoice_lines": 5}
_SNIFF_RE: Final = re.compile(
    rb"<(?:\w+:)?(OrderRequest|ShipNoticeRequest|InvoiceDetailRequest)[\s/>]"
)
_SNIFF_LIMIT: Final = 1 << 20
_FLUSH_ROWS: Final = 10_000
# Documents up to this size are parsed in the calling thread (a thread per document cost
# more than parsing a small one); larger ones stream through a worker thread.
_INLINE_BYTES: Final = 256 * 1024

# Text columns read per item, per table (document-level columns are added per document).
_ITEM_COLUMNS: Final[dict[TableName, tuple[str, ...]]] = {
    "po_lines": (
        "po_number",
        "line_number",
        "item_id",
        "description",
        "qty_ordered",
        "uom",
        "unit_price",
        "currency",
        "requested_date",
    ),
    "asn_lines": ("po_number", "line_number", "item_id", "qty_shipped", "uom", "pack_id"),
    "invoice_lines": (
        "po_number",
        "line_number",
        "item_id",
        "qty_invoiced",
        "uom",
        "unit_price",
        "line_amount",
        "currency",
    ),
}


# Per table, below the item element: the paths (element names under the item) whose text
# fills a column (the first such element wins, like a reader taking the first of a list),
# and the attributes read from the item itself or a descendant.
_ITEM_TEXTS: Final[dict[TableName, dict[tuple[str, ...], str]]] = {
    "po_lines": {
        ("ItemID", "SupplierPartID"): "item_id",
        ("ItemDetail", "Description"): "description",
        ("ItemDetail", "UnitOfMeasure"): "uom",
        ("ItemDetail", "UnitPrice", "Money"): "unit_price",
    },
    "asn_lines": {
        ("ItemID", "SupplierPartID"): "item_id",
        ("UnitOfMeasure",): "uom",
        # the SSCC of the first Packaging that has one (a pallet level often comes first)
        ("Packaging", "ShippingContainerSerialCode"): "pack_id",
    },
    "invoice_lines": {
        ("InvoiceDetailItemReference", "ItemID", "SupplierPartID"): "item_id",
        ("UnitOfMeasure",): "uom",
        ("UnitPrice", "Money"): "unit_price",
        ("SubtotalAmount", "Money"): "line_amount",
    },
}
_ITEM_ATTRS: Final[dict[TableName, dict[tuple[str, ...], tuple[tuple[str, str], ...]]]] = {
    "po_lines": {
        (): (
            ("lineNumber", "line_number"),
            ("quantity", "qty_ordered"),
            ("requestedDeliveryDate", "requested_date"),
        ),
        ("ItemDetail", "UnitPrice", "Money"): (("currency", "currency"),),
    },
    "asn_lines": {(): (("lineNumber", "line_number"), ("quantity", "qty_shipped"))},
    "invoice_lines": {
        (): (("quantity", "qty_invoiced"),),
        ("InvoiceDetailItemReference",): (("lineNumber", "line_number"),),
        ("UnitPrice", "Money"): (("currency", "currency"),),
        ("SubtotalAmount", "Money"): (("currency", "_amount_currency"),),
    },
}
_NON_EMPTY: Final = frozenset({"pack_id"})  # columns that take the first non-empty value


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    return value.strip() or None


class _Stop(Exception):
    """The consumer of a streamed document is gone: stop parsing."""


class _Document:
    """Streams one cXML file into rows of one table: expat's handlers build the rows
    directly (no tree, no dict per item), one pass per document."""

    def __init__(self, source: str, table: TableName) -> None:
        self.source = source
        self.table = table
        self.tracker = _Tracker()
        self.parties: dict[str, str | None] = {}
        self.columns: dict[str, list[str | None]] = {
            c: [] for c in ("position", *_ITEM_COLUMNS[table])
        }
        self.item = _ITEM[table]
        self.item_depth = _ITEM_DEPTH[table]
        self.texts = _ITEM_TEXTS[table]
        self.attrs = _ITEM_ATTRS[table]
        self.values: dict[str, str | None] | None = None  # of the item being read
        self.position = ""
        self.buffers: list[list[str] | None] = []  # per open element: its text, if wanted
        self.on_row: Callable[[], None] | None = None

    # -- expat handlers ------------------------------------------------------------------

    def start(self, name: str, attrs: dict[str, str]) -> None:
        tracker = self.tracker
        tracker.start(name, attrs)
        names = tracker.names
        depth = len(names)
        buffer: list[str] | None = None
        if self.values is not None:
            rel = tuple(names[self.item_depth :])
            wanted = self.attrs.get(rel)
            if wanted:
                self._attrs(attrs, wanted)
            if rel in self.texts:
                buffer = []
        elif depth == self.item_depth and name == self.item:
            self.values = {}
            self.position = tracker.xpath()
            self._attrs(attrs, self.attrs[()])
        elif depth == 5 and name == "Identity" and names[1] == "Header":
            buffer = [] if names[3] == "Credential" else None
        self.buffers.append(buffer)

    def characters(self, data: str) -> None:
        self.tracker.characters(data)
        buffer = self.buffers[-1] if self.buffers else None
        if buffer is not None:
            buffer.append(data)

    def end(self, name: str) -> None:
        tracker = self.tracker
        names = tracker.names
        depth = len(names)
        buffer = self.buffers.pop()
        values = self.values
        if buffer is not None:
            text = _clean("".join(buffer))
            if values is None:  # a party's Identity: the first Credential of each party
                self.parties.setdefault(names[2], text)
            else:
                col = self.texts[tuple(names[self.item_depth :])]
                if col not in values or (col in _NON_EMPTY and values[col] is None):
                    values[col] = text
        if values is not None and depth == self.item_depth:
            self._row(values)
            self.values = None
        tracker.end()

    def _attrs(self, attrs: dict[str, str], wanted: tuple[tuple[str, str], ...]) -> None:
        values = self.values
        assert values is not None
        for attr, col in wanted:
            if col not in values:
                values[col] = _clean(attrs.get(attr))

    def _row(self, values: dict[str, str | None]) -> None:
        cols = self.columns
        cols["position"].append(self.position)
        if self.table == "po_lines":
            order = self.tracker.header.get("OrderRequestHeader", {}).get("orderID")
            values["po_number"] = _clean(order)
        else:
            values["po_number"] = _clean(self.tracker.order_ref)
        if self.table == "invoice_lines" and values.get("currency") is None:
            values["currency"] = values.get("_amount_currency")
        for col in _ITEM_COLUMNS[self.table]:
            cols[col].append(values.get(col))
        if self.on_row is not None:
            self.on_row()

    # -- results -------------------------------------------------------------------------

    def document_values(self) -> dict[str, str | None]:
        head = self.tracker.header
        # The buyer sends the order (supplier = To); the supplier sends notices and invoices
        # (From, else Sender: Sender may be a network hub relaying for From, never the buyer).
        if self.table == "po_lines":
            supplier = self.parties.get("To")
        else:
            supplier = self.parties.get("From") or self.parties.get("Sender")
        if self.table == "po_lines":
            return {
                "supplier_id": supplier,
                "po_date": head.get("OrderRequestHeader", {}).get("orderDate"),
            }
        if self.table == "asn_lines":
            h = head.get("ShipNoticeHeader", {})
            return {
                "supplier_id": supplier,
                "shipment_id": h.get("shipmentID"),
                "ship_date": h.get("shipmentDate") or h.get("noticeDate"),
                "carrier": self.tracker.texts.get("CarrierIdentifier"),
                "tracking": self.tracker.texts.get("ShipmentIdentifier"),
            }
        h = head.get("InvoiceDetailRequestHeader", {})
        return {
            "supplier_id": supplier,
            "invoice_number": h.get("invoiceID"),
            "invoice_date": h.get("invoiceDate"),
            "purpose": h.get("purpose"),
        }

    def take(self) -> pl.DataFrame:
        """The text rows gathered so far (and forget them)."""
        frame = pl.DataFrame(self.columns, schema=dict.fromkeys(self.columns, pl.String))
        for values in self.columns.values():
            values.clear()
        return frame


def _typed(text: pl.DataFrame, doc: _Document) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Text rows of one document -> (canonical rows, error rows for values that do not parse)."""
    return _typed_rows(text, doc.table, doc.document_values(), doc.source)


def _typed_columns(
    text: pl.DataFrame, table: TableName, consts: dict[str, str | None]
) -> tuple[list[pl.Expr], list[tuple[pl.Expr, str, pl.Expr]]]:
    """Each canonical column typed from its text, and per typed column (bad value, rule,
    message) for values that do not parse."""
    exprs: list[pl.Expr] = []
    problems: list[tuple[pl.Expr, str, pl.Expr]] = []
    for col, dtype in COLUMNS[table].items():
        if col in text.columns:
            raw = pl.col(col).str.strip_chars()
        else:
            value = consts.get(col)
            raw = pl.lit(value.strip() if value else None, dtype=pl.String)
        raw = pl.when(raw.str.len_chars() > 0).then(raw)
        if dtype == pl.Date:
            value_e = raw.str.slice(0, 10).str.strptime(pl.Date, "%Y-%m-%d", strict=False)
            rule, what = "BAD_DATE", "an ISO 8601 date"
        elif isinstance(dtype, pl.Decimal):
            ok = raw.str.contains(r"^[+-]?(\d+\.?\d*|\.\d+)$")
            value_e = pl.when(ok).then(raw).cast(dtype, strict=False)
            rule, what = "BAD_NUMBER", "a number"
        else:
            if col == "line_number":
                raw = raw.str.replace(r"^0+(\d)", "${1}")
            elif col in ("uom", "currency"):
                raw = raw.str.to_uppercase()
            exprs.append(raw.alias(col))
            continue
        exprs.append(value_e.alias(col))
        problems.append(
            (
                raw.is_not_null() & value_e.is_null(),
                rule,
                pl.concat_str(pl.lit(f"{col}: '"), raw, pl.lit(f"' is not {what}")),
            )
        )
    return exprs, problems


def _typed_rows(
    text: pl.DataFrame,
    table: TableName,
    consts: dict[str, str | None],
    source: str | None,
    *,
    carry: tuple[str, ...] = (),
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Text rows -> typed rows and error rows. Document-level values come from ``consts`` or,
    for rows of many documents, from columns of ``text`` (as does ``source`` when None)."""
    exprs, problems = _typed_columns(text, table, consts)
    rule_e: Any = pl.lit(None, dtype=pl.String)
    if problems:
        chain: Any = pl.when(problems[0][0]).then(pl.lit(problems[0][1]))
        for bad, r, _ in problems[1:]:
            chain = chain.when(bad).then(pl.lit(r))
        rule_e = chain
    message = pl.concat_str(
        [pl.when(b).then(m) for b, _, m in problems], separator="; ", ignore_nulls=True
    )
    # an invoice's purpose (creditMemo ...) is per document: a constant, or a column of the
    # rows of many documents typed together
    purpose = (
        (pl.col("_purpose") if "_purpose" in text.columns else pl.lit(consts.get("purpose")))
        .cast(pl.String)
        .str.strip_chars()
        .eq("creditMemo")
        .fill_null(False)
        .alias("_credit")
    )
    frame = text.select(
        pl.col("source") if source is None else pl.lit(source, dtype=pl.String).alias("source"),
        pl.col("position"),
        *[
            pl.lit(None, dtype=pl.String).alias(c)
            for c in ("interchange_control", "group_control", "set_control")
        ],
        *exprs,
        rule_e.alias("_rule"),
        message.alias("_message"),
        *carry,
        *([purpose] if table == "invoice_lines" else []),
    )
    if table == "invoice_lines":
        frame = _invoice_amounts(frame)
    good = frame.filter(pl.col("_rule").is_null()).select(list(schema(table)))
    rejected = frame.filter(pl.col("_rule").is_not_null()).select(
        "source",
        "position",
        pl.col("_rule").alias("rule"),
        pl.format("{}: {}: {}", "source", "position", "_message").alias("message"),
        *carry,
    )
    return good, rejected


_CENT: Final = decimal.Decimal("0.01")


def _invoice_amounts(frame: pl.DataFrame) -> pl.DataFrame:
    """Credit memos (``_credit``) read with their sign; a SubtotalAmount that disagrees with
    quantity x unit price beyond a cent is an ``AMOUNT_MISMATCH`` (neither figure is taken
    silently)."""
    qty, price, amount = pl.col("qty_invoiced"), pl.col("unit_price"), pl.col("line_amount")
    credit = pl.col("_credit")
    # cXML credit memos carry negative amounts; senders differ on the quantity's sign
    frame = frame.with_columns(
        qty_invoiced=pl.when(credit).then(-qty.abs()).otherwise(qty),
        unit_price=pl.when(credit).then(price.abs()).otherwise(price),
        line_amount=pl.when(credit).then(-amount.abs()).otherwise(amount),
    )
    expected = qty * price
    off = pl.col("_rule").is_null() & (
        (amount - expected).abs() > pl.lit(_CENT, dtype=pl.Decimal(18, 4))
    ).fill_null(False)
    return frame.with_columns(
        _rule=pl.when(off).then(pl.lit("AMOUNT_MISMATCH")).otherwise(pl.col("_rule")),
        _message=pl.when(off)
        .then(
            pl.format(
                "SubtotalAmount {} != quantity {} x unit price {} = {} (beyond one cent)",
                amount.cast(pl.String),
                qty.cast(pl.String),
                price.cast(pl.String),
                expected.cast(pl.String),
            )
        )
        .otherwise(pl.col("_message")),
    )


def _sniff(path: Path) -> str | None:
    """The cXML request element of a file (``OrderRequest`` ...), from its first bytes."""
    with path.open("rb") as fh:
        head = b""
        while len(head) < _SNIFF_LIMIT:
            chunk = fh.read(1 << 16)
            if not chunk:
                break
            head += chunk
            found = _SNIFF_RE.search(head)
            if found:
                return found.group(1).decode()
    return None


def _error_row(source: str, position: str, rule: str, message: str) -> pl.DataFrame:
    return pl.DataFrame([(source, position, rule, message)], schema=ERRORS, orient="row")


def _run_parse(
    path: Path,
    doc: _Document,
    emit: Callable[[tuple[pl.DataFrame, pl.DataFrame]], bool],
    *,
    flush: bool = True,
) -> None:
    """Parse one document into ``doc``, handing (rows, errors) batches to ``emit`` (which
    returns False to stop the parse): with ``flush`` typed rows every ``_FLUSH_ROWS`` items and
    at the end; without, the text rows stay in ``doc`` for the caller to type with others.
    Items before a syntax error are delivered; the error comes last, as one ``XML_SYNTAX`` (or
    ``XML_ENTITY``) row naming line, column and the XPath of the element open at the break.
    """
    source, table = doc.source, doc.table
    parser = guarded_parser()
    parser.StartElementHandler = doc.start
    parser.EndElementHandler = doc.end
    parser.CharacterDataHandler = doc.characters

    def row_done() -> None:
        if len(doc.columns["position"]) >= _FLUSH_ROWS and not emit(_typed(doc.take(), doc)):
            raise _Stop  # the consumer is gone

    if flush:
        doc.on_row = row_done
    failure: pl.DataFrame | None = None
    try:
        with path.open("rb") as fh:
            parser.ParseFile(fh)
    except _Stop:
        return
    except pyexpat.ExpatError as exc:
        where = doc.tracker.xpath()
        failure = _error_row(
            source,
            where,
            "XML_SYNTAX",
            f"line {exc.lineno}, column {exc.offset + 1}: "
            f"{pyexpat.ErrorString(exc.code)} (inside {where})",
        )
    except LookupError as exc:  # expat: an encoding the XML declaration names is unknown
        failure = _error_row(source, doc.tracker.xpath(), "XML_SYNTAX", f"{exc} (XML declaration)")
    except _EntityRefused as exc:
        failure = _error_row(
            source,
            doc.tracker.xpath(),
            "XML_ENTITY",
            f"line {parser.CurrentLineNumber}, column "
            f"{parser.CurrentColumnNumber + 1}: entity declaration {exc.args[0]!r} refused "
            "(external entities and entity expansion are never processed)",
        )
    if flush and doc.columns["position"]:
        emit(_typed(doc.take(), doc))
    if failure is not None:
        emit((empty(table), failure))


def _parse_file(
    path: Path, source: str, table: TableName
) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    """(rows, errors) batches of one document, in document order, while it is parsed.

    A document up to ``_INLINE_BYTES`` is parsed in the calling thread. A larger one is
    parsed in a worker thread (expat drives the parse through the document's handlers) that
    hands batches of ``_FLUSH_ROWS`` rows over a queue of two: memory holds the element being
    built and at most three batches, whatever the document size.
    """
    doc = _Document(source, table)
    if path.stat().st_size <= _INLINE_BYTES:
        batches: list[tuple[pl.DataFrame, pl.DataFrame]] = []

        def keep(batch: tuple[pl.DataFrame, pl.DataFrame]) -> bool:
            batches.append(batch)
            return True

        _run_parse(path, doc, keep)
        yield from batches
        return
    handoff: queue.Queue[tuple[pl.DataFrame, pl.DataFrame] | BaseException | None] = queue.Queue(
        maxsize=2
    )
    stop = threading.Event()

    def put(batch: tuple[pl.DataFrame, pl.DataFrame] | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                handoff.put(batch, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            _run_parse(path, doc, put)
        except BaseException as exc:  # handed to the consumer, re-raised there
            put(exc)
            return
        put(None)

    worker = threading.Thread(target=work, name=f"scfeeds-xml:{path.name}", daemon=True)
    worker.start()
    try:
        while (batch := handoff.get()) is not None:
            if isinstance(batch, BaseException):
                raise batch
            yield batch
    finally:
        stop.set()
        worker.join()


# -- the fast path for small documents: a tree built by the C parser, walked down to the items

_NOTED: Final = _CONTAINERS | _TEXTS | _HEADER_ATTRS


def _tree_of(data: bytes) -> ET.Element | None:
    """The document's tree from ElementTree's C parser, when the fast path gives the same
    rows as the streaming reader: an ASCII-compatible encoding, no namespaces (the streaming
    reader keeps prefixes as written), no entity declaration (those are refused, with an
    error row, by the guarded streaming parser). A NUL byte means UTF-16 or UTF-32, where a
    byte search for ``<!ENTITY`` would miss the declaration: declined too. ``None``: read it
    with the streaming reader."""
    head = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    if head.lstrip()[:1] != b"<" or b"\x00" in data or b"<!ENTITY" in data or b"xmlns" in data:
        return None
    try:
        return ET.fromstring(data)
    except (ET.ParseError, LookupError, ValueError):
        return None  # the streaming reader reports where and why


def _direct_text(el: ET.Element) -> str | None:
    """An element's own text (not its children's), as the streaming reader collects it."""
    if len(el) == 0:
        return _clean(el.text)
    return _clean((el.text or "") + "".join(child.tail or "" for child in el))


def _note(el: ET.Element, tracker: _Tracker) -> None:
    """What the streaming tracker keeps of an element: header attributes, the current
    OrderReference (reset by each container), the first carrier / shipment text."""
    tag = el.tag
    if tag in _CONTAINERS:
        tracker.order_ref = None
    if tag in _TEXTS and tag not in tracker.texts:
        tracker.texts[tag] = "".join(el.itertext()).strip() or None
    if tag in _HEADER_ATTRS:
        tracker.header[tag] = dict(el.attrib)
        if tag == "OrderReference":
            tracker.order_ref = el.get("orderID")


def _note_all(el: ET.Element, tracker: _Tracker) -> None:
    for e in el.iter():
        if e.tag in _NOTED:
            _note(e, tracker)


def _read_tree(root: ET.Element, doc: _Document) -> None:
    """Rows of one parsed document, in document order (as the streaming reader gives them)."""
    for header in root:
        if header.tag != "Header":
            continue
        for party in header:
            for cred in party:
                if cred.tag != "Credential":
                    continue
                for ident in cred:
                    if ident.tag == "Identity":
                        doc.parties.setdefault(party.tag, _direct_text(ident))
    _note(root, doc.tracker)
    step = f"{root.tag}[1]" if root.tag in _REPEATING else root.tag
    _visit(root, 1, "/" + step, doc)


def _visit(el: ET.Element, depth: int, prefix: str, doc: _Document) -> None:
    counts: dict[str, int] = {}
    for child in el:
        tag = child.tag
        i = counts[tag] = counts.get(tag, 0) + 1
        path = f"{prefix}/{tag}[{i}]" if tag in _REPEATING or i > 1 else f"{prefix}/{tag}"
        if depth + 1 < doc.item_depth:
            _note(child, doc.tracker)
            _visit(child, depth + 1, path, doc)
            continue
        _note_all(child, doc.tracker)
        if tag == doc.item:
            doc.position = path
            doc._row(_item_values(child, doc))


# Per table: the item's wanted descendants as a tree of tag -> (attributes to read, text
# column, wanted children), built from _ITEM_ATTRS and _ITEM_TEXTS.
_Wanted: TypeAlias = dict[str, tuple[tuple[tuple[str, str], ...], str | None, "_Wanted"]]


def _wanted(table: TableName) -> _Wanted:
    root: _Wanted = {}
    rels = set(_ITEM_ATTRS[table]) | set(_ITEM_TEXTS[table])
    for rel in sorted(r for r in rels if r):
        node = root
        for k, tag in enumerate(rel):
            sub = rel[: k + 1]
            if tag not in node:
                node[tag] = (_ITEM_ATTRS[table].get(sub, ()), _ITEM_TEXTS[table].get(sub), {})
            node = node[tag][2]
    return root


_WANTED: Final[dict[TableName, _Wanted]] = {t: _wanted(t) for t in _ITEM_TEXTS}


def _item_values(item: ET.Element, doc: _Document) -> dict[str, str | None]:
    values: dict[str, str | None] = {}
    for attr, col in doc.attrs[()]:
        values[col] = _clean(item.get(attr))
    _collect(item, _WANTED[doc.table], values)
    return values


def _collect(el: ET.Element, wanted: _Wanted, values: dict[str, str | None]) -> None:
    """The first value of each wanted attribute and text below ``el``, in document order
    (the first non-empty one for ``_NON_EMPTY`` columns)."""
    for child in el:
        node = wanted.get(child.tag)
        if node is None:
            continue
        attrs, text_col, below = node
        for attr, col in attrs:
            if col not in values:
                values[col] = _clean(child.get(attr))
        if text_col is not None and (
            text_col not in values or (text_col in _NON_EMPTY and values[text_col] is None)
        ):
            values[text_col] = _direct_text(child)
        if below:
            _collect(child, below, values)


def _read_small(path: Path, doc: _Document, failures: list[pl.DataFrame]) -> _Document:
    """One small document into ``doc``: through the C parser's tree where that gives the
    streaming reader's rows, else (or on any doubt) through the guarded streaming reader."""
    try:
        data = path.read_bytes() if path.stat().st_size <= _INLINE_BYTES else None
    except OSError:
        data = None
    root = _tree_of(data) if data is not None else None
    if root is not None:
        _read_tree(root, doc)
        return doc
    _run_parse(path, doc, partial(_keep_errors, failures), flush=False)
    return doc


def _keep_errors(out: list[pl.DataFrame], batch: tuple[pl.DataFrame, pl.DataFrame]) -> bool:
    out.append(batch[1])
    return True


def read_many(
    files: Sequence[tuple[Path, str, str | None]], table: TableName
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows and error rows of many cXML documents ``(path, source, request element)``, read
    in this thread and typed together: one polars query for the whole run, not one per
    document. Rows and errors come in document order; a document that is not the table's
    request, or breaks off, gives its own error rows and the others are unaffected."""
    texts: dict[str, list[str | None]] = {c: [] for c in ("source", "position", *COLUMNS[table])}
    if table == "invoice_lines":
        texts["_purpose"] = []
    problems: list[tuple[int, pl.DataFrame]] = []
    owner: list[int] = []
    chunks: list[pl.DataFrame] = []  # text rows moved out of Python lists as they grow
    item_cols = ("position", *_ITEM_COLUMNS[table])
    for i, (path, name, request) in enumerate(files):
        if request is None or TABLE_OF[request] != table:
            problems.append((i, _not_the_table(name, request, table)))
            continue
        failures: list[pl.DataFrame] = []
        doc = _read_small(path, _Document(name, table), failures)
        n = len(doc.columns["position"])
        for col in item_cols:
            texts[col].extend(doc.columns[col])
        consts = doc.document_values()
        for col in texts:
            if col not in item_cols and col != "source":
                texts[col].extend([consts.get(col if col != "_purpose" else "purpose")] * n)
        texts["source"].extend([name] * n)
        owner.extend([i] * n)
        problems.extend((i, f) for f in failures)
        if len(owner) >= _TEXT_CHUNK:
            chunks.append(_text_frame(texts, owner))
    chunks.append(_text_frame(texts, owner))
    text = pl.concat(chunks, how="vertical", rechunk=True)
    rows, bad = _typed_rows(text, table, {}, None, carry=("_i",))
    # per document: its rejected items, then its own errors (the order of a one-by-one read)
    errs = pl.concat(
        [bad, *(f.with_columns(_i=pl.lit(i, dtype=pl.Int64)) for i, f in problems)],
        how="vertical",
    )
    if problems:
        errs = errs.sort("_i", maintain_order=True)
    return rows, errs.drop("_i")


_TEXT_CHUNK: Final = 8192  # rows of text kept as Python strings before they become a frame


def _text_frame(texts: dict[str, list[str | None]], owner: list[int]) -> pl.DataFrame:
    """The text rows gathered so far as a frame (the lists are emptied)."""
    frame = pl.DataFrame(texts, schema=dict.fromkeys(texts, pl.String)).with_columns(
        _i=pl.Series(owner, dtype=pl.Int64)
    )
    for values in texts.values():
        values.clear()
    owner.clear()
    return frame


def _not_the_table(name: str, request: str | None, table: TableName) -> pl.DataFrame:
    what = f"a {request}" if request else "no cXML request"
    return _error_row(
        name,
        "/",
        "XML_NOT_CXML" if request is None else "XML_WRONG_DOCUMENT",
        f"holds {what}, not a {_request(table)} ({table})",
    )


def _plan(
    source: str | Path | Sequence[str | Path], table: TableName | None
) -> tuple[TableName, list[tuple[Path, str, str | None]]]:
    """The table to read and, per file, its request element (None: not cXML / unreadable)."""
    if table is not None:
        _request(table)  # validates
    files: list[tuple[Path, str, str | None]] = []
    for path, name in resolve_sources(source):
        try:
            files.append((path, name, _sniff(path)))
        except OSError as exc:
            raise ConfigurationError(f"cannot read {name}: {exc}") from exc
    if table is None:
        found = next((TABLE_OF[r] for _, _, r in files if r is not None), None)
        if found is None:
            raise XMLError(
                f"{files[0][1]}: no OrderRequest, ShipNoticeRequest or InvoiceDetailRequest "
                "found; pass table=",
                source=files[0][1],
                position="/",
                rule="XML_NOT_CXML",
            )
        table = found
    return table, files


def _file_batches(
    path: Path, name: str, request: str | None, table: TableName
) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    if request is None or TABLE_OF[request] != table:
        yield empty(table), _not_the_table(name, request, table)
        return
    yield from _parse_file(path, name, table)


_RUN_BYTES: Final = 8 * 1024 * 1024


def _batches(
    files: Sequence[tuple[Path, str, str | None]], table: TableName
) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    """(rows, errors) of ``files`` in order: runs of small documents read together
    (``read_many``, up to ``_RUN_BYTES`` per run), each larger one streamed alone."""
    run: list[tuple[Path, str, str | None]] = []
    size = 0
    for path, name, request in files:
        n = path.stat().st_size
        if n <= _INLINE_BYTES:
            if run and size + n > _RUN_BYTES:
                yield read_many(run, table)
                run, size = [], 0
            run.append((path, name, request))
            size += n
            continue
        if run:
            yield read_many(run, table)
            run, size = [], 0
        yield from _file_batches(path, name, request, table)
    if run:
        yield read_many(run, table)


def _warn(problems: Sequence[pl.DataFrame]) -> None:
    if not problems:
        return
    frame = pl.concat(problems)
    for (src,), part in frame.group_by("source", maintain_order=True):
        counts = part.group_by("rule", maintain_order=True).len()
        summary = ", ".join(f"{n} {r}" for r, n in counts.iter_rows())
        warnings.warn(
            f"{src}: {summary} (first: {part.row(0, named=True)['message']}); "
            "read_xml(..., errors='collect') returns them as rows",
            XMLWarning,
            stacklevel=3,
        )


def scan_xml(
    source: str | Path | Sequence[str | Path], *, table: TableName | None = None
) -> pl.LazyFrame:
    """Lazily read cXML documents into a canonical table, streaming each document.

    Parameters
    ----------
    source
        A path, a glob (``"feeds/*/invoice_lines/*.xml"``) or a list of them; one cXML
        document per file.
    table
        ``"po_lines"`` (OrderRequest), ``"asn_lines"`` (ShipNoticeRequest) or
        ``"invoice_lines"`` (InvoiceDetailRequest). ``None``: the table of the first file that
        holds one of these requests; files holding another request are reported, not read.

    Returns
    -------
    pl.LazyFrame
        ``schema(table)``; ``source`` is the path as given (glob matches as found),
        ``position`` the XPath of the item element (module docstring). Strings are stripped,
        blank values null, ``uom`` / ``currency`` upper-cased.

    Notes
    -----
    Parsing happens at collect time, one document at a time, with expat in streaming
    mode: every item is handed over as soon as it is closed and forgotten, so memory does not
    grow with the document. Entity declarations are refused (rule ``XML_ENTITY``: no XXE, no
    billion laughs). A malformed document delivers the items before the break and is reported
    (rule ``XML_SYNTAX``, with line, column and XPath) by one :class:`XMLWarning` per file at
    collect time, as are items whose values do not parse (``BAD_NUMBER``, ``BAD_DATE``); use
    ``read_xml(..., errors="collect")`` to get them as rows.

    Examples
    --------
    >>> scan_xml("feeds/*/invoice_lines/*.xml").group_by("supplier_id").len()  # doctest: +SKIP
    """
    if table == "po_acks":  # cXML ConfirmationRequest: small documents, parsed whole
        return read_confirmations(source).lazy()  # type: ignore[arg-type]
    tname, files = _plan(source, table)

    def batches(ask: Pushdown) -> Iterator[pl.DataFrame]:
        del ask  # every column is built; polars' filters and projection apply after
        problems: list[pl.DataFrame] = []
        for good, bad in _batches(files, tname):
            if bad.height:
                problems.append(bad)
            yield good
        _warn(problems)

    return scan_batches(batches, schema=schema(tname), name="scfeeds.scan_xml")


@overload
def read_xml(
    source: str | Path | Sequence[str | Path],
    *,
    table: TableName | None = ...,
    errors: Literal["warn", "raise"] = ...,
) -> pl.DataFrame: ...
@overload
def read_xml(
    source: str | Path | Sequence[str | Path],
    *,
    table: TableName | None = ...,
    errors: Literal["collect"],
) -> XMLResult: ...
def read_xml(
    source: str | Path | Sequence[str | Path],
    *,
    table: TableName | None = None,
    errors: ErrorMode = "warn",
) -> pl.DataFrame | XMLResult:
    """Read cXML documents into a canonical table (eager :func:`scan_xml`).

    Parameters
    ----------
    source, table
        As for :func:`scan_xml`.
    errors
        ``"warn"`` (default): the rows, and one :class:`XMLWarning` per file with problems;
        ``"collect"``: ``XMLResult(rows, errors)`` with one error row per problem
        (``source, position, rule, message``); ``"raise"``: raise
        :class:`~scfeeds.exceptions.XMLError` (with ``source``, ``position``, ``rule``) at the
        first problem.

    Examples
    --------
    >>> rows, errors = read_xml("po.xml", errors="collect")  # doctest: +SKIP
    """
    if table == "po_acks":  # cXML ConfirmationRequest: small documents, parsed whole
        return read_confirmations(source, errors=errors)  # type: ignore[arg-type]
    if errors == "warn":
        return scan_xml(source, table=table).collect()
    if errors not in ("raise", "collect"):
        raise ConfigurationError(f"errors={errors!r}; expected 'warn', 'raise' or 'collect'")
    tname, files = _plan(source, table)
    rows: list[pl.DataFrame] = [empty(tname)]
    problems: list[pl.DataFrame] = [empty_errors()]
    for good, bad in _batches(files, tname):
        if errors == "raise" and bad.height:
            raise XMLError.from_row(bad.row(0, named=True))
        rows.append(good)
        problems.append(bad)
    frame = pl.concat(rows)
    if errors == "raise":
        return frame
    return XMLResult(frame, pl.concat(problems))


__all__ = ["XMLResult", "XMLWarning", "read_many", "read_xml", "scan_xml"]
