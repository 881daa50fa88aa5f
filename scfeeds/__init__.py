"""scfeeds: fetch, parse, validate and reconcile supplier feeds in JupyterLab.

Suppliers send X12 EDI (850 purchase orders, 856 ship notices, 810 invoices), portal exports
(CSV, Excel) and cXML. scfeeds fetches them with bounded, adaptive async concurrency
(:func:`fetch`), parses them into one canonical polars schema per document type
(:func:`read_x12`, :func:`scan_export`, :func:`scan_xml`), validates them (:func:`validate`),
lands them in a Delta Lake (:func:`ingest`, :func:`scan_lake`) and runs a three-way match
(:func:`reconcile`).

Submodules loaded on first use: :mod:`scfeeds.synth` (synthetic feeds with an answer key),
:mod:`scfeeds.portal` (a simulated supplier portal), :mod:`scfeeds.schemas` (the canonical
tables) and :mod:`scfeeds.notebook` (ipywidgets front-ends; needs the ``notebook`` extra).

Examples
--------
>>> import scfeeds
>>> report = scfeeds.run(scfeeds.ingest(listing, "lake", limits=32))  # doctest: +SKIP
>>> tables = [scfeeds.scan_lake("lake", t) for t in ("po_lines", "asn_lines", "invoice_lines")]
>>> rec = scfeeds.reconcile(*tables)  # doctest: +SKIP
>>> rec.summary()  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from scfeeds.exceptions import (
    ConfigurationError,
    ExportError,
    FetchError,
    FetchFailures,
    HTTPStatusError,
    ParseError,
    ScfeedsError,
    ScfeedsWarning,
    StorageError,
    TransferError,
    ValidationError,
    X12Error,
    XMLError,
)

if TYPE_CHECKING:
    from scfeeds import notebook, portal, schemas, synth
    from scfeeds._ackmatch import ack_exceptions
    from scfeeds._config import Limits, Retry, Timeout
    from scfeeds._cxml import XMLWarning, read_xml, scan_xml
    from scfeeds._exports import ExportWarning, read_export, scan_export, write_export
    from scfeeds._fetch import (
        AsyncFeedIngestor,
        BatchResult,
        ChunkRequest,
        Credentials,
        FetchController,
        FetchOutcome,
        FetchReport,
        ProgressEvent,
        fetch,
        plan_chunks,
    )
    from scfeeds._ingest import IngestReport, Source, ingest
    from scfeeds._lake import compact_lake, lake_snapshot, scan_lake, vacuum_lake
    from scfeeds._otif import OnTimeWindow, Otif, Scorecard, otif
    from scfeeds._reconcile import (
        ReconcileWarning,
        Reconciliation,
        ReconciliationSummary,
        Tolerances,
        reconcile,
    )
    from scfeeds._runner import enable_nested, run
    from scfeeds._validate import ValidationResult, validate
    from scfeeds._x12 import X12Result, ack_997, read_x12, scan_x12

__version__ = "0.1.0"

__all__ = [
    "AsyncFeedIngestor",
    "BatchResult",
    "ChunkRequest",
    "ConfigurationError",
    "Credentials",
    "ExportError",
    "ExportWarning",
    "FetchController",
    "FetchError",
    "FetchFailures",
    "FetchOutcome",
    "FetchReport",
    "HTTPStatusError",
    "IngestReport",
    "Limits",
    "OnTimeWindow",
    "Otif",
    "ParseError",
    "ProgressEvent",
    "ReconcileWarning",
    "Reconciliation",
    "ReconciliationSummary",
    "Retry",
    "ScfeedsError",
    "ScfeedsWarning",
    "Scorecard",
    "Source",
    "StorageError",
    "Timeout",
    "Tolerances",
    "TransferError",
    "ValidationError",
    "ValidationResult",
    "X12Error",
    "X12Result",
    "XMLError",
    "XMLWarning",
    "__version__",
    "ack_997",
    "ack_exceptions",
    "compact_lake",
    "enable_nested",
    "fetch",
    "ingest",
    "lake_snapshot",
    "notebook",
    "otif",
    "plan_chunks",
    "portal",
    "read_export",
    "read_x12",
    "read_xml",
    "reconcile",
    "run",
    "scan_export",
    "scan_lake",
    "scan_x12",
    "scan_xml",
    "schemas",
    "synth",
    "vacuum_lake",
    "validate",
    "write_export",
]

_SUBMODULES = frozenset({"notebook", "portal", "schemas", "synth"})

# Public name -> the private module that defines it. Loaded on first use, so that a fetch does
# not pay for validation, Excel or the match engine (`import scfeeds` stays small), and
# `import scfeeds` never loads ipywidgets, memray, dask or redis.
_LAZY: dict[str, str] = {
    "ack_exceptions": "scfeeds._ackmatch",
    **dict.fromkeys(("Limits", "Retry", "Timeout"), "scfeeds._config"),
    **dict.fromkeys(
        ("ExportWarning", "read_export", "scan_export", "write_export"), "scfeeds._exports"
    ),
    **dict.fromkeys(
        (
            "AsyncFeedIngestor",
            "BatchResult",
            "ChunkRequest",
            "Credentials",
            "FetchController",
            "FetchOutcome",
            "FetchReport",
            "ProgressEvent",
            "fetch",
            "plan_chunks",
        ),
        "scfeeds._fetch",
    ),
    **dict.fromkeys(("IngestReport", "Source", "ingest"), "scfeeds._ingest"),
    **dict.fromkeys(("compact_lake", "lake_snapshot", "scan_lake", "vacuum_lake"), "scfeeds._lake"),
    **dict.fromkeys(("OnTimeWindow", "Otif", "Scorecard", "otif"), "scfeeds._otif"),
    **dict.fromkeys(
        (
            "ReconcileWarning",
            "Reconciliation",
            "ReconciliationSummary",
            "Tolerances",
            "reconcile",
        ),
        "scfeeds._reconcile",
    ),
    **dict.fromkeys(("enable_nested", "run"), "scfeeds._runner"),
    **dict.fromkeys(("ValidationResult", "validate"), "scfeeds._validate"),
    **dict.fromkeys(("X12Result", "ack_997", "read_x12", "scan_x12"), "scfeeds._x12"),
    **dict.fromkeys(("XMLWarning", "read_xml", "scan_xml"), "scfeeds._cxml"),
}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"scfeeds.{name}")
    module = _LAZY.get(name)
    if module is None:
        # builtin-raise: the module __getattr__ protocol (hasattr, import machinery)
        raise AttributeError(f"module 'scfeeds' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
