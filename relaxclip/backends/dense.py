"""Dense backend: one (b, N) logit matrix kept for an analytic backward of two matmuls.

Memory is O(b N): the forward keeps the logits, the backward builds one weight matrix of the
same size; every other pass works on cache-sized row blocks. Use the chunked backend when that
does not fit. The entry points return sums, not means (see :mod:`relaxclip.backends`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from relaxclip.backends._common import (
    CallArgs,
    Threshold,
    autocast_off,
    compute_dtype,
    input_grads,
    relaxed_block,
    row_blocks,
    weight_products,
)

Tensor = torch.Tensor

#: Keyword options of this backend's entry functions: none (see ``relaxclip.backends``).
OPTIONS: dict[str, Callable[[object], Any]] = {}


@dataclass(frozen=True, kw_only=True)
class _DenseArgs(CallArgs):
    """:class:`CallArgs` plus ``symmetric``: both directions (square logits) or rows only."""

    symmetric: bool


def _row_col_lse(logits: Tensor) -> tuple[Tensor, Tensor]:
    """Row and column log-sum-exp of a (B, N) matrix in one pass over its row blocks.

    The running column max starts at the lowest finite value, so a column block that groups
    left all -inf adds exp(-inf) = 0 instead of NaN.
    """
    n, m = logits.shape
    row_lse = torch.empty(n, dtype=logits.dtype, device=logits.device)
    col_max = torch.full(
        (m,), torch.finfo(logits.dtype).min, dtype=logits.dtype, device=logits.device
    )
    col_sum = torch.zeros(m, dtype=logits.dtype, device=logits.device)
    for blk in row_blocks(n, m):
        block = logits[blk]
        row_max = block.amax(dim=1, keepdim=True)
        row_lse[blk] = torch.sub(block, row_max).exp_().sum(dim=1).log_() + row_max.squeeze(1)
        new_max = torch.maximum(col_max, block.amax(dim=0))
        col_sum.mul_(torch.exp(col_max - new_max))
        col_sum += torch.sub(block, new_max).exp_().sum(dim=0)
        col_max = new_max
    return row_lse, col_max + torch.log(col_sum)


class _Dense(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, logit_scale: Tensor, args: _DenseArgs) -> Tensor:
        t = logit_scale.detach().to(compute_dtype(q.dtype))
        logits, passes = relaxed_block(q, k, t, args, args.offset)  # l_ij = t * s_ij
        positives = logits[:, args.offset : args.offset + q.shape[0]].diagonal().sum()
        if args.symmetric:
            row_lse, col_lse = _row_col_lse(logits)
            loss = row_lse.sum() + col_lse.sum() - 2.0 * positives
        else:
            row_lse, col_lse = torch.logsumexp(logits, dim=1), None
            loss = row_lse.sum() - positives
        ctx.args = args
        ctx.save_for_backward(q, k, t, logits, row_lse, col_lse, passes)
        return loss

    @staticmethod
    @once_differentiable
    @autocast_off
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        q, k, t, logits, row_lse, col_lse, passes = ctx.saved_tensors
        args = ctx.args
        # W / g = P + Q - 2I (P - I for rows only): P row, Q column softmax, by row blocks
        w = torch.empty_like(logits)
        for blk in row_blocks(*logits.shape):
            torch.sub(logits[blk], row_lse[blk, None], out=w[blk]).exp_()
            if col_lse is not None:
                w[blk] += torch.sub(logits[blk], col_lse).exp_()
        positives = w[:, args.offset : args.offset + q.shape[0]].diagonal()
        positives.sub_(2.0 if args.symmetric else 1.0)
        cdt = logits.dtype
        wk, wtq, dot = weight_products(w, positives, passes, args.threshold, q.to(cdt), k.to(cdt))
        # G = g t W: dQ = G K, dK = G^T Q, dL/dt = g sum_ij W_ij s~_ij
        return input_grads(ctx, grad.to(cdt), t, wk, wtq, dot, q, k)


def symmetric_loss_sum(
    x: Tensor, y: Tensor, logit_scale: Tensor, threshold: Threshold,
    *, groups: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """Sum over i of ``(lse_j l_ij - l_ii) + (lse_j l_ji - l_ii)``; see :mod:`relaxclip.loss`.

    Args:
        x, y: (B, D) features (already normalised if wanted), same dtype and device.
        logit_scale: 0-d tensor t > 0 (fp32, or fp64 for fp64 features); may require grad.
        threshold: theta, the positive logit being ``t * min(s_ii, theta)``: a float, a 0-d
            floating tensor on the features' device (no host sync) or ``None``; a constant
            (no gradient flows to it).
        groups: ``None`` or integer ids (K, B) (or (B,)) on the features' device: for i != j,
            l_ij = -inf when ``groups[k, i] == groups[k, j]`` for some k.

    Returns:
        0-d tensor in the compute dtype, differentiable w.r.t. x, y and t.
    """
    args = _DenseArgs.build(x, threshold, groups, symmetric=True)
    return args.apply(_Dense, x, y, logit_scale)


def rows_loss_sum(
    q: Tensor, k: Tensor, logit_scale: Tensor, threshold: Threshold, offset: int,
    *, groups: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """One direction: sum over rows i of q of ``lse_j l_ij - l_{i, offset+i}``, l = t q k^T.

    ``q`` (b, D), ``k`` (N, D) with N >= offset + b: the positive of row i is key offset + i;
    ``groups`` are the ids (K, N) (or (N,)) of the keys. Otherwise as :func:`symmetric_loss_sum`.
    """
    args = _DenseArgs.build(q, threshold, groups, offset=offset, symmetric=False)
    return args.apply(_Dense, q, k, logit_scale)


__all__ = ["OPTIONS", "rows_loss_sum", "symmetric_loss_sum"]
