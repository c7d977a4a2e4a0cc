"""Chunked backend: O(B) saved state, at most ``chunk_size x N`` logits alive at any time; the
backward recomputes the forward's blocks (docs/concepts.md#backends)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from relaxclip._checks import check_int
from relaxclip.backends import _common as common
from relaxclip.backends._common import CallArgs, Threshold

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
    """:class:`CallArgs` plus ``chunk_size`` (rows per block)."""

    chunk_size: int


class _Chunked(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, scale: Tensor, args: _ChunkedArgs) -> Tensor:
        cdt = common.compute_dtype(q.dtype)
        qc, kc, t = q.to(cdt), k.to(cdt), scale.detach().to(cdt)
        col_lse = common.ColumnLSE(k.shape[0], cdt, q.device)
        loss = torch.zeros((), dtype=cdt, device=q.device)
        for blk in common.row_blocks(q.shape[0], 1, args.chunk_size):
            start = args.offset + blk.start
            logits, _ = common.relaxed_block(qc[blk], kc, t, args, start)
            loss -= common.positive_view(torch.log_softmax(logits, dim=1), start).sum()
            if args.symmetric:
                loss -= common.positive_view(logits, start).sum()
                col_lse.add(logits, consume=True)
        col = col_lse.result() if args.symmetric else None
        ctx.args = args
        ctx.save_for_backward(q, k, t, col)
        return loss if col is None else loss + col.sum()

    @staticmethod
    @common.analytic_backward
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        q, k, t, col_lse = ctx.saved_tensors
        args = ctx.args
        qc, kc = q.to(t.dtype), k.to(t.dtype)
        grad_q, grad_k = torch.empty_like(qc), torch.zeros_like(kc)
        dot = torch.zeros((), dtype=t.dtype, device=q.device)
        for blk in common.row_blocks(q.shape[0], 1, args.chunk_size):
            start = args.offset + blk.start
            logits, passes = common.relaxed_block(qc[blk], kc, t, args, start)
            w = torch.softmax(logits, dim=1)  # P rows of this block
            if col_lse is not None:
                w += torch.sub(logits, col_lse).exp_()  # Q rows of this block
            grad_q[blk], wtq, block_dot = common.weight_products(
                w, start, passes, args, qc[blk], kc
            )
            grad_k += wtq
            dot += block_dot
        return common.input_grads(ctx, grad.to(t.dtype), t, grad_q, grad_k, dot, q, k)


def _call(q: Tensor, k: Tensor, logit_scale: Tensor, threshold: Threshold, **fields: Any) -> Tensor:
    """Build the record (``chunk_size`` checked, or its default) and apply the Function."""
    size = OPTIONS["chunk_size"](fields.pop("chunk_size")) or default_chunk_size(k.shape[0])
    groups = fields.pop("groups")
    return _ChunkedArgs.run(
        _Chunked, q, k, logit_scale, threshold, groups, chunk_size=size, **fields
    )


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
        q,
        k,
        logit_scale,
        threshold,
        chunk_size=chunk_size,
        groups=groups,
        offset=offset,
        symmetric=False,
    )


__all__ = ["OPTIONS", "default_chunk_size", "rows_loss_sum", "symmetric_loss_sum"]
