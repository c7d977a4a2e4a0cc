"""The float64 reference of the relaxed contrastive loss (and two small helpers), shared by every
loss test, with the loss tests' hypothesis settings and backend cases.

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
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

Tensor = torch.Tensor

#: Hypothesis settings of the loss property tests.
HYP = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: (backend, chunk_size) cases of the loss tests: dense, and chunked with 1, 3 and the default.
BACKENDS = [("dense", None), ("chunked", 1), ("chunked", 3), ("chunked", None)]


@st.composite
def feature_problems(
    draw: st.DrawFn, max_b: int, max_d: int
) -> tuple[Tensor, Tensor, float, float | None, torch.Generator]:
    """A float64 loss problem of the property tests: ``(x, y, t, theta, g)`` with x, y of shape
    (b, d), y a noisy copy of x, t in [0.5, 100], theta ``None`` or in [-0.99, 1], and the seeded
    generator ``g`` that drew them (for further draws, e.g. group ids)."""
    b = draw(st.integers(1, max_b))
    d = draw(st.integers(1, max_d))
    seed = draw(st.integers(0, 2**31 - 1))
    noise = draw(st.floats(0.0, 2.0))
    t = draw(st.floats(0.5, 100.0))
    theta = draw(st.one_of(st.none(), st.floats(-0.99, 1.0)))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, d, generator=g, dtype=torch.float64)
    y = x + noise * torch.randn(b, d, generator=g, dtype=torch.float64)
    return x, y, t, theta, g


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
