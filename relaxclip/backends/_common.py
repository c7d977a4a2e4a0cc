"""Helpers shared by the loss backends: compute dtype, diagonal relaxation and gradient packaging."""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import torch

Tensor = torch.Tensor
_F = TypeVar("_F", bound=Callable[..., Any])
_A = TypeVar("_A", bound="CallArgs")

#: What every backend accepts as the relaxation threshold theta: a Python real number, a 0-d
#: floating tensor on the features' device, or ``None`` (no relaxation); see :func:`theta_tensor`.
Threshold = float | Tensor | None


@dataclass(frozen=True, kw_only=True)
class CallArgs:
    """The non-differentiable arguments of one backend call, as ONE record.

    Every backend's ``torch.autograd.Function`` takes ``(q, k, logit_scale, args)``: the
    differentiable inputs, then this record (autograd neither sees nor differentiates what it
    holds); backends with options extend it (``chunk_size``; triton's config).

    Attributes:
        threshold: theta as a 0-d tensor in the compute dtype on the features' device (a private,
            detached copy: see :func:`theta_tensor`), or ``None`` for no relaxation; the positive
            logit is ``t * min(s_ii, theta)``.
        groups: ``None`` or the (K, N) integer ids of the N keys (see :mod:`relaxclip.backends`).
        offset: key index of row 0's positive (``rows_loss_sum``); 0 for the symmetric loss.
    """

    threshold: Tensor | None
    groups: Tensor | None
    offset: int = 0

    @classmethod
    def build(
        cls: type[_A], like: Tensor, threshold: Threshold, groups: Tensor | None, **fields: Any
    ) -> _A:
        """The record for features ``like``: ``threshold`` through :func:`theta_tensor`, ``groups``
        as a (K, N) matrix (:func:`group_matrix`); ``fields``: the other attributes (``offset``,
        a subclass's own)."""
        theta = theta_tensor(threshold, like)
        return cls(threshold=theta, groups=group_matrix(groups), **fields)

    def apply(
        self, function: type[torch.autograd.Function], q: Tensor, k: Tensor, logit_scale: Tensor
    ) -> Tensor:
        """``function.apply(q, k, logit_scale, self)`` with autocast off (:func:`no_autocast`)."""
        with no_autocast(q):
            return cast(Tensor, function.apply(q, k, logit_scale, self))


def theta_tensor(threshold: Threshold, like: Tensor) -> Tensor | None:
    """theta as the backends use it: a fresh 0-d tensor in the compute dtype of ``like`` (fp64 for
    fp64 features, else fp32) on ``like.device``, or ``None``.

    A Python real number becomes a device-side fill (no host-to-device copy, no sync). A tensor
    must be 0-d, floating point and on ``like``'s device; it is copied on the device (``detach``,
    cast, copy: no ``.item()``, no host sync), so theta is a constant of the call: no gradient
    flows to it even when it requires grad, and changing it in place after the forward does not
    change the backward. Its value is not checked (that would need a host sync): a NaN theta gives
    a NaN loss. Raises TypeError for another type or a non-floating tensor, ValueError for a
    tensor of another shape or device.
    """
    if threshold is None:
        return None
    dtype = compute_dtype(like.dtype)
    if isinstance(threshold, Tensor):
        if not threshold.is_floating_point():
            raise TypeError(f"threshold must be a floating-point tensor, got {threshold.dtype}")
        if threshold.dim() != 0:
            raise ValueError(
                f"threshold must be a 0-d tensor (a scalar), got shape {tuple(threshold.shape)}"
            )
        if threshold.device != like.device:
            raise ValueError(
                f"threshold must be on the features' device {like.device}, got {threshold.device}"
            )
        return threshold.detach().to(dtype=dtype, copy=True)
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(
            f"threshold must be a float, a 0-d floating tensor or None, "
            f"got {type(threshold).__name__}"
        )
    return torch.full((), float(threshold), dtype=dtype, device=like.device)  # a fill, no copy


def no_autocast(like: Tensor) -> torch.autocast:
    """Autocast off for the backend's own matmuls: they accumulate in fp32 (fp64 for fp64) by design,
    whatever ``torch.autocast`` region the loss is called from (open_clip calls it inside one)."""
    return torch.autocast(like.device.type, enabled=False)


def autocast_off(backward: _F) -> _F:
    """Decorator: run a Function's ``backward(ctx, grad)`` with autocast off (on CPU the backward
    runs on the caller's thread, inside its autocast region if ``.backward()`` is called there)."""

    @functools.wraps(backward)
    def run(ctx: Any, grad: Tensor) -> Any:
        with no_autocast(grad):
            return backward(ctx, grad)

    return cast(_F, run)


def positive_int_option(option: str) -> Callable[[object], int | None]:
    """Validator for an optional positive-int backend option: ``None`` (the backend's default),
    a Python or numpy integer >= 1 (returned as ``int``); bool, float and str raise."""

    def check(value: object) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(
                f"{option} must be a positive int or None, got {type(value).__name__} {value!r}"
            )
        if int(value) < 1:
            raise ValueError(f"{option} must be >= 1, got {int(value)}")
        return int(value)

    return check


def bool_option(option: str) -> Callable[[object], bool]:
    """Validator for a boolean backend option (exactly ``True`` or ``False``)."""

    def check(value: object) -> bool:
        if not isinstance(value, bool):
            raise TypeError(f"{option} must be True or False, got {type(value).__name__} {value!r}")
        return value

    return check


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float64 stays float64, everything else is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def relax_diagonal_(diag: Tensor, bound: Tensor | float | None) -> Tensor | None:
    """Clamp a (writable) diagonal view in place to ``min(l_ii, bound)``.

    ``bound`` is the relaxed logit ``t * theta`` (a 0-d tensor on ``diag``'s device, so no
    host sync) or ``None`` for no relaxation. Returns the boolean mask ``l_ii <= bound`` of the
    entries whose gradient passes (``None`` when every diagonal gradient passes).
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
    """Set in place to -inf the logits of the pairs that are not negatives because of ``groups``.

    ``logits`` is a (b, N) block whose row i is the global sample ``diag_start + i`` and whose
    positive sits in column ``diag_start + i``; ``groups`` is the (K, N) integer id matrix of the
    N columns (the rows' ids are ``groups[:, diag_start : diag_start + b]``). A pair (i, j), j not
    the positive, is removed when ``groups[k, diag_start + i] == groups[k, j]`` for any k. Only a
    block-sized boolean mask is built (never a B x B one unless the block is). ``None``: no-op.
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


def weight_products(
    w: Tensor,
    positives: Tensor,
    passes: Tensor | None,
    threshold: Tensor | None,
    q: Tensor,
    k: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """The two gradient matmuls of one (b, N) block and the scale-gradient sum, in one place.

    ``w`` holds dL/dl up to the factor ``g`` (the incoming gradient) for logits ``l = t q k^T``;
    ``positives`` is a writable view of its positive entries and ``passes`` their mask
    ``s_ii <= threshold`` (``None``: no relaxation). Relaxed positives are zeroed in place (no
    gradient through s_ii > threshold). Returns ``(w k, w^T q, sum_ij w_ij s~_ij)`` where s~ is the
    relaxed similarity (theta on relaxed positives): the last term is taken from the (b, D)
    product ``sum_i <q_i, (w k)_i>`` instead of another pass over the (b, N) block.
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
    """The backward's return: ``(g t grad_a, g t grad_b, g dot)`` then ``None`` per further input.

    ``grad_a``/``grad_b`` are ``W B`` and ``W^T A`` (shapes of ``a``/``b``, compute dtype), cast
    back to ``a.dtype``/``b.dtype``; ``g dot`` is reshaped to ``t``'s shape (``dL/dt``). An input
    whose ``ctx.needs_input_grad`` is false gets ``None``.
    """
    need = ctx.needs_input_grad
    return (
        (grad_a * (g * t)).to(a.dtype) if need[0] else None,
        (grad_b * (g * t)).to(b.dtype) if need[1] else None,
        (g * dot).reshape(t.shape) if need[2] else None,
        *(None for _ in need[3:]),
    )
