"""The relaxed contrastive loss on the global batch of a ``torch.distributed`` job.

Each rank passes its local features (b_r, D); they are gathered (ranks in rank order,
``B = sum_r b_r``) with an autograd-aware all-gather. ``"global"`` mode returns the full loss L
on every rank, ``"local"`` mode ``W * S_r / (2B)`` (S_r: the loss rows of the rank's own
samples); either way DDP's gradient average is exactly the single-process gradient of L
(derivation: ``docs/distributed.md``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any, Literal, Protocol

import torch
import torch.distributed as dist
from torch import Tensor

from relaxclip._checks import FLOATING, check_choice, check_type
from relaxclip.backends import get_backend, resolve_backend

__all__ = [
    "DISTRIBUTED_MODES",
    "DistributedMode",
    "LossSumBackend",
    "all_gather_rows",
    "check_distributed_args",
    "distributed_loss",
    "is_distributed_active",
    "resolve_distributed",
]

logger = logging.getLogger("relaxclip.distributed")
_LOGGED_AUTO_MODES: set[bool] = set()

DistributedMode = Literal["local", "global"]
DISTRIBUTED_MODES: tuple[str, ...] = ("local", "global")
_DTYPE_CODES = {dtype: code for code, dtype in enumerate(FLOATING)}


class LossSumBackend(Protocol):
    """A loss backend for :func:`distributed_loss`: a module of :mod:`relaxclip.backends`."""

    @property
    def symmetric_loss_sum(self) -> Callable[..., Tensor]: ...

    @property
    def rows_loss_sum(self) -> Callable[..., Tensor]: ...


def check_distributed_args(distributed: object, mode: object) -> None:
    """Validate ``distributed`` (bool or None) and ``distributed_mode`` (one of the modes)."""
    check_type("distributed", distributed, (bool, type(None)), "True, False or None (auto)")
    check_choice("distributed_mode", mode, DISTRIBUTED_MODES)


def is_distributed_active(process_group: dist.ProcessGroup | None = None) -> bool:
    """True iff ``torch.distributed`` is initialised and ``process_group`` (``None``: the
    default group) has more than one rank, this process among them."""
    if not (dist.is_available() and dist.is_initialized()):
        return False
    group = process_group if process_group is not None else dist.group.WORLD
    return dist.get_rank(group) >= 0 and dist.get_world_size(group) > 1


def resolve_distributed(
    distributed: bool | None,
    process_group: dist.ProcessGroup | None,
    records_grad: bool,
) -> bool:
    """Whether a loss call gathers: ``distributed`` as given, or for ``None`` when the group is
    active and the call records gradients (docs/distributed.md); logged once per kind."""
    if distributed is not None:
        return distributed
    if not is_distributed_active(process_group):
        return False
    if records_grad not in _LOGGED_AUTO_MODES:
        _LOGGED_AUTO_MODES.add(records_grad)
        logger.info(
            "relaxclip loss, distributed=None: torch.distributed is initialised; %s "
            "(the global batch is gathered only for calls that record gradients; pass "
            "distributed=True or False to choose explicitly)",
            "this call records gradients -> global-batch loss (gather on every rank)"
            if records_grad
            else "this call records no gradients -> local loss of this rank's batch, no gather",
        )
    return records_grad


def _resolve_group(process_group: dist.ProcessGroup | None) -> dist.ProcessGroup:
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "distributed loss requested but torch.distributed is not initialised; call "
            "torch.distributed.init_process_group(...) first or pass distributed=False"
        )
    group = process_group if process_group is not None else dist.group.WORLD
    if group is None:  # pragma: no cover - WORLD is set once initialised
        raise RuntimeError("torch.distributed has no default process group")
    if dist.get_rank(group) < 0:
        raise ValueError("process_group: this process is not a member of the given process group")
    return group


def _autograd_all_gather_equal(t: Tensor, group: dist.ProcessGroup) -> Tensor:
    """All-gather equal-shaped ``t`` (n, ...) along dim 0 -> (W*n, ...); the backward is a
    reduce-scatter with SUM (torch < 2.13: the autograd-aware all-gather, cloned)."""
    import torch.distributed._functional_collectives as fc

    if hasattr(fc, "all_gather_single"):
        return fc.wait_tensor(fc.all_gather_single(t.contiguous(), 0, group))
    return fc.all_gather_tensor_autograd(t.contiguous(), 0, group).clone()


def _gather_metadata(meta: Tensor, group: dist.ProcessGroup) -> Tensor:
    """All-gather a small int64 vector (k,) from every rank -> (W, k); not differentiable."""
    with torch.no_grad():
        gathered = _autograd_all_gather_equal(meta.reshape(-1), group)
    return gathered.reshape(dist.get_world_size(group), meta.numel())


def all_gather_rows(
    t: Tensor, sizes: list[int], process_group: dist.ProcessGroup | None = None
) -> Tensor:
    """Concatenate every rank's ``t`` (sizes[r], ...) in rank order -> (sum(sizes), ...).

    ``sizes``: every rank's number of rows (the same list on all ranks). Differentiable: this
    rank's ``t`` gets the SUM over ranks of the gradients of its rows (reduce-scatter).
    """
    group = _resolve_group(process_group)
    rank = dist.get_rank(group)
    world = dist.get_world_size(group)
    if len(sizes) != world:
        raise ValueError(f"sizes: expected {world} entries (one per rank), got {len(sizes)}")
    if t.shape[0] != sizes[rank]:
        raise ValueError(
            f"sizes: entry for rank {rank} is {sizes[rank]} but the local tensor has "
            f"{t.shape[0]} rows"
        )
    longest = max(sizes)
    padded = t
    if t.shape[0] < longest:
        padded = torch.cat([t, t.new_zeros((longest - t.shape[0], *t.shape[1:]))])
    gathered = _autograd_all_gather_equal(padded, group)
    if all(n == longest for n in sizes):
        return gathered
    return torch.cat([gathered[r * longest : r * longest + n] for r, n in enumerate(sizes)], dim=0)


def _exchange_shapes(
    x: Tensor, y: Tensor, group: dist.ProcessGroup, groups: Tensor | None = None
) -> list[int]:
    """Gather every rank's (b, D, dtype, K, groups' length) and check them (every rank raises
    the same error: none is left waiting in a collective); return the sizes b."""
    shape = (0, x.shape[0]) if groups is None else groups.shape
    meta = torch.tensor(
        [x.shape[0], x.shape[1], _DTYPE_CODES[x.dtype], *shape],
        dtype=torch.int64,
        device=x.device,
    )
    table = _gather_metadata(meta, group).tolist()
    for r, (b, _, _, _, n) in enumerate(table):
        if n != b:
            raise ValueError(
                f"groups must have shape (B,) or (K, B) with B the local batch size on every "
                f"rank, got {n} ids per vector on rank {r} for a batch of {b}"
            )
    values = [sorted({row[column] for row in table}) for column in range(4)]
    if len(values[3]) > 1:
        raise ValueError(
            f"groups must have the same number K of id vectors on every rank (0: groups=None), "
            f"got {values[3]}"
        )
    for column, what, error in ((1, "feature dimension D", ValueError), (2, "dtype", TypeError)):
        if len(values[column]) > 1:
            got = values[1] if column == 1 else [FLOATING[code] for code in values[2]]
            raise error(
                f"image_features and text_features must have the same {what} on every rank, "
                f"got {got}"
            )
    sizes = [int(row[0]) for row in table]
    if sum(sizes) == 0:
        raise ValueError(
            "image_features and text_features must hold at least one sample on some rank (a "
            "global batch B >= 1), got 0 rows on every rank"
        )
    return sizes


def distributed_loss(
    x: Tensor,
    y: Tensor,
    logit_scale: Tensor | float,
    threshold: float | Tensor | None,
    *,
    backend: str | ModuleType | LossSumBackend,
    backend_opts: Mapping[str, Any] | None = None,
    mode: DistributedMode = "local",
    process_group: dist.ProcessGroup | None = None,
    groups: Tensor | None = None,
    check_finite: bool = True,
) -> Tensor:
    """This rank's share of the relaxed contrastive loss on the global batch.

    Args:
        x, y: local image and text features (b_r, D), already normalised when wanted, checked
            as ``image_features``/``text_features`` of :func:`relaxclip.relaxed_contrastive_loss`
            with ``normalize=False``; differentiable. ``b_r`` may differ between ranks, ``D``
            and the dtype may not.
        logit_scale: t > 0, a float or a scalar tensor (the same on every rank); differentiable.
        threshold: theta (a float finite in the compute dtype, a 0-d tensor on the features'
            device, or ``None``: no relaxation), the same on every rank; a tensor is applied as
            given.
        backend: a name of ``relaxclip.backends.BACKENDS`` (``"auto"`` resolved from this
            rank's logit block) or an object with ``symmetric_loss_sum`` and ``rows_loss_sum``;
            ``backend_opts`` are passed to those as keywords (checked for a backend name).
        mode: ``"local"`` (rank r: the rows of its own samples, times W) or ``"global"`` (every
            rank the full loss).
        process_group: group to gather over (None: the default group); DDP must average
            gradients over the same group.
        groups: ``None`` or this rank's integer ids (K, b_r) (or (b_r,)), K the same on every
            rank; not differentiable.
        check_finite: the loss's value checks (NaN/Inf features, ``logit_scale``, overflowing
            logits), which read the device on the host; ``False`` skips them.

    Returns:
        0-d tensor (fp32 for fp16/bf16 features, else the feature dtype) whose mean over ranks
        is the global loss L.

    Raises:
        TypeError, ValueError: bad input, as :func:`relaxclip.relaxed_contrastive_loss` (before
            any collective); D, dtypes, K or a ``groups`` length that differ from the rank's
            batch are raised on every rank.
        RuntimeError: ``torch.distributed`` not initialised.

    Example:
        >>> loss = distributed_loss(x, y, scale, 0.8, backend="auto", mode="local")
    """
    from relaxclip import loss  # here: relaxclip.loss imports this module

    if isinstance(backend, str) or not hasattr(backend, "rows_loss_sum"):
        options = loss._resolve_options(backend, backend_opts, None)  # type: ignore[arg-type]
    else:
        options = dict(backend_opts or {})
    settings = loss._LossSettings.checked(
        False, backend, options, check_finite, True, mode, process_group
    )
    return loss._relaxed_loss(x, y, logit_scale, threshold, settings, groups, None)[0]


def gathered_loss(
    x: Tensor, y: Tensor, logit_scale: Tensor, threshold: Any, groups: Tensor | None, settings: Any
) -> Tensor:
    """:func:`distributed_loss` on checked arguments: ``groups`` (K, b_r) int64 ids or None,
    ``settings`` the loss's (``backend``, ``options``, ``distributed_mode``, ``process_group``)."""
    group = _resolve_group(settings.process_group)
    backend, mode, opts = settings.backend, settings.distributed_mode, settings.options
    sizes = _exchange_shapes(x, y, group, groups)
    total = sum(sizes)
    both = all_gather_rows(torch.cat([x, y], dim=1), sizes, group)
    x_all, y_all = both.tensor_split(2, dim=1)
    groups_all = None
    if groups is not None:  # ids ride along as rows (b_r, K); integers, so no gradient
        with torch.no_grad():
            ids = groups.T.contiguous()
            groups_all = all_gather_rows(ids, sizes, group).T.contiguous()
    if isinstance(backend, str):
        n_rows = total if mode == "global" else x.shape[0]
        backend = get_backend(resolve_backend(backend, x.device, n_rows, total, x.dtype))
    if mode == "global":
        loss_sum = backend.symmetric_loss_sum(
            x_all, y_all, logit_scale, threshold, groups=groups_all, **opts
        )
        return loss_sum / (2 * total)
    if x.shape[0] == 0:  # a zero share, in the graph: every rank joins the backward collective
        return both.sum() * 0.0 + logit_scale * 0.0
    offset = sum(sizes[: dist.get_rank(group)])
    rows = [
        backend.rows_loss_sum(a, keys, logit_scale, threshold, offset, groups=groups_all, **opts)
        for a, keys in ((x, y_all), (y, x_all))
    ]
    return (rows[0] + rows[1]) * (dist.get_world_size(group) / (2 * total))
