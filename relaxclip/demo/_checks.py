"""Argument checks shared by the demo's modules (clear ``TypeError`` / ``ValueError``)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["check_int", "check_positive_float"]


def check_int(name: str, value: object, minimum: int) -> int:
    """``value`` as an ``int`` (numpy integers accepted, bools rejected), at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_positive_float(name: str, value: object) -> float:
    """``value`` as a finite ``float`` > 0 (ints and numpy reals accepted, bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return float(value)
