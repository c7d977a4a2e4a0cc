"""Run the demo's seeds in worker processes.

Each seed's pre-training and fine-tuning arms depend only on that seed: every stage seeds its
own generators (model initialisation, batch order, sentence draws, dropout) and nothing random
is shared between seeds.  So ``workers`` processes, each with the same number of torch threads,
give the same numbers as one process, bit for bit (``tests/test_demo_workers.py``), sooner: on
the 2-core reference machine ``relaxclip demo`` runs two one-thread workers.

The processes are started with the ``spawn`` method (safe with CUDA and with threads in the
parent, and the same on every OS).  A worker's printed lines are relayed to the parent's
``log`` as they happen; a worker's exception is re-raised in the parent with the worker's
traceback attached as a note; a worker that dies without a result (killed, out of memory) is a
``RuntimeError`` naming its jobs and exit code.  On any failure or Ctrl-C the other workers
are terminated.
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from multiprocessing.reduction import ForkingPickler
from typing import Any, TypeVar, cast

import torch

__all__ = ["run_in_workers"]

J = TypeVar("J")
R = TypeVar("R")


def _worker(
    task: Callable[[J, Callable[[str], None]], R],
    jobs: Sequence[tuple[int, J]],
    threads: int,
    conn: Connection,
) -> None:
    """Worker process: run ``task`` on each job, sending ``("log", line)``, ``("result", i, r)``
    or ``("error", i, exception, traceback_text)`` messages through ``conn`` (each sent
    synchronously, so nothing sent is lost if the process is killed afterwards)."""
    torch.set_num_threads(threads)

    def log(line: str) -> None:
        conn.send_bytes(_pickled(("log", line)))

    for index, job in jobs:
        try:
            message = _pickled(("result", index, task(job, log)))
        except BaseException as exc:  # noqa: BLE001 - every failure is reported to the parent
            text = traceback.format_exc()
            try:
                message = _pickled(("error", index, exc, text))
            except Exception:  # the exception itself does not pickle: send its text
                message = _pickled(("error", index, RuntimeError(repr(exc)), text))
            conn.send_bytes(message)
            return
        conn.send_bytes(message)


def _pickled(message: tuple[Any, ...]) -> bytes:
    """``message`` pickled in the worker's own code, so that a failure to pickle is an
    exception there, reported like any other."""
    return bytes(ForkingPickler.dumps(message))


def run_in_workers(
    task: Callable[[J, Callable[[str], None]], R],
    jobs: Sequence[J],
    workers: int,
    threads: int,
    log: Callable[[str], None],
) -> list[R]:
    """``[task(job, log) for job in jobs]``, computed by ``workers`` spawned processes.

    Args:
        task: a picklable callable (a module-level function or a ``functools.partial`` of one)
            taking one job and a ``log(line)`` callable; its result must pickle.
        jobs: the jobs, dealt round-robin: worker ``w`` runs jobs ``w, w + workers, ...`` in
            order.
        workers: processes to start, at least 1 (at most ``len(jobs)`` are started).
        threads: ``torch.set_num_threads`` in every worker.
        log: receives every line the workers log, in the order the parent receives them.

    Returns:
        The results in the order of ``jobs``.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    ctx = mp.get_context("spawn")
    numbered = list(enumerate(jobs))
    n = min(workers, len(numbered))
    shares = [numbered[w::n] for w in range(n)]
    procs: list[Any] = []
    readers: dict[Connection, tuple[Any, list[tuple[int, J]]]] = {}
    results: dict[int, R] = {}
    try:
        for share in shares:
            reader, writer = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_worker, args=(task, share, threads, writer), daemon=True)
            p.start()
            writer.close()  # the worker holds the only writer: its exit is EOF here
            readers[reader] = (p, share)
            procs.append(p)
        while readers:
            for ready in wait(list(readers)):
                reader = cast(Connection, ready)
                try:
                    message = pickle.loads(reader.recv_bytes())
                except EOFError:  # the worker exited and everything it sent has been read
                    p, share = readers.pop(reader)
                    reader.close()
                    _check_complete(p, share, results)
                    continue
                if message[0] == "log":
                    log(message[1])
                elif message[0] == "result":
                    results[message[1]] = message[2]
                else:
                    _, index, exc, text = message
                    exc.add_note(f"raised in the worker process running job {index}:\n{text}")
                    raise exc
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join()
        for reader in readers:
            reader.close()
    return [results[i] for i in range(len(numbered))]


def _check_complete(
    process: Any, share: Sequence[tuple[int, Any]], results: dict[int, Any]
) -> None:
    """``RuntimeError`` when a worker that has exited left some of its jobs without a result."""
    missing = [i for i, _ in share if i not in results]
    if missing:
        process.join()
        raise RuntimeError(
            f"a demo worker process exited with code {process.exitcode} before finishing jobs "
            f"{missing} (killed, or out of memory?)"
        )
