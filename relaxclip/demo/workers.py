"""Run the demo's seeds in worker processes.

Each seed's pre-training and fine-tuning arms depend only on that seed: every stage seeds its
own generators (model initialisation, batch order, sentence draws, dropout) and nothing random
is shared between seeds.  So ``workers`` processes, each with the same number of torch threads,
give the same numbers as one process, bit for bit (``tests/test_demo_workers.py``), sooner: on
the 2-core reference machine ``relaxclip demo`` runs two one-thread workers.  Global torch
settings changed in the calling process (``torch.set_default_dtype``,
``torch.use_deterministic_algorithms``, backend flags) are not passed on: the workers run with
torch's defaults, as ``relaxclip demo`` does.

A worker is a fresh interpreter (``python -I -c``, see :data:`_BOOT`): it never imports the
caller's ``__main__`` (so, unlike :mod:`multiprocessing`'s ``spawn``, a script that calls
:func:`~relaxclip.demo.runner.run_demo` needs no ``if __name__ == "__main__":`` guard), never
inherits the caller's threads or CUDA state (unlike ``fork``), and does not see files of the
current directory that shadow standard modules (isolated mode, ``-I``: it also ignores the
``PYTHON*`` environment variables and the caller's interpreter flags such as ``-W`` or ``-X``).  It receives the caller's
``sys.path`` and then its jobs, pickled, on stdin, and sends length-framed pickled messages on
its original stdout; what it prints goes to stderr, which the caller relays to its own
``sys.stderr``.  Its stdin stays open: when the caller goes away (even killed), the worker
exits.  A worker's logged lines reach the caller's ``log`` as they arrive; a worker's exception
is re-raised in the caller, chained to the worker's traceback (``raise ... from``); a worker
that ends without all its results is a ``RuntimeError`` naming its jobs, its exit status and
the last lines of its error output.  On any failure or Ctrl-C the other workers are killed.
"""

from __future__ import annotations

import collections
import errno
import os
import pickle
import queue
import reprlib
import signal
import struct
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any, TypeVar

from relaxclip._checks import check_int

__all__ = ["run_in_workers"]

J = TypeVar("J")
R = TypeVar("R")

_HEADER = struct.Struct("<Q")  # the byte length of the pickled message that follows
_POLL_S = 0.5  # the caller wakes this often (Ctrl-C is not delivered inside a blocking get)
_STDERR_TAIL = 20  # lines of a worker's error output quoted when it fails

# Before any import that could print: keep the real stdout as the message channel and point
# fd 1 at stderr. Then take the caller's sys.path from stdin (a pickled list of str needs no
# import beyond pickle), so relaxclip and the task's module import from wherever they did.
_BOOT = (
    "import os, sys; channel = os.dup(1); os.dup2(2, 1); import pickle; "
    "sys.path[:] = pickle.load(sys.stdin.buffer); "
    "from relaxclip.demo.workers import _worker_main; _worker_main(channel)"
)


class WorkerTraceback(Exception):
    """The traceback of an exception raised in a worker process (the ``__cause__`` of the
    exception re-raised in the caller)."""


def _send(stream: IO[bytes], message: tuple[Any, ...]) -> None:
    """Write one message, pickled here so that a failure to pickle is raised at the caller."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _receive(stream: IO[bytes]) -> bytes | None:
    """Read one pickled message; ``None`` at the end of the stream (also after a partial one)."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    return data if len(data) == size else None


def _job(index: int, job: Any) -> str:
    """How errors name a job: ``"jobs[1] = (1, 11)"``."""
    return f"jobs[{index}] = {reprlib.repr(job)}"


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives a pickle round trip (so the caller can rebuild it), else a
    ``RuntimeError`` carrying its ``repr``."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(repr(exc))
    return exc


def _exit_when_orphaned(fd: int) -> None:
    """Daemon thread of a worker: the caller keeps our stdin open; end of file means it has
    gone (finished, failed or killed), and so must we.  It reads the file descriptor, not
    ``sys.stdin.buffer``: a thread blocked inside a buffered reader holds its lock, and the
    interpreter aborts at exit when it cannot take it ("Fatal Python error:
    _enter_buffered_busy").  The caller sends nothing after the payload, which ``pickle.load``
    has consumed exactly."""
    while os.read(fd, 65536):
        pass
    os._exit(3)


def _worker_main(channel_fd: int) -> None:
    """Body of a worker process (started with :data:`_BOOT`, which has read ``sys.path``)."""
    channel = os.fdopen(channel_fd, "wb")
    stdin = sys.stdin.buffer
    try:
        task, jobs, threads = pickle.load(stdin)
    except BaseException as exc:  # noqa: BLE001 - e.g. something defined in the caller's __main__
        _send(channel, ("load-error", repr(exc)))
        return
    threading.Thread(target=_exit_when_orphaned, args=(stdin.fileno(),), daemon=True).start()
    import torch

    torch.set_num_threads(threads)

    def log(line: str) -> None:
        _send(channel, ("log", line))

    for index, job in jobs:
        try:
            result = task(job, log)
            _send(channel, ("result", index, result))
        except BaseException as exc:  # noqa: BLE001 - every failure is reported to the caller
            _send(channel, ("error", _job(index, job), _portable(exc), traceback.format_exc()))
            return


def _pump(w: int, proc: subprocess.Popen[bytes], payload: bytes, inbox: queue.Queue[Any]) -> None:
    """Feed worker ``w`` its payload (stdin stays open), then move its messages to ``inbox``;
    ``("end",)`` last."""
    assert proc.stdin is not None and proc.stdout is not None
    try:
        try:
            proc.stdin.write(payload)
            proc.stdin.flush()
        except OSError as exc:  # it died before reading its jobs: its exit status tells why
            if (
                not isinstance(exc, BrokenPipeError) and exc.errno != errno.EINVAL
            ):  # EINVAL: Windows
                raise
        while (data := _receive(proc.stdout)) is not None:
            try:
                message = pickle.loads(data)
            except Exception as exc:
                message = ("unreadable", repr(exc))
            inbox.put((w, message))
    except BaseException as exc:  # noqa: BLE001 - reported by the caller
        inbox.put((w, ("pipe-error", repr(exc))))
    finally:
        inbox.put((w, ("end",)))


def _relay_stderr(stream: IO[bytes], tail: collections.deque[str]) -> None:
    """Copy a worker's error output to ours, line by line, keeping the last lines in ``tail``.
    It reads to the end whatever happens to our stderr (a worker blocked on a full pipe would
    hang the run)."""
    relay = True
    with stream:
        for raw in stream:
            line = raw.decode(errors="replace")
            tail.append(line.rstrip("\n"))
            if relay:
                try:
                    sys.stderr.write(line)
                    sys.stderr.flush()
                except (OSError, ValueError, AttributeError):  # closed, broken or replaced
                    relay = False


def run_in_workers(
    task: Callable[[J, Callable[[str], None]], R],
    jobs: Sequence[J],
    workers: int,
    threads: int,
    log: Callable[[str], None],
) -> list[R]:
    """``[task(job, log) for job in jobs]``, computed by ``workers`` worker processes.

    Args:
        task: a picklable callable importable in a fresh interpreter (a module-level function,
            or a ``functools.partial`` of one; not one defined in ``__main__``) taking one job
            and a ``log(line)`` callable.  The jobs and the results must pickle too.
        jobs: the jobs, dealt round-robin: worker ``w`` runs jobs ``w, w + workers, ...`` in
            order.
        workers: processes to start, a positive int (at most ``len(jobs)`` are started).
        threads: ``torch.set_num_threads`` in every worker, a positive int.
        log: receives every line the workers log, in the order the caller receives them.

    Returns:
        The results in the order of ``jobs``.

    Raises:
        TypeError / ValueError: ``workers`` or ``threads`` not an int >= 1.
    """
    workers = check_int("workers", workers, minimum=1)
    threads = check_int("threads", threads, minimum=1)
    numbered = list(enumerate(jobs))
    n = min(workers, len(numbered))
    shares = [numbered[w::n] for w in range(n)]
    head = pickle.dumps(list(sys.path))
    payloads = [
        head + pickle.dumps((task, share, threads), protocol=pickle.HIGHEST_PROTOCOL)
        for share in shares
    ]  # pickled before any process starts: a task that does not pickle raises here
    inbox: queue.Queue[Any] = queue.Queue()
    started: list[_Worker] = []
    results: dict[int, R] = {}
    try:
        for w, payload in enumerate(payloads):
            started.append(_Worker.start(w, payload, inbox))
        running = len(started)
        while running:
            try:
                w, message = inbox.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if message[0] == "log":
                log(message[1])
            elif message[0] == "result":
                results[message[1]] = message[2]
            elif message[0] == "end":
                running -= 1
                started[w].check_complete(shares[w], results)
            else:
                _raise_failure(w, message)
    finally:
        for worker in started:
            worker.stop()
    return [results[i] for i in range(len(numbered))]


def _raise_failure(w: int, message: tuple[Any, ...]) -> None:
    """Raise what a worker's failure message reports."""
    kind = message[0]
    if kind == "error":
        _, where, exc, text = message
        raise exc from WorkerTraceback(f"in the worker process, running {where}:\n{text}")
    if kind == "load-error":
        raise RuntimeError(
            f"demo worker {w} cannot load its task and jobs ({message[1]}): they must be "
            "importable in a fresh interpreter (module-level definitions, not ones made in "
            "__main__)"
        )
    if kind == "unreadable":
        raise RuntimeError(
            f"a message of demo worker {w} cannot be read here ({message[1]}): an exception or "
            "result that pickles in the worker but does not unpickle"
        )
    raise RuntimeError(f"the pipes to demo worker {w} failed: {message[1]}")  # "pipe-error"


@dataclass
class _Worker:
    """One worker process, the thread relaying its error output and that output's last lines."""

    proc: subprocess.Popen[bytes]
    relay: threading.Thread
    tail: collections.deque[str]

    @classmethod
    def start(cls, w: int, payload: bytes, inbox: queue.Queue[Any]) -> _Worker:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-u", "-c", _BOOT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        tail: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL)
        threading.Thread(target=_pump, args=(w, proc, payload, inbox), daemon=True).start()
        relay = threading.Thread(target=_relay_stderr, args=(proc.stderr, tail), daemon=True)
        relay.start()
        return cls(proc, relay, tail)

    def check_complete(self, share: Sequence[tuple[int, Any]], results: dict[int, Any]) -> None:
        """``RuntimeError`` when this worker, whose output has ended, left jobs unfinished."""
        missing = [_job(i, job) for i, job in share if i not in results]
        if not missing:
            return
        code = self.proc.wait()
        self.relay.join(timeout=5.0)  # its error output up to its exit
        if code < 0:
            try:
                status = f"was killed by {signal.Signals(-code).name} (out of memory?)"
            except ValueError:
                status = f"was killed by signal {-code}"
        else:
            status = f"exited with code {code}"
        last = "\n".join(self.tail) or "(no error output)"
        raise RuntimeError(
            f"a demo worker {status} before finishing {', '.join(missing)}; its last error "
            f"output:\n{last}"
        )

    def stop(self) -> None:
        """Kill it if it still runs, reap it, let the relay finish, close our pipe ends."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.relay.join(timeout=5.0)  # its last error output, before the caller returns
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:  # a pipe to a process that is gone
                    pass
