"""Run the demo's seeds in worker processes.

Each seed's pre-training and fine-tuning arms depend only on that seed: every stage seeds its
own generators (model initialisation, batch order, sentence draws, dropout) and nothing random
is shared between seeds.  So ``workers`` processes, each with the same number of torch threads,
give the same numbers as one process, bit for bit (``tests/test_demo_workers.py``), sooner: on
the 2-core reference machine ``relaxclip demo`` runs two one-thread workers.

A worker is a fresh interpreter (``python -c``, see :data:`_BOOT`): it never imports the
caller's ``__main__`` (so, unlike :mod:`multiprocessing`'s ``spawn``, a script that calls
:func:`~relaxclip.demo.runner.run_demo` needs no ``if __name__ == "__main__":`` guard), never
inherits the caller's threads or CUDA state (unlike ``fork``), and works the same on every OS.
It receives the caller's ``sys.path`` and then its jobs pickled on stdin, and sends length-framed
pickled messages on its original stdout; anything it prints goes to stderr.  A worker's logged
lines are relayed to the caller's ``log`` as they arrive; a worker's exception is re-raised in
the caller with the worker's traceback attached as a note; a worker that ends without all its
results (killed, out of memory) is a ``RuntimeError`` naming its jobs and exit code.  On any
failure or Ctrl-C the other workers are killed.
"""

from __future__ import annotations

import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import IO, Any, TypeVar

__all__ = ["run_in_workers"]

J = TypeVar("J")
R = TypeVar("R")

_HEADER = struct.Struct("<Q")  # the byte length of the pickled message that follows

# A worker first takes the caller's sys.path from stdin (a pickled list of str needs no import),
# so it imports relaxclip and the task's module from wherever the caller did.
_BOOT = (
    "import pickle, sys; sys.path[:] = pickle.load(sys.stdin.buffer); "
    "from relaxclip.demo.workers import _worker_main; _worker_main()"
)


def _send(stream: IO[bytes], message: tuple[Any, ...]) -> None:
    """Write one message, pickled here so that a failure to pickle is raised at the caller."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _receive(stream: IO[bytes]) -> tuple[Any, ...] | None:
    """Read one message; ``None`` at the end of the stream (also after a partial message)."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        return None
    message: tuple[Any, ...] = pickle.loads(data)
    return message


def _worker_main() -> None:
    """Body of a worker process (started with :data:`_BOOT`, which has read ``sys.path``)."""
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints must not enter the channel
    try:
        task, jobs, threads = pickle.load(sys.stdin.buffer)
    except BaseException as exc:  # noqa: BLE001 - e.g. a task defined in the caller's __main__
        _send(channel, ("error", None, RuntimeError(f"cannot load the task: {exc!r}"), ""))
        return
    import torch

    torch.set_num_threads(threads)

    def log(line: str) -> None:
        _send(channel, ("log", line))

    for index, job in jobs:
        try:
            result = task(job, log)
            _send(channel, ("result", index, result))
        except BaseException as exc:  # noqa: BLE001 - every failure is reported to the caller
            text = traceback.format_exc()
            try:
                _send(channel, ("error", index, exc, text))
            except Exception:  # the exception itself does not pickle: send its text
                _send(channel, ("error", index, RuntimeError(repr(exc)), text))
            return


def _pump(w: int, proc: subprocess.Popen[bytes], payload: bytes, inbox: queue.Queue[Any]) -> None:
    """Feed worker ``w`` its payload, then move its messages to ``inbox``; ``("end", w)`` last."""
    try:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(payload)
            proc.stdin.close()
        except BrokenPipeError:  # it died before reading its jobs: its exit code tells why
            pass
        while (message := _receive(proc.stdout)) is not None:
            inbox.put((w, message))
    except BaseException as exc:  # noqa: BLE001 - e.g. a message that does not unpickle here
        inbox.put((w, ("error", -1, exc, traceback.format_exc())))
    finally:
        inbox.put((w, ("end",)))


def run_in_workers(
    task: Callable[[J, Callable[[str], None]], R],
    jobs: Sequence[J],
    workers: int,
    threads: int,
    log: Callable[[str], None],
) -> list[R]:
    """``[task(job, log) for job in jobs]``, computed by ``workers`` worker processes.

    Args:
        task: a picklable callable (a module-level function or a ``functools.partial`` of one)
            taking one job and a ``log(line)`` callable; it, the jobs and its results must
            pickle.
        jobs: the jobs, dealt round-robin: worker ``w`` runs jobs ``w, w + workers, ...`` in
            order.
        workers: processes to start, at least 1 (at most ``len(jobs)`` are started).
        threads: ``torch.set_num_threads`` in every worker.
        log: receives every line the workers log, in the order the caller receives them.

    Returns:
        The results in the order of ``jobs``.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    numbered = list(enumerate(jobs))
    n = min(workers, len(numbered))
    shares = [numbered[w::n] for w in range(n)]
    head = pickle.dumps(list(sys.path))
    inbox: queue.Queue[Any] = queue.Queue()
    procs: list[subprocess.Popen[bytes]] = []
    results: dict[int, R] = {}
    try:
        for w, share in enumerate(shares):
            payload = head + pickle.dumps((task, share, threads), protocol=pickle.HIGHEST_PROTOCOL)
            proc = subprocess.Popen(
                [sys.executable, "-c", _BOOT],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            procs.append(proc)
            threading.Thread(target=_pump, args=(w, proc, payload, inbox), daemon=True).start()
        running = len(procs)
        while running:
            w, message = inbox.get()
            if message[0] == "log":
                log(message[1])
            elif message[0] == "result":
                results[message[1]] = message[2]
            elif message[0] == "end":
                running -= 1
                _check_complete(procs[w], shares[w], results)
            else:
                _, index, exc, text = message
                if index is None:  # the worker could not load its jobs
                    raise RuntimeError(
                        f"demo worker {w} {exc}; the task, its jobs and results must pickle, and "
                        "the task be importable (a module-level function, not one defined in "
                        "__main__)"
                    )
                where = f"job {index}" if index >= 0 else f"the messages of worker {w}"
                exc.add_note(f"raised in the worker process running {where}:\n{text}")
                raise exc
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    return [results[i] for i in range(len(numbered))]


def _check_complete(
    proc: subprocess.Popen[bytes], share: Sequence[tuple[int, Any]], results: dict[int, Any]
) -> None:
    """``RuntimeError`` when a worker whose output has ended left jobs without a result."""
    missing = [i for i, _ in share if i not in results]
    if missing:
        code = proc.wait()
        raise RuntimeError(
            f"a demo worker process exited with code {code} before finishing jobs {missing} "
            "(killed, or out of memory? its error output, if any, is above)"
        )
