"""``relaxclip demo``: an offline, end-to-end reproduction of the paper's experiment.

Protocol (Jang et al., arXiv 2212.07050, on the embedded synthetic benchmark or Open-I text):

1. Build a word tokenizer from the training reports and pre-train a :class:`~relaxclip.demo.models.TinyCLIP`
   with the plain CLIP loss on whole reports (``pretrain_steps``): the "pre-trained encoder".
2. From that checkpoint fine-tune four arms with identical data, batch order, steps, optimizer,
   learning-rate schedule and seeds; they differ only in the text each image is paired with and
   the loss threshold:

   ====  ===================================  ====================  =====================
   arm   name                                 text                  loss
   ====  ===================================  ====================  =====================
   a     CLIP loss, whole reports             findings+impression   CLIP (threshold None)
   b     + random sentence sampling           one random sentence   CLIP
   c     + positive-pair relaxation           findings+impression   relaxed, threshold θ
   d     + both                               one random sentence   relaxed, threshold θ
   ====  ===================================  ====================  =====================

   Every ``eval_every`` steps the zero-shot macro AUROC on the *validation* split is measured;
   each arm keeps its best validation checkpoint (the same rule for every arm).  The test split
   is only used for the final numbers.
3. Zero-shot evaluation on the test split with :class:`~relaxclip.zeroshot.ZeroShotClassifier`
   (prompt pair ``("{}", "no {}")``): per-label and macro AUROC for every arm and seed.
   Pre-training and fine-tuning are repeated for every seed.  The table reports the mean ± std
   over seeds, a 95 % bootstrap CI of the seed-mean macro AUROC (test studies resampled, the
   same replicates for every arm and seed, :func:`~relaxclip.metrics.bootstrap_auroc`), and the
   paired difference to arm (a) with its bootstrap CI.
4. ``sweep_threshold`` repeats arm (d) for θ in ``sweep_thresholds``; θ is chosen on the
   validation split and the test numbers of every θ are reported.

Entry point: :func:`run_demo` (the CLI wraps it).  Outputs in ``out_dir``: ``results.json``,
``roc.png`` and ``summary.png`` (plots need matplotlib; without it a note is printed).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from relaxclip.demo.models import TinyCLIP, WordTokenizer
from relaxclip.demo.synthetic import (
    SYNTHETIC_FINDINGS,
    SyntheticCXRDataset,
    label_prevalence,
    make_synthetic_splits,
)
from relaxclip.loss import DEFAULT_THRESHOLD, RelaxedContrastiveLoss
from relaxclip.metrics import bootstrap_auroc, macro_auroc, roc_curve
from relaxclip.sampling import SentenceSampler
from relaxclip.zeroshot import ZeroShotClassifier

__all__ = ["ARMS", "Arm", "DemoConfig", "format_table", "run_demo"]

TEMPLATES: tuple[tuple[str, str], ...] = (("{}", "no {}"),)


@dataclass(frozen=True)
class Arm:
    """One experimental arm: ``sample`` = random sentence sampling, ``relax`` = use threshold θ."""

    key: str
    name: str
    sample: bool
    relax: bool
    finetune: bool = True


ARMS: tuple[Arm, ...] = (
    Arm("pretrained", "pre-trained, no fine-tuning", False, False, finetune=False),
    Arm("a", "(a) CLIP loss, whole reports", False, False),
    Arm("b", "(b) + sentence sampling", True, False),
    Arm("c", "(c) + pos.-pair relaxation", False, True),
    Arm("d", "(d) + both", True, True),
)


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


# ----------------------------------------------------------------------------- helpers


class _Progress:
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


def _lr_factor(step: int, total: int) -> float:
    warm = max(1, total // 10)
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _batches(
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


def _train(
    model: TinyCLIP,
    tokenizer: WordTokenizer,
    stream: Iterator[dict[str, Any]],
    loss_fn: RelaxedContrastiveLoss,
    *,
    steps: int,
    lr: float,
    weight_decay: float,
    device: torch.device,
    on_eval: Callable[[int], None] | None = None,
    eval_every: int = 0,
    progress: _Progress | None = None,
    stats: dict[str, list[float]] | None = None,
) -> list[float]:
    """Run ``steps`` AdamW updates; returns the per-step losses.  ``on_eval(step)`` after every
    ``eval_every`` steps (and after the last one).  ``stats`` (if given) receives per step the
    mean positive-pair cosine ``"positive_cosine"`` and the share of positive pairs above the
    loss threshold ``"relaxed_fraction"`` (0 without a threshold)."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, steps))
    losses: list[float] = []
    model.train()
    for step in range(1, steps + 1):
        batch = next(stream)
        images = batch["image"].to(device)
        tokens = _trim(tokenizer(batch["text"])).to(device)
        img = model.encode_image(images)
        txt = model.encode_text(tokens)
        loss = loss_fn(img, txt, model.logit_scale.exp())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():  # CLIP: keep the temperature in [1/100, 1]
            model.logit_scale.clamp_(0.0, math.log(100.0))
        losses.append(float(loss.item()))
        if stats is not None:
            with torch.no_grad():
                pos = (F.normalize(img, dim=-1) * F.normalize(txt, dim=-1)).sum(-1)
                stats["positive_cosine"].append(float(pos.mean().item()))
                theta = loss_fn.threshold
                relaxed = (pos > theta).float().mean().item() if theta is not None else 0.0
                stats["relaxed_fraction"].append(float(relaxed))
        if progress is not None:
            progress.update(1, loss=f"{losses[-1]:.3f}")
        if on_eval is not None and eval_every and (step % eval_every == 0 or step == steps):
            on_eval(step)
            model.train()
    return losses


@torch.no_grad()
def _scores(
    model: TinyCLIP,
    tokenizer: WordTokenizer,
    images: torch.Tensor,
    findings: Sequence[str],
    device: torch.device,
) -> np.ndarray:
    """Zero-shot ``(N, K)`` probabilities from ``ZeroShotClassifier`` ("{}" vs "no {}")."""
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


def _stack(records: Sequence[dict[str, Any]], key: str) -> torch.Tensor:
    return torch.stack([r[key] for r in records])


def _versions() -> dict[str, str]:
    import relaxclip

    out = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "relaxclip": getattr(relaxclip, "__version__", "unknown"),
    }
    try:
        import matplotlib

        out["matplotlib"] = matplotlib.__version__
    except ImportError:
        out["matplotlib"] = "not installed"
    return out


# ----------------------------------------------------------------------------- data


@dataclass
class _Benchmark:
    train: list[dict[str, Any]]
    val: list[dict[str, Any]]
    test: list[dict[str, Any]]
    findings: tuple[str, ...]
    source: str
    notes: list[str]


def _load_benchmark(cfg: DemoConfig) -> _Benchmark:
    if cfg.reports is not None and cfg.labels is not None:
        return _load_openi(cfg.reports, cfg.labels, image_size=cfg.image_size, seed=cfg.data_seed)
    splits = make_synthetic_splits(
        cfg.n_train,
        cfg.n_val,
        cfg.n_test,
        image_size=cfg.image_size,
        seed=cfg.data_seed,
        findings=cfg.findings,
    )
    return _Benchmark(splits.train, splits.val, splits.test, tuple(cfg.findings), "synthetic", [])


#: Open-I gold label (NegBio, ChestX-ray14 names) -> synthetic finding name.
OPENI_TO_SYNTHETIC: dict[str, str] = {
    "Atelectasis": "atelectasis",
    "Cardiomegaly": "cardiomegaly",
    "Consolidation": "consolidation",
    "Edema": "edema",
    "Effusion": "pleural effusion",
    "Pneumothorax": "pneumothorax",
    "Nodule": "nodule",
}


def _load_openi(reports: str, labels: str, *, image_size: int, seed: int) -> _Benchmark:
    """Open-I mode: real report text (read in place, never written), gold labels, and images
    rendered by :func:`~relaxclip.demo.synthetic.render_synthetic_image` from those labels.

    Reports whose FINDINGS and IMPRESSION are both empty cannot be paired with text and are
    excluded (their number is reported in the notes).  The remaining studies are split 70/10/20
    into train/val/test by a permutation seeded with ``seed``.
    """
    from relaxclip.data.openi import read_openi_reports
    from relaxclip.data.openi_labels import join_openi, read_openi_labels
    from relaxclip.demo.synthetic import render_synthetic_image

    names = tuple(OPENI_TO_SYNTHETIC)
    joined = join_openi(read_openi_labels(labels, labels=names), read_openi_reports(reports))
    kept: list[dict[str, Any]] = []
    empty = 0
    for i, rec in enumerate(joined.records):
        sections = {
            "findings": (rec.get("findings") or "").strip(),
            "impression": (rec.get("impression") or "").strip(),
        }
        if not any(sections.values()):
            empty += 1
            continue
        y = np.asarray(rec["labels"], dtype=np.float64)
        positive = [OPENI_TO_SYNTHETIC[n] for n, v in zip(names, y, strict=True) if v == 1.0]
        kept.append(
            {
                "image": render_synthetic_image(positive, image_size=image_size, seed=[seed, i]),
                "report": sections,
                "labels": torch.tensor(y, dtype=torch.float32),
                "index": i,
            }
        )
    order = np.random.default_rng(seed).permutation(len(kept))
    n_tr, n_va = int(0.7 * len(kept)), int(0.1 * len(kept))
    parts = [
        [kept[int(j)] for j in order[:n_tr]],
        [kept[int(j)] for j in order[n_tr : n_tr + n_va]],
        [kept[int(j)] for j in order[n_tr + n_va :]],
    ]
    notes = [
        f"Open-I mode: {len(joined.records)} labelled reports joined, {empty} excluded (empty "
        f"FINDINGS and IMPRESSION), {len(joined.reports_without_labels)} reports without gold "
        "labels not used; images are rendered from the gold labels (synthetic), text is real."
    ]
    findings = tuple(OPENI_TO_SYNTHETIC[n] for n in names)
    return _Benchmark(parts[0], parts[1], parts[2], findings, "open-i", notes)


def _report_texts(records: Sequence[dict[str, Any]]) -> list[str]:
    """Whole-report training text (findings + impression, no headers), as the eval sampler gives."""
    sampler = SentenceSampler(image_key=None, train=False)
    out: list[str] = []
    for i in range(0, len(records), 512):
        chunk = [{"report": r["report"]} for r in records[i : i + 512]]
        out.extend(sampler(chunk)["text"])
    return out


# ----------------------------------------------------------------------------- experiment


def _bootstrap_seed_means(
    y: np.ndarray,
    scores: dict[str, list[np.ndarray]],
    findings: Sequence[str],
    cfg: DemoConfig,
) -> dict[str, np.ndarray]:
    """Per arm: ``(B,)`` bootstrap replicates of the seed-mean macro AUROC (shared replicates)."""
    out: dict[str, np.ndarray] = {}
    for key, per_seed in scores.items():
        reps = [
            bootstrap_auroc(
                y, s, list(findings), n_bootstrap=cfg.n_bootstrap, seed=cfg.bootstrap_seed
            ).macro_samples
            for s in per_seed
        ]
        out[key] = np.mean(np.stack(reps), axis=0)
    return out


def _ci(values: np.ndarray) -> tuple[float, float]:
    v = values[~np.isnan(values)]
    if v.size == 0:
        return (math.nan, math.nan)
    lo, hi = np.percentile(v, [2.5, 97.5])
    return (float(lo), float(hi))


def run_demo(
    cfg: DemoConfig,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the whole experiment; returns the results dict (also written to ``out_dir``).

    ``out_dir=None`` writes nothing.  ``log`` receives every printed line.
    """
    cfg.validate()
    t_start = time.perf_counter()
    device = resolve_device(cfg.device)
    threads_before = torch.get_num_threads()
    threads = cfg.threads if cfg.threads is not None else max(1, min(4, (os.cpu_count() or 2) // 2))
    if device.type == "cpu":
        torch.set_num_threads(threads)
    try:
        results, roc = _run(cfg, device, threads, log)
    finally:
        torch.set_num_threads(threads_before)
    results["timing_s"]["total"] = time.perf_counter() - t_start
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        _write_outputs(results, roc, out, cfg, log)
    return results


def _run(
    cfg: DemoConfig, device: torch.device, threads: int, log: Callable[[str], None]
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    bench = _load_benchmark(cfg)
    findings = bench.findings
    for note in bench.notes:
        log(note)
    timing["data"] = time.perf_counter() - t0
    train_text = _report_texts(bench.train)
    tokenizer = WordTokenizer.build(train_text)
    n_trunc_train = tokenizer.count_truncated(train_text)
    val_x, val_y = _stack(bench.val, "image"), _stack(bench.val, "labels").numpy()
    test_x, test_y = _stack(bench.test, "image"), _stack(bench.test, "labels").numpy()
    log(
        f"benchmark: {bench.source}, {len(bench.train)}/{len(bench.val)}/{len(bench.test)} "
        f"train/val/test studies, {len(findings)} findings, vocabulary {tokenizer.vocab_size} "
        f"words, device {device}, {threads} CPU thread(s)"
    )

    arms = [a for a in ARMS]
    sweep = sorted(set(cfg.sweep_thresholds)) if cfg.sweep_threshold else []
    test_scores: dict[str, list[np.ndarray]] = {a.key: [] for a in arms}
    val_best: dict[str, list[float]] = {a.key: [] for a in arms}
    best_step: dict[str, list[int]] = {a.key: [] for a in arms}
    val_curves: dict[str, list[dict[int, float]]] = {a.key: [] for a in arms}
    train_stats: dict[str, list[dict[str, float]]] = {a.key: [] for a in arms}
    for th in sweep:
        test_scores[f"d@{th:g}"] = []
        val_best[f"d@{th:g}"] = []
        best_step[f"d@{th:g}"] = []
        val_curves[f"d@{th:g}"] = []
        train_stats[f"d@{th:g}"] = []
    pretrain_losses: list[list[float]] = []
    timing["pretrain"] = 0.0
    timing["finetune"] = 0.0
    n_stages = len(cfg.seeds) * (1 + 4 + len(sweep))
    stage = 0

    def val_macro(model: TinyCLIP) -> float:
        s = _scores(model, tokenizer, val_x, findings, device)
        return macro_auroc(val_y, s, list(findings)).macro

    for seed in cfg.seeds:
        # ---- pre-training (plain CLIP loss, whole reports)
        stage += 1
        torch.manual_seed(seed)
        model = TinyCLIP(
            tokenizer.vocab_size,
            tokenizer.context_length,
            image_size=cfg.image_size,
            embed_dim=cfg.embed_dim,
        ).to(device)
        sampler = SentenceSampler(seed=seed, train=False)
        bar = _Progress(
            cfg.pretrain_steps, f"[{stage}/{n_stages}] seed {seed} pre-train", cfg.progress
        )
        t = time.perf_counter()
        pretrain_losses.append(
            _train(
                model,
                tokenizer,
                _batches(bench.train, sampler, cfg.batch_size, seed),
                RelaxedContrastiveLoss(threshold=None),
                steps=cfg.pretrain_steps,
                lr=cfg.pretrain_lr,
                weight_decay=cfg.weight_decay,
                device=device,
                progress=bar,
            )
        )
        bar.close()
        timing["pretrain"] += time.perf_counter() - t
        pretrained = copy.deepcopy(model.state_dict())
        log(
            f"[{stage}/{n_stages}] seed {seed} pre-train: final loss {pretrain_losses[-1][-1]:.4f} "
            f"({time.perf_counter() - t:.1f} s)"
        )
        test_scores["pretrained"].append(_scores(model, tokenizer, test_x, findings, device))
        val_best["pretrained"].append(val_macro(model))
        best_step["pretrained"].append(0)
        val_curves["pretrained"].append({0: val_best["pretrained"][-1]})

        # ---- fine-tuning arms (identical budgets), plus the optional θ sweep of arm (d)
        runs: list[tuple[str, bool, float | None]] = [
            (a.key, a.sample, cfg.threshold if a.relax else None) for a in arms if a.finetune
        ]
        runs += [(f"d@{th:g}", True, th) for th in sweep]
        for key, sample, theta in runs:
            stage += 1
            model.load_state_dict(pretrained)
            sampler = SentenceSampler(seed=seed, num_sentences=1, train=sample)
            curve: dict[int, float] = {}
            best: dict[str, Any] = {"auc": -math.inf, "step": 0, "state": None}

            def on_eval(
                step: int,
                _model: TinyCLIP = model,
                _curve: dict[int, float] = curve,
                _best: dict[str, Any] = best,
            ) -> None:
                auc = val_macro(_model)
                _curve[step] = auc
                if auc > _best["auc"]:
                    _best.update(auc=auc, step=step, state=copy.deepcopy(_model.state_dict()))

            desc = f"[{stage}/{n_stages}] seed {seed} arm {key}"
            bar = _Progress(cfg.finetune_steps, desc, cfg.progress)
            t = time.perf_counter()
            torch.manual_seed(seed + 1000)  # dropout masks: same stream for every arm
            stats: dict[str, list[float]] = {"positive_cosine": [], "relaxed_fraction": []}
            _train(
                model,
                tokenizer,
                _batches(bench.train, sampler, cfg.batch_size, seed + 1),
                RelaxedContrastiveLoss(threshold=theta),
                steps=cfg.finetune_steps,
                lr=cfg.finetune_lr,
                weight_decay=cfg.weight_decay,
                device=device,
                on_eval=on_eval,
                eval_every=cfg.eval_every,
                progress=bar,
                stats=stats,
            )
            train_stats[key].append({k: float(np.mean(v)) for k, v in stats.items()})
            bar.close()
            timing["finetune"] += time.perf_counter() - t
            if best["state"] is None:
                raise ValueError(
                    "validation macro AUROC is undefined (no finding has both classes in the "
                    "validation split); use a larger validation split (--n-val)"
                )
            log(
                f"{desc}: best validation macro AUROC {best['auc']:.4f} at step {best['step']} "
                f"({time.perf_counter() - t:.1f} s)"
            )
            model.load_state_dict(best["state"])
            test_scores[key].append(_scores(model, tokenizer, test_x, findings, device))
            val_best[key].append(float(best["auc"]))
            best_step[key].append(int(best["step"]))
            val_curves[key].append(curve)

    # ---- statistics
    t = time.perf_counter()
    boot = _bootstrap_seed_means(test_y, test_scores, findings, cfg)
    timing["bootstrap"] = time.perf_counter() - t
    arms_out: dict[str, Any] = {}
    a_mean = float(
        np.mean([macro_auroc(test_y, s, list(findings)).macro for s in test_scores["a"]])
    )
    for key, per_seed in test_scores.items():
        res = [macro_auroc(test_y, s, list(findings)) for s in per_seed]
        macros = np.array([r.macro for r in res])
        per_label = {
            f: {
                "mean": float(np.mean([r.per_label[f] for r in res])),
                "std": float(np.std([r.per_label[f] for r in res])),
                "per_seed": [float(r.per_label[f]) for r in res],
            }
            for f in findings
        }
        delta = boot[key] - boot["a"]
        arm = next((a for a in arms if a.key == key), None)
        arms_out[key] = {
            "name": arm.name if arm else f"(d) + both, threshold {key.split('@')[1]}",
            "sentence_sampling": arm.sample if arm else True,
            "threshold": (cfg.threshold if arm.relax else None)
            if arm
            else float(key.split("@")[1]),
            "macro_auroc": {
                "mean": float(macros.mean()),
                "std": float(macros.std()),
                "per_seed": [float(m) for m in macros],
                "ci95": list(_ci(boot[key])),
            },
            "delta_vs_a": {
                "mean": float(macros.mean() - a_mean),
                "ci95": list(_ci(delta)) if key != "a" else [0.0, 0.0],
            },
            "per_label_auroc": per_label,
            "val_macro_auroc_best": val_best[key],
            "best_step": best_step[key],
            "val_curve": [{str(k): v for k, v in c.items()} for c in val_curves[key]],
            "train_stats": train_stats[key],
        }
    sweep_out: dict[str, Any] | None = None
    if sweep:
        val_means = {th: float(np.mean(val_best[f"d@{th:g}"])) for th in sweep}
        chosen = max(sweep, key=lambda th: (val_means[th], -abs(th - cfg.threshold)))
        sweep_out = {
            "thresholds": sweep,
            "val_macro_auroc_mean": {f"{th:g}": val_means[th] for th in sweep},
            "test_macro_auroc_mean": {
                f"{th:g}": arms_out[f"d@{th:g}"]["macro_auroc"]["mean"] for th in sweep
            },
            "chosen_on_validation": chosen,
        }
    prevalence = {
        name: {f: float(v) for f, v in zip(findings, label_prevalence(recs).tolist(), strict=True)}
        for name, recs in (("train", bench.train), ("val", bench.val), ("test", bench.test))
    }
    results: dict[str, Any] = {
        "config": dataclasses.asdict(cfg),
        "versions": _versions(),
        "device": str(device),
        "threads": threads,
        "benchmark": {
            "source": bench.source,
            "findings": list(findings),
            "n": {"train": len(bench.train), "val": len(bench.val), "test": len(bench.test)},
            "prevalence": prevalence,
            "vocab_size": tokenizer.vocab_size,
            "context_length": tokenizer.context_length,
            "train_reports_truncated": n_trunc_train,
            "notes": bench.notes,
        },
        "seeds": list(cfg.seeds),
        "templates": [list(t) for t in TEMPLATES],
        "pretrain_final_loss": [losses[-1] for losses in pretrain_losses],
        "arms": arms_out,
        "sweep": sweep_out,
        "timing_s": timing,
    }
    results["table"] = format_table(results)
    results["conclusion"] = _conclusion(results)
    log(results["table"])
    log(results["conclusion"])
    roc = {"y": test_y, "a": test_scores["a"][0], "d": test_scores["d"][0]}
    return results, roc


# ----------------------------------------------------------------------------- reporting


def format_table(results: dict[str, Any]) -> str:
    """The printed results table (macro AUROC per arm, per-label means, optional sweep)."""
    arms = results["arms"]
    findings = results["benchmark"]["findings"]
    n_seeds = len(results["seeds"])
    lines = [
        f"Zero-shot macro AUROC on the test split (n={results['benchmark']['n']['test']}, "
        f"{n_seeds} seed(s); 95% CI: bootstrap over test studies of the seed mean)",
        f"{'arm':<32} {'mean ± std':>15}  {'95% CI':>15}  {'Δ vs (a) [95% CI]':>26}",
    ]
    for key, arm in arms.items():
        m = arm["macro_auroc"]
        d = arm["delta_vs_a"]
        delta = (
            "—" if key == "a" else f"{d['mean']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]"
        )
        lines.append(
            f"{arm['name']:<32} {m['mean']:.4f} ± {m['std']:.4f}  "
            f"[{m['ci95'][0]:.4f}, {m['ci95'][1]:.4f}]  {delta:>26}"
        )
    lines.append("")
    lines.append(
        "Fine-tuning diagnostics (mean over steps and seeds): positive-pair cosine, share of "
        "positive pairs above the threshold (relaxed), best validation step"
    )
    for arm in arms.values():
        st = arm["train_stats"]
        if not st:
            continue
        cos = float(np.mean([x["positive_cosine"] for x in st]))
        rel = float(np.mean([x["relaxed_fraction"] for x in st]))
        theta = "none" if arm["threshold"] is None else f"{arm['threshold']:g}"
        lines.append(
            f"{arm['name']:<32} cos {cos:.3f}  relaxed {100 * rel:5.1f}% (theta {theta})  "
            f"best step {arm['best_step']}"
        )
    lines.append("")
    short = [f[:11] for f in findings]
    lines.append("Per-label test AUROC (mean over seeds)")
    lines.append(f"{'arm':<32} " + " ".join(f"{s:>11}" for s in short))
    for arm in arms.values():
        vals = " ".join(f"{arm['per_label_auroc'][f]['mean']:>11.4f}" for f in findings)
        lines.append(f"{arm['name']:<32} {vals}")
    sweep = results.get("sweep")
    if sweep:
        lines.append("")
        lines.append("Threshold sweep of arm (d): macro AUROC (mean over seeds)")
        lines.append(f"{'theta':>6} {'val':>8} {'test':>8}")
        for th in sweep["thresholds"]:
            k = f"{th:g}"
            mark = "  <- chosen on validation" if th == sweep["chosen_on_validation"] else ""
            lines.append(
                f"{th:>6.2f} {sweep['val_macro_auroc_mean'][k]:>8.4f} "
                f"{sweep['test_macro_auroc_mean'][k]:>8.4f}{mark}"
            )
    return "\n".join(lines)


def _conclusion(results: dict[str, Any]) -> str:
    arms = results["arms"]

    def word(key: str) -> str:
        lo, hi = arms[key]["delta_vs_a"]["ci95"]
        d = arms[key]["delta_vs_a"]["mean"]
        if lo > 0:
            verdict = "higher"
        elif hi < 0:
            verdict = "lower"
        else:
            verdict = "not distinguishable"
        return f"{arms[key]['name'].split(' ', 1)[0]} {d:+.4f} [{lo:+.4f}, {hi:+.4f}] ({verdict})"

    n = len(results["seeds"])
    return (
        f"Conclusion (measured, {results['benchmark']['source']} benchmark, {n} seed(s), identical "
        f"budgets): macro AUROC vs plain CLIP fine-tuning (a) = "
        f"{arms['a']['macro_auroc']['mean']:.4f}: "
        + "; ".join(word(k) for k in ("b", "c", "d"))
        + "."
    )


def _write_outputs(
    results: dict[str, Any],
    roc: dict[str, np.ndarray],
    out: Path,
    cfg: DemoConfig,
    log: Callable[[str], None],
) -> None:
    path = out / "results.json"
    path.write_text(json.dumps(results, indent=2, default=_json_default) + "\n")
    log(f"wrote {path}")
    if not cfg.plots:
        return
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        log(
            "note: matplotlib is not installed, so roc.png and summary.png were not written "
            "(pip install 'relaxclip[demo]')"
        )
        return
    log(f"wrote {_plot_rocs(results, roc, out / 'roc.png')}")
    log(f"wrote {_plot_summary(results, out / 'summary.png')}")


def _plot_rocs(results: dict[str, Any], roc: dict[str, np.ndarray], path: Path) -> Path:
    """Per-label ROC curves of arms (a) and (d), first seed (one panel per finding)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    findings = results["benchmark"]["findings"]
    k = len(findings)
    cols = min(4, k)
    rows = math.ceil(k / cols)
    fig = Figure(figsize=(3.2 * cols, 3.2 * rows))
    FigureCanvasAgg(fig)
    seed = results["seeds"][0]
    for j, name in enumerate(findings):
        ax = fig.add_subplot(rows, cols, j + 1)
        ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8)
        y = roc["y"][:, j]
        for key, color in (("a", "tab:blue"), ("d", "tab:red")):
            if y.min() == y.max():
                continue
            fpr, tpr = roc_curve(y, roc[key][:, j])
            auc = results["arms"][key]["per_label_auroc"][name]["per_seed"][0]
            ax.plot(fpr, tpr, color=color, label=f"({key}) {auc:.3f}")
        ax.set_title(name, fontsize=10)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(loc="lower right", fontsize=8)
        if j % cols == 0:
            ax.set_ylabel("true positive rate")
        if j >= (rows - 1) * cols:
            ax.set_xlabel("false positive rate")
    fig.suptitle(
        f"Zero-shot ROC on the test split, seed {seed}: (a) CLIP whole reports vs (d) sampling + relaxation"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _plot_summary(results: dict[str, Any], path: Path) -> Path:
    """Macro AUROC per arm: seed mean with the bootstrap 95 % CI, and each seed as a dot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    arms = results["arms"]
    keys = list(arms)
    fig = Figure(figsize=(max(6.0, 1.1 * len(keys) + 2), 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, key in enumerate(keys):
        m = arms[key]["macro_auroc"]
        lo, hi = m["ci95"]
        ax.errorbar(
            [i],
            [m["mean"]],
            yerr=[[m["mean"] - lo], [hi - m["mean"]]],
            fmt="o",
            color="black",
            capsize=5,
        )
        ax.scatter([i + 0.12] * len(m["per_seed"]), m["per_seed"], s=12, color="tab:orange")
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([arms[k]["name"].replace(", ", ",\n") for k in keys], fontsize=7)
    ax.set_ylabel("zero-shot macro AUROC (test)")
    ax.set_title(
        f"{results['benchmark']['source']} benchmark, {len(results['seeds'])} seed(s): "
        "mean, 95% bootstrap CI, seeds (orange)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
