"""Helpers shared by the loss backends: compute dtype, diagonal relaxation and gradient packaging."""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float64 stays float64, everything else is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def relax_diagonal_(diag: Tensor, threshold: float | None) -> Tensor | None:
    """Clamp a (writable) diagonal view in place to ``min(s_ii, threshold)``.

    Returns the boolean mask ``s_ii <= threshold`` of entries whose gradient passes (``None`` when
    there is no relaxation, i.e. every diagonal gradient passes).
    """
    if threshold is None:
        return None
    passes = diag <= threshold
    diag.clamp_(max=threshold)
    return passes
