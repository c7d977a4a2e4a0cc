"""theta as a Python float or as a 0-d device tensor, in every backend (issue #18, backend part).

The dense and chunked backends run here; the triton kernels run under the interpreter in the
subprocess of ``tests/test_backend_triton.py`` (see its ``_theta_checks``). In-process, the
triton launches are recorded (no kernel runs) to check, with triton's own binder, that theta
reaches the kernels as a pointer and that different theta values share one compiled kernel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from _nosync import HostSyncError, NoSyncTensor, plain
from _reference import reference_sum
from hypothesis import given, settings
from hypothesis import strategies as st

from relaxclip.backends import chunked, dense
from relaxclip.backends._common import CallArgs

Tensor = torch.Tensor
F64 = torch.float64


def _case(b: int, n: int, offset: int, d: int, seed: int) -> tuple[Tensor, Tensor]:
    """Unit float64 queries (b, d) and keys (n, d); query i is close to key offset + i."""
    g = torch.Generator().manual_seed(seed)
    k = torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=F64), dim=1)
    q = k[offset : offset + b] + 0.7 * torch.randn(b, d, generator=g, dtype=F64)
    return torch.nn.functional.normalize(q, dim=1), k


def _positives(q: Tensor, k: Tensor, offset: int) -> Tensor:
    return (q * k[offset : offset + q.shape[0]]).sum(1)


def _theta_for(kind: str, s: Tensor) -> float:
    """theta relaxing no positive ("none"), every positive ("all") or about half ("some"),
    never within 1e-6 of a positive similarity (the loss has a kink there)."""
    if kind == "none":
        return float(s.max()) + 0.01
    if kind == "all":
        return float(s.min()) - 0.01
    v = s.sort().values
    mid = (len(v) - 1) // 2
    return float(v[mid] + v[mid + 1]) / 2 if len(v) > 1 else float(v[0]) + 0.01


def _call(
    module: Any, sym: bool, offset: int, chunk: int | None, groups: Tensor | None = None
) -> Callable[[Tensor, Tensor, Tensor, Any], Tensor]:
    """``fn(q, k, t, theta)``: the backend's symmetric or rows entry point."""
    opts: dict[str, Any] = {"groups": groups}
    if module is chunked:
        opts["chunk_size"] = chunk

    def fn(q: Tensor, k: Tensor, t: Tensor, theta: Any) -> Tensor:
        if sym:
            return module.symmetric_loss_sum(q, k, t, theta, **opts)  # type: ignore[no-any-return]
        return module.rows_loss_sum(q, k, t, theta, offset, **opts)  # type: ignore[no-any-return]

    return fn


def _value_and_grads(fn: Callable[..., Tensor], q: Tensor, k: Tensor, theta: Any) -> list[Tensor]:
    qg, kg = q.clone().requires_grad_(), k.clone().requires_grad_()
    t = torch.tensor(7.5, dtype=F64, requires_grad=True)
    loss = fn(qg, kg, t, theta)
    (loss * 0.7).backward()
    assert qg.grad is not None and kg.grad is not None and t.grad is not None
    return [plain(v) for v in (loss.detach(), qg.grad, kg.grad, t.grad)]


BACKENDS = [pytest.param(dense, None, id="dense"), pytest.param(chunked, 3, id="chunked-3")]


@pytest.mark.parametrize(("module", "chunk"), BACKENDS)
@pytest.mark.parametrize("sym", [True, False], ids=["symmetric", "rows"])
@pytest.mark.parametrize("kind", ["none", "some", "all"])
def test_tensor_theta_equals_float_theta(
    module: Any, chunk: int | None, sym: bool, kind: str
) -> None:
    """Same value and gradients (to the bit) for theta as a float and as a 0-d float64 tensor
    that requires grad (used detached: it gets no gradient), both equal to the reference."""
    b, n, offset = (9, 9, 0) if sym else (6, 11, 4)
    q, k = _case(b, n, offset, 5, seed=3)
    s = _positives(q, k, offset)
    theta = _theta_for(kind, s)
    low, high = {"none": (0, 0), "some": (1, b - 1), "all": (b, b)}[kind]
    assert low <= int((s > theta).sum()) <= high  # the regime the case is meant to test
    fn = _call(module, sym, offset, chunk)
    want = _value_and_grads(fn, q, k, theta)
    theta_t = torch.tensor(theta, dtype=F64, requires_grad=True)
    got = _value_and_grads(fn, q, k, theta_t)
    for a, w in zip(got, want, strict=True):
        assert torch.equal(a, w)
    assert theta_t.grad is None  # a constant of the call
    ref = _value_and_grads(lambda a, c, t, th: reference_sum(a, c, t, th, offset, sym), q, k, theta)
    for a, r in zip(got, ref, strict=True):
        torch.testing.assert_close(a, r, atol=1e-10, rtol=1e-9)


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(
    sym=st.booleans(),
    use_chunked=st.booleans(),
    b=st.integers(1, 9),
    extra=st.integers(0, 6),
    d=st.integers(1, 6),
    chunk=st.integers(1, 5),
    theta=st.floats(-1.0, 1.0),
    grouped=st.booleans(),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_tensor_theta_property(
    sym: bool,
    use_chunked: bool,
    b: int,
    extra: int,
    d: int,
    chunk: int,
    theta: float,
    grouped: bool,
    seed: int,
    data: st.DataObject,
) -> None:
    """Any shape, offset, chunk size, groups and theta in [-1, 1]: tensor theta == float theta."""
    n = b if sym else b + extra
    offset = 0 if sym else data.draw(st.integers(0, n - b))
    q, k = _case(b, n, offset, d, seed)
    groups = torch.arange(n) % 3 if grouped else None
    fn = _call(chunked if use_chunked else dense, sym, offset, chunk, groups)
    want = _value_and_grads(fn, q, k, theta)
    got = _value_and_grads(fn, q, k, torch.tensor(theta, dtype=F64))
    for a, w in zip(got, want, strict=True):
        assert torch.equal(a, w)


@pytest.mark.parametrize(("module", "chunk"), BACKENDS)
@pytest.mark.parametrize("sym", [True, False], ids=["symmetric", "rows"])
def test_gradcheck_with_tensor_theta(module: Any, chunk: int | None, sym: bool) -> None:
    """float64 gradcheck of the custom Functions with theta a 0-d tensor relaxing some positives."""
    b, n, offset = (7, 7, 0) if sym else (5, 9, 3)
    q, k = _case(b, n, offset, 4, seed=11)
    theta = torch.tensor(_theta_for("some", _positives(q, k, offset)), dtype=F64)
    fn = _call(module, sym, offset, chunk, torch.arange(n) % 4)
    t = torch.tensor(5.0, dtype=F64, requires_grad=True)
    inputs = (q.clone().requires_grad_(), k.clone().requires_grad_(), t)
    assert torch.autograd.gradcheck(lambda a, c, s: fn(a, c, s, theta), inputs)


def test_nosync_tensor_refuses_host_reads() -> None:
    """The sentinel itself: every host read raises, also on tensors computed from it."""
    theta = torch.tensor(0.25, dtype=F64).as_subclass(NoSyncTensor)
    derived = (theta * 2.0) <= 1.0
    assert isinstance(derived, NoSyncTensor)
    reads: list[Callable[[], object]] = [
        theta.item,
        theta.tolist,
        lambda: float(theta),
        lambda: int(theta),
        lambda: bool(derived),
        lambda: [0, 1][theta],  # type: ignore[index]
        lambda: float(theta.detach().to(torch.float32, copy=True)),
    ]
    for read in reads:
        with pytest.raises(HostSyncError):
            read()
    assert float(plain(theta)) == 0.25


@pytest.mark.parametrize(("module", "chunk"), BACKENDS)
@pytest.mark.parametrize("sym", [True, False], ids=["symmetric", "rows"])
def test_no_host_read_of_tensor_theta(module: Any, chunk: int | None, sym: bool) -> None:
    """Forward and backward never read theta (or anything computed from it) on the host: a theta
    whose host reads raise gives the float-theta value and gradients. The record the Functions
    get holds a tensor of the sentinel class, so the guard reaches everything derived from it."""
    b, n, offset = (8, 8, 0) if sym else (5, 10, 2)
    q, k = _case(b, n, offset, 4, seed=5)
    theta = _theta_for("some", _positives(q, k, offset))
    guarded = torch.tensor(theta, dtype=F64).as_subclass(NoSyncTensor)
    assert isinstance(CallArgs.build(q, guarded, None).threshold, NoSyncTensor)
    fn = _call(module, sym, offset, chunk, torch.arange(n) % 3)
    got = _value_and_grads(fn, q, k, guarded)
    want = _value_and_grads(fn, q, k, theta)
    for a, w in zip(got, want, strict=True):
        assert torch.equal(a, w)


@pytest.mark.parametrize(("module", "chunk"), BACKENDS)
def test_theta_changed_in_place_after_forward_does_not_change_backward(
    module: Any, chunk: int | None
) -> None:
    """The backends copy theta at the call: a tensor updated in place between forward and
    backward (e.g. a running quantile buffer) does not leak into the gradients of the call."""
    q, k = _case(8, 8, 0, 4, seed=9)
    s = _positives(q, k, 0)
    theta = torch.tensor(_theta_for("some", s), dtype=F64)
    want = _value_and_grads(_call(module, True, 0, chunk), q, k, theta.clone())
    qg, kg = q.clone().requires_grad_(), k.clone().requires_grad_()
    t = torch.tensor(7.5, dtype=F64, requires_grad=True)
    loss = _call(module, True, 0, chunk)(qg, kg, t, theta)
    theta.fill_(float(s.min()) - 0.5)  # would relax every positive
    (loss * 0.7).backward()
    for a, w in zip([loss.detach(), qg.grad, kg.grad, t.grad], want, strict=True):
        assert a is not None and torch.equal(a, w)


@pytest.mark.parametrize(("module", "chunk"), BACKENDS)
@pytest.mark.parametrize(
    ("theta", "exc", "match"),
    [
        (
            torch.tensor(1),
            TypeError,
            "threshold must be a floating-point tensor .*got dtype torch.int64",
        ),
        (torch.tensor([0.5]), ValueError, r"threshold must be 0-D, got shape \(1,\)"),
        (
            torch.tensor(0.5, device="meta"),
            ValueError,
            "threshold must hold values, got a tensor on the meta device",
        ),
        ("0.5", TypeError, "threshold must be a float, a 0-d floating tensor or None, got str"),
        (True, TypeError, "threshold must be a float, a 0-d floating tensor or None, got bool"),
    ],
)
def test_bad_tensor_theta_raises(
    module: Any, chunk: int | None, theta: object, exc: type[Exception], match: str
) -> None:
    q, k = _case(4, 4, 0, 3, seed=1)
    t = torch.tensor(5.0, dtype=F64)
    for sym in (True, False):
        with pytest.raises(exc, match=match):
            _call(module, sym, 0, chunk)(q, k, t, theta)


def test_float_theta_in_float32_matches_a_float32_tensor_theta() -> None:
    """fp32 features: theta is used in fp32 whichever way it is given (a float64 tensor too)."""
    q, k = (v.float() for v in _case(10, 10, 0, 6, seed=2))
    theta = _theta_for("some", _positives(q.double(), k.double(), 0))
    for module, chunk in ((dense, None), (chunked, 4)):
        fn = _call(module, True, 0, chunk)
        want = _value_and_grads(fn, q, k, theta)
        for th in (torch.tensor(theta), torch.tensor(theta, dtype=F64)):
            got = _value_and_grads(fn, q, k, th)
            for a, w in zip(got, want, strict=True):
                assert torch.equal(a, w)


# ---------------------------------------------------------------- triton: theta is a pointer


class _Recorder:
    """Stands in for a ``@triton.jit`` kernel: ``kernel[grid](*args, **kwargs)`` is recorded."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def __getitem__(self, grid: object) -> Callable[..., None]:
        return lambda *args, **kwargs: self.calls.append((args, kwargs))


def test_triton_reads_theta_through_a_pointer_with_one_specialization(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both kernels get theta as a tensor (a pointer, ``*fp32``), and triton's own binder gives
    the same specialization key (the key of its compiled-kernel cache) for a float theta, two
    tensor values and a 4-byte-misaligned view: no recompilation per theta value. Checked
    without a GPU: the launches are recorded, then bound for an sm_90 target."""
    pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import compute_cache_key, create_function_from_signature

    from relaxclip.backends import triton as tb

    if type(tb._fwd_kernel).__name__ != "JITFunction":
        pytest.skip("kernels were loaded in interpreter mode (TRITON_INTERPRET=1 in this process)")
    monkeypatch.setattr(tb, "is_available", lambda device=None: True)
    recorders = {name: _Recorder(getattr(tb, name)) for name in ("_fwd_kernel", "_bwd_kernel")}
    for name, rec in recorders.items():
        monkeypatch.setattr(tb, name, rec)
    x, y = torch.randn(20, 8), torch.randn(20, 8)
    thetas: list[Any] = [0.3, torch.tensor(0.7), torch.tensor([0.1, -0.2])[1]]
    assert thetas[2].data_ptr() % 16 != 0  # the view itself would specialize differently
    for theta in thetas:
        xg, t = x.clone().requires_grad_(), torch.tensor(10.0, requires_grad=True)
        tb.symmetric_loss_sum(xg, y, t, theta).sum().backward()
        tb.rows_loss_sum(xg[:7], y, t, theta, 5).sum().backward()
    backend = make_backend(GPUTarget("cuda", 90, 32))
    for name, rec in recorders.items():
        kernel = rec.kernel
        slot = kernel.arg_names.index("theta_ptr")
        binder = create_function_from_signature(kernel.signature, kernel.params, backend)
        keys: dict[bool, set[str]] = {}
        assert len(rec.calls) >= 2 * len(thetas), name
        for args, kwargs in rec.calls:
            assert isinstance(args[slot], torch.Tensor) and args[slot].dtype == torch.float32
            _, spec, options = binder(*args, **kwargs)
            assert spec[slot][0] == "*fp32", (name, spec[slot])
            symmetric = bool(kwargs.get("COLS", kwargs.get("SYMMETRIC")))
            keys.setdefault(symmetric, set()).add(compute_cache_key({}, spec, options))
        assert {k: len(v) for k, v in keys.items()} == {True: 1, False: 1}, name
    launched = [plain(args[recorders["_fwd_kernel"].kernel.arg_names.index("theta_ptr")])
                for args, _ in recorders["_fwd_kernel"].calls]  # fmt: skip
    assert [round(float(v), 6) for v in launched] == [0.3, 0.3, 0.7, 0.7, -0.2, -0.2]
