"""Argument checks shared by every module: one rule and one message shape.

A wrong type raises ``TypeError``, a bad value ``ValueError``; every message reads
``"<name> must be <what was expected>, got <what was given>"``. Each check returns the value
in its canonical type (``int`` for any integral, ``float`` for any real), so callers can use the
result directly.

Example:
    >>> check_int("batch_size", 4, minimum=1)
    4
    >>> check_bool("normalize", "no")
    Traceback (most recent call last):
    TypeError: normalize must be True or False, got str 'no'
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection, Iterable, Sequence
from typing import Any, TypeVar

import torch

__all__ = [
    "check_bool",
    "check_choice",
    "check_finite_rows",
    "check_int",
    "check_real",
    "check_tensor",
    "check_type",
    "describe",
    "format_rows",
]

_T = TypeVar("_T")
FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def describe(value: object) -> str:
    """``"<type> <repr>"`` of a value, shortened to 80 characters, for "got ..." messages
    (a tensor: its shape, dtype and device)."""
    if isinstance(value, torch.Tensor):
        return f"Tensor of shape {tuple(value.shape)}, {value.dtype} on {value.device}"
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(value).__name__} {text}"


def check_bool(name: str, value: object) -> bool:
    """``value`` if it is exactly ``True`` or ``False`` (``"no"``, ``1`` and numpy bools raise)."""
    return bool(check_type(name, value, bool, "True or False"))


def check_type(
    name: str,
    value: object,
    types: type | tuple[type, ...],
    expected: str,
    hint: str = "",
    *,
    exclude: type | tuple[type, ...] = (),
) -> Any:
    """``value`` if it is an instance of ``types`` but not of ``exclude`` (``bool`` for a number,
    ``str`` for a sequence), else ``TypeError`` saying it must be ``expected`` (then ``hint``)."""
    if isinstance(value, exclude) or not isinstance(value, types):
        raise TypeError(f"{name} must be {expected}, got {describe(value)}{hint}")
    return value


def check_int(
    name: str, value: object, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """``value`` as an ``int``: any integral (numpy included) but bool, within the bounds."""
    out = int(check_type(name, value, numbers.Integral, "an int", exclude=bool))
    if (minimum is not None and out < minimum) or (maximum is not None and out > maximum):
        raise ValueError(f"{name} must be an int {_range(minimum, maximum)}, got {out}")
    return out


def check_real(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    finite: bool = True,
) -> float:
    """``value`` as a ``float``: any real number (numpy included) but bool, within bounds.

    ``low``/``high`` bound the value (inclusive unless ``low_open``/``high_open``); NaN always
    raises and infinities raise when ``finite``.
    """
    out = float(check_type(name, value, numbers.Real, "a real number", exclude=bool))
    below = low is not None and (out <= low if low_open else out < low)
    above = high is not None and (out >= high if high_open else out > high)
    if math.isnan(out) or (finite and math.isinf(out)) or below or above:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        if low is not None or high is not None:
            low_, high_ = "-inf" if low is None else low, "inf" if high is None else high
            expected = f"a number in {lo}{low_}, {high_}{hi}"
        else:
            expected = "a finite number" if finite else "a number, not NaN"
        raise ValueError(f"{name} must be {expected}, got {out}")
    return out


def check_choice(name: str, value: _T, choices: Collection[_T]) -> _T:
    """``value`` if it is one of ``choices`` (compared with ``==``; bools never match).

    TypeError for a non-str ``value`` among str ``choices``, ValueError for any other miss.
    """
    try:
        ok = value in choices
    except TypeError:
        ok = False
    if not ok or isinstance(value, bool):
        options = ", ".join(repr(c) for c in choices)
        wrong_type = all(isinstance(c, str) for c in choices) and not isinstance(value, str)
        error = TypeError if wrong_type else ValueError
        raise error(f"{name} must be one of {options}, got {describe(value)}")
    return value


def check_tensor(
    name: str,
    value: object,
    *,
    ndim: int | Sequence[int] | None = None,
    floating: bool = False,
) -> torch.Tensor:
    """A dense ``torch.Tensor`` with data (not on the meta device), of ``ndim`` dimensions.

    ``floating=True`` also requires float16, bfloat16, float32 or float64.
    """
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.layout != torch.strided:
        raise TypeError(
            f"{name} must be a dense (strided) tensor, got layout {value.layout}; "
            "convert it with .to_dense()"
        )
    if value.device.type == "meta":
        raise ValueError(f"{name} must hold values, got a tensor on the meta device (no data)")
    if floating and value.dtype not in FLOATING:
        hint = " (cast float8 to bfloat16 first)" if "float8" in str(value.dtype) else ""
        raise TypeError(
            f"{name} must be a floating-point tensor (float16, bfloat16, float32 or float64), "
            f"got dtype {value.dtype}{hint}"
        )
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if dims is not None and value.dim() not in dims:
        expected = " or ".join(f"{d}-D" for d in dims)
        raise ValueError(f"{name} must be {expected}, got shape {tuple(value.shape)}")
    return value


def format_rows(rows: Iterable[Any], total: int) -> str:
    """``"[3, 7] (2 of 10)"``: the first ten indices of ``rows`` and their count out of ``total``."""
    found = [int(r) for r in rows]
    shown = ", ".join(map(str, found[:10]))
    return f"[{shown}{', ...' if len(found) > 10 else ''}] ({len(found)} of {total})"


def check_finite_rows(name: str, value: torch.Tensor, hint: str = "") -> None:
    """Raise ``ValueError`` naming the rows of a (N, ...) tensor that hold NaN or Inf."""
    flat = value.detach().flatten(1) if value.dim() > 1 else value.detach().unsqueeze(1)
    bad = ~torch.isfinite(flat).all(dim=1)
    if bool(bad.any()):
        rows = format_rows(bad.nonzero().flatten().tolist(), value.shape[0])
        raise ValueError(f"{name} must be finite, got NaN or Inf in rows {rows}{hint}")


def _range(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f"in [{minimum}, {maximum}]"
    return f">= {minimum}" if minimum is not None else f"<= {maximum}"
