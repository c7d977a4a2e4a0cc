"""Helpers shared by the loss backends: theta, call records, relaxation, groups and gradients."""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import torch

from relaxclip._checks import check_tensor, describe

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
    """Static checks of theta (no host read), returned as given: ``None``, a real number, or a
    0-d floating tensor with data on the device of the features ``like`` (if given).

    Raises TypeError for another type or dtype, ValueError for another shape or device.
    """
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
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(
            f"threshold must be a float, a 0-d floating tensor or None, got {describe(threshold)}"
        )
    return float(threshold)


def theta_tensor(threshold: object, like: Tensor) -> Tensor | None:
    """theta as a fresh, detached 0-d tensor in the compute dtype on ``like.device`` (or None).

    A float becomes a device-side fill and a tensor a device copy: no host sync, no gradient to
    theta, and changing a tensor theta in place after the forward does not change the backward.
    Its value is not checked (a NaN theta gives a NaN loss). Raises as :func:`check_theta`.
    """
    theta = check_theta(threshold, like)
    dtype = compute_dtype(like.dtype)
    if isinstance(theta, Tensor):
        return theta.detach().to(dtype=dtype, copy=True)
    return None if theta is None else torch.full((), theta, dtype=dtype, device=like.device)


@dataclass(frozen=True, kw_only=True)
class CallArgs:
    """The non-differentiable arguments of one backend call, as one record.

    Every backend's ``torch.autograd.Function`` takes ``(q, k, logit_scale, args)``; backends
    with options extend the record. ``threshold``: :func:`theta_tensor` or ``None``;
    ``groups``: ``None`` or the (K, N) ids of the N keys; ``offset``: key index of row 0's
    positive (0 for the symmetric loss).
    """

    threshold: Tensor | None
    groups: Tensor | None
    offset: int = 0

    @classmethod
    def build(
        cls: type[_A], like: Tensor, threshold: Threshold, groups: Tensor | None, **fields: Any
    ) -> _A:
        """The record for features ``like``; ``fields`` are the other attributes."""
        theta = theta_tensor(threshold, like)
        return cls(threshold=theta, groups=group_matrix(groups), **fields)

    def apply(
        self, function: type[torch.autograd.Function], q: Tensor, k: Tensor, logit_scale: Tensor
    ) -> Tensor:
        """``function.apply(q, k, logit_scale, self)`` with autocast off."""
        with no_autocast(q):
            return cast(Tensor, function.apply(q, k, logit_scale, self))


def no_autocast(like: Tensor) -> torch.autocast:
    """Autocast off: the backends accumulate in fp32 (fp64 for fp64) by design."""
    return torch.autocast(like.device.type, enabled=False)


def autocast_off(backward: _F) -> _F:
    """Decorator: run a Function's ``backward(ctx, grad)`` with autocast off (on CPU the
    backward runs on the caller's thread, inside its autocast region)."""

    @functools.wraps(backward)
    def run(ctx: Any, grad: Tensor) -> Any:
        with no_autocast(grad):
            return backward(ctx, grad)

    return cast(_F, run)


def relax_diagonal_(diag: Tensor, bound: Tensor | None) -> Tensor | None:
    """Clamp a writable diagonal view in place to ``min(l_ii, bound)`` (``bound = t * theta``).

    Returns the mask ``l_ii <= bound`` of the entries whose gradient passes (``None`` without
    relaxation).
    """
    if bound is None:
        return None
    passes = diag <= bound
    diag.clamp_(max=bound)
    return passes


def group_matrix(groups: Tensor | None) -> Tensor | None:
    """Group ids as a (K, N) matrix: a (N,) vector becomes (1, N); ``None`` stays ``None``."""
    if groups is None or groups.dim() == 2:
        return groups
    return groups.unsqueeze(0)


def exclude_groups_(logits: Tensor, groups: Tensor | None, diag_start: int) -> None:
    """Set to -inf, in place, the logits of same-group pairs other than the positive.

    ``logits`` is a (b, N) block whose row i is sample ``diag_start + i`` (its positive in that
    column); ``groups`` the (K, N) ids of the columns. Only a block-sized mask is built.
    """
    if groups is None:
        return
    rows = logits.shape[0]
    row_ids = groups[:, diag_start : diag_start + rows]
    same = row_ids[0, :, None] == groups[0, None, :]
    for k in range(1, groups.shape[0]):
        same |= row_ids[k, :, None] == groups[k, None, :]
    same[:, diag_start : diag_start + rows].diagonal().fill_(False)  # positives are always kept
    logits.masked_fill_(same, float("-inf"))


def relaxed_block(
    q: Tensor, k: Tensor, t: Tensor, args: CallArgs, diag_start: int
) -> tuple[Tensor, Tensor | None]:
    """Logits ``(t q) k^T`` of a (b, N) block, relaxed and group-masked, and the positives' mask.

    The positive of row i is column ``diag_start + i``; it is clamped to ``t * threshold``.
    """
    logits = (q.to(t.dtype) * t) @ k.to(t.dtype).T
    positives = logits[:, diag_start : diag_start + q.shape[0]].diagonal()
    theta = args.threshold
    passes = relax_diagonal_(positives, None if theta is None else t * theta)
    if args.groups is not None:  # by row blocks: the boolean mask stays cache-sized
        for blk in row_blocks(*logits.shape):
            exclude_groups_(logits[blk], args.groups, diag_start + blk.start)
    return logits, passes


#: Logits per row block in passes over a large matrix: the block temporaries (1 MiB in fp32)
#: stay in cache, and column reductions run as running statistics over row blocks.
BLOCK_ELEMENTS = 2**18


def row_blocks(n_rows: int, n_cols: int, elements: int = BLOCK_ELEMENTS) -> list[slice]:
    """Slices of about ``elements // n_cols`` rows covering ``n_rows`` rows."""
    rows = max(1, elements // max(1, n_cols))
    return [slice(a, min(a + rows, n_rows)) for a in range(0, n_rows, rows)]


def weight_products(
    w: Tensor,
    positives: Tensor,
    passes: Tensor | None,
    threshold: Tensor | None,
    q: Tensor,
    k: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """The two gradient matmuls of one (b, N) block and its scale-gradient sum.

    ``w`` is dL/dl up to the incoming gradient, ``positives`` a writable view of its positive
    entries, ``passes`` their mask (relaxed positives are zeroed in place). Returns
    ``(w k, w^T q, sum_ij w_ij s~_ij)`` with s~ = theta on relaxed positives.
    """
    relaxed = torch.zeros((), dtype=w.dtype, device=w.device)
    if passes is not None:
        assert threshold is not None
        relaxed = torch.where(passes, 0.0, positives).sum() * threshold
        positives.mul_(passes)
    wk = w @ k
    return wk, w.T @ q, torch.dot(q.reshape(-1), wk.reshape(-1)) + relaxed


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
