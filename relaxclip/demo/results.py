"""Typed result records of the demo and their results.json form.

:class:`SeedRun` is one arm trained and evaluated with one seed; :func:`summarise_arms` turns the
runs of every arm into :class:`ArmResult` records (seed mean ± std, bootstrap CI of the seed
mean, paired difference to the reference arm, per-label AUROC); :class:`SweepResult` is the
threshold sweep.  ``to_json()`` gives the dicts written to results.json (keys unchanged from
earlier versions; NaN and infinities become ``null`` via :func:`strict_json`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from relaxclip.demo.arms import REFERENCE, Arm, sweep_key
from relaxclip.metrics import bootstrap_auroc, macro_auroc

__all__ = [
    "ArmResult",
    "Interval",
    "SeedRun",
    "SweepResult",
    "TrainStats",
    "dumps_strict",
    "strict_json",
    "summarise_arms",
    "summarise_sweep",
]

Interval = tuple[float, float]


@dataclass(frozen=True)
class TrainStats:
    """Means over the fine-tuning steps of one run (see :class:`~relaxclip.demo.training.TrainLog`)."""

    positive_cosine: float
    relaxed_fraction: float


@dataclass(frozen=True)
class CurvePoint:
    """One validation during fine-tuning: the step, the validation macro AUROC, and the mean
    positive-pair cosine and relaxed share over the fine-tuning steps since the previous one."""

    step: int
    val_macro_auroc: float
    positive_cosine: float
    relaxed_fraction: float


@dataclass(frozen=True)
class SeedRun:
    """One arm trained (or not) and evaluated with one seed.

    ``test_scores``: ``(N_test, K)`` float64 zero-shot probabilities of the kept checkpoint;
    ``val_curve``: validation macro AUROC per evaluated step; ``best_step`` / ``val_best``: the
    checkpoint kept (best validation macro AUROC); ``train_stats``: ``None`` without fine-tuning;
    ``threshold``: the θ the loss fine-tuned with (calibrated for a quantile arm; ``None``: none);
    ``curve``: every validation with its diagnostics; ``test_scores_last``: the test scores of
    the last step's model (``None``: that of the kept checkpoint, e.g. without fine-tuning).
    """

    seed: int
    test_scores: np.ndarray
    val_best: float
    best_step: int
    val_curve: dict[int, float]
    train_stats: TrainStats | None
    threshold: float | None = None
    curve: tuple[CurvePoint, ...] = ()
    test_scores_last: np.ndarray | None = None

    @property
    def last_scores(self) -> np.ndarray:
        """The test scores of the last step's model."""
        return self.test_scores if self.test_scores_last is None else self.test_scores_last


@dataclass(frozen=True)
class SeedSummary:
    """Mean, population std and per-seed values of one number, with an optional 95 % CI."""

    mean: float
    std: float
    per_seed: list[float]


@dataclass(frozen=True)
class ArmResult:
    """Everything reported for one arm (macro / per-label test AUROC over seeds, CIs, runs)."""

    arm: Arm
    threshold: float | None
    threshold_quantile: float | None
    macro: SeedSummary
    macro_ci95: Interval
    delta_mean: float
    delta_ci95: Interval
    per_label: dict[str, SeedSummary]
    runs: list[SeedRun]
    last: tuple[SeedSummary, float, Interval] | None = None
    """The last step's model: macro AUROC over seeds, Δ vs the reference and its 95 % CI."""

    def to_json(self) -> dict[str, Any]:
        """The arm's entry in results.json ``"arms"``."""
        return {
            "name": self.arm.name,
            "sentence_sampling": self.arm.sampled,
            "threshold": self.threshold,
            "threshold_quantile": self.threshold_quantile,
            "calibrated_threshold": (
                None
                if self.threshold_quantile is None
                else [r.threshold for r in self.runs if r.train_stats is not None]
            ),
            "text": self.arm.text,
            "text_groups": self.arm.text_groups,
            "fine_tuned": self.arm.finetune,
            "sweep": self.arm.sweep,
            "macro_auroc": {**vars(self.macro), "ci95": list(self.macro_ci95)},
            "delta_vs_a": {"mean": self.delta_mean, "ci95": list(self.delta_ci95)},
            "per_label_auroc": {f: vars(s) for f, s in self.per_label.items()},
            "val_macro_auroc_best": [r.val_best for r in self.runs],
            "best_step": [r.best_step for r in self.runs],
            "val_curve": [{str(k): v for k, v in r.val_curve.items()} for r in self.runs],
            "curve": [[{**vars(p), "threshold": r.threshold} for p in r.curve] for r in self.runs],
            "last_step": None
            if self.last is None
            else {
                "macro_auroc": vars(self.last[0]),
                "delta_vs_a": {"mean": self.last[1], "ci95": list(self.last[2])},
            },
            "train_stats": [vars(r.train_stats) for r in self.runs if r.train_stats is not None],
        }


@dataclass(frozen=True)
class SweepResult:
    """The sweep of arm (d): mean validation / test macro AUROC per setting, chosen on val.

    Settings are absolute θ values (``thresholds``) and calibration quantiles (``quantiles``);
    ``val_mean`` / ``test_mean`` are keyed by :func:`~relaxclip.demo.arms.sweep_key`
    (``"0.6"``, ``"q=0.7"``).  ``chosen`` is the setting chosen on validation: the float θ for
    an absolute threshold (as before quantiles were swept), the key ``"q=0.7"`` for a quantile.
    """

    thresholds: list[float]
    quantiles: list[float]
    val_mean: dict[str, float]
    test_mean: dict[str, float]
    chosen: float | str

    def to_json(self) -> dict[str, Any]:
        return {
            "thresholds": self.thresholds,
            "quantiles": self.quantiles,
            "val_macro_auroc_mean": self.val_mean,
            "test_macro_auroc_mean": self.test_mean,
            "chosen_on_validation": self.chosen,
        }


def _ci(values: np.ndarray) -> Interval:
    """Percentile 95 % interval of the non-NaN ``values`` (NaN, NaN when there are none)."""
    v = values[~np.isnan(values)]
    if v.size == 0:
        return (math.nan, math.nan)
    lo, hi = np.percentile(v, [2.5, 97.5])
    return (float(lo), float(hi))


def _seed_summary(values: Sequence[float]) -> SeedSummary:
    arr = np.asarray(values, dtype=np.float64)
    return SeedSummary(float(arr.mean()), float(arr.std()), [float(x) for x in arr])


def _bootstrap_arms(
    runs: Mapping[Arm, list[SeedRun]],
    scores: Callable[[SeedRun], np.ndarray],
    y: np.ndarray,
    findings: list[str],
    n_bootstrap: int,
    seed: int,
) -> dict[Arm, np.ndarray]:
    """Per arm, ``(B,)`` bootstrap replicates of the seed-mean macro AUROC of ``scores(run)``
    (the same resampled test studies for every arm and seed: one ``seed``)."""
    return {
        arm: np.mean(
            [
                bootstrap_auroc(
                    y, scores(r), findings, n_bootstrap=n_bootstrap, seed=seed
                ).macro_samples
                for r in rs
            ],
            axis=0,
        )
        for arm, rs in runs.items()
    }


def summarise_arms(
    runs: Mapping[Arm, list[SeedRun]],
    y: np.ndarray,
    findings: Sequence[str],
    *,
    threshold: float,
    n_bootstrap: int,
    bootstrap_seed: int,
    quantile: float | None = None,
) -> dict[str, ArmResult]:
    """One :class:`ArmResult` per arm (keyed by label, in the order of ``runs``); deltas and
    their CIs are paired against the arm labelled :data:`~relaxclip.demo.arms.REFERENCE`.
    ``threshold`` / ``quantile`` are the configured relaxation (they resolve
    ``Arm.threshold == CONFIGURED``)."""
    names = list(findings)
    boot = _bootstrap_arms(runs, lambda r: r.test_scores, y, names, n_bootstrap, bootstrap_seed)
    ref = next(a for a in runs if a.label == REFERENCE)
    ref_mean = float(np.mean([macro_auroc(y, r.test_scores, names).macro for r in runs[ref]]))
    last = _last_step(runs, ref, y, names, n_bootstrap, bootstrap_seed)
    out: dict[str, ArmResult] = {}
    for arm, arm_runs in runs.items():
        res = [macro_auroc(y, r.test_scores, names) for r in arm_runs]
        macro = _seed_summary([r.macro for r in res])
        out[arm.label] = ArmResult(
            arm=arm,
            threshold=arm.resolve_threshold(threshold, quantile),
            threshold_quantile=arm.resolve_quantile(quantile),
            macro=macro,
            macro_ci95=_ci(boot[arm]),
            delta_mean=macro.mean - ref_mean,
            delta_ci95=_ci(boot[arm] - boot[ref]) if arm is not ref else (0.0, 0.0),
            per_label={f: _seed_summary([r.per_label[f] for r in res]) for f in names},
            runs=arm_runs,
            last=last.get(arm),
        )
    return out


def _last_step(
    runs: Mapping[Arm, list[SeedRun]],
    ref: Arm,
    y: np.ndarray,
    names: list[str],
    n_bootstrap: int,
    bootstrap_seed: int,
) -> dict[Arm, tuple[SeedSummary, float, Interval]]:
    """Per arm, the last step's macro AUROC over seeds and its Δ vs ``ref`` with a 95 % CI
    (empty when no run kept the last step's scores)."""
    if all(r.test_scores_last is None for rs in runs.values() for r in rs):
        return {}
    boot = _bootstrap_arms(runs, lambda r: r.last_scores, y, names, n_bootstrap, bootstrap_seed)
    macro = {
        arm: _seed_summary([macro_auroc(y, r.last_scores, names).macro for r in rs])
        for arm, rs in runs.items()
    }
    return {
        arm: (macro[arm], macro[arm].mean - macro[ref].mean, _ci(boot[arm] - boot[ref]))
        for arm in runs
    }


def summarise_sweep(
    arms: Mapping[str, ArmResult], threshold: float, quantile: float | None = None
) -> SweepResult | None:
    """The sweep over the ``sweep`` arms (``None`` without any), chosen on mean validation
    AUROC.  Ties go to the setting closest to the configured one: with an absolute
    ``threshold`` configured (``quantile=None``) the absolute θ closest to it, then the
    smallest q; with a configured ``quantile`` the q closest to it, then the absolute θ
    closest to ``threshold``."""
    sweep = [a for a in arms.values() if a.arm.sweep]
    if not sweep:
        return None
    absolute = sorted({a.threshold for a in sweep if a.threshold is not None})
    quantiles = sorted({a.threshold_quantile for a in sweep if a.threshold_quantile is not None})
    val: dict[str, float] = {}
    test: dict[str, float] = {}
    distance: dict[str, float] = {}
    chosen_value: dict[str, float | str] = {}
    for a in sweep:
        if a.threshold is None and a.threshold_quantile is None:
            continue  # a CLIP-loss sweep arm has no setting to choose
        key = sweep_key(a.threshold, a.threshold_quantile)
        val[key] = float(np.mean([r.val_best for r in a.runs]))
        test[key] = a.macro.mean
        if a.threshold is not None:
            d = abs(a.threshold - threshold)
            distance[key] = d if quantile is None else 2.0 + d
            chosen_value[key] = a.threshold
        else:
            assert a.threshold_quantile is not None
            q = a.threshold_quantile
            distance[key] = abs(q - quantile) if quantile is not None else 2.0 + q
            chosen_value[key] = key
    if not val:
        return None
    order = [sweep_key(threshold=t) for t in absolute] + [sweep_key(quantile=q) for q in quantiles]
    best = max(order, key=lambda k: (val[k], -distance[k]))
    return SweepResult(
        absolute,
        quantiles,
        {k: val[k] for k in order},
        {k: test[k] for k in order},
        chosen_value[best],
    )


def strict_json(obj: Any) -> Any:
    """``obj`` with numpy scalars/arrays as Python values and every non-finite float as ``None``
    (strict JSON has no NaN or Infinity); tuples become lists, paths strings."""
    if isinstance(obj, Mapping):
        return {str(k): strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return strict_json(obj.tolist())
    if isinstance(obj, np.generic):
        return strict_json(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if hasattr(obj, "__fspath__"):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps_strict(obj: Any) -> str:
    """Strict JSON text of ``obj`` (see :func:`strict_json`; ``allow_nan=False``)."""
    import json

    return json.dumps(strict_json(obj), indent=2, allow_nan=False) + "\n"
