"""The demo's configuration: :class:`DemoConfig` (every knob, recorded in results.json) and
:func:`resolve_device`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from relaxclip.demo.synthetic import SYNTHETIC_FINDINGS
from relaxclip.loss import DEFAULT_THRESHOLD

__all__ = ["DemoConfig", "resolve_device"]


@dataclass
class DemoConfig:
    """Every knob of the demo (all recorded in ``results.json``).

    Steps count optimizer updates with ``batch_size`` pairs each.  Learning rates follow a
    linear warm-up over the first 10 % of steps and a cosine decay to 0.
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
    threshold: float = DEFAULT_THRESHOLD
    sweep_threshold: bool = False
    sweep_thresholds: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    eval_every: int = 50
    n_bootstrap: int = 1000
    bootstrap_seed: int = 0
    device: str = "auto"
    threads: int | None = None
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
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not -1.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (-1, 1], got {self.threshold}")
        if not self.sweep_thresholds or any(not -1.0 < t <= 1.0 for t in self.sweep_thresholds):
            raise ValueError(
                f"sweep_thresholds must be values in (-1, 1], got {self.sweep_thresholds}"
            )
        if self.image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16, got {self.image_size}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if (self.reports is None) != (self.labels is None):
            raise ValueError("reports and labels must be given together (Open-I mode)")


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available else CPU; otherwise ``torch.device(device)``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"device: cannot parse {device!r} ({exc})") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} requested but CUDA is not available")
    return dev
