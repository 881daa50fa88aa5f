"""Implementation of :mod:`scfeeds.portal` (the simulated supplier portal)."""

from typing import Final

DEFAULT_PORT: Final = 8765
"""The port ``scfeeds portal`` and ``run_forever`` listen on unless told otherwise."""
