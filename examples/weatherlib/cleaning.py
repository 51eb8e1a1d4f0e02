"""Cleaning rules for the stations' loggers."""

from __future__ import annotations

import pandas as pd

#: The loggers write this when a reading failed.
ERROR_CODE = -999.0
#: Plausible air temperatures, in degrees Celsius.
PLAUSIBLE = (-60.0, 60.0)


def clean_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Readings without the logger's error code, missing values or implausible temperatures."""
    frame = frame[frame["temperature_c"] != ERROR_CODE]
    frame = frame.dropna(subset=["temperature_c"])
    low, high = PLAUSIBLE
    return frame[frame["temperature_c"].between(low, high)].reset_index(drop=True)
