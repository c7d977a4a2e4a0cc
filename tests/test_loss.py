"""Tests for relaxclip.loss and its dense/chunked backends against an independent float64 reference."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from _reference import assert_all_close, grads, reference_loss, reference_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relaxclip.backends import AUTO_DENSE_MAX_LOGITS, chunked, dense, resolve_backend
from relaxclip.loss import DEFAULT_THRESHOLD, RelaxedContrastiveLoss, relaxed_contrastive_loss

HYP = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BACKENDS = [("dense", None), ("chunked", 1), ("chunked", 3), ("chunked", None)]


def clip_loss(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """open_clip's single-process algorithm: two logit matrices, two cross-entropies."""
    x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    labels = torch.arange(len(x))
    return (F.cross_entropy(t * x @ y.T, labels) + F.cross_entropy(t * y @ x.T, labels)) / 2


@st.composite
def problems(
    draw: st.DrawFn, max_b: int = 24, max_d: int = 12
) -> tuple[torch.Tensor, torch.Tensor, float, float | None]:
    b = draw(st.integers(1, max_b))
    d = draw(st.integers(1, max_d))
    seed = draw(st.integers(0, 2**31 - 1))
    noise = draw(st.floats(0.0, 2.0))
    t = draw(st.floats(0.5, 100.0))
    theta = draw(st.one_of(st.none(), st.floats(-0.99, 1.0)))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, d, generator=g, dtype=torch.float64)
    y = x + noise * torch.randn(b, d, generator=g, dtype=torch.float64)
    return x, y, t, theta


# ---------------------------------------------------------------- values and gradients vs reference


@HYP
@given(problems(), st.sampled_from(BACKENDS))
def test_matches_float64_reference(problem, backend) -> None:  # type: ignore[no-untyped-def]
    x, y, t, theta = problem
    name, chunk = backend
    got = grads(
        lambda a, b, s: relaxed_contrastive_loss(
            a, b, s, threshold=theta, backend=name, chunk_size=chunk
        ),
        x,
        y,
        t,
    )
    want = grads(lambda a, b, s: reference_loss(a, b, s, theta), x, y, t)
    assert got[0].dtype == torch.float64
    assert_all_close(got, want)


@HYP
@given(problems(), st.sampled_from(BACKENDS))
def test_threshold_one_is_clip_loss(problem, backend) -> None:  # type: ignore[no-untyped-def]
    x, y, t, _ = problem
    name, chunk = backend
    want = grads(clip_loss, x, y, t)
    for theta in (1.0, None):
        got = grads(
            lambda a, b, s, th=theta: relaxed_contrastive_loss(
                a, b, s, threshold=th, backend=name, chunk_size=chunk
            ),
            x,
            y,
            t,
        )
        assert_all_close(got, want)


@HYP
@given(problems(), st.integers(1, 30))
def test_chunked_equals_dense_any_chunk(problem, chunk) -> None:  # type: ignore[no-untyped-def]
    x, y, t, theta = problem
    a = grads(
        lambda u, v, s: relaxed_contrastive_loss(u, v, s, threshold=theta, backend="dense"), x, y, t
    )
    b = grads(
        lambda u, v, s: relaxed_contrastive_loss(
            u, v, s, threshold=theta, backend="chunked", chunk_size=chunk
        ),
        x,
        y,
        t,
    )
    assert_all_close(a, b)


@HYP
@given(problems(), st.sampled_from(BACKENDS))
def test_symmetric_in_image_and_text(problem, backend) -> None:  # type: ignore[no-untyped-def]
    x, y, t, theta = problem
    name, chunk = backend
    a = relaxed_contrastive_loss(x, y, t, threshold=theta, backend=name, chunk_size=chunk)
    b = relaxed_contrastive_loss(y, x, t, threshold=theta, backend=name, chunk_size=chunk)
    torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


@HYP
@given(problems(), st.sampled_from(BACKENDS), st.integers(0, 2**31 - 1))
def test_joint_permutation_invariance(problem, backend, seed) -> None:  # type: ignore[no-untyped-def]
    x, y, t, theta = problem
    name, chunk = backend
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))

    def fn(u, v, s):
        return relaxed_contrastive_loss(u, v, s, threshold=theta, backend=name, chunk_size=chunk)

    base = grads(fn, x, y, t)
    permuted = grads(fn, x[perm], y[perm], t)
    torch.testing.assert_close(base[0], permuted[0], atol=1e-12, rtol=1e-12)
    # gradients are permutation-equivariant
    assert_all_close((base[1][perm], base[2][perm], base[3]), permuted[1:])


@HYP
@given(problems())
def test_relaxation_never_lowers_the_loss(problem) -> None:  # type: ignore[no-untyped-def]
    x, y, t, theta = problem
    relaxed = relaxed_contrastive_loss(x, y, t, threshold=theta)
    plain = relaxed_contrastive_loss(x, y, t, threshold=1.0)
    assert float(relaxed) >= float(plain) - 1e-12
    sims = (F.normalize(x, dim=1) * F.normalize(y, dim=1)).sum(1)
    if theta is None or bool((sims <= theta).all()):
        torch.testing.assert_close(relaxed, plain, atol=1e-12, rtol=1e-12)
    elif len(x) > 1 and float(plain) > 1e-6 and bool((sims > theta + 1e-6).any()):
        # a clamped positive strictly lowers its softmax probability (B = 1 has no negatives)
        assert float(relaxed) > float(plain)


@pytest.mark.parametrize("name,chunk", BACKENDS)
def test_no_gradient_through_relaxed_positives(name: str, chunk: int | None) -> None:
    # With X = I and normalize=False, s_ij = Y[j, i], so dL/dY is dL/dS transposed.
    b, theta = 6, 0.5
    g = torch.Generator().manual_seed(1)
    s = torch.rand(b, b, generator=g, dtype=torch.float64) * 0.4
    s.diagonal().copy_(torch.tensor([0.9, 0.2, 0.7, 0.45, 0.95, 0.1], dtype=torch.float64))
    x = torch.eye(b, dtype=torch.float64)
    y = s.T.clone().requires_grad_()
    loss = relaxed_contrastive_loss(
        x, y, 10.0, threshold=theta, normalize=False, backend=name, chunk_size=chunk
    )
    (dy,) = torch.autograd.grad(loss, y)
    ds = dy.T
    relaxed = s.diagonal() > theta
    assert torch.all(ds.diagonal()[relaxed] == 0)
    assert torch.all(ds.diagonal()[~relaxed] < 0)  # unrelaxed positives are pulled closer
    off = ~torch.eye(b, dtype=torch.bool)
    assert torch.all(ds[off] > 0)  # every negative is still pushed apart


# ---------------------------------------------------------------- gradcheck


@pytest.mark.parametrize("name,chunk", BACKENDS)
@pytest.mark.parametrize("theta", [None, 0.3, -0.5])
def test_gradcheck_symmetric(name: str, chunk: int | None, theta: float | None) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 5, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(7, 5, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)

    def fn(a, b, s):
        return relaxed_contrastive_loss(a, b, s, threshold=theta, backend=name, chunk_size=chunk)

    assert torch.autograd.gradcheck(fn, (x, y, t))

    # unnormalised features go straight into the custom Function
    def fn2(a, b, s):
        return relaxed_contrastive_loss(
            a, b, s, threshold=theta, normalize=False, backend=name, chunk_size=chunk
        )

    assert torch.autograd.gradcheck(fn2, (x * 0.3, y * 0.3, t))


@pytest.mark.parametrize("module", [dense, chunked])
@pytest.mark.parametrize("theta", [None, 0.2])
@pytest.mark.parametrize("offset", [0, 3, 6])
def test_rows_loss_sum_reference_and_gradcheck(module, theta: float | None, offset: int) -> None:  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(offset)
    q = torch.randn(4, 6, generator=g, dtype=torch.float64)
    k = torch.randn(10, 6, generator=g, dtype=torch.float64)
    k[offset : offset + 4] = q + 0.3 * torch.randn(4, 6, generator=g, dtype=torch.float64)
    q, k = F.normalize(q, dim=1).requires_grad_(), F.normalize(k, dim=1).requires_grad_()
    t = torch.tensor(4.0, dtype=torch.float64, requires_grad=True)
    kwargs = {"chunk_size": 3} if module is chunked else {}
    got = grads(
        lambda a, b, s: module.rows_loss_sum(a, b, s, theta, offset, **kwargs),
        q.detach(),
        k.detach(),
        4.0,
    )
    want = grads(
        lambda a, b, s: reference_rows(a, b, s, theta, offset), q.detach(), k.detach(), 4.0
    )
    assert_all_close(got, want)
    assert torch.autograd.gradcheck(
        lambda a, b, s: module.rows_loss_sum(a, b, s, theta, offset, **kwargs), (q, k, t)
    )


# ---------------------------------------------------------------- dtypes, scale, module


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["dense", "chunked"])
def test_half_precision_accumulates_in_fp32(dtype: torch.dtype, name: str) -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(33, 16, generator=g).to(dtype).requires_grad_()
    y = (x.detach().float() + 0.1 * torch.randn(33, 16, generator=g)).to(dtype).requires_grad_()
    t = torch.tensor(100.0, requires_grad=True)
    loss = relaxed_contrastive_loss(x, y, t, threshold=0.9, backend=name, chunk_size=8)
    loss.backward()
    assert loss.dtype == torch.float32
    assert x.grad is not None and y.grad is not None and t.grad is not None
    assert x.grad.dtype == dtype and y.grad.dtype == dtype
    assert all(bool(torch.isfinite(v).all()) for v in (loss, x.grad, y.grad, t.grad))
    ref = reference_loss(x.detach(), y.detach(), 100.0, 0.9)  # the rounded inputs, in float64
    assert abs(float(loss.detach()) - float(ref)) <= 1e-3 * max(1.0, abs(float(ref)))


def test_float64_end_to_end() -> None:
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    for name in ("dense", "chunked"):
        loss = relaxed_contrastive_loss(x, y, t, backend=name)
        assert loss.dtype == torch.float64
        gx, gy, gt = torch.autograd.grad(loss, (x, y, t))
        assert gx.dtype == gy.dtype == gt.dtype == torch.float64


def test_float_scale_equals_tensor_scale_and_float32_scale_with_float64_features() -> None:
    x, y = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    a = relaxed_contrastive_loss(x, y, 5.0)
    b = relaxed_contrastive_loss(x, y, torch.tensor(5.0))
    c = relaxed_contrastive_loss(x, y, torch.tensor([5.0], dtype=torch.float64))
    torch.testing.assert_close(a, b.to(a.dtype))
    torch.testing.assert_close(a, c)
    # a float32 nn.Parameter as scale gets its gradient in float32
    scale = torch.nn.Parameter(torch.tensor(math.log(5.0)))
    relaxed_contrastive_loss(x, y, scale.exp()).backward()
    assert scale.grad is not None and scale.grad.dtype == torch.float32


def test_retain_graph_backward_twice_gives_same_gradients() -> None:
    for name in ("dense", "chunked"):
        x = torch.randn(9, 4, requires_grad=True)
        y = torch.randn(9, 4, requires_grad=True)
        loss = relaxed_contrastive_loss(x, y, 8.0, threshold=0.1, backend=name, chunk_size=4)
        first = torch.autograd.grad(loss, (x, y), retain_graph=True)
        second = torch.autograd.grad(loss, (x, y))
        assert_all_close(first, second, atol=0, rtol=0)


def test_no_grad_and_single_sample() -> None:
    with torch.no_grad():
        value = relaxed_contrastive_loss(torch.randn(4, 3), torch.randn(4, 3), 10.0)
    assert value.shape == () and math.isfinite(float(value))
    # B = 1: both softmaxes are over one element, the loss is exactly 0 with a zero gradient
    x = torch.randn(1, 3, requires_grad=True)
    loss = relaxed_contrastive_loss(x, torch.randn(1, 3), 10.0)
    loss.backward()
    assert float(loss.detach()) == 0.0 and x.grad is not None and float(x.grad.abs().max()) == 0.0


def test_module_matches_functional_and_output_dict() -> None:
    x, y = torch.randn(5, 4), torch.randn(5, 4)
    module = RelaxedContrastiveLoss(threshold=0.2)
    torch.testing.assert_close(
        module(x, y, 10.0), relaxed_contrastive_loss(x, y, 10.0, threshold=0.2)
    )
    out = module(x, y, 10.0, output_dict=True)
    assert set(out) == {"contrastive_loss"}
    assert RelaxedContrastiveLoss().threshold == DEFAULT_THRESHOLD
    assert "threshold=0.2" in repr(module)


def test_auto_backend_rule() -> None:
    cpu = torch.device("cpu")
    assert resolve_backend("auto", cpu, 64, 64) == "dense"
    side = math.isqrt(AUTO_DENSE_MAX_LOGITS)
    assert resolve_backend("auto", cpu, side, side) == "dense"
    assert resolve_backend("auto", cpu, side + 1, side + 1) == "chunked"
    assert resolve_backend("chunked", cpu, 2, 2) == "chunked"
    # never triton for float64 / float32 features (the kernel rejects fp64; fp32 has no tensor cores)
    cuda = torch.device("cuda")
    for dtype in (torch.float64, torch.float32):
        assert resolve_backend("auto", cuda, 8192, 8192, dtype) == "chunked"


# ---------------------------------------------------------------- bad input


def _ok() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(4, 3), torch.randn(4, 3)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"image_features": torch.randn(4)}, ValueError, "image_features must be 2-D"),
        ({"text_features": torch.randn(4, 3, 1)}, ValueError, "text_features must be 2-D"),
        ({"text_features": torch.randn(5, 3)}, ValueError, "same shape"),
        ({"text_features": torch.randn(4, 2)}, ValueError, "same shape"),
        (
            {"image_features": torch.randn(0, 3), "text_features": torch.randn(0, 3)},
            ValueError,
            "B >= 1",
        ),
        (
            {"image_features": torch.randn(4, 0), "text_features": torch.randn(4, 0)},
            ValueError,
            "D >= 1",
        ),
        ({"text_features": torch.randn(4, 3, dtype=torch.float64)}, ValueError, "same dtype"),
        ({"image_features": torch.ones(4, 3, dtype=torch.long)}, TypeError, "floating-point"),
        ({"image_features": [[1.0]]}, TypeError, "image_features must be a torch.Tensor"),
        (
            {"image_features": torch.full((4, 3), float("nan"))},
            ValueError,
            "image_features contains NaN",
        ),
        (
            {"text_features": torch.full((4, 3), float("inf"))},
            ValueError,
            "text_features contains NaN or Inf",
        ),
        ({"logit_scale": float("nan")}, ValueError, "logit_scale must be finite"),
        ({"logit_scale": torch.tensor(float("inf"))}, ValueError, "logit_scale must be finite"),
        ({"logit_scale": -1.0}, ValueError, "> 0"),
        ({"logit_scale": torch.ones(2)}, ValueError, "logit_scale must be a scalar"),
        ({"logit_scale": "10"}, TypeError, "logit_scale must be a float"),
        ({"threshold": 1.5}, ValueError, r"threshold must be in \(-1, 1\]"),
        ({"threshold": -1.0}, ValueError, "threshold must be in"),
        ({"threshold": float("nan")}, ValueError, "threshold must be in"),
        ({"threshold": "0.8"}, TypeError, "threshold must be a float"),
        ({"backend": "cuda"}, ValueError, "backend must be one of"),
        ({"chunk_size": 0}, ValueError, "chunk_size must be >= 1"),
        ({"chunk_size": 2.5}, TypeError, "chunk_size must be a positive int"),
    ],
)
def test_bad_input_raises_clear_error(kwargs: dict, exc: type[Exception], match: str) -> None:
    x, y = _ok()
    args = {"image_features": x, "text_features": y, "logit_scale": 10.0}
    options = {}
    for key, value in kwargs.items():
        (args if key in args else options)[key] = value
    with pytest.raises(exc, match=match):
        relaxed_contrastive_loss(
            args["image_features"], args["text_features"], args["logit_scale"], **options
        )


def test_check_finite_can_be_switched_off() -> None:
    x, y = _ok()
    x[0, 0] = float("nan")
    value = relaxed_contrastive_loss(x, y, 10.0, check_finite=False)
    assert math.isnan(float(value))


def test_module_rejects_bad_options_at_construction() -> None:
    with pytest.raises(ValueError, match="threshold"):
        RelaxedContrastiveLoss(threshold=2.0)
    with pytest.raises(ValueError, match="backend"):
        RelaxedContrastiveLoss(backend="fast")
    with pytest.raises(ValueError, match="chunk_size"):
        RelaxedContrastiveLoss(chunk_size=-3)


@pytest.mark.parametrize("name", ["dense", "chunked"])
def test_autocast_region_does_not_lower_the_loss_precision(name: str) -> None:
    # open_clip computes the loss inside torch.autocast: the backends must still accumulate in fp32
    g = torch.Generator().manual_seed(5)
    x0 = torch.randn(64, 32, generator=g)
    y0 = x0 + 0.5 * torch.randn(64, 32, generator=g)
    t0 = torch.tensor(100.0)
    want = grads(
        lambda a, b, s: relaxed_contrastive_loss(
            a, b, s, threshold=0.8, backend=name, chunk_size=16
        ),
        x0,
        y0,
        100.0,
    )
    x, y = x0.clone().requires_grad_(), y0.clone().requires_grad_()
    t = t0.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = relaxed_contrastive_loss(x, y, t, threshold=0.8, backend=name, chunk_size=16)
        got = (loss, *torch.autograd.grad(loss, (x, y, t)))  # backward inside the region too
    assert loss.dtype == torch.float32
    assert_all_close(got, want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["dense", "chunked"])
def test_double_backward_raises_instead_of_being_wrong(name: str) -> None:
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    loss = relaxed_contrastive_loss(x, y, 5.0, backend=name)
    (gx,) = torch.autograd.grad(loss, x, create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(gx.sum(), y)
