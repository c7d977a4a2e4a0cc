"""Dense backend: one (b, N) logit matrix kept for an analytic backward of two matmuls.

Memory O(b N); sums, not means (docs/concepts.md#backends).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from relaxclip.backends import _common as common
from relaxclip.backends._common import CallArgs, Threshold

Tensor = torch.Tensor

#: Keyword options of this backend's entry functions: none (see ``relaxclip.backends``).
OPTIONS: dict[str, Callable[[object], Any]] = {}


def _row_col_lse(logits: Tensor) -> tuple[Tensor, Tensor]:
    """Row and column log-sum-exp of a (B, N) matrix in one pass over its row blocks."""
    n, m = logits.shape
    row_lse = torch.empty(n, dtype=logits.dtype, device=logits.device)
    col_lse = common.ColumnLSE(m, logits.dtype, logits.device)
    for blk in common.row_blocks(n, m):
        block = logits[blk]
        row_max = block.amax(dim=1, keepdim=True)
        row_lse[blk] = torch.sub(block, row_max).exp_().sum(dim=1).log_() + row_max.squeeze(1)
        col_lse.add(block)
    return row_lse, col_lse.result()


class _Dense(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, logit_scale: Tensor, args: CallArgs) -> Tensor:
        t = logit_scale.detach().to(common.compute_dtype(q.dtype))
        logits, passes = common.relaxed_block(q, k, t, args, args.offset)  # l_ij = t * s_ij
        positives = common.positive_view(logits, args.offset).sum()
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
    @common.analytic_backward
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        q, k, t, logits, row_lse, col_lse, passes = ctx.saved_tensors
        w = torch.empty_like(logits)  # P (+ Q), by row blocks
        for blk in common.row_blocks(*logits.shape):
            torch.sub(logits[blk], row_lse[blk, None], out=w[blk]).exp_()
            if col_lse is not None:
                w[blk] += torch.sub(logits[blk], col_lse).exp_()
        cdt = logits.dtype
        wk, wtq, dot = common.weight_products(
            w, ctx.args.offset, passes, ctx.args, q.to(cdt), k.to(cdt)
        )
        return common.input_grads(ctx, grad.to(cdt), t, wk, wtq, dot, q, k)


def symmetric_loss_sum(
    x: Tensor, y: Tensor, logit_scale: Tensor, threshold: Threshold,
    *, groups: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """Sum over i of ``(lse_j l_ij - l_ii) + (lse_j l_ji - l_ii)``; see :mod:`relaxclip.loss`.

    Args:
        x, y: (B, D) features, same dtype and device; differentiable.
        logit_scale: 0-d tensor t > 0 (fp32, or fp64 for fp64 features); differentiable.
        threshold: theta (positive logit ``t * min(s_ii, theta)``): a float, a 0-d floating
            tensor on the features' device or ``None``; gets no gradient.
        groups: ``None`` or integer ids (K, B) (or (B,)): for i != j, l_ij = -inf when
            ``groups[k, i] == groups[k, j]`` for some k.

    Returns:
        0-d tensor in the compute dtype.
    """
    return CallArgs.run(_Dense, x, y, logit_scale, threshold, groups)


def rows_loss_sum(
    q: Tensor, k: Tensor, logit_scale: Tensor, threshold: Threshold, offset: int,
    *, groups: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """One direction: sum over rows i of q of ``lse_j l_ij - l_{i, offset+i}``, l = t q k^T.

    ``q`` (b, D), ``k`` (N, D) with N >= offset + b: the positive of row i is key offset + i;
    ``groups`` are the ids (K, N) (or (N,)) of the keys. Otherwise as :func:`symmetric_loss_sum`.
    """
    return CallArgs.run(
        _Dense, q, k, logit_scale, threshold, groups, offset=offset, symmetric=False
    )


__all__ = ["OPTIONS", "rows_loss_sum", "symmetric_loss_sum"]
