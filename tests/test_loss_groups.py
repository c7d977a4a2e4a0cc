"""Group-aware loss (``groups=``): same-group pairs are neither positives nor negatives.

Every backend (dense, chunked with several chunk sizes; triton in tests/test_backend_triton.py,
the distributed modes in tests/test_distributed.py) against the float64 reference of
tests/_reference.py, which builds the masked logit matrix explicitly.
"""

from __future__ import annotations

import pytest
import torch
from _reference import (
    BACKENDS,
    HYP,
    assert_all_close,
    feature_problems,
    grads,
    reference_loss,
    reference_rows,
    same_group_pairs,
)
from hypothesis import given
from hypothesis import strategies as st

from relaxclip.backends import chunked, dense
from relaxclip.loss import RelaxedContrastiveLoss, relaxed_contrastive_loss

PATTERNS = ("none", "distinct", "all-equal", "collisions", "two-vectors")
Tensor = torch.Tensor


def make_groups(pattern: str, b: int, gen: torch.Generator) -> Tensor | None:
    """Group ids of one of the test patterns (int64 unless noted)."""
    if pattern == "none":
        return None
    if pattern == "distinct":  # large, unordered, negative ids: all different
        return torch.randperm(b, generator=gen) * 7919 - 3 * b
    if pattern == "all-equal":
        return torch.full((b,), 5, dtype=torch.int32)
    n_ids = max(1, b // 3)
    if pattern == "collisions":
        return torch.randint(0, n_ids, (b,), generator=gen)
    assert pattern == "two-vectors"  # (2, B): e.g. text ids and study ids
    return torch.stack(
        [
            torch.randint(0, 2 * n_ids, (b,), generator=gen),
            torch.randint(0, n_ids, (b,), generator=gen),
        ]
    )


@st.composite
def problems(
    draw: st.DrawFn, max_b: int = 20, max_d: int = 10
) -> tuple[Tensor, Tensor, float, float | None, Tensor | None]:
    x, y, t, theta, g = draw(feature_problems(max_b, max_d))
    pattern = draw(st.sampled_from(PATTERNS))
    return x, y, t, theta, make_groups(pattern, len(x), g)


def loss_fn(name: str, chunk: int | None, theta: float | None, groups: Tensor | None):  # type: ignore[no-untyped-def]
    def fn(a: Tensor, b: Tensor, s: Tensor) -> Tensor:
        return relaxed_contrastive_loss(
            a, b, s, threshold=theta, groups=groups, backend=name, chunk_size=chunk
        )

    return fn


# ---------------------------------------------------------------- values and gradients vs reference


@HYP
@given(problems(), st.sampled_from(BACKENDS))
def test_groups_match_float64_reference(problem, backend) -> None:  # type: ignore[no-untyped-def]
    x, y, t, theta, groups = problem
    name, chunk = backend
    got = grads(loss_fn(name, chunk, theta, groups), x, y, t)
    want = grads(lambda a, b, s: reference_loss(a, b, s, theta, groups=groups), x, y, t)
    assert got[0].dtype == torch.float64
    assert all(bool(torch.isfinite(v).all()) for v in got)
    assert_all_close(got, want)


@HYP
@given(problems(), st.sampled_from(BACKENDS))
def test_none_and_distinct_groups_are_todays_loss(problem, backend) -> None:  # type: ignore[no-untyped-def]
    x, y, t, theta, _ = problem
    name, chunk = backend
    plain = grads(loss_fn(name, chunk, theta, None), x, y, t)
    distinct = make_groups("distinct", len(x), torch.Generator().manual_seed(len(x)))
    for groups in (distinct, torch.stack([distinct, -distinct])):
        assert_all_close(grads(loss_fn(name, chunk, theta, groups), x, y, t), plain, 1e-12, 1e-12)


@HYP
@given(problems(), st.integers(1, 25))
def test_chunked_equals_dense_any_chunk_with_groups(problem, chunk) -> None:  # type: ignore[no-untyped-def]
    x, y, t, theta, groups = problem
    a = grads(loss_fn("dense", None, theta, groups), x, y, t)
    b = grads(loss_fn("chunked", chunk, theta, groups), x, y, t)
    assert_all_close(a, b)


@pytest.mark.parametrize("name,chunk", BACKENDS)
def test_row_with_every_negative_excluded_contributes_zero(name: str, chunk: int | None) -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(6, 5, generator=g, dtype=torch.float64)
    y = x + 0.4 * torch.randn(6, 5, generator=g, dtype=torch.float64)
    fn = loss_fn(name, chunk, 0.5, torch.zeros(6, dtype=torch.long))  # one group: no negatives
    loss, gx, gy, gt = grads(fn, x, y, 10.0)
    assert float(loss.detach()) == 0.0
    assert all(float(v.abs().max()) == 0.0 for v in (gx, gy, gt))
    # rows 0-2 share one id: each of them still has the negatives 3-5 (and vice versa)
    ids = torch.tensor([1, 1, 1, 2, 3, 4])
    got = grads(loss_fn(name, chunk, 0.5, ids), x, y, 10.0)
    want = grads(lambda a, b, s: reference_loss(a, b, s, 0.5, groups=ids), x, y, 10.0)
    assert_all_close(got, want)


def test_dense_column_block_entirely_excluded_is_not_nan() -> None:
    # B = 600: the dense backend reduces the (B, B) matrix in blocks of 436 rows; with samples
    # 0-499 in one group, columns 436-499 are entirely -inf in the first block of rows
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 4, generator=g, dtype=torch.float64)
    y = torch.randn(600, 4, generator=g, dtype=torch.float64)
    ids = (torch.arange(600) >= 500).long()
    for name in ("dense", "chunked"):
        got = grads(loss_fn(name, 100 if name == "chunked" else None, 0.3, ids), x, y, 20.0)
        assert all(bool(torch.isfinite(v).all()) for v in got), name
        want = grads(lambda a, b, s: reference_loss(a, b, s, 0.3, groups=ids), x, y, 20.0)
        assert_all_close(got, want)


def test_excluded_pairs_get_no_gradient_and_kept_negatives_are_pushed() -> None:
    # X = I, normalize=False: s_ij = Y[j, i], so dL/dS = (dL/dY)^T
    b = 5
    g = torch.Generator().manual_seed(2)
    s = torch.rand(b, b, generator=g, dtype=torch.float64) * 0.5
    x = torch.eye(b, dtype=torch.float64)
    ids = torch.tensor([0, 0, 1, 2, 1])
    for name, chunk in BACKENDS:
        y = s.T.clone().requires_grad_()
        loss = relaxed_contrastive_loss(
            x, y, 10.0, threshold=None, normalize=False, groups=ids, backend=name, chunk_size=chunk
        )
        (dy,) = torch.autograd.grad(loss, y)
        ds = dy.T
        excluded = same_group_pairs(ids, b)
        assert torch.all(ds[excluded] == 0), name
        off = ~excluded & ~torch.eye(b, dtype=torch.bool)
        assert torch.all(ds[off] > 0), name
        assert torch.all(ds.diagonal() < 0), name


# ---------------------------------------------------------------- invariance


@HYP
@given(problems(), st.sampled_from(BACKENDS), st.integers(0, 2**31 - 1))
def test_joint_permutation_permutes_gradients(problem, backend, seed) -> None:  # type: ignore[no-untyped-def]
    x, y, t, theta, groups = problem
    name, chunk = backend
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    base = grads(loss_fn(name, chunk, theta, groups), x, y, t)
    permuted_groups = None if groups is None else groups[..., perm]
    permuted = grads(loss_fn(name, chunk, theta, permuted_groups), x[perm], y[perm], t)
    torch.testing.assert_close(base[0], permuted[0], atol=1e-12, rtol=1e-12)
    assert_all_close((base[1][perm], base[2][perm], base[3]), permuted[1:])


@HYP
@given(problems(), st.sampled_from(BACKENDS), st.integers(0, 2**31 - 1))
def test_relabelling_ids_changes_nothing(problem, backend, seed) -> None:  # type: ignore[no-untyped-def]
    x, y, t, theta, groups = problem
    if groups is None:
        groups = make_groups("collisions", len(x), torch.Generator().manual_seed(seed))
    assert groups is not None
    name, chunk = backend
    # a bijection of the id values: a random injective map (distinct large, signed values)
    values = torch.unique(groups)
    gen = torch.Generator().manual_seed(seed)
    images = torch.randperm(4 * len(values) + 8, generator=gen)[: len(values)] * 1_000_003 - 2**40
    relabelled = images[torch.searchsorted(values, groups.to(torch.int64))]
    base = grads(loss_fn(name, chunk, theta, groups), x, y, t)
    assert_all_close(grads(loss_fn(name, chunk, theta, relabelled), x, y, t), base, 0, 0)


# ---------------------------------------------------------------- gradcheck and one direction


@pytest.mark.parametrize("name,chunk", BACKENDS)
@pytest.mark.parametrize("pattern", ["collisions", "two-vectors", "all-equal"])
def test_gradcheck_with_groups(name: str, chunk: int | None, pattern: str) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 5, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(8, 5, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    ids = make_groups(pattern, 8, g)
    for theta, normalize in ((None, True), (0.2, True), (0.2, False)):

        def fn(a: Tensor, b: Tensor, s: Tensor, th: float | None = theta, nz: bool = normalize):
            return relaxed_contrastive_loss(
                a, b, s, threshold=th, normalize=nz, groups=ids, backend=name, chunk_size=chunk
            )

        scale = 1.0 if normalize else 0.3
        assert torch.autograd.gradcheck(fn, (x * scale, y * scale, t))


@pytest.mark.parametrize("module", [dense, chunked])
@pytest.mark.parametrize("offset", [0, 3, 6])
def test_rows_loss_sum_with_groups(module, offset: int) -> None:  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(offset)
    q = torch.randn(4, 6, generator=g, dtype=torch.float64)
    k = torch.randn(10, 6, generator=g, dtype=torch.float64)
    k[offset : offset + 4] = q + 0.3 * torch.randn(4, 6, generator=g, dtype=torch.float64)
    q = torch.nn.functional.normalize(q, dim=1)
    k = torch.nn.functional.normalize(k, dim=1)
    ids = torch.stack([torch.arange(10) % 3, torch.arange(10) // 4])  # (K=2, N) ids of the keys
    kwargs = {"chunk_size": 3} if module is chunked else {}

    def fn(a: Tensor, b: Tensor, s: Tensor) -> Tensor:
        return module.rows_loss_sum(a, b, s, 0.2, offset, groups=ids, **kwargs)  # type: ignore[no-any-return]

    got = grads(fn, q, k, 4.0)
    want = grads(lambda a, b, s: reference_rows(a, b, s, 0.2, offset, groups=ids), q, k, 4.0)
    assert_all_close(got, want)
    t = torch.tensor(4.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (q.requires_grad_(), k.requires_grad_(), t))


def test_chunked_masks_one_block_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    from relaxclip.backends import _common

    shapes: list[tuple[int, ...]] = []
    original = _common.exclude_groups_

    def spy(logits: Tensor, groups: Tensor | None, diag_start: int) -> None:
        shapes.append(tuple(logits.shape))
        original(logits, groups, diag_start)

    monkeypatch.setattr(_common, "exclude_groups_", spy)  # called by every block
    x, y = torch.randn(50, 4), torch.randn(50, 4)
    relaxed_contrastive_loss(
        x.requires_grad_(), y, 10.0, groups=torch.arange(50) % 7, backend="chunked", chunk_size=8
    ).backward()
    assert shapes and all(rows <= 8 and cols == 50 for rows, cols in shapes)


# ---------------------------------------------------------------- dtypes, module, devices


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", ["dense", "chunked"])
def test_low_precision_with_groups(dtype: torch.dtype, name: str) -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(40, 16, generator=g).to(dtype).requires_grad_()
    y = (x.detach().float() + 0.2 * torch.randn(40, 16, generator=g)).to(dtype).requires_grad_()
    ids = torch.arange(40, dtype=torch.int16) % 9
    loss = relaxed_contrastive_loss(
        x,
        y,
        50.0,
        threshold=0.9,
        groups=ids,
        backend=name,
        chunk_size=7 if name == "chunked" else None,
    )
    loss.backward()
    assert x.grad is not None and y.grad is not None
    assert all(bool(torch.isfinite(v).all()) for v in (loss, x.grad, y.grad))
    ref = reference_loss(x.detach(), y.detach(), 50.0, 0.9, groups=ids)
    assert abs(float(loss.detach()) - float(ref)) <= 1e-4 * max(1.0, abs(float(ref)))


def test_module_forward_and_open_clip_style_call() -> None:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(7, 4, generator=g), torch.randn(7, 4, generator=g)
    ids = torch.tensor([3, 3, 1, 2, 1, 0, 9])
    module = RelaxedContrastiveLoss(threshold=0.3)
    want = relaxed_contrastive_loss(x, y, 10.0, threshold=0.3, groups=ids)
    torch.testing.assert_close(module(x, y, 10.0, groups=ids), want)
    model_out = {"image_features": x, "text_features": y, "logit_scale": torch.tensor(10.0)}
    out = module(**model_out, groups=ids, output_dict=True)
    torch.testing.assert_close(out["contrastive_loss"], want)
    assert not torch.allclose(want, module(x, y, 10.0)), "groups must change this loss"


def test_integer_dtypes_and_non_contiguous_ids_are_accepted() -> None:
    x, y = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    base = torch.tensor([0, 1, 0, 2, 2, 3])
    want = relaxed_contrastive_loss(x, y, 5.0, groups=base)
    for ids in (base.to(torch.int8), base.to(torch.uint8), base.to(torch.int32)):
        torch.testing.assert_close(relaxed_contrastive_loss(x, y, 5.0, groups=ids), want)
    strided = torch.stack([base, base + 10], dim=1).T  # (2, 6), non-contiguous
    assert not strided.is_contiguous()
    torch.testing.assert_close(relaxed_contrastive_loss(x, y, 5.0, groups=strided), want)


@pytest.mark.parametrize(
    "groups,exc,match",
    [
        ([0, 1, 2, 3], TypeError, "groups must be a torch.Tensor, got list"),
        (torch.zeros(4), TypeError, "groups must have an integer dtype"),
        (torch.zeros(4, dtype=torch.bool), TypeError, "groups must have an integer dtype"),
        (torch.arange(5), ValueError, r"groups must have shape \(B,\) or \(K, B\) with B = 4"),
        (torch.arange(8).reshape(4, 2), ValueError, r"groups must have shape"),
        (torch.zeros(1, 4, 1, dtype=torch.long), ValueError, r"groups must have shape"),
        (torch.zeros((), dtype=torch.long), ValueError, r"groups must have shape"),
        (torch.zeros(0, 4, dtype=torch.long), ValueError, r"groups must hold at least one"),
    ],
)
def test_bad_groups_raise_clear_errors(groups: object, exc: type[Exception], match: str) -> None:
    x, y = torch.randn(4, 3), torch.randn(4, 3)
    with pytest.raises(exc, match=match):
        relaxed_contrastive_loss(x, y, 10.0, groups=groups)  # type: ignore[arg-type]
    with pytest.raises(exc, match=match):
        RelaxedContrastiveLoss()(x, y, 10.0, groups=groups)


def test_sampler_text_groups_feed_the_loss() -> None:
    """End to end: ``SentenceSampler(group_key=...)`` ids are what ``groups=`` takes, and they
    exclude exactly the pairs whose sampled sentences are equal (case/punctuation folded)."""
    from relaxclip.sampling import SentenceSampler

    reports = ["No pneumothorax.", "no pneumothorax", "The lungs are clear.", "Heart is enlarged."]
    samples = [
        {"image": torch.zeros(1), "report": r, "idx": i} for i, r in enumerate(reports * 2)
    ]  # 8 samples
    batch = SentenceSampler(group_key="text_group", seed=0)(samples)
    ids = batch["text_group"]
    assert ids.dtype == torch.int64 and ids.shape == (8,)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 5, generator=g, dtype=torch.float64)
    y = torch.randn(8, 5, generator=g, dtype=torch.float64)
    got = relaxed_contrastive_loss(x, y, 10.0, threshold=0.5, groups=ids)
    # the same pairs by hand: samples 0, 1, 4, 5 say "no pneumothorax"; 2 & 6; 3 & 7
    by_hand = torch.tensor([0, 0, 1, 2, 0, 0, 1, 2])
    assert torch.equal(same_group_pairs(ids, 8), same_group_pairs(by_hand, 8))
    torch.testing.assert_close(got, reference_loss(x, y, 10.0, 0.5, groups=by_hand))
