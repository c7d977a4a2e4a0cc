"""The demo's seeds in worker processes (relaxclip.demo.workers): same numbers as one process,
errors and dead workers reported, options checked."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from _demo_config import tiny_config

import relaxclip
from relaxclip.demo import config as demo_config
from relaxclip.demo.cli import _demo_config, build_parser, main
from relaxclip.demo.config import DemoConfig, resolve_workers
from relaxclip.demo.runner import run_demo
from relaxclip.demo.workers import WorkerTraceback, run_in_workers


def _stage_lines(lines: list[str]) -> list[str]:
    """The per-stage lines without their wall times, sorted (workers interleave them)."""
    return sorted(
        re.sub(r" \(\d+\.\d s\)$", "", line) for line in lines if re.match(r"\[\d+/\d+\]", line)
    )


def test_workers_give_the_same_numbers_as_one_process() -> None:
    """Three seeds in two worker processes against one process: every recorded number equal
    (bit for bit), and the same per-stage lines, numbered the same way."""
    results, lines = {}, {}
    for workers in (1, 2):
        lines[workers] = []
        results[workers] = run_demo(
            tiny_config(seeds=(0, 1, 2), workers=workers), None, log=lines[workers].append
        )
    one, two = results[1], results[2]
    assert (one["workers"], two["workers"]) == (1, 2)
    assert one["arms"] == two["arms"]
    assert one["pretrain_final_loss"] == two["pretrain_final_loss"]
    assert one["table"] == two["table"] and one["conclusion"] == two["conclusion"]
    assert _stage_lines(lines[1]) == _stage_lines(lines[2])
    assert len(_stage_lines(lines[2])) == 3 * (1 + 5)
    assert any("2 worker processes" in line for line in lines[2])


def _square(job: int, log: Callable[[str], None]) -> int:
    log(f"job {job} in process {os.getpid()}")
    return job * job


def _fail_on_three(job: int, log: Callable[[str], None]) -> int:
    if job == 3:
        raise ValueError(f"job {job}: bad value")
    return job


def _exit_on_two(job: int, log: Callable[[str], None]) -> int:
    if job == 2:
        print(f"about to exit on job {job}", file=sys.stderr, flush=True)
        os._exit(7)
    return job


def _slow_first(job: int, log: Callable[[str], None]) -> int:
    if job == 0:
        time.sleep(3)
    return job


def _return_two_arg(job: int, log: Callable[[str], None]) -> Any:
    return TwoArgError("first", "second")


def _shout(job: int, log: Callable[[str], None]) -> int:
    sys.stderr.write("x" * 999 + "\n" * 1 + ("y" * 1023 + "\n") * 500)  # 500 KB
    return job


def _kill_self(job: int, log: Callable[[str], None]) -> int:
    os.kill(os.getpid(), signal.SIGKILL)
    return job


def _threads(job: int, log: Callable[[str], None]) -> int:
    return torch.get_num_threads()


class TwoArgError(Exception):
    """Pickles, but does not unpickle (its __init__ needs two arguments)."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a} {b}")


def _raise_two_arg(job: int, log: Callable[[str], None]) -> int:
    raise TwoArgError("first", "second")


class _Unpicklable(Exception):
    def __init__(self, handle: Any) -> None:
        super().__init__("cannot travel")
        self.handle = handle


def _raise_unpicklable(job: int, log: Callable[[str], None]) -> int:
    raise _Unpicklable(lambda: None)


def test_results_keep_the_order_of_the_jobs_and_lines_are_relayed() -> None:
    lines: list[str] = []
    assert run_in_workers(_square, [5, 1, 4, 2, 3], 2, 1, lines.append) == [25, 1, 16, 4, 9]
    assert sorted(line.split(" in ")[0] for line in lines) == [f"job {j}" for j in range(1, 6)]
    assert len({line.split()[-1] for line in lines}) == 2  # two processes, not the parent
    assert str(os.getpid()) not in {line.split()[-1] for line in lines}


def test_a_worker_exception_is_raised_in_the_parent_with_its_traceback() -> None:
    with pytest.raises(ValueError, match="job 3: bad value") as info:
        run_in_workers(_fail_on_three, [1, 2, 3, 4], 2, 1, lambda line: None)
    cause = info.value.__cause__
    assert isinstance(cause, WorkerTraceback)  # the worker's traceback, chained (Python 3.10+)
    assert "running jobs[2] = 3" in str(cause) and "_fail_on_three" in str(cause)


def test_an_exception_that_does_not_pickle_still_reaches_the_parent() -> None:
    with pytest.raises(RuntimeError, match="cannot travel"):
        run_in_workers(_raise_unpicklable, [1], 1, 1, lambda line: None)


def test_a_worker_that_dies_is_an_error_naming_its_jobs() -> None:
    with pytest.raises(
        RuntimeError, match=r"exited with code 7 before finishing jobs\[2\] = 2"
    ) as info:
        run_in_workers(_exit_on_two, [0, 1, 2, 3], 2, 1, lambda line: None)
    assert "about to exit on job 2" in str(info.value)  # the tail of its error output


def test_a_killed_worker_names_the_signal() -> None:
    with pytest.raises(RuntimeError, match=r"killed by SIGKILL .* before finishing jobs\[0\] = 0"):
        run_in_workers(_kill_self, [0], 1, 1, lambda line: None)


def test_a_worker_that_finishes_early_exits_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    """Worker 1 ends while worker 0 still works: it must exit without an interpreter abort
    (a thread blocked in a buffered read of stdin made it 'Fatal Python error')."""
    assert run_in_workers(_slow_first, [0, 1], 2, 1, lambda line: None) == [0, 1]
    err = capsys.readouterr().err
    assert "Fatal Python error" not in err and "Traceback" not in err, err


def test_a_result_that_does_not_unpickle_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="pickles in the worker but does not unpickle"):
        run_in_workers(_return_two_arg, [1], 1, 1, lambda line: None)


def test_a_broken_stderr_does_not_hang_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The workers' error output is drained even when ours cannot be written."""

    class Broken:
        def write(self, text: str) -> int:
            raise BrokenPipeError("stderr is gone")

        def flush(self) -> None:
            raise BrokenPipeError("stderr is gone")

    monkeypatch.setattr(sys, "stderr", Broken())
    done: list[list[int]] = []
    runner = threading.Thread(
        target=lambda: done.append(run_in_workers(_shout, [0], 1, 1, lambda line: None)),
        daemon=True,
    )
    runner.start()
    runner.join(timeout=90)  # a hang (nothing drains the worker's stderr) fails here
    assert done == [[0]]


def test_threads_reach_the_workers_and_no_jobs_is_no_work() -> None:
    assert run_in_workers(_threads, [0, 1], 2, 3, lambda line: None) == [3, 3]
    assert run_in_workers(_threads, [], 2, 3, lambda line: None) == []


def test_an_exception_that_does_not_unpickle_still_reaches_the_parent() -> None:
    with pytest.raises(RuntimeError, match="TwoArgError") as info:
        run_in_workers(_raise_two_arg, [1], 1, 1, lambda line: None)
    assert "first" in str(info.value) and "_raise_two_arg" in str(info.value.__cause__)


@pytest.mark.parametrize(
    ("workers", "error", "needle"),
    [
        (0, ValueError, r"workers must be an int in \[1, 64\], got 0"),
        (-1, ValueError, r"workers must be an int in \[1, 64\], got -1"),
        (demo_config.MAX_WORKERS + 1, ValueError, r"workers must be an int in \[1, 64\], got 65"),
        (True, TypeError, "workers must be an int, got bool"),
        (1.5, TypeError, "workers must be an int, got float"),
        ("2", TypeError, "workers must be an int, got str"),
    ],
)
def test_bad_workers_are_rejected(workers: Any, error: type[Exception], needle: str) -> None:
    with pytest.raises(error, match=needle):
        tiny_config(workers=workers).validate()


@pytest.mark.parametrize(
    ("workers", "error", "needle"),
    [
        (0, ValueError, "workers must be an int >= 1, got 0"),
        (True, TypeError, "workers must be an int, got bool"),
        (1.5, TypeError, "workers must be an int, got float"),
    ],
)
def test_run_in_workers_checks_its_count(workers: Any, error: type[Exception], needle: str) -> None:
    with pytest.raises(error, match=needle):
        run_in_workers(_square, [1], workers, 1, lambda line: None)


@pytest.mark.parametrize(
    ("threads", "error", "needle"),
    [
        (0, ValueError, "threads must be an int >= 1, got 0"),
        (None, TypeError, "threads must be an int, got None"),
        (True, TypeError, "threads must be an int, got bool"),
        (2.0, TypeError, "threads must be an int, got float"),
    ],
)
def test_run_in_workers_checks_threads_before_starting(
    threads: Any, error: type[Exception], needle: str
) -> None:
    with pytest.raises(error, match=needle):
        run_in_workers(_square, [1], 1, threads, lambda line: None)


def test_cli_workers_option(capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    parser = build_parser()
    assert _demo_config(parser.parse_args(["demo", "--workers", "2"])).workers == 2
    assert _demo_config(parser.parse_args(["demo"])).workers is None
    with pytest.raises(SystemExit) as info:
        main(["demo", "--workers", "0", "--out", str(tmp_path / "o")])
    assert info.value.code == 2 and "--workers" in capsys.readouterr().err


def test_resolve_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, meta = torch.device("cpu"), torch.device("meta")
    monkeypatch.setattr(demo_config, "available_cores", lambda: 8)
    cfg = DemoConfig(seeds=(0, 1, 2))
    assert resolve_workers(cfg, cpu, threads=1) == 3  # at most one per seed
    assert resolve_workers(cfg, cpu, threads=4) == 2  # 8 cores / 4 threads
    assert resolve_workers(cfg, cpu, threads=16) == 1
    assert resolve_workers(cfg, meta, threads=1) == 1  # not a CPU device: one process
    assert resolve_workers(DemoConfig(seeds=(0, 1, 2), workers=2), meta, threads=1) == 2
    assert resolve_workers(DemoConfig(seeds=(0,), workers=4), cpu, threads=1) == 1
    monkeypatch.setattr(demo_config, "available_cores", lambda: 2)
    assert resolve_workers(DemoConfig(), cpu, threads=1) == 2  # the reference machine


def _run_script(script: Any) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with this interpreter, relaxclip importable as it is here."""
    root = str(Path(relaxclip.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )


_SCRIPT = """
from relaxclip.demo.config import DemoConfig
from relaxclip.demo.runner import run_demo

cfg = DemoConfig(
    n_train=64, n_val=48, n_test=64, image_size=32, seeds=(0, 1), pretrain_steps=2,
    finetune_steps=2, eval_every=2, batch_size=16, n_bootstrap=10, progress=False, plots=False,
    threads=1, embed_dim=16, workers=2,
)
print("OK", run_demo(cfg, None, log=lambda line: None)["workers"])
"""


def test_a_script_without_a_main_guard_runs_workers(tmp_path: Any) -> None:
    """Workers never import the caller's __main__: a plain script (no ``if __name__ ==
    "__main__":``) that calls run_demo with two workers finishes (with multiprocessing's spawn it
    would re-run itself in every worker, and hang)."""
    script = tmp_path / "plain_script.py"
    script.write_text(textwrap.dedent(_SCRIPT))
    proc = _run_script(script)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "OK 2"


def test_a_task_defined_in_main_is_a_clear_error(tmp_path: Any) -> None:
    script = tmp_path / "main_task.py"
    script.write_text(
        textwrap.dedent(
            """
            from relaxclip.demo.workers import WorkerTraceback, run_in_workers

            def task(job, log):
                return job

            if __name__ == "__main__":
                run_in_workers(task, [1, 2], 2, 1, print)
            """
        )
    )
    proc = _run_script(script)
    assert proc.returncode == 1
    assert "cannot load its task and jobs" in proc.stderr
    assert "not ones made in __main__" in proc.stderr


def _state(pid: int) -> str | None:
    """The /proc state letter of ``pid`` (``None`` once it is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def _gone(pids: list[int], within_s: float) -> bool:
    """Whether every pid has exited (gone or a zombie) within ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if all(_state(pid) in (None, "Z") for pid in pids):
            return True
        time.sleep(0.2)
    return False


def _sleep_and_log(job: int, log: Callable[[str], None]) -> int:
    log(f"pid {os.getpid()}")
    time.sleep(120)
    return job


_ORPHAN_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from relaxclip.demo.workers import run_in_workers
from test_demo_workers import _sleep_and_log

run_in_workers(_sleep_and_log, [0, 1], 2, 1, lambda line: print(line, flush=True))
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_workers_exit_when_their_caller_is_killed(tmp_path: Any) -> None:
    """SIGKILL to the caller (no cleanup code runs): its workers notice that their stdin has
    closed and exit, instead of running on as orphans."""
    script = tmp_path / "caller.py"
    script.write_text(_ORPHAN_SCRIPT.format(tests=str(Path(__file__).parent)))
    root = str(Path(relaxclip.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    caller = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert caller.stdout is not None
    watchdog = threading.Timer(120, caller.kill)  # a stalled caller fails the test, not CI
    watchdog.start()
    try:
        pids = [int(caller.stdout.readline().split()[1]) for _ in range(2)]
        assert all(_state(pid) not in (None, "Z") for pid in pids)
    finally:
        watchdog.cancel()
        caller.kill()
        caller.wait()
        caller.stdout.close()
    assert _gone(pids, within_s=20), [(pid, _state(pid)) for pid in pids]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("to", ["group", "caller"])
def test_ctrl_c_stops_the_demo_and_its_workers(tmp_path: Any, to: str) -> None:
    """SIGINT while two workers train, to the whole process group (Ctrl-C in a terminal) or to
    the caller alone: exit status 130, the one-line message, and no worker left."""
    argv = [
        sys.executable, "-m", "relaxclip", "demo", "--n-train", "64", "--n-val", "48",
        "--n-test", "64", "--image-size", "32", "--pretrain-steps", "100000", "--batch-size",
        "16", "--seeds", "0", "1", "--workers", "2", "--threads", "1", "--no-progress",
        "--no-plots", "--device", "cpu", "--out", str(tmp_path / "out"),
    ]  # fmt: skip
    root = str(Path(relaxclip.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    demo = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its own process group, like a terminal's foreground job
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )
    assert demo.stdout is not None
    watchdog = threading.Timer(180, demo.kill)  # a stalled run fails the test, not CI
    watchdog.start()
    try:
        for line in demo.stdout:
            if "worker processes" in line:
                break
        time.sleep(3)  # the workers are importing torch or pre-training
        workers = _children(demo.pid)
        assert len(workers) == 2
        if to == "group":
            os.killpg(demo.pid, signal.SIGINT)
        else:
            os.kill(demo.pid, signal.SIGINT)
        _, err = demo.communicate(timeout=60)
    finally:
        watchdog.cancel()
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 130, err[-2000:]
    assert "relaxclip demo: interrupted" in err
    assert _gone(workers, within_s=20)


def test_files_in_the_working_directory_do_not_shadow_the_workers_stdlib(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers start in isolated mode: a struct.py in the current directory (imported by
    pickle) does not break them."""
    (tmp_path / "struct.py").write_text(
        "raise ImportError('the shadowing struct.py was imported')\n"
    )
    monkeypatch.chdir(tmp_path)
    assert run_in_workers(_square, [3], 1, 1, lambda line: None) == [9]
