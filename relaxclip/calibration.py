"""Choose the relaxation threshold once, from the positive cosines of a pre-trained model."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor
from torch import distributed as dist

from relaxclip import _checks
from relaxclip._checks import check_finite_rows, check_real, check_tensor, check_type, describe
from relaxclip.distributed import _gather_metadata, _resolve_group, all_gather_rows
from relaxclip.loss import _normalize

__all__ = ["calibrate_threshold"]


def calibrate_threshold(
    feature_pairs: Iterable[tuple[Tensor, Tensor]],
    quantile: float = 0.9,
    *,
    process_group: dist.ProcessGroup | None = None,
) -> float:
    """The ``quantile`` of the positive-pair cosine similarities over some batches.

    For every batch, s_i = <x_i / ||x_i||, y_i / ||y_i||>; θ is the linear-interpolation
    quantile of all s_i (``torch.quantile(s, quantile)``, in float64). Under an initialised
    ``torch.distributed`` with more than one rank the cosines of every rank are gathered first,
    so every rank returns the same θ (docs/concepts.md#choosing-the-threshold-calibrate_threshold).

    Args:
        feature_pairs: an iterable of ``(image_features, text_features)``, each a floating
            ``(B, D)`` tensor; not differentiated (the features are detached).
        quantile: q in [0, 1].
        process_group: the group to gather over (default: the world group).

    Returns:
        θ as a Python float in [-1, 1].

    Raises:
        TypeError: a pair that is not two floating tensors, or a non-real ``quantile``.
        ValueError: ``quantile`` outside [0, 1], bad shapes, zero or non-finite rows, no pair.

    Example:
        >>> with torch.no_grad():
        ...     pairs = [(model.encode_image(x), model.encode_text(t)) for x, t in first_batches]
        >>> loss_fn = RelaxedContrastiveLoss(threshold=calibrate_threshold(pairs, 0.9))
    """
    q = check_real("quantile", quantile, low=0.0, high=1.0)
    expected = "an iterable of (image_features, text_features) pairs, e.g. [(x, y)]"
    check_type("feature_pairs", feature_pairs, Iterable, expected, exclude=Tensor)
    cosines = [_positive_cosines(i, pair) for i, pair in enumerate(feature_pairs)]
    local = torch.cat(cosines) if cosines else torch.zeros(0, dtype=torch.float64, device="cpu")
    if dist.is_available() and dist.is_initialized():
        group = _resolve_group(process_group)
        if dist.get_world_size(group) > 1:
            meta = torch.tensor([local.shape[0]], dtype=torch.int64, device=local.device)
            sizes = [int(n) for n in _gather_metadata(meta, group).flatten().tolist()]
            with torch.no_grad():
                local = all_gather_rows(local, sizes, group)
    if local.numel() == 0:
        raise ValueError("feature_pairs must yield at least one (image, text) pair, got none")
    return min(1.0, max(-1.0, float(torch.quantile(local.cpu(), q))))  # rounding past ±1


def _positive_cosines(index: int, pair: object) -> Tensor:
    """(B,) float64 cosine of each row pair of ``pair = (image_features, text_features)``."""
    name = f"feature_pairs[{index}]"
    if not isinstance(pair, tuple | list) or len(pair) != 2:
        raise TypeError(
            f"{name} must be an (image_features, text_features) pair of tensors, got "
            f"{describe(pair)}"
        )
    x = check_tensor(f"{name}[0]", pair[0], ndim=2, floating=True).detach().double()
    y = check_tensor(f"{name}[1]", pair[1], ndim=2, floating=True).detach().double()
    if x.shape != y.shape or x.device != y.device:
        raise ValueError(
            f"{name} must hold two tensors of one shape (B, D) on one device, got "
            f"{tuple(x.shape)} on {x.device} and {tuple(y.shape)} on {y.device}"
        )
    for side, feats in ((f"{name}[0]", x), (f"{name}[1]", y)):
        if feats.shape[1] == 0:
            raise ValueError(
                f"{side} must have feature dimension D >= 1, got shape {tuple(feats.shape)}"
            )
        check_finite_rows(side, feats)
        rows = (feats == 0).all(dim=1).nonzero().flatten().tolist()
        if rows:
            raise ValueError(
                f"{side} must have no all-zero rows (a cosine needs a direction), got rows "
                f"{_checks.format_rows(rows, len(feats))}"
            )
    return (_normalize(x) * _normalize(y)).sum(dim=1)  # the loss's exact normalisation
