"""Small text helpers shared by the dashboard's modules: one-line errors, times, sizes."""

from __future__ import annotations

import datetime


def first_line(value: object) -> str:
    """The first non-empty line of ``str(value)``, or ``""``."""
    lines = str(value).strip().splitlines()
    return lines[0].strip() if lines else ""


def one_line(error: BaseException) -> str:
    """``Kind: first line of the message`` (never a traceback)."""
    text = first_line(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def when(epoch: float | None) -> str:
    """Local time of *epoch* seconds, ``YYYY-MM-DD HH:MM:SS``; ``-`` when unknown."""
    if epoch is None:
        return "-"
    return datetime.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float | None) -> str:
    """``4.2 s``, ``3m 05s``, ``2h 01m``, ``1d 03h``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    seconds = max(seconds, 0.0)  # clocks of two hosts may disagree a little
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours:02d}h"
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def size(n_bytes: float | None) -> str:
    """``512 MiB``, ``4.0 GiB``; ``-`` when unknown."""
    if not n_bytes:
        return "-"
    value = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if value >= 100 or unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
