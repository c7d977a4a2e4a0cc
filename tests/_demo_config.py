"""The miniature demo configuration the demo tests share (seconds on one CPU thread)."""

from __future__ import annotations

from typing import Any

from relaxclip.demo.config import DemoConfig


def tiny_config(**overrides: Any) -> DemoConfig:
    """A ``DemoConfig`` with tiny splits, 32-pixel images, 3 + 4 steps, two seeds and one
    process; ``overrides`` replace any field."""
    base: dict[str, Any] = {
        "n_train": 64,
        "n_val": 48,
        "n_test": 64,
        "image_size": 32,
        "seeds": (0, 1),
        "pretrain_steps": 3,
        "finetune_steps": 4,
        "eval_every": 2,
        "batch_size": 16,
        "n_bootstrap": 30,
        "progress": False,
        "threads": 1,
        "workers": 1,  # in-process (spies work); worker processes: tests/test_demo_workers.py
        "embed_dim": 16,
    }
    base.update(overrides)
    return DemoConfig(**base)
