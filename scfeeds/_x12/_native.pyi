"""Types of the optional C kernel (``_native.c``)."""

from typing import Any, final

@final
class Column:
    """One column for polars (``pl.Series(column)``), exported once."""

    def __arrow_c_array__(self, requested_schema: Any = None) -> tuple[Any, Any]: ...

@final
class Segments:
    """Segments of one X12 slice: raw, sid and the envelope counters within the slice."""

    @property
    def height(self) -> int: ...
    def columns(self) -> tuple[Column, ...]: ...

@final
class Elements:
    """Elements 01..m of split segments."""

    @property
    def width(self) -> int: ...
    def columns(self) -> tuple[Column, ...]: ...

def segments(data: bytes, element: int, terminator: int, /) -> Segments | None: ...
def split(stream: Any, element: int, n: int, /) -> Elements | None: ...
