"""Training and zero-shot scoring of the demo's :class:`~relaxclip.demo.models.TinyCLIP`."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from relaxclip.demo.models import TinyCLIP, WordTokenizer
from relaxclip.demo.synthetic import SyntheticCXRDataset
from relaxclip.loss import RelaxedContrastiveLoss
from relaxclip.sampling import SentenceSampler
from relaxclip.zeroshot import ZeroShotClassifier

__all__ = [
    "TEMPLATES",
    "Optimisation",
    "Progress",
    "TrainLog",
    "batches",
    "calibration_pairs",
    "lr_factor",
    "zero_shot_scores",
    "train",
]

TEMPLATES: tuple[tuple[str, str], ...] = (("{}", "no {}"),)
"""Zero-shot prompt pair: positive ``"{}"`` vs negative ``"no {}"``."""


class Progress:
    """tqdm when available and enabled, otherwise a silent counter."""

    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        self._bar: Any = None
        if enabled:
            try:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
            except ImportError:  # tqdm is in the demo extra; without it, no bars
                self._bar = None

    def update(self, n: int = 1, **postfix: Any) -> None:
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def lr_factor(step: int, total: int, warmup: int | None = None) -> float:
    """Learning-rate multiplier: linear warm-up over the first 10 % of ``total`` steps, then a
    cosine decay to 0; with ``warmup`` given, a linear warm-up over ``warmup`` steps and then a
    constant 1 (so a shorter run is exactly the start of a longer one)."""
    warm = max(1, total // 10) if warmup is None else max(1, warmup)
    if step < warm:
        return (step + 1) / warm
    if warmup is not None:
        return 1.0
    progress = (step - warm) / max(1, total - warm)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def batches(
    records: Sequence[dict[str, Any]], sampler: SentenceSampler, batch_size: int, seed: int
) -> Iterator[dict[str, Any]]:
    """Endless seeded stream of collated batches (reshuffled each epoch, last partial dropped)."""
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        SyntheticCXRDataset(records),
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        generator=gen,
        collate_fn=sampler,
    )
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def _trim(tokens: torch.Tensor) -> torch.Tensor:
    """Cut trailing all-padding columns (same features, less compute)."""
    used = int((tokens != WordTokenizer.PAD).any(0).nonzero().max().item()) + 1
    return tokens[:, :used]


@dataclass(frozen=True)
class Optimisation:
    """AdamW with ``lr`` peak learning rate (schedule: :func:`lr_factor`) for ``steps`` updates."""

    steps: int
    lr: float
    weight_decay: float
    constant_after: int | None = None
    """``None``: warm-up and cosine decay; an int: warm-up over that many steps, then constant."""


@dataclass
class TrainLog:
    """Per step: the loss, the mean positive-pair cosine, and the share of positive pairs above
    the loss threshold (0 without a threshold)."""

    losses: list[float] = field(default_factory=list)
    positive_cosine: list[float] = field(default_factory=list)
    relaxed_fraction: list[float] = field(default_factory=list)


def train(
    model: TinyCLIP,
    tokenizer: WordTokenizer,
    stream: Iterator[dict[str, Any]],
    loss_fn: RelaxedContrastiveLoss,
    opt: Optimisation,
    device: torch.device,
    *,
    group_key: str | None = None,
    on_eval: Callable[[int, TrainLog], None] | None = None,
    eval_every: int = 0,
    progress: Progress | None = None,
) -> TrainLog:
    """Run ``opt.steps`` AdamW updates on batches from ``stream``; ``on_eval(step, log)`` after
    every ``eval_every`` steps (and after the last one).  ``group_key``: the batch entry passed to the
    loss as ``groups=`` (text-group ids), or ``None``."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=opt.lr, weight_decay=opt.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, opt.steps, opt.constant_after)
    )
    log = TrainLog()
    model.train()
    for step in range(1, opt.steps + 1):
        batch = next(stream)
        img = model.encode_image(batch["image"].to(device))
        txt = model.encode_text(_trim(tokenizer(batch["text"])).to(device))
        extra = {} if group_key is None else {"groups": batch[group_key].to(device)}
        loss = loss_fn(img, txt, model.logit_scale.exp(), **extra)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sched.step()
        with torch.no_grad():  # CLIP: keep the temperature in [1/100, 1]
            model.logit_scale.clamp_(0.0, math.log(100.0))
        log.losses.append(float(loss.item()))
        _record_pairs(log, img, txt, loss_fn.threshold)
        if progress is not None:
            progress.update(1, loss=f"{log.losses[-1]:.3f}")
        if on_eval is not None and eval_every and (step % eval_every == 0 or step == opt.steps):
            on_eval(step, log)
            model.train()
    return log


@torch.no_grad()
def calibration_pairs(
    model: TinyCLIP,
    tokenizer: WordTokenizer,
    stream: Iterator[dict[str, Any]],
    n_batches: int,
    device: torch.device,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(image_features, text_features)`` of the next ``n_batches`` batches of ``stream``,
    computed by ``model`` in evaluation mode (no dropout, no gradients), for
    :func:`~relaxclip.calibration.calibrate_threshold`."""
    model.eval()
    pairs = []
    for _ in range(n_batches):
        batch = next(stream)
        img = model.encode_image(batch["image"].to(device))
        txt = model.encode_text(_trim(tokenizer(batch["text"])).to(device))
        pairs.append((img.float(), txt.float()))
    return pairs


@torch.no_grad()
def _record_pairs(
    log: TrainLog, img: torch.Tensor, txt: torch.Tensor, threshold: float | torch.Tensor | None
) -> None:
    pos = (F.normalize(img, dim=-1) * F.normalize(txt, dim=-1)).sum(-1)
    log.positive_cosine.append(float(pos.mean().item()))
    relaxed = (pos > threshold).float().mean().item() if threshold is not None else 0.0
    log.relaxed_fraction.append(float(relaxed))


@torch.no_grad()
def zero_shot_scores(
    model: TinyCLIP,
    tokenizer: WordTokenizer,
    images: torch.Tensor,
    findings: Sequence[str],
    device: torch.device,
) -> np.ndarray:
    """Zero-shot ``(N, K)`` float64 probabilities from ``ZeroShotClassifier`` ("{}" vs "no {}")."""
    model.eval()

    def encode_text(texts: list[str]) -> torch.Tensor:
        return model.encode_text(tokenizer(texts).to(device)).float().cpu()

    clf = ZeroShotClassifier(encode_text, list(findings), templates=TEMPLATES)
    feats = torch.cat(
        [
            model.encode_image(images[i : i + 256].to(device)).float().cpu()
            for i in range(0, len(images), 256)
        ]
    )
    return clf.predict_proba(feats).numpy().astype(np.float64)
