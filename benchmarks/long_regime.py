"""The demo's long fine-tuning regime: choose its step budget from arm (a) alone.

    python benchmarks/long_regime.py select [--reports NLMCXR_reports.tgz --labels openi_gld_std14.csv]
    python benchmarks/long_regime.py report SYNTHETIC/results.json OPENI/results.json [--out curves.png]

Runs the pre-trained checkpoint and arm (a) (CLIP loss on whole reports) for seed 0 with a
constant learning rate after a 15-step warm-up for ``--max-steps`` steps, validating every
``--eval-every`` steps, and applies the rule of docs/long-regime.md: the budget is the first
evaluated step after the validation peak at which the mean of the last ``--window`` evaluations
is at least ``--drop`` below the peak. Prints the curve and the budget; ``--out`` saves them.

``report`` reads the results.json of ``relaxclip demo --long`` runs (one per benchmark) and prints,
per benchmark: each arm's test macro AUROC and Δ vs (a) at the kept (best-validation) checkpoint
and at the last step, with the demo's bootstrap CI (test studies resampled) and a paired t CI over
seeds; (d) vs (b) likewise over seeds; the validation peak, last value and drop; the relaxed
share over the validations. ``--out`` writes the curves of all runs in one figure.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from relaxclip.demo.arms import ARMS, REFERENCE
from relaxclip.demo.config import DemoConfig
from relaxclip.demo.runner import run_demo


def choose_budget(
    curve: dict[int, float], window: int, drop: float
) -> tuple[int | None, int, float]:
    """(budget or None when the curve never falls, peak step, peak value) of a validation curve."""
    steps = sorted(curve)
    peak_step = max(steps, key=lambda s: (curve[s], -s))
    peak = curve[peak_step]
    for i, step in enumerate(steps):
        if step <= peak_step or i + 1 < window:
            continue
        recent = [curve[s] for s in steps[i + 1 - window : i + 1]]
        if sum(recent) / window <= peak - drop:
            return step, peak_step, peak
    return None, peak_step, peak


def seed_ci(diffs: list[float]) -> tuple[float, float, float]:
    """Mean and 95 % t interval of paired per-seed differences (NaN bounds for one seed)."""
    d = np.asarray(diffs, dtype=float)
    if len(d) < 2:
        return float(d.mean()), math.nan, math.nan
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


def _fmt(mean: float, lo: float, hi: float) -> str:
    ci = "n/a (one seed)" if math.isnan(lo) else f"[{lo:+.4f}, {hi:+.4f}]"
    return f"{mean:+.4f} {ci}"


def load(path: Path) -> dict[str, Any]:
    """A results.json with curves and last-step scores, or SystemExit with one line."""
    why = "no curves or last-step scores"
    try:
        res = json.loads(path.read_text())
        if all("last_step" in a and "curve" in a for a in res["arms"].values()):
            return res  # type: ignore[no-any-return]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        why = type(exc).__name__
    raise SystemExit(
        f"long_regime.py report: {path}: not a results.json of `relaxclip demo` with curves "
        f"and last-step scores ({why})"
    )


def report(path: Path) -> dict[str, Any]:
    """Print the tables of one ``relaxclip demo --long`` run; return its results."""
    res = load(path)
    arms = res["arms"]
    n = len(res["seeds"])
    print(f"\n## {res['benchmark']['source']}: {n} seeds, {res['config']['finetune_steps']} steps")
    print(
        "| arm | kept: AUROC | kept: Δ vs (a), bootstrap | kept: Δ vs (a), seeds "
        "| last: AUROC | last: Δ vs (a), bootstrap | last: Δ vs (a), seeds |"
    )
    print("|---|---|---|---|---|---|---|")
    a_kept = arms["a"]["macro_auroc"]["per_seed"]
    a_last = arms["a"]["last_step"]["macro_auroc"]["per_seed"]
    for arm in arms.values():
        kept, last = arm["macro_auroc"], arm["last_step"]["macro_auroc"]
        dk, dl = arm["delta_vs_a"], arm["last_step"]["delta_vs_a"]
        sk = seed_ci([x - y for x, y in zip(kept["per_seed"], a_kept, strict=True)])
        sl = seed_ci([x - y for x, y in zip(last["per_seed"], a_last, strict=True)])
        print(
            f"| {arm['name']} | {kept['mean']:.4f} ± {kept['std']:.4f} "
            f"| {_fmt(dk['mean'], *dk['ci95'])} | {_fmt(*sk)} "
            f"| {last['mean']:.4f} ± {last['std']:.4f} | {_fmt(dl['mean'], *dl['ci95'])} "
            f"| {_fmt(*sl)} |"
        )
    for other in [k for k in ("d", "d@q=0.9") if k in arms]:
        for when in ("kept", "last"):
            get = (
                (lambda a: a["macro_auroc"])
                if when == "kept"
                else (lambda a: a["last_step"]["macro_auroc"])
            )
            diffs = [
                x - y
                for x, y in zip(
                    get(arms[other])["per_seed"], get(arms["b"])["per_seed"], strict=True
                )
            ]
            print(f"({other}) vs (b), {when}: {_fmt(*seed_ci(diffs))} (paired over seeds)")
    print(
        "| arm | val peak (mean of seeds' max) | val at last step | drop | best step (mean) "
        "| pos. cosine, first / last validation | relaxed share: mean / max / last | θ |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for key, arm in arms.items():
        if not arm["curve"] or not all(arm["curve"]):
            continue
        val = np.array([[p["val_macro_auroc"] for p in c] for c in arm["curve"]])
        cos = np.array([[p["positive_cosine"] for p in c] for c in arm["curve"]])
        rel = np.array([[p["relaxed_fraction"] for p in c] for c in arm["curve"]]).mean(0)
        theta = [c[0]["threshold"] for c in arm["curve"]]
        th = "none" if theta[0] is None else f"{np.mean(theta):.3f}"
        print(
            f"| ({key}) | {val.max(1).mean():.4f} | {val[:, -1].mean():.4f} "
            f"| {val.max(1).mean() - val[:, -1].mean():.4f} | {np.mean(arm['best_step']):.0f} "
            f"| {cos[:, 0].mean():.3f} / {cos[:, -1].mean():.3f} "
            f"| {100 * rel.mean():.2f} % / {100 * rel.max():.2f} % / {100 * rel[-1]:.2f} % | {th} |"
        )
    print(f"timing_s: {res['timing_s']}")
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["select", "report"])
    parser.add_argument("results", nargs="*", type=Path, help="report: results.json files")
    parser.add_argument("--max-steps", type=int, default=2000)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--window", type=int, default=4)
    parser.add_argument("--drop", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reports")
    parser.add_argument("--labels")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.command == "report":
        if not args.results:
            parser.error("report needs at least one results.json")
        runs = [report(p) for p in args.results]
        if args.out:
            from relaxclip.demo.report import plot_curves

            plot_curves(runs, args.out)
        return
    cfg = DemoConfig(
        seeds=(0,),
        finetune_steps=args.max_steps,
        eval_every=args.eval_every,
        finetune_schedule="constant",
        threads=args.threads,
        workers=1,
        reports=args.reports,
        labels=args.labels,
        progress=False,
        plots=False,
        n_bootstrap=100,
    )
    arms = [a for a in ARMS if not a.finetune or a.label == REFERENCE]
    t = time.perf_counter()
    results = run_demo(cfg, None, arms=arms, log=lambda line: None)
    curve = {int(k): v for k, v in results["arms"][REFERENCE]["val_curve"][0].items()}
    budget, peak_step, peak = choose_budget(curve, args.window, args.drop)
    summary = {
        "benchmark": results["benchmark"]["source"],
        "max_steps": args.max_steps,
        "eval_every": args.eval_every,
        "window": args.window,
        "drop": args.drop,
        "pretrained_val": results["arms"]["pretrained"]["val_macro_auroc_best"][0],
        "val_curve": curve,
        "peak_step": peak_step,
        "peak": peak,
        "budget": budget,
        "seconds": time.perf_counter() - t,
    }
    for step in sorted(curve):
        print(f"step {step:5d}  val macro AUROC {curve[step]:.4f}")
    print(
        f"peak {peak:.4f} at step {peak_step}; budget: "
        + (f"{budget} steps" if budget else f"none (no fall of {args.drop} by {args.max_steps})")
        + f" ({summary['seconds']:.0f} s)"
    )
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
