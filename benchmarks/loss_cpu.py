"""CPU benchmark of the loss backends: fwd+bwd time and peak extra memory, all in one process run.

    python benchmarks/loss_cpu.py                 # full table (a few minutes on 2 cores)
    python benchmarks/loss_cpu.py --quick         # small sizes, for a smoke run

Rows, all timed in the same process: after a warm-up, --repeats interleaved rounds in which every
variant runs once (rotating order), and the median per variant:
  (a) open_clip's single-process algorithm: two logit matmuls, two cross-entropies, autograd backward
      (``open_clip.loss.ClipLoss`` itself when open_clip is importable, else the same algorithm inline);
  (b) relaxclip dense backend; (c) relaxclip chunked backend;
  floor: the three irreducible B x B x D matmuls (S = X Y^T, G Y, G^T X) on the same tensors.
Memory: peak extra resident memory (VmHWM after reset, minus resident memory before the call) of
one fwd+bwd in a fresh subprocess per backend.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from relaxclip.loss import relaxed_contrastive_loss


def openclip_algorithm() -> tuple[
    str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
]:
    try:
        from open_clip.loss import ClipLoss  # type: ignore[import-not-found]

        clip = ClipLoss()

        def via_open_clip(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return clip(F.normalize(x, dim=-1), F.normalize(y, dim=-1), t)  # type: ignore[no-any-return]

        return "open_clip ClipLoss", via_open_clip
    except ImportError:

        def inline(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
            labels = torch.arange(x.shape[0])
            per_image = t * x @ y.T
            per_text = t * y @ x.T
            return (F.cross_entropy(per_image, labels) + F.cross_entropy(per_text, labels)) / 2

        return "open_clip algorithm (inline)", inline


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per function, timed in interleaved rounds (each round runs every function
    once, in rotating order) so that drift of the machine's speed affects all rows alike."""
    for fn in fns.values():
        fn()  # warm-up
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def fwd_bwd(
    loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], b: int, d: int
) -> Callable[[], None]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, d, generator=g).requires_grad_()
    y = torch.randn(b, d, generator=g).requires_grad_()
    t = torch.tensor(14.3, requires_grad=True)

    def step() -> None:
        x.grad = y.grad = t.grad = None
        loss_fn(x, y, t).backward()

    return step


def matmul_floor(b: int, d: int) -> Callable[[], None]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, d, generator=g)
    y = torch.randn(b, d, generator=g)
    gmat = torch.randn(b, b, generator=g)

    def step() -> None:
        torch.mm(x, y.T)
        torch.mm(gmat, y)
        torch.mm(gmat.T, x)

    return step


def rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(backend: str, b: int, d: int) -> None:
    """Runs in a subprocess: print the peak extra RSS (MiB) of one fwd+bwd."""
    step = fwd_bwd(lambda x, y, t: relaxed_contrastive_loss(x, y, t, backend=backend), 64, d)
    step()  # load kernels, allocator warm-up on a small problem
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, d, generator=g).requires_grad_()
    y = torch.randn(b, d, generator=g).requires_grad_()
    t = torch.tensor(14.3, requires_grad=True)
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset VmHWM to the current RSS
    before = rss_kib("VmRSS")
    relaxed_contrastive_loss(x, y, t, backend=backend).backward()
    peak = rss_kib("VmHWM")
    print(json.dumps({"backend": backend, "extra_mib": (peak - before) / 1024}))


def measure_memory(backend: str, b: int, d: int) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", backend, str(b), str(d)],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["extra_mib"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds (median)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--memory-batch", type=int, default=16384)
    parser.add_argument("--memory-dim", type=int, default=256)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument(
        "--memory-child", nargs=3, metavar=("BACKEND", "B", "D"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.memory_child:
        name, b, d = args.memory_child
        memory_child(name, int(b), int(d))
        return

    batches = [256, 512] if args.quick else [1024, 2048, 4096]
    mem_b = 2048 if args.quick else args.memory_batch
    ref_name, ref_fn = openclip_algorithm()
    print(
        f"# relaxclip loss, CPU, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, median of {args.repeats} interleaved rounds"
    )
    rows = []
    for b in batches:
        d = args.dim
        t = interleaved_medians(
            {
                "ref": fwd_bwd(ref_fn, b, d),
                "dense": fwd_bwd(
                    lambda x, y, t: relaxed_contrastive_loss(x, y, t, backend="dense"), b, d
                ),
                "chunked": fwd_bwd(
                    lambda x, y, t: relaxed_contrastive_loss(x, y, t, backend="chunked"), b, d
                ),
                "floor": matmul_floor(b, d),
            },
            args.repeats,
        )
        t_ref, t_dense, t_chunk, t_floor = t["ref"], t["dense"], t["chunked"], t["floor"]
        rows.append(
            {
                "B": b,
                "D": d,
                "ref_ms": 1e3 * t_ref,
                "dense_ms": 1e3 * t_dense,
                "chunked_ms": 1e3 * t_chunk,
                "floor_ms": 1e3 * t_floor,
                "speedup_dense_vs_ref": t_ref / t_dense,
                "dense_over_floor": t_dense / t_floor,
                "chunked_over_floor": t_chunk / t_floor,
            }
        )
    mem = {name: measure_memory(name, mem_b, args.memory_dim) for name in ("dense", "chunked")}

    print(f"\n(a) = {ref_name}; floor = 3 matmuls (S = X Y^T, G Y, G^T X)\n")
    print(
        "| B | D | (a) ms | dense ms | chunked ms | 3-matmul floor ms | (a) / dense | dense / floor | chunked / floor |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['B']} | {r['D']} | {r['ref_ms']:.1f} | {r['dense_ms']:.1f} | {r['chunked_ms']:.1f} | "
            f"{r['floor_ms']:.1f} | {r['speedup_dense_vs_ref']:.2f}x | {r['dense_over_floor']:.2f}x | "
            f"{r['chunked_over_floor']:.2f}x |"
        )
    print(
        f"\nPeak extra RSS of one fwd+bwd at B = {mem_b}, D = {args.memory_dim}: dense {mem['dense']:.0f} MiB, "
        f"chunked {mem['chunked']:.0f} MiB, chunked / dense = {mem['chunked'] / mem['dense']:.3f}"
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {
                    "reference": ref_name,
                    "rows": rows,
                    "memory": {"B": mem_b, "D": args.memory_dim, **mem},
                    "torch": torch.__version__,
                    "threads": torch.get_num_threads(),
                    "cpu_count": os.cpu_count(),
                },
                fh,
                indent=2,
            )


if __name__ == "__main__":
    main()
