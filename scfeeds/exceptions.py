"""Exceptions raised by scfeeds.

Per-item problems (a malformed segment, a failed download, a row that breaks a rule) are
*data*: they come back as rows of a failures / errors frame and never interrupt a batch.
Exceptions are for misuse and for callers who ask for them (``raise_for_failures()``).

::

    ScfeedsError
    ├── ConfigurationError        you called it wrong (also a ValueError)
    ├── StateError                not now: it is closed or already running (also a RuntimeError)
    ├── PortalError               the simulated portal did not start (also a RuntimeError)
    ├── FetchError                a transfer failed (raised only on request)
    │   ├── HTTPStatusError       the server answered with a non-retryable status
    │   ├── TransferError         connection reset, timeout, truncated body
    │   └── FetchFailures         raise_for_failures(): some items did not land
    ├── StorageError              the local disk refused a write (no space left, quota)
    ├── ParseError                the bytes are not what the format says
    │   ├── X12Error              X12 syntax or envelope problem
    │   ├── XMLError              malformed or unsafe XML (entities refused)
    │   └── ExportError           CSV / Excel export problem (e.g. missing columns)
    └── ValidationError           rows break the canonical schema (raised only on request)

    ScfeedsWarning (UserWarning)  something was read or matched only in part
    ├── XMLWarning                a cXML document was read only in part
    ├── ExportWarning             something in an export was ignored or could not be parsed
    └── ReconcileWarning          something in the match's input limits what it can say
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self


class ScfeedsError(Exception):
    """Base class of every error scfeeds raises."""


class ConfigurationError(ScfeedsError, ValueError):
    """An option or argument is wrong; the message says how to fix it."""


class StateError(ScfeedsError, RuntimeError):
    """The call is right but the object is not in a state to take it (closed, already
    running, a nested ``run()``); the message says what to do first."""


class PortalError(ScfeedsError, RuntimeError):
    """The simulated supplier portal did not start (timed out, or its process failed)."""


class FetchError(ScfeedsError):
    """A transfer failed."""


class HTTPStatusError(FetchError):
    """The server answered with a status that is not retried (or retries ran out)."""

    def __init__(self, message: str, *, status: int, url: str) -> None:
        super().__init__(message)
        self.status = status
        self.url = url


class TransferError(FetchError):
    """Connection reset, timeout or a body shorter than announced."""


class FetchFailures(FetchError):
    """Raised by ``FetchReport.raise_for_failures()`` when some items did not land."""


class StorageError(ScfeedsError):
    """The local file system refused a write (``ENOSPC``, ``EDQUOT``); ``path`` says where.

    Not a transfer fault: retrying the download cannot help until space is freed.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class ParseError(ScfeedsError):
    """Input bytes are not valid for their format.

    ``source`` names the file, ``position`` the segment number, row or XPath, ``rule`` the
    rule that was broken.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        position: str | None = None,
        rule: str | None = None,
    ) -> None:
        super().__init__(message)
        self.source = source
        self.position = position
        self.rule = rule

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        """The error of one row of an errors frame (source, position, rule, message), its
        message prefixed with where it happened."""
        return cls(
            f"{row['source']}: {row['position']}: {row['message']}",
            source=row["source"],
            position=row["position"],
            rule=row["rule"],
        )

    @property
    def detail(self) -> str:
        """The message without the leading ``"<source>: "`` (for an errors frame, whose
        ``source`` column already names the file)."""
        text = str(self)
        prefix = f"{self.source}: "
        return text[len(prefix) :] if self.source and text.startswith(prefix) else text


class X12Error(ParseError):
    """X12 syntax or envelope problem."""


class XMLError(ParseError):
    """Malformed or unsafe XML."""


class ExportError(ParseError):
    """A CSV or Excel export cannot be mapped to its canonical table."""


class ValidationError(ScfeedsError):
    """Rows break the canonical schema (only raised when the caller asks for it)."""


class ScfeedsWarning(UserWarning):
    """Base class of every warning scfeeds emits (filter them all with this one class)."""


class XMLWarning(ScfeedsWarning):
    """A cXML document was read only in part, or some of its items could not be parsed."""


class ExportWarning(ScfeedsWarning):
    """An export was read, but something in it was ignored or could not be parsed."""


class ReconcileWarning(ScfeedsWarning):
    """The match ran, but something in its input limits what it can say (e.g. document
    units that could not be converted because no conversions were given)."""


def sole_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one error inside a group of one (nested task groups too), or the innermost group
    that holds several: what the caller of a task group should see raised."""
    only: BaseException = group
    while isinstance(only, BaseExceptionGroup) and len(only.exceptions) == 1:
        only = only.exceptions[0]
    return only
