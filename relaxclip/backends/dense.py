"""Dense backend: one similarity matmul serves both directions, analytic backward with two matmuls.

Memory is O(B^2): the forward keeps the (B, B) logit matrix for the backward. Use the chunked
backend (``relaxclip.backends.chunked``) when that does not fit.
"""

from __future__ import annotations

from typing import Any

import torch

from relaxclip.backends._common import compute_dtype, relax_diagonal_, weight_products

Tensor = torch.Tensor


def _scaled_logits(q: Tensor, k: Tensor, t: Tensor) -> Tensor:
    """``(t * q) @ k^T`` in the compute dtype of ``t``: scaling the (b, D) side saves a (b, N) pass."""
    return (q.to(t.dtype) * t) @ k.to(t.dtype).T


class _DenseSymmetric(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, x: Tensor, y: Tensor, logit_scale: Tensor, threshold: float | None
    ) -> Tensor:
        t = logit_scale.detach().to(compute_dtype(x.dtype))
        logits = _scaled_logits(x, y, t)  # (B, B): l_ij = t * s_ij
        passes = relax_diagonal_(
            logits.diagonal(), None if threshold is None else float(t) * threshold
        )
        # Fused log-softmax kernels: sum_i (lse_j l_ij - l_ii) = -sum_i log_softmax(l, 1)_ii.
        loss = -torch.log_softmax(logits, dim=1).diagonal().sum()
        loss = loss - torch.log_softmax(logits, dim=0).diagonal().sum()
        ctx.threshold = threshold
        ctx.save_for_backward(x, y, t, logits, passes)
        return loss

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, y, t, logits, passes = ctx.saved_tensors
        cdt = logits.dtype
        g = grad.to(cdt)
        # W / g = P + Q - 2I: P row softmax, Q column softmax of the relaxed logits.
        w = torch.softmax(logits, dim=1)
        w += torch.softmax(logits, dim=0)
        positives = w.diagonal()
        positives.sub_(2.0)
        wy, wtx, dot = weight_products(w, positives, passes, ctx.threshold, x.to(cdt), y.to(cdt))
        # G = g t W: dX = G Y, dY = G^T X, dL/dt = g sum_ij W_ij s~_ij.
        return (
            (wy * (g * t)).to(x.dtype) if ctx.needs_input_grad[0] else None,
            (wtx * (g * t)).to(y.dtype) if ctx.needs_input_grad[1] else None,
            (g * dot).reshape(t.shape) if ctx.needs_input_grad[2] else None,
            None,
        )


class _DenseRows(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, q: Tensor, k: Tensor, logit_scale: Tensor, threshold: float | None, offset: int
    ) -> Tensor:
        b = q.shape[0]
        t = logit_scale.detach().to(compute_dtype(q.dtype))
        logits = _scaled_logits(q, k, t)  # (b, N)
        positives = logits[:, offset : offset + b].diagonal()
        passes = relax_diagonal_(positives, None if threshold is None else float(t) * threshold)
        loss = -torch.log_softmax(logits, dim=1)[:, offset : offset + b].diagonal().sum()
        ctx.offset, ctx.threshold = offset, threshold
        ctx.save_for_backward(q, k, t, logits, passes)
        return loss

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        q, k, t, logits, passes = ctx.saved_tensors
        cdt = logits.dtype
        g = grad.to(cdt)
        w = torch.softmax(logits, dim=1)  # row softmax P
        positives = w[:, ctx.offset : ctx.offset + q.shape[0]].diagonal()
        positives.sub_(1.0)
        wk, wtq, dot = weight_products(w, positives, passes, ctx.threshold, q.to(cdt), k.to(cdt))
        return (
            (wk * (g * t)).to(q.dtype) if ctx.needs_input_grad[0] else None,
            (wtq * (g * t)).to(k.dtype) if ctx.needs_input_grad[1] else None,
            (g * dot).reshape(t.shape) if ctx.needs_input_grad[2] else None,
            None,
            None,
        )


def symmetric_loss_sum(
    x: Tensor, y: Tensor, logit_scale: Tensor, threshold: float | None, **_: Any
) -> Tensor:
    """Sum over i of ``(lse_j l_ij - l_ii) + (lse_j l_ji - l_ii)``; see ``relaxclip.loss``.

    Args:
        x, y: (B, D) features (already normalised if wanted), same dtype and device.
        logit_scale: 0-d tensor t > 0 (fp32, or fp64 for fp64 features); may require grad.
        threshold: theta in (-1, 1) or ``None`` for no relaxation.

    Returns a 0-d tensor in the compute dtype (fp32, or fp64), differentiable w.r.t. x, y, t.
    """
    return _DenseSymmetric.apply(x, y, logit_scale, threshold)


def rows_loss_sum(
    q: Tensor, k: Tensor, logit_scale: Tensor, threshold: float | None, offset: int, **_: Any
) -> Tensor:
    """One direction: sum over rows i of q of ``lse_j l_ij - l_{i, offset+i}``, l = t * q k^T.

    Args:
        q: (b, D) queries; k: (N, D) keys with N >= offset + b; the positive of row i is key offset+i.
    """
    return _DenseRows.apply(q, k, logit_scale, threshold, offset)


__all__ = ["rows_loss_sum", "symmetric_loss_sum"]
