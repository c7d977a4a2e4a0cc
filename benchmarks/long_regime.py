"""The demo's long fine-tuning regime: choose its step budget from arm (a) alone.

    python benchmarks/long_regime.py select [--reports NLMCXR_reports.tgz --labels openi_gld_std14.csv]

Runs the pre-trained checkpoint and arm (a) (CLIP loss on whole reports) for seed 0 with a
constant learning rate after a 15-step warm-up for ``--max-steps`` steps, validating every
``--eval-every`` steps, and applies the rule of docs/long-regime.md: the budget is the first
evaluated step after the validation peak at which the mean of the last ``--window`` evaluations
is at least ``--drop`` below the peak. Prints the curve and the budget; ``--out`` saves them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["select"])
    parser.add_argument("--max-steps", type=int, default=2000)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--window", type=int, default=4)
    parser.add_argument("--drop", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reports")
    parser.add_argument("--labels")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
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
