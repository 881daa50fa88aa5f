"""Supplier portal exports (CSV / XLSX) <-> canonical tables.

``write_export`` writes canonical rows the way a supplier portal does (headers, delimiter,
encoding, decimal comma, thousands separator and date format of an
:class:`~scfeeds._presets.ExportPreset`); ``scan_export`` / ``read_export`` read such files,
and the real-world mess around them, back into the canonical schema.

Writing and reading are separate modules, and reading is three stages, each a module:

- ``_dialect``: what both directions share (the formats, preset lookup);
- ``_write``: ``write_export``;
- ``_plan``: per file, before any row is read: encoding, delimiter, header row, table,
  preset and number / date dialect (a ``_Plan``);
- ``_rows``: the typing and checking query over a planned file's records (canonical values
  and a rule for every record that is not a good line item);
- ``_read``: ``scan_export`` / ``read_export``, one file after another;
- ``_batch``: ``read_export_batch``, many small files in one query per layout.
"""

from scfeeds._exports._batch import ExportBatch, read_export_batch
from scfeeds._exports._dialect import ExportFormat
from scfeeds._exports._plan import REQUIRED
from scfeeds._exports._plan import _read_sheet as _read_sheet  # the notebook explorer's
from scfeeds._exports._read import ExportOptions, ExportResult, read_export, scan_export
from scfeeds._exports._rows import _CONTROL as _CONTROL  # the parser's check
from scfeeds._exports._write import write_export
from scfeeds.exceptions import ExportWarning

__all__ = [
    "REQUIRED",
    "ExportBatch",
    "ExportFormat",
    "ExportOptions",
    "ExportResult",
    "ExportWarning",
    "read_export",
    "read_export_batch",
    "scan_export",
    "write_export",
]
