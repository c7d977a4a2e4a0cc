"""The demo's configuration: :class:`DemoConfig` (every knob, recorded in results.json) and
:func:`resolve_device`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch

from relaxclip._checks import check_choice, check_int, check_real, describe
from relaxclip.demo.synthetic import SYNTHETIC_FINDINGS
from relaxclip.loss import DEFAULT_THRESHOLD

__all__ = [
    "DEFAULT_THRESHOLD_QUANTILE",
    "LONG_STEPS",
    "MAX_THREADS",
    "MAX_WORKERS",
    "DemoConfig",
    "available_cores",
    "resolve_device",
    "resolve_workers",
    "thread_warning",
]

DEFAULT_THRESHOLD_QUANTILE: float | None = None
"""The one place that decides how the default relaxed arms (c), (d), (e) relax when no
``--threshold`` / ``--relax-quantile`` is given: ``None`` -> the absolute
``DemoConfig.threshold`` (the library's ``DEFAULT_THRESHOLD``); a q in (0, 1) -> θ calibrated
at quantile q. The sweeps favoured the absolute default (docs/demo.md), hence ``None``."""

LONG_STEPS = {"synthetic": 425, "openi": 150}
"""Fine-tuning steps of the ``--long`` preset per benchmark (docs/long-regime.md)."""

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
    printed warning.  ``compare_arms=False`` prints stage times and a pass line instead of
    the table, the conclusion and the per-arm validation AUROC (results.json is the same).
    ``workers``: processes that run the seeds in parallel, 1 to :data:`MAX_WORKERS`, at most
    one per seed (``None``: :func:`resolve_workers`); every seed's numbers are the same in any
    worker count at a given ``threads`` (:mod:`relaxclip.demo.workers`).
    Relaxation of the configured arms (``Arm.threshold == CONFIGURED``): θ calibrated at the
    quantile ``threshold_quantile`` (default :data:`DEFAULT_THRESHOLD_QUANTILE`) or the
    absolute ``threshold``, never both (:meth:`validate` raises); with neither, the library's
    ``DEFAULT_THRESHOLD`` (:attr:`absolute_threshold`).  A quantile arm's θ is calibrated once
    per seed on the pre-trained model's first ``calibration_batches`` fine-tuning batches.
    The sweep (``sweep_threshold``) runs arm (d) for every absolute θ in ``sweep_thresholds``
    and every quantile q in ``sweep_quantiles`` (may be empty).
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
    threshold_quantile: float | None = DEFAULT_THRESHOLD_QUANTILE
    calibration_batches: int = 10
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
    compare_arms: bool = True
    findings: tuple[str, ...] = field(default=SYNTHETIC_FINDINGS)

    @classmethod
    def quick(cls, **overrides: Any) -> DemoConfig:
        """The ``--quick`` preset (one seed, small splits, few steps; every stage still runs).

        It prints no arm comparison (``compare_arms=False``): stage times and a pass line.
        """
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
            "compare_arms": False,
        }
        base.update(overrides)
        return cls(**base)

    @classmethod
    def long(cls, **overrides: Any) -> DemoConfig:
        """The ``--long`` preset: the long fine-tuning regime of docs/long-regime.md.

        A constant learning rate after warm-up for :data:`LONG_STEPS` steps (chosen per benchmark
        by the budget rule before any relaxed arm ran), validation every 25 steps, ten seeds,
        and arm (d) also with θ calibrated at q = 0.9 (the sweep with no absolute θ).
        """
        openi = overrides.get("reports") is not None
        base: dict[str, Any] = {
            "seeds": tuple(range(10)),
            "finetune_steps": LONG_STEPS["openi" if openi else "synthetic"],
            "finetune_schedule": "constant",
            "eval_every": 25,
            "sweep_threshold": True,
            "sweep_thresholds": (),
            "sweep_quantiles": (0.9,),
        }
        base.update(overrides)
        return cls(**base)

    @property
    def absolute_threshold(self) -> float:
        """The absolute θ of the configured arms when ``threshold_quantile`` is ``None``:
        ``threshold``, or the library's ``DEFAULT_THRESHOLD`` when that is ``None``."""
        return DEFAULT_THRESHOLD if self.threshold is None else float(self.threshold)

    def validate(self) -> None:
        """Raise ``TypeError`` / ``ValueError`` naming the first invalid field."""
        for name in _POSITIVE_INTS:
            check_int(name, getattr(self, name), minimum=1)
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (contrastive loss), got {self.batch_size}")
        if self.batch_size > self.n_train:
            raise ValueError(
                f"batch_size must be <= n_train ({self.n_train}), got {self.batch_size}"
            )
        if self.eval_every > self.finetune_steps:
            raise ValueError(
                f"eval_every must be <= finetune_steps ({self.finetune_steps}), "
                f"got {self.eval_every}"
            )
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be non-empty and distinct, got {self.seeds}")
        for name in ("pretrain_lr", "finetune_lr"):
            check_real(name, getattr(self, name), low=0.0, high=1.0, low_open=True)
        check_real("weight_decay", self.weight_decay, low=0.0)
        self._validate_relaxation()
        check_choice("finetune_schedule", self.finetune_schedule, ("cosine", "constant"))
        if self.image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16, got {self.image_size}")
        if self.threads is not None:
            check_int("threads", self.threads, minimum=1, maximum=MAX_THREADS)
        if self.workers is not None:
            check_int("workers", self.workers, minimum=1, maximum=MAX_WORKERS)
        if (self.reports is None) != (self.labels is None):
            raise ValueError("reports and labels must be given together (Open-I mode)")

    def _validate_relaxation(self) -> None:
        """The threshold, quantile and sweep fields."""
        if self.threshold is not None:
            check_real("threshold", self.threshold, low=-1.0, high=1.0, low_open=True)
        if self.threshold is not None and self.threshold_quantile is not None:
            raise ValueError(
                f"threshold ({self.threshold}) and threshold_quantile ({self.threshold_quantile}) "
                "are both set; the configured arms relax with one of them: set the other to None"
            )
        if self.threshold_quantile is not None:
            check_real("threshold_quantile", self.threshold_quantile, **_OPEN_UNIT)
        if not isinstance(self.sweep_thresholds, tuple):
            raise TypeError(
                f"sweep_thresholds must be a tuple, got {describe(self.sweep_thresholds)}"
            )
        for t in self.sweep_thresholds:
            check_real("sweep_thresholds[i]", t, low=-1.0, high=1.0, low_open=True)
        if not isinstance(self.sweep_quantiles, tuple):
            raise TypeError(
                f"sweep_quantiles must be a tuple, got {describe(self.sweep_quantiles)}"
            )
        for q in self.sweep_quantiles:
            check_real("sweep_quantiles[i]", q, **_OPEN_UNIT)
        if self.sweep_threshold and not self.sweep_thresholds + self.sweep_quantiles:
            raise ValueError(
                "sweep_thresholds and sweep_quantiles must not both be empty with sweep_threshold"
            )


_POSITIVE_INTS = (
    "n_train",
    "n_val",
    "n_test",
    "pretrain_steps",
    "finetune_steps",
    "batch_size",
    "eval_every",
    "n_bootstrap",
    "embed_dim",
    "calibration_batches",
)
_OPEN_UNIT: dict[str, Any] = {"low": 0.0, "high": 1.0, "low_open": True, "high_open": True}


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
