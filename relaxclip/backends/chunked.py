"""Chunked backend: O(B) saved state, at most ``chunk_size x N`` logits alive at any time.

Forward: for each block of rows, compute the block of logits, add its row terms (fused
log-softmax) and fold it into running column statistics (online log-sum-exp: running max and
rescaled sum). Only the column log-sum-exp vector is saved. Backward: recompute each block of
logits from the saved features, form ``G_block = t * g * (P + Q - 2I)_block`` (P: fused row
softmax; Q from the saved column log-sum-exp) and accumulate ``dX[block] = G_block Y`` and
``dY += G_block^T X[block]``.

Peak extra memory is about three ``chunk_size x N`` buffers in the compute dtype, plus O(B + N).
Blocks are recomputed with the same boundaries in forward and backward, so the relaxation mask is
identical in both passes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from relaxclip.backends._common import (
    CallArgs,
    autocast_off,
    compute_dtype,
    exclude_groups_,
    input_grads,
    positive_int_option,
    relax_diagonal_,
    weight_products,
)

Tensor = torch.Tensor

#: Logits per block when ``chunk_size`` is not given: ``chunk_size = max(16, 2**22 // N)``.
DEFAULT_BLOCK_ELEMENTS = 2**22


#: Keyword options of this backend's entry functions (see ``relaxclip.backends``).
OPTIONS: dict[str, Callable[[object], Any]] = {"chunk_size": positive_int_option("chunk_size")}


def default_chunk_size(n_columns: int) -> int:
    """Rows per block when the user gives none: about 4M logits (16 MiB in fp32) per block."""
    return max(16, DEFAULT_BLOCK_ELEMENTS // max(1, n_columns))


@dataclass(frozen=True, kw_only=True)
class _ChunkedArgs(CallArgs):
    """:class:`CallArgs` plus ``chunk_size``, the rows of logits materialised per block."""

    chunk_size: int


def _blocks(n_rows: int, chunk_size: int) -> list[slice]:
    return [slice(a, min(a + chunk_size, n_rows)) for a in range(0, n_rows, chunk_size)]


def _block_logits(
    q_blk: Tensor, k: Tensor, t: Tensor, args: CallArgs, diag_start: int
) -> tuple[Tensor, Tensor | None]:
    """Relaxed logits ``(t q_blk) k^T`` of one block and its mask; positives at (i, diag_start + i).

    With ``args.groups`` (K, N) the block's same-group non-positive pairs are set to -inf: the ids
    of the block's rows and of all columns are compared here, one block at a time (O(chunk x N)).
    """
    logits = (q_blk * t) @ k.T
    rows = q_blk.shape[0]
    positives = logits[:, diag_start : diag_start + rows].diagonal()
    theta = args.threshold
    passes = relax_diagonal_(positives, None if theta is None else t * theta)
    exclude_groups_(logits, args.groups, diag_start)
    return logits, passes


def _in_compute_dtype(q: Tensor, k: Tensor, logit_scale: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(q, k, t)`` in the compute dtype of ``q`` (:func:`compute_dtype`); ``t`` is detached."""
    cdt = compute_dtype(q.dtype)
    return q.to(cdt), k.to(cdt), logit_scale.detach().to(cdt)


def _backward(
    ctx: Any, grad: Tensor, q: Tensor, k: Tensor, t: Tensor, col_lse: Tensor | None
) -> tuple[Tensor | None, ...]:
    """The backward of both chunked Functions, one block of ``ctx.args.chunk_size`` rows at a time.

    ``W / g = P - I`` (rows: ``col_lse`` None, positives at column ``args.offset + i``) or
    ``W / g = P + Q - 2I`` (symmetric: ``Q_ij = exp(l_ij - col_lse_j)``, offset 0), with ``P``
    the row softmax of the relaxed logits. ``G = g t W``: ``dQ = G K``, ``dK = G^T Q``,
    ``dL/dt = g sum_ij W_ij s~_ij``; returned through :func:`input_grads`.
    """
    cdt = t.dtype
    qc, kc = q.to(cdt), k.to(cdt)
    g = grad.to(cdt)
    grad_q = torch.empty_like(qc)
    grad_k = torch.zeros_like(kc)
    dot = torch.zeros((), dtype=cdt, device=q.device)
    args = ctx.args
    for blk in _blocks(q.shape[0], args.chunk_size):
        start = args.offset + blk.start
        logits, passes = _block_logits(qc[blk], kc, t, args, start)
        w = torch.softmax(logits, dim=1)  # P rows of this block
        if col_lse is not None:
            w += torch.sub(logits, col_lse).exp_()  # Q rows of this block
        positives = w[:, start : start + logits.shape[0]].diagonal()
        positives.sub_(1.0 if col_lse is None else 2.0)
        wk, wtq, block_dot = weight_products(w, positives, passes, args.threshold, qc[blk], kc)
        grad_q[blk] = wk
        grad_k += wtq
        dot += block_dot
    return input_grads(ctx, g, t, grad_q, grad_k, dot, q, k)


class _ChunkedSymmetric(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, y: Tensor, scale: Tensor, args: _ChunkedArgs) -> Tensor:
        xc, yc, t = _in_compute_dtype(x, y, scale)
        cdt = t.dtype
        n = x.shape[0]
        # running column max from the lowest finite value: a block whose column is entirely
        # excluded by ``groups`` (all -inf) then adds exp(-inf) = 0 instead of NaN
        col_max = torch.full((n,), torch.finfo(cdt).min, dtype=cdt, device=x.device)
        col_sum = torch.zeros(n, dtype=cdt, device=x.device)
        row_terms = torch.zeros((), dtype=cdt, device=x.device)  # sum_i lse_j l_ij - l_ii
        positives = torch.zeros((), dtype=cdt, device=x.device)
        for blk in _blocks(n, args.chunk_size):
            logits, _ = _block_logits(xc[blk], yc, t, args, blk.start)
            row_terms -= torch.log_softmax(logits, dim=1)[:, blk].diagonal().sum()
            positives += logits[:, blk].diagonal().sum()
            # online column log-sum-exp: rescale the running sums to the new running max
            new_max = torch.maximum(col_max, logits.amax(dim=0))
            col_sum.mul_(torch.exp(col_max - new_max))
            col_sum += logits.sub_(new_max).exp_().sum(dim=0)
            col_max = new_max
        col_lse = col_max + torch.log(col_sum)
        ctx.args = args
        ctx.save_for_backward(x, y, t, col_lse)
        return row_terms + col_lse.sum() - positives

    @staticmethod
    @once_differentiable
    @autocast_off
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, y, t, col_lse = ctx.saved_tensors
        return _backward(ctx, grad, x, y, t, col_lse)


class _ChunkedRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, scale: Tensor, args: _ChunkedArgs) -> Tensor:
        qc, kc, t = _in_compute_dtype(q, k, scale)
        cdt = t.dtype
        loss = torch.zeros((), dtype=cdt, device=q.device)
        for blk in _blocks(q.shape[0], args.chunk_size):
            start = args.offset + blk.start
            logits, _ = _block_logits(qc[blk], kc, t, args, start)
            log_p = torch.log_softmax(logits, dim=1)
            loss -= log_p[:, start : start + logits.shape[0]].diagonal().sum()
        ctx.args = args
        ctx.save_for_backward(q, k, t)
        return loss

    @staticmethod
    @once_differentiable
    @autocast_off
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        q, k, t = ctx.saved_tensors
        return _backward(ctx, grad, q, k, t, None)


def symmetric_loss_sum(
    x: Tensor, y: Tensor, logit_scale: Tensor, threshold: float | Tensor | None,
    *, chunk_size: int | None = None, groups: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """Chunked form of ``relaxclip.backends.dense.symmetric_loss_sum`` (same value and gradients).

    Args:
        x, y: (B, D) features; logit_scale: 0-d tensor t > 0 (differentiable).
        threshold: theta: a float, a 0-d floating tensor on the features' device (no host sync)
            or ``None``; a constant (no gradient), as in the dense backend.
        chunk_size: rows of the (B, B) logit matrix materialised at once; default
            ``default_chunk_size(B)``.
        groups: ``None`` or integer ids (K, B) (or (B,)); as in the dense backend, compared one
            block of rows at a time (no B x B mask).
    """
    size = (
        default_chunk_size(y.shape[0]) if chunk_size is None else OPTIONS["chunk_size"](chunk_size)
    )
    args = _ChunkedArgs.build(x, threshold, groups, chunk_size=size)
    return args.apply(_ChunkedSymmetric, x, y, logit_scale)


def rows_loss_sum(
    q: Tensor, k: Tensor, logit_scale: Tensor, threshold: float | Tensor | None, offset: int,
    *, chunk_size: int | None = None, groups: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """Chunked form of ``relaxclip.backends.dense.rows_loss_sum`` (same value and gradients).

    ``threshold`` (float, 0-d floating tensor on the features' device, or ``None``) and
    ``groups`` (``None`` or integer ids (K, N) (or (N,)) of the keys) as in the dense backend.
    """
    size = (
        default_chunk_size(k.shape[0]) if chunk_size is None else OPTIONS["chunk_size"](chunk_size)
    )
    args = _ChunkedArgs.build(q, threshold, groups, offset=offset, chunk_size=size)
    return args.apply(_ChunkedRows, q, k, logit_scale)


__all__ = ["OPTIONS", "default_chunk_size", "rows_loss_sum", "symmetric_loss_sum"]
