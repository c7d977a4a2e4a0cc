"""The float64 reference of the relaxed contrastive loss (and two small helpers), shared by every
loss test.

Written straight from the formula, independently of the library's backends: the explicit
(b, N) logit matrix with the relaxed positives and the same-group pairs set to -inf, then
``torch.logsumexp`` over rows (and columns); autograd gives the reference gradients.

    s = q k^T,  positive of row i at column offset + i,  p_i = t * min(s_i,offset+i, theta)
    l_ij = t * s_ij, except l_i,offset+i = p_i and l_ij = -inf when j != offset + i and
    groups[k, offset + i] == groups[k, j] for some k
    sum = sum_i (lse_j l_ij - p_i)  [+ sum_j (lse_i l_ij - p_j) when symmetric (square, offset 0)]

Gradient convention at the threshold: the positive's gradient passes when s_ii <= theta (as the
library's), i.e. ``where(s <= theta, s, theta)``.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def same_group_pairs(groups: Tensor | None, n_rows: int, offset: int = 0) -> Tensor:
    """(n_rows, N) bool: True where row i (global sample offset + i) and column j share an id in
    any of the K id vectors of ``groups`` ((N,) or (K, N)), the positive (i, offset + i) excepted.
    ``None``: N is unknown, so the caller gets an all-False (n_rows, 0)-broadcastable mask."""
    if groups is None:
        return torch.zeros(n_rows, 1, dtype=torch.bool)
    g = groups.reshape(-1, groups.shape[-1]).cpu()
    mask = torch.zeros(n_rows, g.shape[1], dtype=torch.bool)
    for i in range(n_rows):
        mask[i] = (g == g[:, offset + i : offset + i + 1]).any(dim=0)
        mask[i, offset + i] = False
    return mask


def reference_sum(
    q: Tensor,
    k: Tensor,
    t: Tensor | float,
    theta: float | None,
    offset: int = 0,
    symmetric: bool = True,
    groups: Tensor | None = None,
) -> Tensor:
    """The loss SUM (backend contract) in the inputs' dtype; see the module docstring."""
    s = q @ k.T
    rows = torch.arange(q.shape[0])
    cols = rows + offset
    pos = s[rows, cols]
    if theta is not None:
        pos = torch.where(pos <= theta, pos, torch.full_like(pos, theta))
    positive = torch.zeros_like(s, dtype=torch.bool)
    positive[rows, cols] = True
    s_rel = s.masked_scatter(positive, pos)
    logits = (t * s_rel).masked_fill(same_group_pairs(groups, q.shape[0], offset), float("-inf"))
    loss = torch.logsumexp(logits, dim=1).sum() - (t * pos).sum()
    if symmetric:
        loss = loss + torch.logsumexp(logits, dim=0).sum() - (t * pos).sum()
    return loss


def reference_loss(
    x: Tensor,
    y: Tensor,
    t: Tensor | float,
    theta: float | None,
    normalize: bool = True,
    groups: Tensor | None = None,
) -> Tensor:
    """The loss L (a mean over 2B terms) in float64, features L2-normalised when ``normalize``."""
    x, y = x.double(), y.double()
    if normalize:
        x = x / x.norm(dim=1, keepdim=True)
        y = y / y.norm(dim=1, keepdim=True)
    return reference_sum(x, y, t, theta, 0, True, groups) / (2 * len(x))


def reference_rows(
    q: Tensor,
    k: Tensor,
    t: Tensor | float,
    theta: float | None,
    offset: int,
    groups: Tensor | None = None,
) -> Tensor:
    """One direction's sum in float64: rows of q against all keys k (ids ``groups`` of the keys)."""
    return reference_sum(q.double(), k.double(), t, theta, offset, False, groups)


def grads(fn, x, y, t):  # type: ignore[no-untyped-def]
    """(value, dL/dx, dL/dy, dL/dt) of ``fn(x, y, t)`` on fresh leaves (t: a float)."""
    x = x.clone().requires_grad_()
    y = y.clone().requires_grad_()
    t = torch.tensor(t, dtype=x.dtype, requires_grad=True)
    value = fn(x, y, t)
    return (value, *torch.autograd.grad(value, (x, y, t)))


def assert_all_close(a, b, atol=1e-10, rtol=1e-9):  # type: ignore[no-untyped-def]
    """``torch.testing.assert_close`` on each pair of two equally long sequences."""
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v, atol=atol, rtol=rtol)
