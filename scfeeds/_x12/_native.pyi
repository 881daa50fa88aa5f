"""Types of the optional C kernel (``_native.c``)."""

from typing import Any, final

@final
class Segments:
    """Segments of one X12 slice (export once with ``__arrow_c_array__``)."""

    @property
    def height(self) -> int: ...
    def __arrow_c_array__(self, requested_schema: Any = None) -> tuple[Any, Any]: ...

def segments(data: bytes, element: int, terminator: int, /) -> Segments | None: ...

@final
class Elements:
    """Elements 01..m of split segments (export once with ``__arrow_c_array__``)."""

    @property
    def width(self) -> int: ...
    def __arrow_c_array__(self, requested_schema: Any = None) -> tuple[Any, Any]: ...

def split(stream: Any, element: int, n: int, /) -> Elements | None: ...
