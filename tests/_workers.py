"""Running test code in other processes: gloo jobs of several ranks (``torch.distributed`` on
CPU) and scripts under the Triton interpreter. Shared by the distributed and Triton tests."""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def gloo_rank(
    rank: int, world: int, out_dir: str | Path, timeout_s: float = 90.0
) -> Iterator[None]:
    """Be ``rank`` of a ``world``-rank gloo job (one torch thread) for the ``with`` block. A file
    store in ``out_dir``: no TCP port to pick, so no race for a free port. ``timeout_s`` bounds
    every collective, so a hang fails the job instead of blocking the test run. On exit, cyclic
    garbage (autograd graphs through a gather) is collected before the group is destroyed: the
    gloo abort-at-exit of docs/distributed.md ("Known issue") otherwise hits some runs."""
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=(Path(out_dir) / "store").as_uri(),
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=timeout_s),
    )
    try:
        yield
    finally:
        gc.collect()
        dist.destroy_process_group()


def run_ranks(
    worker: Callable[..., None], world: int, args: tuple[Any, ...], timeout_s: float, what: str
) -> None:
    """Spawn ``worker(rank, *args)`` in ``world`` processes and wait for all of them; the test
    fails (naming ``what``) when a rank raises or the job is not done within ``timeout_s``.
    Ranks still alive at the end are killed."""
    ctx = mp.start_processes(worker, args=args, nprocs=world, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout_s
    try:
        while not ctx.join(timeout=1.0):
            if time.monotonic() > deadline:
                pytest.fail(f"{what} did not finish within {timeout_s} s")
    except mp.ProcessRaisedException as exc:  # e.g. a rank timed out in a collective
        pytest.fail(f"a rank of {what} failed: {exc}")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()


def run_under_interpreter(script: Path) -> tuple[subprocess.CompletedProcess[str], Any]:
    """Run ``python script`` with ``TRITON_INTERPRET=1`` (Triton kernels on the CPU); returns the
    process and the JSON of its last ``RESULTS {...}`` stdout line (``None`` without one).
    Skips when triton is not installed."""
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed (optional extra relaxclip[triton])")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS ")]
    return proc, json.loads(lines[-1][len("RESULTS ") :]) if lines else None
