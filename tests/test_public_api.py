"""The public surface changes only on purpose, and `import scfeeds` stays lean."""

from __future__ import annotations

import subprocess
import sys

import pytest

import scfeeds

EXPECTED = {
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
    "enable_nested",
    "fetch",
    "ingest",
    "notebook",
    "otif",
    "plan_chunks",
    "portal",
    "read_export",
    "read_x12",
    "read_xml",
    "reconcile",
    "ReconciliationSummary",
    "run",
    "scan_export",
    "scan_lake",
    "lake_snapshot",
    "compact_lake",
    "vacuum_lake",
    "scan_x12",
    "scan_xml",
    "schemas",
    "synth",
    "validate",
    "write_export",
}


def test_all_is_pinned() -> None:
    assert set(scfeeds.__all__) == EXPECTED
    assert len(scfeeds.__all__) == len(set(scfeeds.__all__))


def test_every_public_name_resolves() -> None:
    for name in scfeeds.__all__:
        assert getattr(scfeeds, name) is not None, name


def test_fetch_is_the_function_not_a_module() -> None:
    assert callable(scfeeds.fetch)
    assert scfeeds.fetch.__name__ == "fetch"


def test_import_does_not_pull_in_front_ends_or_services() -> None:
    code = (
        "import sys, scfeeds; "
        "bad = [m for m in ('ipywidgets', 'memray', 'IPython', 'dask', 'distributed', 'redis', "
        "'opentelemetry', 'scfeeds.notebook', 'scfeeds._service', 'aiohttp.web', 'pandas') "
        "if m in sys.modules]; print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        scfeeds.no_such_thing  # noqa: B018


def test_every_public_warning_shares_one_base_and_every_error_one_root() -> None:
    warnings_ = [n for n in scfeeds.__all__ if n.endswith("Warning")]
    errors = [n for n in scfeeds.__all__ if n.endswith(("Error", "Failures"))]
    assert {"XMLWarning", "ExportWarning", "ReconcileWarning"} <= set(warnings_)
    for name in warnings_:
        assert issubclass(getattr(scfeeds, name), scfeeds.ScfeedsWarning), name
    for name in errors:
        assert issubclass(getattr(scfeeds, name), scfeeds.ScfeedsError), name
