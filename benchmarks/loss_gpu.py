"""GPU benchmark of the relaxed contrastive loss: correctness first, then fwd+bwd time and memory.

    python benchmarks/loss_gpu.py --out gpu_results.json          # everything, < 10 minutes
    python benchmarks/loss_gpu.py --quick --out quick.json        # small grid, smoke run

One process, one command (issue 7):
1. Correctness of the triton backend against a float64 reference of the loss formula (written out
   below, independent of the library): fresh random inputs for every check, outputs poisoned
   (the CUDA caching allocator's free memory is filled with NaN before each run, gradients reset),
   ``||out - ref|| / ||ref||`` for the loss, dX, dY and d(logit_scale); bf16/fp16 <= 1e-2,
   fp32 (IEEE or TF32) <= 1e-3; symmetric and rows (with offset) functions, with and without
   relaxation, odd B and D up to 1024, strided inputs, autocast, bitwise reproducibility.
2. The card's measured bf16 matmul rate (8192^3 GEMM), giving the 4-GEMM roofline of fwd+bwd
   (4 x 2 B^2 D flops: S in the forward, S recomputed, G Y and G^T X in the backward).
3. Optional quick tile-config sweep of the triton kernel (``--tune``), the fastest config is used.
4. fwd+bwd timing (CUDA events, warm-up, median of ``--repeats`` >= 20) and peak extra memory
   (``torch.cuda.max_memory_allocated`` minus the allocation before the call, gradients included)
   for B in {4096, 16384, 32768, 65536}, D in {512, 768}, bf16 features, learnable logit scale:
   relaxclip triton (relaxed, theta=0.5), relaxclip triton plain (no relaxation, fixed t),
   relaxclip chunked, relaxclip dense (where it fits), plain torch (one logit matmul + two
   cross-entropies), open_clip ``ClipLoss``, Inf-CL (``inf_cl.cal_inf_loss``, two calls) and
   memeff (``MemoryEfficientCLIPLoss``, fixed temperature) when importable (``--memeff-path`` adds
   a directory to ``sys.path``); missing ones are skipped with a printed note.
The whole run is time-boxed (``--budget-s``, default 540 s): the headline sizes run first and
measurements that would not fit are skipped with a note. The table is printed last; the full
results go to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import gc
import importlib
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BATCHES = (4096, 16384, 32768, 65536)
DEFAULT_DIMS = (512, 768)
HEADLINE = ((32768, 512), (65536, 512), (32768, 768), (65536, 768))
TOL = {"bfloat16": 1e-2, "float16": 1e-2, "float32": 1e-3}
MIB = 2**20


# ------------------------------------------------------------------------------------------
# CPU-only helpers (argument parsing, ordering, table)
# ------------------------------------------------------------------------------------------
def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--out", type=Path, default=Path("loss_gpu_results.json"), help="JSON output")
    p.add_argument("--batches", type=_int_list, default=list(DEFAULT_BATCHES), help="B values")
    p.add_argument("--dims", type=_int_list, default=list(DEFAULT_DIMS), help="D values")
    p.add_argument("--repeats", type=int, default=20, help="timed runs per measurement (>= 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs before timing")
    p.add_argument("--budget-s", type=float, default=540.0, help="time box for the whole run")
    p.add_argument("--threshold", type=float, default=0.5, help="relaxation theta for relaxclip")
    p.add_argument("--logit-scale", type=float, default=1 / 0.07, help="t (CLIP init 1/0.07)")
    p.add_argument("--tune", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--skip-correctness", action="store_true")
    p.add_argument("--quick", action="store_true", help="B in {4096, 8192}, D=512, 20 repeats")
    p.add_argument("--memeff-path", type=Path, default=None, help="dir holding memeff's module")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default="cuda",
        help="cpu: smoke run of the script's logic under TRITON_INTERPRET=1 (tiny sizes only; "
        "its timings mean nothing)",
    )
    args = p.parse_args(argv)
    if args.repeats < 20:
        p.error("--repeats must be >= 20 (the median of at least 20 runs is reported)")
    if args.quick:
        args.batches, args.dims = [4096, 8192], [512]
    return args


def order_grid(batches: Sequence[int], dims: Sequence[int]) -> list[tuple[int, int]]:
    """Headline sizes first (they matter most if the time box cuts the run), then the rest."""
    grid = [(b, d) for d in dims for b in batches]
    first = [g for g in HEADLINE if g in grid]
    return first + [g for g in grid if g not in first]


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Plain-text table of timing rows (keys: B, D, method, median_ms, frac_roofline, extra_bytes,
    note); missing values are shown as '-'. Rows are sorted by D, B, then their given order."""
    head = ("B", "D", "method", "fwd+bwd ms", "% roofline", "extra MiB", "note")
    order = {id(r): i for i, r in enumerate(rows)}
    body = []
    for r in sorted(rows, key=lambda r: (r["D"], r["B"], order[id(r)])):
        ms = r.get("median_ms")
        frac = r.get("frac_roofline")
        extra = r.get("extra_bytes")
        body.append(
            (
                str(r["B"]),
                str(r["D"]),
                str(r["method"]),
                "-" if ms is None else f"{ms:.2f}",
                "-" if frac is None else f"{100 * frac:.0f}",
                "-" if extra is None else f"{extra / MIB:.0f}",
                str(r.get("note", "")),
            )
        )
    widths = [
        max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(head)
    ]
    lines = [" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in body]
    return "\n".join(lines)


def roofline_ms(batch: int, dim: int, tflops: float) -> float:
    """Time of the 4 B x B x D GEMMs of fwd+bwd at ``tflops`` TFLOP/s, in ms."""
    return 4 * 2 * batch * batch * dim / (tflops * 1e12) * 1e3


# ------------------------------------------------------------------------------------------
# GPU part
# ------------------------------------------------------------------------------------------
def _import_relaxclip() -> None:
    try:
        importlib.import_module("relaxclip")
    except ImportError:
        sys.path.insert(0, str(REPO))


def reference_loss(q: Any, k: Any, t: Any, theta: float | None, offset: int, sym: bool) -> Any:
    """float64 reference sum (contract of relaxclip.backends): autograd gives the gradients."""
    import torch

    s = q @ k.T
    rows = torch.arange(q.shape[0], device=q.device)
    cols = rows + offset
    pos = s[rows, cols]
    if theta is not None:
        pos = torch.where(pos <= theta, pos, torch.full_like(pos, theta))
        s = s.index_put((rows, cols), pos)
    logits = t * s
    loss = torch.logsumexp(logits, dim=1).sum() - (t * pos).sum()
    if sym:
        loss = loss + torch.logsumexp(logits, dim=0).sum() - (t * pos).sum()
    return loss


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def poison(device: Any) -> None:
    """Fill free cached memory with NaN so that outputs never start from zeros or old values.

    (CUDA only: the caching allocator hands the freed NaN block out next; a no-op on CPU.)
    """
    import torch

    if device.type != "cuda":
        return
    free, _ = torch.cuda.mem_get_info(device)
    n = int(min(free * 0.5, 16 * 2**30)) // 4
    buf = torch.empty(n, dtype=torch.float32, device=device)
    buf.fill_(float("nan"))
    del buf  # the caching allocator hands this (NaN-filled) memory out next


def _pairs(
    b: int, n: int, d: int, offset: int, dtype: Any, gen: Any, device: Any
) -> tuple[Any, Any]:
    import torch
    import torch.nn.functional as F

    k = F.normalize(torch.randn(n, d, generator=gen, device=device, dtype=torch.float64), dim=1)
    q = k[offset : offset + b] + 0.7 * torch.randn(
        b, d, generator=gen, device=device, dtype=torch.float64
    )
    return F.normalize(q, dim=1).to(dtype), k.to(dtype)


def _run_check(
    tb: Any,
    q: Any,
    k: Any,
    t: Any,
    theta: float | None,
    offset: int | None,
    opts: dict[str, Any],
    autocast: bool,
    device: Any,
) -> tuple[Any, ...]:
    """One poisoned fwd+bwd of the triton backend (``offset=None``: symmetric); outputs cloned."""
    import torch

    q.grad = k.grad = t.grad = None
    poison(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        if offset is None:
            loss = tb.symmetric_loss_sum(q, k, t, theta, **opts)
        else:
            loss = tb.rows_loss_sum(q, k, t, theta, offset, **opts)
    (loss * 0.5).backward()
    sync(device)
    return loss.detach().clone(), q.grad.clone(), k.grad.clone(), t.grad.clone()


def correctness(
    args: argparse.Namespace, device: Any, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    import torch

    from relaxclip.backends import triton as tb

    checks: list[dict[str, Any]] = [
        {"sym": True, "b": 4097, "d": 512, "dtype": "bfloat16", "theta": "median"},
        {"sym": True, "b": 3001, "d": 777, "dtype": "bfloat16", "theta": None},
        {"sym": False, "b": 1500, "n": 4097, "offset": 1234, "d": 768, "dtype": "bfloat16", "theta": "median"},
        {"sym": True, "b": 2048, "d": 1024, "dtype": "float16", "theta": "median"},
        {"sym": True, "b": 2049, "d": 512, "dtype": "float32", "theta": "median"},
        {"sym": True, "b": 2049, "d": 512, "dtype": "float32", "theta": None, "tf32": True},
        {"sym": False, "b": 999, "n": 2500, "offset": 1501, "d": 1000, "dtype": "float32", "theta": "median", "tf32": True},
        {"sym": True, "b": 1999, "d": 512, "dtype": "bfloat16", "theta": "median", "strided": True},
        {"sym": True, "b": 2500, "d": 768, "dtype": "float32", "theta": "median", "autocast": True},
        {"sym": True, "b": 4096, "d": 512, "dtype": "bfloat16", "theta": "median", "split": 3, "repeat": True},
    ]  # fmt: skip
    gen = torch.Generator(device=device).manual_seed(args.seed + 1)
    results = []
    for spec in checks:
        if device.type == "cpu":  # interpreter smoke run: same structure, tiny sizes
            spec = {**spec, "b": min(spec["b"], 33), "d": min(spec["d"], 24)}
            if not spec["sym"]:
                spec["n"] = spec["b"] + 11
                spec["offset"] = min(spec["offset"], 11)
        dtype = getattr(torch, spec["dtype"])
        b, d, sym = spec["b"], spec["d"], spec["sym"]
        n = b if sym else spec["n"]
        offset = 0 if sym else spec["offset"]
        q, k = _pairs(b, n, d, offset, dtype, gen, device)  # fresh inputs for every check
        if spec["theta"] == "median":
            s_pos = (q.double() * k[offset : offset + b].double()).sum(1)
            theta: float | None = float(s_pos.median()) - 1e-4
        else:
            theta = None
        if spec.get("strided"):
            q = torch.cat([q, torch.randn_like(q)], dim=1)[:, :d]
            k = k.T.contiguous().T
        q.requires_grad_()
        k.requires_grad_()
        t = torch.tensor(args.logit_scale, device=device, requires_grad=True)
        cfg = tb.TritonConfig(split=spec["split"]) if "split" in spec else None
        opts = {"allow_tf32": bool(spec.get("tf32")), "config": cfg}

        off = None if sym else offset
        run = functools.partial(
            _run_check, tb, q, k, t, theta, off, opts, bool(spec.get("autocast")), device
        )

        row: dict[str, Any] = {**spec, "theta_value": theta}
        try:
            out = run()
            rdt = torch.bfloat16 if spec.get("autocast") else dtype
            q64 = q.detach().to(rdt).double().requires_grad_()
            k64 = k.detach().to(rdt).double().requires_grad_()
            t64 = t.detach().double().requires_grad_()
            ref = reference_loss(q64, k64, t64, theta, offset, sym)
            (ref * 0.5).backward()
            refs = (ref.detach(), q64.grad, k64.grad, t64.grad)
            for name, o, r in zip(("loss", "dx", "dy", "dt"), out, refs, strict=True):
                row[name] = float((o.double() - r).norm() / r.norm())
                row[name + "_finite"] = bool(torch.isfinite(o).all())
            tol = TOL["bfloat16" if spec.get("autocast") else spec["dtype"]]
            row["tol"] = tol
            row["pass"] = all(
                row[m] <= tol and row[m + "_finite"] for m in ("loss", "dx", "dy", "dt")
            )
            if spec.get("repeat"):
                again = run()
                row["bitwise_repeat"] = all(
                    torch.equal(a, c) for a, c in zip(out, again, strict=True)
                )
                row["pass"] = row["pass"] and row["bitwise_repeat"]
        except Exception as exc:  # report, keep going
            row["pass"] = False
            row["error"] = repr(exc)[:500]
        results.append(row)
        errs = " ".join(f"{m}={row[m]:.2e}" for m in ("loss", "dx", "dy", "dt") if m in row)
        log(f"  [{'PASS' if row['pass'] else 'FAIL'}] {spec} {errs} {row.get('error', '')}")
    return results


def cuda_time_ms(
    fn: Callable[[], object], warmup: int, repeats: int, device: Any = None
) -> list[float]:
    """Per-run times in ms: CUDA events on a GPU, wall clock on CPU (smoke runs only)."""
    import torch

    for _ in range(warmup):
        fn()
    times = []
    if device is not None and device.type == "cpu":
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return times
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def matmul_tflops(device: Any) -> dict[str, float]:
    import torch

    n = 8192 if device.type == "cuda" else 256
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    times = cuda_time_ms(lambda: torch.mm(a, b), warmup=5, repeats=30, device=device)
    ms = statistics.median(times)
    return {"n": n, "median_ms": ms, "tflops": 2 * n**3 / (ms * 1e-3) / 1e12}


def competitors(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    """Importable third-party losses (module objects or callables), with a note for missing ones."""
    found: dict[str, Any] = {}
    if args.memeff_path is not None:
        sys.path.insert(0, str(args.memeff_path))
    try:
        from open_clip.loss import ClipLoss

        found["open_clip ClipLoss"] = ClipLoss()
    except Exception as exc:
        log(f"note: open_clip ClipLoss skipped (not importable: {exc!r})")
    try:
        from inf_cl import cal_inf_loss

        found["Inf-CL"] = cal_inf_loss
    except Exception as exc:
        log(f"note: Inf-CL skipped (inf_cl not importable: {exc!r})")
    for mod in ("memeff", "memory_efficient_clip_loss", "clip_loss", "loss"):
        try:
            cls = importlib.import_module(mod).MemoryEfficientCLIPLoss
        except Exception:
            continue
        found["memeff"] = cls
        break
    else:
        log("note: memeff skipped (MemoryEfficientCLIPLoss not importable; see --memeff-path)")
    return found


def make_methods(
    args: argparse.Namespace, cfgs: dict[int, Any], comp: dict[str, Any]
) -> dict[str, Any]:
    """name -> factory(x, y, t) returning the mean symmetric loss (x, y normalised bf16)."""
    import torch
    import torch.nn.functional as F

    from relaxclip.backends import chunked, dense
    from relaxclip.backends import triton as tb

    theta = args.threshold

    def mean(total: Any, x: Any) -> Any:
        return total / (2 * x.shape[0])

    methods: dict[str, Any] = {
        "relaxclip triton": lambda x, y, t: mean(
            tb.symmetric_loss_sum(x, y, t, theta, config=cfgs.get(x.shape[1])), x
        ),
        "relaxclip triton plain": lambda x, y, t: mean(
            tb.symmetric_loss_sum(x, y, t.detach(), None, config=cfgs.get(x.shape[1])), x
        ),
        "relaxclip chunked": lambda x, y, t: mean(chunked.symmetric_loss_sum(x, y, t, theta), x),
        "relaxclip dense": lambda x, y, t: mean(dense.symmetric_loss_sum(x, y, t, theta), x),
    }

    def torch_plain(x: Any, y: Any, t: Any) -> Any:
        logits = t * (x @ y.T)
        labels = torch.arange(x.shape[0], device=x.device)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2

    methods["plain torch, 1 matmul"] = torch_plain
    if "open_clip ClipLoss" in comp:
        methods["open_clip ClipLoss"] = lambda x, y, t: comp["open_clip ClipLoss"](x, y, t)
    if "Inf-CL" in comp:
        inf = comp["Inf-CL"]
        methods["Inf-CL"] = lambda x, y, t: (inf(x, y, scale=t) + inf(y, x, scale=t)) / 2
    if "memeff" in comp:
        memeff = comp["memeff"](temperature=1.0 / args.logit_scale, normalized_inputs=True)
        methods["memeff"] = lambda x, y, t: memeff(x, y)  # fixed temperature: t is not used
    return methods


def dense_bytes(batch: int) -> int:
    """About what the dense backend holds: the fp32 B x B logits plus the B x B weights."""
    return 2 * 4 * batch * batch


def tune(
    args: argparse.Namespace, device: Any, dims: Sequence[int], log: Callable[[str], None]
) -> tuple[dict[int, Any], list[dict[str, Any]]]:
    """Time a few tile configs of the triton kernel at one size per D; keep the fastest."""
    import torch

    from relaxclip.backends import triton as tb

    batch = max([b for b in args.batches if b <= 32768] or [min(args.batches)])
    out: dict[int, Any] = {}
    rows: list[dict[str, Any]] = []
    for dim in dims:
        cands = {  # all compile for sm_90a; bwd_do512 spills registers (trades that for 1 recompute)
            "default": tb.DEFAULT_CONFIG,
            "fwd_s3": tb.TritonConfig(num_stages=3),
            "fwd128x64": tb.TritonConfig(block_n=64),
            "fwd_bd32_s3": tb.TritonConfig(block_d=32, num_stages=3),
            "bwd_s3": tb.TritonConfig(bwd_num_stages=3),
            "bwd64x128": tb.TritonConfig(bwd_block_n=128),
            "bwd_do128": tb.TritonConfig(block_do=128),
            "bwd_do512": tb.TritonConfig(block_do=512, bwd_num_stages=1),
        }
        gen = torch.Generator(device=device).manual_seed(args.seed + 7)
        x, y = _pairs(batch, batch, dim, 0, torch.bfloat16, gen, device)
        x.requires_grad_()
        y.requires_grad_()
        t = torch.tensor(args.logit_scale, device=device, requires_grad=True)
        best = (math.inf, "default")
        for name, cfg in cands.items():

            def step(cfg: Any = cfg, x: Any = x, y: Any = y, t: Any = t) -> None:
                x.grad = y.grad = t.grad = None
                tb.symmetric_loss_sum(x, y, t, args.threshold, config=cfg).backward()

            try:
                ms = statistics.median(cuda_time_ms(step, warmup=2, repeats=8, device=device))
            except Exception as exc:
                rows.append({"D": dim, "B": batch, "config": name, "error": repr(exc)[:300]})
                log(f"  tune D={dim} {name}: failed ({exc!r:.120})")
                continue
            rows.append({"D": dim, "B": batch, "config": name, "median_ms": ms, "cfg": repr(cfg)})
            log(f"  tune D={dim} B={batch} {name}: {ms:.2f} ms")
            best = min(best, (ms, name))
        out[dim] = cands[best[1]]
        log(f"  tune D={dim}: using {best[1]}")
    return out, rows


def measure(
    fn: Callable[[Any, Any, Any], Any],
    batch: int,
    dim: int,
    args: argparse.Namespace,
    device: Any,
    deadline: float,
) -> dict[str, Any]:
    import torch

    gen = torch.Generator(device=device).manual_seed(args.seed + batch + dim)
    x, y = _pairs(batch, batch, dim, 0, torch.bfloat16, gen, device)
    x.requires_grad_()
    y.requires_grad_()
    t = torch.tensor(args.logit_scale, device=device, requires_grad=True)

    def step() -> None:
        x.grad = y.grad = t.grad = None
        fn(x, y, t).backward()

    row: dict[str, Any] = {"grad_bytes": 2 * x.numel() * x.element_size()}
    cuda = device.type == "cuda"
    try:
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
        sync(device)
        t0 = time.perf_counter()
        step()  # compile / first call
        sync(device)
        first = time.perf_counter() - t0
        x.grad = y.grad = t.grad = None
        gc.collect()
        sync(device)
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        t0 = time.perf_counter()
        step()
        sync(device)
        one = time.perf_counter() - t0
        if cuda:
            row["extra_bytes"] = torch.cuda.max_memory_allocated(device) - base
        need = one * (args.warmup + args.repeats) * 1.1
        if time.perf_counter() + need > deadline:
            row["note"] = (
                f"skipped timing: time box (one call {one * 1e3:.0f} ms, first {first:.1f} s)"
            )
            return row
        times = cuda_time_ms(step, args.warmup, args.repeats, device)
        row["times_ms"] = times
        row["median_ms"] = statistics.median(times)
    except torch.cuda.OutOfMemoryError:
        row["note"] = "out of memory"
        row.pop("extra_bytes", None)
    except Exception as exc:
        row["note"] = f"error: {exc!r:.200}"
    finally:
        x.grad = y.grad = t.grad = None
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    return row


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "loss_gpu.py needs a CUDA GPU (torch.cuda.is_available() is False); nothing was "
            "measured. Run it on a GPU machine: python benchmarks/loss_gpu.py --out results.json",
            file=sys.stderr,
        )
        return 2
    if args.device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        print("--device cpu is a smoke run under the Triton interpreter: set TRITON_INTERPRET=1")
        return 2
    _import_relaxclip()
    try:
        import triton
    except ImportError:
        print("loss_gpu.py needs triton (pip install 'relaxclip[triton]')", file=sys.stderr)
        return 2
    import relaxclip

    start = time.perf_counter()
    deadline = start + args.budget_s
    device = torch.device(args.device)
    lines: list[str] = []

    def log(msg: str) -> None:
        print(msg, flush=True)
        lines.append(msg)

    meta = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU smoke run",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": triton.__version__,
        "relaxclip": getattr(relaxclip, "__version__", "?"),
        "python": platform.python_version(),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    log(f"{meta['gpu']} | torch {meta['torch']} | CUDA {meta['cuda']} | triton {meta['triton']}")
    results: dict[str, Any] = {"meta": meta, "notes": lines}

    if not args.skip_correctness:
        log("correctness (float64 reference, fresh inputs, poisoned outputs):")
        results["correctness"] = correctness(args, device, log)
        results["correctness_pass"] = all(r["pass"] for r in results["correctness"])
    mm = matmul_tflops(device)
    results["matmul"] = mm
    log(f"bf16 matmul {mm['n']}^3: {mm['median_ms']:.3f} ms = {mm['tflops']:.0f} TFLOP/s")
    log(f"[{time.perf_counter() - start:.0f} s elapsed]")

    cfgs: dict[int, Any] = {}
    left = deadline - time.perf_counter()
    if args.tune and device.type == "cuda" and left < 0.6 * args.budget_s:
        log(f"note: tile-config sweep skipped to stay in the time box ({left:.0f} s left)")
    elif args.tune and device.type == "cuda":
        log("triton tile-config sweep:")
        cfgs, results["tuning"] = tune(args, device, args.dims, log)
        results["tuned_configs"] = {str(d): repr(c) for d, c in cfgs.items()}

    comp = competitors(args, log)
    methods = make_methods(args, cfgs, comp)
    free_total = torch.cuda.mem_get_info(device)[1] if device.type == "cuda" else 2**62
    rows: list[dict[str, Any]] = []
    for batch, dim in order_grid(args.batches, args.dims):
        roof = roofline_ms(batch, dim, mm["tflops"])
        for name, fn in methods.items():
            row: dict[str, Any] = {"B": batch, "D": dim, "method": name, "roofline_ms": roof}
            if name == "relaxclip dense" and dense_bytes(batch) > 0.7 * free_total:
                row["note"] = f"skipped: needs ~{dense_bytes(batch) / 2**30:.0f} GiB"
            elif time.perf_counter() > deadline:
                row["note"] = "skipped: time box"
            else:
                row.update(measure(fn, batch, dim, args, device, deadline))
            if row.get("median_ms"):
                row["frac_roofline"] = roof / row["median_ms"]
            rows.append(row)
            shown = f"{row['median_ms']:.2f} ms" if "median_ms" in row else row.get("note", "")
            log(f"  B={batch} D={dim} {name}: {shown}")
    results["timings"] = rows
    results["elapsed_s"] = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print()
    print(
        f"fwd+bwd, bf16, median of {args.repeats}; roofline = 4 GEMMs at the measured "
        f"{mm['tflops']:.0f} TFLOP/s; extra memory includes dX and dY (grad_bytes in the JSON)"
    )
    if "correctness_pass" in results:
        print(f"correctness: {'PASS' if results['correctness_pass'] else 'FAIL (see above)'}")
    print(format_table(rows))
    print(f"\nfull results: {args.out} ({results['elapsed_s']:.0f} s)")
    return 0 if results.get("correctness_pass", True) else 1


if __name__ == "__main__":
    raise SystemExit(main())
