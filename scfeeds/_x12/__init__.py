"""X12 reader: 850 / 856 / 810 into canonical polars frames, envelope checks, 997 writer.

Public names: ``read_x12``, ``scan_x12``, ``ack_997``, ``X12Result``, ``Delimiters``; the error
codes are listed in ``scfeeds._x12._codes``.
"""

from scfeeds._x12._codes import CODES
from scfeeds._x12._reader import X12Result, read_x12
from scfeeds._x12._tokenize import Delimiters

__all__ = ["CODES", "Delimiters", "X12Result", "read_x12"]
