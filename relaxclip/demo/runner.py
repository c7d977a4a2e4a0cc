"""``relaxclip demo``: an offline, end-to-end reproduction of the paper's experiment.

Protocol (Jang et al., arXiv 2212.07050, on the embedded synthetic benchmark or Open-I text):

1. Build a word tokenizer from the pre-training reports and pre-train a
   :class:`~relaxclip.demo.models.TinyCLIP` with the plain CLIP loss on whole reports
   (``pretrain_steps``): the "pre-trained encoder".  The pre-training studies are disjoint from
   the fine-tuning, validation and test studies (``Benchmark.pretrain``).  The text context is
   fixed (:data:`~relaxclip.demo.models.TEXT_CONTEXT_LENGTH`): as with CLIP's 77 tokens on real
   reports, about a quarter of whole reports are truncated (printed and recorded).
2. From that checkpoint fine-tune every arm of :data:`~relaxclip.demo.arms.ARMS` with identical
   data, batch order, steps, optimizer, learning-rate schedule and seeds; they differ only in
   the fields of their :class:`~relaxclip.demo.arms.Arm` record (the text each image is paired
   with, the loss threshold, text groups):

   ====  ===================================  ====================  =====================
   arm   name                                 text                  loss
   ====  ===================================  ====================  =====================
   a     CLIP loss, whole reports             findings+impression   CLIP (threshold None)
   b     + random sentence sampling           one random sentence   CLIP
   c     + positive-pair relaxation           findings+impression   relaxed, threshold θ
   d     + both                               one random sentence   relaxed, threshold θ
   e     + both + text groups                 one random sentence   relaxed, θ, groups=
   ====  ===================================  ====================  =====================

   Every arm keeps its checkpoint of best validation macro AUROC (measured every
   ``eval_every`` steps); the test split is only used for the final numbers.
3. Zero-shot evaluation on the test split with :class:`~relaxclip.zeroshot.ZeroShotClassifier`
   (prompt pair ``("{}", "no {}")``): per-label and macro AUROC for every arm and seed.
   Pre-training and fine-tuning are repeated for every seed.  The table reports the mean ± std
   over seeds, a 95 % bootstrap CI of the seed-mean macro AUROC (test studies resampled, the
   same replicates for every arm and seed, :func:`~relaxclip.metrics.bootstrap_auroc`), and the
   paired difference to arm (a) with its bootstrap CI.
4. ``sweep_threshold`` repeats arm (d) for every absolute θ in ``sweep_thresholds`` and every
   quantile q in ``sweep_quantiles`` (θ calibrated per seed on the pre-trained model's first
   ``calibration_batches`` fine-tuning batches, then fixed); the setting is chosen on the
   validation split and the test numbers of every setting are reported.

Entry point: :func:`run_demo`; :func:`run_arm` trains and evaluates one arm for one seed.
Outputs in ``out_dir``: ``results.json``, ``roc.png``, ``summary.png`` (plots need matplotlib).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
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

from relaxclip.calibration import calibrate_threshold
from relaxclip.demo.arms import ARMS, REFERENCE, Arm, sweep_arms
from relaxclip.demo.benchmark import (
    Benchmark,
    check_evaluation_splits,
    load_benchmark,
    report_texts,
)
from relaxclip.demo.config import (
    DemoConfig,
    available_cores,
    resolve_device,
    resolve_workers,
    thread_warning,
)
from relaxclip.demo.models import TEXT_CONTEXT_LENGTH, TinyCLIP, WordTokenizer
from relaxclip.demo.report import (
    conclusion,
    earlier_outputs,
    format_table,
    prepare_out_dir,
    write_outputs,
)
from relaxclip.demo.results import (
    CurvePoint,
    SeedRun,
    TrainStats,
    strict_json,
    summarise_arms,
    summarise_sweep,
)
from relaxclip.demo.synthetic import label_prevalence
from relaxclip.demo.training import (
    TEMPLATES,
    Optimisation,
    Progress,
    TrainLog,
    batches,
    calibration_pairs,
    train,
    zero_shot_scores,
)
from relaxclip.demo.workers import run_in_workers
from relaxclip.loss import RelaxedContrastiveLoss
from relaxclip.metrics import macro_auroc
from relaxclip.sampling import SentenceSampler

__all__ = [
    "ARMS",
    "TEXT_GROUP_KEY",
    "Arm",
    "DemoConfig",
    "format_table",
    "run_arm",
    "run_demo",
    "smoke_summary",
]

TEXT_GROUP_KEY = "text_group"
"""Batch key of the text-group ids of arms with ``text_groups=True``."""


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


@dataclass
class Experiment:
    """What every arm of one run shares: config, device, data, tokenizer, evaluation tensors,
    timings and the stage counter of the progress lines."""

    cfg: DemoConfig
    device: torch.device
    bench: Benchmark
    log: Callable[[str], None]
    n_stages: int
    tokenizer: WordTokenizer = field(init=False)
    n_truncated: int = field(init=False)
    n_pretrain_truncated: int = field(init=False)
    longest_sentence: int = field(init=False)
    val_x: torch.Tensor = field(init=False)
    val_y: torch.Tensor = field(init=False)
    test_x: torch.Tensor = field(init=False)
    test_y: torch.Tensor = field(init=False)
    timing: dict[str, float] = field(default_factory=dict)
    stage: int = 0

    def __post_init__(self) -> None:
        pretrain_text = report_texts(self.bench.pretrain)
        self.tokenizer = WordTokenizer.build(pretrain_text, context_length=TEXT_CONTEXT_LENGTH)
        self.n_pretrain_truncated = self.tokenizer.count_truncated(pretrain_text)
        self.n_truncated = self.tokenizer.count_truncated(report_texts(self.bench.train))
        self.longest_sentence = _longest_sentence(self.bench.pretrain + self.bench.train)
        self.val_x, self.val_y = _stack(self.bench.val, "image"), _stack(self.bench.val, "labels")
        self.test_x, self.test_y = (
            _stack(self.bench.test, "image"),
            _stack(self.bench.test, "labels"),
        )
        self.timing.update(pretrain=0.0, finetune=0.0)

    def next_stage(self, seed: int, what: str) -> str:
        """Count a stage; its progress label ``"[i/n] seed s <what>"``."""
        self.stage += 1
        return f"[{self.stage}/{self.n_stages}] seed {seed} {what}"

    def new_model(self) -> TinyCLIP:
        cfg, tok = self.cfg, self.tokenizer
        model = TinyCLIP(
            tok.vocab_size, tok.context_length, image_size=cfg.image_size, embed_dim=cfg.embed_dim
        )
        return model.to(self.device)

    def scores(self, model: TinyCLIP, images: torch.Tensor) -> np.ndarray:
        return zero_shot_scores(model, self.tokenizer, images, self.bench.findings, self.device)

    def val_macro(self, model: TinyCLIP) -> float:
        y = self.val_y.numpy()
        return macro_auroc(y, self.scores(model, self.val_x), list(self.bench.findings)).macro


def _longest_sentence(records: Sequence[dict[str, Any]]) -> int:
    """Tokens (start/end included) of the longest candidate sentence of ``records``' reports."""
    sampler = SentenceSampler(image_key=None)
    return max(
        len(WordTokenizer.split(s)) + 2
        for i, r in enumerate(records)
        for s in sampler.candidates(r["report"], position=i)
    )


def _log_context(ex: Experiment, log: Callable[[str], None]) -> None:
    """Print how often the fixed text context truncates whole reports, and check sentences."""
    n_pre, n_train, tok = len(ex.bench.pretrain), len(ex.bench.train), ex.tokenizer
    log(
        f"text context: {tok.context_length} tokens, fixed like CLIP's 77: it truncates "
        f"{ex.n_pretrain_truncated}/{n_pre} ({100 * ex.n_pretrain_truncated / n_pre:.1f} %) "
        f"pre-training and {ex.n_truncated}/{n_train} ({100 * ex.n_truncated / n_train:.1f} %) "
        f"fine-tuning whole reports (first {tok.context_length - 2} tokens kept); the longest "
        f"single sentence has {ex.longest_sentence} tokens"
    )
    if ex.longest_sentence > tok.context_length:
        log(
            f"warning: sentences of up to {ex.longest_sentence} tokens exceed the text context "
            f"({tok.context_length}) and are truncated too"
        )


@dataclass
class Pretrained:
    """One seed's pre-trained checkpoint and its evaluation (the ``finetune=False`` arm)."""

    state: dict[str, Any]
    final_loss: float
    run: SeedRun


def pretrain(ex: Experiment, model: TinyCLIP, seed: int) -> Pretrained:
    """Pre-train ``model`` (freshly initialised) with the plain CLIP loss on whole reports."""
    cfg = ex.cfg
    desc = ex.next_stage(seed, "pre-train")
    bar = Progress(cfg.pretrain_steps, desc, cfg.progress)
    t = time.perf_counter()
    log = train(
        model,
        ex.tokenizer,
        batches(ex.bench.pretrain, SentenceSampler(seed=seed, train=False), cfg.batch_size, seed),
        RelaxedContrastiveLoss(threshold=None),
        Optimisation(cfg.pretrain_steps, cfg.pretrain_lr, cfg.weight_decay),
        ex.device,
        progress=bar,
    )
    bar.close()
    ex.timing["pretrain"] += time.perf_counter() - t
    state = copy.deepcopy(model.state_dict())
    ex.log(f"{desc}: final loss {log.losses[-1]:.4f} ({time.perf_counter() - t:.1f} s)")
    test = ex.scores(model, ex.test_x)
    val = ex.val_macro(model)
    return Pretrained(state, log.losses[-1], SeedRun(seed, test, val, 0, {0: val}, None))


@dataclass
class _Tracker:
    """Called at every validation: records the curve and keeps the best checkpoint."""

    ex: Experiment
    model: TinyCLIP
    curve: dict[int, float] = field(default_factory=dict)
    points: list[CurvePoint] = field(default_factory=list)
    auc: float = -float("inf")
    step: int = 0
    state: dict[str, Any] | None = None

    def __call__(self, step: int, log: TrainLog) -> None:
        auc = self.curve[step] = self.ex.val_macro(self.model)
        prev = self.points[-1].step if self.points else 0  # log: one entry per step so far
        cos, rel = log.positive_cosine[prev:], log.relaxed_fraction[prev:]
        self.points.append(CurvePoint(step, auc, float(np.mean(cos)), float(np.mean(rel))))
        if auc > self.auc:
            self.auc, self.step, self.state = auc, step, copy.deepcopy(self.model.state_dict())


def _arm_threshold(
    ex: Experiment,
    arm: Arm,
    model: TinyCLIP,
    stream: Callable[[], Iterator[dict[str, Any]]],
    desc: str,
) -> float | None:
    """The arm's θ: absolute, ``None``, or calibrated once on the first batches of ``stream()``
    as seen by the pre-trained ``model``."""
    cfg = ex.cfg
    quantile = arm.resolve_quantile(cfg.threshold_quantile)
    if quantile is None:
        return arm.resolve_threshold(cfg.absolute_threshold, cfg.threshold_quantile)
    pairs = calibration_pairs(model, ex.tokenizer, stream(), cfg.calibration_batches, ex.device)
    threshold = calibrate_threshold(pairs, quantile)
    ex.log(
        f"{desc}: theta {threshold:.4f} (q={quantile:g} of the positive cosines of the first "
        f"{cfg.calibration_batches} fine-tuning batches), fixed for fine-tuning"
    )
    return threshold


def run_arm(
    ex: Experiment, arm: Arm, seed: int, model: TinyCLIP, pretrained: Pretrained
) -> SeedRun:
    """Fine-tune ``model`` from ``pretrained`` as ``arm`` prescribes, keep the checkpoint with the
    best validation macro AUROC, and score the test split with it (and with the last step's)."""
    cfg = ex.cfg
    desc = ex.next_stage(seed, f"arm {arm.label}")
    model.load_state_dict(pretrained.state)
    group_key = TEXT_GROUP_KEY if arm.text_groups else None

    def stream() -> Iterator[dict[str, Any]]:
        sampler = SentenceSampler(
            seed=seed, num_sentences=1, train=arm.sampled, group_key=group_key
        )
        return batches(ex.bench.train, sampler, cfg.batch_size, seed + 1)

    threshold = _arm_threshold(ex, arm, model, stream, desc)
    best = _Tracker(ex, model)
    constant_after = cfg.finetune_warmup if cfg.finetune_schedule == "constant" else None
    bar = Progress(cfg.finetune_steps, desc, cfg.progress)
    t = time.perf_counter()
    torch.manual_seed(seed + 1000)  # dropout masks: same stream for every arm
    log = train(
        model,
        ex.tokenizer,
        stream(),
        RelaxedContrastiveLoss(threshold=threshold),
        Optimisation(cfg.finetune_steps, cfg.finetune_lr, cfg.weight_decay, constant_after),
        ex.device,
        group_key=group_key,
        on_eval=best,
        eval_every=cfg.eval_every,
        progress=bar,
    )
    bar.close()
    seconds = time.perf_counter() - t
    ex.timing["finetune"] += seconds
    assert best.state is not None  # check_evaluation_splits: the validation AUROC is defined
    if cfg.compare_arms:
        ex.log(
            f"{desc}: best validation macro AUROC {best.auc:.4f} at step {best.step} "
            f"({seconds:.1f} s)"
        )
    else:
        ex.log(f"{desc}: fine-tuned and evaluated ({seconds:.1f} s)")
    test_last = ex.scores(model, ex.test_x)
    model.load_state_dict(best.state)
    stats = TrainStats(float(np.mean(log.positive_cosine)), float(np.mean(log.relaxed_fraction)))
    test = ex.scores(model, ex.test_x)
    return SeedRun(
        seed, test, best.auc, best.step, best.curve, stats, threshold, tuple(best.points), test_last
    )


@dataclass
class SeedOutcome:
    """One seed's pre-training loss and runs (one per arm, in the order of the arms)."""

    final_loss: float
    runs: list[SeedRun]


def run_seed(ex: Experiment, arms: Sequence[Arm], index: int, seed: int) -> SeedOutcome:
    """Pre-train a fresh model for ``seed`` (the ``index``-th seed: it numbers the progress
    lines) and run every arm from it.  Depends on nothing but ``ex`` and ``seed``."""
    ex.stage = index * (1 + sum(a.finetune for a in arms))
    torch.manual_seed(seed)
    model = ex.new_model()
    pre = pretrain(ex, model, seed)
    runs = [run_arm(ex, arm, seed, model, pre) if arm.finetune else pre.run for arm in arms]
    return SeedOutcome(pre.final_loss, runs)


def _seed_task(
    ex: Experiment, arms: Sequence[Arm], job: tuple[int, int], log: Callable[[str], None]
) -> tuple[SeedOutcome, dict[str, float]]:
    """:func:`run_seed` in a worker process: its lines go to ``log``; also returns the seconds
    it spent pre-training and fine-tuning."""
    ex.log = log
    before = dict(ex.timing)
    outcome = run_seed(ex, arms, *job)
    return outcome, {key: ex.timing[key] - before[key] for key in ("pretrain", "finetune")}


def _check_arms(arms: Sequence[Arm]) -> None:
    """Labels unique and the reference arm present."""
    labels = [a.label for a in arms]
    if len(set(labels)) != len(labels):
        raise ValueError(f"arms: labels must be unique, got {labels}")
    if REFERENCE not in labels:
        raise ValueError(f"arms: the reference arm {REFERENCE!r} is required, got {labels}")


def run_demo(
    cfg: DemoConfig,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    log: Callable[[str], None] = print,
    arms: Sequence[Arm] = ARMS,
) -> dict[str, Any]:
    """Run the whole experiment for ``arms`` (plus the sweep arms when ``cfg.sweep_threshold``);
    returns the results in their results.json form (also written to ``out_dir``).

    ``out_dir=None`` writes nothing.  ``log`` receives every printed line.
    """
    cfg.validate()
    _check_arms(arms)
    out = None if out_dir is None else prepare_out_dir(out_dir)
    t_start = time.perf_counter()
    device = resolve_device(cfg.device)
    _notes(cfg, out, log)
    threads_before = torch.get_num_threads()
    threads = cfg.threads if cfg.threads is not None else max(1, min(4, available_cores() // 2))
    if device.type == "cpu":
        torch.set_num_threads(threads)
    try:
        results, roc = _run(cfg, device, threads, list(arms), log)
    finally:
        torch.set_num_threads(threads_before)
    results["timing_s"]["total"] = time.perf_counter() - t_start
    if not cfg.compare_arms:
        log(smoke_summary(results))
    if out is not None:
        write_outputs(results, roc, out, plots=cfg.plots, log=log)
    return results


def smoke_summary(results: dict[str, Any]) -> str:
    """The lines a run without the arm comparison (``compare_arms=False``: ``--quick``) prints
    at its end: stage timings, a pass line and the command of the measurement."""
    timing, cfg = results["timing_s"], results["config"]
    arms = [a for a in results["arms"].values() if a["fine_tuned"]]
    ok = all(a["macro_auroc"]["mean"] is not None for a in results["arms"].values())
    stages = ", ".join(
        f"{name} {timing[key]:.1f} s"
        for key, name in (
            ("data", "data"),
            ("pretrain", "pre-training"),
            ("finetune", "fine-tuning"),
            ("bootstrap", "bootstrap"),
        )
    )
    verdict = "passed" if ok else "FAILED (an arm has no macro AUROC)"
    return (
        f"stage times: {stages}; total {timing['total']:.1f} s\n"
        f"quick check {verdict}: {len(cfg['seeds'])} seed(s), pre-training and "
        f"{len(arms)} fine-tuned arms, zero-shot evaluation of {len(results['arms'])} models, "
        f"{cfg['n_bootstrap']} bootstrap replicates. No arm comparison is printed: this budget "
        "is a smoke test, not a measurement (results.json holds its numbers).\n"
        "the measurement: relaxclip demo   (3 seeds; a few minutes on 2 CPU cores; docs/demo.md)"
    )


def _notes(cfg: DemoConfig, out: Path | None, log: Callable[[str], None]) -> None:
    """Print warnings about the run before it starts."""
    warning = None if cfg.threads is None else thread_warning(cfg.threads)
    if warning:
        log(f"warning: {warning}")
    if cfg.n_bootstrap < 100:
        log(f"note: {cfg.n_bootstrap} bootstrap replicates give only a rough 95% CI")
    earlier = [] if out is None else earlier_outputs(out)
    if earlier:
        log(
            f"note: {out} holds {', '.join(earlier)} of an earlier run; they are replaced (or "
            "removed) when this run completes, and left untouched if it does not"
        )


def _run(
    cfg: DemoConfig,
    device: torch.device,
    threads: int,
    arms: list[Arm],
    log: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    t0 = time.perf_counter()
    bench = load_benchmark(cfg)
    for note in bench.notes:
        log(note)
    check_evaluation_splits(bench)
    if cfg.sweep_threshold:
        arms += sweep_arms(cfg.sweep_thresholds, cfg.sweep_quantiles)
    n_stages = len(cfg.seeds) * (1 + sum(a.finetune for a in arms))
    ex = Experiment(cfg, device, bench, log, n_stages, timing={"data": time.perf_counter() - t0})
    log(
        f"benchmark: {bench.source}, {len(bench.pretrain)}/{len(bench.train)}/{len(bench.val)}/"
        f"{len(bench.test)} pre-train/train/val/test studies (disjoint), {len(bench.findings)} "
        f"findings, vocabulary {ex.tokenizer.vocab_size} words (from the pre-training reports), "
        f"device {device}, {threads} CPU thread(s)"
    )
    _log_context(ex, log)
    workers = resolve_workers(cfg, device, threads)
    outcomes = _run_seeds(ex, arms, workers, threads)
    runs = {arm: [o.runs[k] for o in outcomes] for k, arm in enumerate(arms)}
    final_losses = [o.final_loss for o in outcomes]
    results = _results(ex, runs, threads, final_losses, workers)
    if cfg.compare_arms:
        log(results["table"])
        log(results["conclusion"])
    first = {a.label: r[0].test_scores for a, r in runs.items() if a.finetune and not a.sweep}
    return results, {"y": ex.test_y.numpy(), **first}


def _run_seeds(
    ex: Experiment, arms: Sequence[Arm], workers: int, threads: int
) -> list[SeedOutcome]:
    """:func:`run_seed` for every seed of ``ex.cfg``, in this process or in ``workers`` worker
    processes of ``threads`` torch threads each (:mod:`relaxclip.demo.workers`)."""
    jobs = list(enumerate(ex.cfg.seeds))
    if ex.cfg.workers is not None and ex.cfg.workers > workers:
        ex.log(f"note: {workers} worker process(es) for {len(jobs)} seed(s), not {ex.cfg.workers}")
    if workers == 1:
        return [run_seed(ex, arms, index, seed) for index, seed in jobs]
    cores = available_cores()
    if workers * threads > cores:
        ex.log(
            f"warning: {workers} workers x {threads} thread(s) exceed the {cores} CPU core(s) "
            "available (slower, same results)"
        )
    ex.log(
        f"running the {len(jobs)} seeds in {workers} worker processes of {threads} thread(s) "
        "each (same numbers as one process; no progress bars)"
    )
    shipped = copy.copy(ex)  # what a worker gets: no progress bars, not the caller's log
    shipped.cfg, shipped.log = dataclasses.replace(ex.cfg, progress=False), print
    shipped.timing = dict(ex.timing)
    task = functools.partial(_seed_task, shipped, tuple(arms))
    done = run_in_workers(task, jobs, workers, threads, ex.log)
    for _, spent in done:
        for key, seconds in spent.items():
            ex.timing[key] += seconds
    return [outcome for outcome, _ in done]


def _results(
    ex: Experiment,
    runs: dict[Arm, list[SeedRun]],
    threads: int,
    final_losses: list[float],
    workers: int,
) -> dict[str, Any]:
    """The results.json dict (strict JSON values), with the printed table and conclusion."""
    cfg, bench = ex.cfg, ex.bench
    t = time.perf_counter()
    test_y = ex.test_y.numpy()
    arms = summarise_arms(
        runs,
        test_y,
        bench.findings,
        threshold=cfg.absolute_threshold,
        n_bootstrap=cfg.n_bootstrap,
        bootstrap_seed=cfg.bootstrap_seed,
        quantile=cfg.threshold_quantile,
    )
    ex.timing["bootstrap"] = time.perf_counter() - t
    sweep = summarise_sweep(arms, cfg.absolute_threshold, cfg.threshold_quantile)
    splits = (
        ("pretrain", bench.pretrain),
        ("train", bench.train),
        ("val", bench.val),
        ("test", bench.test),
    )
    prevalence = {
        name: dict(zip(bench.findings, label_prevalence(recs).tolist(), strict=True))
        for name, recs in splits
    }
    results: dict[str, Any] = strict_json(
        {
            "config": dataclasses.asdict(cfg),
            "versions": _versions(),
            "device": str(ex.device),
            "threads": threads,
            "workers": workers,
            "benchmark": {
                "source": bench.source,
                "findings": list(bench.findings),
                "n": {name: len(recs) for name, recs in splits},
                "prevalence": prevalence,
                "vocab_size": ex.tokenizer.vocab_size,
                "context_length": ex.tokenizer.context_length,
                "train_reports_truncated": ex.n_truncated,
                "pretrain_reports_truncated": ex.n_pretrain_truncated,
                "longest_sentence_tokens": ex.longest_sentence,
                "notes": bench.notes,
            },
            "seeds": list(cfg.seeds),
            "templates": [list(t) for t in TEMPLATES],
            "pretrain_final_loss": final_losses,
            "arms": {label: a.to_json() for label, a in arms.items()},
            "sweep": None if sweep is None else sweep.to_json(),
            "timing_s": ex.timing,
        }
    )
    results["table"] = format_table(results)
    results["conclusion"] = conclusion(results)
    return results
