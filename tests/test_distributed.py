"""Multi-process (gloo, CPU) tests of the distributed relaxed contrastive loss.

One spawned job per world size (2, 3, 4) runs every combination inside: a DDP-wrapped float64
two-tower model with a learnable ``logit_scale``; modes "local"/"global" x backends
"dense"/"chunked" x threshold None / a threshold that relaxes about half the pairs x even and
uneven local batches. The mean over ranks of the returned loss and every parameter gradient
after DDP's averaging are compared with a single-process reference computed on the
concatenated global batch by an independent plain-torch implementation of the formula.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from _reference import reference_loss
from _workers import gloo_rank, run_ranks
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from relaxclip.distributed import DistributedMode

TOL = 1e-9
MODES: tuple[DistributedMode, ...] = ("local", "global")
REPO = Path(__file__).resolve().parents[1]
D_IN, D_HIDDEN, D_OUT = 6, 8, 5


class TwoTower(nn.Module):
    """Tiny image/text towers (float64) with a learnable log logit scale (CLIP convention)."""

    def __init__(self) -> None:
        super().__init__()
        self.image = nn.Sequential(nn.Linear(D_IN, D_HIDDEN), nn.Tanh(), nn.Linear(D_HIDDEN, D_OUT))
        self.text = nn.Sequential(nn.Linear(D_IN, D_HIDDEN), nn.Tanh(), nn.Linear(D_HIDDEN, D_OUT))
        # identical towers and near-identical inputs make s_ii large, so a threshold relaxes some
        self.text.load_state_dict(self.image.state_dict())
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.image(a), self.text(b), self.log_scale.exp()


def _make_model() -> TwoTower:
    torch.manual_seed(1234)
    return TwoTower().double()


def _make_batch(total: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(total, D_IN, generator=g, dtype=torch.float64)
    b = a + 0.3 * torch.randn(total, D_IN, generator=g, dtype=torch.float64)
    return a, b


def _reference(
    a: torch.Tensor, b: torch.Tensor, theta: float | None, groups: torch.Tensor | None = None
) -> tuple[float, dict[str, torch.Tensor]]:
    model = _make_model()
    x, y, t = model(a, b)
    loss = reference_loss(x, y, t, theta, groups=groups)
    loss.backward()
    return float(loss.detach()), {n: _grad(p).clone() for n, p in model.named_parameters()}


def _splits(total: int, world: int, gen: torch.Generator, *, allow_empty: bool) -> list[int]:
    """A random composition of ``total`` into ``world`` parts (>= 1 each unless allow_empty)."""
    low = 0 if allow_empty else 1
    while True:
        cuts = sorted(torch.randint(0, total + 1, (world - 1,), generator=gen).tolist())
        parts = [hi - lo for lo, hi in zip([0, *cuts], [*cuts, total], strict=True)]
        if min(parts) >= low and len(set(parts)) > 1:
            return parts


def _grad(p: torch.Tensor) -> torch.Tensor:
    assert p.grad is not None
    return p.grad


def _public_loss(mode: DistributedMode, backend: str, group: Any) -> Callable[..., Any]:
    """``relaxed_contrastive_loss`` as a gathering call in ``mode`` with ``backend`` over
    ``group``, as ``f(x, y, t, theta, **kw)`` (``kw``: e.g. ``groups``); the chunked backend
    takes several blocks per rank (``chunk_size=3``; dense takes no chunk size)."""
    from relaxclip.loss import relaxed_contrastive_loss

    def call(x: Any, y: Any, t: Any, th: Any, **kw: Any) -> Any:
        return relaxed_contrastive_loss(
            x, y, t, threshold=th, backend=backend, distributed_mode=mode, process_group=group,
            chunk_size=3 if backend == "chunked" else None, **kw,
        )  # fmt: skip

    return call


def _run_case(
    ddp: Any,
    a: torch.Tensor,
    b: torch.Tensor,
    sizes: list[int],
    theta: float | None,
    ref: tuple[float, dict[str, torch.Tensor]],
    call: Any,
    group: Any = None,
    groups: torch.Tensor | None = None,
) -> list[float]:
    """One DDP step on this rank's slice: [this rank's loss, ref loss, max |grad diff|,
    |logit_scale grad diff|] (reduced over ranks later, in one collective per matrix).
    ``groups``: the global batch's ids (K, B); this rank passes its own columns."""
    rank = dist.get_rank(group)
    start = sum(sizes[:rank])
    a_loc, b_loc = a[start : start + sizes[rank]], b[start : start + sizes[rank]]
    ddp.zero_grad(set_to_none=True)
    x, y, t = ddp(a_loc, b_loc)
    if groups is None:
        loss = call(x, y, t, theta)
    else:
        loss = call(x, y, t, theta, groups=groups[..., start : start + sizes[rank]])
    loss.backward()
    ref_loss, ref_grads = ref
    module: TwoTower = ddp.module
    grad_diff = max(
        float((_grad(p) - ref_grads[n]).abs().max()) for n, p in module.named_parameters()
    )
    scale_diff = float((_grad(module.log_scale) - ref_grads["log_scale"]).abs())
    return [float(loss.detach()), ref_loss, grad_diff, scale_diff]


def _reduce_cases(raw: dict[str, list[float]], group: Any) -> dict[str, dict[str, float]]:
    """Mean of the returned losses over ranks vs the reference; max grad diffs over ranks."""
    world = dist.get_world_size(group)
    table = torch.tensor(list(raw.values()), dtype=torch.float64)
    losses = table[:, 0].clone()
    dist.all_reduce(losses, group=group)
    diffs = table[:, 2:].clone()
    dist.all_reduce(diffs, op=dist.ReduceOp.MAX, group=group)
    return {
        key: {
            "loss": abs(float(losses[i]) / world - float(table[i, 1])),
            "grad": float(diffs[i, 0]),
            "logit_scale_grad": float(diffs[i, 1]),
        }
        for i, key in enumerate(raw)
    }


def _matrix(group: Any, gen: torch.Generator, *, full: bool = True) -> dict[str, Any]:
    """Run the combinations on ``group`` (None = the default group); same result on all ranks.

    ``full=False`` (sub-group runs): uneven batches, relaxed, chunked backend, both modes only.
    """
    from torch.nn.parallel import DistributedDataParallel as DDP

    from relaxclip.distributed import distributed_loss, is_distributed_active
    from relaxclip.loss import RelaxedContrastiveLoss, relaxed_contrastive_loss

    world = dist.get_world_size(group)
    assert is_distributed_active(group)
    results: dict[str, Any] = {"world": world}
    total = 4 * world + 1  # uneven splits; even splits use 4 per rank
    a_even, b_even = _make_batch(4 * world, seed=world)
    a_unev, b_unev = _make_batch(total, seed=world + 50)
    even = [4] * world
    uneven = _splits(total, world, gen, allow_empty=False)
    results["uneven_sizes"] = uneven

    # threshold halfway between the two middle positive similarities (of the even and the
    # uneven batch): relaxes some pairs, not all, and no s_ii sits on the threshold, where the
    # relaxation decision would depend on the last bit of a differently blocked matmul
    with torch.no_grad():
        s_ii = (
            torch.cat(
                [
                    (F.normalize(xs, dim=1) * F.normalize(ys, dim=1)).sum(1)
                    for xs, ys, _ in (_make_model()(a_even, b_even), _make_model()(a_unev, b_unev))
                ]
            )
            .sort()
            .values
        )
    k = s_ii.numel() // 2
    theta_relax = float(s_ii[k - 1] + s_ii[k]) / 2
    assert float(s_ii[k] - s_ii[k - 1]) > 1e-9, "test setup: tie at the threshold"
    results["theta"] = theta_relax

    ddp = DDP(_make_model(), process_group=group)
    cases: dict[str, list[float]] = {}
    batches = {"even": (a_even, b_even, even), "uneven": (a_unev, b_unev, uneven)}
    thetas = {"clip": None, "relaxed": theta_relax}
    backends = ("dense", "chunked") if full else ("chunked",)
    if not full:
        del batches["even"], thetas["clip"]
    for split_name, (a, b, sizes) in batches.items():
        for theta_name, theta in thetas.items():
            ref = _reference(a, b, theta)
            for mode in MODES:
                for backend in backends:
                    key = f"{mode}/{backend}/{theta_name}/{split_name}"
                    cases[key] = _run_case(
                        ddp, a, b, sizes, theta, ref, _public_loss(mode, backend, group), group
                    )

    if not full:
        results["cases"] = _reduce_cases(cases, group)
        return results

    # groups: ids with collisions across ranks (K = 1 for dense, K = 2 for chunked), uneven
    # batches, relaxed; the reference masks the same pairs of the global batch
    ids1 = torch.randint(0, max(2, total // 3), (total,), generator=gen)
    ids2 = torch.stack([ids1, torch.randint(0, max(2, total // 4), (total,), generator=gen)])
    for backend, ids in (("dense", ids1), ("chunked", ids2)):
        ref = _reference(a_unev, b_unev, theta_relax, ids)
        for mode in MODES:
            cases[f"{mode}/{backend}/groups-k{ids.dim()}/uneven"] = _run_case(
                ddp,
                a_unev,
                b_unev,
                uneven,
                theta_relax,
                ref,
                _public_loss(mode, backend, group),
                group,
                groups=ids,
            )

    # nn.Module form with backend="auto" and the default mode
    loss_mod = RelaxedContrastiveLoss(threshold=theta_relax, process_group=group)
    ref = _reference(a_even, b_even, theta_relax)
    cases["local/auto/relaxed/module"] = _run_case(
        ddp, a_even, b_even, even, theta_relax, ref, lambda x, y, t, th: loss_mod(x, y, t), group
    )
    # theta as a 0-d tensor (the module and the functional form), the same on every rank
    tensor_mod = RelaxedContrastiveLoss(
        threshold=torch.tensor(theta_relax, dtype=torch.float64),
        distributed_mode="global",
        process_group=group,
    )
    cases["global/auto/relaxed/module-tensor-theta"] = _run_case(
        ddp, a_even, b_even, even, theta_relax, ref, lambda x, y, t, th: tensor_mod(x, y, t), group
    )
    public = _public_loss("local", "dense", group)

    def tensor_theta(x: Any, y: Any, t: Any, th: Any) -> Any:
        return public(x, y, t, torch.tensor(th, dtype=torch.float64))

    cases["local/dense/relaxed/tensor-theta"] = _run_case(
        ddp, a_even, b_even, even, theta_relax, ref, tensor_theta, group
    )

    # the public loss with an empty local batch on the group's first rank
    empty = [0, *_splits(total, world - 1, gen, allow_empty=False)] if world > 2 else [0, total]
    ref = _reference(a_unev, b_unev, None)
    for m in MODES:

        def direct(x: Any, y: Any, t: Any, th: Any, m: DistributedMode = m) -> Any:
            return relaxed_contrastive_loss(
                x, y, t, threshold=th, backend="dense", distributed_mode=m, process_group=group
            )

        cases[f"{m}/dense/clip/empty-first-rank"] = _run_case(
            ddp, a_unev, b_unev, empty, None, ref, direct, group
        )
    ref = _reference(a_unev, b_unev, None, ids1)
    for m in MODES:

        def direct_groups(
            x: Any, y: Any, t: Any, th: Any, m: DistributedMode = m, **kw: Any
        ) -> Any:
            return relaxed_contrastive_loss(
                x, y, t, threshold=th, backend="chunked", distributed_mode=m, process_group=group,
                **kw,
            )  # fmt: skip

        cases[f"{m}/chunked/groups/empty-first-rank"] = _run_case(
            ddp, a_unev, b_unev, empty, None, ref, direct_groups, group, groups=ids1
        )
    results["cases"] = _reduce_cases(cases, group)

    # low-precision features, no DDP: this rank's feature gradient (a leaf, so no averaging)
    # is W * dL/dx_r; compare loss and gradient with the single-process loss on the same
    # low-precision global batch (both compute in fp32 from the same inputs)
    rank = dist.get_rank(group)
    low: dict[str, float] = {}
    from relaxclip.backends import triton_available

    combos: list[tuple[torch.dtype, str]] = [(torch.float32, "auto"), (torch.bfloat16, "auto")]
    results["triton_available"] = triton_available()
    if world == 2 and results["triton_available"]:  # triton (CPU interpreter without a GPU)
        combos += [(torch.float32, "triton"), (torch.float32, "triton+groups")]
    for dtype, combo in combos:
        backend_name = combo.split("+")[0]
        for m in MODES:
            xg, yg = (v.to(dtype) for v in _make_batch(4 * world, seed=7))
            sl = slice(4 * rank, 4 * rank + 4)
            ids = (
                torch.tensor([0, 1, 0, 2, 3, 1, 4, 0])[: 4 * world] if "+groups" in combo else None
            )
            xl, yl = xg[sl].clone().requires_grad_(), yg[sl].clone().requires_grad_()
            tl = torch.tensor(9.0, requires_grad=True)
            out = relaxed_contrastive_loss(
                xl,
                yl,
                tl,
                threshold=0.3,
                backend=backend_name,
                distributed_mode=m,
                process_group=group,
                groups=None if ids is None else ids[sl],
            )
            out.backward()
            xr, yr = xg.clone().requires_grad_(), yg.clone().requires_grad_()
            tr = torch.tensor(9.0, requires_grad=True)
            ref_out = relaxed_contrastive_loss(
                xr, yr, tr, threshold=0.3, distributed=False, groups=ids
            )
            ref_out.backward()
            mean = out.detach().clone()
            dist.all_reduce(mean, group=group)
            t_grad = _grad(tl).clone()
            dist.all_reduce(t_grad, group=group)  # what DDP's averaging would give, times W
            low[f"{m}/{combo}/{dtype}"] = max(
                abs(float(mean) / world - float(ref_out.detach())),
                float((_grad(xl).float() / world - _grad(xr)[sl].float()).abs().max()),
                float((_grad(yl).float() / world - _grad(yr)[sl].float()).abs().max()),
                abs(float(t_grad) / world - float(_grad(tr))),
            )
    results["low_precision_diff"] = low

    # distributed=False is the plain loss of this rank's own samples
    x, y, t = _make_model()(a_even[4 * rank : 4 * rank + 4], b_even[4 * rank : 4 * rank + 4])
    got = relaxed_contrastive_loss(x, y, t, threshold=theta_relax, distributed=False)
    want = reference_loss(x, y, t, theta_relax)
    results["distributed_false_diff"] = abs(float((got - want).detach()))

    # a feature-dimension mismatch raises the same error on every rank (none left waiting)
    d = 4 + rank % 2
    try:
        distributed_loss(
            torch.randn(3, d),
            torch.randn(3, d),
            torch.tensor(2.0),
            None,
            backend="dense",
            process_group=group,
        )
        results["dim_mismatch_error"] = None
    except ValueError as e:
        results["dim_mismatch_error"] = str(e)
    # groups on some ranks only: the same error on every rank
    try:
        relaxed_contrastive_loss(
            torch.randn(3, 4),
            torch.randn(3, 4),
            2.0,
            groups=torch.arange(3) if rank == 0 else None,
            distributed=True,  # no grad recorded: the default would compute a local loss
            process_group=group,
        )
        results["groups_mismatch_error"] = None
    except ValueError as e:
        results["groups_mismatch_error"] = str(e)
    results.update(_bad_input_errors(group, rank))
    return results


def _bad_input_errors(group: Any, rank: int) -> dict[str, Any]:
    """The messages of distributed_loss for bad input: local checks (the same call on every rank),
    a groups length off on rank 0 only (every rank must raise) and an empty global batch."""
    from relaxclip.distributed import distributed_loss
    from relaxclip.loss import relaxed_contrastive_loss

    x, y, t = torch.randn(4, 3), torch.randn(4, 3), torch.tensor(5.0)
    bad: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {
        "long": ((x.long(), y.long(), t, 0.5), {}),
        "mixed_dtype": ((x, y.double(), t, 0.5), {}),
        "float_groups": ((x, y, t, None), {"groups": torch.tensor([0.2, 0.7, 1.0, 1.5])}),
        "nan_threshold": ((x, y, t, math.nan), {}),
        "backend_none": ((x, y, t, None), {"backend": None}),
        "one_d": ((x[0], y[0], t, None), {}),
        "list": ((x.tolist(), y, t, None), {}),
        "dense_chunk_size": ((x, y, t, None), {"backend_opts": {"chunk_size": 2}}),
    }
    out: dict[str, Any] = {}
    for name, (args, kwargs) in bad.items():
        try:
            distributed_loss(*args, **{"backend": "dense", "process_group": group, **kwargs})
            out[f"bad/{name}"] = None
        except (TypeError, ValueError) as e:
            out[f"bad/{name}"] = f"{type(e).__name__}: {e}"
    out["float_scale_loss"] = float(
        distributed_loss(x, y, 5.0, None, backend="dense", process_group=group)
    )
    nan_x = x.clone()
    nan_x[1, 0] = math.nan
    try:
        distributed_loss(nan_x, y, t, None, backend="dense", process_group=group)
        out["nan_checked"] = None
    except ValueError as e:
        out["nan_checked"] = str(e)
    unchecked = distributed_loss(
        nan_x, y, t, None, backend="dense", process_group=group, check_finite=False
    )
    out["nan_unchecked_loss"] = float(unchecked)
    raised = 0
    try:
        ids = torch.arange(4 if rank == 0 else 3)
        distributed_loss(x[:3], y[:3], t, None, backend="dense", process_group=group, groups=ids)
    except ValueError as e:
        raised = int("groups must have shape (B,) or (K, B)" in str(e) and "rank 0" in str(e))
    flag = torch.tensor(raised)
    dist.all_reduce(flag, group=group)  # every rank raised naming groups: flag == world
    out["groups_length_raised_on"] = int(flag)
    try:
        relaxed_contrastive_loss(x[:0], y[:0], t, distributed=True, process_group=group)
        out["empty_error"] = None
    except ValueError as e:
        out["empty_error"] = str(e)
    return out


def _worker(rank: int, world: int, out_dir: str) -> None:
    """One rank of a ``world``-process gloo job; rank 0 writes the result tables as JSON."""
    from relaxclip.distributed import is_distributed_active

    if world == 2 and not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")  # lets the triton backend run on CPU
    with gloo_rank(rank, world, out_dir):
        gen = torch.Generator().manual_seed(100 + world)
        out = Path(out_dir)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = _matrix(None, gen)  # default group: distributed=None auto-detects it
        res["deprecations"] = [
            str(w.message)
            for w in caught
            if issubclass(w.category, (FutureWarning, DeprecationWarning))
            # triton 3.6's CPU interpreter (torch 2.11's triton) warns about its own numpy use
            and not w.filename.endswith(os.path.join("triton", "runtime", "interpreter.py"))
        ]
        if rank == 0:
            (out / "default.json").write_text(json.dumps(res))
        if world == 4:
            # process_group: ranks {0,1} and {2,3} run independent 2-rank jobs concurrently.
            # new_group must be called by every rank, members or not.
            pairs = [dist.new_group([0, 1]), dist.new_group([2, 3])]
            solo = [dist.new_group([r]) for r in range(world)]
            assert not is_distributed_active(solo[rank])  # a 1-rank group is not distributed
            assert not is_distributed_active(pairs[1 - rank // 2])  # not a member
            res = _matrix(pairs[rank // 2], gen, full=False)
            if rank in (0, 2):
                (out / f"pair{rank}{rank + 1}.json").write_text(json.dumps(res))


_RESULTS: dict[int, dict[str, dict[str, Any]]] = {}


def _spawn_results(world: int, tmp_root: Path, timeout_s: float = 240.0) -> dict[str, Any]:
    """Run the ``world``-process job once per test session; its result tables by name."""
    if world not in _RESULTS:
        out_dir = tmp_root / f"world{world}"
        out_dir.mkdir()
        run_ranks(_worker, world, (world, str(out_dir)), timeout_s, f"the {world}-rank job")
        _RESULTS[world] = {f.stem: json.loads(f.read_text()) for f in out_dir.glob("*.json")}
    return _RESULTS[world]


def _check_cases(label: str, res: dict[str, Any], n_cases: int) -> None:
    cases = res["cases"]
    assert len(cases) == n_cases
    print(f"\n{label}: group size {res['world']}, uneven split {res['uneven_sizes']}")
    for mode in MODES:
        mine = [v for k, v in cases.items() if k.startswith(mode + "/")]
        grad = max(max(v["grad"], v["logit_scale_grad"]) for v in mine)
        loss = max(v["loss"] for v in mine)
        print(f"  mode {mode}: max |grad diff| = {grad:.3e}, max |loss diff| = {loss:.3e}")
        grouped = [v for k, v in cases.items() if k.startswith(mode + "/") and "/groups" in k]
        if grouped:
            worst = max(max(v.values()) for v in grouped)
            print(f"    of which {len(grouped)} cases with groups: max diff = {worst:.3e}")
    for key, diffs in cases.items():
        assert diffs["loss"] <= TOL, (key, diffs)
        assert diffs["grad"] <= TOL, (key, diffs)
        assert diffs["logit_scale_grad"] <= TOL, (key, diffs)
    if "distributed_false_diff" not in res:
        return  # a reduced sub-group run
    assert res["distributed_false_diff"] <= TOL
    print(f"  float32/bfloat16 features (no DDP): {res['low_precision_diff']}")
    for key, diff in res["low_precision_diff"].items():
        # fp32: rounding of differently blocked sums; bf16: gradients are rounded to bf16
        # (about 4e-3 relative) and summed in bf16 by the reduce-scatter
        assert diff <= (1e-6 if key.endswith("float32") else 4e-3), (key, diff)
    assert res["deprecations"] == []
    assert res["dim_mismatch_error"] is not None
    assert (
        "image_features and text_features must have the same feature dimension D on every rank"
        in res["dim_mismatch_error"]
    )
    assert res["groups_mismatch_error"] is not None
    assert "groups must have the same number K of id vectors" in res["groups_mismatch_error"]
    _check_bad_input(res)


def _check_bad_input(res: dict[str, Any]) -> None:
    """distributed_loss raises as relaxed_contrastive_loss does, naming the argument."""
    expected = {
        "long": r"TypeError: image_features must be a floating-point tensor",
        "mixed_dtype": r"ValueError: image_features and text_features must have the same dtype",
        "float_groups": r"TypeError: groups must have an integer dtype",
        "nan_threshold": r"ValueError: threshold must be a finite number, got nan",
        "backend_none": r"TypeError: backend must be one of 'auto', 'dense'.*, got NoneType None",
        "one_d": r"ValueError: image_features must be 2-D, got shape \(3,\)",
        "list": r"TypeError: image_features must be a torch.Tensor, got list",
        "dense_chunk_size": r"ValueError: backend_options: 'chunk_size' is not an option of ",
    }
    for name, pattern in expected.items():
        assert re.match(pattern, res[f"bad/{name}"] or ""), (name, res[f"bad/{name}"])
    assert math.isfinite(res["float_scale_loss"])
    assert "image_features must be finite" in (res["nan_checked"] or "")
    assert "pass check_finite=False" in (res["nan_checked"] or "")
    assert math.isnan(res["nan_unchecked_loss"])  # check_finite=False: no check, NaN flows
    assert res["groups_length_raised_on"] == res["world"]
    assert re.match(
        r"image_features and text_features must hold at least one sample on some rank",
        res["empty_error"] or "",
    )


@pytest.mark.parametrize("world", [2, 3, 4])
def test_ddp_gradients_match_single_process(
    world: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    res = _spawn_results(world, tmp_path_factory.mktemp("dist"))
    # modes x backends x (clip, relaxed) x (even, uneven) + module form + 2 tensor-theta cases
    # + 2 empty-rank cases + groups: modes x backends (K = 1, 2) + 2 empty-rank cases with groups
    _check_cases(f"world size {world}", res["default"], 2 * 2 * 2 * 2 + 1 + 2 + 2 + 4 + 2)


def test_triton_backend_composes_with_the_distributed_loss(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The world-2 job also runs the triton backend (CPU interpreter without a GPU) in both
    modes; its loss and gradients are checked against the single-process loss in _check_cases
    (fp32 tolerance). Skipped, visibly, where the workers could not run triton."""
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed (optional extra relaxclip[triton])")
    res = _spawn_results(2, tmp_path_factory.mktemp("dist"))["default"]
    if not res["triton_available"]:
        pytest.skip("the triton backend is not available in the spawned workers")
    ran = sorted(k for k in res["low_precision_diff"] if "/triton/" in k)
    assert ran == ["global/triton/torch.float32", "local/triton/torch.float32"]
    for key in ran:
        assert res["low_precision_diff"][key] <= 1e-6, (key, res["low_precision_diff"][key])


def _rank0_only_worker(rank: int, world: int, out_dir: str) -> None:
    """Default arguments in a 2-rank gloo job: a training call on both ranks gathers the global
    batch; then rank 0 ALONE computes a validation loss under torch.no_grad() while rank 1 waits
    for it outside any collective (before: rank 0 waited for rank 1 in the all-gather)."""
    import logging

    from relaxclip.loss import RelaxedContrastiveLoss, relaxed_contrastive_loss

    out = Path(out_dir)
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    log = logging.getLogger("relaxclip.distributed")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    with gloo_rank(rank, world, out, timeout_s=30.0):  # a hang fails the job quickly
        try:
            a, b = _make_batch(4 * world, seed=31)
            sl = slice(4 * rank, 4 * rank + 4)
            result: dict[str, Any] = {}
            # training step with default arguments: the global batch (what the examples rely on)
            model = _make_model()
            x, y, t = model(a[sl], b[sl])
            loss = relaxed_contrastive_loss(x, y, t, threshold=0.5)
            mean = loss.detach().clone()
            dist.all_reduce(mean)
            x_all, y_all, t_all = _make_model()(a, b)
            result["train_vs_global"] = abs(
                float(mean) / world - float(reference_loss(x_all, y_all, t_all, 0.5))
            )
            result["train_vs_local"] = abs(
                float(mean) / world - float(reference_loss(x, y, t, 0.5))
            )
            if rank == 0:
                with torch.no_grad():
                    x, y, t = model(a[sl], b[sl])
                    functional = relaxed_contrastive_loss(x, y, t, threshold=0.5)
                    module = RelaxedContrastiveLoss(threshold=0.5)(x, y, t)
                    local = reference_loss(x, y, t, 0.5)
                result["val_functional_vs_local"] = abs(float(functional) - float(local))
                result["val_module_vs_local"] = abs(float(module) - float(local))
                result["log"] = records
                (out / "rank0.json").write_text(json.dumps(result))
            else:
                deadline = time.monotonic() + 60
                while not (out / "rank0.json").exists() and time.monotonic() < deadline:
                    time.sleep(0.2)
        finally:
            log.removeHandler(handler)


def test_rank0_only_validation_under_no_grad_does_not_hang(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    out_dir = tmp_path_factory.mktemp("rank0")
    run_ranks(_rank0_only_worker, 2, (2, str(out_dir)), 150, "the 2-rank job")
    res = json.loads((out_dir / "rank0.json").read_text())
    assert res["train_vs_global"] <= TOL  # training with default arguments: the global batch
    assert res["train_vs_local"] > 1e-3  # ... which is not the local loss
    assert res["val_functional_vs_local"] <= TOL and res["val_module_vs_local"] <= TOL
    # one log line per decision kind, each once per process
    assert len(res["log"]) == 2, res["log"]
    assert "global-batch loss" in res["log"][0] and "local loss" in res["log"][1]


def test_process_group_subgroups(tmp_path_factory: pytest.TempPathFactory) -> None:
    results = _spawn_results(4, tmp_path_factory.mktemp("dist"))
    for name in ("pair01", "pair23"):
        _check_cases(f"sub-group {name} of a 4-process job", results[name], 2)


def test_reference_matches_single_process_loss() -> None:
    """The test's own reference agrees with the library's single-process loss (and grads)."""
    from relaxclip.loss import relaxed_contrastive_loss

    a, b = _make_batch(11, seed=3)
    for theta in (None, 0.5, 0.95):
        m1, m2 = _make_model(), _make_model()
        x, y, t = m1(a, b)
        l1 = reference_loss(x, y, t, theta)
        l1.backward()
        x, y, t = m2(a, b)
        l2 = relaxed_contrastive_loss(x, y, t, threshold=theta, backend="dense")
        l2.backward()
        assert abs(float(l1.detach()) - float(l2.detach())) <= TOL
        for (n, p1), (_, p2) in zip(m1.named_parameters(), m2.named_parameters(), strict=True):
            assert torch.allclose(_grad(p1), _grad(p2), rtol=0, atol=TOL), n


def test_not_initialised_errors_and_auto_off() -> None:
    from relaxclip.distributed import (
        check_distributed_args,
        distributed_loss,
        is_distributed_active,
    )
    from relaxclip.loss import RelaxedContrastiveLoss, relaxed_contrastive_loss

    assert not dist.is_initialized()
    assert not is_distributed_active()
    x, y = torch.randn(4, 3), torch.randn(4, 3)
    auto = relaxed_contrastive_loss(x, y, 5.0)
    assert torch.equal(auto, relaxed_contrastive_loss(x, y, 5.0, distributed=False))
    with pytest.raises(RuntimeError, match="not initialised"):
        relaxed_contrastive_loss(x, y, 5.0, distributed=True)
    with pytest.raises(
        ValueError, match="process_group must come with an initialised torch.distributed"
    ):
        relaxed_contrastive_loss(x, y, 5.0, process_group=object())
    with pytest.raises(ValueError, match="distributed_mode"):
        relaxed_contrastive_loss(x, y, 5.0, distributed_mode="ring")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="distributed_mode"):
        RelaxedContrastiveLoss(distributed_mode="both")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="distributed_mode must be one of .*, got None"):
        RelaxedContrastiveLoss(distributed_mode=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="distributed"):
        check_distributed_args("yes", "local")
    with pytest.raises(
        ValueError, match=r"groups must have shape \(B,\) or \(K, B\).*got shape \(\)"
    ):
        distributed_loss(x, y, torch.tensor(5.0), None, backend="dense", groups=torch.tensor(3))


def test_ddp_example_runs_under_torchrun() -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(REPO / "examples" / "ddp_train.py"),
        "--tiny",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("step")]
    assert len(lines) >= 2, proc.stdout
    check = [ln for ln in proc.stdout.splitlines() if "max |grad diff| vs single process" in ln]
    assert len(check) == 1, proc.stdout
    assert float(check[0].rsplit("=", 1)[1]) < 1e-4, check[0]  # float32 model


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=4),
    theta=st.one_of(st.none(), st.floats(min_value=-0.5, max_value=0.9)),
    backend=st.sampled_from(["dense", "chunked"]),
    seed=st.integers(min_value=0, max_value=2**16),
    grouped=st.booleans(),
)
def test_local_rows_decompose_the_symmetric_loss(
    sizes: list[int], theta: float | None, backend: str, seed: int, grouped: bool
) -> None:
    """The identity behind "local" mode, on one process: summing each rank's rows in both
    directions (offset = its start index) gives the symmetric sum, with the same gradients;
    also with group ids (the keys' ids of the whole batch passed to every rank's rows)."""
    from relaxclip.backends import get_backend

    be = get_backend(backend)
    gen = torch.Generator().manual_seed(seed)
    total = sum(sizes)
    x = F.normalize(torch.randn(total, 4, generator=gen, dtype=torch.float64), dim=1)
    y = F.normalize(x + 0.5 * torch.randn(total, 4, generator=gen, dtype=torch.float64), dim=1)
    x1, y1, x2, y2 = (v.clone().requires_grad_() for v in (x, y, x, y))
    t1, t2 = (torch.tensor(7.0, dtype=torch.float64, requires_grad=True) for _ in range(2))
    opts = {"chunk_size": 2} if backend == "chunked" else {}  # dense takes no options
    ids = torch.randint(0, max(1, total // 2), (2, total), generator=gen) if grouped else None
    whole = be.symmetric_loss_sum(x1, y1, t1, theta, groups=ids, **opts)
    whole.backward()
    parts = []
    for r, n in enumerate(sizes):
        off = sum(sizes[:r])
        for q, k in ((x2, y2), (y2, x2)):
            parts.append(be.rows_loss_sum(q[off : off + n], k, t2, theta, off, groups=ids, **opts))
    summed = torch.stack(parts).sum()
    summed.backward()
    assert abs(float(whole.detach()) - float(summed.detach())) <= TOL * total
    for a, b in ((x1, x2), (y1, y2), (t1, t2)):
        assert torch.allclose(_grad(a), _grad(b), rtol=0, atol=TOL)
