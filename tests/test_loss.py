"""Tests for relaxclip.loss and its dense/chunked backends against an independent float64 reference."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _reference import (
    BACKENDS,
    HYP,
    assert_all_close,
    feature_problems,
    grads,
    reference_loss,
    reference_rows,
)
from hypothesis import given
from hypothesis import strategies as st

from relaxclip.backends import AUTO_DENSE_MAX_LOGITS, chunked, dense, resolve_backend
from relaxclip.loss import (
    DEFAULT_THRESHOLD,
    DIAGNOSTIC_QUANTILES,
    LossOutput,
    RelaxedContrastiveLoss,
    positive_pair_stats,
    relaxed_contrastive_loss,
)


def clip_loss(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """open_clip's single-process algorithm: two logit matrices, two cross-entropies."""
    x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    labels = torch.arange(len(x))
    return (F.cross_entropy(t * x @ y.T, labels) + F.cross_entropy(t * y @ x.T, labels)) / 2


def problems(
    max_b: int = 24, max_d: int = 12
) -> st.SearchStrategy[tuple[torch.Tensor, torch.Tensor, float, float | None]]:
    """``(x, y, t, theta)`` (see ``_reference.feature_problems``)."""
    return feature_problems(max_b, max_d).map(lambda p: p[:4])


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
    chunk = 8 if name == "chunked" else None  # dense takes no chunk_size (it would raise)
    loss = relaxed_contrastive_loss(x, y, t, threshold=0.9, backend=name, chunk_size=chunk)
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
        chunk = 4 if name == "chunked" else None
        loss = relaxed_contrastive_loss(x, y, 8.0, threshold=0.1, backend=name, chunk_size=chunk)
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
            "image_features must be finite, got NaN or Inf",
        ),
        (
            {"text_features": torch.full((4, 3), float("inf"))},
            ValueError,
            "text_features must be finite, got NaN or Inf",
        ),
        ({"logit_scale": float("nan")}, ValueError, "logit_scale must be finite"),
        ({"logit_scale": torch.tensor(float("inf"))}, ValueError, "logit_scale must be finite"),
        ({"logit_scale": -1.0}, ValueError, "> 0"),
        ({"logit_scale": torch.ones(2)}, ValueError, "logit_scale must be a scalar"),
        ({"logit_scale": "10"}, TypeError, "logit_scale must be a float"),
        ({"threshold": 1.5}, ValueError, r"threshold must be a number in \(-1.0, 1.0\], got 1.5"),
        ({"threshold": -1.0}, ValueError, r"threshold must be a number in \(-1.0, 1.0\], got -1.0"),
        (
            {"threshold": float("nan")},
            ValueError,
            r"threshold must be a number in \(-1.0, 1.0\], got nan",
        ),
        ({"threshold": "0.8"}, TypeError, "threshold must be a real number, got str"),
        ({"backend": "cuda"}, ValueError, "backend must be one of"),
        ({"backend": None}, TypeError, "backend must be one of .*, got None"),
        ({"chunk_size": 0}, ValueError, "chunk_size must be an int >= 1, got 0"),
        ({"chunk_size": 2.5}, TypeError, "chunk_size must be an int, got float 2.5"),
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


def test_arguments_are_checked_before_the_tensors_as_the_module_does() -> None:
    """A bad threshold is named first by the function too, not after a bad feature tensor."""
    _, y = _ok()
    with pytest.raises(ValueError, match=r"threshold must be a number in \(-1.0, 1.0\]"):
        relaxed_contrastive_loss("x", y, 10.0, threshold=1.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["dense", "chunked"])
def test_autocast_region_does_not_lower_the_loss_precision(name: str) -> None:
    # open_clip computes the loss inside torch.autocast: the backends must still accumulate in fp32
    g = torch.Generator().manual_seed(5)
    x0 = torch.randn(64, 32, generator=g)
    y0 = x0 + 0.5 * torch.randn(64, 32, generator=g)
    t0 = torch.tensor(100.0)
    chunk = 16 if name == "chunked" else None
    want = grads(
        lambda a, b, s: relaxed_contrastive_loss(
            a, b, s, threshold=0.8, backend=name, chunk_size=chunk
        ),
        x0,
        y0,
        100.0,
    )
    x, y = x0.clone().requires_grad_(), y0.clone().requires_grad_()
    t = t0.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = relaxed_contrastive_loss(x, y, t, threshold=0.8, backend=name, chunk_size=chunk)
        got = (loss, *torch.autograd.grad(loss, (x, y, t)))  # backward inside the region too
    assert loss.dtype == torch.float32
    assert_all_close(got, want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["dense", "chunked"])
@pytest.mark.parametrize("normalize", [True, False])
def test_double_backward_raises_instead_of_being_wrong(name: str, normalize: bool) -> None:
    """The analytic backward is not differentiable: ``create_graph=True`` must raise, not give a
    Hessian that silently misses the loss's own second-order terms."""
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    loss = relaxed_contrastive_loss(x, y, 5.0, backend=name, normalize=normalize)
    with pytest.raises(RuntimeError, match="no second derivative.*create_graph=True"):
        torch.autograd.grad(loss, x, create_graph=True)
    (gx,) = torch.autograd.grad(relaxed_contrastive_loss(x, y, 5.0, backend=name), x)
    assert gx.shape == x.shape and not gx.requires_grad  # first order is unaffected


# ---------------------------------------------------------------- backend options (issue 11 item 3)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"backend": "dense", "chunk_size": 4}, ValueError, "'chunk_size' is not an option of backend 'dense'"),
        ({"backend": "dense", "backend_options": {"allow_tf32": True}}, ValueError, "'allow_tf32' is not an option of backend 'dense'"),
        ({"backend": "chunked", "backend_options": {"chunksize": 4}}, ValueError, "'chunksize' is not an option of backend 'chunked'.*'chunk_size'"),
        ({"backend": "chunked", "backend_options": {"config": None}}, ValueError, "'config' is not an option of backend 'chunked'"),
        ({"backend": "triton", "chunk_size": 4}, ValueError, "'chunk_size' is not an option of backend 'triton'"),
        ({"chunk_size": 4}, ValueError, "need an explicit backend.*'chunk_size' is an option of backend 'chunked'"),
        ({"backend_options": {"allow_tf32": True}}, ValueError, "need an explicit backend.*'triton'"),
        ({"backend_options": {"tile": 4}}, ValueError, "'tile' is not an option of any backend"),
        ({"backend": "chunked", "chunk_size": 3, "backend_options": {"chunk_size": 3}}, ValueError, "chunk_size must be given once, got it both"),
        ({"backend": "dense", "chunk_size": 4, "backend_options": {"chunk_size": 3}}, ValueError, "chunk_size must be given once, got it both"),
        ({"backend": "chunked", "backend_options": [("chunk_size", 3)]}, TypeError, "backend_options must be a mapping"),
        ({"backend": "chunked", "backend_options": {"chunk_size": 0}}, ValueError, "chunk_size must be an int >= 1, got 0"),
        ({"backend": "chunked", "chunk_size": True}, TypeError, "chunk_size must be an int, got bool"),
        ({"backend": "chunked", "chunk_size": "8"}, TypeError, "chunk_size must be an int, got str"),
        ({"backend": "triton", "backend_options": {"allow_tf32": 1}}, TypeError, "allow_tf32 must be True or False"),
        ({"backend": "triton", "backend_options": {"config": {"block_m": 32}}}, TypeError, "config must be a relaxclip.backends.triton.TritonConfig"),
    ],
)  # fmt: skip
def test_backend_options_are_validated_against_the_backend(
    kwargs: dict, exc: type[Exception], match: str
) -> None:
    x, y = _ok()
    with pytest.raises(exc, match=match):
        relaxed_contrastive_loss(x, y, 10.0, **kwargs)
    with pytest.raises(exc, match=match):  # the module validates at construction
        RelaxedContrastiveLoss(**kwargs)


def test_backend_and_options_assigned_after_construction_are_validated() -> None:
    """Before: a raw ``TypeError: symmetric_loss_sum() got an unexpected keyword argument``."""
    x, y = _ok()
    module = RelaxedContrastiveLoss(backend="chunked", chunk_size=2)
    module.backend = "dense"
    with pytest.raises(ValueError, match="'chunk_size' is not an option of backend 'dense'"):
        module(x, y, 10.0)
    module.backend = "auto"
    with pytest.raises(ValueError, match="need an explicit backend"):
        module(x, y, 10.0)
    module = RelaxedContrastiveLoss(backend="dense")
    module.backend_options = {"chunk_size": 2}
    with pytest.raises(ValueError, match="'chunk_size' is not an option of backend 'dense'"):
        module(x, y, 10.0)
    module = RelaxedContrastiveLoss(backend="chunked", chunk_size=2)
    module.backend_options = {"chunk_size": 3}  # a valid new option is used
    torch.testing.assert_close(module(x, y, 10.0), relaxed_contrastive_loss(x, y, 10.0))


@pytest.mark.parametrize("flag", ["normalize", "check_finite"])
@pytest.mark.parametrize("value", ["no", "False", 0, 1, None, np.bool_(False)])
def test_flags_are_exactly_true_or_false(flag: str, value: object) -> None:
    """Before: ``normalize="no"`` was read as True (the normalised loss, silently)."""
    x, y = _ok()
    match = f"{flag} must be True or False"
    with pytest.raises(TypeError, match=match):
        relaxed_contrastive_loss(x, y, 10.0, **{flag: value})
    with pytest.raises(TypeError, match=match):
        RelaxedContrastiveLoss(**{flag: value})
    module = RelaxedContrastiveLoss()
    setattr(module, flag, value)
    with pytest.raises(TypeError, match=match):
        module(x, y, 10.0)
    if flag == "normalize":
        with pytest.raises(TypeError, match=match):
            positive_pair_stats(x, y, normalize=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [np.int64(3), np.int32(3), np.uint8(3), 3])
def test_chunk_size_accepts_numpy_integers(size: object, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []
    original = chunked.symmetric_loss_sum

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(kwargs["chunk_size"])
        return original(*args, **kwargs)

    monkeypatch.setattr(chunked, "symmetric_loss_sum", spy)
    x, y = _ok()
    want = relaxed_contrastive_loss(x, y, 10.0, backend="dense")
    got = relaxed_contrastive_loss(x, y, 10.0, backend="chunked", chunk_size=size)  # type: ignore[arg-type]
    module = RelaxedContrastiveLoss(backend="chunked", backend_options={"chunk_size": size})
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(module(x, y, 10.0), want)
    assert seen == [3, 3] and all(type(v) is int for v in seen)  # reached the backend, as int


def test_backend_entry_points_take_only_their_declared_options() -> None:
    """No backend swallows unknown keywords (``**_``): a misspelt option cannot vanish."""
    from relaxclip.backends import BACKEND_MODULES, backend_options

    for name in BACKEND_MODULES:
        module = BACKEND_MODULES[name]()
        for fn in (module.symmetric_loss_sum, module.rows_loss_sum):
            params = inspect.signature(fn).parameters.values()
            assert not any(p.kind is p.VAR_KEYWORD for p in params), (name, fn.__name__)
            keyword_only = {p.name for p in params if p.kind is p.KEYWORD_ONLY}
            # ``groups`` is per-batch data (issue 14), every other keyword a declared option
            assert keyword_only == set(backend_options(name)) | {"groups"}, (name, fn.__name__)
    x = torch.randn(3, 2, dtype=torch.float64)
    t = torch.tensor(2.0, dtype=torch.float64)
    with pytest.raises(TypeError, match="chunk_size"):
        dense.symmetric_loss_sum(x, x, t, None, chunk_size=2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="chunk_sz"):
        chunked.rows_loss_sum(x, x, t, None, 0, chunk_sz=2)  # type: ignore[call-arg]


# ---------------------------------------------------------------- open_clip drop-in (issue 12 item 3)


@pytest.mark.parametrize(
    "bias",
    [-10.0, 3, torch.tensor(-10.0), torch.tensor([2.5]), torch.tensor(-10.0, dtype=torch.float64)],
)
def test_scalar_logit_bias_cancels_and_gets_zero_gradient(bias: object) -> None:
    g = torch.Generator().manual_seed(4)
    x0, y0 = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    module = RelaxedContrastiveLoss(threshold=0.3)
    want = grads(lambda a, b, s: module(a, b, s), x0, y0, 12.0)
    b = bias.clone().requires_grad_() if isinstance(bias, torch.Tensor) else bias
    got = grads(lambda a, c, s: module(a, c, s, b), x0, y0, 12.0)  # positional, as ClipLoss
    assert_all_close(got, want, atol=0, rtol=0)  # the bias cancels exactly
    out = module(x0, y0, 12.0, logit_bias=b, output_dict=True)
    assert set(out) == {"contrastive_loss"}
    torch.testing.assert_close(out["contrastive_loss"], want[0], atol=0, rtol=0)
    if isinstance(b, torch.Tensor):  # a learned bias stays in the graph with an exact zero gradient
        (gb,) = torch.autograd.grad(module(x0, y0, 12.0, b), b)
        assert gb.shape == b.shape and bool((gb == 0).all())
    functional = relaxed_contrastive_loss(x0, y0, 12.0, threshold=0.3, logit_bias=b)
    torch.testing.assert_close(functional, want[0], atol=0, rtol=0)


@pytest.mark.parametrize(
    "bias,exc,match",
    [
        (torch.zeros(7, 7), ValueError, "logit_bias must be a scalar.*per-logit bias"),
        (torch.zeros(2), ValueError, "logit_bias must be a scalar"),
        (True, TypeError, "logit_bias must be None, a float or a scalar tensor, got bool"),
        ("0", TypeError, "logit_bias must be None"),
        (float("nan"), ValueError, "logit_bias must be finite"),
        (torch.tensor(float("inf")), ValueError, "logit_bias must be finite"),
        (torch.tensor(1), TypeError, "logit_bias must be a floating-point tensor"),
    ],
)
def test_bad_logit_bias_raises(bias: object, exc: type[Exception], match: str) -> None:
    x, y = _ok()
    with pytest.raises(exc, match=match):
        RelaxedContrastiveLoss()(x, y, 10.0, bias)
    with pytest.raises(exc, match=match):
        relaxed_contrastive_loss(x, y, 10.0, logit_bias=bias)  # type: ignore[arg-type]


def test_output_dict_must_be_bool() -> None:
    x, y = _ok()
    with pytest.raises(TypeError, match="output_dict must be True or False"):
        RelaxedContrastiveLoss()(x, y, 10.0, None, "yes")


# ---------------------------------------------------------------- torch.compile (issue 12 item 5)


@pytest.mark.slow  # ~45 s on a loaded 2-core machine: inductor builds C++ kernels
def test_compiles_fullgraph_with_inductor_and_matches_eager() -> None:
    """dense and chunked, default ``check_finite=True``: no graph break (``fullgraph=True`` raises
    on one; before, the finite checks' host reads broke the graph), same value and gradients."""
    g = torch.Generator().manual_seed(8)
    x0 = torch.randn(10, 6, generator=g)
    y0 = x0 + 0.5 * torch.randn(10, 6, generator=g)
    torch._dynamo.reset()
    for backend, options in (("dense", {}), ("chunked", {"chunk_size": 4})):
        module = RelaxedContrastiveLoss(threshold=0.7, backend=backend, backend_options=options)
        compiled = torch.compile(module, fullgraph=True, backend="inductor")
        want = grads(module, x0, y0, 14.0)
        got = grads(compiled, x0, y0, 14.0)
        assert_all_close(got, want, atol=1e-6, rtol=1e-5)
        assert float((F.normalize(x0) * F.normalize(y0)).sum(1).max()) > 0.7  # some relaxed


# ---------------------------------------------------------------- diagnostics (issue 12 item 6)


def _known_cosines(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit features with s_ii = c_i exactly: x_i = (1, 0), y_i = (c_i, sqrt(1 - c_i^2)), scaled."""
    x = torch.stack([torch.ones_like(c), torch.zeros_like(c)], dim=1) * 3.0
    y = torch.stack([c, (1 - c**2).sqrt()], dim=1) * 0.5
    return x, y


def test_output_dict_diagnostics_are_the_positive_pair_statistics() -> None:
    c = torch.tensor([0.95, -0.2, 0.81, 0.5, 0.79, 0.99, 0.1, 0.3], dtype=torch.float64)
    x, y = _known_cosines(c)
    module = RelaxedContrastiveLoss(threshold=0.8)
    out = module(x, y, 10.0, output_dict=True)
    assert isinstance(out, LossOutput) and set(out) == {"contrastive_loss"}
    torch.testing.assert_close(sum(out.values()), module(x, y, 10.0))  # open_clip sums the dict
    d = out.diagnostics
    assert set(d) == {
        "relaxed_share",
        "positive_sim_mean",
        "positive_sim_q10",
        "positive_sim_q50",
        "positive_sim_q90",
        "threshold",  # issue 18: the theta the loss used
    }
    assert float(d["threshold"]) == 0.8 and d["threshold"].dtype == torch.float64
    assert float(d["relaxed_share"]) == 3 / 8  # 0.95, 0.81, 0.99 > 0.8
    torch.testing.assert_close(d["positive_sim_mean"], c.mean())
    for q in DIAGNOSTIC_QUANTILES:  # numpy's default (linear) definition, independently
        want = float(np.quantile(c.numpy(), q))
        assert abs(float(d[f"positive_sim_q{round(q * 100):02d}"]) - want) < 1e-12
    assert all(v.grad_fn is None and v.shape == () for v in d.values())
    assert (
        float(
            RelaxedContrastiveLoss(None)(x, y, 10.0, output_dict=True).diagnostics["relaxed_share"]
        )
        == 0
    )


def test_diagnostics_add_no_matmul_and_handle_dtypes_and_empty_batches() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    x, y = torch.randn(64, 16), torch.randn(64, 16)
    with FlopCounterMode(display=False) as counter:
        positive_pair_stats(x, y, 0.5)
    assert counter.get_total_flops() == 0  # no B x B (or any) matmul, only a row-wise dot
    stats = positive_pair_stats(x.bfloat16(), y.bfloat16(), 0.5)
    assert all(v.dtype == torch.float32 for v in stats.values())
    stats64 = positive_pair_stats(x.double(), y.double(), None)
    assert all(v.dtype == torch.float64 for v in stats64.values())
    empty = positive_pair_stats(torch.randn(0, 16), torch.randn(0, 16))  # a rank with no rows
    assert all(math.isnan(float(v)) for v in empty.values())
    with pytest.raises(ValueError, match="same shape"):
        positive_pair_stats(x, y[:3])


# ---------------------------------------------------------------- issue 13: silent wrong results


@pytest.mark.parametrize(
    "dtype,magnitude",
    [(torch.float32, 1e20), (torch.float32, 1e-30), (torch.bfloat16, 1e30), (torch.float64, 1e160)],
)
@pytest.mark.parametrize("name", ["dense", "chunked"])
def test_large_and_tiny_features_are_normalised_exactly(
    dtype: torch.dtype, magnitude: float, name: str
) -> None:
    """Issue 13 item 3: the squared norm of 1e20 overflowed fp32, every row became 0 and the loss
    was log B with zero gradients; cosine similarity is scale-invariant, so it must not change."""
    g = torch.Generator().manual_seed(9)
    x0 = torch.randn(6, 5, generator=g, dtype=torch.float64)
    y0 = x0 + 0.4 * torch.randn(6, 5, generator=g, dtype=torch.float64)
    xs, ys = (x0 * magnitude).to(dtype), (y0 * magnitude).to(dtype)
    got = relaxed_contrastive_loss(xs, ys, 10.0, threshold=0.9, backend=name)
    # the reference on the same (rounded) values, rescaled in float64 before normalising
    want = reference_loss(xs.double() / magnitude, ys.double() / magnitude, 10.0, 0.9)
    tol = 1e-3 if dtype == torch.bfloat16 else 1e-5
    assert abs(float(got) - float(want)) <= tol * float(want)
    assert abs(float(got) - math.log(6)) > 0.1  # not the collapsed value
    x = xs.clone().requires_grad_()
    (gx,) = torch.autograd.grad(relaxed_contrastive_loss(x, ys, 10.0, backend=name), x)
    assert bool(torch.isfinite(gx).all()) and float(gx.double().abs().max()) > 0  # ~ 1/magnitude


def test_all_zero_rows_raise_naming_the_rows_or_get_zero_gradient_unchecked() -> None:
    """Issue 13 item 4: an all-zero row was accepted and got a gradient of norm ~1e13."""
    x, y = torch.randn(5, 3), torch.randn(5, 3)
    x[1] = 0.0
    x[3] = 0.0
    with pytest.raises(
        ValueError,
        match=r"image_features must have no all-zero rows .* got rows \[1, 3\] \(2 of 5\)",
    ):
        relaxed_contrastive_loss(x, y, 10.0)
    with pytest.raises(
        ValueError, match=r"text_features must have no all-zero rows .* got rows \[1, 3\]"
    ):
        RelaxedContrastiveLoss()(y, x, 10.0)
    # without normalisation a zero row is an ordinary input (s_ij = 0 for it)
    assert math.isfinite(float(relaxed_contrastive_loss(x, y, 10.0, normalize=False)))
    # check_finite=False: the documented safe behaviour, a zero direction with zero gradient
    xr = x.clone().requires_grad_()
    loss = relaxed_contrastive_loss(xr, y, 10.0, check_finite=False)
    (gx,) = torch.autograd.grad(loss, xr)
    assert math.isfinite(float(loss.detach())) and bool((gx[[1, 3]] == 0).all())
    assert float(gx.abs().max()) < 100.0
    # NaN rows are named too
    x[2, 0] = float("nan")
    with pytest.raises(
        ValueError, match=r"image_features must be finite, got NaN or Inf in rows \[2\]"
    ):
        relaxed_contrastive_loss(x, y, 10.0)


def test_unnormalised_threshold_is_a_bound_on_the_raw_dot_product() -> None:
    """Issue 13 item 7: with normalize=False, threshold=1.0 silently meant "no relaxation" while
    s_ii can exceed 1 (the loss jumped at theta = 1); theta now bounds s_ii continuously."""
    g = torch.Generator().manual_seed(2)
    x = 3.0 * torch.randn(6, 4, generator=g, dtype=torch.float64)
    y = x + 0.2 * torch.randn(6, 4, generator=g, dtype=torch.float64)
    assert float((x * y).sum(1).min()) > 1.5  # every raw s_ii exceeds 1

    def loss(theta: float | None) -> float:
        return float(relaxed_contrastive_loss(x, y, 2.0, threshold=theta, normalize=False))

    assert abs(loss(1.0) - loss(1.0 - 1e-9)) < 1e-6  # continuous at theta = 1
    assert abs(loss(1.0) - float(reference_loss(x, y, 2.0, 1.0, normalize=False))) < 1e-10
    assert loss(1.0) > loss(None) + 1.0
    assert abs(loss(1.5) - float(reference_loss(x, y, 2.0, 1.5, normalize=False))) < 1e-10
    assert abs(loss(-2.0) - float(reference_loss(x, y, 2.0, -2.0, normalize=False))) < 1e-10
    with pytest.raises(ValueError, match="threshold must be a finite number, got inf"):
        relaxed_contrastive_loss(x, y, 2.0, threshold=math.inf, normalize=False)
    with pytest.raises(ValueError, match=r"threshold must be a number in \(-1.0, 1.0\]"):
        relaxed_contrastive_loss(x, y, 2.0, threshold=1.5)  # cosine: still (-1, 1]
    RelaxedContrastiveLoss(threshold=1.5, normalize=False)  # accepted
    with pytest.raises(ValueError, match="threshold"):
        RelaxedContrastiveLoss(threshold=1.5)


@pytest.mark.parametrize("scale", [-2.0, 0.0, -1e-3])
def test_non_positive_scale_tensor_raises_even_without_check_finite(scale: float) -> None:
    """Issue 13 item 10: check_finite=False accepted a negative logit_scale tensor and returned a
    value that is not the documented formula; the sign check is not a finiteness check."""
    x, y = _ok()
    with pytest.raises(ValueError, match="logit_scale must be finite and > 0"):
        relaxed_contrastive_loss(x, y, torch.tensor(scale), check_finite=False)
    with pytest.raises(ValueError, match="logit_scale must be finite and > 0"):
        RelaxedContrastiveLoss(check_finite=False)(x, y, torch.tensor([scale]))
    nan_scale = relaxed_contrastive_loss(x, y, torch.tensor(math.nan), check_finite=False)
    assert math.isnan(float(nan_scale))  # finiteness is what check_finite=False skips


def _float8() -> torch.Tensor:
    return torch.randn(4, 3).to(torch.float8_e4m3fn)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"image_features": _float8(), "text_features": _float8()}, TypeError, r"image_features must be a floating-point tensor \(float16, bfloat16, float32 or float64\), got dtype torch.float8_e4m3fn \(cast float8"),
        ({"image_features": torch.randn(4, 3).to_sparse(), "text_features": torch.randn(4, 3).to_sparse()}, TypeError, "image_features must be a dense \\(strided\\) tensor, got layout torch.sparse_coo"),
        ({"text_features": torch.randn(4, 3).to_sparse()}, TypeError, "text_features must be a dense .*sparse_coo"),
        ({"image_features": torch.randn(4, 3, device="meta"), "text_features": torch.randn(4, 3, device="meta")}, ValueError, "image_features must hold values, got a tensor on the meta device"),
        ({"logit_scale": torch.tensor(10.0, device="meta")}, ValueError, "logit_scale must hold values, got a tensor on the meta device"),
        ({"logit_scale": torch.tensor(10.0).to(torch.float8_e5m2)}, TypeError, "logit_scale must be a floating-point tensor .*float8_e5m2"),
        ({"logit_scale": torch.tensor([10.0]).to_sparse()}, TypeError, "logit_scale must be a dense"),
        ({"logit_bias": torch.tensor(1.0, device="meta")}, ValueError, "logit_bias must hold values, got a tensor on the meta device"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("check_finite", [True, False])
def test_float8_sparse_and_meta_tensors_get_clear_errors(
    kwargs: dict, exc: type[Exception], match: str, check_finite: bool
) -> None:
    """Issue 13 "unhelpful errors": these reached torch internals (or, on meta, returned a shape
    without a value)."""
    x, y = _ok()
    args = {"image_features": x, "text_features": y, "logit_scale": 10.0}
    options: dict = {"check_finite": check_finite}
    for key, value in kwargs.items():
        (args if key in args else options)[key] = value
    with pytest.raises(exc, match=match):
        relaxed_contrastive_loss(
            args["image_features"], args["text_features"], args["logit_scale"], **options
        )


# ---------------------------------------------------------------- theta as a tensor; no state


def _pairs(n: int, d: int, seed: int, dtype: torch.dtype = torch.float64) -> tuple:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = x + 0.6 * torch.randn(n, d, generator=g, dtype=torch.float64)
    return x.to(dtype), y.to(dtype)


@pytest.mark.parametrize("backend", ["dense", "chunked"])
@pytest.mark.parametrize("with_groups", [False, True])
@pytest.mark.parametrize("normalize", [True, False])
def test_tensor_theta_equals_float_theta_and_the_reference(
    backend: str, with_groups: bool, normalize: bool
) -> None:
    x, y = _pairs(12, 5, seed=3)
    groups = torch.tensor([0, 1, 2, 0, 3, 4, 1, 5, 6, 7, 8, 2]) if with_groups else None
    common = {"backend": backend, "normalize": normalize, "groups": groups}
    if backend == "chunked":
        common["chunk_size"] = 5
    s = (F.normalize(x) * F.normalize(y)).sum(1) if normalize else (x * y).sum(1)
    theta = float(s.sort().values[6:8].mean())  # relaxes some pairs, not all
    want = grads(
        lambda a, b, t: reference_loss(a, b, t, theta, normalize=normalize, groups=groups),
        x,
        y,
        14.0,
    )
    for th in (theta, torch.tensor(theta, dtype=torch.float64), torch.tensor(theta)):
        got = grads(
            lambda a, b, t, th=th: relaxed_contrastive_loss(a, b, t, threshold=th, **common),
            x,
            y,
            14.0,
        )
        tol = 1e-12 if not isinstance(th, torch.Tensor) or th.dtype == torch.float64 else 1e-6
        assert_all_close(got, want, atol=tol, rtol=tol)
    clip = reference_loss(x, y, 14.0, None, normalize=normalize, groups=groups)
    assert abs(float(clip.detach()) - float(want[0].detach())) > 1e-4  # relaxation is active


def test_module_accepts_a_tensor_threshold_and_holds_no_state() -> None:
    """Before: ``RelaxedContrastiveLoss(threshold=torch.tensor(0.5))`` raised, and assigning one
    later raised "threshold must be ... a 0-d floating tensor or None, got Tensor"."""
    x, y = _pairs(8, 4, seed=1)
    want = relaxed_contrastive_loss(x, y, 10.0, threshold=0.5)
    built = RelaxedContrastiveLoss(threshold=torch.tensor(0.5, dtype=torch.float64))
    torch.testing.assert_close(built(x, y, 10.0), want)
    assigned = RelaxedContrastiveLoss()
    assigned.threshold = torch.tensor(0.5)
    out = assigned(x, y, 10.0, output_dict=True)
    torch.testing.assert_close(out["contrastive_loss"], want, atol=1e-6, rtol=1e-6)
    assert abs(float(out.diagnostics["threshold"]) - 0.5) < 1e-7
    assert "threshold=tensor(0.5000)" in repr(assigned)
    assigned.threshold = torch.tensor([0.5])  # the function's rule: 0-d
    with pytest.raises(ValueError, match=r"threshold must be 0-D, got shape \(1,\)"):
        assigned(x, y, 10.0)
    for threshold in (None, 0.8, torch.tensor(0.3)):  # nothing to save or restore
        module = RelaxedContrastiveLoss(threshold=threshold)
        assert module.state_dict() == {}
        assert list(module.buffers()) == [] and list(module.parameters()) == []


def test_tensor_theta_changed_in_place_needs_no_new_call_setup() -> None:
    """A schedule of your own: one 0-d tensor theta changed in place between calls."""
    x, y = _pairs(8, 4, seed=8)
    theta = torch.tensor(0.0)
    for value in (0.1, 0.3, 0.5):
        theta.fill_(value)
        got = relaxed_contrastive_loss(x, y, 10.0, threshold=theta, backend="dense")
        want = relaxed_contrastive_loss(x, y, 10.0, threshold=float(theta), backend="dense")
        torch.testing.assert_close(got, want, atol=1e-7, rtol=1e-7)


@pytest.mark.parametrize("backend", ["dense", "chunked"])
def test_no_host_read_of_a_tensor_theta(backend: str) -> None:
    """A theta that refuses every host read (``tests/_nosync.py``): forward and backward run
    (``check_finite=False``: the value checks are the one documented sync)."""
    from _nosync import NoSyncTensor, plain

    x, y = _pairs(8, 4, seed=14, dtype=torch.float32)
    want = relaxed_contrastive_loss(x, y, 10.0, threshold=0.4, backend=backend)
    theta = torch.tensor(0.4).as_subclass(NoSyncTensor)
    xs = x.clone().requires_grad_()
    loss = relaxed_contrastive_loss(
        xs, y, 10.0, threshold=theta, backend=backend, check_finite=False
    )
    loss.backward()
    torch.testing.assert_close(plain(loss).detach(), want)


@pytest.mark.parametrize("backend", ["dense", "chunked"])
def test_tensor_theta_compiles_once_for_every_value(backend: str) -> None:
    """Under ``torch.compile`` a tensor theta is a graph input: new values reuse the graph."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    x, y = _pairs(8, 4, seed=13, dtype=torch.float32)

    def fn(a: torch.Tensor, b: torch.Tensor, th: object) -> torch.Tensor:
        return relaxed_contrastive_loss(a, b, 10.0, threshold=th, backend=backend)

    compiled = torch.compile(fn, fullgraph=True)
    theta = torch.tensor(0.0)
    for value in (0.1, 0.3, 0.5):
        theta.fill_(value)
        torch.testing.assert_close(compiled(x, y, theta), fn(x, y, value), atol=1e-6, rtol=1e-6)
    assert counters["stats"]["unique_graphs"] == 1


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"threshold": torch.tensor([0.5])}, ValueError, r"threshold must be 0-D, got shape \(1,\)"),
        ({"threshold": torch.tensor(1)}, TypeError, "threshold must be a floating-point tensor .*got dtype torch.int64"),
        ({"threshold": torch.tensor(0.5, requires_grad=True)}, ValueError, "threshold must not require grad"),
        ({"threshold": torch.tensor(math.nan)}, ValueError, r"threshold must be a number in \(-1.0, 1.0\], got tensor value nan"),
        ({"threshold": torch.tensor(1.5)}, ValueError, r"threshold must be a number in \(-1.0, 1.0\], got tensor value 1.5"),
        ({"threshold": torch.tensor(math.inf), "normalize": False}, ValueError, r"threshold must be finite in the compute dtype torch.float64 \(\|theta\| <= 1.798e\+308\), got tensor value inf"),
        ({"threshold": torch.empty((), device="meta")}, ValueError, "threshold must hold values, got a tensor on the meta device"),
    ],
)  # fmt: skip
def test_bad_tensor_theta_names_the_threshold(kwargs: dict, error: type, match: str) -> None:
    x, y = _pairs(6, 4, seed=0)
    with pytest.raises(error, match=match):
        relaxed_contrastive_loss(x, y, 10.0, **kwargs)
    module = RelaxedContrastiveLoss(normalize=kwargs.get("normalize", True))
    module.threshold = kwargs["threshold"]
    with pytest.raises(error, match=match):
        module(x, y, 10.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device (CUDA)")
def test_tensor_theta_on_another_device_is_rejected() -> None:
    x, y = _pairs(6, 4, seed=0)
    with pytest.raises(ValueError, match="threshold must be on the features' device"):
        relaxed_contrastive_loss(x.cuda(), y.cuda(), 10.0, threshold=torch.tensor(0.5))


# ---------------------------------------------------------------- unusable inputs named


@pytest.mark.parametrize("magnitude", [1e19, 1e30])
@pytest.mark.parametrize("backend", ["dense", "chunked"])
def test_unnormalised_features_whose_logits_overflow_raise(magnitude: float, backend: str) -> None:
    """Before: ``normalize=False`` features of 1e19 overflowed the fp32 logits and the loss was
    NaN although ``check_finite`` was on."""
    x, y = _pairs(6, 5, seed=2, dtype=torch.float32)
    match = r"image_features and text_features must be small enough with normalize=False.*normalize=True"
    with pytest.raises(ValueError, match=match):
        relaxed_contrastive_loss(
            x * magnitude, y * magnitude, 10.0, normalize=False, backend=backend
        )
    with pytest.raises(ValueError, match=match):
        RelaxedContrastiveLoss(normalize=False, backend=backend)(x * magnitude, y * magnitude, 10.0)
    # large but representable: accepted and finite; unchecked: no extra sync, NaN as before
    ok = relaxed_contrastive_loss(x * 1e8, y * 1e8, 1e-15, normalize=False, backend=backend)
    assert math.isfinite(float(ok))
    unchecked = relaxed_contrastive_loss(
        x * 1e19, y * 1e19, 10.0, normalize=False, backend=backend, check_finite=False
    )
    assert not math.isfinite(float(unchecked))


def test_groups_on_the_meta_device_name_groups() -> None:
    """Before: ``NotImplementedError: Cannot copy out of meta tensor; no data!``."""
    x, y = _pairs(4, 3, seed=0)
    groups = torch.zeros(4, dtype=torch.long, device="meta")
    with pytest.raises(
        ValueError, match="groups must hold values, got a tensor on the meta device"
    ):
        relaxed_contrastive_loss(x, y, 10.0, groups=groups)
    with pytest.raises(ValueError, match="groups must hold values"):
        RelaxedContrastiveLoss()(x, y, 10.0, groups=groups)


@pytest.mark.parametrize("threshold", [1e39, -1e39])
@pytest.mark.parametrize("module", [dense, chunked])
def test_threshold_beyond_the_compute_dtype_names_the_range(threshold: float, module) -> None:  # type: ignore[no-untyped-def]
    x, y = torch.randn(4, 3), torch.randn(4, 3)
    match = r"threshold must be within the range of torch.float32.*\|theta\| <= 3.403e\+38"
    with pytest.raises(ValueError, match=match):
        relaxed_contrastive_loss(x, y, 5.0, threshold=threshold, normalize=False)
    with pytest.raises(ValueError, match=match):
        module.symmetric_loss_sum(x, y, torch.tensor(5.0), threshold)
    big = torch.tensor(threshold, dtype=torch.float64)  # finite, but not in float32
    beyond = r"threshold must be finite in the compute dtype torch.float32 .* overflows when cast"
    with pytest.raises(ValueError, match=beyond):
        relaxed_contrastive_loss(x, y, 5.0, threshold=big, normalize=False)
    exact = relaxed_contrastive_loss(
        x.double(), y.double(), 5.0, threshold=threshold, normalize=False
    )
    assert math.isfinite(float(exact))  # float64 features hold it


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((torch.tensor(math.nan),), ValueError, r"threshold must be a number in \(-1.0, 1.0\]"),
        ((torch.tensor(1.5),), ValueError, r"threshold must be a number in \(-1.0, 1.0\]"),
        ((0.5, "nan"), ValueError, r"image_features must be finite, got NaN or Inf in rows \[1\]"),
        ((0.5, "zero"), ValueError, r"text_features must have no all-zero rows.*got rows \[2\]"),
    ],
)  # fmt: skip
def test_positive_pair_stats_checks_as_the_loss(args: tuple, error: type, match: str) -> None:
    x, y = torch.randn(4, 3), torch.randn(4, 3)
    if args[1:] == ("nan",):
        x[1, 0] = math.nan
    if args[1:] == ("zero",):
        y[2] = 0.0
    with pytest.raises(error, match=match):
        relaxed_contrastive_loss(x, y, 5.0, threshold=args[0])
    with pytest.raises(error, match=match):
        positive_pair_stats(x, y, args[0])
    stats = positive_pair_stats(x, y, args[0], check_finite=False)  # opted out, as the loss
    assert set(stats) >= {"relaxed_share", "positive_sim_mean"}


def test_threshold_one_float_is_exact_clip_and_a_tensor_is_applied_as_given() -> None:
    x = torch.randn(6, 5)
    assert float(positive_pair_stats(x, x, 1.0)["relaxed_share"]) == 0.0
    assert float(positive_pair_stats(x, x, None)["relaxed_share"]) == 0.0
    clip = relaxed_contrastive_loss(x, x, 5.0, threshold=None)
    assert torch.equal(relaxed_contrastive_loss(x, x, 5.0, threshold=1.0), clip)
    as_tensor = relaxed_contrastive_loss(x, x, 5.0, threshold=torch.tensor(1.0))
    assert torch.allclose(as_tensor, clip, rtol=0, atol=1e-5)  # a clamp of at most an ulp
    doc = relaxed_contrastive_loss.__doc__ or ""
    assert "applied as" in doc and "tensor 1 clamps" in doc


def test_triton_dtype_error_names_the_features() -> None:
    x, y = torch.randn(4, 3).double(), torch.randn(4, 3).double()
    with pytest.raises(TypeError, match=r"image_features and text_features must be bfloat16, "):
        relaxed_contrastive_loss(x, y, 2.0, backend="triton")
