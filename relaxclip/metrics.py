"""Classification metrics for zero-shot evaluation, in numpy only (no scikit-learn at run time).

Every function here equals its scikit-learn counterpart (``roc_auc_score``,
``matthews_corrcoef``, ``f1_score``) to 1e-12; ``tests/test_metrics.py`` checks that.

Conventions
-----------
* ``y_true`` holds 0/1 (bool, int or float). Multi-label inputs are ``(N, K)`` arrays, one
  column per label, one row per *study* (the unit that is resampled by the bootstrap).
* Unmentioned labels are ``NaN`` in ``y_true``. **NaN policy**: the multi-label functions
  (``macro_auroc``, ``bootstrap_auroc``, ``select_thresholds``, ``evaluate_thresholds``) use
  ``nan_policy="omit"`` by default: for each label, rows whose ``y_true`` is NaN are
  excluded *for that label only*; the number excluded is reported per label
  (``AUROCResult.n_excluded``). ``nan_policy="raise"`` raises instead. The single-label
  functions (``auroc``, ``mcc``, ``f1``, ``best_threshold``) always raise on NaN.
* Uncertain labels (CheXpert's ``-1``) are rejected: map them first (see the dataset readers'
  ``uncertainty=`` policy).
* ``y_score`` must be finite. Integer scores are compared exactly: int64/uint64 values
  beyond 2**53 (where float64 would merge neighbours into ties) are ranked as integers.
* Inputs may be anything ``numpy.asarray`` takes, and torch tensors of any dtype and device,
  with or without ``requires_grad``: a tensor is detached, moved to the CPU and, if it is a
  floating tensor (bf16 and fp16 included), converted exactly to float64. Metrics are never
  differentiable.
* Empty inputs raise (as scikit-learn does). Nothing is dropped, reordered or truncated
  silently.
"""

from __future__ import annotations

import math
import numbers
import operator
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

NanPolicy = Literal["omit", "raise"]
ThresholdMetric = Literal["mcc", "f1"]

__all__ = [
    "AUROCResult",
    "BootstrapAUROCResult",
    "ConfidenceInterval",
    "ThresholdResult",
    "auroc",
    "best_threshold",
    "binarize",
    "bootstrap_auroc",
    "bootstrap_indices",
    "evaluate_thresholds",
    "f1",
    "macro_auroc",
    "mcc",
    "roc_curve",
    "select_thresholds",
]


# --------------------------------------------------------------------------- validation


#: float64 represents every integer up to this magnitude exactly.
_EXACT_INT = 2**53


def _to_array(y: Any, name: str) -> np.ndarray:
    """``numpy.asarray(y)``; a torch tensor is detached, moved to the CPU and, when floating
    (bf16 / fp16 / fp32 / fp64 / fp8), converted to float64 (exact), so ``requires_grad``,
    CUDA and bf16 tensors are all accepted. torch is looked up in ``sys.modules`` only: this
    module never imports it."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(y, torch.Tensor):
        t = y.detach()
        if t.is_complex():
            raise TypeError(f"{name}: complex tensors are not supported, got {t.dtype}")
        if t.device.type == "meta":
            raise ValueError(f"{name}: a meta tensor has no values")
        t = t.cpu()
        if t.is_sparse or t.layout != torch.strided:
            t = t.to_dense()
        if t.is_floating_point():
            t = t.double()
        return np.asarray(t.numpy())
    return np.asarray(y)


def _as_binary_1d(y: ArrayLike, name: str, *, allow_nan: bool = False) -> NDArray[np.float64]:
    arr = _to_array(y, name)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    return _check_binary_values(arr, name, allow_nan=allow_nan)


def _check_binary_values(arr: np.ndarray, name: str, *, allow_nan: bool) -> NDArray[np.float64]:
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise TypeError(f"{name}: expected numeric or bool values, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise TypeError(f"{name}: complex values are not labels")
    out = arr.astype(np.float64)
    nan = np.isnan(out)
    if nan.any() and not allow_nan:
        raise ValueError(
            f"{name}: contains {int(nan.sum())} NaN label(s); unmentioned labels are only "
            "accepted by the multi-label functions with nan_policy='omit'"
        )
    bad = ~nan & (out != 0.0) & (out != 1.0)
    if bad.any():
        vals = np.unique(out[bad])[:5].tolist()
        hint = (
            " (map CheXpert's uncertain -1 with an uncertainty policy first)"
            if -1.0 in vals
            else ""
        )
        raise ValueError(f"{name}: labels must be 0 or 1, found {vals}{hint}")
    return out


def _as_score_1d(y: ArrayLike, name: str) -> NDArray[Any]:
    arr = _to_array(y, name)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    return _check_scores(arr, name)


def _check_scores(arr: np.ndarray, name: str) -> NDArray[Any]:
    """float64 scores, or the integer array itself when an int/uint value lies beyond
    ``2**53`` (float64 would round neighbouring values into ties there)."""
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise TypeError(f"{name}: expected real numeric scores, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise TypeError(f"{name}: complex scores are not supported")
    if (
        arr.dtype.kind in "iu"
        and arr.size
        and (int(arr.max()) > _EXACT_INT or int(arr.min()) < -_EXACT_INT)
    ):
        return arr
    out = arr.astype(np.float64)
    finite = np.isfinite(out)
    if not finite.all():
        n_nan = int(np.isnan(out).sum())
        raise ValueError(
            f"{name}: scores must be finite, found {n_nan} NaN and "
            f"{int((~finite).sum()) - n_nan} inf value(s) (first at index "
            f"{np.argwhere(~finite)[0].tolist()})"
        )
    return out


def _label_names(labels: Any, k: int) -> tuple[str, ...]:
    if labels is None:
        return tuple(f"label_{i}" for i in range(k))
    if isinstance(labels, np.ndarray):
        if labels.ndim != 1:
            raise ValueError(f"labels: expected a 1-D array of K names, got shape {labels.shape}")
        labels = labels.tolist()  # numpy str_ -> str
    if isinstance(labels, str) or not isinstance(labels, Sequence):
        raise TypeError(f"labels: expected a sequence of K names, got {type(labels).__name__}")
    names = tuple(labels)
    if len(names) != k:
        raise ValueError(f"labels: expected {k} names (one per column), got {len(names)}")
    if len(set(names)) != k:
        raise ValueError(f"labels: names must be unique, got {list(names)}")
    return names


def _positive_int(value: Any, name: str) -> int:
    """``value`` as an int >= 1; numpy integers are accepted, bool and floats are not."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return operator.index(value)


def _same_length(a: np.ndarray, b: np.ndarray, na: str, nb: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{na} and {nb} must have the same length, got {a.shape[0]} and {b.shape[0]}"
        )


def _as_2d_pair(
    y_true: ArrayLike, y_score: ArrayLike, labels: Sequence[str] | NDArray[Any] | None
) -> tuple[NDArray[np.float64], NDArray[Any], tuple[str, ...]]:
    t = _to_array(y_true, "y_true")
    s = _to_array(y_score, "y_score")
    if t.ndim != 2:
        raise ValueError(
            f"y_true: expected shape (N, K), got {t.shape} (reshape 1-D input to (N, 1))"
        )
    if s.shape != t.shape:
        raise ValueError(f"y_score: expected the shape of y_true {t.shape}, got {s.shape}")
    if t.shape[1] == 0:
        raise ValueError(f"y_true: expected at least one label column, got shape {t.shape}")
    if t.shape[0] == 0:
        raise ValueError(f"y_true: empty input (0 rows, shape {t.shape})")
    tf = _check_binary_values(t, "y_true", allow_nan=True)
    sf = _check_scores(s, "y_score")
    return tf, sf, _label_names(labels, t.shape[1])


def _check_nan_policy(nan_policy: str, y_true: np.ndarray) -> None:
    if nan_policy not in ("omit", "raise"):
        raise ValueError(f"nan_policy: expected 'omit' or 'raise', got {nan_policy!r}")
    if nan_policy == "raise" and np.isnan(y_true).any():
        raise ValueError(
            f"y_true: contains {int(np.isnan(y_true).sum())} NaN label(s) and nan_policy='raise'"
        )


# --------------------------------------------------------------------------- AUROC core


def _auc_from_counts(pos: np.ndarray, neg: np.ndarray) -> NDArray[np.float64]:
    """AUROC from per-score-level class counts.

    ``pos``/``neg``: int64 ``(..., G)``, the number (or bootstrap weight) of positives and
    negatives at each distinct score value, in ascending score order. Returns float64
    ``(...)``: ``U / (n_pos * n_neg)`` with the Mann–Whitney statistic
    ``U = sum_g pos_g * (neg_below_g + neg_g / 2)``; ties count one half. Computed as the
    integer ``2U`` divided once, so the only rounding is the final division. NaN where a
    class is empty.
    """
    neg_below = np.cumsum(neg, axis=-1) - neg
    twice_u = np.sum(pos * (2 * neg_below + neg), axis=-1)
    denom = 2 * pos.sum(axis=-1) * neg.sum(axis=-1)
    out = np.full(np.shape(denom), np.nan, dtype=np.float64)
    ok = denom > 0
    np.divide(twice_u, denom, out=out, where=ok)
    return out


@dataclass(frozen=True)
class _Levels:
    """Rows sorted by score and the start of each distinct-score run."""

    order: NDArray[np.intp]
    starts: NDArray[np.intp]

    @classmethod
    def of(cls, score: NDArray[Any], *, descending: bool = False) -> _Levels:
        """Levels in ascending (or ``descending``) score order; exact for integer scores."""
        order = np.argsort(score, kind="stable")
        if descending:
            order = order[::-1]
        s = score[order]
        starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]]) if s.size else np.zeros(0, np.intp)
        return cls(order=order, starts=starts)

    def counts(self, indicator: NDArray[np.int64]) -> NDArray[np.int64]:
        """Sum ``indicator[..., rows]`` within each score level (last axis)."""
        return np.add.reduceat(indicator[..., self.order], self.starts, axis=-1)


def _both_classes(
    y_true: ArrayLike, y_score: ArrayLike, func: str, note: str
) -> tuple[NDArray[Any], NDArray[Any]]:
    """Validated ``(y_true, y_score)`` as 1-D arrays of equal length with both classes present.

    Raises ``ValueError`` naming ``func`` (with ``note`` appended) when only one class is present.
    """
    t = _as_binary_1d(y_true, "y_true")
    s = _as_score_1d(y_score, "y_score")
    _same_length(t, s, "y_true", "y_score")
    n_pos = int(t.sum())
    if n_pos == 0 or n_pos == t.size:
        raise ValueError(
            f"{func}: only one class present in y_true ({t.size} rows, {n_pos} positive){note}"
        )
    return t, s


def auroc(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """Area under the ROC curve, exact with ties (Mann–Whitney U / (n_pos · n_neg)).

    ``y_true``: ``(N,)`` 0/1; ``y_score``: ``(N,)`` finite reals (higher = more positive).
    Tied scores between a positive and a negative count 1/2, which is exactly the trapezoidal
    area scikit-learn's ``roc_auc_score`` computes. Raises ``ValueError`` when only one class
    is present (AUROC is undefined), on NaN labels, and on non-0/1 labels.
    """
    t, s = _both_classes(y_true, y_score, "auroc", "; AUROC is undefined")
    lv = _Levels.of(s)
    pos = t.astype(np.int64)
    return float(_auc_from_counts(lv.counts(pos), lv.counts(1 - pos)))


def roc_curve(
    y_true: ArrayLike, y_score: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """ROC curve points ``(fpr, tpr)``, one per distinct score plus the origin.

    ``y_true``: ``(N,)`` 0/1 with both classes; ``y_score``: ``(N,)`` finite reals. Points are in
    order of decreasing threshold, starting at ``(0, 0)`` and ending at ``(1, 1)``; tied scores
    form one point. Equals scikit-learn's ``roc_curve(..., drop_intermediate=False)`` points.
    """
    t, s = _both_classes(y_true, y_score, "roc_curve", "")
    order = np.argsort(s, kind="stable")[::-1]  # not argsort(-s): -s wraps for uint64 and -2**63
    ranked, truth = s[order], t[order]
    level_ends = np.r_[np.flatnonzero(ranked[1:] != ranked[:-1]), ranked.size - 1]
    tps = np.cumsum(truth)[level_ends]
    fps = (level_ends + 1) - tps
    return np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]]


@dataclass(frozen=True)
class AUROCResult:
    """Per-label and macro AUROC.

    ``per_label``: label → AUROC (NaN for skipped labels), in the column order given.
    ``macro``: unweighted mean over the labels that were *not* skipped (NaN when all were).
    ``skipped``: label → reason (e.g. a single class after NaN exclusion); such labels are
    excluded from ``macro`` and listed here, never dropped silently.
    ``n_used`` / ``n_positive`` / ``n_excluded``: rows used, positives among them, and rows
    excluded because their label was NaN (``nan_policy="omit"``).
    """

    macro: float
    per_label: dict[str, float]
    skipped: dict[str, str] = field(default_factory=dict)
    n_used: dict[str, int] = field(default_factory=dict)
    n_positive: dict[str, int] = field(default_factory=dict)
    n_excluded: dict[str, int] = field(default_factory=dict)

    @property
    def labels_used(self) -> tuple[str, ...]:
        """Labels that enter the macro average."""
        return tuple(k for k in self.per_label if k not in self.skipped)

    def summary(self) -> str:
        """A plain-text table: one line per label, then the macro and what was skipped."""
        lines = [f"{'label':<28} {'AUROC':>7} {'n':>7} {'pos':>6} {'NaN':>6}"]
        for name, value in self.per_label.items():
            lines.append(
                f"{name:<28} {value:>7.4f} {self.n_used.get(name, 0):>7d} "
                f"{self.n_positive.get(name, 0):>6d} {self.n_excluded.get(name, 0):>6d}"
            )
        lines.append(
            f"{'macro (' + str(len(self.labels_used)) + ' labels)':<28} {self.macro:>7.4f}"
        )
        for name, why in self.skipped.items():
            lines.append(f"skipped {name}: {why}")
        return "\n".join(lines)


def macro_auroc(
    y_true: ArrayLike,
    y_score: ArrayLike,
    labels: Sequence[str] | NDArray[Any] | None = None,
    *,
    nan_policy: NanPolicy = "omit",
) -> AUROCResult:
    """Per-label AUROC of ``(N, K)`` scores and their unweighted (macro) mean.

    ``y_true``: ``(N, K)`` with 0/1/NaN; ``y_score``: ``(N, K)`` finite; ``labels``: K names
    (default ``label_0`` …). With ``nan_policy="omit"`` rows whose label is NaN are excluded
    for that label (counted in ``n_excluded``). A label left with a single class gets NaN,
    is listed in ``skipped`` with the reason and is left out of ``macro``.
    """
    t, s, names = _as_2d_pair(y_true, y_score, labels)
    _check_nan_policy(nan_policy, t)
    per: dict[str, float] = {}
    skipped: dict[str, str] = {}
    n_used: dict[str, int] = {}
    n_pos: dict[str, int] = {}
    n_exc: dict[str, int] = {}
    for k, name in enumerate(names):
        keep = ~np.isnan(t[:, k])
        tk, sk = t[keep, k], s[keep, k]
        n_exc[name] = int((~keep).sum())
        n_used[name] = int(tk.size)
        n_pos[name] = int(tk.sum())
        if n_pos[name] == 0 or n_pos[name] == tk.size:
            per[name] = math.nan
            skipped[name] = (
                f"single class after excluding {n_exc[name]} NaN row(s): "
                f"{n_pos[name]} positive of {tk.size}"
            )
            continue
        per[name] = auroc(tk, sk)
    used = [per[n] for n in names if n not in skipped]
    macro = float(np.mean(used)) if used else math.nan
    return AUROCResult(macro, per, skipped, n_used, n_pos, n_exc)


# --------------------------------------------------------------------------- bootstrap


@dataclass(frozen=True)
class ConfidenceInterval:
    """Bootstrap mean and percentile interval ``[lower, upper]``."""

    mean: float
    lower: float
    upper: float


@dataclass(frozen=True)
class BootstrapAUROCResult:
    """Bootstrap of per-label and macro AUROC.

    ``point``: the AUROC on the full data (``macro_auroc``). ``per_label``/``macro``: the
    bootstrap mean and the ``confidence`` percentile interval (``numpy.percentile``, linear
    interpolation, as pandas' ``quantile`` that CheXzero uses). ``samples``: ``(B, K)``
    replicate AUROCs (NaN where a replicate had a single class for that label);
    ``macro_samples``: ``(B,)``, NaN when any non-skipped label was degenerate in that
    replicate. ``n_degenerate``: per label (and ``"macro"``), replicates left out of that
    statistic for that reason.
    """

    point: AUROCResult
    per_label: dict[str, ConfidenceInterval]
    macro: ConfidenceInterval
    samples: NDArray[np.float64]
    macro_samples: NDArray[np.float64]
    n_degenerate: dict[str, int]
    n_bootstrap: int
    seed: int
    confidence: float


def bootstrap_indices(
    n_units: int, n_bootstrap: int, seed: int, *, start: int = 0, stop: int | None = None
) -> NDArray[np.int64]:
    """The resampling indices ``bootstrap_auroc`` draws: ``(stop - start, n_units)`` int64.

    Replicate ``b`` draws ``n_units`` indices uniformly with replacement from its own
    generator ``numpy.random.default_rng(SeedSequence(seed).spawn(n_bootstrap)[b])``, so any
    slice ``[start, stop)`` is reproducible on its own.
    """
    n_units = _positive_int(n_units, "n_units")
    n_bootstrap = _positive_int(n_bootstrap, "n_bootstrap")
    seed = _seed(seed)
    stop = n_bootstrap if stop is None else stop
    if not 0 <= start <= stop <= n_bootstrap:
        raise ValueError(
            f"start/stop: expected 0 <= start <= stop <= {n_bootstrap}, got {start}, {stop}"
        )
    children = np.random.SeedSequence(seed).spawn(n_bootstrap)[start:stop]
    out = np.empty((stop - start, n_units), dtype=np.int64)
    for i, child in enumerate(children):
        out[i] = np.random.default_rng(child).integers(0, n_units, size=n_units)
    return out


def _seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or int(seed) < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    return operator.index(seed)


def _check_group_ids(g: np.ndarray) -> None:
    """Study ids must all be present: NaN / None would merge unrelated rows into one group."""
    if g.dtype.kind == "f":
        bad = np.flatnonzero(np.isnan(g))
    elif g.dtype == object:
        bad = np.flatnonzero(
            [v is None or (isinstance(v, float) and math.isnan(v)) for v in g.tolist()]
        )
    else:
        return
    if bad.size:
        raise ValueError(
            f"groups: {bad.size} row(s) have no study id (NaN or None at rows "
            f"{bad[:5].tolist()}); expected one id per row"
        )


def _interval(values: NDArray[np.float64], confidence: float) -> ConfidenceInterval:
    v = values[~np.isnan(values)]
    if v.size == 0:
        return ConfidenceInterval(math.nan, math.nan, math.nan)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.percentile(v, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return ConfidenceInterval(float(v.mean()), float(lo), float(hi))


def bootstrap_auroc(
    y_true: ArrayLike,
    y_score: ArrayLike,
    labels: Sequence[str] | NDArray[Any] | None = None,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    groups: ArrayLike | None = None,
    nan_policy: NanPolicy = "omit",
) -> BootstrapAUROCResult:
    """Bootstrap per-label and macro AUROC, resampling studies (rows), never labels.

    ``y_true``/``y_score``: ``(N, K)`` as in ``macro_auroc``. Each replicate draws the rows
    (or, with ``groups`` — an ``(N,)`` array of study ids — whole groups of rows) with
    replacement using ``bootstrap_indices``; a row drawn ``c`` times counts ``c`` times, which
    is exactly ``roc_auc_score`` on the resampled rows. NaN labels are excluded per label
    as in ``macro_auroc``. Labels skipped on the full data are skipped in every replicate.
    Replicates where a label has a single class are NaN for that label and left out of its
    interval (counted in ``n_degenerate``); the macro of a replicate is the mean over the
    non-skipped labels and is NaN (left out, counted) if any of them was degenerate.
    """
    t, s, names = _as_2d_pair(y_true, y_score, labels)
    _check_nan_policy(nan_policy, t)
    n_bootstrap = _positive_int(n_bootstrap, "n_bootstrap")
    seed = _seed(seed)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: expected a value in (0, 1), got {confidence}")
    n = t.shape[0]
    if n == 0:
        raise ValueError("y_true: no rows to resample")
    if groups is None:
        unit_of_row = np.arange(n)
        n_units = n
    else:
        g = _to_array(groups, "groups")
        if g.shape != (n,):
            raise ValueError(f"groups: expected shape ({n},) (one study id per row), got {g.shape}")
        _check_group_ids(g)
        _, unit_of_row = np.unique(g, return_inverse=True)
        unit_of_row = unit_of_row.reshape(-1)
        n_units = int(unit_of_row.max()) + 1

    point = macro_auroc(t, s, names, nan_policy=nan_policy)
    active = [k for k, name in enumerate(names) if name not in point.skipped]
    pos = (t == 1.0).astype(np.int64)  # NaN rows are neither positive nor negative
    neg = (t == 0.0).astype(np.int64)
    levels = {k: _Levels.of(s[:, k]) for k in active}

    samples = np.full((n_bootstrap, len(names)), np.nan, dtype=np.float64)
    chunk = max(1, 2_000_000 // max(n, n_units))
    for start in range(0, n_bootstrap, chunk):
        stop = min(n_bootstrap, start + chunk)
        idx = bootstrap_indices(n_units, n_bootstrap, seed, start=start, stop=stop)
        offsets = np.arange(stop - start)[:, None] * n_units
        unit_w = np.bincount((idx + offsets).ravel(), minlength=(stop - start) * n_units)
        row_w = unit_w.reshape(stop - start, n_units)[:, unit_of_row]  # (c, N) int64
        for k in active:
            lv = levels[k]
            samples[start:stop, k] = _auc_from_counts(
                lv.counts(row_w * pos[:, k]), lv.counts(row_w * neg[:, k])
            )

    if active:
        macro_samples = samples[:, active].mean(axis=1)  # NaN if any active label is NaN
    else:
        macro_samples = np.full(n_bootstrap, np.nan)
    per_label = {
        name: _interval(samples[:, k], confidence)
        if k in levels
        else ConfidenceInterval(math.nan, math.nan, math.nan)
        for k, name in enumerate(names)
    }
    n_degenerate = {
        name: int(np.isnan(samples[:, k]).sum()) if k in levels else n_bootstrap
        for k, name in enumerate(names)
    }
    n_degenerate["macro"] = int(np.isnan(macro_samples).sum())
    return BootstrapAUROCResult(
        point=point,
        per_label=per_label,
        macro=_interval(macro_samples, confidence),
        samples=samples,
        macro_samples=macro_samples,
        n_degenerate=n_degenerate,
        n_bootstrap=n_bootstrap,
        seed=seed,
        confidence=confidence,
    )


# --------------------------------------------------------------------------- MCC / F1


def _confusion(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[int, int, int, int]:
    t = _as_binary_1d(y_true, "y_true")
    p = _as_binary_1d(y_pred, "y_pred")
    _same_length(t, p, "y_true", "y_pred")
    if t.size == 0:
        raise ValueError("y_true: empty; expected at least one sample (as scikit-learn)")
    tb, pb = t == 1.0, p == 1.0
    tp = int(np.count_nonzero(tb & pb))
    fp = int(np.count_nonzero(~tb & pb))
    fn = int(np.count_nonzero(tb & ~pb))
    tn = int(t.size - tp - fp - fn)
    return tp, fp, fn, tn


def _mcc_formula(tp: float, fp: float, fn: float, tn: float) -> float:
    den = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    if den == 0:
        return 0.0
    return float((tp * tn - fp * fn) / math.sqrt(den))


def mcc(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Matthews correlation coefficient of 0/1 predictions.

    ``(tp·tn − fp·fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn))``, 0.0 when the denominator is 0
    (a constant ``y_true`` or ``y_pred``), as scikit-learn's ``matthews_corrcoef``. The
    products are exact Python integers; only the square root and the division round.
    """
    tp, fp, fn, tn = _confusion(y_true, y_pred)
    return _mcc_formula(tp, fp, fn, tn)


def f1(y_true: ArrayLike, y_pred: ArrayLike, *, zero_division: float = 0.0) -> float:
    """F1 of the positive class: ``2·tp / (2·tp + fp + fn)``.

    Returns ``zero_division`` (0, 1 or NaN, as scikit-learn allows) when there is no true and no
    predicted positive (scikit-learn's ``f1_score(..., zero_division=...)``; its default
    ``"warn"`` returns 0 with a warning: pass 0.0).
    """
    if (
        isinstance(zero_division, bool)
        or not isinstance(zero_division, numbers.Real)
        or not (zero_division in (0, 1) or math.isnan(zero_division))
    ):
        raise ValueError(f"zero_division: expected 0, 1 or NaN, got {zero_division!r}")
    tp, fp, fn, _ = _confusion(y_true, y_pred)
    den = 2 * tp + fp + fn
    if den == 0:
        return float(zero_division)
    return float(2 * tp / den)


# --------------------------------------------------------------------------- thresholds


@dataclass(frozen=True)
class ThresholdResult:
    """A decision threshold (predict 1 iff ``score >= threshold``) and its metric value."""

    threshold: float
    value: float
    metric: str


def _check_threshold(threshold: Any, name: str) -> float:
    if isinstance(threshold, ThresholdResult):
        threshold = threshold.threshold
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(
            f"{name}: expected a real number (or a ThresholdResult), got {type(threshold).__name__}"
        )
    if isinstance(threshold, numbers.Integral):
        return operator.index(threshold)  # an exact int stays exact
    if math.isnan(threshold):
        raise ValueError(f"{name}: must not be NaN")
    return float(threshold)


def binarize(y_score: ArrayLike, threshold: float) -> NDArray[np.int64]:
    """0/1 predictions ``(score >= threshold)`` as int64, same shape as ``y_score``.

    ``y_score`` must be finite (NaN raises: it is neither above nor below a threshold).
    ``threshold``: a real number (±inf allowed) or a ``ThresholdResult``; None or NaN raise.
    Integer scores are compared exactly (an int threshold as is, a float one as its ceiling).
    """
    thr = _check_threshold(threshold, "threshold")
    s = _check_scores(_to_array(y_score, "y_score"), "y_score")
    if s.dtype.kind in "iu" and isinstance(thr, float):
        if math.isinf(thr):
            return np.full(s.shape, int(thr < 0), dtype=np.int64)
        thr = math.ceil(thr)  # exact: an integer s >= t  <=>  s >= ceil(t)
    return (s >= thr).astype(np.int64)


def best_threshold(
    y_true: ArrayLike, y_score: ArrayLike, metric: ThresholdMetric = "mcc"
) -> ThresholdResult:
    """The threshold maximising MCC or F1 of ``binarize(y_score, threshold)`` on this data.

    Fit it on a validation split and apply it on the test split (the radiologist comparison
    of CheXzero / the paper). Candidates are every distinct score value plus ``+inf``
    (predict all negative); all are evaluated exactly, in one pass over the sorted scores.
    Ties in the metric go to the *largest* threshold. ``y_true`` must hold both classes
    (``ValueError`` otherwise, as ``select_thresholds``). For integer scores beyond 2**53 the
    threshold is returned as the exact Python ``int`` score value.
    """
    if metric not in ("mcc", "f1"):
        raise ValueError(f"metric: expected 'mcc' or 'f1', got {metric!r}")
    t = _as_binary_1d(y_true, "y_true")
    s = _as_score_1d(y_score, "y_score")
    _same_length(t, s, "y_true", "y_score")
    if t.size == 0:
        raise ValueError("y_true: empty")
    n_pos_int = int(t.sum())
    if n_pos_int in (0, t.size):
        raise ValueError(
            f"best_threshold: y_true has a single class ({t.size} rows, {n_pos_int} positive); "
            "a threshold fitted on it is meaningless (MCC is 0 and F1 constant for every "
            "threshold)"
        )
    lv = _Levels.of(s, descending=True)
    pos_at = lv.counts(t.astype(np.int64))
    all_at = lv.counts(np.ones(t.size, dtype=np.int64))
    # Candidate j (0 = +inf, then each level descending) predicts the first j levels positive.
    tp = np.r_[0, np.cumsum(pos_at)].astype(np.float64)
    pp = np.r_[0, np.cumsum(all_at)].astype(np.float64)
    n_pos = float(t.sum())
    n = float(t.size)
    fp = pp - tp
    fn = n_pos - tp
    tn = n - n_pos - fp
    if metric == "mcc":
        values = np.array([_mcc_formula(*c) for c in zip(tp, fp, fn, tn, strict=True)])
    else:
        den = 2 * tp + fp + fn
        values = np.divide(2 * tp, den, out=np.zeros_like(den), where=den > 0)
    j = int(np.argmax(values))
    best = s[lv.order[lv.starts[j - 1]]] if j else None
    thr = math.inf if best is None else (int(best) if s.dtype.kind in "iu" else float(best))
    return ThresholdResult(threshold=thr, value=float(values[j]), metric=metric)


def select_thresholds(
    y_true: ArrayLike,
    y_score: ArrayLike,
    labels: Sequence[str] | NDArray[Any] | None = None,
    *,
    metric: ThresholdMetric = "mcc",
    nan_policy: NanPolicy = "omit",
) -> dict[str, ThresholdResult]:
    """``best_threshold`` per column of ``(N, K)`` validation data (NaN rows omitted per label).

    A label with a single class on the validation data raises ``ValueError`` naming it: a
    threshold fitted there would be meaningless.
    """
    t, s, names = _as_2d_pair(y_true, y_score, labels)
    _check_nan_policy(nan_policy, t)
    out: dict[str, ThresholdResult] = {}
    for k, name in enumerate(names):
        keep = ~np.isnan(t[:, k])
        tk = t[keep, k]
        if tk.size == 0 or tk.min() == tk.max():
            raise ValueError(f"select_thresholds: label {name!r} has a single class on this data")
        out[name] = best_threshold(tk, s[keep, k], metric)
    return out


def evaluate_thresholds(
    y_true: ArrayLike,
    y_score: ArrayLike,
    thresholds: Mapping[str, float | ThresholdResult],
    labels: Sequence[str] | NDArray[Any] | None = None,
    *,
    nan_policy: NanPolicy = "omit",
) -> dict[str, dict[str, float]]:
    """MCC and F1 per label of ``(N, K)`` test scores binarised with fitted thresholds.

    Returns ``{label: {"mcc": ..., "f1": ..., "threshold": ..., "n": rows used}}``;
    ``thresholds`` must hold every label, each a real number or a ``ThresholdResult``
    (None or NaN raise, naming the label).
    """
    t, s, names = _as_2d_pair(y_true, y_score, labels)
    _check_nan_policy(nan_policy, t)
    missing = [n for n in names if n not in thresholds]
    if missing:
        raise ValueError(f"thresholds: no threshold for labels {missing}")
    out: dict[str, dict[str, float]] = {}
    for k, name in enumerate(names):
        thr = _check_threshold(thresholds[name], f"thresholds[{name!r}]")
        keep = ~np.isnan(t[:, k])
        pred = binarize(s[keep, k], thr)
        out[name] = {
            "mcc": mcc(t[keep, k], pred),
            "f1": f1(t[keep, k], pred),
            "threshold": thr,
            "n": float(keep.sum()),
        }
    return out
