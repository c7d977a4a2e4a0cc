"""Helpers shared by the loss and its backends: checks, theta, call records, relaxation, groups,
running log-sum-exps and gradients."""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import torch

from relaxclip._checks import check_tensor, check_type

Tensor = torch.Tensor
_F = TypeVar("_F", bound=Callable[..., Any])
_A = TypeVar("_A", bound="CallArgs")

#: theta as every backend takes it: a real number, a 0-d floating tensor on the features'
#: device, or ``None`` (no relaxation).
Threshold = float | Tensor | None


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float64 stays float64, everything else is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_theta(threshold: object, like: Tensor | None) -> Threshold:
    """theta checked without a host read: ``None``, a float, or a 0-d floating tensor on
    ``like``'s device. Raises TypeError for a bad type or dtype, ValueError otherwise."""
    if threshold is None:
        return None
    if isinstance(threshold, Tensor):
        check_tensor("threshold", threshold, ndim=0, floating=True)
        if like is not None and threshold.device != like.device:
            raise ValueError(
                f"threshold must be on the features' device {like.device} (no host sync moves "
                f"it), got {threshold.device}; pass threshold.to({str(like.device)!r})"
            )
        return threshold
    expected = "a float, a 0-d floating tensor or None"
    value = float(check_type("threshold", threshold, numbers.Real, expected, exclude=bool))
    dtype = compute_dtype(like.dtype) if like is not None else torch.float64
    if math.isfinite(value) and abs(value) > torch.finfo(dtype).max:  # the cast would overflow
        raise ValueError(
            f"threshold must be within the range of {dtype}, the compute dtype (|theta| <= "
            f"{torch.finfo(dtype).max:.4g}), got {value}"
        )
    return value


@dataclass(frozen=True, kw_only=True)
class CallArgs:
    """The non-differentiable arguments of one backend call (backends extend it): theta, the
    (K, N) group ids of the keys, the key index of row 0's positive and ``symmetric`` (both
    directions, square logits) or rows only."""

    threshold: Tensor | None
    groups: Tensor | None
    offset: int = 0
    symmetric: bool = True

    @classmethod
    def build(
        cls: type[_A], like: Tensor, threshold: Threshold, groups: Tensor | None, **fields: Any
    ) -> _A:
        """The record for features ``like``, theta as a fresh, detached 0-d compute-dtype tensor
        on their device (an in-place change after the forward does not reach the backward)."""
        value = check_theta(threshold, like)
        dtype = compute_dtype(like.dtype)
        theta = None
        if isinstance(value, Tensor):
            theta = value.detach().to(dtype=dtype, copy=True)
        elif value is not None:
            theta = torch.full((), value, dtype=dtype, device=like.device)
        return cls(threshold=theta, groups=group_matrix(groups), **fields)

    @classmethod
    def run(
        cls,
        function: type[torch.autograd.Function],
        q: Tensor,
        k: Tensor,
        logit_scale: Tensor,
        threshold: Threshold,
        groups: Tensor | None,
        **fields: Any,
    ) -> Tensor:
        """``function.apply(q, k, logit_scale, record)`` with autocast off (record: ``build``)."""
        args = cls.build(q, threshold, groups, **fields)
        with torch.autocast(q.device.type, enabled=False):
            return cast(Tensor, function.apply(q, k, logit_scale, args))


def analytic_backward(backward: _F) -> _F:
    """Decorator of a Function's ``backward(ctx, grad)``: autocast off, and a RuntimeError
    under ``create_graph=True`` (the analytic gradient is not differentiable again)."""

    @functools.wraps(backward)
    def run(ctx: Any, grad: Tensor) -> Any:
        if torch.is_grad_enabled():  # autograd runs a backward with grad mode iff create_graph
            raise RuntimeError(
                "relaxclip's loss has no second derivative: its backward is analytic, so a "
                "gradient taken with create_graph=True would be wrong; differentiate it once"
            )
        with torch.autocast(grad.device.type, enabled=False):
            return backward(ctx, grad)

    return cast(_F, run)


def group_matrix(groups: Tensor | None) -> Tensor | None:
    """Group ids as a (K, N) matrix: a (N,) vector becomes (1, N); ``None`` stays ``None``."""
    if groups is None or groups.dim() == 2:
        return groups
    return groups.unsqueeze(0)


def exclude_groups_(logits: Tensor, groups: Tensor, diag_start: int) -> None:
    """Set to -inf, in place, the logits of same-group pairs other than the positive, in a
    (b, N) block whose row i is sample ``diag_start + i``; ``groups``: (K, N) column ids."""
    rows = logits.shape[0]
    row_ids = groups[:, diag_start : diag_start + rows]
    same = row_ids[0, :, None] == groups[0, None, :]
    for k in range(1, groups.shape[0]):
        same |= row_ids[k, :, None] == groups[k, None, :]
    positive_view(same, diag_start).fill_(False)
    logits.masked_fill_(same, float("-inf"))


def relaxed_block(
    q: Tensor, k: Tensor, t: Tensor, args: CallArgs, diag_start: int
) -> tuple[Tensor, Tensor | None]:
    """Logits ``(t q) k^T`` of a (b, N) block (positive of row i: column ``diag_start + i``),
    relaxed and group-masked, and the mask of the positives whose gradient passes."""
    logits = (q.to(t.dtype) * t) @ k.to(t.dtype).T
    passes = None
    if args.threshold is not None:  # clamp the positives to t * theta
        bound = t * args.threshold
        positives = positive_view(logits, diag_start)
        passes = positives <= bound
        positives.clamp_(max=bound)
    if args.groups is not None:  # by row blocks: the boolean mask stays cache-sized
        for blk in row_blocks(*logits.shape):
            exclude_groups_(logits[blk], args.groups, diag_start + blk.start)
    return logits, passes


#: Logits per row block in passes over a large matrix (1 MiB of fp32 temporaries: cache-sized).
BLOCK_ELEMENTS = 2**18


def row_blocks(n_rows: int, n_cols: int, elements: int = BLOCK_ELEMENTS) -> list[slice]:
    """Slices of about ``elements // n_cols`` rows covering ``n_rows`` rows."""
    rows = max(1, elements // max(1, n_cols))
    return [slice(a, min(a + rows, n_rows)) for a in range(0, n_rows, rows)]


def positive_view(m: Tensor, diag_start: int) -> Tensor:
    """The view of a (b, N) block's positive entries ``m[i, diag_start + i]``."""
    return m[:, diag_start : diag_start + m.shape[0]].diagonal()


class ColumnLSE:
    """Running log-sum-exp of the columns of a matrix fed by row blocks (the max starts at the
    lowest finite value: an all -inf column block adds 0, not NaN)."""

    def __init__(self, n: int, dtype: torch.dtype, device: torch.device) -> None:
        self.max = torch.full((n,), torch.finfo(dtype).min, dtype=dtype, device=device)
        self.sum = torch.zeros(n, dtype=dtype, device=device)

    def add(self, block: Tensor, consume: bool = False) -> None:
        """Fold in a (b, n) block (overwritten when ``consume``: no temporary copy)."""
        new_max = torch.maximum(self.max, block.amax(dim=0))
        self.sum.mul_(torch.exp(self.max - new_max))
        shifted = block.sub_(new_max) if consume else torch.sub(block, new_max)
        self.sum += shifted.exp_().sum(dim=0)
        self.max = new_max

    def result(self) -> Tensor:
        """The (n,) column log-sum-exps."""
        return self.max + torch.log(self.sum)


def weight_products(
    w: Tensor, diag_start: int, passes: Tensor | None, args: CallArgs, q: Tensor, k: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """``(w k, w^T q, sum_ij w_ij s~_ij)`` for a (b, N) block ``w = P (+ Q)``, after removing
    ``2I`` (``I`` for rows only) and the relaxed positives from ``w`` in place (s~: theta there)."""
    diag = positive_view(w, diag_start)
    diag.sub_(2.0 if args.symmetric else 1.0)
    relaxed = torch.zeros((), dtype=w.dtype, device=w.device)
    if passes is not None:
        assert args.threshold is not None
        relaxed = torch.where(passes, 0.0, diag).sum() * args.threshold
        diag.mul_(passes)
    wk = w @ k
    return wk, w.T @ q, torch.dot(q.reshape(-1), wk.reshape(-1)) + relaxed


def check_same(names: tuple[str, str], a: Tensor, b: Tensor, *what: str) -> None:
    """Raise ValueError unless tensors ``a`` and ``b`` agree on each attribute in ``what``."""
    for attr in what:
        value_a, value_b = getattr(a, attr), getattr(b, attr)
        if value_a != value_b:
            raise ValueError(
                f"{names[0]} and {names[1]} must have the same {attr}, got {value_a} and {value_b}"
            )


def check_id_dtype(groups: Tensor) -> None:
    """Raise TypeError unless ``groups`` has an integer dtype."""
    if groups.dtype == torch.bool or groups.is_floating_point() or groups.is_complex():
        raise TypeError(
            f"groups must have an integer dtype (e.g. torch.int64 ids), got {groups.dtype}"
        )


def input_grads(
    ctx: Any,
    g: Tensor,
    t: Tensor,
    grad_a: Tensor,
    grad_b: Tensor,
    dot: Tensor,
    a: Tensor,
    b: Tensor,
) -> tuple[Tensor | None, ...]:
    """The backward's return ``(g t grad_a, g t grad_b, g dot)`` in the inputs' dtypes, then
    ``None`` per further input; ``None`` where ``ctx.needs_input_grad`` is false."""
    need = ctx.needs_input_grad
    return (
        (grad_a * (g * t)).to(a.dtype) if need[0] else None,
        (grad_b * (g * t)).to(b.dtype) if need[1] else None,
        (g * dot).reshape(t.shape) if need[2] else None,
        *(None for _ in need[3:]),
    )
