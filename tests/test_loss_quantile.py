"""Issue 18: the quantile threshold (``relax_quantile``, ``relax_momentum``) and a tensor theta.

Single-process tests. The triton backend runs in one subprocess under the CPU interpreter
(``TRITON_INTERPRET=1`` must be set before triton is imported): this file executed as a script
prints the triton results as JSON (see ``_triton_worker``). The DDP tests are in
``tests/test_distributed_quantile.py``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from _reference import assert_all_close, grads, reference_loss
from _workers import run_under_interpreter
from hypothesis import given, settings
from hypothesis import strategies as st

from relaxclip.loss import RelaxedContrastiveLoss, relaxed_contrastive_loss

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]


def _known_cosines(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Features with s_ii = c_i after normalisation: x_i = 3 (1, 0), y_i = (c_i, sqrt(1 - c_i^2)) / 2."""
    x = torch.stack([torch.ones_like(c), torch.zeros_like(c)], dim=1) * 3.0
    y = torch.stack([c, (1 - c**2).sqrt()], dim=1) * 0.5
    return x, y


def _batch(n: int, d: int, seed: int, dtype: torch.dtype = torch.float64) -> tuple[Any, Any]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = x + 0.6 * torch.randn(n, d, generator=g, dtype=torch.float64)
    return x.to(dtype), y.to(dtype)


def _positives(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """s_ii in float64 by plain torch (independent of the library)."""
    return (F.normalize(x.double(), dim=1) * F.normalize(y.double(), dim=1)).sum(1)


def _theta_used(module: RelaxedContrastiveLoss, x: Any, y: Any, t: float, **kw: Any) -> Any:
    return module(x, y, t, output_dict=True, **kw).diagnostics["threshold"]


# ------------------------------------------------------------------ theta = torch.quantile(s, q)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(
        st.floats(-0.95, 0.95, allow_nan=False), min_size=2, max_size=40, unique=True
    ).filter(lambda v: min(abs(a - b) for i, a in enumerate(v) for b in v[i + 1 :]) > 1e-6),
    q=st.floats(0.01, 0.99),
)
def test_theta_is_the_torch_quantile_and_relaxes_one_minus_q(values: list[float], q: float) -> None:
    c = torch.tensor(values, dtype=torch.float64)
    x, y = _known_cosines(c)
    out = RelaxedContrastiveLoss(relax_quantile=q)(x, y, 10.0, output_dict=True)
    theta = out.diagnostics["threshold"]
    assert theta.shape == () and theta.dtype == torch.float64 and theta.grad_fn is None
    s = _positives(x, y)
    torch.testing.assert_close(theta, torch.quantile(s, q), atol=1e-12, rtol=0)
    torch.testing.assert_close(theta, torch.quantile(c, q), atol=1e-12, rtol=0)
    # distinct values: exactly the n - 1 - floor(q (n - 1)) largest lie above theta
    n = len(values)
    share = float(out.diagnostics["relaxed_share"])
    assert share == (n - 1 - math.floor(q * (n - 1))) / n
    assert abs(share - (1 - q)) < 1 / n
    # the same count from independently computed cosines (a value AT theta, h = q (n - 1) an
    # integer, may round to either side of it)
    above = [float((s > theta + eps).double().mean()) for eps in (1e-12, -1e-12)]
    assert above[0] <= share <= above[1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batch_quantile_is_bitwise_torch_quantile(dtype: torch.dtype) -> None:
    """The loss's own quantile (device ops only, no host read) equals ``torch.quantile``."""
    from relaxclip.loss import _batch_quantile

    g = torch.Generator().manual_seed(5)
    for n in (1, 2, 3, 7, 11, 16, 257):
        x = torch.randn(n, 5, generator=g, dtype=dtype)
        y = torch.randn(n, 5, generator=g, dtype=dtype)
        for q in (0.01, 0.1, 1 / 3, 0.5, 0.7, 0.9, 0.99):
            assert torch.equal(_batch_quantile(x, y, q), torch.quantile((x * y).sum(1), q))
    x[3, 0] = math.nan  # NaN propagates as in torch.quantile
    assert math.isnan(float(_batch_quantile(x, y, 0.2)))


def test_theta_follows_the_model_scale() -> None:
    """The same q relaxes the same share whether the positives sit near 0.3 or near 0.9."""
    for centre in (0.3, 0.9):
        c = centre + 0.05 * torch.linspace(-1, 1, 21, dtype=torch.float64)
        x, y = _known_cosines(c)
        out = RelaxedContrastiveLoss(relax_quantile=0.7)(x, y, 50.0, output_dict=True)
        assert abs(float(out.diagnostics["threshold"]) - float(torch.quantile(c, 0.7))) < 1e-12
        assert float(out.diagnostics["relaxed_share"]) == 6 / 21  # 20 * 0.7 = 14: 6 above


# ------------------------------------------------------------ quantile mode == absolute at theta


@pytest.mark.parametrize("backend", ["dense", "chunked"])
@pytest.mark.parametrize("with_groups", [False, True])
@pytest.mark.parametrize("normalize", [True, False])
def test_quantile_equals_absolute_at_the_theta_used(
    backend: str, with_groups: bool, normalize: bool
) -> None:
    x, y = _batch(12, 5, seed=3)
    groups = torch.tensor([0, 1, 2, 0, 3, 4, 1, 5, 6, 7, 8, 2]) if with_groups else None
    opts = {"chunk_size": 5} if backend == "chunked" else {}
    common: dict[str, Any] = {
        "backend": backend,
        "backend_options": opts,
        "normalize": normalize,
        "groups": groups,
    }
    q = 0.6
    s = _positives(x, y) if normalize else (x * y).sum(1)
    theta = float(torch.quantile(s, q))
    assert 0 < float((s > theta).double().mean()) < 1  # some, not all, relaxed

    def quantile(a: Any, b: Any, t: Any) -> Any:
        return relaxed_contrastive_loss(a, b, t, relax_quantile=q, **common)

    def absolute(a: Any, b: Any, t: Any) -> Any:
        return relaxed_contrastive_loss(a, b, t, threshold=theta, **common)

    def tensor_theta(a: Any, b: Any, t: Any) -> Any:
        th = torch.tensor(theta, dtype=torch.float64)
        return relaxed_contrastive_loss(a, b, t, threshold=th, **common)

    def reference(a: Any, b: Any, t: Any) -> Any:
        return reference_loss(a, b, t, theta, normalize=normalize, groups=groups)

    want = grads(reference, x, y, 14.0)
    for fn in (quantile, absolute, tensor_theta):
        assert_all_close(grads(fn, x, y, 14.0), want, atol=1e-12, rtol=1e-10)
    # relaxation is active: the CLIP loss (no theta) differs
    clip = grads(lambda a, b, t: reference_loss(a, b, t, None, normalize=normalize), x, y, 14.0)
    assert abs(float(clip[0].detach()) - float(want[0].detach())) > 1e-4
    # the module reports the same theta
    module = RelaxedContrastiveLoss(relax_quantile=q, backend=backend, normalize=normalize)
    assert abs(float(_theta_used(module, x, y, 14.0)) - theta) < 1e-12


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_quantile_theta_in_low_precision_is_computed_in_fp32(dtype: torch.dtype) -> None:
    x, y = _batch(16, 8, seed=4, dtype=dtype)
    out = RelaxedContrastiveLoss(relax_quantile=0.5)(x, y, 10.0, output_dict=True)
    theta = out.diagnostics["threshold"]
    assert theta.dtype == torch.float32
    s = (
        F.normalize(x.float(), dim=1).to(dtype).float()
        * F.normalize(y.float(), dim=1).to(dtype).float()
    ).sum(1)
    assert abs(float(theta) - float(torch.quantile(s, 0.5))) < 1e-5
    want = relaxed_contrastive_loss(x, y, 10.0, threshold=theta)
    torch.testing.assert_close(out["contrastive_loss"], want, atol=0, rtol=0)


# ------------------------------------------------------------------------ running theta (EMA)


def _train_call(module: RelaxedContrastiveLoss, x: Any, y: Any) -> tuple[Any, Any]:
    """One training-style call (features require grad): (loss, theta used)."""
    xs, ys = x.clone().requires_grad_(), y.clone().requires_grad_()
    out = module(xs, ys, 12.0, output_dict=True)
    out["contrastive_loss"].backward()
    return out["contrastive_loss"].detach(), out.diagnostics["threshold"]


@pytest.mark.parametrize("momentum", [0.0, 0.8])
def test_running_theta_is_the_documented_ema(momentum: float) -> None:
    module = RelaxedContrastiveLoss(relax_quantile=0.7, relax_momentum=momentum)
    assert math.isnan(float(module.running_threshold)) and int(module.num_threshold_updates) == 0
    expected = None
    for step in range(4):
        x, y = _batch(10, 6, seed=20 + step)
        batch_q = float(torch.quantile(_positives(x, y), 0.7))
        expected = batch_q if expected is None else momentum * expected + (1 - momentum) * batch_q
        loss, theta = _train_call(module, x, y)
        assert abs(float(theta) - expected) < 1e-7  # the buffer is float32
        assert int(module.num_threshold_updates) == step + 1
        assert float(module.running_threshold) == float(theta.float())
        ref = relaxed_contrastive_loss(x, y, 12.0, threshold=float(theta))
        torch.testing.assert_close(loss, ref, atol=1e-12, rtol=0)
    if momentum > 0:  # smoothing changes theta away from the last batch's quantile
        assert abs(float(theta) - batch_q) > 1e-4


def test_validation_calls_do_not_update_the_running_theta() -> None:
    module = RelaxedContrastiveLoss(relax_quantile=0.5, relax_momentum=0.9)
    xv, yv = _batch(10, 6, seed=99)
    batch_q = float(torch.quantile(_positives(xv, yv), 0.5))
    # before any update a validation call uses the batch quantile and changes nothing
    with torch.no_grad():
        assert abs(float(_theta_used(module, xv, yv, 12.0)) - batch_q) < 1e-12
    assert int(module.num_threshold_updates) == 0
    _train_call(module, *_batch(10, 6, seed=1))
    state = {k: v.clone() for k, v in module.state_dict().items()}
    running = float(module.running_threshold)
    with torch.no_grad():  # no gradient recorded: no update, theta = running theta
        theta = _theta_used(module, xv, yv, 12.0)
    assert abs(float(theta) - running) < 1e-12
    module.eval()  # eval mode: no update even when gradients are recorded
    _, theta = _train_call(module, xv, yv)
    assert abs(float(theta) - running) < 1e-12
    for k, v in module.state_dict().items():
        assert torch.equal(v, state[k]), k
    module.train()
    _train_call(module, xv, yv)
    assert int(module.num_threshold_updates) == 2


@pytest.mark.parametrize("first", [False, True])
def test_a_nan_batch_leaves_the_running_theta_unchanged(first: bool) -> None:
    """NaN features (unchecked: check_finite=False, as under torch.compile) give a NaN loss for
    that call only: the EMA state is not poisoned for every later step."""
    kw: dict[str, Any] = {"relax_quantile": 0.5, "relax_momentum": 0.8, "check_finite": False}
    module, clean = RelaxedContrastiveLoss(**kw), RelaxedContrastiveLoss(**kw)
    if not first:
        for m in (module, clean):
            _train_call(m, *_batch(10, 6, seed=60))
    state = {k: v.clone() for k, v in module.state_dict().items()}
    x, y = _batch(10, 6, seed=61)
    x[3, 0] = math.nan
    loss, theta = _train_call(module, x, y)
    assert math.isnan(float(loss)) and math.isnan(float(theta))
    for k, v in module.state_dict().items():
        assert torch.equal(v, state[k]) or (v.isnan().all() and state[k].isnan().all()), k
    for step in range(2):  # later clean steps continue as if the NaN batch had been skipped
        batch = _batch(10, 6, seed=62 + step)
        (la, ta), (lb, tb) = _train_call(module, *batch), _train_call(clean, *batch)
        assert math.isfinite(float(la)) and torch.equal(la, lb) and torch.equal(ta, tb)
    assert torch.equal(module.running_threshold, clean.running_threshold)
    assert torch.equal(module.num_threshold_updates, clean.num_threshold_updates)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_low_precision_module_keeps_the_running_theta_in_float32(dtype: torch.dtype) -> None:
    """``module.to(bf16)`` (e.g. Lightning "bf16-true") must not round theta_t to 8 bits: with
    m = 0.99 a bf16 EMA stalls far from the batch quantiles (every update below half an ulp)."""
    kw: dict[str, Any] = {"relax_quantile": 0.5, "relax_momentum": 0.99}
    low, ref = RelaxedContrastiveLoss(**kw).to(dtype), RelaxedContrastiveLoss(**kw)
    assert low.running_threshold.dtype == torch.float32
    assert RelaxedContrastiveLoss(**kw).double().running_threshold.dtype == torch.float64
    _train_call(low, *_batch(10, 6, seed=70))
    _train_call(ref, *_batch(10, 6, seed=70))
    for step in range(3):
        x, y = _batch(10, 6, seed=71 + step)
        (_, ta), (_, tb) = _train_call(low, x, y), _train_call(ref, x, y)
        assert torch.equal(ta, tb)
    assert float(low.running_threshold) != float(low.running_threshold.to(dtype))  # not rounded


def test_running_theta_round_trips_through_state_dict() -> None:
    a = RelaxedContrastiveLoss(relax_quantile=0.6, relax_momentum=0.7, backend="chunked")
    for step in range(3):
        _train_call(a, *_batch(9, 4, seed=40 + step))
    state = a.state_dict()
    assert set(state) == {"running_threshold", "num_threshold_updates"}
    assert int(state["num_threshold_updates"]) == 3
    b = RelaxedContrastiveLoss(relax_quantile=0.6, relax_momentum=0.7, backend="chunked")
    b.load_state_dict(state)
    fresh = RelaxedContrastiveLoss(relax_quantile=0.6, relax_momentum=0.7, backend="chunked")
    for step in range(2):  # continues identically; a fresh module does not
        batch = _batch(9, 4, seed=50 + step)
        la, ta = _train_call(a, *batch)
        lb, tb = _train_call(b, *batch)
        lf, tf = _train_call(fresh, *batch)
        assert torch.equal(la, lb) and torch.equal(ta, tb)
        assert float(ta) != float(tf)
    assert torch.equal(a.running_threshold, b.running_threshold)
    # an absolute-threshold loss keeps no state (old checkpoints load unchanged)
    assert RelaxedContrastiveLoss(threshold=0.8).state_dict() == {}


def test_quantile_and_groups_share_the_diagonal_positives() -> None:
    """groups only remove negatives: theta is the quantile of the diagonal s_ii either way."""
    x, y = _batch(10, 4, seed=7)
    groups = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    module = RelaxedContrastiveLoss(relax_quantile=0.4)
    with_groups = _theta_used(module, x, y, 10.0, groups=groups)
    assert float(with_groups) == float(_theta_used(module, x, y, 10.0))
    assert abs(float(with_groups) - float(torch.quantile(_positives(x, y), 0.4))) < 1e-12


def test_tensor_theta_on_the_features_device_needs_no_new_graph() -> None:
    """A schedule: one 0-d tensor theta changed in place between calls gives the float results."""
    x, y = _batch(8, 4, seed=8)
    theta = torch.tensor(0.0, dtype=torch.float32)
    for value in (0.1, 0.3, 0.5):
        theta.fill_(value)
        got = relaxed_contrastive_loss(x, y, 10.0, threshold=theta, backend="dense")
        want = relaxed_contrastive_loss(x, y, 10.0, threshold=float(theta), backend="dense")
        torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_quantile_module_compiles_fullgraph_and_matches_eager() -> None:
    """No host read on the quantile/EMA path: ``torch.compile(fullgraph=True)`` traces it."""
    torch._dynamo.reset()
    x0, y0 = _batch(10, 6, seed=12, dtype=torch.float32)

    def run(module: Any) -> list[tuple[Any, ...]]:
        steps = []
        for k in range(3):
            x, y = (x0 + 0.1 * k).requires_grad_(), y0.clone().requires_grad_()
            loss = module(x, y, 14.0)
            loss.backward()
            steps.append((loss.detach(), x.grad, y.grad, module.running_threshold.clone()))
        return steps

    kwargs: dict[str, Any] = {"relax_quantile": 0.6, "relax_momentum": 0.5, "backend": "dense"}
    eager = run(RelaxedContrastiveLoss(**kwargs))
    compiled = run(torch.compile(RelaxedContrastiveLoss(**kwargs), fullgraph=True))
    for want, got in zip(eager, compiled, strict=True):
        assert_all_close(got, want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("backend", ["dense", "chunked"])
def test_no_host_read_on_the_quantile_and_tensor_theta_paths(backend: str) -> None:
    """Features (quantile mode, with the EMA state) or theta (tensor mode) that refuse every host
    read (``tests/_nosync.py``): forward and backward run, so nothing derived from them is read
    on the host (no device sync on GPU). ``check_finite=False``: the value checks are the one
    documented sync; ``logit_scale`` a float (a tensor scale's sign is read)."""
    from _nosync import NoSyncTensor, plain

    x, y = _batch(8, 4, seed=14, dtype=torch.float32)
    module = RelaxedContrastiveLoss(
        relax_quantile=0.5, relax_momentum=0.5, backend=backend, check_finite=False
    )
    for _ in range(2):
        xs = x.clone().as_subclass(NoSyncTensor).requires_grad_()
        ys = y.clone().as_subclass(NoSyncTensor).requires_grad_()
        out = module(xs, ys, 10.0, output_dict=True)
        out["contrastive_loss"].backward()
    theta = plain(out.diagnostics["threshold"])
    want = relaxed_contrastive_loss(x, y, 10.0, threshold=float(theta), backend=backend)
    torch.testing.assert_close(plain(out["contrastive_loss"]).detach(), want)
    assert int(plain(module.num_threshold_updates)) == 2
    schedule = torch.tensor(float(theta)).as_subclass(NoSyncTensor)
    xs = x.clone().requires_grad_()
    loss = relaxed_contrastive_loss(
        xs, y, 10.0, threshold=schedule, backend=backend, check_finite=False
    )
    loss.backward()
    torch.testing.assert_close(plain(loss).detach(), want)


@pytest.mark.parametrize("backend", ["dense", "chunked"])
def test_tensor_theta_compiles_once_for_every_value(backend: str) -> None:
    """A schedule under ``torch.compile``: a tensor theta is graph input, so new values reuse the
    graph (a Python float theta is specialised: a new value recompiles)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    x, y = _batch(8, 4, seed=13, dtype=torch.float32)

    def fn(a: Any, b: Any, th: Any) -> Any:
        return relaxed_contrastive_loss(a, b, 10.0, threshold=th, backend=backend)

    compiled = torch.compile(fn, fullgraph=True)
    theta = torch.tensor(0.0)
    for value in (0.1, 0.3, 0.5):
        theta.fill_(value)
        torch.testing.assert_close(compiled(x, y, theta), fn(x, y, value), atol=1e-6, rtol=1e-6)
    assert counters["stats"]["unique_graphs"] == 1


# ------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"relax_quantile": 0.0}, ValueError, r"relax_quantile must be in \(0, 1\)"),
        ({"relax_quantile": 1.0}, ValueError, r"relax_quantile must be in \(0, 1\)"),
        ({"relax_quantile": -0.2}, ValueError, r"relax_quantile must be in \(0, 1\)"),
        ({"relax_quantile": math.nan}, ValueError, r"relax_quantile must be in \(0, 1\)"),
        ({"relax_quantile": True}, TypeError, "relax_quantile must be a float"),
        ({"relax_quantile": "0.5"}, TypeError, "relax_quantile must be a float"),
        ({"relax_quantile": 0.5, "threshold": 0.8}, ValueError, "mutually exclusive"),
        ({"relax_quantile": 0.5, "threshold": None}, ValueError, "mutually exclusive"),
        ({"threshold": torch.tensor([0.5])}, ValueError, "threshold must be a 0-d tensor"),
        ({"threshold": torch.tensor(1)}, TypeError, "threshold must be a floating-point"),
        ({"threshold": torch.tensor(0.5, requires_grad=True)}, ValueError, "must not require grad"),
        ({"threshold": torch.tensor(math.nan)}, ValueError, "threshold must be in .* got the tensor value nan"),
        ({"threshold": torch.tensor(1.5)}, ValueError, r"threshold must be in \(-1, 1\]"),
        ({"threshold": torch.tensor(math.inf), "normalize": False}, ValueError, "threshold must be finite"),
        ({"threshold": torch.empty((), device="meta")}, ValueError, "threshold is on the meta device"),
    ],
)  # fmt: skip
def test_functional_errors_name_the_argument(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    x, y = _batch(6, 4, seed=0)
    with pytest.raises(error, match=match):
        relaxed_contrastive_loss(x, y, 10.0, **kwargs)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"relax_quantile": 1.2}, ValueError, r"relax_quantile must be in \(0, 1\)"),
        ({"relax_quantile": 0.5, "threshold": 0.8}, ValueError, "mutually exclusive"),
        ({"relax_quantile": 0.5, "relax_momentum": 1.0}, ValueError, r"relax_momentum must be in \[0, 1\)"),
        ({"relax_quantile": 0.5, "relax_momentum": -0.1}, ValueError, r"relax_momentum must be in \[0, 1\)"),
        ({"relax_quantile": 0.5, "relax_momentum": math.nan}, ValueError, r"relax_momentum must be in \[0, 1\)"),
        ({"relax_quantile": 0.5, "relax_momentum": None}, TypeError, "relax_momentum must be a float"),
        ({"relax_momentum": 0.9}, ValueError, "relax_momentum=0.9 needs relax_quantile"),
        ({"threshold": torch.tensor(0.5)}, TypeError, "threshold of RelaxedContrastiveLoss must be a float"),
    ],
)  # fmt: skip
def test_module_errors_name_the_argument(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        RelaxedContrastiveLoss(**kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device (CUDA)")
def test_tensor_theta_on_another_device_is_rejected() -> None:
    x, y = _batch(6, 4, seed=0)
    with pytest.raises(ValueError, match="threshold must be on the features' device"):
        relaxed_contrastive_loss(x.cuda(), y.cuda(), 10.0, threshold=torch.tensor(0.5))


def test_distributed_loss_takes_one_theta_source() -> None:
    from relaxclip.distributed import distributed_loss

    x, y = _batch(4, 3, seed=0)
    with pytest.raises(ValueError, match="threshold and threshold_fn are mutually exclusive"):
        distributed_loss(
            x, y, torch.tensor(1.0), 0.5, backend="dense", threshold_fn=lambda a, b: a.sum()
        )


# ------------------------------------------------------------ triton (CPU interpreter subprocess)


def _triton_worker() -> None:
    """Quantile mode vs absolute theta for the triton backend (fp32) against the float64
    reference and the dense backend; prints ``RESULTS {json}``."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("the worker must run with TRITON_INTERPRET=1")
    from relaxclip.backends import triton_available

    if not triton_available():
        print("RESULTS " + json.dumps({"_unavailable": True}))
        return
    results: dict[str, Any] = {}
    for name, groups in (("plain", None), ("groups", torch.tensor([0, 1, 0, 2, 3, 1, 4, 5] * 3))):
        x64, y64 = _batch(24, 16, seed=11)
        x, y = x64.float(), y64.float()
        q = 0.6
        theta = float(torch.quantile((F.normalize(x) * F.normalize(y)).sum(1).double(), q))
        module = RelaxedContrastiveLoss(relax_quantile=q, backend="triton")
        used = _theta_used(module, x, y, 12.0, groups=groups)

        def quantile(a: Any, b: Any, t: Any, groups: Any = groups, q: float = q) -> Any:
            return relaxed_contrastive_loss(
                a, b, t, relax_quantile=q, backend="triton", groups=groups
            )

        def absolute(a: Any, b: Any, t: Any, groups: Any = groups, th: float = float(used)) -> Any:
            return relaxed_contrastive_loss(a, b, t, threshold=th, backend="triton", groups=groups)

        def dense(a: Any, b: Any, t: Any, groups: Any = groups, q: float = q) -> Any:
            return relaxed_contrastive_loss(
                a, b, t, relax_quantile=q, backend="dense", groups=groups
            )

        def reference(a: Any, b: Any, t: Any, groups: Any = groups, th: float = float(used)) -> Any:
            return reference_loss(a, b, t, th, groups=groups)

        got = grads(quantile, x, y, 12.0)
        want = [v.double() for v in grads(reference, x.double(), y.double(), 12.0)]
        results[name] = {
            "theta_diff": abs(float(used) - theta),
            "vs_absolute": max(
                float((a - b).abs().max())
                for a, b in zip(got, grads(absolute, x, y, 12.0), strict=True)
            ),
            "vs_dense": max(
                float((a - b).abs().max())
                for a, b in zip(got, grads(dense, x, y, 12.0), strict=True)
            ),
            "vs_reference": max(
                # floor 0.1: dL/dt is a cancelling sum (~1e-2) with ~1e-7 absolute fp32 rounding
                float((a.double() - b).norm() / max(float(b.norm()), 0.1))
                for a, b in zip(got, want, strict=True)
            ),
            "relaxed_share": float(
                module(x, y, 12.0, output_dict=True).diagnostics["relaxed_share"]
            ),
        }
    print("RESULTS " + json.dumps(results))


def test_triton_quantile_mode_matches_absolute_and_reference() -> None:
    proc, res = run_under_interpreter(HERE)
    assert proc.returncode == 0 and res is not None, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    if res.get("_unavailable"):
        pytest.skip("the triton backend is not available under the interpreter here")
    for name, r in res.items():
        print(name, r)
        assert r["theta_diff"] < 1e-6, (name, r)  # fp32 s_ii vs float64 quantile
        assert r["vs_absolute"] <= 1e-6, (name, r)  # the same fp32 theta, the same kernel
        assert r["vs_dense"] < 1e-5, (name, r)
        assert r["vs_reference"] < 2e-5, (name, r)  # fp32 kernel vs float64 (dense: the same)
        assert 0.3 < r["relaxed_share"] < 0.5, (name, r)  # 1 - q = 0.4 of 24 pairs


if __name__ == "__main__":
    _triton_worker()


def test_quantile_attributes_assigned_later_are_validated() -> None:
    """``threshold`` is re-checked on every forward; the quantile attributes now are too (an
    out-of-range q used to fail deep inside with an index error, a bool was accepted)."""
    x, y = torch.randn(6, 4), torch.randn(6, 4)
    for attr, value, match in (
        ("relax_quantile", 1.5, "relax_quantile"),
        ("relax_quantile", True, "relax_quantile"),
        ("relax_momentum", 1.0, "relax_momentum"),
        ("threshold", 0.5, "mutually exclusive"),
    ):
        loss_fn = RelaxedContrastiveLoss(relax_quantile=0.5)
        setattr(loss_fn, attr, value)
        with pytest.raises((ValueError, TypeError), match=match):
            loss_fn(x, y, 10.0)
    smoothed = RelaxedContrastiveLoss(0.5)
    smoothed.relax_momentum = 0.9  # would be ignored: an absolute threshold has nothing to smooth
    with pytest.raises(ValueError, match="relax_momentum=0.9 needs relax_quantile"):
        smoothed(x, y, 10.0)
    absolute = RelaxedContrastiveLoss(0.5)
    absolute.threshold, absolute.relax_quantile = None, 0.5
    with pytest.raises(ValueError, match="running-threshold buffers"):
        absolute(x, y, 10.0)
