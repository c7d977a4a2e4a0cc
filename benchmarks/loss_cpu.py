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

Groups (``groups=``): at B = 2048, D = 512 the dense and chunked backends with group ids that give
about 12 % of the samples a same-id partner (the duplicate-sentence rate measured on Open-I, see
issue 14) against the same backend without groups, as ratios. ``--baseline DIR`` also times the
dense/chunked backends of another checkout (e.g. the main branch, before ``groups=`` existed) in
the same rounds, to show that ``groups=None`` costs what it cost before.

Peer: torch's own chunked cross entropy, ``torch.nn.functional.linear_cross_entropy`` with
``torch.nn.LinearCrossEntropyOptions()`` (one call per direction: the plain CLIP loss), beside
relaxclip's chunked backend (threshold=None, the same loss) at B = 16384, D = 256: time (median of
``--peer-repeats`` interleaved rounds) and peak extra memory (fresh subprocess each).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

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


def collision_ids(b: int, fraction: float, seed: int = 0) -> torch.Tensor:
    """int64 ids (b,) in which about ``fraction`` of the samples share their id with exactly one
    other sample (pairs), the rest distinct: a random batch with duplicate sentences."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randperm(b, generator=g) * 7919  # distinct, unordered
    pairs = int(round(fraction * b / 2))
    perm = torch.randperm(b, generator=g)
    ids[perm[:pairs]] = ids[perm[pairs : 2 * pairs]]
    return ids


def duplicate_fraction(ids: torch.Tensor) -> float:
    """Fraction of samples whose id occurs more than once."""
    _, inverse, counts = torch.unique(ids, return_inverse=True, return_counts=True)
    return float((counts[inverse] > 1).double().mean())


def load_baseline(root: str) -> dict[str, ModuleType]:
    """The dense and chunked backend modules of another checkout (loaded from its files; they
    import this checkout's ``relaxclip.backends._common``, so the baseline must use the same
    helpers: a checkout from the shared ``ColumnLSE`` / ``CallArgs.run`` version on)."""
    mods = {}
    for name in ("dense", "chunked"):
        path = Path(root) / "relaxclip" / "backends" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"_baseline_{name}", path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        mods[name] = mod
    return mods


def backend_sum(
    module: ModuleType, groups: torch.Tensor | None = None
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """fwd of the loss mean through one backend module (normalised features, theta = 0.8)."""

    def fn(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        xn, yn = F.normalize(x, dim=1), F.normalize(y, dim=1)
        kwargs = {} if groups is None else {"groups": groups[None]}
        total = module.symmetric_loss_sum(xn, yn, t, 0.8, **kwargs)
        return total / (2 * x.shape[0])  # type: ignore[no-any-return]

    return fn


def torch_linear_ce(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Plain CLIP loss with torch's chunked ``linear_cross_entropy``, one call per direction."""
    options = torch.nn.LinearCrossEntropyOptions()
    xn, yn = F.normalize(x, dim=1), F.normalize(y, dim=1)
    labels = torch.arange(x.shape[0])
    image_to_text = F.linear_cross_entropy(t * xn, yn, labels, options=options)
    text_to_image = F.linear_cross_entropy(t * yn, xn, labels, options=options)
    return (image_to_text + text_to_image) / 2


def relaxclip_chunked_clip(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The same plain CLIP loss through relaxclip's chunked backend (no relaxation)."""
    return relaxed_contrastive_loss(x, y, t, threshold=None, backend="chunked")


PEERS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "relaxclip chunked (theta=None)": relaxclip_chunked_clip,
    "torch linear_cross_entropy (chunked options) x2": torch_linear_ce,
}


def rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(backend: str, b: int, d: int) -> None:
    """Runs in a subprocess: print the peak extra RSS (MiB) of one fwd+bwd (``backend``: a
    relaxclip backend name or a key of ``PEERS``)."""
    if backend in PEERS:
        loss_fn = PEERS[backend]
    else:

        def loss_fn(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return relaxed_contrastive_loss(x, y, t, backend=backend)

    step = fwd_bwd(loss_fn, 64, d)
    step()  # load kernels, allocator warm-up on a small problem
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, d, generator=g).requires_grad_()
    y = torch.randn(b, d, generator=g).requires_grad_()
    t = torch.tensor(14.3, requires_grad=True)
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset VmHWM to the current RSS
    before = rss_kib("VmRSS")
    loss_fn(x, y, t).backward()
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


def time_groups(
    b: int, d: int, fraction: float, repeats: int, baseline: str | None
) -> dict[str, float]:
    """Dense and chunked with and without groups (and a baseline checkout's), interleaved."""
    from relaxclip.backends import chunked, dense

    ids = collision_ids(b, fraction)
    fns: dict[str, Callable[[], None]] = {}
    for name, module in (("dense", dense), ("chunked", chunked)):
        fns[f"{name}_none"] = fwd_bwd(backend_sum(module), b, d)
        fns[f"{name}_groups"] = fwd_bwd(backend_sum(module, ids), b, d)
    if baseline:
        for name, module in load_baseline(baseline).items():
            fns[f"{name}_today"] = fwd_bwd(backend_sum(module), b, d)
    medians = interleaved_medians(fns, repeats)
    _, counts = torch.unique(ids, return_counts=True)
    out: dict[str, float] = {f"{k}_ms": 1e3 * v for k, v in medians.items()}
    out |= {"B": b, "D": d, "duplicate_fraction": duplicate_fraction(ids)}
    out["excluded_pairs"] = int((counts * (counts - 1)).sum())
    return out


def time_peers(b: int, d: int, repeats: int) -> dict[str, dict[str, float]]:
    """relaxclip chunked vs torch's linear_cross_entropy: median time and peak extra memory."""
    medians = interleaved_medians({k: fwd_bwd(fn, b, d) for k, fn in PEERS.items()}, repeats)
    return {
        name: {"ms": 1e3 * medians[name], "extra_mib": measure_memory(name, b, d)} for name in PEERS
    }


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
    parser.add_argument("--groups-batch", type=int, default=2048)
    parser.add_argument(
        "--groups-fraction", type=float, default=0.12, help="samples sharing an id with another"
    )
    parser.add_argument("--baseline", help="another checkout whose dense/chunked are timed too")
    parser.add_argument("--peer-batch", type=int, default=16384)
    parser.add_argument("--peer-dim", type=int, default=256)
    parser.add_argument("--peer-repeats", type=int, default=3)
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
    group_rows = time_groups(
        512 if args.quick else args.groups_batch, args.dim, args.groups_fraction, args.repeats,
        args.baseline,
    )  # fmt: skip
    peer_b = 2048 if args.quick else args.peer_batch
    peers = time_peers(peer_b, args.peer_dim, args.peer_repeats)

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
    g = group_rows
    print(
        f"\nGroups at B = {g['B']}, D = {g['D']}: {100 * g['duplicate_fraction']:.1f} % of the samples "
        f"share their id ({g['excluded_pairs']} excluded pairs); median of {args.repeats} rounds\n"
    )
    base = " | today ms | none / today" if args.baseline else ""
    print(f"| backend | groups=None ms | groups ms | groups / none{base} |")
    print("|---|---|---|---|" + ("---|---|" if args.baseline else ""))
    for name in ("dense", "chunked"):
        none_ms, grp_ms = g[f"{name}_none_ms"], g[f"{name}_groups_ms"]
        extra = ""
        if args.baseline:
            today = g[f"{name}_today_ms"]
            extra = f" | {today:.1f} | {none_ms / today:.3f}x"
        print(f"| {name} | {none_ms:.1f} | {grp_ms:.1f} | {grp_ms / none_ms:.3f}x{extra} |")
    print(
        f"\nPeer at B = {peer_b}, D = {args.peer_dim} (plain CLIP loss, fwd+bwd; median of "
        f"{args.peer_repeats} interleaved rounds; peak extra RSS in a fresh subprocess)\n"
    )
    print("| method | ms | peak extra MiB |")
    print("|---|---|---|")
    for name, row in peers.items():
        print(f"| {name} | {row['ms']:.0f} | {row['extra_mib']:.0f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {
                    "reference": ref_name,
                    "rows": rows,
                    "memory": {"B": mem_b, "D": args.memory_dim, **mem},
                    "groups": group_rows,
                    "peers": {"B": peer_b, "D": args.peer_dim, **peers},
                    "torch": torch.__version__,
                    "threads": torch.get_num_threads(),
                    "cpu_count": os.cpu_count(),
                },
                fh,
                indent=2,
            )


if __name__ == "__main__":
    main()
