"""Classification metrics for zero-shot evaluation, in numpy only, equal to scikit-learn's to 1e-12.

The multi-label functions take ``(N, K)`` arrays, one row per study, where NaN marks an
unmentioned label. Inputs (arrays or torch tensors), the NaN policy, ranking precision and the
agreement with scikit-learn: docs/zeroshot.md.
"""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from relaxclip._checks import check_choice, check_int, check_real, check_type, describe, format_rows
from relaxclip.sentences import check_names

NanPolicy = Literal["omit", "raise"]
ThresholdMetric = Literal["mcc", "f1"]
Labels = Sequence[str] | NDArray[Any] | None

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

#: float64 represents every integer up to this magnitude exactly.
_EXACT_INT = 2**53


def _array(y: Any, name: str, *, scalar: bool = False) -> np.ndarray:
    """``numpy.asarray(y)`` (a scalar only if ``scalar``); a tensor detached, dense, floats float64."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(y, torch.Tensor):
        t = y.detach()
        if t.is_complex():
            raise TypeError(f"{name} must be a real tensor, got dtype {t.dtype}")
        if t.device.type == "meta":
            raise ValueError(f"{name} must hold values, got a tensor on the meta device")
        t = t.cpu()
        t = t.to_dense() if t.layout != torch.strided else t
        arr = np.asarray((t.double() if t.is_floating_point() else t).numpy())
    else:
        try:
            arr = np.asarray(y)
        except ValueError as exc:  # ragged nested sequences
            raise ValueError(f"{name} must be a rectangular array, got {describe(y)}") from exc
    if arr.ndim == 0 and not scalar:
        raise TypeError(f"{name} must be an array, got {describe(y)}")
    return arr


def _numeric(arr: np.ndarray, name: str, what: str) -> np.ndarray:
    """``arr`` if of a bool, int or float dtype, else ``TypeError`` (``name must be what``)."""
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be {what}, got dtype {arr.dtype}")
    return arr


def _labels(arr: np.ndarray, name: str, *, allow_nan: bool) -> NDArray[np.float64]:
    """0/1 (and, with ``allow_nan``, NaN) labels as float64; CheXpert's -1 gets a hint."""
    what = "numeric 0/1/NaN labels" if allow_nan else "numeric 0/1 labels"
    out = _numeric(arr, name, what).astype(np.float64)
    nan = np.isnan(out)
    if nan.any() and not allow_nan:
        raise ValueError(
            f"{name} must hold 0 or 1, got {int(nan.sum())} NaN label(s); unmentioned labels "
            "are accepted only by the multi-label functions with nan_policy='omit'"
        )
    bad = np.unique(arr[~nan & (arr != 0) & (arr != 1)])[:5].tolist()
    if bad:
        hint = (
            " (map CheXpert's uncertain -1 with an uncertainty policy first)" if -1 in bad else ""
        )
        raise ValueError(f"{name} must hold 0 or 1, got {bad}{hint}")
    return out


def _scores(arr: np.ndarray, name: str) -> NDArray[Any]:
    """Finite scores as float64, but integers beyond 2**53 and long doubles keep their dtype."""
    _numeric(arr, name, "real numeric scores")
    if arr.dtype.kind in "iu" and arr.size:
        if int(arr.max()) > _EXACT_INT or int(arr.min()) < -_EXACT_INT:
            return arr
    out = arr if arr.dtype.kind == "f" and arr.dtype.itemsize > 8 else arr.astype(np.float64)
    finite = np.isfinite(out)
    if not finite.all():
        n_nan = int(np.isnan(out).sum())
        raise ValueError(
            f"{name} must be finite, got {n_nan} NaN and {int((~finite).sum()) - n_nan} inf "
            f"value(s) (first at index {np.argwhere(~finite)[0].tolist()})"
        )
    return out


def _vector(y: Any, name: str) -> np.ndarray:
    """``y`` as a non-empty 1-D array."""
    arr = _array(y, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must hold at least one sample, got an empty array")
    return arr


def _pair(y_true: Any, other: Any, name: str, *, scores: bool) -> tuple[np.ndarray, np.ndarray]:
    """Validated 1-D ``y_true`` and ``other`` (scores, or 0/1 predictions) of one length."""
    t = _labels(_vector(y_true, "y_true"), "y_true", allow_nan=False)
    o = _vector(other, name)
    o = _scores(o, name) if scores else _labels(o, name, allow_nan=False)
    if t.shape != o.shape:
        raise ValueError(f"y_true and {name} must have the same length, got {t.size} and {o.size}")
    return t, o


def _both_classes(t: np.ndarray, func: str, why: str) -> None:
    """``ValueError`` unless the 0/1 labels ``t`` hold both classes."""
    n_pos = int(t.sum())
    if n_pos in (0, t.size):
        raise ValueError(
            f"{func}: y_true must hold both classes, got only one class ({t.size} rows, "
            f"{n_pos} positive); {why}"
        )


def _label_names(labels: Any, k: int) -> tuple[str, ...]:
    """K unique str names from ``labels`` (a sequence or 1-D array), default ``label_<k>``."""
    if labels is None:
        return tuple(f"label_{i}" for i in range(k))
    if isinstance(labels, np.ndarray):
        if labels.ndim != 1:
            raise ValueError(f"labels must be a 1-D array of K names, got shape {labels.shape}")
        labels = labels.tolist()  # numpy str_ -> str
    check_type("labels", labels, Sequence, "a sequence of K names")
    names = check_names("labels", labels, "a sequence of K str names")
    if len(names) != k:
        raise ValueError(f"labels must be {k} names (one per column), got {len(names)}")
    if len(set(names)) != k:
        raise ValueError(f"labels must be unique names, got {list(names)}")
    return names


def _matrix(
    y_true: ArrayLike, y_score: ArrayLike, labels: Any, nan_policy: str
) -> tuple[NDArray[np.float64], NDArray[Any], tuple[str, ...]]:
    """Validated ``(N, K)`` labels and scores, the K label names; checks ``nan_policy``."""
    check_choice("nan_policy", nan_policy, ("omit", "raise"))
    t, s = _array(y_true, "y_true"), _array(y_score, "y_score")
    if t.ndim != 2:
        raise ValueError(f"y_true must have shape (N, K), got {t.shape} (reshape 1-D to (N, 1))")
    if s.shape != t.shape:
        raise ValueError(f"y_score must have the shape of y_true {t.shape}, got {s.shape}")
    if t.shape[1] == 0:
        raise ValueError(f"y_true must hold at least one label column, got shape {t.shape}")
    if t.shape[0] == 0:
        raise ValueError(f"y_true must hold at least one row, got shape {t.shape}")
    tf = _labels(t, "y_true", allow_nan=True)
    if nan_policy == "raise" and np.isnan(tf).any():
        raise ValueError(
            f"y_true must hold 0 or 1 with nan_policy='raise', got {int(np.isnan(tf).sum())} NaN"
        )
    return tf, _scores(s, "y_score"), _label_names(labels, t.shape[1])


def _columns(
    t: NDArray[np.float64], s: NDArray[Any], names: tuple[str, ...]
) -> Iterator[tuple[str, NDArray[np.float64], NDArray[Any]]]:
    """Per label: its name, and the labels and scores of its non-NaN rows."""
    for k, name in enumerate(names):
        keep = ~np.isnan(t[:, k])
        yield name, t[keep, k], s[keep, k]


def _auc_from_counts(pos: np.ndarray, neg: np.ndarray) -> NDArray[np.float64]:
    """AUROC from int64 ``(..., G)`` class counts per ascending score level: the exact integer
    ``2U = sum_g pos_g (2 neg_below_g + neg_g)`` over ``2 n_pos n_neg``; NaN for one class."""
    neg_below = np.cumsum(neg, axis=-1) - neg
    twice_u = np.sum(pos * (2 * neg_below + neg), axis=-1)
    denom = 2 * pos.sum(axis=-1) * neg.sum(axis=-1)
    out = np.full(np.shape(denom), np.nan, dtype=np.float64)
    np.divide(twice_u, denom, out=out, where=denom > 0)
    return out


@dataclass(frozen=True)
class _Levels:
    """Rows sorted by score and the start of each distinct-score run."""

    order: NDArray[np.intp]
    starts: NDArray[np.intp]

    @classmethod
    def of(cls, score: NDArray[Any], *, descending: bool = False) -> _Levels:
        """The levels of ``score``, ascending unless ``descending``."""
        order = np.argsort(score, kind="stable")  # not argsort(-s): -s wraps for uint64
        order = order[::-1] if descending else order
        s = score[order]
        return cls(order=order, starts=np.flatnonzero(np.r_[True, s[1:] != s[:-1]]))

    def counts(self, indicator: NDArray[np.int64]) -> NDArray[np.int64]:
        """Sum ``indicator[..., rows]`` within each score level (last axis)."""
        return np.add.reduceat(indicator[..., self.order], self.starts, axis=-1)


def auroc(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """Area under the ROC curve, ``U / (n_pos·n_neg)`` (Mann–Whitney ``U``, ties count 1/2).

    Args:
        y_true: ``(N,)`` 0/1 labels with both classes.
        y_score: ``(N,)`` finite scores, higher meaning more positive.

    Raises:
        TypeError: non-numeric input.
        ValueError: a wrong shape, no rows, a single class, NaN or non-0/1 labels, NaN/inf
            scores.

    Example:
        >>> auroc([0, 1, 1], [0.2, 0.2, 0.9])
        0.75
    """
    t, s = _pair(y_true, y_score, "y_score", scores=True)
    _both_classes(t, "auroc", "AUROC is undefined")
    lv = _Levels.of(s)
    pos = t.astype(np.int64)
    return float(_auc_from_counts(lv.counts(pos), lv.counts(1 - pos)))


def roc_curve(
    y_true: ArrayLike, y_score: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """ROC curve points ``(fpr, tpr)``, one per distinct score plus the origin.

    ``y_true``, ``y_score`` and the errors are as in :func:`auroc`; the points go by decreasing
    threshold, as scikit-learn's ``roc_curve`` without ``drop_intermediate``.

    Example:
        >>> roc_curve([0, 1], [0.1, 0.9])[1].tolist()
        [0.0, 1.0, 1.0]
    """
    t, s = _pair(y_true, y_score, "y_score", scores=True)
    _both_classes(t, "roc_curve", "the ROC curve is undefined")
    lv = _Levels.of(s, descending=True)
    tps = np.r_[0, np.cumsum(lv.counts(t))]
    fps = np.r_[0, np.cumsum(lv.counts(1 - t))]
    return fps / fps[-1], tps / tps[-1]


@dataclass(frozen=True)
class AUROCResult:
    """Per-label and macro AUROC; every mapping is keyed by label, in column order.

    Attributes:
        macro: unweighted mean over the labels not skipped (NaN when all were).
        per_label: AUROC per label, NaN for skipped labels.
        skipped: why a label was skipped (a single class after NaN exclusion).
        n_used, n_positive, n_excluded: rows used, positives among them, NaN rows excluded.
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
        lines.extend(f"skipped {name}: {why}" for name, why in self.skipped.items())
        return "\n".join(lines)


def macro_auroc(
    y_true: ArrayLike, y_score: ArrayLike, labels: Labels = None, *, nan_policy: NanPolicy = "omit"
) -> AUROCResult:
    """Per-label AUROC of ``(N, K)`` scores and their unweighted (macro) mean.

    Args:
        y_true: ``(N, K)`` 0/1, NaN for an unmentioned label.
        y_score: ``(N, K)`` finite scores.
        labels: K unique str names (default ``label_0``, ...).
        nan_policy: ``"omit"`` drops NaN rows per label (counted), ``"raise"`` refuses NaN.

    Returns:
        An :class:`AUROCResult`; a label left with a single class is skipped, never dropped.

    Raises:
        TypeError: non-numeric input, non-str labels. ValueError: bad shapes or values.

    Example:
        >>> macro_auroc([[0, 1], [1, 0]], [[0.1, 0.9], [0.8, 0.2]], ["a", "b"]).macro
        1.0
    """
    t, s, names = _matrix(y_true, y_score, labels, nan_policy)
    out = AUROCResult(math.nan, {})
    for name, tk, sk in _columns(t, s, names):
        pos, excluded = int(tk.sum()), t.shape[0] - tk.size
        out.n_used[name], out.n_positive[name], out.n_excluded[name] = tk.size, pos, excluded
        out.per_label[name] = math.nan if pos in (0, tk.size) else auroc(tk, sk)
        if pos in (0, tk.size):
            out.skipped[name] = (
                f"single class after excluding {excluded} NaN row(s): {pos} positive of {tk.size}"
            )
    used = [out.per_label[n] for n in out.labels_used]
    return replace(out, macro=float(np.mean(used)) if used else math.nan)


@dataclass(frozen=True)
class ConfidenceInterval:
    """Bootstrap mean and percentile interval ``[lower, upper]``."""

    mean: float
    lower: float
    upper: float


@dataclass(frozen=True)
class BootstrapAUROCResult:
    """Bootstrap of per-label and macro AUROC.

    Attributes:
        point: :func:`macro_auroc` on the full data.
        per_label, macro: bootstrap mean and ``confidence`` percentile interval (linear
            ``numpy.percentile``, as the pandas ``quantile`` CheXzero uses).
        samples: ``(B, K)`` replicate AUROCs, NaN where a replicate had a single class.
        macro_samples: ``(B,)``, NaN when any non-skipped label was.
        n_degenerate: per label (and ``"macro"``), the NaN replicates.
        n_bootstrap, seed, confidence: the arguments used.
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


def _bootstrap_args(n_bootstrap: Any, seed: Any, confidence: Any) -> tuple[int, int, float]:
    """Checked ``(n_bootstrap >= 1, seed >= 0, confidence in (0, 1))``."""
    return (
        check_int("n_bootstrap", n_bootstrap, minimum=1),
        check_int("seed", seed, minimum=0),
        check_real("confidence", confidence, low=0.0, high=1.0, low_open=True, high_open=True),
    )


def bootstrap_indices(
    n_units: int, n_bootstrap: int, seed: int, *, start: int = 0, stop: int | None = None
) -> NDArray[np.int64]:
    """The resampling indices of :func:`bootstrap_auroc`, reproducible slice by slice.

    Replicate ``b`` draws ``n_units`` indices with replacement from
    ``numpy.random.default_rng(SeedSequence(seed).spawn(n_bootstrap)[b])``.

    Args:
        n_units, n_bootstrap: rows (or study groups) to resample and total replicates, >= 1.
        seed: an int >= 0.
        start, stop: the replicates ``[start, stop)`` to return (default all).

    Returns:
        int64 ``(stop - start, n_units)``.

    Raises:
        TypeError: a non-integer argument. ValueError: one out of range.

    Example:
        >>> bootstrap_indices(5, 10, 0, start=2, stop=4).shape
        (2, 5)
    """
    n_units = check_int("n_units", n_units, minimum=1)
    n_bootstrap, seed, _ = _bootstrap_args(n_bootstrap, seed, 0.5)
    start = check_int("start", start, minimum=0, maximum=n_bootstrap)
    stop = (
        n_bootstrap if stop is None else check_int("stop", stop, minimum=start, maximum=n_bootstrap)
    )
    children = np.random.SeedSequence(seed).spawn(n_bootstrap)[start:stop]
    out = np.empty((stop - start, n_units), dtype=np.int64)
    for i, child in enumerate(children):
        out[i] = np.random.default_rng(child).integers(0, n_units, size=n_units)
    return out


def _study_ids(groups: Any, name: str, *, scalar: bool = False) -> np.ndarray:
    """``groups`` as an array; TypeError for text ids (str, bytes) mixed with ids of another
    type (numpy makes 1 and b'1' into '1')."""
    g = _array(groups, name, scalar=scalar)
    if g.dtype.kind in "US" and not isinstance(groups, np.ndarray):
        values = np.asarray(groups, dtype=object).ravel().tolist()
        kinds = {"str" if isinstance(v, str) else type(v).__name__ for v in values}
        if len(kinds) > 1:
            first, *other = sorted(kinds, key=lambda k: (k != "str", k))
            raise TypeError(f"{name} must be study ids of one type, got {first} mixed with {other}")
    return g


def _units(groups: ArrayLike | None, n: int) -> tuple[NDArray[np.intp], int]:
    """The resampling unit of each row (its study group) and the number of units."""
    if groups is None:
        return np.arange(n), n
    g = _study_ids(groups, "groups")
    if g.shape != (n,):
        raise ValueError(f"groups must have shape ({n},) (one study id per row), got {g.shape}")
    values = g.tolist() if g.dtype.kind == "f" or g.dtype == object else []
    bad = [i for i, v in enumerate(values) if v is None or (isinstance(v, float) and v != v)]
    if bad:  # NaN / None would merge unrelated rows
        raise ValueError(
            f"groups must hold a study id for every row, got NaN or None in rows "
            f"{format_rows(bad, n)}"
        )
    try:
        unit_of_row = np.unique(g, return_inverse=True)[1].reshape(-1)
    except TypeError as exc:
        raise TypeError(
            f"groups must be study ids of one sortable type, got {describe(g)}"
        ) from exc
    return unit_of_row, int(unit_of_row.max()) + 1


def _replicates(
    t: NDArray[np.float64],
    s: NDArray[Any],
    active: list[int],
    units: tuple[NDArray[np.intp], int],
    n_bootstrap: int,
    seed: int,
) -> NDArray[np.float64]:
    """``(n_bootstrap, K)`` replicate AUROCs of the ``active`` columns (others NaN), weighting
    each row by how often its unit was drawn, in chunks of ~2M weights."""
    unit_of_row, n_units = units
    n = t.shape[0]
    pos, neg = (t == 1.0).astype(np.int64), (t == 0.0).astype(np.int64)  # NaN: neither
    levels = {k: _Levels.of(s[:, k]) for k in active}
    samples = np.full((n_bootstrap, t.shape[1]), np.nan, dtype=np.float64)
    chunk = max(1, 2_000_000 // max(n, n_units))
    for start in range(0, n_bootstrap, chunk):
        stop = min(n_bootstrap, start + chunk)
        idx = bootstrap_indices(n_units, n_bootstrap, seed, start=start, stop=stop)
        offsets = np.arange(stop - start)[:, None] * n_units
        unit_w = np.bincount((idx + offsets).ravel(), minlength=(stop - start) * n_units)
        row_w = unit_w.reshape(stop - start, n_units)[:, unit_of_row]  # (c, N) int64
        for k, lv in levels.items():
            samples[start:stop, k] = _auc_from_counts(
                lv.counts(row_w * pos[:, k]), lv.counts(row_w * neg[:, k])
            )
    return samples


def _interval(values: NDArray[np.float64], confidence: float) -> ConfidenceInterval:
    """Mean and percentile interval of the non-NaN ``values`` (NaN for none)."""
    v = values[~np.isnan(values)]
    if v.size == 0:
        return ConfidenceInterval(math.nan, math.nan, math.nan)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.percentile(v, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return ConfidenceInterval(float(v.mean()), float(lo), float(hi))


def bootstrap_auroc(
    y_true: ArrayLike,
    y_score: ArrayLike,
    labels: Labels = None,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    groups: ArrayLike | None = None,
    nan_policy: NanPolicy = "omit",
) -> BootstrapAUROCResult:
    """Bootstrap per-label and macro AUROC, resampling studies (rows), never labels.

    Args:
        y_true, y_score, labels, nan_policy: as :func:`macro_auroc`.
        n_bootstrap, seed: replicates (>= 1) and an int >= 0, as :func:`bootstrap_indices`.
        confidence: interval mass in (0, 1).
        groups: ``(N,)`` study ids; whole groups of rows are resampled together.

    Returns:
        A :class:`BootstrapAUROCResult`.

    Raises:
        TypeError: a wrong type.
        ValueError: as :func:`macro_auroc`, a value out of range, a missing study id.

    Example:
        >>> Y, S = [[0], [1], [0], [1]], [[0.1], [0.9], [0.4], [0.3]]
        >>> bootstrap_auroc(Y, S, n_bootstrap=200, seed=0).macro.lower <= 0.75
        True
    """
    t, s, names = _matrix(y_true, y_score, labels, nan_policy)
    n_bootstrap, seed, confidence = _bootstrap_args(n_bootstrap, seed, confidence)
    units = _units(groups, t.shape[0])
    point = macro_auroc(t, s, names)
    active = [k for k, name in enumerate(names) if name not in point.skipped]
    samples = _replicates(t, s, active, units, n_bootstrap, seed)
    macro_samples = samples[:, active].mean(axis=1) if active else np.full(n_bootstrap, np.nan)
    n_degenerate = {name: int(np.isnan(samples[:, k]).sum()) for k, name in enumerate(names)}
    n_degenerate["macro"] = int(np.isnan(macro_samples).sum())
    per_label = {n: _interval(samples[:, k], confidence) for k, n in enumerate(names)}
    macro = _interval(macro_samples, confidence)
    return BootstrapAUROCResult(
        point, per_label, macro, samples, macro_samples, n_degenerate, n_bootstrap, seed, confidence
    )


def _confusion(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[int, int, int, int]:
    """``(tp, fp, fn, tn)`` of checked 1-D 0/1 labels and predictions."""
    t, p = _pair(y_true, y_pred, "y_pred", scores=False)
    tb, pb = t == 1.0, p == 1.0
    tp = int(np.count_nonzero(tb & pb))
    fp = int(np.count_nonzero(~tb & pb))
    fn = int(np.count_nonzero(tb & ~pb))
    return tp, fp, fn, int(t.size - tp - fp - fn)


def _mcc_formula(tp: int, fp: int, fn: int, tn: int) -> float:
    """:func:`mcc` of the confusion counts, in exact integers."""
    den = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    return 0.0 if den == 0 else float((tp * tn - fp * fn) / math.sqrt(den))


def _exact_key(metric: str, tp: int, fp: int, fn: int, tn: int) -> Fraction:
    """A rational that orders the counts as their F1 or MCC does (``mcc·|mcc|``), exactly."""
    if metric == "f1":
        return Fraction(2 * tp, 2 * tp + fp + fn)
    num, den = tp * tn - fp * fn, (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    return Fraction(num * abs(num), den) if den else Fraction(0)


def mcc(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Matthews correlation ``(tp·tn − fp·fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn))`` in [-1, 1].

    0 when the denominator is 0 (as scikit-learn's ``matthews_corrcoef``); exact integers.

    Args:
        y_true: ``(N,)`` 0/1 labels, N >= 1.
        y_pred: ``(N,)`` 0/1 predictions (e.g. :func:`binarize`).

    Raises:
        TypeError: non-numeric input. ValueError: empty, lengths differ, non-0/1 values.

    Example:
        >>> mcc([0, 1, 1, 0], [0, 1, 0, 0])
        0.5773502691896258
    """
    return _mcc_formula(*_confusion(y_true, y_pred))


def f1(y_true: ArrayLike, y_pred: ArrayLike, *, zero_division: float = 0.0) -> float:
    """F1 of the positive class, ``2·tp / (2·tp + fp + fn)`` in [0, 1].

    Args:
        y_true, y_pred: as :func:`mcc`.
        zero_division: 0, 1 or NaN, returned without true or predicted positives (as
            scikit-learn's ``f1_score(zero_division=...)``, whose ``"warn"`` means 0).

    Raises:
        TypeError, ValueError: as :func:`mcc`, and for a ``zero_division`` not 0, 1 or NaN.

    Example:
        >>> f1([0, 1, 1], [0, 1, 0])
        0.6666666666666666
    """
    check_type("zero_division", zero_division, numbers.Real, "0, 1 or NaN", exclude=bool)
    if not (zero_division in (0, 1) or math.isnan(zero_division)):
        raise ValueError(f"zero_division must be 0, 1 or NaN, got {zero_division!r}")
    tp, fp, fn, _ = _confusion(y_true, y_pred)
    den = 2 * tp + fp + fn
    return float(zero_division) if den == 0 else float(2 * tp / den)


@dataclass(frozen=True)
class ThresholdResult:
    """A decision threshold (predict 1 iff ``score >= threshold``) and its metric value."""

    threshold: float
    value: float
    metric: str


def _threshold(value: Any, name: str) -> Any:
    """A real threshold (±inf allowed, NaN not); ints and long doubles are kept exact."""
    if isinstance(value, ThresholdResult):
        value = value.threshold
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, np.floating) and value.dtype.itemsize > 8 and not np.isnan(value):
        return value
    return check_real(name, value, finite=False)


def binarize(y_score: ArrayLike, threshold: float | ThresholdResult) -> NDArray[np.int64]:
    """0/1 predictions ``score >= threshold``, int64 of the shape of ``y_score``.

    Args:
        y_score: finite scores of any shape; integer scores and int thresholds are compared
            exactly.
        threshold: a real number (±inf allowed) or a :class:`ThresholdResult`.

    Raises:
        TypeError: a threshold that is not a real number. ValueError: NaN.

    Example:
        >>> binarize([0.2, 0.5, 0.9], 0.5).tolist()
        [0, 1, 1]
    """
    thr = _threshold(threshold, "threshold")
    s = _scores(_array(y_score, "y_score", scalar=True), "y_score")
    if s.dtype.kind == "f" and isinstance(thr, int) and abs(thr) > _EXACT_INT:
        # numpy would round the int to a float: compare p/q >= thr exactly instead
        ratios = [x.as_integer_ratio() for x in s.ravel().tolist()]
        return np.array([p >= thr * q for p, q in ratios], dtype=np.int64).reshape(s.shape)
    if s.dtype.kind in "iu" and isinstance(thr, float):
        if math.isinf(thr):
            return np.full(s.shape, int(thr < 0), dtype=np.int64)
        thr = math.ceil(thr)  # exact: an integer s >= t  <=>  s >= ceil(t)
    return (s >= thr).astype(np.int64)


def best_threshold(
    y_true: ArrayLike, y_score: ArrayLike, metric: ThresholdMetric = "mcc"
) -> ThresholdResult:
    """The threshold maximising MCC or F1 of ``binarize(y_score, threshold)`` (fit it on a
    validation split), among every distinct score and ``+inf``; ties go to the largest.

    Ties are exact: values are compared as exact rationals (``mcc·|mcc|`` for MCC), so two
    thresholds of the same MCC tie even where their floats differ by an ulp.

    ``y_true``, ``y_score`` and their errors are as in :func:`auroc`; ``metric`` is ``"mcc"`` or
    ``"f1"`` (TypeError or ValueError otherwise). Returns a :class:`ThresholdResult` whose
    threshold is an exact score value.

    Example:
        >>> best_threshold([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]).threshold
        0.8
    """
    check_choice("metric", metric, ("mcc", "f1"))
    t, s = _pair(y_true, y_score, "y_score", scores=True)
    _both_classes(
        t, "best_threshold", "a threshold fitted on it is meaningless (MCC 0, F1 constant)"
    )
    lv = _Levels.of(s, descending=True)
    # candidate j (0 = +inf, then each level descending) predicts the first j levels positive
    tp = np.r_[0, np.cumsum(lv.counts(t.astype(np.int64)))]
    fp = np.r_[0, np.cumsum(lv.counts(np.ones(t.size, dtype=np.int64)))] - tp
    fn = int(t.sum()) - tp
    tn = t.size - tp - fp - fn
    cells = list(zip(tp.tolist(), fp.tolist(), fn.tolist(), tn.tolist(), strict=True))
    if metric == "mcc":
        values = np.array([_mcc_formula(*c) for c in cells])
    else:
        values = 2 * tp / (2 * tp + fp + fn)  # never 0/0: y_true has positives
    # the first exact maximum (the largest threshold) among values near the float maximum
    near = np.flatnonzero(values >= values.max() - 1e-9).tolist()
    j = max(near, key=lambda i: _exact_key(metric, *cells[i]))
    thr = s[lv.order[lv.starts[j - 1]]].item() if j else math.inf
    return ThresholdResult(threshold=thr, value=float(values[j]), metric=metric)


def select_thresholds(
    y_true: ArrayLike,
    y_score: ArrayLike,
    labels: Labels = None,
    *,
    metric: ThresholdMetric = "mcc",
    nan_policy: NanPolicy = "omit",
) -> dict[str, ThresholdResult]:
    """:func:`best_threshold` per column of ``(N, K)`` validation data: label → result.

    The arguments and errors are as in :func:`macro_auroc` and :func:`best_threshold`; a label
    with a single class raises ``ValueError``.

    Example:
        >>> select_thresholds([[0], [1]], [[0.2], [0.7]], ["Edema"])["Edema"].threshold
        0.7
    """
    t, s, names = _matrix(y_true, y_score, labels, nan_policy)
    out: dict[str, ThresholdResult] = {}
    for name, tk, sk in _columns(t, s, names):
        if tk.size == 0 or tk.min() == tk.max():
            raise ValueError(f"select_thresholds: label {name!r} has a single class on this data")
        out[name] = best_threshold(tk, sk, metric)
    return out


def evaluate_thresholds(
    y_true: ArrayLike,
    y_score: ArrayLike,
    thresholds: Mapping[str, float | ThresholdResult],
    labels: Labels = None,
    *,
    nan_policy: NanPolicy = "omit",
) -> dict[str, dict[str, float]]:
    """MCC and F1 per label of ``(N, K)`` test scores binarised with fitted thresholds.

    Args:
        y_true, y_score, labels, nan_policy: as :func:`macro_auroc`.
        thresholds: label → a real threshold or a :class:`ThresholdResult`, for every label.

    Returns:
        ``{label: {"mcc": ..., "f1": ..., "threshold": ..., "n": rows used}}``.

    Raises:
        TypeError: ``thresholds`` not a mapping, or one not a real number (naming it).
        ValueError: as :func:`macro_auroc`, a label without threshold or NaN in every row, a
            NaN threshold.

    Example:
        >>> label_a = evaluate_thresholds([[0], [1]], [[0.2], [0.7]], {"a": 0.5}, ["a"])["a"]
        >>> label_a["mcc"]
        1.0
    """
    t, s, names = _matrix(y_true, y_score, labels, nan_policy)
    check_type("thresholds", thresholds, Mapping, "a mapping label -> threshold")
    missing = [n for n in names if n not in thresholds]
    if missing:
        raise ValueError(f"thresholds must hold every label, got no threshold for labels {missing}")
    out: dict[str, dict[str, float]] = {}
    for name, tk, sk in _columns(t, s, names):
        if tk.size == 0:
            raise ValueError(
                f"y_true must hold a 0/1 value for label {name!r} in at least one row, got NaN "
                f"in all {t.shape[0]} rows"
            )
        thr = _threshold(thresholds[name], f"thresholds[{name!r}]")
        pred = binarize(sk, thr)
        out[name] = {
            "mcc": mcc(tk, pred),
            "f1": f1(tk, pred),
            "threshold": thr,
            "n": float(tk.size),
        }
    return out
