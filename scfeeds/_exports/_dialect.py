"""What writing and reading an export share: the two file formats and preset lookup."""

from __future__ import annotations

from typing import Literal

from scfeeds._presets import PRESETS, ExportPreset
from scfeeds.exceptions import ConfigurationError

ExportFormat = Literal["csv", "xlsx"]


def _resolve_preset(preset: ExportPreset | str) -> ExportPreset:
    if isinstance(preset, ExportPreset):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise ConfigurationError(
            f"unknown export preset {preset!r}; expected one of {', '.join(PRESETS)} "
            "or an ExportPreset instance"
        ) from None
