"""Trace the quantile threshold during the demo's fine-tuning (issue 18's collapse, measured).

Runs ``relaxclip demo --quick`` internals (``--full``: the default demo's sizes and steps; one
seed, arms a, d and a quantile arm (d) q, optionally with the EMA of theta, ``--momentum``) with
the loss wrapped to record, at every training call: the quantile q, the logit scale t, the theta
used (``output_dict=True`` diagnostics), the mean positive cosine and the mean cosine over all
pairs. Prints every 10th (``--full``: 30th) fine-tuning step of the quantile arm. About 30 s on
2 CPU cores (``--full``: about 2 minutes)::

    python benchmarks/quantile_drift.py --q 0.5   # not in CI: a measurement, quoted in docs/concepts.md
    python benchmarks/quantile_drift.py --q 0.9 --momentum 0.9   # not in CI: the same, theta smoothed
    python benchmarks/quantile_drift.py --q 0.9 --momentum 0.9 --full   # not in CI: the default sizes
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
import torch.nn.functional as F

from relaxclip.demo.arms import ARMS, Arm
from relaxclip.demo.config import DemoConfig
from relaxclip.demo.runner import run_demo
from relaxclip.loss import RelaxedContrastiveLoss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--q", type=float, default=0.5, help="quantile of the traced arm")
    parser.add_argument(
        "--momentum",
        type=float,
        default=0.0,
        help="relax_momentum m of the traced arm's EMA of theta (default 0: no smoothing)",
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="the default demo's sizes and steps (one seed) instead of the --quick preset",
    )
    args = parser.parse_args()
    records: list[tuple[float | None, float, float, float, float]] = []
    forward = RelaxedContrastiveLoss.forward

    def traced(self: RelaxedContrastiveLoss, img: torch.Tensor, txt: torch.Tensor,
               scale: Any, *rest: Any, **kw: Any) -> Any:  # fmt: skip
        kw.pop("output_dict", None)
        if self.relax_quantile is not None:
            self.relax_momentum = args.momentum  # validated by the loss at this call
        out = forward(self, img, txt, scale, *rest, output_dict=True, **kw)
        if torch.is_grad_enabled():  # training calls only (validation runs under no_grad)
            with torch.no_grad():
                s = F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
                theta = out.diagnostics.get("threshold")
                records.append((
                    self.relax_quantile, float(scale),
                    float("nan") if theta is None else float(theta),
                    s.diagonal().mean().item(), s.mean().item(),
                ))  # fmt: skip
        return out["contrastive_loss"]

    RelaxedContrastiveLoss.forward = traced  # type: ignore[method-assign]
    quantile_arm = Arm("dq", f"(d) quantile q={args.q}", text="sampled", relax_quantile=args.q)
    arms = [a for a in ARMS if a.label in ("pretrained", "a", "d")] + [quantile_arm]
    # workers=1: the trace wraps the loss in this process
    preset = DemoConfig if args.full else DemoConfig.quick
    cfg = preset(seeds=(0,), progress=False, plots=False, threads=1, workers=1)
    results = run_demo(cfg, None, log=lambda line: None, arms=arms)
    print(
        f"q={args.q} momentum={args.momentum} ({'default demo sizes' if args.full else '--quick'}"
        ", seed 0)"
    )
    for label in ("a", "d", "dq"):
        print(f"arm {label}: test macro AUROC {results['arms'][label]['macro_auroc']['mean']:.4f}")
    traced_steps = [r for r in records if r[0] is not None]
    print("step  t      theta   mean positive cos  mean cos (all pairs)")
    for step, (_, t, theta, pos, allpairs) in enumerate(traced_steps, start=1):
        if step % (30 if args.full else 10) == 1 or step == len(traced_steps):
            print(f"{step:4d}  {t:5.1f}  {theta:+.3f}  {pos:+.3f}             {allpairs:+.3f}")


if __name__ == "__main__":
    main()
