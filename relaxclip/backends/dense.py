"""Dense backend: one similarity matmul serves both directions, analytic backward with two matmuls.

Memory is O(B^2): the forward keeps the (B, B) logit matrix for the backward, which builds one (B, B)
weight matrix; every other pass works on cache-sized row blocks. Use the chunked
backend (``relaxclip.backends.chunked``) when that does not fit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from relaxclip.backends._common import (
    CallArgs,
    autocast_off,
    compute_dtype,
    exclude_groups_,
    input_grads,
    relax_diagonal_,
    weight_products,
)

Tensor = torch.Tensor


def _scaled_logits(q: Tensor, k: Tensor, t: Tensor) -> Tensor:
    """``(t * q) @ k^T`` in the compute dtype of ``t``: scaling the (b, D) side saves a (b, N) pass."""
    return (q.to(t.dtype) * t) @ k.to(t.dtype).T


#: Logits per row block in the passes over the (B, B) matrix: the block temporaries (1 MiB in
#: fp32) stay in cache, and no (B, B) temporary is allocated besides the saved logits and the
#: backward's weight matrix. Column reductions of a row-major matrix are slow as whole-matrix
#: kernels; row blocks with running column statistics are several times faster.
_BLOCK_ELEMENTS = 2**18


def _row_blocks(n_rows: int, n_cols: int) -> list[slice]:
    rows = max(1, _BLOCK_ELEMENTS // max(1, n_cols))
    return [slice(a, min(a + rows, n_rows)) for a in range(0, n_rows, rows)]


def _row_col_lse(logits: Tensor) -> tuple[Tensor, Tensor]:
    """Row and column log-sum-exp of a (B, N) matrix in one pass over its row blocks (read-only).

    Every row and column must hold a finite entry (the positive); a column block may be all -inf
    (pairs excluded by ``groups``): the running column max starts at the lowest finite value, so
    no ``-inf - (-inf)`` occurs.
    """
    n, m = logits.shape
    row_lse = torch.empty(n, dtype=logits.dtype, device=logits.device)
    low = torch.finfo(logits.dtype).min
    col_max = torch.full((m,), low, dtype=logits.dtype, device=logits.device)
    col_sum = torch.zeros(m, dtype=logits.dtype, device=logits.device)
    for blk in _row_blocks(n, m):
        block = logits[blk]
        row_max = block.amax(dim=1, keepdim=True)
        row_lse[blk] = torch.sub(block, row_max).exp_().sum(dim=1).log_() + row_max.squeeze(1)
        new_max = torch.maximum(col_max, block.amax(dim=0))
        col_sum.mul_(torch.exp(col_max - new_max))
        col_sum += torch.sub(block, new_max).exp_().sum(dim=0)
        col_max = new_max
    return row_lse, col_max + torch.log(col_sum)


def _relax_and_exclude(logits: Tensor, t: Tensor, args: CallArgs) -> Tensor | None:
    """In place on the (b, N) logits ``t s``: clamp the positives (row i: column ``args.offset + i``)
    to ``t * threshold`` and set same-group non-positive pairs to -inf (softmax weight 0), by row
    blocks. Returns the mask of the positives whose gradient passes (:func:`relax_diagonal_`)."""
    offset, theta = args.offset, args.threshold
    positives = logits[:, offset : offset + logits.shape[0]].diagonal()
    passes = relax_diagonal_(positives, None if theta is None else t * theta)
    if args.groups is not None:
        for blk in _row_blocks(*logits.shape):
            exclude_groups_(logits[blk], args.groups, offset + blk.start)
    return passes


class _DenseSymmetric(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, y: Tensor, logit_scale: Tensor, args: CallArgs) -> Tensor:
        t = logit_scale.detach().to(compute_dtype(x.dtype))
        logits = _scaled_logits(x, y, t)  # (B, B): l_ij = t * s_ij
        passes = _relax_and_exclude(logits, t, args)
        row_lse, col_lse = _row_col_lse(logits)
        loss = row_lse.sum() + col_lse.sum() - 2.0 * logits.diagonal().sum()
        ctx.args = args
        ctx.save_for_backward(x, y, t, logits, row_lse, col_lse, passes)
        return loss

    @staticmethod
    @once_differentiable
    @autocast_off
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, y, t, logits, row_lse, col_lse, passes = ctx.saved_tensors
        cdt = logits.dtype
        g = grad.to(cdt)
        # W / g = P + Q - 2I: P row softmax, Q column softmax of the relaxed logits, by row blocks.
        w = torch.empty_like(logits)
        for blk in _row_blocks(*logits.shape):
            torch.sub(logits[blk], row_lse[blk, None], out=w[blk]).exp_()
            w[blk] += torch.sub(logits[blk], col_lse).exp_()
        positives = w.diagonal()
        positives.sub_(2.0)
        wy, wtx, dot = weight_products(
            w, positives, passes, ctx.args.threshold, x.to(cdt), y.to(cdt)
        )
        # G = g t W: dX = G Y, dY = G^T X, dL/dt = g sum_ij W_ij s~_ij.
        return input_grads(ctx, g, t, wy, wtx, dot, x, y)


class _DenseRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, logit_scale: Tensor, args: CallArgs) -> Tensor:
        t = logit_scale.detach().to(compute_dtype(q.dtype))
        logits = _scaled_logits(q, k, t)  # (b, N)
        passes = _relax_and_exclude(logits, t, args)
        offset, b = args.offset, q.shape[0]
        loss = -torch.log_softmax(logits, dim=1)[:, offset : offset + b].diagonal().sum()
        ctx.args = args
        ctx.save_for_backward(q, k, t, logits, passes)
        return loss

    @staticmethod
    @once_differentiable
    @autocast_off
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        q, k, t, logits, passes = ctx.saved_tensors
        cdt = logits.dtype
        g = grad.to(cdt)
        w = torch.softmax(logits, dim=1)  # row softmax P
        positives = w[:, ctx.args.offset : ctx.args.offset + q.shape[0]].diagonal()
        positives.sub_(1.0)
        wk, wtq, dot = weight_products(
            w, positives, passes, ctx.args.threshold, q.to(cdt), k.to(cdt)
        )
        return input_grads(ctx, g, t, wk, wtq, dot, q, k)


#: Keyword options of this backend's entry functions: none (see ``relaxclip.backends``).
OPTIONS: dict[str, Callable[[object], Any]] = {}


def symmetric_loss_sum(
    x: Tensor, y: Tensor, logit_scale: Tensor, threshold: float | Tensor | None,
    *, groups: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """Sum over i of ``(lse_j l_ij - l_ii) + (lse_j l_ji - l_ii)``; see ``relaxclip.loss``.

    Args:
        x, y: (B, D) features (already normalised if wanted), same dtype and device.
        logit_scale: 0-d tensor t > 0 (fp32, or fp64 for fp64 features); may require grad.
        threshold: theta, the positive logit being ``t * min(s_ii, theta)``: a float, a 0-d
            floating tensor on the features' device (used there: no host sync), or ``None`` for
            no relaxation. A constant of the call: no gradient flows to it, even when it requires
            grad (see :func:`relaxclip.backends._common.theta_tensor`).
        groups: ``None`` or integer ids (K, B) (or (B,)) on the features' device: for i != j,
            l_ij = -inf when ``groups[k, i] == groups[k, j]`` for some k (not differentiable).

    Returns a 0-d tensor in the compute dtype (fp32, or fp64), differentiable w.r.t. x, y and t
    (not ``threshold`` nor ``groups``).
    """
    return CallArgs.build(x, threshold, groups).apply(_DenseSymmetric, x, y, logit_scale)


def rows_loss_sum(
    q: Tensor, k: Tensor, logit_scale: Tensor, threshold: float | Tensor | None, offset: int,
    *, groups: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """One direction: sum over rows i of q of ``lse_j l_ij - l_{i, offset+i}``, l = t * q k^T.

    Args:
        q: (b, D) queries; k: (N, D) keys with N >= offset + b; the positive of row i is key offset+i.
        logit_scale, threshold: as :func:`symmetric_loss_sum` (theta bounds s_{i, offset+i}).
        groups: ``None`` or integer ids (K, N) (or (N,)) of the KEYS; query i has the ids of key
            ``offset + i``. Same-group pairs other than the positive get l_ij = -inf.

    Returns a 0-d tensor in the compute dtype, differentiable w.r.t. q, k and t.
    """
    args = CallArgs.build(q, threshold, groups, offset=offset)
    return args.apply(_DenseRows, q, k, logit_scale)


__all__ = ["OPTIONS", "rows_loss_sum", "symmetric_loss_sum"]
