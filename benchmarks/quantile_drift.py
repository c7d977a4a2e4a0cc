"""Trace a calibrated quantile threshold over the demo's fine-tuning: θ stays fixed.

Runs the demo's internals (``--quick`` sizes; ``--full``: the default demo's sizes and steps)
for one seed with arm (a) and arm (d) with θ calibrated at quantile ``--q`` (the
``--relax-quantile`` arm: :func:`relaxclip.calibrate_threshold` on the pre-trained model's first
``calibration_batches`` fine-tuning batches, then ``threshold=θ``). Prints, every few steps of
the quantile arm's fine-tuning, the θ its loss used, the mean positive-pair cosine and the share
of positive pairs above θ (relaxed). About 1 CPU-minute (``--full``: about 3)::

    python benchmarks/quantile_drift.py --q 0.9          # not in CI: a measurement, quoted in docs/demo.md
    python benchmarks/quantile_drift.py --q 0.5 --full   # not in CI: the default sizes
"""

from __future__ import annotations

import argparse
from typing import Any

import relaxclip.demo.runner as runner
from relaxclip.demo.arms import ARMS, Arm
from relaxclip.demo.config import DemoConfig
from relaxclip.demo.training import TrainLog


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--q", type=float, default=0.9, help="calibration quantile of the arm")
    parser.add_argument("--full", action="store_true", help="the default demo's sizes and steps")
    args = parser.parse_args()
    traces: list[tuple[float | None, TrainLog]] = []
    train = runner.train

    def traced(*a: Any, **kw: Any) -> TrainLog:
        log = train(*a, **kw)
        traces.append((a[3].threshold, log))  # a[3]: the loss module of this training run
        return log

    runner.train = traced
    arm = Arm("dq", f"(d) q={args.q:g}", text="sampled", threshold_quantile=args.q)
    arms = [a for a in ARMS if a.label in ("pretrained", "a")] + [arm]
    preset = DemoConfig if args.full else DemoConfig.quick
    cfg = preset(seeds=(0,), progress=False, plots=False, threads=1, workers=1)
    results = runner.run_demo(cfg, None, log=lambda line: None, arms=arms)
    size = "default demo sizes" if args.full else "--quick sizes"
    for label in ("a", "dq"):
        res = results["arms"][label]
        print(f"arm {label}: test macro AUROC {res['macro_auroc']['mean']:.4f} ({size}, seed 0)")
    theta, log = traces[-1]  # pre-training, arm a, the quantile arm
    print(f"q={args.q:g}: theta {theta:.4f}, calibrated once on {cfg.calibration_batches} batches")
    print("step  theta    mean positive cos  relaxed share")
    every = 15 if args.full else 5
    for step, (cos, share) in enumerate(
        zip(log.positive_cosine, log.relaxed_fraction, strict=True), 1
    ):
        if step % every == 1 or step == len(log.positive_cosine):
            print(f"{step:4d}  {theta:+.4f}  {cos:+.3f}             {100 * share:5.1f} %")


if __name__ == "__main__":
    main()
