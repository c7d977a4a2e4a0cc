"""Chunked backend: O(B) saved state, at most ``chunk_size x N`` logits alive at any time.

Forward: per block of rows, compute the block's logits, add its row terms (fused log-softmax)
and fold it into running column statistics (online log-sum-exp); only the column log-sum-exp is
saved. Backward: recompute each block from the saved features (same boundaries, so the same
relaxation mask), form ``G_block = g t (P + Q - 2I)_block`` and accumulate ``dX[block] = G Y``
and ``dY += G^T X[block]``. Peak extra memory: about three ``chunk_size x N`` buffers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from relaxclip._checks import check_int
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

#: Logits per block when ``chunk_size`` is not given: ``chunk_size = max(16, 2**22 // N)``.
DEFAULT_BLOCK_ELEMENTS = 2**22

#: Keyword options of this backend's entry functions (see ``relaxclip.backends``).
OPTIONS: dict[str, Callable[[object], Any]] = {
    "chunk_size": lambda v: None if v is None else check_int("chunk_size", v, minimum=1)
}


def default_chunk_size(n_columns: int) -> int:
    """Rows per block when the user gives none: about 4M logits (16 MiB in fp32) per block."""
    return max(16, DEFAULT_BLOCK_ELEMENTS // max(1, n_columns))


@dataclass(frozen=True, kw_only=True)
class _ChunkedArgs(CallArgs):
    """:class:`CallArgs` plus ``chunk_size`` (rows per block) and ``symmetric``."""

    chunk_size: int
    symmetric: bool


class _Chunked(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, scale: Tensor, args: _ChunkedArgs) -> Tensor:
        cdt = compute_dtype(q.dtype)
        qc, kc, t = q.to(cdt), k.to(cdt), scale.detach().to(cdt)
        n = k.shape[0]
        # running column max from the lowest finite value: a column that groups left all -inf
        # in a block adds exp(-inf) = 0 instead of NaN
        col_max = torch.full((n,), torch.finfo(cdt).min, dtype=cdt, device=q.device)
        col_sum = torch.zeros(n, dtype=cdt, device=q.device)
        loss = torch.zeros((), dtype=cdt, device=q.device)
        for blk in row_blocks(q.shape[0], 1, args.chunk_size):
            start = args.offset + blk.start
            logits, _ = relaxed_block(qc[blk], kc, t, args, start)
            positives = logits[:, start : start + logits.shape[0]].diagonal()
            loss -= (
                torch.log_softmax(logits, dim=1)[:, start : start + logits.shape[0]]
                .diagonal()
                .sum()
            )
            if args.symmetric:  # online column log-sum-exp
                loss -= positives.sum()
                new_max = torch.maximum(col_max, logits.amax(dim=0))
                col_sum.mul_(torch.exp(col_max - new_max))
                col_sum += logits.sub_(new_max).exp_().sum(dim=0)
                col_max = new_max
        col_lse = col_max + torch.log(col_sum) if args.symmetric else None
        ctx.args = args
        ctx.save_for_backward(q, k, t, col_lse)
        return loss if col_lse is None else loss + col_lse.sum()

    @staticmethod
    @once_differentiable
    @autocast_off
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        """``W / g = P + Q - 2I`` (rows only: ``P - I``), one block at a time; ``G = g t W``."""
        q, k, t, col_lse = ctx.saved_tensors
        args = ctx.args
        qc, kc = q.to(t.dtype), k.to(t.dtype)
        grad_q, grad_k = torch.empty_like(qc), torch.zeros_like(kc)
        dot = torch.zeros((), dtype=t.dtype, device=q.device)
        for blk in row_blocks(q.shape[0], 1, args.chunk_size):
            start = args.offset + blk.start
            logits, passes = relaxed_block(qc[blk], kc, t, args, start)
            w = torch.softmax(logits, dim=1)  # P rows of this block
            if col_lse is not None:
                w += torch.sub(logits, col_lse).exp_()  # Q rows of this block
            positives = w[:, start : start + logits.shape[0]].diagonal()
            positives.sub_(1.0 if col_lse is None else 2.0)
            wk, wtq, block_dot = weight_products(w, positives, passes, args.threshold, qc[blk], kc)
            grad_q[blk] = wk
            grad_k += wtq
            dot += block_dot
        return input_grads(ctx, grad.to(t.dtype), t, grad_q, grad_k, dot, q, k)


def _call(q: Tensor, k: Tensor, logit_scale: Tensor, threshold: Threshold, **fields: Any) -> Tensor:
    """Build the record (``chunk_size`` checked, or its default) and apply the Function."""
    size = fields.pop("chunk_size")
    size = default_chunk_size(k.shape[0]) if size is None else OPTIONS["chunk_size"](size)
    args = _ChunkedArgs.build(q, threshold, fields.pop("groups"), chunk_size=size, **fields)
    return args.apply(_Chunked, q, k, logit_scale)


def symmetric_loss_sum(
    x: Tensor, y: Tensor, logit_scale: Tensor, threshold: Threshold,
    *, chunk_size: int | None = None, groups: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """Chunked form of :func:`relaxclip.backends.dense.symmetric_loss_sum` (same value and
    gradients); ``chunk_size``: rows of logits per block, default ``default_chunk_size(B)``."""
    return _call(x, y, logit_scale, threshold, chunk_size=chunk_size, groups=groups, symmetric=True)


def rows_loss_sum(
    q: Tensor, k: Tensor, logit_scale: Tensor, threshold: Threshold, offset: int,
    *, chunk_size: int | None = None, groups: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """Chunked form of :func:`relaxclip.backends.dense.rows_loss_sum` (same value and
    gradients); ``chunk_size`` as in :func:`symmetric_loss_sum`."""
    return _call(
        q, k, logit_scale, threshold, chunk_size=chunk_size, groups=groups, offset=offset,
        symmetric=False,
    )  # fmt: skip


__all__ = ["OPTIONS", "default_chunk_size", "rows_loss_sum", "symmetric_loss_sum"]
