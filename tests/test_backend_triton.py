"""Triton backend tests.

The kernels run under the Triton CPU interpreter (``TRITON_INTERPRET=1``), which must be set
before triton is first imported. To stay independent of test order (other tests may import
triton normally), the kernel checks run in ONE subprocess: this file executed as a script
(``python tests/test_backend_triton.py``) computes every case against the float64 reference
(``tests/_reference.py``, independent of the library's backends) and prints JSON; the
pytest tests then assert each case's relative errors ``||out - ref|| / ||ref||``.

In-process tests (no interpreter needed): input validation, ``is_available`` semantics and that the
module imports when triton is missing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from _reference import reference_sum
from _workers import run_under_interpreter

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
TRITON_FILE = REPO / "relaxclip" / "backends" / "triton.py"

# Tolerances on ||out - ref|| / ||ref|| against the float64 reference evaluated on the SAME
# (already rounded) inputs. fp32 runs exact IEEE fp32 dots; bf16/fp16 round the softmax weights to
# the input dtype for the gradient matmuls and return gradients in the input dtype.
TOL = {"float32": 1e-5, "bfloat16": 1e-2, "float16": 1e-2}
TOL_LOSS = {"float32": 1e-6, "bfloat16": 1e-5, "float16": 1e-5}


def _make_case(
    b: int, n: int, d: int, offset: int, dtype: torch.dtype, gen: torch.Generator, noise: float
) -> tuple[torch.Tensor, torch.Tensor]:
    k = torch.nn.functional.normalize(torch.randn(n, d, generator=gen, dtype=torch.float64), dim=1)
    q = k[offset : offset + b] + noise * torch.randn(b, d, generator=gen, dtype=torch.float64)
    q = torch.nn.functional.normalize(q, dim=1)
    return q.to(dtype), k.to(dtype)


def _median_theta(q: torch.Tensor, k: torch.Tensor, offset: int) -> float:
    """A threshold that relaxes about half of the positives (and ties none)."""
    s = (q.double() * k[offset : offset + q.shape[0]].double()).sum(1)
    return float(s.sort().values[(len(s) - 1) // 2]) - 1e-4


def make_ids(pattern: str | None, n: int, gen: torch.Generator) -> torch.Tensor | None:
    """Group ids (of the n keys) for a kernel case: None; "collisions" (K = 1, random ids with
    repeats plus a run of 20 equal ids, so whole tiles are excluded); "k2" (two id vectors);
    "all-equal" (no negatives at all: every row and column of the loss is 0)."""
    if pattern is None:
        return None
    if pattern == "all-equal":
        return torch.full((n,), 3, dtype=torch.int64)
    ids = torch.randint(0, max(2, n // 3), (n,), generator=gen)
    ids[: min(n, 20)] = -5
    if pattern == "collisions":
        return ids
    assert pattern == "k2"
    return torch.stack([ids, torch.randint(0, max(2, n // 4), (n,), generator=gen)])


def run_case(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one kernel case under the interpreter; relative errors vs the float64 reference."""
    from relaxclip.backends import triton as tb

    gen = torch.Generator().manual_seed(spec["seed"])
    dtype = getattr(torch, spec["dtype"])
    sym = spec["sym"]
    b, d = spec["b"], spec["d"]
    n = b if sym else spec["n"]
    offset = 0 if sym else spec["offset"]
    q, k = _make_case(b, n, d, offset, dtype, gen, spec.get("noise", 0.6))
    ids = make_ids(spec.get("groups"), n, gen)
    theta = _median_theta(q, k, offset) if spec["theta"] == "median" else spec["theta"]
    t_val = spec.get("t", 14.3)
    cfg = tb.TritonConfig(**spec["cfg"]) if "cfg" in spec else None
    if spec.get("strided"):
        # non-contiguous views: every other column of a wider tensor, and a transposed copy
        q = torch.stack([q, torch.zeros_like(q)], dim=2).reshape(b, 2 * d)[:, ::2]
        k = k.T.contiguous().T
        assert not q.is_contiguous() and not k.is_contiguous()
    qg = q.clone().requires_grad_() if not spec.get("strided") else q.requires_grad_()
    kg = k.clone().requires_grad_() if not spec.get("strided") else k.requires_grad_()
    t = torch.tensor(t_val, requires_grad=True)

    def call() -> torch.Tensor:
        if sym:
            return tb.symmetric_loss_sum(qg, kg, t, theta, config=cfg, groups=ids)
        return tb.rows_loss_sum(qg, kg, t, theta, offset, config=cfg, groups=ids)

    if spec.get("autocast"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = call()
    else:
        loss = call()
    gout = 0.7  # a non-unit upstream gradient
    (loss * gout).backward()
    # reference on the values the kernel multiplied: the features' own dtype, autocast or not
    # (the library's precision policy: autocast never rounds the features down)
    rdt = dtype
    q64 = q.detach().to(rdt).double().requires_grad_()
    k64 = k.detach().to(rdt).double().requires_grad_()
    t64 = torch.tensor(t_val, dtype=torch.float64, requires_grad=True)
    ref = reference_sum(q64, k64, t64, theta, offset, sym, ids)
    (ref * gout).backward()

    # ||out - ref|| / max(||ref||, floor). The floor, 10 % of the natural size of the output (a sum
    # of b terms of size t for the loss; sqrt(b) * t for the gradients, sqrt(b) for dt), keeps
    # exactly-zero references (b = N = 1) and near-zero cancelling sums (lse_i - l_ii with a
    # dominant positive) from turning fp32 rounding of O(t) logits into large "relative" errors.
    def rel(a: torch.Tensor, r: torch.Tensor, floor: float) -> float:
        return float((a.double() - r).norm() / max(float(r.norm()), 0.1 * gout * floor))

    out: dict[str, Any] = {
        "loss": rel(loss.detach() * gout, ref.detach() * gout, t_val * b),
        "dq": rel(qg.grad, q64.grad, t_val * b**0.5),
        "dk": rel(kg.grad, k64.grad, t_val * b**0.5),
        "dt": rel(t.grad, t64.grad, b**0.5),
        "loss_dtype": str(loss.dtype),
        "dq_dtype": str(qg.grad.dtype),
        "dk_dtype": str(kg.grad.dtype),
        "relaxed": 0
        if theta is None
        else int(((q64 * k64[offset : offset + b]).sum(1) > theta).sum()),
        "loss_value": float(loss.detach()),
        "finite": all(bool(torch.isfinite(v).all()) for v in (loss, qg.grad, kg.grad, t.grad)),
    }
    # the library's dense backend in float64 on the same values: the same answer (issue 7)
    from relaxclip.backends import dense

    qd, kd = q64.detach().clone().requires_grad_(), k64.detach().clone().requires_grad_()
    td = t64.detach().clone().requires_grad_()
    if sym:
        dense_loss = dense.symmetric_loss_sum(qd, kd, td, theta, groups=ids)
    else:
        dense_loss = dense.rows_loss_sum(qd, kd, td, theta, offset, groups=ids)
    (dense_loss * gout).backward()
    out["vs_dense"] = max(
        rel(loss.detach() * gout, dense_loss.detach() * gout, t_val * b),
        rel(qg.grad, qd.grad, t_val * b**0.5),
        rel(kg.grad, kd.grad, t_val * b**0.5),
        rel(t.grad, td.grad, b**0.5),
    )
    if spec.get("repeat"):
        g1 = (qg.grad.clone(), kg.grad.clone(), t.grad.clone(), loss.detach().clone())
        qg.grad = kg.grad = t.grad = None
        loss2 = call()
        (loss2 * gout).backward()
        g2 = (qg.grad, kg.grad, t.grad, loss2.detach())
        out["bitwise_repeat"] = all(torch.equal(a, c) for a, c in zip(g1, g2, strict=True))
    return out


SMALL = {"block_m": 16, "block_n": 16, "block_d": 16, "bwd_block_m": 16, "bwd_block_n": 16}
CASES: dict[str, dict[str, Any]] = {
    "sym_fp32_plain": {"sym": True, "b": 37, "d": 23, "dtype": "float32", "theta": None, "seed": 1},
    "sym_fp32_relax_split_dchunks": {
        "sym": True, "b": 37, "d": 40, "dtype": "float32", "theta": "median", "seed": 2,
        "cfg": {**SMALL, "split": 2, "block_do": 32},  # D = 40 -> output chunks 32 + 16
    },
    "sym_bf16_relax": {"sym": True, "b": 33, "d": 40, "dtype": "bfloat16", "theta": "median", "seed": 3},
    "sym_fp16_plain_t100": {
        "sym": True, "b": 19, "d": 17, "dtype": "float16", "theta": None, "seed": 4, "t": 100.0,
    },
    "sym_fp32_strided": {
        "sym": True, "b": 21, "d": 18, "dtype": "float32", "theta": "median", "seed": 5, "strided": True,
    },
    "sym_autocast_bf16": {
        "sym": True, "b": 25, "d": 20, "dtype": "float32", "theta": "median", "seed": 6, "autocast": True,
    },
    "sym_bf16_repeat_split": {
        "sym": True, "b": 35, "d": 24, "dtype": "bfloat16", "theta": 0.5, "seed": 7,
        "cfg": {**SMALL, "split": 2, "block_do": 16}, "repeat": True,
    },
    "sym_fp32_rowgroup3": {
        "sym": True, "b": 53, "d": 20, "dtype": "float32", "theta": "median", "seed": 12,
        "cfg": {**SMALL, "split": 2, "row_group": 3},
    },
    "rows_fp32_relax_offset": {
        "sym": False, "b": 13, "n": 37, "offset": 5, "d": 23, "dtype": "float32", "theta": "median",
        "seed": 8, "cfg": {**SMALL, "split": 2, "block_do": 16},
    },
    "rows_bf16_plain_offset0": {
        "sym": False, "b": 21, "n": 45, "offset": 0, "d": 33, "dtype": "bfloat16", "theta": None,
        "seed": 9,
    },
    "rows_fp16_relax_tail": {
        "sym": False, "b": 17, "n": 40, "offset": 23, "d": 19, "dtype": "float16", "theta": "median",
        "seed": 10,
    },
    "rows_fp32_single_row": {
        "sym": False, "b": 1, "n": 5, "offset": 4, "d": 3, "dtype": "float32", "theta": "median",
        "seed": 11,
    },
    # groups= (same-group pairs excluded; ids loaded per tile)
    "sym_fp32_groups_split_rowgroup": {
        "sym": True, "b": 53, "d": 20, "dtype": "float32", "theta": "median", "seed": 13,
        "cfg": {**SMALL, "split": 2, "row_group": 2, "block_do": 16}, "groups": "collisions",
    },
    "sym_bf16_groups_k2": {
        "sym": True, "b": 37, "d": 24, "dtype": "bfloat16", "theta": 0.5, "seed": 14,
        "groups": "k2",
    },
    "rows_fp32_groups_k2_offset": {
        "sym": False, "b": 17, "n": 45, "offset": 21, "d": 19, "dtype": "float32", "theta": "median",
        "seed": 15, "cfg": {**SMALL, "split": 2}, "groups": "k2",
    },
    "sym_fp32_groups_all_equal": {
        "sym": True, "b": 21, "d": 9, "dtype": "float32", "theta": None, "seed": 16,
        "groups": "all-equal",
    },
}  # fmt: skip


def _hypothesis_check() -> dict[str, Any]:
    """Property: for random shapes, offsets, thresholds and tile configs, fp32 matches the reference."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    worst: dict[str, float] = {"loss": 0.0, "dq": 0.0, "dk": 0.0, "dt": 0.0}
    count = {"n": 0}

    @settings(max_examples=8, deadline=None, derandomize=True, database=None)
    @given(
        sym=st.booleans(),
        b=st.integers(1, 40),
        extra=st.integers(0, 20),
        d=st.integers(1, 40),
        theta=st.one_of(st.none(), st.floats(-0.9, 0.95)),
        split=st.sampled_from([None, 1, 2, 3]),
        group=st.sampled_from([None, 1, 2, 3]),
        blocks=st.sampled_from([16, 32]),
        seed=st.integers(0, 2**16),
        ids=st.sampled_from([None, "collisions", "k2"]),
        data=st.data(),
    )
    def prop(sym, b, extra, d, theta, split, group, blocks, seed, ids, data) -> None:  # type: ignore[no-untyped-def]
        n = b if sym else b + extra
        offset = 0 if sym else data.draw(st.integers(0, n - b))
        spec = {
            "sym": sym, "b": b, "n": n, "offset": offset, "d": d, "dtype": "float32",
            "theta": theta, "seed": seed, "groups": ids,
            "cfg": {"block_m": blocks, "block_n": 16, "block_d": 16, "bwd_block_m": 16,
                    "bwd_block_n": blocks, "split": split, "block_do": 16, "row_group": group},
        }  # fmt: skip
        res = run_case(spec)
        count["n"] += 1
        count["grouped"] = count.get("grouped", 0) + (ids is not None)
        for key in worst:
            assert res[key] <= TOL["float32"], (spec, res)
            worst[key] = max(worst[key], res[key])

    try:
        prop()
    except Exception as exc:  # reported to the parent test
        return {"ok": False, "error": repr(exc)[:2000]}
    return {"ok": True, "examples": count["n"], "grouped": count.get("grouped", 0), "worst": worst}


def _autocast_agreement() -> dict[str, float]:
    """The public loss with every backend, inside and outside ``torch.autocast(bfloat16)``,
    against the dense backend outside autocast: relative error of (loss, dx, dy, dt), worst of
    the four, per ``backend/feature dtype/autocast`` (``||a - b|| / max(||b||, 0.1)``)."""
    from relaxclip.loss import relaxed_contrastive_loss

    gen = torch.Generator().manual_seed(21)
    x0 = torch.randn(29, 24, generator=gen)
    y0 = x0 + 0.7 * torch.randn(29, 24, generator=gen)
    out: dict[str, float] = {}
    for dtype in (torch.float32, torch.bfloat16):

        def run(backend: str, autocast: bool, dtype: torch.dtype = dtype) -> list[torch.Tensor]:
            x = x0.to(dtype).requires_grad_()
            y = y0.to(dtype).requires_grad_()
            t = torch.tensor(20.0, requires_grad=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = relaxed_contrastive_loss(x, y, t, threshold=0.5, backend=backend)
                grads = torch.autograd.grad(loss, (x, y, t))
            return [loss.detach().double(), *(g.double() for g in grads)]

        want = run("dense", autocast=False)
        for backend in ("dense", "chunked", "triton"):
            for autocast in (False, True):
                got = run(backend, autocast)
                # floor 0.1: the natural size of the mean loss and its gradients is O(1), and
                # dL/dt is a cancelling sum (here ~2e-3) whose fp32 rounding is ~1e-7 absolute
                rel = max(
                    float((a - b).norm() / max(float(b.norm()), 0.1))
                    for a, b in zip(got, want, strict=True)
                )
                out[f"{backend}/{str(dtype).split('.')[-1]}/autocast={autocast}"] = rel
    return out


def _theta_run(q: torch.Tensor, k: torch.Tensor, theta: Any, sym: bool, offset: int) -> list[Any]:
    """(loss, dq, dk, dt) of the triton loss sum for theta (any accepted form), as plain tensors."""
    from _nosync import plain

    from relaxclip.backends import triton as tb

    qg, kg = q.clone().requires_grad_(), k.clone().requires_grad_()
    t = torch.tensor(14.3, requires_grad=True)
    if sym:
        loss = tb.symmetric_loss_sum(qg, kg, t, theta)
    else:
        loss = tb.rows_loss_sum(qg, kg, t, theta, offset)
    (loss * 0.7).backward()
    return [plain(v) for v in (loss.detach(), qg.grad, kg.grad, t.grad)]


def _theta_checks() -> dict[str, Any]:
    """theta as a 0-d tensor in the kernels (issue #18): for both entry points and theta relaxing
    no, some or every positive, (loss, dq, dk, dt) with a float32 tensor theta that requires grad
    and with a :class:`NoSyncTensor` theta (any host read of it, or of anything computed from it,
    raises), each compared bit for bit with the float theta run."""
    from _nosync import NoSyncTensor

    gen = torch.Generator().manual_seed(31)
    out: dict[str, Any] = {}
    for sym in (True, False):
        b, n, offset = (19, 19, 0) if sym else (13, 29, 7)
        q, k = _make_case(b, n, 12, offset, torch.float32, gen, 0.6)
        s = (q.double() * k[offset : offset + b].double()).sum(1)
        for kind, theta in (
            ("none", float(s.max()) + 0.01),
            ("some", _median_theta(q, k, offset)),
            ("all", float(s.min()) - 0.01),
        ):
            want = _theta_run(q, k, theta, sym, offset)
            theta_t = torch.tensor(theta, requires_grad=True)
            res: dict[str, Any] = {"relaxed": int((s > theta).sum()), "b": b}
            got = _theta_run(q, k, theta_t, sym, offset)
            res["same_tensor"] = all(map(torch.equal, got, want))
            res["theta_grad_none"] = theta_t.grad is None
            try:
                guarded = torch.tensor(theta).as_subclass(NoSyncTensor)
                got = _theta_run(q, k, guarded, sym, offset)
                res["same_nosync"] = all(map(torch.equal, got, want))
            except Exception as exc:
                res["same_nosync"] = repr(exc)[:500]
            out[f"{'sym' if sym else 'rows'}/{kind}"] = res
    return out


def _double_backward() -> str:
    """The error of a ``create_graph=True`` gradient through the triton loss ("no error": none)."""
    from relaxclip.backends import triton as tb

    q, k = _make_case(8, 8, 16, 0, torch.float32, torch.Generator().manual_seed(5), 0.5)
    loss = tb.symmetric_loss_sum(q.requires_grad_(), k, torch.tensor(10.0), 0.8)
    try:
        torch.autograd.grad(loss, q, create_graph=True)
    except RuntimeError as exc:
        return str(exc)
    return "no error"


def _worker() -> None:
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("the worker must run with TRITON_INTERPRET=1")
    try:
        import triton  # noqa: F401
    except ImportError:
        print(json.dumps({"_unavailable": "triton is not installed"}))
        return
    results: dict[str, Any] = {}
    for name, spec in CASES.items():
        try:
            results[name] = run_case(spec)
        except Exception as exc:
            results[name] = {"error": repr(exc)[:2000]}
    results["_hypothesis"] = _hypothesis_check()
    try:
        results["_theta"] = _theta_checks()
    except Exception as exc:
        results["_theta"] = {"error": repr(exc)[:2000]}
    try:
        results["_autocast"] = _autocast_agreement()
    except Exception as exc:
        results["_autocast"] = {"error": repr(exc)[:2000]}
    results["_double_backward"] = _double_backward()
    print("RESULTS " + json.dumps(results))


# --------------------------------------------------------------------------------------------
# pytest side
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def interp_results() -> dict[str, Any]:
    proc, results = run_under_interpreter(HERE)
    if proc.returncode != 0 or results is None:
        if "_unavailable" in proc.stdout:
            pytest.skip("triton interpreter unavailable")
        raise AssertionError(
            f"interpreter worker failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return results  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", sorted(CASES))
def test_kernel_matches_float64_reference(interp_results: dict[str, Any], name: str) -> None:
    res = interp_results[name]
    assert "error" not in res, res.get("error")
    spec = CASES[name]
    dt = spec["dtype"]  # autocast changes nothing: fp32 features keep fp32 tolerances
    for key in ("dq", "dk", "dt"):
        assert res[key] <= TOL[dt], f"{name}: {key} rel err {res[key]:.3g} > {TOL[dt]}"
    assert res["loss"] <= TOL_LOSS[dt], f"{name}: loss rel err {res['loss']:.3g}"
    assert res["vs_dense"] <= TOL[dt], (
        f"{name}: differs from the dense backend by {res['vs_dense']:.3g}"
    )
    assert res["loss_dtype"] == "torch.float32"
    grad_dtype = f"torch.{spec['dtype']}"  # gradients come back in the input dtype
    assert res["dq_dtype"] == grad_dtype and res["dk_dtype"] == grad_dtype
    if spec["theta"] == "median":
        assert res["relaxed"] > 0, "the case should relax some positives"
    if spec.get("repeat"):
        assert res["bitwise_repeat"], "two identical runs must give bitwise identical results"
    assert res["finite"], f"{name}: NaN or Inf in the loss or its gradients"
    if spec.get("groups") == "all-equal":  # no negatives: every term is lse(p_i) - p_i = 0
        assert abs(res["loss_value"]) <= 1e-4, res["loss_value"]


def test_kernel_property_random_shapes(interp_results: dict[str, Any]) -> None:
    res = interp_results["_hypothesis"]
    assert res["ok"], res.get("error")
    assert res["examples"] >= 5
    assert res["grouped"] >= 1, "some examples must use group ids"


def test_backends_agree_under_autocast(interp_results: dict[str, Any]) -> None:
    """One precision policy (issue 11 item 4): dense, chunked and triton give the same loss and
    gradients inside ``torch.autocast(bfloat16)`` as the dense backend outside it; fp32 features
    are never rounded to bf16 (before: triton cast them down, a ~1e-2 relative difference)."""
    res = interp_results["_autocast"]
    assert "error" not in res, res.get("error")
    assert len(res) == 12
    for key, rel in res.items():
        backend, dtype, _ = key.split("/")
        # fp32: rounding of differently ordered fp32 sums; bf16 features: triton rounds the
        # softmax weights to bf16 for its gradient matmuls (dense/chunked keep them in fp32)
        tol = TOL["float32"] if dtype == "float32" or backend != "triton" else TOL["bfloat16"]
        assert rel <= tol, f"{key}: relative difference {rel:.3g} > {tol}"


def test_tensor_theta_in_the_kernels(interp_results: dict[str, Any]) -> None:
    """Issue #18: a 0-d tensor theta gives bit for bit the float-theta loss and gradients, no
    gradient reaches theta, and nothing reads theta on the host (before: ``float(threshold)``)."""
    res = interp_results["_theta"]
    assert "error" not in res, res.get("error")
    assert sorted(res) == [f"{e}/{k}" for e in ("rows", "sym") for k in ("all", "none", "some")]
    for key, r in res.items():
        want = {"none": (0, 0), "some": (1, r["b"] - 1), "all": (r["b"], r["b"])}[key.split("/")[1]]
        assert want[0] <= r["relaxed"] <= want[1], (key, r)
        assert r["same_tensor"] is True, (key, r)
        assert r["theta_grad_none"] is True, (key, r)
        assert r["same_nosync"] is True, (key, r)


def test_double_backward_raises(interp_results: dict[str, Any]) -> None:
    """As the other backends: ``create_graph=True`` raises instead of a wrong second derivative."""
    assert "no second derivative" in interp_results["_double_backward"]


def test_reference_is_not_trivial() -> None:
    """The reference itself: theta >= max s_ii equals plain CLIP; relaxing lowers dL/ds_ii to 0."""
    gen = torch.Generator().manual_seed(0)
    q, k = _make_case(6, 6, 5, 0, torch.float64, gen, 0.3)
    t = torch.tensor(10.0, dtype=torch.float64)
    plain = reference_sum(q, k, t, None, 0, True)
    logits = t * q @ k.T
    clip = torch.nn.functional.cross_entropy(
        logits, torch.arange(6), reduction="sum"
    ) + torch.nn.functional.cross_entropy(logits.T, torch.arange(6), reduction="sum")
    torch.testing.assert_close(plain, clip)
    torch.testing.assert_close(reference_sum(q, k, t, 1.0, 0, True), clip)
    qr = q.clone().requires_grad_()
    theta = float((q * k).sum(1).min()) - 0.01  # every positive relaxed
    reference_sum(qr, k, t, theta, 0, True).backward()
    assert qr.grad is not None
    # every positive relaxed: l_ii = t * theta is constant, so dL/dq_i = t * sum_{j != i} (P + Q)_ij k_j
    s = q @ k.T
    eye = torch.eye(6, dtype=torch.bool)
    logits = t * torch.where(eye, torch.full_like(s, theta), s)
    w = (logits.softmax(1) + logits.softmax(0)).masked_fill(eye, 0.0)
    torch.testing.assert_close(qr.grad, t * w @ k)


def _load_without_triton(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setitem(sys.modules, "triton", None)  # makes `import triton` raise ImportError
    monkeypatch.setitem(sys.modules, "triton.language", None)
    spec = importlib.util.spec_from_file_location("_relaxclip_triton_no_triton", TRITON_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_imports_and_reports_unavailable_without_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = _load_without_triton(monkeypatch)
    assert mod.is_available() is False
    assert mod.is_available("cpu") is False
    x = torch.randn(4, 3)
    with pytest.raises(RuntimeError, match="triton"):
        mod.symmetric_loss_sum(x, x, torch.tensor(1.0), None)


def test_output_chunks_cover_features_once() -> None:
    pytest.importorskip("triton")
    from relaxclip.backends.triton import _output_chunks

    for dim in (1, 3, 16, 17, 40, 100, 512, 768, 1000, 1024):
        for width in (16, 32, 256, 512):
            chunks = _output_chunks(dim, width)
            covered = [c for start, w, n in chunks for c in range(start, start + w * n)]
            assert covered[:dim] == list(range(dim)), (dim, width, chunks)
            assert all(w <= max(width, 16) and w & (w - 1) == 0 for _, w, _ in chunks)
            assert len(covered) - dim < chunks[-1][1], "only the last chunk may be masked"
    assert _output_chunks(768, 512) == [(0, 512, 1), (512, 256, 1)]
    assert _output_chunks(512, 256) == [(0, 256, 2)]


def test_is_available_semantics(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("triton")
    from relaxclip.backends import triton as tb

    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert tb.is_available("cpu") is False
    assert tb.is_available("cuda") is torch.cuda.is_available()
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    # the CPU needs the interpreter from the import of triton on (set later, it cannot run)
    import triton.language as tl

    loaded = type(tl.sum).__name__ == "InterpretedFunction"
    assert tb.is_available("cpu") is loaded
    assert tb.is_available("meta") is False


_LATE_INTERPRETER = """
import os, torch, triton
os.environ["TRITON_INTERPRET"] = "1"
from relaxclip import relaxed_contrastive_loss
x, y = torch.randn(8, 16), torch.randn(8, 16)
try:
    relaxed_contrastive_loss(x, y, 10.0, backend="triton")
except RuntimeError as exc:
    print("RAISED", type(exc).__name__, exc)
"""


def test_interpreter_set_after_importing_triton_is_named() -> None:
    """Before: a raw ``InterpreterError: Cannot call @triton.jit'd outside of the scope of a
    kernel`` when ``TRITON_INTERPRET=1`` was set after ``import triton``."""
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-c", _LATE_INTERPRETER],
        env={**env, "PYTHONWARNINGS": "ignore"},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RAISED RuntimeError" in proc.stdout, proc.stdout[-3000:]
    assert "TRITON_INTERPRET=1 must be set before triton is imported" in proc.stdout


def test_validation_errors() -> None:
    pytest.importorskip("triton")
    from relaxclip.backends import triton as tb

    x = torch.randn(5, 4, dtype=torch.float64)
    t = torch.tensor(1.0, dtype=torch.float64)
    with pytest.raises(TypeError, match="float64.*dense"):
        tb.symmetric_loss_sum(x, x, t, None)
    with pytest.raises(TypeError, match="float64"):
        tb.rows_loss_sum(x, x, t, None, 0)
    with pytest.raises(ValueError, match="2-D"):
        tb.symmetric_loss_sum(torch.randn(5), torch.randn(5), torch.tensor(1.0), None)
    with pytest.raises(TypeError, match="bfloat16, float16 or float32"):
        xi = torch.ones(3, 2, dtype=torch.int32)
        tb.symmetric_loss_sum(xi, xi, torch.tensor(1.0), None)
    huge = torch.empty(1, 1).expand(2**16, 2**15)  # 2**31 elements, no memory
    with pytest.raises(ValueError, match="32-bit indexing"):
        tb.symmetric_loss_sum(huge, huge, torch.tensor(1.0), None)
    with pytest.raises(ValueError, match="power of two"):
        tb.TritonConfig(block_m=48)
    with pytest.raises(ValueError, match="split"):
        tb.TritonConfig(split=0)
    with pytest.raises(TypeError, match="TritonConfig.num_warps must be an int, got NoneType"):
        tb.TritonConfig(num_warps=None)  # type: ignore[arg-type]  # before: accepted, failed later
    tb.TritonConfig(block_do=None, split=None, row_group=None)  # the optional fields


def test_offset_and_shape_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("triton")
    from relaxclip.backends import triton as tb

    monkeypatch.setenv("TRITON_INTERPRET", "1")  # reach the checks after is_available on CPU
    q, k, t = torch.randn(3, 4), torch.randn(5, 4), torch.tensor(1.0)
    with pytest.raises(ValueError, match="offset"):
        tb.rows_loss_sum(q, k, t, None, 3)
    with pytest.raises(ValueError, match="offset"):
        tb.rows_loss_sum(q, k, t, None, -1)
    with pytest.raises(TypeError, match="offset"):
        tb.rows_loss_sum(q, k, t, None, 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same number of rows"):
        tb.symmetric_loss_sum(q, k, t, None)
    with pytest.raises(ValueError, match="feature dim"):
        tb.symmetric_loss_sum(q, torch.randn(3, 5), t, None)


def test_public_loss_passes_triton_options_to_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """``backend_options={"config", "allow_tf32"}`` of the public loss and module reach the launch
    (issue 11 item 3); the kernel itself is replaced by a recorder, so no interpreter is needed."""
    pytest.importorskip("triton")
    from relaxclip.backends import triton as tb
    from relaxclip.loss import RelaxedContrastiveLoss, relaxed_contrastive_loss

    seen: list[tuple[Any, str]] = []

    def record(q, k, t, args):  # type: ignore[no-untyped-def]
        seen.append((args.config, args.precision))
        return (q.float() @ k.float().T).sum() * t  # any differentiable stand-in

    monkeypatch.setattr(tb, "is_available", lambda device=None: True)
    monkeypatch.setattr(tb._TritonLoss, "apply", record)
    cfg = tb.TritonConfig(block_m=32, block_n=32, split=2)
    x, y = torch.randn(6, 4), torch.randn(6, 4)
    options = {"config": cfg, "allow_tf32": True}
    relaxed_contrastive_loss(x, y, 5.0, backend="triton", backend_options=options)
    RelaxedContrastiveLoss(backend="triton", backend_options={"config": cfg})(x, y, 5.0)
    relaxed_contrastive_loss(x, y, 5.0, backend="triton")
    assert seen == [(cfg, "tf32"), (cfg, "ieee"), (tb.INTERPRETER_CONFIG, "ieee")]


def test_groups_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernels read ids through raw pointers: a wrong shape or dtype must raise first."""
    pytest.importorskip("triton")
    from relaxclip.backends import triton as tb

    monkeypatch.setenv("TRITON_INTERPRET", "1")  # reach the checks after is_available on CPU
    q, k, t = torch.randn(3, 4), torch.randn(5, 4), torch.tensor(1.0)
    with pytest.raises(ValueError, match=r"groups must have shape .* N = 3"):
        tb.symmetric_loss_sum(q, q, t, None, groups=torch.arange(4))
    with pytest.raises(ValueError, match=r"groups must have shape .* N = 5"):
        tb.rows_loss_sum(q, k, t, None, 1, groups=torch.arange(3))  # ids are the KEYS' (N = 5)
    with pytest.raises(ValueError, match="groups must have shape"):
        tb.rows_loss_sum(q, k, t, None, 1, groups=torch.zeros(0, 5, dtype=torch.long))
    with pytest.raises(TypeError, match="groups must have an integer dtype"):
        tb.rows_loss_sum(q, k, t, None, 0, groups=torch.zeros(5))


# --------------------------------------------------------------------------------------------
# benchmarks/loss_gpu.py: the parts that run without a GPU
# --------------------------------------------------------------------------------------------
def _load_benchmark() -> Any:
    path = REPO / "benchmarks" / "loss_gpu.py"
    spec = importlib.util.spec_from_file_location("_loss_gpu_bench", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_cli_and_table() -> None:
    bench = _load_benchmark()
    args = bench.parse_args(["--batches", "4096,65536", "--dims", "768", "--out", "x.json"])
    assert args.batches == [4096, 65536] and args.dims == [768] and args.repeats >= 20
    with pytest.raises(SystemExit):
        bench.parse_args(["--repeats", "5"])  # the median of at least 20 runs
    with pytest.raises(SystemExit):
        bench.parse_args(["--batches", "4096,x"])
    grid = bench.order_grid([4096, 32768, 65536], [512, 768])
    assert grid[:4] == [(32768, 512), (65536, 512), (32768, 768), (65536, 768)]
    assert sorted(grid) == sorted((b, d) for b in (4096, 32768, 65536) for d in (512, 768))
    # the figure: 788 TFLOP/s -> 4-GEMM roofline at B = 32768, D = 512 is 5.6 ms
    assert abs(bench.roofline_ms(32768, 512, 788.0) - 5.58) < 0.01
    rows = [
        {"B": 65536, "D": 512, "method": "memeff", "note": "skipped: not importable"},
        {"B": 4096, "D": 512, "method": "relaxclip triton", "median_ms": 1.234,
         "frac_roofline": 0.614, "extra_bytes": 3 * 2**20},
    ]  # fmt: skip
    lines = bench.format_table(rows).splitlines()
    assert lines[0].split(" | ")[0].strip() == "B" and len(lines) == 4
    assert "4096" in lines[2] and "1.23" in lines[2] and "61" in lines[2] and " 3 " in lines[2]
    assert "65536" in lines[3] and "skipped: not importable" in lines[3] and " - " in lines[3]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU exit path")
def test_benchmark_exits_cleanly_without_cuda(capsys: pytest.CaptureFixture[str]) -> None:
    bench = _load_benchmark()
    assert bench.main(["--out", "unused.json"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# GPU code generation without a GPU: compile the kernels ahead of time for Hopper (sm_90a)
# --------------------------------------------------------------------------------------------
_DATA_PTRS = ("q_ptr", "k_ptr", "a_ptr", "b_ptr", "out_ptr")


def _compile_sm90(
    kernel: Any, dtype: str, constexprs: dict[str, Any], warps: int, stages: int
) -> Any:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig = {}
    for name in kernel.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name == "g_ptr":
            sig[name] = "*i64"  # group ids
        elif name.endswith("_ptr"):
            sig[name] = "*" + (dtype if name in _DATA_PTRS else "fp32")
        else:
            sig[name] = "fp32" if name in ("threshold", "delta_coef") else "i32"
    src = ASTSource(kernel, sig, constexprs)
    target = GPUTarget("cuda", 90, 32)
    opts = {"num_warps": warps, "num_stages": stages, "enable_fp_fusion": True}
    return triton.compile(src, target=target, options=opts)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("which", "dtype", "flags"),
    [
        ("fwd", "bf16", {"HAS_THRESH": True, "COLS": True, "HAS_GROUPS": False}),
        ("fwd", "fp32", {"HAS_THRESH": False, "COLS": False, "HAS_GROUPS": False}),
        ("fwd", "bf16", {"HAS_THRESH": True, "COLS": True, "HAS_GROUPS": True}),
        (
            "bwd",
            "bf16",
            {"A_IS_ROWS": True, "SYMMETRIC": True, "HAS_THRESH": True, "HAS_GROUPS": False},
        ),
        (
            "bwd",
            "fp16",
            {"A_IS_ROWS": False, "SYMMETRIC": False, "HAS_THRESH": False, "HAS_GROUPS": False},
        ),
        (
            "bwd",
            "bf16",
            {"A_IS_ROWS": False, "SYMMETRIC": True, "HAS_THRESH": True, "HAS_GROUPS": True},
        ),
    ],
)
def test_kernels_compile_for_hopper(which: str, dtype: str, flags: dict[str, bool]) -> None:
    """The interpreter never runs Triton's GPU compiler; this does (PTX + cubin for sm_90a, no
    device needed), with the default tiles: tensor-core wgmma used, shared memory within 227 KiB."""
    pytest.importorskip("triton")
    from relaxclip.backends import triton as tb

    kernel = tb._fwd_kernel if which == "fwd" else tb._bwd_kernel
    if type(kernel).__name__ != "JITFunction":
        pytest.skip("kernels were loaded in interpreter mode (TRITON_INTERPRET=1 in this process)")
    cfg = tb.DEFAULT_CONFIG
    # fp32 with allow_tf32 (exact IEEE fp32 dots run on CUDA cores, without wgmma)
    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    prec = tb._precision(torch_dtype, allow_tf32=True)
    if which == "fwd":
        consts = {"BLOCK_M": cfg.block_m, "BLOCK_N": cfg.block_n, "BLOCK_D": cfg.block_d}
        consts |= {"stride_qd": 1, "stride_kd": 1}
        warps, stages = cfg.num_warps, cfg.num_stages
    else:
        consts = {"BLOCK_A": cfg.bwd_block_m, "BLOCK_B": cfg.bwd_block_n, "BLOCK_D": cfg.block_d}
        consts |= {"BLOCK_DO": 256, "stride_ad": 1, "stride_bd": 1, "stride_od": 1}
        warps, stages = cfg.bwd_num_warps, cfg.bwd_num_stages
    consts |= {**flags, "PRECISION": prec, "UPCAST": False}
    try:
        compiled = _compile_sm90(kernel, dtype, consts, warps, stages)
    except (ImportError, RuntimeError, FileNotFoundError) as exc:  # no CUDA backend / ptxas
        if "ptxas" in repr(exc) or isinstance(exc, ImportError | FileNotFoundError):
            pytest.skip(f"triton's CUDA toolchain is unavailable: {exc!r}")
        raise
    ptx = compiled.asm["ptx"]
    assert "wgmma.mma_async" in ptx, "expected Hopper tensor-core instructions"
    assert compiled.metadata.shared <= 227 * 1024


if __name__ == "__main__":
    _worker()
