"""Issue 18 under torch.distributed (gloo, CPU, world 2 and 3): the quantile threshold is computed
from the positives of the GLOBAL batch, is identical on every rank, and the EMA state stays
identical across ranks; the loss and every parameter gradient after DDP's averaging equal the
single-process loss on the concatenated global batch at the reference theta.

One spawned job per world size runs every case: modes "local"/"global" x backends
"dense"/"chunked" x momentum 0 / 0.6, three training steps each (even, uneven and, for world 3,
one rank with an empty local batch); world 3 also runs a 2-rank ``process_group`` {0, 2}. The
reference theta is an independent plain-torch computation: ``torch.quantile`` of the float64
positive cosines of the global batch, smoothed with the documented EMA (stored in float32).
"""

from __future__ import annotations

import gc
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from _reference import reference_loss
from _workers import init_gloo, run_ranks
from test_distributed import _grad, _make_batch, _make_model

TOL = 1e-9
Q = 0.6


def _splits(world: int, step: int) -> list[int]:
    """Per-rank local batch sizes of step ``step``: even, uneven, uneven with an empty rank."""
    if step == 0:
        return [4] * world
    if step == 1:
        return [3 + 2 * r for r in range(world)]
    return [5, 0, 4][:world] if world == 3 else [6, 1]


def _reference_step(
    a: torch.Tensor, b: torch.Tensor, previous: float | None, momentum: float
) -> tuple[float, float, dict[str, torch.Tensor]]:
    """(theta, loss, parameter grads) of one single-process step on the global batch."""
    model = _make_model()
    x, y, t = model(a, b)
    s = (F.normalize(x.detach(), dim=1) * F.normalize(y.detach(), dim=1)).sum(1)
    step = float(torch.quantile(s, Q))
    if previous is None or momentum == 0:
        theta = step
    else:  # the running theta is stored as float32 between steps
        theta = (
            momentum * float(torch.tensor(previous, dtype=torch.float32)) + (1 - momentum) * step
        )
    loss = reference_loss(x, y, t, theta)
    loss.backward()
    return theta, float(loss.detach()), {n: _grad(p).clone() for n, p in model.named_parameters()}


def _case(group: Any, mode: str, backend: str, momentum: float) -> list[float]:
    """Three DDP steps; [theta spread over ranks, buffer spread, |theta - ref|, |loss - ref|,
    max |grad - ref|], each the max over steps (this rank's view; reduced by the caller)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    from relaxclip.loss import RelaxedContrastiveLoss

    world, rank = dist.get_world_size(group), dist.get_rank(group)
    model = _make_model()
    ddp = DDP(model, process_group=group)
    loss_fn = RelaxedContrastiveLoss(
        relax_quantile=Q,
        relax_momentum=momentum,
        backend=backend,
        distributed_mode=mode,  # type: ignore[arg-type]
        process_group=group,
    )
    worst = [0.0] * 5
    previous: float | None = None
    for step in range(3):
        sizes = _splits(world, step)
        a, b = _make_batch(sum(sizes), seed=500 + 10 * step + world)
        start = sum(sizes[:rank])
        ddp.zero_grad(set_to_none=True)
        x, y, t = ddp(a[start : start + sizes[rank]], b[start : start + sizes[rank]])
        out = loss_fn(x, y, t, output_dict=True)
        out["contrastive_loss"].backward()
        theta = out.diagnostics["threshold"].reshape(1)
        state = torch.stack(
            [loss_fn.running_threshold.double(), loss_fn.num_threshold_updates.double()]
        )
        thetas = [torch.empty_like(theta) for _ in range(world)]
        states = [torch.empty_like(state) for _ in range(world)]
        dist.all_gather(thetas, theta, group=group)
        dist.all_gather(states, state, group=group)
        mean_loss = out["contrastive_loss"].detach().clone()
        dist.all_reduce(mean_loss, group=group)
        ref_theta, ref_loss, ref_grads = _reference_step(a, b, previous, momentum)
        previous = ref_theta
        grad_diff = max(
            float((_grad(p) - ref_grads[n]).abs().max()) for n, p in model.named_parameters()
        )
        values = [
            float(torch.cat(thetas).max() - torch.cat(thetas).min()),
            float((torch.stack(states) - state).abs().max()),
            abs(float(theta) - ref_theta),
            abs(float(mean_loss) / world - ref_loss),
            grad_diff,
        ]
        assert int(loss_fn.num_threshold_updates) == step + 1
        worst = [max(w, v) for w, v in zip(worst, values, strict=True)]
    return worst


def _run_cases(group: Any, cases: list[tuple[str, str, float]]) -> dict[str, list[float]]:
    raw = {f"{m}/{b}/momentum={mo}": _case(group, m, b, mo) for m, b, mo in cases}
    table = torch.tensor(list(raw.values()), dtype=torch.float64)
    dist.all_reduce(table, op=dist.ReduceOp.MAX, group=group)
    return {key: table[i].tolist() for i, key in enumerate(raw)}


def _worker(rank: int, world: int, out_dir: str) -> None:
    init_gloo(rank, world, out_dir)
    try:
        cases = list(itertools.product(("local", "global"), ("dense", "chunked"), (0.0, 0.6)))
        res = {"default": _run_cases(None, cases)}
        if world == 3:  # a process group of ranks {0, 2}; rank 1 takes no part
            sub = dist.new_group([0, 2])
            if rank in (0, 2):
                res["group02"] = _run_cases(
                    sub, [("local", "dense", 0.6), ("global", "chunked", 0.0)]
                )
        if rank == 0:
            (Path(out_dir) / "results.json").write_text(json.dumps(res))
    finally:
        gc.collect()
        dist.destroy_process_group()


@pytest.mark.parametrize("world", [2, 3])
def test_quantile_theta_is_global_and_identical_on_every_rank(
    world: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    out_dir = tmp_path_factory.mktemp(f"quantile{world}")
    run_ranks(_worker, world, (world, str(out_dir)), 300, f"the {world}-rank job")
    res = json.loads((out_dir / "results.json").read_text())
    expected = 8 + (2 if world == 3 else 0)
    assert sum(len(v) for v in res.values()) == expected
    for group, cases in res.items():
        for key, (spread, buffers, vs_ref, loss, grad) in cases.items():
            print(f"world {world} {group} {key}: |theta - ref| {vs_ref:.1e}, grad {grad:.1e}")
            assert spread == 0.0 and buffers == 0.0, (group, key)  # bitwise identical on ranks
            assert vs_ref <= 1e-12, (group, key, vs_ref)  # the GLOBAL batch's quantile
            assert loss <= TOL and grad <= TOL, (group, key, loss, grad)
