"""Parity with open_clip: without relaxation our loss IS ``open_clip.loss.ClipLoss``.

Runs in the integrations venv (``.ci/integrations.sh``); skipped where open_clip is not installed
(the core venv). Compares loss values and gradients with respect to both feature tensors and the
*log* scale (``logit_scale = log_scale.exp()`` is passed to both losses, as open_clip's training
loop does), for every CPU backend, in float64 (tight) and float32 (float tolerance).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

open_clip_loss = pytest.importorskip("open_clip.loss")

from relaxclip.loss import RelaxedContrastiveLoss  # noqa: E402

BACKENDS = ("dense", "chunked")
EPS = {torch.float64: torch.finfo(torch.float64).eps, torch.float32: torch.finfo(torch.float32).eps}


def _chunk(backend: str, size: int) -> dict[str, int]:
    """``chunk_size`` for the chunked backend (several blocks); the dense backend takes none."""
    return {"chunk_size": size} if backend == "chunked" else {}


def _inputs(seed: int, b: int, d: int, log_scale: float, dtype: torch.dtype):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, d, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    y = torch.randn(b, d, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    t = torch.tensor(log_scale, dtype=dtype, requires_grad=True)
    return x, y, t


def _value_and_grads(loss_fn, x, y, t, *, normalize_first: bool):
    """Loss and d/d(x, y, log scale); features L2-normalised before the call when asked."""
    xs = [v.detach().clone().requires_grad_() for v in (x, y, t)]
    xi, yi = (F.normalize(xs[0], dim=1), F.normalize(xs[1], dim=1)) if normalize_first else xs[:2]
    loss = loss_fn(xi, yi, xs[2].exp())
    grads = torch.autograd.grad(loss, xs)
    return loss.detach(), grads


def _assert_same(ours, ref, dtype, logit_bound):
    """Equal up to rounding: ``atol = 16 eps L max(1, |ref|)`` with ``L`` a bound on |logits|
    (summation order differs between the implementations; errors grow with the logits)."""
    (lo, go), (lr, gr) = ours, ref
    assert lo.dtype == lr.dtype == dtype
    for name, a, b in zip(
        ("loss", "image_features", "text_features", "log_scale"), (lo, *go), (lr, *gr), strict=True
    ):
        atol = 16 * EPS[dtype] * max(1.0, logit_bound) * max(1.0, float(b.abs().max()))
        torch.testing.assert_close(
            a, b, rtol=16 * EPS[dtype], atol=atol, msg=lambda m, n=name: f"{n}: {m}"
        )


def _logit_bound(x, y, t, normalized):
    if normalized:
        return float(t.detach().exp())
    norms = float(x.detach().norm(dim=1).max() * y.detach().norm(dim=1).max())
    return float(t.detach().exp()) * norms


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("threshold", [None, "above every s_ii"])
@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    b=st.integers(1, 40),
    d=st.integers(1, 24),
    log_scale=st.floats(-1.0, 4.6),
)
def test_unrelaxed_equals_clip_loss(threshold, backend, dtype, seed, b, d, log_scale):
    """normalize=False on raw features == ClipLoss on the same raw features, without relaxation
    or with a threshold above every raw dot product s_ii (with normalize=False theta bounds the
    raw s_ii, which can exceed 1, so theta = 1.0 is an ordinary clamp there: issue 13 item 7)."""
    x, y, t = _inputs(seed, b, d, log_scale, dtype)
    if threshold is not None:
        threshold = float((x.detach().double() * y.detach().double()).sum(1).max()) + 1.0
    ours = RelaxedContrastiveLoss(threshold, normalize=False, backend=backend, **_chunk(backend, 7))
    ref = open_clip_loss.ClipLoss()
    _assert_same(
        _value_and_grads(ours, x, y, t, normalize_first=False),
        _value_and_grads(ref, x, y, t, normalize_first=False),
        dtype,
        _logit_bound(x, y, t, normalized=False),
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), b=st.integers(1, 40), d=st.integers(2, 24))
def test_normalizing_loss_equals_clip_loss_on_open_clip_features(backend, dtype, seed, b, d):
    """normalize=True on raw features == ClipLoss on F.normalize(features), the open_clip model
    output; gradients reach the raw features through the normalisation in both."""
    x, y, t = _inputs(seed, b, d, 2.659, dtype)  # open_clip's init: log(1 / 0.07)
    ours = RelaxedContrastiveLoss(None, normalize=True, backend=backend, **_chunk(backend, 5))
    _assert_same(
        _value_and_grads(ours, x, y, t, normalize_first=False),
        _value_and_grads(open_clip_loss.ClipLoss(), x, y, t, normalize_first=True),
        dtype,
        _logit_bound(x, y, t, normalized=True),
    )


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), b=st.integers(2, 32), d=st.integers(2, 16))
def test_inactive_relaxation_equals_clip_loss(backend, seed, b, d):
    """A threshold above every positive similarity s_ii changes nothing."""
    x, y, t = _inputs(seed, b, d, 2.659, torch.float64)
    s_diag = (F.normalize(x.detach(), dim=1) * F.normalize(y.detach(), dim=1)).sum(1)
    theta = min(float(s_diag.max()) + 1e-6, 1.0)
    ours = RelaxedContrastiveLoss(theta, normalize=True, backend=backend, **_chunk(backend, 3))
    _assert_same(
        _value_and_grads(ours, x, y, t, normalize_first=False),
        _value_and_grads(open_clip_loss.ClipLoss(), x, y, t, normalize_first=True),
        torch.float64,
        _logit_bound(x, y, t, normalized=True),
    )


def test_active_relaxation_differs_from_clip_loss():
    """Sanity check that the comparison can fail: with pairs above theta the losses differ."""
    x, y, t = _inputs(0, 8, 4, 2.659, torch.float64)
    y = (x.detach() + 0.01 * y.detach()).requires_grad_()  # s_ii close to 1
    ours = _value_and_grads(RelaxedContrastiveLoss(0.5), x, y, t, normalize_first=False)
    ref = _value_and_grads(open_clip_loss.ClipLoss(), x, y, t, normalize_first=True)
    assert ours[0] > ref[0] + 1e-3  # clamping s_ii down to theta raises the loss
    assert not torch.allclose(ours[1][0], ref[1][0])


def test_open_clip_training_step_drop_in():
    """The call convention of open_clip's train loop: ``loss(**model_out, output_dict=True)``."""
    x, y, t = _inputs(1, 6, 8, 2.0, torch.float32)
    model_out = {
        "image_features": F.normalize(x, dim=1),
        "text_features": F.normalize(y, dim=1),
        "logit_scale": t.exp(),
    }
    ours = RelaxedContrastiveLoss(None)(**model_out, output_dict=True)
    ref = open_clip_loss.ClipLoss()(**model_out, output_dict=True)
    assert set(ours) == set(ref) == {"contrastive_loss"}
    torch.testing.assert_close(ours["contrastive_loss"], ref["contrastive_loss"])


def _tiny_open_clip_model(seed: int, **kwargs):
    """A tiny open_clip CLIP (random weights, pretrained=None: nothing is downloaded)."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(seed)
    return CLIP(
        embed_dim=8,
        vision_cfg=CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=8, image_size=16),
        text_cfg=CLIPTextCfg(context_length=6, vocab_size=50, width=32, heads=2, layers=1),
        output_dict=True,
        **kwargs,
    )


@pytest.mark.parametrize("nonscalar_logit_scale", [False, True])
def test_open_clip_model_with_logit_bias_drop_in(nonscalar_logit_scale):
    """open_clip's train loop on a model built with ``init_logit_bias``:
    ``loss(**model_out, output_dict=True)`` works, equals ``ClipLoss`` (the scalar bias cancels in
    both softmaxes) in value and in every parameter gradient; the bias parameter gets exactly 0."""
    images = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    texts = torch.randint(0, 50, (5, 6), generator=torch.Generator().manual_seed(1))
    results = []
    for loss_fn in (RelaxedContrastiveLoss(None), open_clip_loss.ClipLoss()):
        model = _tiny_open_clip_model(
            3, init_logit_bias=-10.0, nonscalar_logit_scale=nonscalar_logit_scale
        )
        model_out = model(images, texts)
        assert set(model_out) == {"image_features", "text_features", "logit_scale", "logit_bias"}
        losses = loss_fn(**model_out, output_dict=True)
        total_loss = sum(losses.values())  # what open_clip_train does with the dict
        total_loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((set(losses), total_loss.detach(), grads))
    (keys, ours, ours_grads), (ref_keys, ref, ref_grads) = results
    assert keys == ref_keys == {"contrastive_loss"}
    torch.testing.assert_close(ours, ref)
    assert set(ours_grads) == set(ref_grads)  # logit_bias included: it is in our graph too
    assert bool((ours_grads["logit_bias"] == 0).all())
    for name, grad in ref_grads.items():
        torch.testing.assert_close(ours_grads[name], grad, msg=lambda m, n=name: f"{n}: {m}")
    # a non-scalar bias would not cancel: rejected
    with pytest.raises(ValueError, match="logit_bias must be a scalar"):
        RelaxedContrastiveLoss(None)(**{**model_out, "logit_bias": torch.zeros(5, 5)})
