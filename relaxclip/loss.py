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

Quantile threshold (``relax_quantile=q``, issue 18). Instead of an absolute cosine, theta can
follow the model's own positive similarities: theta_step = torch.quantile(s.detach(), q), the
q-quantile (linear interpolation: s sorted ascending, h = q (B - 1), k = floor(h),
theta_step = s_(k) + (h - k) (s_(k+1) - s_(k))) of the B positive similarities s_ii of the batch
the loss sees -- the GLOBAL batch under ``torch.distributed`` (computed from the gathered
features, so identical on every rank). :class:`RelaxedContrastiveLoss` can smooth it across
steps, theta_t = m theta_{t-1} + (1 - m) theta_step (``relax_momentum=m``, module state). theta
is a constant in the backward: the loss and its gradients are those of the absolute-threshold
loss at the theta used (reported in the ``output_dict=True`` diagnostics). The top (1 - q)
share of positive pairs is then relaxed (up to ties and 1/B) whatever the model's similarity
scale; an absolute theta = 0.8 relaxes nothing for a model whose matched pairs sit at cosines
around 0.3. With ``groups`` the positives are still the diagonal pairs (groups only remove
negatives). The functional form also takes theta as a 0-d tensor on the features' device, for
a schedule of your own. Measured caution (docs/concepts.md#quantile-threshold): in the demo's
runs every q tried (0.5, 0.7, 0.9; relax_momentum 0) collapsed training (mean positive cosine
fell below -0.6 and zero-shot AUROC dropped by 0.01-0.21). Relaxation breaks the loss's
invariance to a common shift of all similarities (the gradient of the loss summed over all s_ij
is t / (2B) sum_relaxed (2 - P_ii - Q_ii) > 0, so descent lowers every similarity); an absolute
theta stops relaxing once the positives fall below it, a quantile theta follows them down and
the drive never stops. Smoothing (relax_momentum 0.9 / 0.99, q = 0.9, one seed) slowed the drift
but theta still fell at every measured step. It is not the default.

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

import functools
import math
from collections.abc import Callable, Mapping
from numbers import Real
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from relaxclip.backends import BACKENDS, check_backend_options, get_backend, resolve_backend
from relaxclip.backends._common import bool_option
from relaxclip.distributed import (
    DistributedMode,
    check_distributed_args,
    distributed_loss,
    resolve_distributed,
)

Tensor = torch.Tensor

#: Default relaxation threshold theta (a cosine similarity), decided in issue 18 from the
#: ``relaxclip demo --sweep-threshold`` runs of 2026-12-01 (calibrated embedded benchmark and
#: Open-I real-text mode, 3 seeds each; docs/concepts.md#quantile-threshold, docs/demo.md). The
#: rule, written before the sweep results were read: the candidate (none, absolute 0.5-0.9,
#: quantile 0.5/0.7/0.9) with the best validation macro AUROC averaged over both benchmarks
#: gives the kind of default. Absolute theta won (0.9: 0.7774, none: 0.7774, 0.8: 0.7773; the
#: differences, about 1e-4, are far below the seed spread), every quantile lost badly (0.62-0.73:
#: the quantile arms collapse), so the default stays an absolute theta and its value stays 0.8:
#: 0.8, 0.9 and 1.0 cannot be told apart (they relax 0-0.2 % of pairs there). It is a
#: conservative value, nearly inactive for those models and for CLIP-family models at their
#: learned temperature (matched-pair cosines near 0.3): read ``positive_pair_stats`` /
#: ``output_dict=True`` diagnostics and choose theta on your validation split.
DEFAULT_THRESHOLD = 0.8


class _DefaultThreshold(float):
    """The value of an omitted ``threshold`` argument: :data:`DEFAULT_THRESHOLD` as a float
    subclass, so that it behaves as that float everywhere while an explicit ``threshold`` (even
    ``0.8``) can be told apart from the default (``relax_quantile`` excludes an explicit one)."""


_THRESHOLD_UNSET = _DefaultThreshold(DEFAULT_THRESHOLD)


def _check_flag(value: object, name: str) -> bool:
    """``value`` if it is exactly ``True`` or ``False``; a string such as ``"no"`` is not read as
    True (TypeError naming the argument; the backends' boolean-option check)."""
    return bool_option(name)(value)


def _check_threshold(threshold: float | None, normalize: bool = True) -> float | None:
    """Validate a float theta; return the clamp bound, or ``None`` for no relaxation.

    ``normalize=True``: theta is a cosine similarity in (-1, 1]; theta = 1 (or ``None``) means no
    relaxation. ``normalize=False``: theta bounds the raw dot product s_ii = <x_i, y_i>, which is
    not limited to [-1, 1], so any finite theta is accepted and theta = 1 is an ordinary clamp
    (only ``None`` disables relaxation; the loss is continuous in theta). A tensor theta is
    checked by :func:`_check_threshold_tensor`.
    """
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, Real):
        kind = "a float in (-1, 1]" if normalize else "a finite float"
        raise TypeError(
            f"threshold must be {kind}, a 0-d floating tensor or None, "
            f"got {type(threshold).__name__}"
        )
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


def _check_threshold_tensor(threshold: Tensor, like: Tensor) -> Tensor:
    """Static checks of a tensor theta (no host read); return it detached in the compute dtype.

    It must be a 0-d floating tensor on the features' device that does not require grad (theta
    is a constant of the loss). Its value (finite, and in (-1, 1] with ``normalize=True``) is
    checked with the features' values, in the same single device sync (:func:`_check_values`).
    """
    _check_tensor_kind("threshold", threshold)
    if threshold.dim() != 0:
        raise ValueError(
            f"threshold must be a 0-d tensor (a scalar, e.g. torch.tensor(0.8, device=...)), "
            f"got shape {tuple(threshold.shape)}"
        )
    if threshold.device != like.device:
        raise ValueError(
            f"threshold must be on the features' device {like.device} (no host sync is made to "
            f"move it), got {threshold.device}; pass threshold.to({str(like.device)!r})"
        )
    if threshold.requires_grad:
        raise ValueError(
            "threshold must not require grad: theta is a constant of the loss (no gradient "
            "flows into it); pass threshold.detach()"
        )
    return threshold.to(_compute_dtype(like))


def _check_quantile(relax_quantile: object) -> float | None:
    """``relax_quantile``: ``None`` or a float q with 0 < q < 1 (returned as ``float``)."""
    if relax_quantile is None:
        return None
    if isinstance(relax_quantile, bool) or not isinstance(relax_quantile, Real):
        raise TypeError(
            f"relax_quantile must be a float in (0, 1) or None, got {type(relax_quantile).__name__}"
        )
    q = float(relax_quantile)
    if not 0.0 < q < 1.0:  # also rejects NaN
        raise ValueError(
            f"relax_quantile must be in (0, 1) (the quantile of the batch's positive "
            f"similarities used as theta), got {q}"
        )
    return q


def _check_momentum(relax_momentum: object) -> float:
    """``relax_momentum``: a float m with 0 <= m < 1 (returned as ``float``)."""
    if isinstance(relax_momentum, bool) or not isinstance(relax_momentum, Real):
        raise TypeError(
            f"relax_momentum must be a float in [0, 1), got {type(relax_momentum).__name__}"
        )
    m = float(relax_momentum)
    if not 0.0 <= m < 1.0:  # also rejects NaN
        raise ValueError(
            f"relax_momentum must be in [0, 1) (0 = no smoothing: theta is each batch's quantile), "
            f"got {m}"
        )
    return m


def _check_relaxation(
    threshold: float | Tensor | None, relax_quantile: object, normalize: bool
) -> tuple[float | Tensor | None, float | None]:
    """Validate ``threshold`` and ``relax_quantile`` together: ``(theta, q)``.

    ``theta`` is the float clamp bound (``None``: no relaxation or quantile mode) or the tensor
    as given (checked against the features later); ``q`` is the quantile or ``None``. An
    explicit ``threshold`` together with ``relax_quantile`` raises ValueError.
    """
    q = _check_quantile(relax_quantile)
    if q is not None:
        if not isinstance(threshold, _DefaultThreshold):
            raise ValueError(
                "threshold and relax_quantile are mutually exclusive: pass relax_quantile=q "
                f"(theta = the q-quantile of the positive similarities) or threshold=theta, "
                f"not both (got threshold={threshold!r}, relax_quantile={q})"
            )
        return None, q
    if isinstance(threshold, torch.Tensor):
        return threshold, None
    return _check_threshold(threshold, normalize), None


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


class _LossSettings(NamedTuple):
    """How a loss is computed, fixed for a loss (not per batch): built once per call by
    :func:`relaxed_contrastive_loss` (from its arguments) and by
    :meth:`RelaxedContrastiveLoss.forward` (from the module's attributes, so an attribute assigned
    after construction is used), with the meanings of :func:`relaxed_contrastive_loss`'s
    arguments of the same names. ``options`` are the validated backend options
    (:func:`_resolve_options`); ``distributed`` is the requested setting (``None``: decided per
    call by :func:`relaxclip.distributed.resolve_distributed`)."""

    normalize: bool
    backend: str
    options: Mapping[str, Any]
    check_finite: bool
    distributed: bool | None
    distributed_mode: DistributedMode
    process_group: Any

    @property
    def gather_options(self) -> dict[str, Any]:
        """The keyword settings of :func:`relaxclip.distributed.distributed_loss` (backend,
        its options, mode and process group) for a gathering call."""
        return {
            "backend": self.backend,
            "backend_opts": self.options,
            "mode": self.distributed_mode,
            "process_group": self.process_group,
        }


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


def _check_values(
    image_features: Tensor, text_features: Tensor, normalize: bool, theta: Tensor | None = None
) -> None:
    """NaN/Inf rows, all-zero rows when normalising, and the value of a tensor ``theta`` (finite;
    in (-1, 1] when normalising): one device sync for all of them."""
    named = (("image_features", image_features), ("text_features", text_features))
    peaks = [_row_peaks(feats).flatten() for _, feats in named]
    bad = [~torch.isfinite(p) | (p == 0) if normalize else ~torch.isfinite(p) for p in peaks]
    if theta is not None:
        theta_ok = torch.isfinite(theta)
        if normalize:
            theta_ok = theta_ok & (theta > -1) & (theta <= 1)
        bad.append((~theta_ok).reshape(1))
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
    value = float(theta) if theta is not None else math.nan
    expected = "in (-1, 1] (a cosine similarity)" if normalize else "finite"
    raise ValueError(f"threshold must be {expected}, got the tensor value {value}")


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


def _compute_dtype(like: Tensor) -> torch.dtype:
    """The loss's compute dtype for features ``like``: fp64 for fp64, fp32 otherwise."""
    return torch.float64 if like.dtype == torch.float64 else torch.float32


def _positive_similarities(x: Tensor, y: Tensor) -> Tensor:
    """(B,) detached s_ii = <x_i, y_i> in the compute dtype (one row-wise dot, no B x B pass)."""
    cdt = _compute_dtype(x)
    return (x.detach().to(cdt) * y.detach().to(cdt)).sum(dim=1)


#: What a quantile threshold is computed by: the (already normalised) features of the batch the
#: loss sees, the GLOBAL batch under ``torch.distributed`` -> theta (0-d, compute dtype, device).
ThresholdFn = Callable[[Tensor, Tensor], Tensor]


def _batch_quantile(x: Tensor, y: Tensor, q: float) -> Tensor:
    """theta_step = the q-quantile of the positive similarities s_ii (detached), exactly as
    ``torch.quantile(s, q)`` defines it (``interpolation="linear"``).

    With the B values sorted, s_(0) <= ... <= s_(B-1), h = q (B - 1) and k = floor(h):
    theta = lerp(s_(k), s_(k+1), h - k); NaN if any s_ii is NaN. Written out with the same
    device ops as ``torch.quantile`` (rank in s's dtype, gather, lerp) instead of calling it,
    because its argument checks read a value on the host in some torch versions (a device sync,
    and a graph break under ``torch.compile``): nothing here is read back.
    """
    s = torch.sort(_positive_similarities(x, y)).values
    n = s.shape[0]
    rank = torch.full((1,), q, dtype=s.dtype, device=s.device) * (n - 1)
    below = rank.long()  # floor (rank >= 0)
    above = torch.clamp(below + 1, max=n - 1)
    theta = torch.lerp(s.gather(0, below), s.gather(0, above), rank - below.to(s.dtype))
    theta = torch.where(torch.isnan(s[-1:]), s[-1:], theta)  # sort puts NaN last
    return theta.reshape(())


def relaxed_contrastive_loss(
    image_features: Tensor,
    text_features: Tensor,
    logit_scale: Tensor | float,
    *,
    threshold: float | Tensor | None = _THRESHOLD_UNSET,
    relax_quantile: float | None = None,
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
        threshold: theta (default :data:`DEFAULT_THRESHOLD`); positive similarities are
            clamped to ``min(s_ii, theta)``. With ``normalize=True`` a cosine in (-1, 1], and
            ``1.0`` or ``None`` disables relaxation (exactly CLIP's loss). With
            ``normalize=False`` a bound on the raw dot product <x_i, y_i>: any finite float,
            ``1.0`` included (an ordinary clamp there, since raw s_ii can exceed 1); only
            ``None`` disables relaxation. A 0-d floating tensor on the features' device is
            accepted too (your own schedule: no host sync, no recompilation per value): it must
            not require grad (theta is a constant of the loss), its value is checked with the
            features under ``check_finite`` (finite, in (-1, 1] with ``normalize=True``; a
            tensor theta >= 1 clamps at that value, which leaves cosines unchanged).
        relax_quantile: q in (0, 1), or ``None`` (default: the absolute ``threshold``). A
            QUANTILE threshold: theta is the q-quantile of this batch's positive similarities,
            ``theta = torch.quantile(s.detach(), q)`` with s_ii = <x_i, y_i> after the
            normalisation (``torch.quantile``'s linear interpolation: s sorted ascending,
            h = q (B - 1), k = floor(h), theta = s_(k) + (h - k) (s_(k+1) - s_(k))), so the
            top (1 - q) share of positive pairs is relaxed (up to ties and 1/B) whatever the
            model's similarity scale. theta is a constant in the backward (no gradient flows
            through the quantile): loss and gradients equal those of ``threshold=theta``.
            Under ``torch.distributed`` (a gathering call) theta is the quantile of the GLOBAL
            batch's positives, identical on every rank. Mutually exclusive with an explicit
            ``threshold`` (ValueError). With ``groups`` the positives are still the diagonal
            pairs s_ii (groups only remove negatives). For a theta smoothed across steps use
            :class:`RelaxedContrastiveLoss` (``relax_momentum``); its ``output_dict=True``
            diagnostics report the theta used.
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
    _check_flag(normalize, "normalize")
    _check_flag(check_finite, "check_finite")
    theta, q = _check_relaxation(threshold, relax_quantile, normalize)
    threshold_fn = None if q is None else functools.partial(_batch_quantile, q=q)
    settings = _LossSettings(
        normalize,
        backend,
        _resolve_options(backend, backend_options, chunk_size),
        check_finite,
        distributed,
        distributed_mode,
        process_group,
    )
    loss, _ = _relaxed_loss(
        image_features,
        text_features,
        logit_scale,
        theta,
        threshold_fn,
        settings,
        groups=groups,
        logit_bias=logit_bias,
    )
    return loss


def _relaxed_loss(
    image_features: Tensor,
    text_features: Tensor,
    logit_scale: Tensor | float,
    theta: float | Tensor | None,
    threshold_fn: ThresholdFn | None,
    settings: _LossSettings,
    *,
    groups: Tensor | None,
    logit_bias: Tensor | float | None,
) -> tuple[Tensor, Tensor | float | None]:
    """The loss after ``threshold``/``relax_quantile`` validation: ``(loss, theta used)``.

    ``theta`` is a float bound, a (not yet device-checked) tensor or ``None``; ``threshold_fn``
    (quantile mode, ``theta`` then None) computes theta from the normalised features of the
    batch the loss sees (the global batch when gathering).
    """
    distributed, process_group = settings.distributed, settings.process_group
    check_distributed_args(distributed, settings.distributed_mode)
    if process_group is not None and distributed is None and not torch.distributed.is_initialized():
        raise ValueError(
            "process_group was given but torch.distributed is not initialised; initialise it "
            "first, or pass distributed=False for a local loss"
        )
    records_grad = _records_grad(image_features, text_features, logit_scale)
    use_distributed = resolve_distributed(distributed, process_group, records_grad)
    # A rank may hold an empty local batch (the end of an epoch): the global batch is what counts,
    # and raising on one rank would leave the others waiting in the collective.
    checks = settings.check_finite and _host_checks()
    _check_features(image_features, text_features, allow_empty=use_distributed)
    if isinstance(theta, torch.Tensor):
        theta = _check_threshold_tensor(theta, image_features)
    if checks:
        _check_values(
            image_features,
            text_features,
            settings.normalize,
            theta if isinstance(theta, torch.Tensor) else None,
        )
    group_ids = _check_groups(groups, image_features)
    bias = _check_bias(logit_bias, image_features, checks)
    used: list[Tensor] = []

    def resolve(x: Tensor, y: Tensor) -> Tensor:
        assert threshold_fn is not None
        value = threshold_fn(x, y).to(_compute_dtype(x))
        used.append(value)
        return value

    with torch.autocast(image_features.device.type, enabled=False):  # the precision policy
        scale = _as_scale_tensor(logit_scale, image_features, settings.check_finite)
        x = _normalize(image_features) if settings.normalize else image_features
        y = _normalize(text_features) if settings.normalize else text_features
        loss = _loss(
            x,
            y,
            scale,
            theta,
            None if threshold_fn is None else resolve,
            settings,
            use_distributed,
            group_ids,
        )
    if bias is not None:  # exact zero gradient: keeps a learned bias in the graph
        loss = loss + (bias.reshape(()) * 0.0).to(device=loss.device, dtype=loss.dtype)
    return loss, (used[0] if used else theta)


def _records_grad(image_features: Tensor, text_features: Tensor, logit_scale: object) -> bool:
    """Whether a loss call records gradients (grad mode on and a feature or the scale requires
    grad): the rule of ``distributed=None`` and of the module's running-theta update."""
    return torch.is_grad_enabled() and any(
        isinstance(v, torch.Tensor) and v.requires_grad
        for v in (image_features, text_features, logit_scale)
    )


def _loss(
    x: Tensor,
    y: Tensor,
    scale: Tensor,
    theta: float | Tensor | None,
    threshold_fn: ThresholdFn | None,
    settings: _LossSettings,
    use_distributed: bool,
    group_ids: Tensor | None,
) -> Tensor:
    """The loss of validated, prepared inputs (in the precision policy's autocast-free region):
    ``x``, ``y`` the (B, D) features (normalised when ``settings.normalize``), ``scale`` the 0-d
    scale tensor. With ``use_distributed`` (this call's resolved ``settings.distributed``) this
    rank's share of the global-batch loss (:func:`relaxclip.distributed.distributed_loss`), else
    the batch's loss from ``settings.backend``."""
    if use_distributed:
        return distributed_loss(
            x,
            y,
            scale,
            theta,
            groups=group_ids,
            threshold_fn=threshold_fn,
            **settings.gather_options,
        )
    if threshold_fn is not None:
        theta = threshold_fn(x, y)
    n = x.shape[0]
    name = resolve_backend(settings.backend, x.device, n, n, x.dtype)
    backend = get_backend(name)
    total = backend.symmetric_loss_sum(x, y, scale, theta, groups=group_ids, **settings.options)
    return total / (2 * n)


#: Quantiles of the positive-pair similarity s_ii reported by :func:`positive_pair_stats`.
DIAGNOSTIC_QUANTILES = (0.1, 0.5, 0.9)


def positive_pair_stats(
    image_features: Tensor,
    text_features: Tensor,
    threshold: float | Tensor | None = DEFAULT_THRESHOLD,
    *,
    normalize: bool = True,
) -> dict[str, Tensor]:
    """Detached statistics of the batch's positive similarities s_ii, to see what theta does.

    Costs one row-wise dot product (O(B*D), no B x B pass): s_ii = <x_i, y_i> after the loss's
    normalisation (raw dot products with ``normalize=False``), in fp32 (fp64 for fp64 features).
    ``threshold``: a float, a 0-d floating tensor on the features' device (e.g. the theta a
    quantile threshold used) or ``None``.

    Returns a dict of 0-d tensors (no gradient): ``relaxed_share`` — the share of pairs with
    s_ii > theta, whose positive logit the loss clamps (0 with ``threshold=None``; pairs within
    rounding of theta may be counted differently from the backend's own comparison);
    ``positive_sim_mean``; ``positive_sim_q10`` / ``_q50`` / ``_q90`` — the
    :data:`DIAGNOSTIC_QUANTILES` as ``torch.quantile`` defines them (linear interpolation). For an
    empty batch (a rank with no local samples) every value is NaN. The statistics describe the
    pairs passed in: under ``torch.distributed`` they are this rank's LOCAL pairs, not the global
    batch (all-reduce them yourself, e.g. the mean weighted by the local batch size).
    """
    _check_features(image_features, text_features, allow_empty=True)
    _check_flag(normalize, "normalize")
    theta: float | Tensor | None
    if isinstance(threshold, torch.Tensor):
        theta = _check_threshold_tensor(threshold, image_features)
    else:
        theta = _check_threshold(threshold, normalize)
    with torch.no_grad(), torch.autocast(image_features.device.type, enabled=False):
        x = _normalize(image_features) if normalize else image_features
        y = _normalize(text_features) if normalize else text_features
        s = _positive_similarities(x, y)
        cdt = s.dtype
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
    (detached 0-d tensors; this rank's local pairs under ``torch.distributed``) and, whenever
    the loss relaxes, ``"threshold"``: the theta the loss used (0-d tensor on the features'
    device; with a quantile threshold, the global-batch theta under ``torch.distributed``).
    """

    def __init__(self, loss: Tensor, diagnostics: dict[str, Tensor]) -> None:
        super().__init__(contrastive_loss=loss)
        self.diagnostics = diagnostics


class RelaxedContrastiveLoss(nn.Module):
    """``nn.Module`` form of :func:`relaxed_contrastive_loss`; a drop-in for open_clip's ``ClipLoss``.

    Example::

        loss_fn = RelaxedContrastiveLoss(threshold=0.8)  # absolute theta (a cosine)
        loss_fn = RelaxedContrastiveLoss(relax_quantile=0.7, relax_momentum=0.9)  # quantile
        loss = loss_fn(image_features, text_features, model.logit_scale.exp())

    ``forward(image_features, text_features, logit_scale, logit_bias=None, output_dict=False, *,
    groups=None)``
    (open_clip's ``ClipLoss.forward`` signature) returns the 0-d loss, or with
    ``output_dict=True`` (open_clip's convention) a :class:`LossOutput`: the dict
    ``{"contrastive_loss": loss}`` whose ``.diagnostics`` attribute holds detached statistics of
    the batch's positive pairs (:func:`positive_pair_stats`: the share of relaxed pairs and the
    mean and quantiles of s_ii; one O(B*D) pass, this rank's local pairs under
    ``torch.distributed``) and ``"threshold"``, the theta used (absent when nothing is relaxed,
    ``threshold=None``). Log them to choose theta, e.g.
    ``for k, v in out.diagnostics.items(): writer.add_scalar(f"relax/{k}", v, step)``.
    Constructor arguments are those of :func:`relaxed_contrastive_loss` and are validated here
    (``backend_options`` against ``backend``).
    ``groups`` (B,) or (K, B) integer ids mark same-group pairs as non-negatives (see
    :func:`relaxed_contrastive_loss`); it is per batch, so it is a ``forward`` argument, e.g.
    ``loss_fn(**model_out, groups=batch["text_group"], output_dict=True)``.

    Quantile threshold (``relax_quantile=q``; mutually exclusive with an explicit
    ``threshold``). Each step computes theta_step = ``torch.quantile(s.detach(), q)`` over the
    positive similarities s_ii of the batch the loss sees (the global batch under
    ``torch.distributed``; see :func:`relaxed_contrastive_loss` for the interpolation) and uses

        theta_t = m * theta_{t-1} + (1 - m) * theta_step,   theta_1 = theta_step (first update)

    with ``m = relax_momentum`` in [0, 1) (default 0: theta_t = theta_step, no smoothing). The
    module keeps two buffers (saved by ``state_dict()``, restored by ``load_state_dict()``, so a
    resumed run continues identically): ``running_threshold`` (0-d float32, theta_t of the last
    update, NaN before the first; ``.to(torch.float64)`` makes it float64, but a conversion to
    float16/bfloat16 keeps it float32) and ``num_threshold_updates`` (0-d int64, the number of
    updates; 0 means theta_1 is the batch quantile). Both move to the features' device on the
    first call (no host sync: the EMA and the first-step choice are device ops). A training call
    whose batch quantile is not finite (NaN features, which are not checked with
    ``check_finite=False`` or under ``torch.compile``) uses that NaN theta (its loss is NaN) but
    leaves both buffers unchanged, so one bad batch does not make every later loss NaN. The buffers are
    updated only by calls that train: ``module.training`` and the call records gradients (the
    rule of ``distributed=None``), so a validation loss (``torch.no_grad()`` or ``.eval()``)
    neither changes the state nor, under ``torch.distributed``, lets ranks diverge. Such a call
    uses theta = ``running_threshold`` when ``relax_momentum > 0`` and an update has happened,
    else the batch quantile. Under ``torch.distributed`` every rank computes the same theta from
    the same gathered positives, so the buffers stay identical across ranks (a DDP wrapper does
    not need to broadcast them) -- when the loss gathers (``distributed=None`` or ``True``; with
    ``distributed=False`` each rank takes its own batch's quantile). The buffers follow the
    features' device on the first call; under ``torch.compile`` move the loss module to that
    device first (``loss_fn.to(device)``) so the compiled graph does not reassign them. Buffers exist only with ``relax_quantile``: the state dict of
    an absolute-threshold loss stays empty.
    """

    running_threshold: Tensor
    num_threshold_updates: Tensor

    def __init__(
        self,
        threshold: float | None = _THRESHOLD_UNSET,
        *,
        relax_quantile: float | None = None,
        relax_momentum: float = 0.0,
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
        if isinstance(threshold, torch.Tensor):
            raise TypeError(
                "threshold of RelaxedContrastiveLoss must be a float or None (a module holds a "
                "fixed theta); for a per-step tensor theta call relaxed_contrastive_loss"
            )
        _check_flag(normalize, "normalize")
        _check_flag(check_finite, "check_finite")
        _, q = _check_relaxation(threshold, relax_quantile, normalize)
        momentum = _check_momentum(relax_momentum)
        if q is None and momentum != 0.0:
            raise ValueError(
                f"relax_momentum={momentum} needs relax_quantile (it smooths the quantile "
                "threshold across steps); an absolute threshold has nothing to smooth"
            )
        #: the absolute theta (``None`` in quantile mode and without relaxation)
        self.threshold = None if q is not None else threshold
        self.relax_quantile, self.relax_momentum = q, momentum
        self.normalize = normalize
        self.backend = backend
        #: the validated backend options (``chunk_size`` merged in)
        self.backend_options = _resolve_options(backend, backend_options, chunk_size)
        check_distributed_args(distributed, distributed_mode)
        self.distributed = distributed
        self.distributed_mode = distributed_mode
        self.process_group = process_group
        self.check_finite = check_finite
        if q is not None:
            self.register_buffer("running_threshold", torch.tensor(math.nan))
            self.register_buffer("num_threshold_updates", torch.tensor(0, dtype=torch.int64))

    def _apply(
        self, fn: Callable[[Tensor], Tensor], recurse: bool = True
    ) -> RelaxedContrastiveLoss:
        """``nn.Module._apply`` (behind ``.to``, ``.half()``, ``.cuda()``, ...), except that the
        running theta never drops below float32: ``module.to(torch.bfloat16)`` (e.g. Lightning's
        ``precision="bf16-true"`` converting the module that holds the loss) would otherwise store
        theta_t with 8 bits of mantissa, and the EMA stalls wherever (1 - m) |theta_step - theta|
        is below half a bf16 ulp (about 0.002 near 0.9)."""
        super()._apply(fn, recurse)
        if self.relax_quantile is not None and self.running_threshold.dtype in (
            torch.float16,
            torch.bfloat16,
        ):
            self.running_threshold = self.running_threshold.float()
        return self

    def _check_quantile_state(self) -> None:
        """Re-validate the quantile attributes on every call (like ``threshold``), so that one
        assigned after construction is checked, never silently ignored or used out of range."""
        _check_quantile(self.relax_quantile)
        _check_momentum(self.relax_momentum)
        if self.threshold is not None:
            raise ValueError(
                f"threshold ({self.threshold!r}) and relax_quantile ({self.relax_quantile!r}) are "
                "both set on this RelaxedContrastiveLoss; they are mutually exclusive: set one "
                "of them to None"
            )
        if not hasattr(self, "running_threshold"):
            raise ValueError(
                "relax_quantile was set on a RelaxedContrastiveLoss built without it (it has no "
                "running-threshold buffers): construct RelaxedContrastiveLoss(relax_quantile=q)"
            )

    def _quantile_theta(self, x: Tensor, y: Tensor, update: bool) -> Tensor:
        """theta of this call in quantile mode (see the class docstring), updating the buffers
        when ``update``; device ops only."""
        assert self.relax_quantile is not None
        step = _batch_quantile(x, y, self.relax_quantile)
        if self.running_threshold.device != step.device:
            self.running_threshold = self.running_threshold.to(step.device)
            self.num_threshold_updates = self.num_threshold_updates.to(step.device)
        m = self.relax_momentum
        started = self.num_threshold_updates > 0
        previous = self.running_threshold.to(step.dtype)
        if not update:
            return torch.where(started, previous, step) if m > 0 else step
        theta = torch.where(started, m * previous + (1.0 - m) * step, step) if m > 0 else step
        # a non-finite batch quantile (NaN features, unchecked under check_finite=False or
        # torch.compile) leaves the state as it was: that call's loss is NaN, but the EMA is not
        # poisoned for every later step (device ops only: no host read)
        finite = torch.isfinite(step)
        with torch.no_grad():
            self.running_threshold.copy_(torch.where(finite, theta, previous))
            self.num_threshold_updates.add_(finite.to(self.num_threshold_updates.dtype))
        return theta

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
        # attributes assigned after construction are validated as the constructor does
        _check_flag(self.normalize, "normalize")
        _check_flag(self.check_finite, "check_finite")
        options = (
            self.backend_options
            if torch.compiler.is_compiling()
            else check_backend_options(self.backend, self.backend_options)
        )
        threshold_fn: ThresholdFn | None = None
        if self.relax_quantile is not None:
            self._check_quantile_state()
            update = self.training and _records_grad(image_features, text_features, logit_scale)
            threshold_fn = functools.partial(self._quantile_theta, update=update)
        elif _check_momentum(self.relax_momentum) != 0.0:
            raise ValueError(
                f"relax_momentum={self.relax_momentum} needs relax_quantile (it smooths the "
                "quantile threshold across steps); this loss has relax_quantile=None"
            )
        fixed = (
            None if threshold_fn is not None else _check_threshold(self.threshold, self.normalize)
        )
        settings = _LossSettings(
            self.normalize,
            self.backend,
            options,
            self.check_finite,
            self.distributed,
            self.distributed_mode,
            self.process_group,
        )
        loss, theta = _relaxed_loss(
            image_features,
            text_features,
            logit_scale,
            fixed,
            threshold_fn,
            settings,
            groups=groups,
            logit_bias=logit_bias,
        )
        if not output_dict:
            return loss
        stats = positive_pair_stats(image_features, text_features, theta, normalize=self.normalize)
        if theta is not None:
            cdt = _compute_dtype(image_features)
            stats["threshold"] = (
                theta
                if isinstance(theta, torch.Tensor)
                else torch.tensor(theta, dtype=cdt, device=image_features.device)
            )
        return LossOutput(loss, stats)

    def extra_repr(self) -> str:
        opts = f", backend_options={self.backend_options}" if self.backend_options else ""
        relax = (
            f"threshold={self.threshold}"
            if self.relax_quantile is None
            else f"relax_quantile={self.relax_quantile}, relax_momentum={self.relax_momentum}"
        )
        return f"{relax}, normalize={self.normalize}, backend={self.backend!r}" + opts


__all__ = [
    "DEFAULT_THRESHOLD",
    "DIAGNOSTIC_QUANTILES",
    "LossOutput",
    "RelaxedContrastiveLoss",
    "positive_pair_stats",
    "relaxed_contrastive_loss",
]
