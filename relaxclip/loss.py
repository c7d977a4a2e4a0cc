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
clamp is applied and L is exactly the CLIP / open_clip ``ClipLoss`` loss. With
``normalize=False`` s_ii is the raw dot product and theta bounds it (any finite theta; there
``theta = 1`` clamps like any other value and only ``None`` disables relaxation).

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

Precision (one policy, decided here for every backend). ``torch.autocast`` has no effect on the
loss: it is switched off for the normalisation, the backend and its backward, so the features are
used in their own dtype inside and outside an autocast region and every backend gives the same
numbers either way. fp16/bf16 features: similarities are exact products of the rounded inputs
accumulated in fp32, softmax / log-sum-exp in fp32, the loss is fp32 and the feature gradients
come back in the feature dtype (the triton backend rounds the softmax weights to the feature
dtype for its tensor-core gradient matmuls, so its gradients agree with dense/chunked to that
dtype's precision, about 1e-2 relative for bf16). fp32 features: everything in fp32 (triton:
exact IEEE fp32 dots unless ``backend_options={"allow_tf32": True}``). fp64 features: everything
in fp64 (dense and chunked; triton rejects fp64). ``logit_scale`` is used in the compute dtype
(fp32, fp64 for fp64 features) and its gradient returns in its own dtype. The loss never rounds
features down for speed: cast them yourself (e.g. ``.bfloat16()``) to trade precision for it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Real
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from relaxclip.backends import BACKENDS, check_backend_options, get_backend, resolve_backend
from relaxclip.distributed import (
    DistributedMode,
    check_distributed_args,
    distributed_loss,
    resolve_distributed,
)

Tensor = torch.Tensor

#: Default relaxation threshold theta (a cosine similarity). It is a conservative choice, not a
#: tuned one: relaxation then only touches pairs that are already very well aligned. On the
#: embedded benchmark (docs/demo.md) the validation sweep chose 0.6, and no theta beat plain CLIP
#: fine-tuning there, so that run gives no evidence for any value. Tune theta on your validation
#: split (``relaxclip demo --sweep-threshold`` shows the procedure).
DEFAULT_THRESHOLD = 0.8


def _check_threshold(threshold: float | None, normalize: bool = True) -> float | None:
    """Validate theta; return the clamp bound, or ``None`` for no relaxation.

    ``normalize=True``: theta is a cosine similarity in (-1, 1]; theta = 1 (or ``None``) means no
    relaxation. ``normalize=False``: theta bounds the raw dot product s_ii = <x_i, y_i>, which is
    not limited to [-1, 1], so any finite theta is accepted and theta = 1 is an ordinary clamp
    (only ``None`` disables relaxation; the loss is continuous in theta).
    """
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, Real):
        kind = "a float in (-1, 1]" if normalize else "a finite float"
        raise TypeError(f"threshold must be {kind} or None, got {type(threshold).__name__}")
    value = float(threshold)
    if not normalize:
        if not math.isfinite(value):
            raise ValueError(
                f"threshold must be finite (a bound on the raw dot product s_ii with "
                f"normalize=False) or None, got {value}"
            )
        return value
    if not (-1.0 < value <= 1.0):  # also rejects NaN
        raise ValueError(f"threshold must be in (-1, 1] (a cosine similarity), got {value}")
    return None if value >= 1.0 else value


def _resolve_options(
    backend: str, backend_options: Mapping[str, Any] | None, chunk_size: int | None
) -> dict[str, Any]:
    """Merge the ``chunk_size`` shortcut into ``backend_options`` and validate them against
    ``backend`` (see :func:`relaxclip.backends.check_backend_options`)."""
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend_options is not None and not isinstance(backend_options, Mapping):
        raise TypeError(
            f"backend_options must be a mapping of option name to value or None, "
            f"got {type(backend_options).__name__}"
        )
    options = dict(backend_options or {})
    if chunk_size is not None:
        if "chunk_size" in options:
            raise ValueError(
                "chunk_size was given both as an argument and in backend_options; pass it once"
            )
        options["chunk_size"] = chunk_size
    return check_backend_options(backend, options)


def _host_checks() -> bool:
    """Whether the data-dependent checks run: they read values on the host (one device sync), which
    ``torch.compile`` cannot put in a graph (a graph break; an error with ``fullgraph=True``), so
    they are skipped while compiling. Shape, dtype and device checks always run."""
    return not torch.compiler.is_compiling()


_FEATURE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_tensor_kind(name: str, value: Tensor) -> None:
    """A dense tensor with data, in a dtype the loss computes with (before any torch op sees it)."""
    if value.layout != torch.strided:
        raise TypeError(
            f"{name} must be a dense (strided) tensor, got layout {value.layout}; "
            "convert it with .to_dense()"
        )
    if value.device.type == "meta":
        raise ValueError(
            f"{name} is on the meta device (a shape without data); the loss needs values"
        )
    if value.dtype not in _FEATURE_DTYPES:
        hint = " (cast float8 to bfloat16 first)" if "float8" in str(value.dtype) else ""
        raise TypeError(
            f"{name} must be a floating-point tensor (float16, bfloat16, float32 or float64), "
            f"got dtype {value.dtype}{hint}"
        )


def _check_features(
    image_features: Tensor, text_features: Tensor, allow_empty: bool = False
) -> None:
    """Type, layout, device, dtype and shape checks (static: no device sync)."""
    for name, feats in (("image_features", image_features), ("text_features", text_features)):
        if not isinstance(feats, torch.Tensor):
            raise TypeError(
                f"{name} must be a torch.Tensor of shape (B, D), got {type(feats).__name__}"
            )
        _check_tensor_kind(name, feats)
        if feats.dim() != 2:
            raise ValueError(f"{name} must be 2-D (B, D), got shape {tuple(feats.shape)}")
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


def _row_peaks(features: Tensor) -> Tensor:
    """(B, 1) largest |value| of each row (detached; NaN for a row holding NaN)."""
    return features.detach().abs().amax(dim=1, keepdim=True)


def _rows(mask: Tensor) -> str:
    rows = mask.nonzero().flatten().tolist()
    shown = ", ".join(map(str, rows[:10]))
    return f"[{shown}{', ...' if len(rows) > 10 else ''}] ({len(rows)} of {mask.numel()})"


def _check_values(image_features: Tensor, text_features: Tensor, normalize: bool) -> None:
    """NaN/Inf rows, and all-zero rows when normalising (one device sync for both tensors)."""
    named = (("image_features", image_features), ("text_features", text_features))
    peaks = [_row_peaks(feats).flatten() for _, feats in named]
    bad = [~torch.isfinite(p) | (p == 0) if normalize else ~torch.isfinite(p) for p in peaks]
    if not bool(torch.cat(bad).any()):
        return
    for (name, _), peak in zip(named, peaks, strict=True):
        if bool((~torch.isfinite(peak)).any()):
            raise ValueError(
                f"{name} contains NaN or Inf in rows {_rows(~torch.isfinite(peak))} "
                "(pass check_finite=False to skip this check)"
            )
    for (name, _), peak in zip(named, peaks, strict=True):
        if bool((peak == 0).any()):
            raise ValueError(
                f"{name} has all-zero rows {_rows(peak == 0)}: a zero vector has no direction, so "
                "its cosine similarity is undefined (normalize=True); drop those samples, or "
                "pass normalize=False"
            )


def _check_scalar_tensor(name: str, value: Tensor, like: Tensor, why: str = "") -> None:
    """A one-element floating tensor on the features' device (a 0-d CPU tensor is also fine)."""
    _check_tensor_kind(name, value)
    if value.numel() != 1:
        raise ValueError(
            f"{name} must be a scalar (0-d or one-element tensor), got shape "
            f"{tuple(value.shape)}{why}"
        )
    if value.device != like.device and value.dim() > 0:
        raise ValueError(
            f"{name} must be on the features' device {like.device}, got {value.device}"
        )


def _check_bias(
    logit_bias: Tensor | float | None, like: Tensor, check_finite: bool
) -> Tensor | None:
    """Validate open_clip's ``logit_bias``; return it as a tensor to keep in the graph, or None.

    A scalar bias b adds the same constant to every logit; each log-softmax (row and column)
    subtracts it again, so the loss and every gradient are exactly those without it.
    """
    if logit_bias is None:
        return None
    if isinstance(logit_bias, torch.Tensor):
        _check_scalar_tensor(
            "logit_bias",
            logit_bias,
            like,
            why="; a per-logit bias does not cancel in the softmax and is not supported "
            "(the SigLIP-style sigmoid loss is a different loss)",
        )
        if check_finite and not math.isfinite(float(logit_bias.detach())):
            raise ValueError(f"logit_bias must be finite, got {float(logit_bias.detach())}")
        return logit_bias if logit_bias.requires_grad else None
    if isinstance(logit_bias, bool) or not isinstance(logit_bias, Real):
        raise TypeError(
            f"logit_bias must be None, a float or a scalar tensor, got {type(logit_bias).__name__}"
        )
    if not math.isfinite(float(logit_bias)):
        raise ValueError(f"logit_bias must be finite, got {float(logit_bias)}")
    return None


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
        _check_scalar_tensor("logit_scale", logit_scale, like)
        scale = logit_scale.reshape(()).to(device=like.device, dtype=compute)
        if not _host_checks():  # no host read while compiling: a scale <= 0 gives a NaN loss
            return torch.where(scale > 0, scale, torch.full_like(scale, math.nan))
        # the sign check runs even with check_finite=False: a scale <= 0 is not a finiteness
        # problem but a different loss (one scalar read)
        value = float(logit_scale.detach())
        if value <= 0 or (check_finite and not math.isfinite(value)):
            raise ValueError(
                f"logit_scale must be finite and > 0 (the exponentiated scale, e.g. "
                f"model.logit_scale.exp()), got {value}"
            )
        return scale
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
    """L2-normalise rows in fp32 (fp64 for fp64), overflow- and underflow-safe; input dtype out.

    Each row is first divided by its largest |value| (detached: the direction does not depend on
    it, so the gradient is exactly that of x / ||x||), so the squared norm lies in [1, D]: rows of
    1e20 (whose squared norm overflows fp32) or 1e-30 (below F.normalize's eps) are normalised
    exactly. An all-zero row (only reachable with check_finite=False) stays zero with a zero
    gradient; NaN/Inf rows give NaN.
    """
    work = features if features.dtype in (torch.float32, torch.float64) else features.float()
    peak = _row_peaks(work)
    nonzero = peak > 0
    unit = F.normalize(work / torch.where(nonzero, peak, torch.ones_like(peak)), dim=1)
    return (unit * nonzero).to(features.dtype)


def relaxed_contrastive_loss(
    image_features: Tensor,
    text_features: Tensor,
    logit_scale: Tensor | float,
    *,
    threshold: float | None = DEFAULT_THRESHOLD,
    groups: Tensor | None = None,
    normalize: bool = True,
    backend: str = "auto",
    backend_options: Mapping[str, Any] | None = None,
    chunk_size: int | None = None,
    check_finite: bool = True,
    distributed: bool | None = None,
    distributed_mode: DistributedMode = "local",
    process_group: Any = None,
    logit_bias: Tensor | float | None = None,
) -> Tensor:
    """Symmetric CLIP loss with positive-pair relaxation (the module docstring has the formula).

    Args:
        image_features: (B, D) floating tensor (fp16, bf16, fp32 or fp64); differentiable.
        text_features: (B, D), same shape, dtype and device as ``image_features``; differentiable.
            Row i of both is a positive pair; every other row of the other modality is a negative.
        logit_scale: t > 0, the multiplier already exponentiated (open_clip convention:
            ``model.logit_scale.exp()``): a float or a 0-d tensor, differentiable.
        threshold: theta; positive similarities are clamped to ``min(s_ii, theta)``. With
            ``normalize=True`` a cosine in (-1, 1], and ``1.0`` or ``None`` disables relaxation
            (exactly CLIP's loss). With ``normalize=False`` a bound on the raw dot product
            <x_i, y_i>: any finite float, ``1.0`` included (an ordinary clamp there, since raw
            s_ii can exceed 1); only ``None`` disables relaxation.
        groups: ``None`` (every other sample is a negative) or an integer tensor of ids, shape
            (B,) or (K, B) (K id vectors, e.g. text ids and study ids), any device (moved to the
            features' device), not differentiable. For i != j, (image i, text j) is not a
            negative when ``groups[k, i] == groups[k, j]`` for some k: l_ij is removed from the
            row softmax of i and the column softmax of j. Positives are always kept (and relaxed
            as usual). With ``distributed``, pass this rank's (b_r,) or (K, b_r) ids; they are
            gathered with the features (K must agree on all ranks; ids must mean the same on
            every rank, e.g. a stable hash). The module docstring has the formula.
        normalize: L2-normalise the features first (then theta is a cosine similarity). The
            normalisation divides each row by its largest |value| first, so features of any
            finite magnitude (1e20 in fp32, 1e-30) are normalised exactly (cosine similarity is
            scale-invariant). An all-zero row has no direction: it raises under
            ``check_finite``; without the check it stays a zero vector with zero gradient.
        backend: ``"dense"``, ``"chunked"``, ``"triton"`` or ``"auto"``
            (see :func:`relaxclip.backends.resolve_backend`).
        backend_options: keyword options of the chosen backend, validated against it:
            ``"chunked"``: ``chunk_size``; ``"triton"``: ``config`` (a ``TritonConfig`` of tile
            sizes) and ``allow_tf32``; ``"dense"``: none. An unknown, misspelt or inapplicable
            option raises ValueError naming the option and the backend; options with
            ``backend="auto"`` raise too (auto's choice depends on the batch size, device and
            dtype, so another backend's option would silently do nothing): name the backend.
        chunk_size: shortcut for ``backend_options={"chunk_size": n}`` (rows per block of the
            chunked backend, a positive int; default about 4M logits per block); only with
            ``backend="chunked"``.
        check_finite: check features, scale and bias for NaN/Inf, and (with ``normalize=True``)
            the features for all-zero rows; errors name the rows (one device sync on GPU). The
            sign of a tensor ``logit_scale`` is checked even with ``check_finite=False`` (a
            scale <= 0 is a different loss, not a non-finite one; one scalar read).
            Under ``torch.compile`` these value checks are skipped (a host read is a graph break,
            an error with ``fullgraph=True``): non-finite inputs then give a NaN loss, and a
            tensor ``logit_scale <= 0`` is turned into NaN instead of raising.
        distributed: compute the loss of the GLOBAL batch of a ``torch.distributed`` job, each
            rank passing its local (b_r, D) features (see ``relaxclip.distributed`` and
            docs/distributed.md). ``None`` (default): gather only when ``torch.distributed`` is
            initialised, ``process_group`` has more than one rank AND this call records
            gradients (grad mode on and a feature or the scale requires grad), i.e. in a training
            step, which every rank runs; a call that records no gradient (``torch.no_grad()``,
            ``inference_mode``, detached features), e.g. a validation loss on rank 0 only,
            computes the local loss and cannot wait for other ranks (the decision is logged once
            per process, logger ``relaxclip.distributed``; see
            :func:`relaxclip.distributed.resolve_distributed`). ``False``: local loss. ``True``:
            gather (RuntimeError when not initialised); every rank of the group must then make
            the call, e.g. for a global-batch validation loss. A call on one rank only that
            records gradients still waits for the others: pass ``distributed=False`` there. An
            input error raised on one rank only (NaN, wrong shape) likewise leaves the other
            ranks waiting in the collective until the launcher (torchrun) ends the job.
        distributed_mode: ``"local"`` (rank r computes the (b_r x B) rows/columns of its own
            samples and returns W * its share, so the mean over ranks is the global loss) or
            ``"global"`` (every rank computes the full (B x B) loss).
        process_group: the ``torch.distributed`` group to gather over (None = default group);
            gradients must be averaged over the same group (DDP's default).
        logit_bias: open_clip's optional learned logit bias (models built with
            ``init_logit_bias``): ``None``, a float or a one-element tensor. A scalar bias adds
            the same constant to every logit of a row and of a column, so it cancels in both
            softmaxes: the loss and all other gradients are exactly those without it. A tensor
            that requires grad stays in the graph with an exact zero gradient (so DDP does not
            report an unused parameter). A non-scalar bias raises ValueError.

    Returns:
        0-d tensor: fp32 for fp16/bf16/fp32 inputs, fp64 for fp64 inputs. Gradients reach both
        feature tensors (in their dtype) and ``logit_scale``.
    """
    theta = _check_threshold(threshold, normalize)
    options = _resolve_options(backend, backend_options, chunk_size)
    check_distributed_args(distributed, distributed_mode)
    if process_group is not None and distributed is None and not torch.distributed.is_initialized():
        raise ValueError(
            "process_group was given but torch.distributed is not initialised; initialise it "
            "first, or pass distributed=False for a local loss"
        )
    records_grad = torch.is_grad_enabled() and any(
        isinstance(v, torch.Tensor) and v.requires_grad
        for v in (image_features, text_features, logit_scale)
    )
    use_distributed = resolve_distributed(distributed, process_group, records_grad)
    # A rank may hold an empty local batch (the end of an epoch): the global batch is what counts,
    # and raising on one rank would leave the others waiting in the collective.
    checks = check_finite and _host_checks()
    _check_features(image_features, text_features, allow_empty=use_distributed)
    if checks:
        _check_values(image_features, text_features, normalize)
    group_ids = _check_groups(groups, image_features)
    bias = _check_bias(logit_bias, image_features, checks)
    with torch.autocast(image_features.device.type, enabled=False):  # the precision policy
        loss = _loss(
            image_features,
            text_features,
            logit_scale,
            theta,
            normalize,
            backend,
            options,
            check_finite,
            use_distributed,
            distributed_mode,
            process_group,
            group_ids,
        )
    if bias is not None:  # exact zero gradient: keeps a learned bias in the graph
        loss = loss + (bias.reshape(()) * 0.0).to(device=loss.device, dtype=loss.dtype)
    return loss


def _loss(
    image_features: Tensor,
    text_features: Tensor,
    logit_scale: Tensor | float,
    theta: float | None,
    normalize: bool,
    backend: str,
    options: dict[str, Any],
    check_finite: bool,
    use_distributed: bool,
    distributed_mode: DistributedMode,
    process_group: Any,
    group_ids: Tensor | None,
) -> Tensor:
    """The loss after argument validation, in the precision policy's autocast-free region."""
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
            backend_opts=options,
            mode=distributed_mode,
            process_group=process_group,
            groups=group_ids,
        )
    n = x.shape[0]
    name = resolve_backend(backend, x.device, n, n, x.dtype)
    total = get_backend(name).symmetric_loss_sum(x, y, scale, theta, groups=group_ids, **options)
    return total / (2 * n)


#: Quantiles of the positive-pair similarity s_ii reported by :func:`positive_pair_stats`.
DIAGNOSTIC_QUANTILES = (0.1, 0.5, 0.9)


def positive_pair_stats(
    image_features: Tensor,
    text_features: Tensor,
    threshold: float | None = DEFAULT_THRESHOLD,
    *,
    normalize: bool = True,
) -> dict[str, Tensor]:
    """Detached statistics of the batch's positive similarities s_ii, to see what theta does.

    Costs one row-wise dot product (O(B*D), no B x B pass): s_ii = <x_i, y_i> after the loss's
    normalisation (raw dot products with ``normalize=False``), in fp32 (fp64 for fp64 features).

    Returns a dict of 0-d tensors (no gradient): ``relaxed_share`` — the share of pairs with
    s_ii > theta, whose positive logit the loss clamps (0 with ``threshold=None``; pairs within
    rounding of theta may be counted differently from the backend's own comparison);
    ``positive_sim_mean``; ``positive_sim_q10`` / ``_q50`` / ``_q90`` — the
    :data:`DIAGNOSTIC_QUANTILES` as ``torch.quantile`` defines them (linear interpolation). For an
    empty batch (a rank with no local samples) every value is NaN. The statistics describe the
    pairs passed in: under ``torch.distributed`` they are this rank's LOCAL pairs, not the global
    batch (all-reduce them yourself, e.g. the mean weighted by the local batch size).
    """
    theta = _check_threshold(threshold, normalize)
    _check_features(image_features, text_features, allow_empty=True)
    with torch.no_grad(), torch.autocast(image_features.device.type, enabled=False):
        x = _normalize(image_features) if normalize else image_features
        y = _normalize(text_features) if normalize else text_features
        cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
        s = (x.to(cdt) * y.to(cdt)).sum(dim=1)
        if s.numel() == 0:
            nan = torch.full((), math.nan, dtype=cdt, device=s.device)
            share, mean, quantiles = nan, nan, nan.expand(len(DIAGNOSTIC_QUANTILES))
        else:
            share = (s > theta).to(cdt).mean() if theta is not None else s.new_zeros(())
            mean = s.mean()
            quantiles = torch.quantile(s, s.new_tensor(DIAGNOSTIC_QUANTILES))
    stats = {"relaxed_share": share, "positive_sim_mean": mean}
    for q, value in zip(DIAGNOSTIC_QUANTILES, quantiles, strict=True):
        stats[f"positive_sim_q{round(q * 100):02d}"] = value
    return stats


class LossOutput(dict[str, Tensor]):
    """``output_dict=True`` result: ``{"contrastive_loss": loss}`` plus ``.diagnostics``.

    The dict holds only the loss because open_clip's trainer sums every value of it
    (``total_loss = sum(losses.values())``) and logs each: statistics stored as items would be
    added to the reported loss. ``diagnostics`` holds :func:`positive_pair_stats` of the batch
    (detached 0-d tensors; this rank's local pairs under ``torch.distributed``).
    """

    def __init__(self, loss: Tensor, diagnostics: dict[str, Tensor]) -> None:
        super().__init__(contrastive_loss=loss)
        self.diagnostics = diagnostics


class RelaxedContrastiveLoss(nn.Module):
    """``nn.Module`` form of :func:`relaxed_contrastive_loss`; a drop-in for open_clip's ``ClipLoss``.

    Example::

        loss_fn = RelaxedContrastiveLoss(threshold=0.8)
        loss = loss_fn(image_features, text_features, model.logit_scale.exp())

    ``forward(image_features, text_features, logit_scale, logit_bias=None, output_dict=False, *,
    groups=None)``
    (open_clip's ``ClipLoss.forward`` signature) returns the 0-d loss, or with
    ``output_dict=True`` (open_clip's convention) a :class:`LossOutput`: the dict
    ``{"contrastive_loss": loss}`` whose ``.diagnostics`` attribute holds detached statistics of
    the batch's positive pairs (:func:`positive_pair_stats`: the share of relaxed pairs and the
    mean and quantiles of s_ii; one O(B*D) pass, this rank's local pairs under
    ``torch.distributed``). Log them to choose theta, e.g.
    ``for k, v in out.diagnostics.items(): writer.add_scalar(f"relax/{k}", v, step)``.
    Constructor arguments are those of :func:`relaxed_contrastive_loss` and are validated here
    (``backend_options`` against ``backend``).
    ``groups`` (B,) or (K, B) integer ids mark same-group pairs as non-negatives (see
    :func:`relaxed_contrastive_loss`); it is per batch, so it is a ``forward`` argument, e.g.
    ``loss_fn(**model_out, groups=batch["text_group"], output_dict=True)``.
    """

    def __init__(
        self,
        threshold: float | None = DEFAULT_THRESHOLD,
        *,
        distributed: bool | None = None,
        distributed_mode: DistributedMode = "local",
        process_group: Any = None,
        normalize: bool = True,
        backend: str = "auto",
        backend_options: Mapping[str, Any] | None = None,
        chunk_size: int | None = None,
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        _check_threshold(threshold, normalize)
        self.threshold, self.normalize = threshold, normalize
        self.backend = backend
        #: the validated backend options (``chunk_size`` merged in)
        self.backend_options = _resolve_options(backend, backend_options, chunk_size)
        check_distributed_args(distributed, distributed_mode)
        self.distributed = distributed
        self.distributed_mode = distributed_mode
        self.process_group = process_group
        self.check_finite = check_finite

    def forward(
        self,
        image_features: Tensor,
        text_features: Tensor,
        logit_scale: Tensor | float,
        logit_bias: Tensor | float | None = None,
        output_dict: bool = False,
        *,
        groups: Tensor | None = None,
    ) -> Any:
        """open_clip's ``ClipLoss.forward`` signature: ``loss(**model_out, output_dict=True)``
        works for every open_clip CLIP model, with or without ``logit_bias`` (see
        :func:`relaxed_contrastive_loss` for why a scalar bias changes nothing)."""
        if not isinstance(output_dict, bool):
            raise TypeError(f"output_dict must be True or False, got {type(output_dict).__name__}")
        loss = relaxed_contrastive_loss(
            image_features,
            text_features,
            logit_scale,
            threshold=self.threshold,
            groups=groups,
            normalize=self.normalize,
            backend=self.backend,
            backend_options=self.backend_options,
            check_finite=self.check_finite,
            distributed=self.distributed,
            distributed_mode=self.distributed_mode,
            process_group=self.process_group,
            logit_bias=logit_bias,
        )
        if not output_dict:
            return loss
        stats = positive_pair_stats(
            image_features, text_features, self.threshold, normalize=self.normalize
        )
        return LossOutput(loss, stats)

    def extra_repr(self) -> str:
        opts = f", backend_options={self.backend_options}" if self.backend_options else ""
        return (
            f"threshold={self.threshold}, normalize={self.normalize}, backend={self.backend!r}"
            + opts
        )


__all__ = [
    "DEFAULT_THRESHOLD",
    "DIAGNOSTIC_QUANTILES",
    "LossOutput",
    "RelaxedContrastiveLoss",
    "positive_pair_stats",
    "relaxed_contrastive_loss",
]
