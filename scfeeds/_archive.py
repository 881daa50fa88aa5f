"""Refuse hostile XLSX archives before a native reader opens them.

calamine (through fastexcel) unpacks a worksheet whole and allocates its cell grid from the
largest cell reference it meets. These workbooks therefore never reach it:

- ``ARCHIVE_TOO_LARGE``: the central directory declares more unpacked bytes (all members
  together) than ``ArchiveLimits.max_unpacked``, or more members than ``max_members``;
- ``ARCHIVE_RATIO``: one member larger than ``ratio_floor`` unpacks to more than ``max_ratio``
  times its packed size (deflate tops out near 1030:1 on runs of one byte; real worksheets
  pack 5-20:1);
- ``SHEET_TOO_LARGE``: the cell references of a worksheet span a grid of more than
  ``max_cells`` cells (``A1`` plus ``XFD1048576`` is 17 billion cells: calamine asks for
  512 GiB and the process aborts, which no ``except`` can catch), or its cells would hold more
  than ``max_text`` bytes once each shared string is copied into every cell that refers to it
  (a 32 KB string in 70,000 cells is 2.3 GB, past arrow's 2 GiB offsets: a panic);
- ``XLSX_SYNTAX``: not a zip, an encrypted worksheet, a member whose bytes do not match its
  declared size or CRC, or a run of more than ``_MAX_RUN`` bytes without markup in a worksheet.

The sizes come from the central directory; the worksheets are then streamed through
:mod:`zipfile`, which reads no more than the declared size and checks the CRC, so a member
that lies about its size is refused too. Memory stays at one chunk plus a short carry.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import os
import re
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from scfeeds.exceptions import ConfigurationError, ExportError

_CHUNK: Final = 1 << 20
# Longest stretch of a worksheet without a '<' that is still a spreadsheet: a cell's text is
# at most 32,767 characters (Excel's limit), 128 KiB in UTF-8.
_MAX_RUN: Final = 4 << 20
# Column letters and row digits of `r="B12"` on a cell and `r="12"` on a row. Literal first
# (fast scan); another attribute ending in `r` only makes the bound larger.
# No length caps: `ZZZZ1` or twelve digits would be read by calamine as a huge grid. Leading
# zeros are skipped so that the longest digit string is the largest number.
_COLUMN: Final = re.compile(rb'r="\$?[A-Za-z]')
_COLUMNS_PAST_Z: Final = re.compile(rb'r="\$?([A-Za-z]{2,})\$?\d')
_ROW: Final = re.compile(rb'r="\$?[A-Za-z]*\$?0*(\d+)"')
_ROW_ELEMENT: Final = re.compile(rb'<row\b[^>]*?\br="0*(\d+)"')
# A cell holding shared string N: `<c r="A2" t="s"><v>N</v>`.
_SHARED: Final = b't="s"'
_SHARED_REF: Final = re.compile(rb't="s"[^>]*>\s*<v>\s*0*(\d{1,10})\s*<')
_MiB: Final = 1 << 20


@dataclass(frozen=True, kw_only=True)
class ArchiveLimits:
    """Bounds an XLSX workbook must stay within before it is read.

    ``ArchiveLimits.from_env()`` reads ``SCFEEDS_XLSX_MAX_UNPACKED_MB``,
    ``SCFEEDS_XLSX_MAX_RATIO``, ``SCFEEDS_XLSX_MAX_CELLS`` and ``SCFEEDS_XLSX_MAX_TEXT_MB``
    over these defaults.
    """

    max_unpacked: int = 256 * _MiB
    max_ratio: float = 100.0
    ratio_floor: int = 4 * _MiB
    max_members: int = 10_000
    # calamine holds a cell in 32 bytes: 2**25 cells is 1 GiB of grid.
    max_cells: int = 1 << 25
    # text the cells hold once shared strings are copied into them
    max_text: int = 512 * _MiB

    @classmethod
    def from_env(cls) -> ArchiveLimits:
        def number(name: str, default: float) -> float:
            raw = os.environ.get(name)
            if raw is None or not raw.strip():
                return default
            try:
                value = float(raw)
            except ValueError:
                raise ConfigurationError(f"{name}={raw!r}: expected a positive number") from None
            if value <= 0:
                raise ConfigurationError(f"{name}={raw!r}: expected a positive number")
            return value

        base = cls()
        return cls(
            max_unpacked=int(
                number("SCFEEDS_XLSX_MAX_UNPACKED_MB", base.max_unpacked / _MiB) * _MiB
            ),
            max_ratio=number("SCFEEDS_XLSX_MAX_RATIO", base.max_ratio),
            ratio_floor=base.ratio_floor,
            max_members=base.max_members,
            max_cells=int(number("SCFEEDS_XLSX_MAX_CELLS", base.max_cells)),
            max_text=int(number("SCFEEDS_XLSX_MAX_TEXT_MB", base.max_text / _MiB) * _MiB),
        )


def _refuse(source: str, position: str, rule: str, message: str) -> ExportError:
    return ExportError(f"{source}: {message}", source=source, position=position, rule=rule)


def _column_number(letters: bytes) -> int:
    n = 0
    for ch in letters.upper():
        n = n * 26 + ch - 64
    return n


def _pieces(stream: IO[bytes], source: str, member: str) -> Iterator[bytes]:
    """The member in chunks cut just before a ``<``, so that no tag is split between two."""
    carry = b""
    while True:
        chunk = stream.read(_CHUNK)
        buf = carry + chunk
        cut = buf.rfind(b"<") if chunk else len(buf)
        if cut < 0:
            cut = len(buf)  # no markup at all in here: nothing to carry
        done, carry = buf[:cut], buf[cut:]
        if len(carry) > _MAX_RUN:
            raise _refuse(
                source,
                f"member {member}",
                "XLSX_SYNTAX",
                f"{member} has a run of more than {_MAX_RUN} bytes without markup",
            )
        yield done
        if not chunk:
            return


@functools.lru_cache(maxsize=64)
def _above(limit: int) -> re.Pattern[bytes]:
    """A cell or row reference whose row number is larger than ``limit``."""
    digits = str(limit)
    alternatives = [rf"[1-9]\d{{{len(digits)},}}"]
    for i, ch in enumerate(digits):
        if ch != "9":
            alternatives.append(rf"{digits[:i]}[{int(ch) + 1}-9]\d{{{len(digits) - i - 1}}}")
    return re.compile(rb'r="\$?[A-Za-z]*\$?0*(?:' + "|".join(alternatives).encode() + rb')"')


def _grid(stream: IO[bytes], source: str, member: str) -> tuple[int, int, int]:
    """(rows, columns) of the grid calamine would allocate for one worksheet, from above,
    and the number of cells that hold a shared string.

    Rows: the largest row number in a reference, or the number of ``<row>`` elements. A
    row's number comes before its cells, so a cell reference is only read one by one when a
    regex finds one beyond the rows seen so far (never, in a well-formed sheet). Columns: the
    largest column in a reference (26 when no reference goes past Z), or the most ``<c>``
    elements in one row (cells without ``r=`` are placed one after the other).
    """
    max_row = max_col = rows = widest = in_row = shared = 0
    for done in _pieces(stream, source, member):
        parts = done.split(b"<row")
        in_row += parts[0].count(b"<c")  # cells, and the odd <cols> / <cfRule>: from above
        for part in parts[1:]:
            widest = max(widest, in_row)
            rows += 1
            in_row = part.count(b"<c")
        if _COLUMNS_PAST_Z.search(done):
            for letters in set(_COLUMNS_PAST_Z.findall(done)):
                max_col = max(max_col, _column_number(letters))
        elif _COLUMN.search(done):
            max_col = max(max_col, 26)
        for number in _ROW_ELEMENT.findall(done):
            max_row = max(max_row, int(number))
        if _above(max_row).search(done):
            numbers = _ROW.findall(done)
            longest = max(map(len, numbers))
            top = max(n for n in numbers if len(n) == longest)  # same length: bytes order
            max_row = max(max_row, int(top))
        shared += done.count(_SHARED)
    widest = max(widest, in_row)
    return max(max_row, rows), max(max_col, widest), shared


def _shared_text(stream: IO[bytes], source: str, member: str, sizes: list[int]) -> int:
    """Bytes of text the cells hold once each shared string is copied into them."""
    refs: collections.Counter[bytes] = collections.Counter()
    for done in _pieces(stream, source, member):
        refs.update(_SHARED_REF.findall(done))
    return sum(n * sizes[int(i)] for i, n in refs.items() if int(i) < len(sizes))


def _shared_sizes(stream: IO[bytes]) -> list[int]:
    """Bytes of each ``<si>`` element of ``sharedStrings.xml``, markup included (so from
    above: entities only shrink, and calamine expands no others)."""
    sizes: list[int] = []
    carry = b""
    first = True
    while True:
        chunk = stream.read(_CHUNK)
        parts = (carry + chunk).split(b"<si")
        if first:
            parts = parts[1:]  # the <sst> header
            first = False
        carry = parts.pop() if chunk and parts else b""
        sizes.extend(map(len, parts))
        if not chunk:
            if carry:
                sizes.append(len(carry))
            return sizes


def check_xlsx(
    path: str | os.PathLike[str], source: str, limits: ArchiveLimits | None = None
) -> None:
    """Raise :class:`ExportError` when the workbook at ``path`` must not be unpacked.

    Rules as in the module docstring; position ``"member <name>"`` or ``"file"``.
    """
    lim = limits or ArchiveLimits.from_env()
    try:
        with zipfile.ZipFile(Path(path)) as archive:
            infos = archive.infolist()
            _check_members(infos, source, lim)
            sizes: list[int] = []
            for info in infos:
                if info.filename.lower() == "xl/sharedstrings.xml":
                    with archive.open(info) as stream:
                        sizes = _shared_sizes(stream)
            for info in infos:
                name = info.filename
                if name.startswith("xl/worksheets/") and name.endswith(".xml"):
                    _check_sheet(archive, info, sizes, source, lim)
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        zlib.error,
        EOFError,
        NotImplementedError,
    ) as exc:
        # NotImplementedError: a compression method zipfile lacks (calamine lacks it too)
        raise _refuse(
            source, "file", "XLSX_SYNTAX", f"not a readable xlsx archive ({exc})"
        ) from exc


def _check_members(infos: list[zipfile.ZipInfo], source: str, lim: ArchiveLimits) -> None:
    """Member count, total unpacked size and each member's compression ratio, from the
    central directory (nothing unpacked)."""
    if len(infos) > lim.max_members:
        raise _refuse(
            source,
            "file",
            "ARCHIVE_TOO_LARGE",
            f"{len(infos)} archive members (at most {lim.max_members})",
        )
    total = sum(i.file_size for i in infos)
    if total > lim.max_unpacked:
        biggest = max(infos, key=lambda i: i.file_size)
        raise _refuse(
            source,
            f"member {biggest.filename}",
            "ARCHIVE_TOO_LARGE",
            f"unpacks to {total} bytes (at most {lim.max_unpacked}; "
            f"{biggest.filename} alone {biggest.file_size})",
        )
    for info in infos:
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > lim.ratio_floor and ratio > lim.max_ratio:
            raise _refuse(
                source,
                f"member {info.filename}",
                "ARCHIVE_RATIO",
                f"{info.filename} unpacks {ratio:.0f}:1 ({info.compress_size} -> "
                f"{info.file_size} bytes; at most {lim.max_ratio:g}:1)",
            )


def _check_sheet(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    sizes: list[int],
    source: str,
    lim: ArchiveLimits,
) -> None:
    """One worksheet: not encrypted, its cell grid and its shared-string text within limits."""
    name = info.filename
    if info.flag_bits & 0x1:
        raise _refuse(source, f"member {name}", "XLSX_SYNTAX", f"{name} is encrypted")
    try:
        with archive.open(info) as stream:
            rows, cols, shared = _grid(stream, source, name)
        if rows * cols > lim.max_cells:
            raise _refuse(
                source,
                f"member {name}",
                "SHEET_TOO_LARGE",
                f"{name} spans {rows} rows x {cols} columns (at most {lim.max_cells} cells)",
            )
        # calamine copies a shared string into every cell that refers to it (and arrow's
        # string offsets overflow past 2 GiB: a panic). Counted per string only when the
        # cheap bound (cells x longest string) is not enough.
        if shared * max(sizes, default=0) > lim.max_text:
            with archive.open(info) as stream:
                text = _shared_text(stream, source, name, sizes)
            if text > lim.max_text:
                raise _refuse(
                    source,
                    f"member {name}",
                    "SHEET_TOO_LARGE",
                    f"{name} repeats shared strings into {text} bytes of text "
                    f"(at most {lim.max_text})",
                )
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise _refuse(
            source, f"member {name}", "XLSX_SYNTAX", f"{name} is damaged ({exc})"
        ) from exc


def is_reader_panic(exc: BaseException) -> bool:
    """A failure of a native reader that Python's ``except Exception`` does not see.

    pyo3 turns a Rust panic into ``pyo3_runtime.PanicException``, a direct subclass of
    ``BaseException`` (one such class per extension module: polars and fastexcel each have
    their own). Interpreter exits, Ctrl-C, task cancellation and generator closing are
    never one.
    """
    return not isinstance(
        exc, (Exception, KeyboardInterrupt, SystemExit, GeneratorExit, asyncio.CancelledError)
    )


__all__ = ["ArchiveLimits", "check_xlsx", "is_reader_panic"]
