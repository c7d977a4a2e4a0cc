r"""The relaxed contrastive loss: CLIP's symmetric InfoNCE with positive-pair relaxation.

Formula (B pairs, image features x_i, text features y_i, L2-normalised when ``normalize=True``)::

    s_ij = <x_i, y_j>,   t = logit_scale (already exponentiated),   p_i = t * min(s_ii, theta)
    E    = {(i, j) : i != j and g_ki = g_kj for some k}   same-group pairs (``groups``)
    l_ij = t * s_ij  (i != j, (i, j) not in E),   l_ij = -inf  ((i, j) in E),   l_ii = p_i
    L    = 1/(2B) * sum_i [ (logsumexp_j l_ij - p_i) + (logsumexp_j l_ji - p_i) ]

``theta = None`` (or 1 with ``normalize=True``) gives exactly CLIP's loss (open_clip's
``ClipLoss``). ``torch.autocast`` has no effect on the loss. ``docs/concepts.md`` has the
gradients, the precision policy, groups and how to choose theta
(:func:`relaxclip.calibrate_threshold`).

Example:
    >>> loss_fn = RelaxedContrastiveLoss(threshold=0.8)
    >>> loss = loss_fn(image_features, text_features, model.logit_scale.exp())
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Real
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from relaxclip._checks import check_bool, check_real, check_tensor, check_type, format_rows
from relaxclip.backends import check_backend_options, get_backend, resolve_backend
from relaxclip.backends._common import check_id_dtype, check_same, check_theta, compute_dtype
from relaxclip.distributed import (
    DistributedMode,
    check_distributed_args,
    gathered_loss,
    resolve_distributed,
)

Tensor = torch.Tensor

#: Default relaxation threshold theta (a cosine similarity; docs/concepts.md: how to choose one).
DEFAULT_THRESHOLD = 0.8

#: Quantiles of the positive-pair similarity s_ii reported by :func:`positive_pair_stats`.
DIAGNOSTIC_QUANTILES = (0.1, 0.5, 0.9)


def _check_threshold(
    threshold: object, normalize: bool, like: Tensor | None = None
) -> float | Tensor | None:
    """theta as the backends take it (``None``, a float or a 0-d tensor); static checks only."""
    if isinstance(threshold, Tensor):
        check_theta(threshold, like)
        if threshold.requires_grad:
            raise ValueError(
                "threshold must not require grad (theta is a constant of the loss), got a "
                "tensor that requires grad; pass threshold.detach()"
            )
        return threshold if like is None else threshold.to(compute_dtype(like.dtype))
    if threshold is None:
        return None
    if not normalize:
        return check_theta(check_real("threshold", threshold), like)
    value = check_real("threshold", threshold, low=-1.0, high=1.0, low_open=True)
    return None if value >= 1.0 else value


def _resolve_options(
    backend: str, backend_options: Mapping[str, Any] | None, chunk_size: int | None
) -> dict[str, Any]:
    """``backend_options`` with the ``chunk_size`` shortcut merged in, validated."""
    if backend_options is not None and not isinstance(backend_options, Mapping):
        check_backend_options(backend, backend_options)  # raises, naming backend_options
    options = dict(backend_options or {})
    if chunk_size is not None:
        if "chunk_size" in options:
            raise ValueError(
                "chunk_size must be given once, got it both as an argument and in backend_options"
            )
        options["chunk_size"] = chunk_size
    return check_backend_options(backend, options)


class _LossSettings(NamedTuple):
    """The loss's settings (arguments of the same names), checked on every call."""

    normalize: bool
    backend: Any  # a name, or a backend module (distributed_loss)
    options: Mapping[str, Any]
    check_finite: bool
    distributed: bool | None
    distributed_mode: DistributedMode
    process_group: Any

    @classmethod
    def checked(cls, *args: Any, **kwargs: Any) -> _LossSettings:
        settings = cls(*args, **kwargs)
        check_bool("normalize", settings.normalize)
        check_bool("check_finite", settings.check_finite)
        check_distributed_args(settings.distributed, settings.distributed_mode)
        return settings


def _check_features(x: Tensor, y: Tensor, allow_empty: bool = False, backend: Any = None) -> None:
    """Static checks of both features (type, layout, dtype, shape, device)."""
    for name, feats in (("image_features", x), ("text_features", y)):
        check_tensor(name, feats, ndim=2, floating=True)
        if feats.shape[0] == 0 and not allow_empty:
            raise ValueError(
                f"{name} must hold at least one sample (B >= 1), got shape {tuple(feats.shape)}"
            )
        if feats.shape[1] == 0:
            raise ValueError(
                f"{name} must have feature dimension D >= 1, got shape {tuple(feats.shape)}"
            )
    check_same(("image_features", "text_features"), x, y, "shape", "dtype", "device")
    if backend == "triton" and x.dtype == torch.float64:
        raise TypeError(
            "image_features and text_features must be bfloat16, float16 or float32 for "
            "backend='triton', got dtype torch.float64; use backend='dense' or 'chunked'"
        )


def _row_peaks(features: Tensor) -> Tensor:
    """(B, 1) largest |value| of each row (detached; NaN for a row holding NaN)."""
    return features.detach().abs().amax(dim=1, keepdim=True)


def _log_max_norm(features: Tensor, peaks: Tensor) -> Tensor:
    """log of the largest row norm, overflow-safe (rows are scaled by their peak first)."""
    work = features.detach().to(compute_dtype(features.dtype))
    safe = torch.where(peaks > 0, peaks, torch.ones_like(peaks)).to(work.dtype)
    norms = torch.linalg.vector_norm(work / safe[:, None], dim=1) * peaks.to(work.dtype)
    return torch.log(norms.amax())


def _check_values(
    x: Tensor, y: Tensor, normalize: bool, theta: object, scale: float | None
) -> None:
    """Value checks in one device sync: NaN/Inf or zero rows, theta, overflowing logits."""
    named = (("image_features", x), ("text_features", y))
    peaks = [_row_peaks(feats).flatten() for _, feats in named]
    flags = [~torch.isfinite(p) | (p == 0) if normalize else ~torch.isfinite(p) for p in peaks]
    if isinstance(theta, Tensor):
        ok = torch.isfinite(theta) & ((theta > -1) & (theta <= 1) if normalize else True)
        flags.append(~ok.reshape(1))
    log_bound = torch.zeros(())
    limit = math.log(torch.finfo(compute_dtype(x.dtype)).max)
    if not normalize and scale is not None and x.shape[0] > 0:
        log_bound = _log_max_norm(x, peaks[0]) + _log_max_norm(y, peaks[1])
        log_bound = log_bound + math.log(4 * x.shape[0] * scale)
        flags.append((log_bound > limit).reshape(1))
    if not bool(torch.cat(flags).any()):
        return
    for (name, _), peak in zip(named, peaks, strict=True):
        if bool((~torch.isfinite(peak)).any()):
            raise ValueError(
                f"{name} must be finite, got NaN or Inf in rows "
                f"{format_rows(torch.nonzero(~torch.isfinite(peak)).flatten(), peak.numel())} "
                "(pass check_finite=False to skip this check)"
            )
        if normalize and bool((peak == 0).any()):
            raise ValueError(
                f"{name} must have no all-zero rows with normalize=True (a zero vector has no "
                f"direction), got rows {format_rows(torch.nonzero(peak == 0).flatten(), peak.numel())}; "
                "drop those samples, or pass normalize=False"
            )
    if isinstance(theta, Tensor) and bool(flags[2]):
        top = f"finite in the compute dtype {theta.dtype} (|theta| <= {torch.finfo(theta.dtype).max:.4g})"
        expected = "a number in (-1.0, 1.0]" if normalize else top
        raise ValueError(
            f"threshold must be {expected}, got tensor value {float(theta)} in {theta.dtype} "
            "(a value beyond its range overflows when cast)"
        )
    raise ValueError(
        "image_features and text_features must be small enough with normalize=False that the "
        f"logits stay within {compute_dtype(x.dtype)} (logit_scale * |x_i| * |y_j| * 4B <= "
        f"{math.exp(limit):.3g}), got a bound of {math.exp(min(float(log_bound), 700)):.3g}; "
        "scale the features down or pass normalize=True"
    )


def _check_scalar(name: str, value: object, like: Tensor, expected: str, why: str = "") -> None:
    """A real number, or a one-element floating tensor on the features' device (or 0-d)."""
    if not isinstance(value, Tensor):
        check_type(name, value, Real, expected, exclude=bool)
        return
    check_tensor(name, value, floating=True)
    if value.numel() != 1:
        raise ValueError(
            f"{name} must be a scalar (0-d or one-element tensor), got shape "
            f"{tuple(value.shape)}{why}"
        )
    if value.device != like.device and value.dim() > 0:
        raise ValueError(
            f"{name} must be on the features' device {like.device}, got {value.device}"
        )


def _as_scale(
    logit_scale: Tensor | float, like: Tensor, check_finite: bool
) -> tuple[Tensor, float | None]:
    """``logit_scale`` as a 0-d compute-dtype tensor and its value (``None`` while compiling)."""
    _check_scalar("logit_scale", logit_scale, like, "a float or a scalar tensor")
    cdt = compute_dtype(like.dtype)
    if isinstance(logit_scale, Tensor):
        scale = logit_scale.reshape(()).to(device=like.device, dtype=cdt)
        if torch.compiler.is_compiling():
            return torch.where(scale > 0, scale, torch.full_like(scale, math.nan)), None
        value = float(logit_scale.detach())  # the sign is checked even without check_finite
    else:
        value, check_finite = float(logit_scale), True
        scale = torch.tensor(value, dtype=cdt, device=like.device)
    if value <= 0 or (check_finite and not math.isfinite(value)):
        raise ValueError(
            "logit_scale must be finite and > 0 (the exponentiated scale, e.g. "
            f"model.logit_scale.exp()), got {value}"
        )
    return scale, value


def _check_bias(
    logit_bias: Tensor | float | None, like: Tensor, check_finite: bool
) -> Tensor | None:
    """Validate ``logit_bias``; returned only when it requires grad (it cancels in the loss)."""
    if logit_bias is None:
        return None
    why = (
        "; a per-logit bias does not cancel in the softmax and is not supported (the "
        "SigLIP-style sigmoid loss is a different loss)"
    )
    _check_scalar("logit_bias", logit_bias, like, "None, a float or a scalar tensor", why)
    if not isinstance(logit_bias, Tensor):
        value = float(logit_bias)
    else:
        value = float(logit_bias.detach()) if check_finite else 0.0
    if not math.isfinite(value):
        raise ValueError(f"logit_bias must be finite, got {value}")
    return logit_bias if isinstance(logit_bias, Tensor) and logit_bias.requires_grad else None


def _check_groups(groups: object, like: Tensor, local: bool = True) -> Tensor | None:
    """``groups`` as (K, B) int64 ids on the features' device (no host sync); unless ``local``,
    B is checked by the shape exchange of the distributed loss (an error on every rank)."""
    if groups is None:
        return None
    groups = check_tensor("groups", groups)
    check_id_dtype(groups)
    n = like.shape[0]
    if groups.dim() not in (1, 2) or (local and groups.shape[-1] != n):
        raise ValueError(
            f"groups must have shape (B,) or (K, B) with B = {n} (the batch size), got shape "
            f"{tuple(groups.shape)}"
        )
    if groups.dim() == 2 and groups.shape[0] == 0:
        raise ValueError(
            "groups must hold at least one group vector (K >= 1), got shape (0, B); pass "
            "groups=None for no groups"
        )
    ids = groups.to(device=like.device, dtype=torch.int64, non_blocking=True)
    return ids if ids.dim() == 2 else ids.unsqueeze(0)


def _normalize(features: Tensor) -> Tensor:
    """L2-normalise rows, dividing by their largest |value| first; zero rows stay zero."""
    work = features if features.dtype in (torch.float32, torch.float64) else features.float()
    peak = _row_peaks(work)
    nonzero = peak > 0
    unit = F.normalize(work / torch.where(nonzero, peak, torch.ones_like(peak)), dim=1)
    return (unit * nonzero).to(features.dtype)


def _prepare(x: Tensor, y: Tensor, normalize: bool) -> tuple[Tensor, Tensor]:
    """Both features, normalised when ``normalize``."""
    return (_normalize(x), _normalize(y)) if normalize else (x, y)


def relaxed_contrastive_loss(
    image_features: Tensor,
    text_features: Tensor,
    logit_scale: Tensor | float,
    *,
    threshold: float | Tensor | None = DEFAULT_THRESHOLD,
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
    """Symmetric CLIP loss with positive-pair relaxation (formula in the module docstring).

    Args:
        image_features, text_features: (B, D) floating tensors (fp16, bf16, fp32 or fp64) of
            one shape, dtype and device; row i of both is a positive pair. Differentiable.
        logit_scale: t > 0, already exponentiated: a float or a scalar tensor, differentiable.
        threshold: theta: with ``normalize=True`` a cosine in (-1, 1] (``None`` or the float 1:
            no relaxation), else a bound on <x_i, y_i> finite in the compute dtype (only ``None``
            disables it); or a 0-d floating tensor on the features' device that does not require
            grad, applied as given (no host read): a tensor 1 clamps positives whose rounded
            cosine exceeds 1.
        groups: ``None`` or integer ids (B,) or (K, B), any device, not differentiable: for
            i != j, (i, j) is not a negative when ``groups[k, i] == groups[k, j]`` for some k.
        normalize: L2-normalise the features first (exact for any finite magnitude).
        backend: ``"dense"``, ``"chunked"``, ``"triton"`` or ``"auto"``
            (:func:`relaxclip.backends.resolve_backend`).
        backend_options: that backend's keyword options, validated; ``"auto"`` takes none.
        chunk_size: shortcut for ``backend_options={"chunk_size": n}`` (``backend="chunked"``).
        check_finite: check for NaN/Inf, all-zero rows (``normalize=True``) and overflowing
            logits (``normalize=False``); one device sync, skipped under ``torch.compile``.
        distributed: ``None`` (gather the global batch when the group has more than one rank
            and the call records gradients), ``True`` or ``False``; see docs/distributed.md.
        distributed_mode: ``"local"`` (each rank its own rows) or ``"global"`` (the full loss).
        process_group: the group to gather over (``None``: the default group).
        logit_bias: open_clip's optional scalar bias; it cancels in both softmaxes (a learned
            one gets an exact zero gradient).

    Returns:
        0-d tensor: fp32 for fp16/bf16/fp32 inputs, fp64 for fp64 inputs.

    Raises:
        TypeError, ValueError: naming the argument, for bad input (see docs/concepts.md).

    Example:
        >>> loss = relaxed_contrastive_loss(img, txt, model.logit_scale.exp(), threshold=0.8)
    """
    options = _resolve_options(backend, backend_options, chunk_size)
    settings = _LossSettings.checked(
        normalize, backend, options, check_finite, distributed, distributed_mode, process_group
    )
    _check_threshold(threshold, settings.normalize)  # before the tensors, as the module does
    return _relaxed_loss(
        image_features, text_features, logit_scale, threshold, settings, groups, logit_bias
    )[0]


def _relaxed_loss(
    image_features: Tensor,
    text_features: Tensor,
    logit_scale: Tensor | float,
    threshold: float | Tensor | None,
    settings: _LossSettings,
    groups: Tensor | None,
    logit_bias: Tensor | float | None,
) -> tuple[Tensor, float | Tensor | None]:
    """The loss of one call and the theta it used (``None``: no relaxation)."""
    distributed, process_group = settings.distributed, settings.process_group
    if process_group is not None and distributed is None and not torch.distributed.is_initialized():
        raise ValueError(
            "process_group must come with an initialised torch.distributed, got a group while "
            "it is not initialised; initialise it first, or pass distributed=False"
        )
    records_grad = torch.is_grad_enabled() and any(
        isinstance(v, Tensor) and v.requires_grad
        for v in (image_features, text_features, logit_scale)
    )
    use_distributed = resolve_distributed(distributed, process_group, records_grad)
    # a rank may hold an empty local batch (the end of an epoch): the global batch counts
    _check_features(image_features, text_features, use_distributed, settings.backend)
    theta = _check_threshold(threshold, settings.normalize, image_features)
    group_ids = _check_groups(groups, image_features, local=not use_distributed)
    checks = settings.check_finite and not torch.compiler.is_compiling()
    scale, scale_value = _as_scale(logit_scale, image_features, settings.check_finite)
    bias = _check_bias(logit_bias, image_features, checks)
    if checks:
        _check_values(image_features, text_features, settings.normalize, theta, scale_value)
    with torch.autocast(image_features.device.type, enabled=False):  # the precision policy
        x, y = _prepare(image_features, text_features, settings.normalize)
        if use_distributed:
            loss = gathered_loss(x, y, scale, theta, group_ids, settings)
        else:
            n = x.shape[0]
            backend = get_backend(resolve_backend(settings.backend, x.device, n, n, x.dtype))
            total = backend.symmetric_loss_sum(
                x, y, scale, theta, groups=group_ids, **settings.options
            )
            loss = total / (2 * n)
    if bias is not None:  # exact zero gradient: keeps a learned bias in the graph
        loss = loss + (bias.reshape(()) * 0.0).to(device=loss.device, dtype=loss.dtype)
    return loss, theta


def positive_pair_stats(
    image_features: Tensor,
    text_features: Tensor,
    threshold: float | Tensor | None = DEFAULT_THRESHOLD,
    *,
    normalize: bool = True,
    check_finite: bool = True,
) -> dict[str, Tensor]:
    """Detached statistics of the batch's positive similarities s_ii, to see what theta does.

    Computed after the loss's normalisation, in fp32 (fp64 for fp64 features); arguments as
    :func:`relaxed_contrastive_loss`, with its checks (``check_finite``: its value checks).

    Returns:
        0-d tensors: ``relaxed_share`` (the share of pairs with s_ii > theta; 0 without
        relaxation), ``positive_sim_mean`` and ``positive_sim_q10`` / ``_q50`` / ``_q90``
        (:data:`DIAGNOSTIC_QUANTILES`, ``torch.quantile``'s definition); NaN for an empty batch.

    Example:
        >>> positive_pair_stats(img, txt, 0.8)["relaxed_share"]
    """
    check_bool("normalize", normalize)
    _check_threshold(threshold, normalize)
    _check_features(image_features, text_features, allow_empty=True)
    theta = _check_threshold(threshold, normalize, image_features)
    if check_bool("check_finite", check_finite) and not torch.compiler.is_compiling():
        _check_values(image_features, text_features, normalize, theta, None)
    with torch.no_grad(), torch.autocast(image_features.device.type, enabled=False):
        x, y = _prepare(image_features, text_features, normalize)
        cdt = compute_dtype(x.dtype)
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

    ``diagnostics``: :func:`positive_pair_stats` of the batch and, when the loss relaxes,
    ``"threshold"`` (the theta used, a 0-d tensor on the features' device).
    """

    def __init__(self, loss: Tensor, diagnostics: dict[str, Tensor]) -> None:
        super().__init__(contrastive_loss=loss)
        self.diagnostics = diagnostics


class RelaxedContrastiveLoss(nn.Module):
    """``nn.Module`` form of :func:`relaxed_contrastive_loss`; a drop-in for open_clip's ``ClipLoss``.

    Constructor arguments are those of :func:`relaxed_contrastive_loss`, validated here and on
    every call (so ``loss_fn.threshold = 0.7`` is checked too); the module holds no state.
    ``forward(image_features, text_features, logit_scale, logit_bias=None, output_dict=False, *,
    groups=None)`` is open_clip's ``ClipLoss.forward`` signature. It returns the 0-d loss or,
    with ``output_dict=True``, a :class:`LossOutput`.

    Example:
        >>> loss_fn = RelaxedContrastiveLoss(threshold=calibrate_threshold(pairs))
        >>> out = loss_fn(**model_out, output_dict=True, groups=batch["text_group"])
        >>> out["contrastive_loss"].backward()
    """

    def __init__(
        self,
        threshold: float | Tensor | None = DEFAULT_THRESHOLD,
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
        options = _resolve_options(backend, backend_options, chunk_size)
        _LossSettings.checked(
            normalize, backend, options, check_finite, distributed, distributed_mode, None
        )
        _check_threshold(threshold, normalize)
        self.threshold = threshold
        self.normalize = normalize
        self.backend = backend
        #: the validated backend options (``chunk_size`` merged in)
        self.backend_options = options
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
        """The loss (or a :class:`LossOutput`); see the class docstring."""
        check_bool("output_dict", output_dict)
        options = (
            self.backend_options
            if torch.compiler.is_compiling()
            else check_backend_options(self.backend, self.backend_options)
        )
        fields = {f: getattr(self, f) for f in _LossSettings._fields if f != "options"}
        settings = _LossSettings.checked(options=options, **fields)
        loss, theta = _relaxed_loss(
            image_features, text_features, logit_scale, self.threshold, settings, groups, logit_bias
        )
        if not output_dict:
            return loss
        stats = positive_pair_stats(  # checked by the loss (or check_finite=False)
            image_features, text_features, theta, normalize=self.normalize, check_finite=False
        )
        if theta is not None:
            stats["threshold"] = torch.as_tensor(
                theta, dtype=compute_dtype(image_features.dtype), device=image_features.device
            )
        return LossOutput(loss, stats)

    def extra_repr(self) -> str:
        opts = f", backend_options={self.backend_options}" if self.backend_options else ""
        return (
            f"threshold={self.threshold!r}, normalize={self.normalize}, backend={self.backend!r}"
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
