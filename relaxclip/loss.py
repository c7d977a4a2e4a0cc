r"""The relaxed contrastive loss: CLIP's symmetric InfoNCE with positive-pair relaxation.

Formula (B pairs, image features x_i, text features y_i, L2-normalised when ``normalize=True``):

    s_ij = <x_i, y_j>                      cosine similarity
    t    = logit_scale                     already exponentiated (open_clip: ``model.logit_scale.exp()``)
    p_i  = t * min(s_ii, theta)            relaxed positive logit
    E    = {(i, j) : i != j and g_ki = g_kj for some k}   same-group pairs (empty without groups)
    l_ij = t * s_ij  (i != j, (i, j) not in E),   l_ij = -inf  ((i, j) in E),   l_ii = p_i
    L    = 1/(2B) * sum_i [ (logsumexp_j l_ij - p_i) + (logsumexp_j l_ji - p_i) ]

Groups (optional ``groups`` argument, integer ids g of shape (B,) or (K, B)). A pair (i, j) in E
is neither a positive nor a negative: it is left out of the row softmax of image i AND of the
column softmax of text j (l_ij = -inf), so the loss neither pulls it together nor pushes it
apart. The positive (i, i) is always kept and relaxed as above. ``groups=None`` or all-distinct
ids give exactly the loss without groups; a row (or column) whose every negative is in E
contributes ``logsumexp(p_i) - p_i = 0``.

When to use which ids. *Text groups* (ids of the sampled sentence after normalisation, e.g.
``SentenceSampler(group_key="text_group")``): with random sentence sampling two studies often
draw the very same sentence ("No pneumothorax."); without groups the image of study j is a
negative for the identical text of study i, a false negative. *Study (or patient) groups*: one
study contributes several images (frontal + lateral) or several sentences to one batch; those
rows describe the same case and must not be pushed apart. Pass both as a (2, B) tensor when both
occur: a pair is excluded when it shares either id. Do not use coarse labels (e.g. "normal") as
groups: excluding most negatives weakens the contrastive signal.

The relaxed positive replaces ``t * s_ii`` everywhere it appears: in the numerator and in both
denominators (the image->text row and the text->image column). With ``theta = 1`` (or ``None``) no
clamp is applied and L is exactly the CLIP / open_clip ``ClipLoss`` loss.

Relaxation. Once a positive pair is more similar than ``theta`` (s_ii > theta), its logit is
constant: no gradient pulls that pair closer, while its negatives are still pushed apart. This is
our precise reading of the "positive-pair loss relaxation" of Jang et al. (arXiv 2212.07050), whose
full text was not available to us: the paper motivates it by the many near-identical image-report
pairs of chest X-ray data, for which pulling positives all the way to similarity 1 over-fits.

Gradients (W_ij = (P_ij + Q_ij - 2 delta_ij) / (2B), P the row softmax, Q the column softmax of l;
with groups P_ij = Q_ij = W_ij = 0 for (i, j) in E, and the softmaxes are over the kept entries):
``dL/dt = sum_ij W_ij l~_ij / t`` (l~ the finite logits; the sum skips E); ``G = t W`` with G_ii
set to 0 where s_ii > theta; ``dL/dx = G y`` and ``dL/dy = G^T x`` (before the normalisation's own
backward). The ids get no gradient.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from relaxclip.backends import BACKENDS, get_backend, resolve_backend
from relaxclip.distributed import (
    DistributedMode,
    check_distributed_args,
    distributed_loss,
    is_distributed_active,
)

Tensor = torch.Tensor

#: Default relaxation threshold theta (a cosine similarity). It is a conservative choice, not a
#: tuned one: relaxation then only touches pairs that are already very well aligned. On the
#: embedded benchmark (docs/demo.md) the validation sweep chose 0.6, and no theta beat plain CLIP
#: fine-tuning there, so that run gives no evidence for any value. Tune theta on your validation
#: split (``relaxclip demo --sweep-threshold`` shows the procedure).
DEFAULT_THRESHOLD = 0.8


def _check_threshold(threshold: float | None) -> float | None:
    """Validate theta in (-1, 1]; return ``None`` (no relaxation) for ``None`` or theta >= 1."""
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, Real):
        raise TypeError(
            f"threshold must be a float in (-1, 1] or None, got {type(threshold).__name__}"
        )
    value = float(threshold)
    if not (-1.0 < value <= 1.0):  # also rejects NaN
        raise ValueError(f"threshold must be in (-1, 1] (a cosine similarity), got {value}")
    return None if value >= 1.0 else value


def _check_backend_options(backend: str, chunk_size: int | None) -> None:
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
            raise TypeError(
                f"chunk_size must be a positive int or None, got {type(chunk_size).__name__}"
            )
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")


def _check_features(
    image_features: Tensor, text_features: Tensor, check_finite: bool, allow_empty: bool = False
) -> None:
    for name, feats in (("image_features", image_features), ("text_features", text_features)):
        if not isinstance(feats, torch.Tensor):
            raise TypeError(
                f"{name} must be a torch.Tensor of shape (B, D), got {type(feats).__name__}"
            )
        if feats.dim() != 2:
            raise ValueError(f"{name} must be 2-D (B, D), got shape {tuple(feats.shape)}")
        if not feats.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {feats.dtype}")
        if feats.shape[0] == 0 and not allow_empty:
            raise ValueError(
                f"{name} must hold at least one sample (B >= 1), got shape {tuple(feats.shape)}"
            )
        if feats.shape[1] == 0:
            raise ValueError(
                f"{name} must have feature dimension D >= 1, got shape {tuple(feats.shape)}"
            )
    if image_features.shape != text_features.shape:
        raise ValueError(
            "image_features and text_features must have the same shape (B, D), got "
            f"{tuple(image_features.shape)} and {tuple(text_features.shape)}"
        )
    if image_features.dtype != text_features.dtype:
        raise ValueError(
            "image_features and text_features must have the same dtype, got "
            f"{image_features.dtype} and {text_features.dtype}"
        )
    if image_features.device != text_features.device:
        raise ValueError(
            "image_features and text_features must be on the same device, got "
            f"{image_features.device} and {text_features.device}"
        )
    if check_finite:
        for name, feats in (("image_features", image_features), ("text_features", text_features)):
            if not bool(torch.isfinite(feats).all()):
                raise ValueError(
                    f"{name} contains NaN or Inf (pass check_finite=False to skip this check)"
                )


def _check_groups(groups: Tensor | None, like: Tensor) -> Tensor | None:
    """Validate ``groups`` against features ``like`` (B, D); return (K, B) int64 on their device.

    No host sync: only shape and dtype are inspected; the values are moved (if needed) with a
    non-blocking copy and compared on the device inside the backends.
    """
    if groups is None:
        return None
    n = like.shape[0]
    if not isinstance(groups, torch.Tensor):
        raise TypeError(
            f"groups must be an integer torch.Tensor of shape (B,) or (K, B), got "
            f"{type(groups).__name__}"
        )
    if groups.dtype == torch.bool or groups.is_floating_point() or groups.is_complex():
        raise TypeError(
            f"groups must have an integer dtype (e.g. torch.int64 ids), got {groups.dtype}"
        )
    if groups.dim() not in (1, 2) or groups.shape[-1] != n:
        raise ValueError(
            f"groups must have shape (B,) or (K, B) with B = {n} (the batch size), got shape "
            f"{tuple(groups.shape)}"
        )
    if groups.dim() == 2 and groups.shape[0] == 0:
        raise ValueError(
            f"groups must hold at least one group vector (K >= 1), got shape {tuple(groups.shape)}; "
            "pass groups=None for no groups"
        )
    matrix = groups if groups.dim() == 2 else groups.unsqueeze(0)
    return matrix.to(device=like.device, dtype=torch.int64, non_blocking=True)


def _as_scale_tensor(logit_scale: Tensor | float, like: Tensor, check_finite: bool) -> Tensor:
    """``logit_scale`` as a 0-d tensor in the compute dtype, on the features' device (differentiable)."""
    compute = torch.float64 if like.dtype == torch.float64 else torch.float32
    if isinstance(logit_scale, torch.Tensor):
        if logit_scale.numel() != 1:
            raise ValueError(
                f"logit_scale must be a scalar (0-d or one-element tensor), got shape {tuple(logit_scale.shape)}"
            )
        if not logit_scale.is_floating_point():
            raise TypeError(
                f"logit_scale must be a floating-point tensor, got dtype {logit_scale.dtype}"
            )
        if logit_scale.device != like.device and logit_scale.dim() > 0:
            raise ValueError(
                f"logit_scale must be on the features' device {like.device}, got {logit_scale.device}"
            )
        if check_finite:
            value = float(logit_scale.detach())
            if not math.isfinite(value) or value <= 0:
                raise ValueError(
                    f"logit_scale must be finite and > 0 (the exponentiated scale, e.g. "
                    f"model.logit_scale.exp()), got {value}"
                )
        return logit_scale.reshape(()).to(device=like.device, dtype=compute)
    if isinstance(logit_scale, bool) or not isinstance(logit_scale, Real):
        raise TypeError(
            f"logit_scale must be a float or a scalar tensor, got {type(logit_scale).__name__}"
        )
    value = float(logit_scale)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"logit_scale must be finite and > 0 (the exponentiated scale, e.g. model.logit_scale.exp()), got {value}"
        )
    return torch.tensor(value, dtype=compute, device=like.device)


def _normalize(features: Tensor) -> Tensor:
    """L2-normalise rows with the norm taken in fp32 (fp64 for fp64); result in the input dtype."""
    if features.dtype in (torch.float32, torch.float64):
        return F.normalize(features, dim=1)
    return F.normalize(features.float(), dim=1).to(features.dtype)


def relaxed_contrastive_loss(
    image_features: Tensor,
    text_features: Tensor,
    logit_scale: Tensor | float,
    *,
    threshold: float | None = DEFAULT_THRESHOLD,
    groups: Tensor | None = None,
    normalize: bool = True,
    backend: str = "auto",
    chunk_size: int | None = None,
    check_finite: bool = True,
    distributed: bool | None = None,
    distributed_mode: DistributedMode = "local",
    process_group: Any = None,
) -> Tensor:
    """Symmetric CLIP loss with positive-pair relaxation (the module docstring has the formula).

    Args:
        image_features: (B, D) floating tensor (fp16, bf16, fp32 or fp64); differentiable.
        text_features: (B, D), same shape, dtype and device as ``image_features``; differentiable.
            Row i of both is a positive pair; every other row of the other modality is a negative.
        logit_scale: t > 0, the multiplier already exponentiated (open_clip convention:
            ``model.logit_scale.exp()``): a float or a 0-d tensor, differentiable.
        threshold: theta in (-1, 1]; positive similarities are clamped to ``min(s_ii, theta)``.
            ``1.0`` or ``None`` disables relaxation (exactly CLIP's loss).
        groups: ``None`` (every other sample is a negative) or an integer tensor of ids, shape
            (B,) or (K, B) (K id vectors, e.g. text ids and study ids), any device (moved to the
            features' device), not differentiable. For i != j, (image i, text j) is not a
            negative when ``groups[k, i] == groups[k, j]`` for some k: l_ij is removed from the
            row softmax of i and the column softmax of j. Positives are always kept (and relaxed
            as usual). With ``distributed``, pass this rank's (b_r,) or (K, b_r) ids; they are
            gathered with the features (K must agree on all ranks; ids must mean the same on
            every rank, e.g. a stable hash). The module docstring has the formula.
        normalize: L2-normalise the features first (then theta is a cosine similarity).
        backend: ``"dense"``, ``"chunked"``, ``"triton"`` or ``"auto"``
            (see :func:`relaxclip.backends.resolve_backend`).
        chunk_size: rows per block for the chunked backend (default: about 4M logits per block).
        check_finite: check features and scale for NaN/Inf (one device sync on GPU).
        distributed: compute the loss of the GLOBAL batch of a ``torch.distributed`` job, each
            rank passing its local (b_r, D) features (see ``relaxclip.distributed`` and
            docs/distributed.md). ``None`` (default): on when ``torch.distributed`` is
            initialised and ``process_group`` has more than one rank; ``False``: local loss;
            ``True``: required (RuntimeError when not initialised). Inside an initialised job,
            call the loss on every rank of the group: a call on one rank only (e.g. a rank-0
            validation loop) waits for the others, so pass ``distributed=False`` there. An input
            error raised on one rank only (NaN, wrong shape) likewise leaves the other ranks
            waiting in the collective until the launcher (torchrun) ends the job.
        distributed_mode: ``"local"`` (rank r computes the (b_r x B) rows/columns of its own
            samples and returns W * its share, so the mean over ranks is the global loss) or
            ``"global"`` (every rank computes the full (B x B) loss).
        process_group: the ``torch.distributed`` group to gather over (None = default group);
            gradients must be averaged over the same group (DDP's default).

    Returns:
        0-d tensor: fp32 for fp16/bf16/fp32 inputs, fp64 for fp64 inputs. Gradients reach both
        feature tensors (in their dtype) and ``logit_scale``.
    """
    theta = _check_threshold(threshold)
    _check_backend_options(backend, chunk_size)
    check_distributed_args(distributed, distributed_mode)
    if process_group is not None and distributed is None and not torch.distributed.is_initialized():
        raise ValueError(
            "process_group was given but torch.distributed is not initialised; initialise it "
            "first, or pass distributed=False for a local loss"
        )
    use_distributed = bool(distributed) or (
        distributed is None and is_distributed_active(process_group)
    )
    # A rank may hold an empty local batch (the end of an epoch): the global batch is what counts,
    # and raising on one rank would leave the others waiting in the collective.
    _check_features(image_features, text_features, check_finite, allow_empty=use_distributed)
    group_ids = _check_groups(groups, image_features)
    scale = _as_scale_tensor(logit_scale, image_features, check_finite)
    x = _normalize(image_features) if normalize else image_features
    y = _normalize(text_features) if normalize else text_features
    if use_distributed:
        return distributed_loss(
            x,
            y,
            scale,
            theta,
            backend=backend,
            backend_opts={"chunk_size": chunk_size},
            mode=distributed_mode,
            process_group=process_group,
            groups=group_ids,
        )
    n = x.shape[0]
    name = resolve_backend(backend, x.device, n, n, x.dtype)
    total = get_backend(name).symmetric_loss_sum(
        x, y, scale, theta, chunk_size=chunk_size, groups=group_ids
    )
    return total / (2 * n)


class RelaxedContrastiveLoss(nn.Module):
    """``nn.Module`` form of :func:`relaxed_contrastive_loss`; a drop-in for open_clip's ``ClipLoss``.

    Example::

        loss_fn = RelaxedContrastiveLoss(threshold=0.8)
        loss = loss_fn(image_features, text_features, model.logit_scale.exp())

    ``forward(image_features, text_features, logit_scale, output_dict=False, *, groups=None)``
    returns the 0-d loss, or ``{"contrastive_loss": loss}`` with ``output_dict=True`` (open_clip's
    convention). ``groups`` (B,) or (K, B) integer ids mark same-group pairs as non-negatives
    (see :func:`relaxed_contrastive_loss`); it is per batch, so it is a ``forward`` argument,
    e.g. ``loss_fn(**model_out, groups=batch["text_group"], output_dict=True)``.
    """

    def __init__(
        self,
        threshold: float | None = DEFAULT_THRESHOLD,
        *,
        normalize: bool = True,
        backend: str = "auto",
        chunk_size: int | None = None,
        check_finite: bool = True,
        distributed: bool | None = None,
        distributed_mode: DistributedMode = "local",
        process_group: Any = None,
    ) -> None:
        super().__init__()
        _check_threshold(threshold)
        _check_backend_options(backend, chunk_size)
        check_distributed_args(distributed, distributed_mode)
        self.distributed = distributed
        self.distributed_mode = distributed_mode
        self.process_group = process_group
        self.threshold = threshold
        self.normalize = normalize
        self.backend = backend
        self.chunk_size = chunk_size
        self.check_finite = check_finite

    def forward(
        self,
        image_features: Tensor,
        text_features: Tensor,
        logit_scale: Tensor | float,
        output_dict: bool = False,
        *,
        groups: Tensor | None = None,
    ) -> Any:
        loss = relaxed_contrastive_loss(
            image_features,
            text_features,
            logit_scale,
            threshold=self.threshold,
            groups=groups,
            normalize=self.normalize,
            backend=self.backend,
            chunk_size=self.chunk_size,
            check_finite=self.check_finite,
            distributed=self.distributed,
            distributed_mode=self.distributed_mode,
            process_group=self.process_group,
        )
        return {"contrastive_loss": loss} if output_dict else loss

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}, normalize={self.normalize}, backend={self.backend!r}"


__all__ = ["DEFAULT_THRESHOLD", "RelaxedContrastiveLoss", "relaxed_contrastive_loss"]
