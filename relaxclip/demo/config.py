"""The demo's configuration: :class:`DemoConfig` (every knob, recorded in results.json) and
:func:`resolve_device`."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from relaxclip.demo.synthetic import SYNTHETIC_FINDINGS
from relaxclip.loss import DEFAULT_THRESHOLD

__all__ = [
    "DEFAULT_ARM_RELAX_QUANTILE",
    "MAX_THREADS",
    "MAX_WORKERS",
    "DemoConfig",
    "available_cores",
    "resolve_device",
    "resolve_workers",
    "thread_warning",
]

DEFAULT_ARM_RELAX_QUANTILE: float | None = None
"""The one place that decides how the default relaxed arms (c), (d), (e) relax when no
``--threshold`` / ``--relax-quantile`` is given: ``None`` -> the absolute
``DemoConfig.threshold`` (the library's ``DEFAULT_THRESHOLD``); a q in (0, 1) -> a quantile
threshold. Issue 18 decided from the 2026-12-01 sweeps to keep the absolute default (every
quantile collapsed training; docs/concepts.md#quantile-threshold), hence ``None``."""

MAX_THREADS = 1024
"""Upper bound of ``threads`` (torch crashes with very large thread counts, e.g. 100,000)."""

MAX_WORKERS = 64
"""Upper bound of ``workers`` (one process per seed; each holds a copy of the benchmark)."""


@dataclass
class DemoConfig:
    """Every knob of the demo (all recorded in ``results.json``).

    Steps count optimizer updates with ``batch_size`` pairs each.  Learning rates (peak values
    in (0, 1]) follow a linear warm-up over the first 10 % of steps and a cosine decay to 0.
    ``threads``: CPU threads for torch, 1 to :data:`MAX_THREADS` (``None``: half the available
    cores, :func:`available_cores`, 1 to 4); more than the available cores is allowed with a
    printed warning.
    ``workers``: processes that run the seeds in parallel, 1 to :data:`MAX_WORKERS`, at most
    one per seed (``None``: :func:`resolve_workers`); every seed's numbers are the same in any
    worker count at a given ``threads`` (:mod:`relaxclip.demo.workers`).
    Relaxation of the configured arms (``Arm.threshold == CONFIGURED``): the quantile threshold
    ``relax_quantile`` (default :data:`DEFAULT_ARM_RELAX_QUANTILE`) or the absolute
    ``threshold``, never both (:meth:`validate` raises); with neither, the library's
    ``DEFAULT_THRESHOLD`` (:attr:`absolute_threshold`).  The sweep (``sweep_threshold``) runs arm (d) for every absolute θ
    in ``sweep_thresholds`` and every quantile q in ``sweep_quantiles`` (may be empty).
    """

    n_train: int = 3000
    n_val: int = 500
    n_test: int = 1000
    image_size: int = 64
    data_seed: int = 0
    seeds: tuple[int, ...] = (0, 1, 2)
    pretrain_steps: int = 300
    finetune_steps: int = 150
    batch_size: int = 64
    pretrain_lr: float = 2e-3
    finetune_lr: float = 5e-4
    weight_decay: float = 0.05
    embed_dim: int = 64
    threshold: float | None = None
    relax_quantile: float | None = DEFAULT_ARM_RELAX_QUANTILE
    sweep_threshold: bool = False
    sweep_thresholds: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    sweep_quantiles: tuple[float, ...] = (0.5, 0.7, 0.9)
    eval_every: int = 50
    finetune_schedule: str = "cosine"
    finetune_warmup: int = 15
    n_bootstrap: int = 1000
    bootstrap_seed: int = 0
    device: str = "auto"
    threads: int | None = None
    workers: int | None = None
    reports: str | None = None
    labels: str | None = None
    progress: bool = True
    plots: bool = True
    findings: tuple[str, ...] = field(default=SYNTHETIC_FINDINGS)

    @classmethod
    def quick(cls, **overrides: Any) -> DemoConfig:
        """The ``--quick`` preset (one seed, small splits, few steps; every stage still runs)."""
        base: dict[str, Any] = {
            "n_train": 800,
            "n_val": 200,
            "n_test": 400,
            "seeds": (0,),
            "pretrain_steps": 80,
            "finetune_steps": 40,
            "eval_every": 20,
            "n_bootstrap": 200,
            "sweep_thresholds": (0.6, 0.8, 1.0),
        }
        base.update(overrides)
        return cls(**base)

    @property
    def absolute_threshold(self) -> float:
        """The absolute θ of the configured arms when ``relax_quantile`` is ``None``:
        ``threshold``, or the library's ``DEFAULT_THRESHOLD`` when that is ``None``."""
        return DEFAULT_THRESHOLD if self.threshold is None else float(self.threshold)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field."""
        for name in (
            "n_train",
            "n_val",
            "n_test",
            "pretrain_steps",
            "finetune_steps",
            "batch_size",
            "eval_every",
            "n_bootstrap",
            "embed_dim",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (contrastive loss), got {self.batch_size}")
        if self.batch_size > self.n_train:
            raise ValueError(
                f"batch_size ({self.batch_size}) must not exceed n_train ({self.n_train})"
            )
        if self.eval_every > self.finetune_steps:
            raise ValueError(
                f"eval_every ({self.eval_every}) must not exceed finetune_steps "
                f"({self.finetune_steps})"
            )
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be non-empty and distinct, got {self.seeds}")
        for name in ("pretrain_lr", "finetune_lr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
                raise ValueError(f"{name} must be a learning rate in (0, 1], got {value!r}")
        if not 0 <= self.weight_decay < math.inf:
            raise ValueError(f"weight_decay must be finite and >= 0, got {self.weight_decay}")
        if self.threshold is not None and not -1.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be None or in (-1, 1], got {self.threshold}")
        if self.threshold is not None and self.relax_quantile is not None:
            raise ValueError(
                f"threshold ({self.threshold}) and relax_quantile ({self.relax_quantile}) are both "
                "set; the configured arms relax with one of them: set the other to None"
            )
        if not self.sweep_thresholds or any(not -1.0 < t <= 1.0 for t in self.sweep_thresholds):
            raise ValueError(
                f"sweep_thresholds must be values in (-1, 1], got {self.sweep_thresholds}"
            )
        if self.relax_quantile is not None and not _is_quantile(self.relax_quantile):
            raise ValueError(
                f"relax_quantile must be None or in (0, 1), got {self.relax_quantile!r}"
            )
        if not isinstance(self.sweep_quantiles, tuple) or not all(
            _is_quantile(q) for q in self.sweep_quantiles
        ):
            raise ValueError(
                f"sweep_quantiles must be a tuple of values in (0, 1), got {self.sweep_quantiles!r}"
            )
        if self.finetune_schedule not in ("cosine", "constant"):
            raise ValueError(
                f"finetune_schedule must be 'cosine' or 'constant', got {self.finetune_schedule!r}"
            )
        if self.image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16, got {self.image_size}")
        if self.threads is not None and not 1 <= self.threads <= MAX_THREADS:
            raise ValueError(f"threads must be in [1, {MAX_THREADS}], got {self.threads}")
        if self.workers is not None and (
            isinstance(self.workers, bool)
            or not isinstance(self.workers, int)
            or not 1 <= self.workers <= MAX_WORKERS
        ):
            raise ValueError(
                f"workers must be None or an int in [1, {MAX_WORKERS}], got {self.workers!r}"
            )
        if (self.reports is None) != (self.labels is None):
            raise ValueError("reports and labels must be given together (Open-I mode)")


def _is_quantile(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and 0 < value < 1


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def thread_warning(threads: int) -> str | None:
    """A warning when ``threads`` exceeds the available cores (torch then oversubscribes them:
    slower, same results), else ``None``."""
    cores = available_cores()
    if threads <= cores:
        return None
    return (
        f"threads={threads} exceeds the {cores} CPU core(s) available; torch will oversubscribe "
        "them (slower, same results)"
    )


def resolve_workers(cfg: DemoConfig, device: torch.device, threads: int) -> int:
    """Worker processes for the seeds: ``cfg.workers`` if set, else as many as the available
    cores allow at ``threads`` torch threads each on a CPU device (1 on any other device);
    never more than the number of seeds."""
    if cfg.workers is not None:
        wanted = cfg.workers
    elif device.type == "cpu":
        wanted = max(1, available_cores() // threads)
    else:
        wanted = 1
    return max(1, min(wanted, len(cfg.seeds)))


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available else CPU; otherwise ``torch.device(device)``, checked
    by allocating one element on it (``ValueError`` naming the device when that fails; the
    ``meta`` device holds no data and is rejected)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, str) or not device.strip():
        raise ValueError(f"device must be a non-empty str such as 'cpu' or 'cuda', got {device!r}")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"device: cannot parse {device!r} ({exc})") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} requested but CUDA is not available")
    if dev.type == "meta":
        raise ValueError(
            "device: 'meta' tensors hold no data, so nothing can be trained or evaluated on it; "
            "use 'cpu', 'cuda' or 'auto'"
        )
    try:
        torch.empty(1, device=dev)
    except (RuntimeError, AssertionError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"device: {device!r} is not usable here ({first})") from None
    return dev
