"""X12 reader: 850 / 856 / 810 into canonical polars frames, envelope checks, 997 writer.

Public names: ``read_x12``, ``scan_x12``, ``ack_997``, ``X12Result``, ``Delimiters``; the error
codes (rule names) are listed in ``scfeeds._x12._codes`` (``CODES``).
"""

from scfeeds._x12._ack import ack_997
from scfeeds._x12._codes import CODES
from scfeeds._x12._reader import X12Result, read_x12
from scfeeds._x12._scan import scan_x12
from scfeeds._x12._tokenize import Delimiters

__all__ = ["CODES", "Delimiters", "X12Result", "ack_997", "read_x12", "scan_x12"]
