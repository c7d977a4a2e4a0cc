"""Reporting of the demo: the printed table and conclusion, the plots, and the output files.

Everything here reads the results.json form of the results (a dict of plain JSON values, with
``None`` where a number is undefined), so a saved results.json can be re-rendered.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from relaxclip.demo.arms import REFERENCE
from relaxclip.demo.results import dumps_strict
from relaxclip.metrics import roc_curve

__all__ = [
    "OUTPUT_NAMES",
    "plot_curves",
    "conclusion",
    "earlier_outputs",
    "format_table",
    "prepare_out_dir",
    "write_outputs",
]

OUTPUT_NAMES: tuple[str, ...] = ("results.json", "roc.png", "summary.png", "curves.png")
"""Files a run writes to its output directory."""


def _num(value: float | None, spec: str) -> str:
    """``format(value, spec)``, or ``"n/a"`` (same width) when the value is undefined."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        width = "".join(c for c in spec.split(".")[0] if c.isdigit())
        return f"{'n/a':>{width or 0}}"
    return format(value, spec)


def _interval(ci: list[float | None], spec: str) -> str:
    return f"[{_num(ci[0], spec)}, {_num(ci[1], spec)}]"


def _macro_lines(results: Mapping[str, Any]) -> list[str]:
    n_seeds = len(results["seeds"])
    lines = [
        f"Zero-shot macro AUROC on the test split (n={results['benchmark']['n']['test']}, "
        f"{n_seeds} seed(s); 95% CI: bootstrap over test studies of the seed mean)",
        f"{'arm':<32} {'mean ± std':>15}  {'95% CI':>15}  {'Δ vs (a) [95% CI]':>26}",
    ]
    for key, arm in results["arms"].items():
        m, d = arm["macro_auroc"], arm["delta_vs_a"]
        delta = (
            "—" if key == REFERENCE else f"{_num(d['mean'], '+.4f')} {_interval(d['ci95'], '+.4f')}"
        )
        lines.append(
            f"{arm['name']:<32} {_num(m['mean'], '.4f')} ± {_num(m['std'], '.4f')}  "
            f"{_interval(m['ci95'], '.4f')}  {delta:>26}"
        )
    return lines


def _diagnostic_lines(results: Mapping[str, Any]) -> list[str]:
    lines = [
        "Fine-tuning diagnostics (mean over steps and seeds): positive-pair cosine, share of "
        "positive pairs above the threshold (relaxed), best validation step"
    ]
    for arm in results["arms"].values():
        st = arm["train_stats"]
        if not st:
            continue
        cos = float(np.mean([x["positive_cosine"] for x in st]))
        rel = float(np.mean([x["relaxed_fraction"] for x in st]))
        theta = _relaxation_label(arm)
        lines.append(
            f"{arm['name']:<32} cos {cos:.3f}  relaxed {100 * rel:5.1f}% (theta {theta})  "
            f"best step {arm['best_step']}"
        )
    return lines


def _per_label_lines(results: Mapping[str, Any]) -> list[str]:
    findings = results["benchmark"]["findings"]
    lines = [
        "Per-label test AUROC (mean over seeds)",
        f"{'arm':<32} " + " ".join(f"{f[:11]:>11}" for f in findings),
    ]
    for arm in results["arms"].values():
        vals = " ".join(_num(arm["per_label_auroc"][f]["mean"], ">11.4f") for f in findings)
        lines.append(f"{arm['name']:<32} {vals}")
    return lines


def _relaxation_label(arm: Mapping[str, Any]) -> str:
    """``"0.8"`` (absolute θ), ``"q=0.7 -> 0.812"`` (θ calibrated at q, mean over seeds) or
    ``"none"``."""
    if arm.get("threshold_quantile") is not None:
        thetas = [t for t in arm.get("calibrated_threshold") or [] if t is not None]
        shown = f" -> {np.mean(thetas):.3f}" if thetas else ""
        return f"q={arm['threshold_quantile']:g}{shown}"
    return "none" if arm["threshold"] is None else f"{arm['threshold']:g}"


def _sweep_lines(sweep: Mapping[str, Any], arms: Mapping[str, Any]) -> list[str]:
    lines = [
        "Threshold sweep of arm (d): macro AUROC (mean over seeds); theta: absolute cosine, "
        "q=...: theta calibrated once at that quantile of the pre-trained model's positive "
        "cosines (the theta used: mean over seeds)",
        f"{'theta':>6} {'val':>8} {'test':>8}",
    ]
    chosen = sweep["chosen_on_validation"]
    chosen_key = chosen if isinstance(chosen, str) else f"{chosen:g}"
    quantiles = sweep.get("quantiles") or []
    keys = [(f"{th:g}", f"{th:>6.2f}") for th in sweep["thresholds"]]
    keys += [(f"q={q:g}", f"{'q=' + format(q, 'g'):>6}") for q in quantiles]
    for k, shown in keys:
        theta = ""
        if k.startswith("q=") and f"d@{k}" in arms:
            theta = f"  (theta {_relaxation_label(arms[f'd@{k}']).split('-> ')[-1]})"
        mark = "  <- chosen on validation" if k == chosen_key else ""
        lines.append(
            f"{shown} {_num(sweep['val_macro_auroc_mean'][k], '>8.4f')} "
            f"{_num(sweep['test_macro_auroc_mean'][k], '>8.4f')}{theta}{mark}"
        )
    return lines


def format_table(results: Mapping[str, Any]) -> str:
    """The printed results table (macro AUROC per arm, diagnostics, per-label means, sweep)."""
    parts = [_macro_lines(results), _diagnostic_lines(results), _per_label_lines(results)]
    if results.get("sweep"):
        parts.append(_sweep_lines(results["sweep"], results["arms"]))
    return "\n\n".join("\n".join(p) for p in parts)


def conclusion(results: Mapping[str, Any]) -> str:
    """One line: each fine-tuned arm (not the reference, not the sweep) against arm (a)."""
    arms = results["arms"]

    def word(arm: Mapping[str, Any]) -> str:
        lo, hi = arm["delta_vs_a"]["ci95"]
        if lo is not None and lo > 0:
            verdict = "higher"
        elif hi is not None and hi < 0:
            verdict = "lower"
        else:
            verdict = "not distinguishable"
        d = arm["delta_vs_a"]["mean"]
        return (
            f"{arm['name'].split(' ', 1)[0]} {_num(d, '+.4f')} "
            f"{_interval([lo, hi], '+.4f')} ({verdict})"
        )

    compared = [a for k, a in arms.items() if k != REFERENCE and a["fine_tuned"] and not a["sweep"]]
    n = len(results["seeds"])
    return (
        f"Conclusion (measured, {results['benchmark']['source']} benchmark, {n} seed(s), identical "
        f"budgets): macro AUROC vs plain CLIP fine-tuning (a) = "
        f"{_num(arms[REFERENCE]['macro_auroc']['mean'], '.4f')}: "
        + "; ".join(word(a) for a in compared)
        + "."
    )


# ----------------------------------------------------------------------------- files


def prepare_out_dir(out_dir: str | os.PathLike[str]) -> Path:
    """Create ``out_dir`` if needed and check that files can be written there (before any
    training); ``ValueError`` naming the path and the problem otherwise."""
    text = os.fspath(out_dir)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"out: the output directory must be a non-empty path, got {text!r}")
    out = Path(text)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: {out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(
            f"out: cannot create the directory {out} ({exc.strerror or exc})"
        ) from None
    try:
        with tempfile.NamedTemporaryFile(dir=out, prefix=".relaxclip-demo-probe-"):
            pass
    except OSError as exc:
        raise ValueError(f"out: cannot write to {out} ({exc.strerror or exc})") from None
    return out


def earlier_outputs(out: Path) -> list[str]:
    """Names of :data:`OUTPUT_NAMES` already in ``out`` (from an earlier run)."""
    return [name for name in OUTPUT_NAMES if (out / name).exists()]


def write_outputs(
    results: Mapping[str, Any],
    roc: Mapping[str, np.ndarray],
    out: Path,
    *,
    plots: bool,
    log: Callable[[str], None],
) -> None:
    """Write results.json (strict JSON) and, with ``plots`` and matplotlib, roc.png,
    summary.png and curves.png to ``out``.

    Atomic as a set: every file is first written to a temporary directory inside ``out``; only
    when all are complete are the outputs of an earlier run (:data:`OUTPUT_NAMES`) removed --
    including any this run does not write, so no stale plot is left beside a new results.json --
    and the new files renamed into place (results.json last).  An interruption before that
    leaves the earlier run's files untouched, and the temporary directory is always removed.
    """
    tmp = Path(tempfile.mkdtemp(prefix=".relaxclip-demo-", dir=out))
    try:
        written = [_write_text(tmp / "results.json", dumps_strict(results))]
        if plots:
            written += _write_plots(results, roc, tmp, log)
        for name in OUTPUT_NAMES:
            stale = out / name
            if (stale.exists() or stale.is_symlink()) and name not in {p.name for p in written}:
                stale.unlink()
                log(f"removed {stale} (from an earlier run; this run does not write it)")
        for path in sorted(written, key=lambda p: p.name == "results.json"):
            os.replace(path, out / path.name)
            log(f"wrote {out / path.name}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _write_plots(
    results: Mapping[str, Any], roc: Mapping[str, np.ndarray], out: Path, log: Callable[[str], None]
) -> list[Path]:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        log(
            "note: matplotlib is not installed, so roc.png, summary.png and curves.png were not "
            "written "
            "(pip install 'relaxclip[demo]')"
        )
        return []
    return [
        _plot_rocs(results, roc, out / "roc.png"),
        _plot_summary(results, out / "summary.png"),
        plot_curves([results], out / "curves.png"),
    ]


_COLORS = ("tab:blue", "tab:green", "tab:purple", "tab:red", "tab:brown", "tab:olive", "tab:cyan")


def _plot_rocs(results: Mapping[str, Any], roc: Mapping[str, np.ndarray], path: Path) -> Path:
    """Per-label ROC curves of the fine-tuned arms in ``roc`` (first seed; one panel per finding)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    findings = results["benchmark"]["findings"]
    keys = [k for k in roc if k != "y"]
    cols = min(4, len(findings))
    rows = math.ceil(len(findings) / cols)
    fig = Figure(figsize=(3.2 * cols, 3.2 * rows))
    FigureCanvasAgg(fig)
    for j, name in enumerate(findings):
        ax = fig.add_subplot(rows, cols, j + 1)
        ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8)
        y = roc["y"][:, j]
        for key, color in zip(keys, itertools.cycle(_COLORS)):  # every arm, colours reused
            if y.min() == y.max():
                continue
            fpr, tpr = roc_curve(y, roc[key][:, j])
            auc = results["arms"][key]["per_label_auroc"][name]["per_seed"][0]
            ax.plot(fpr, tpr, color=color, linewidth=1.0, label=f"({key}) {_num(auc, '.3f')}")
        ax.set_title(name, fontsize=10)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        if y.min() != y.max():
            ax.legend(loc="lower right", fontsize=7)
        if j % cols == 0:
            ax.set_ylabel("true positive rate")
        if j >= (rows - 1) * cols:
            ax.set_xlabel("false positive rate")
    fig.suptitle(
        f"Zero-shot ROC on the test split, seed {results['seeds'][0]}: fine-tuned arms "
        + ", ".join(f"({k})" for k in keys)
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _plot_summary(results: Mapping[str, Any], path: Path) -> Path:
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
        if lo is not None and hi is not None:  # a CI need not contain the mean: draw it as a bar
            ax.vlines([i], [lo], [hi], color="black", linewidth=1.2)
            ax.hlines([lo, hi], [i - 0.08] * 2, [i + 0.08] * 2, color="black", linewidth=1.2)
        if m["mean"] is not None:
            ax.plot([i], [m["mean"]], "o", color="black")
        seeds = [v for v in m["per_seed"] if v is not None]
        ax.scatter([i + 0.12] * len(seeds), seeds, s=12, color="tab:orange")
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


def plot_curves(runs: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Validation macro AUROC and mean positive cosine against the fine-tuning step: a row per
    results.json in ``runs`` (one benchmark each), a line per fine-tuned arm (seed mean) with a
    band of ± one standard deviation over seeds."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.6 * len(runs)))
    FigureCanvasAgg(fig)
    for row, results in enumerate(runs):
        for col, (field, label) in enumerate(_CURVE_PANELS):
            ax = fig.add_subplot(len(runs), 2, 2 * row + col + 1)
            for (key, arm), color in zip(_curve_arms(results), itertools.cycle(_COLORS)):
                steps = [p["step"] for p in arm["curve"][0]]
                values = np.array([[p[field] for p in c] for c in arm["curve"]], dtype=float)
                ax.plot(steps, values.mean(0), color=color, linewidth=1.2, label=f"({key})")
                mean, std = values.mean(0), values.std(0)
                ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.15)
            if col == 0 and "pretrained" in results["arms"]:
                start = np.mean(results["arms"]["pretrained"]["val_macro_auroc_best"])
                ax.axhline(start, color="grey", linestyle="--", linewidth=0.8, label="pre-trained")
            ax.set_xlabel("fine-tuning step")
            ax.set_ylabel(label)
            ax.set_title(f"{results['benchmark']['source']} benchmark", fontsize=9)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


_CURVE_PANELS = (
    ("val_macro_auroc", "validation macro AUROC"),
    ("positive_cosine", "mean positive-pair cosine"),
)


def _curve_arms(results: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """The arms of ``results`` that have a fine-tuning curve for every seed."""
    return [
        (key, arm) for key, arm in results["arms"].items() if arm.get("curve") and all(arm["curve"])
    ]
