"""Parsing human sizes ("512m", "1GiB") and durations ("30s", "5m") for policy files.

Binary multipliers throughout (k = 1024), as Docker uses for ``--memory``.
"""

from __future__ import annotations

import re

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_SIZE_MULT = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
SIZE_UNITS_HELP = "a number of bytes or a number with k, m, g or t (binary: 1k = 1024), e.g. 512m, 1g, 64MiB"

_DUR_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$", re.IGNORECASE)
_DUR_MULT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
DURATION_UNITS_HELP = "seconds as a number, or a number with ms, s, m or h, e.g. 30, 30s, 5m"


def parse_size(value: int | float | str) -> int:
    """Bytes from an int or a string with a unit; raises ``ValueError`` naming the allowed forms."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size; use {SIZE_UNITS_HELP}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"size {value} is negative; use {SIZE_UNITS_HELP}")
        return int(value)
    match = _SIZE_RE.match(value)
    if not match or (match.group(3) and match.group(3).lower() not in ("b", "ib")):
        raise ValueError(f"{value!r} is not a size; use {SIZE_UNITS_HELP}")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * _SIZE_MULT[unit])


def parse_duration(value: int | float | str) -> float:
    """Seconds from a number or a string with a unit; raises ``ValueError`` naming the allowed forms."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; use {DURATION_UNITS_HELP}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"duration {value} is negative; use {DURATION_UNITS_HELP}")
        return float(value)
    match = _DUR_RE.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a duration; use {DURATION_UNITS_HELP}")
    return float(match.group(1)) * _DUR_MULT[(match.group(2) or "s").lower()]
