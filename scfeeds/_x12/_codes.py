"""Error codes (rule names) of the X12 reader, one row of ``X12Result.errors`` each.

Every error row names the source, the interchange / group / set it belongs to, the segment
position (``"segment N"``, 1-based, counted from the first segment of the file), the segment ID,
the element (``"SE01"``) where one is at fault, the code below and a message with the values.

``level`` says what the error rejects:

- ``set``: the transaction set is rejected; its rows are not delivered (997 ``AK5*R``).
- ``segment`` / ``element``: a segment or element of a set is wrong; the set is rejected
  (997 ``AK3`` / ``AK4`` and ``AK5*R*5``).
- ``group``: the functional group envelope is wrong; its intact sets are still delivered and
  acknowledged with ``AK9*E`` plus the group error code.
- ``interchange``: the interchange envelope is wrong (reported, normally in a TA1); intact sets
  are still delivered.
- ``file``: the bytes themselves (empty input, garbage, encoding).

=====================  ===========  ===========================================================
code                   level        meaning
=====================  ===========  ===========================================================
EMPTY                  file         no bytes (or only whitespace / a BOM)
ENCODING               file         bytes are not UTF-8; decoded as Latin-1 and read on
BAD_ISA                interchange  no valid ISA header where an interchange must start
                                    (garbage, wrong width, duplicate or alphanumeric delimiters)
UNEXPECTED_DATA        interchange  non-X12 bytes or segments outside any interchange
TRUNCATED              interchange  input ends before the interchange's IEA (cut inside a
                                    segment or at a segment boundary); the open set is rejected
IEA_MISSING            interchange  a new ISA starts before the previous interchange's IEA
ISA_MISSING            interchange  GS or IEA without an open interchange
IEA01_COUNT            interchange  IEA01 differs from the number of GS in the interchange
IEA02_CONTROL          interchange  IEA02 differs from ISA13 (compared as integers)
GE_MISSING             group        a group is not closed by GE before IEA / GS / ISA
GS_MISSING             group        ST or GE without an open functional group
GE01_COUNT             group        GE01 differs from the number of ST in the group
GE02_CONTROL           group        GE02 differs from GS06 (compared as integers)
SE_MISSING             set          a set is not closed by SE before the next envelope segment
ST_MISSING             set          SE without ST, or segments between sets
SE01_COUNT             set          SE01 differs from the number of segments from ST to SE
SE02_CONTROL           set          SE02 differs from ST02 (compared as integers)
SEGMENT_ID             segment      a segment ID that is not 2-3 upper-case letters / digits
MISSING_ELEMENT        element      a mandatory element of a mapped segment is empty
BAD_NUMBER             element      a quantity / price element is not a number
BAD_DATE               element      a date element is not CCYYMMDD (or YYMMDD)
=====================  ===========  ===========================================================
"""

from __future__ import annotations

from typing import Final, Literal

Level = Literal["file", "interchange", "group", "set", "segment", "element"]

CODES: Final[dict[str, Level]] = {
    "EMPTY": "file",
    "ENCODING": "file",
    "BAD_ISA": "interchange",
    "UNEXPECTED_DATA": "interchange",
    "TRUNCATED": "interchange",
    "IEA_MISSING": "interchange",
    "ISA_MISSING": "interchange",
    "IEA01_COUNT": "interchange",
    "IEA02_CONTROL": "interchange",
    "GE_MISSING": "group",
    "GS_MISSING": "group",
    "GE01_COUNT": "group",
    "GE02_CONTROL": "group",
    "SE_MISSING": "set",
    "ST_MISSING": "set",
    "SE01_COUNT": "set",
    "SE02_CONTROL": "set",
    "SEGMENT_ID": "segment",
    "MISSING_ELEMENT": "element",
    "BAD_NUMBER": "element",
    "BAD_DATE": "element",
}

# The element-level rules (an AK3 segment note with an AK4 element note in a 997).
_ELEMENT_CODES: Final = ("MISSING_ELEMENT", "BAD_NUMBER", "BAD_DATE")
# 997 AK502 transaction set syntax error codes (X12.6 / 997 implementation guides).
AK5_CODES: Final[dict[str, str]] = {
    "TRUNCATED": "2",  # Transaction Set Trailer Missing
    "SE_MISSING": "2",
    "SE02_CONTROL": "3",  # Control Number in Header and Trailer Do Not Match
    "SE01_COUNT": "4",  # Number of Included Segments Does Not Match Actual Count
    # One or More Segments in Error
    **dict.fromkeys(("SEGMENT_ID", *_ELEMENT_CODES), "5"),
}
# 997 AK905 functional group syntax error codes.
AK9_CODES: Final[dict[str, str]] = {
    "GE_MISSING": "3",  # Functional Group Trailer Missing
    "TRUNCATED": "3",
    "GE02_CONTROL": "4",  # Group Control Number in Header and Trailer Do Not Agree
    "GE01_COUNT": "5",  # Number of Included Transaction Sets Does Not Match Actual Count
}
# 997 AK304 segment syntax error code and AK403 element syntax error codes.
AK3_CODES: Final[dict[str, str]] = {"SEGMENT_ID": "1", **dict.fromkeys(_ELEMENT_CODES, "8")}
AK4_CODES: Final[dict[str, str]] = {"MISSING_ELEMENT": "1", "BAD_NUMBER": "6", "BAD_DATE": "8"}
