"""Every shell command in README.md and docs/*.md is run in CI or marked as not runnable there.

A command is a line of a fenced ``bash`` / ``sh`` / ``shell`` / ``console`` block (``\\``
continuations joined, ``$ `` prompts and comment-only lines dropped). An untagged block whose
lines start like shell commands (``python``, ``pip``, ``pytest``, ...) is an error: tag it
``bash`` so that it is checked. Each command must be one of:

* **marked** with a trailing comment ``# needs: data`` (credentialed or large real data),
  ``# needs: GPU`` (one or more CUDA GPUs), ``# needs: data, GPU`` or ``# not in CI: <reason>`` (runnable here but not
  worth CI's time, e.g. the 4-minute full demo; the reason is shown to the reader);
* **run by this checker** (``RUN``: cheap commands, executed with ``--run`` from the repository
  root in the current environment, which CI sets up with ``pip install -e ".[dev,demo,triton]"``);
* **run elsewhere in CI** (``IN_CI``: the command, the CI file that runs it and a literal excerpt
  of that file which must be present, so that the claim fails when the CI step goes away).

Whatever its disposition, a command that runs a script of this repository (``python x.py``,
``torchrun ... x.py``) is also checked statically: the script exists and every ``--option`` the
command passes appears in it as a quoted string (argparse's spelling), so a documented flag that
the script does not define fails here even when the command needs data to run.

Usage: python .ci/check_doc_commands.py [--run] [--list]
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHELL_TAGS = {"bash", "sh", "shell", "console"}
SHELL_WORDS = {"python", "python3", "pip", "pytest", "torchrun", "relaxclip", "bash", "mkdocs"}
MARKER = re.compile(r"#\s*(needs:\s*(data|GPU)(,\s*(data|GPU))?\b|not in CI:\s*\S.*)")
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)$")

# Commands this checker runs (cheap, from the repository root, in the CI core venv).
RUN: dict[str, float] = {  # command -> timeout in seconds
    'pip install -e ".[dev]"': 300,
    'pip install -e ".[demo]"': 300,
}

# Commands another CI step runs: command -> (CI file, literal excerpt of it that runs the command).
IN_CI: dict[str, tuple[str, str]] = {
    "python -m pytest -q tests": (".ci/run", "python -m pytest -q tests"),
    "relaxclip demo --quick": (".ci/run", "relaxclip demo --quick"),
    "python -m build": (".ci/check_wheel.sh", "python -m build --outdir"),
    "pip install dist/relaxclip-*.whl": (".ci/check_wheel.sh", 'pip install -q "${wheels[0]}"'),
    "torchrun --nproc_per_node=2 examples/ddp_train.py --tiny": (
        "tests/test_distributed.py",
        '"--nproc_per_node=2"',
    ),
    "torchrun --nproc_per_node=2 examples/clip_open_clip.py --tiny --steps 40": (
        ".ci/integrations.sh",
        '"$INT/bin/torchrun" --nproc_per_node=2',
    ),
    "python examples/clip_open_clip.py --tiny": (
        ".ci/integrations.sh",
        '"$ROOT/examples/$py" --tiny',
    ),
    "python examples/medclip_finetune.py --tiny": (
        ".ci/integrations.sh",
        '"$ROOT/examples/$py" --tiny',
    ),
    # the medclip / integrations venvs: built from the requirements file, then the clone, no deps
    "python -m venv .venv-medclip && . .venv-medclip/bin/activate": (
        ".ci/integrations.sh",
        '"$PY" -m venv "$dir"',
    ),
    "pip install -r examples/requirements-medclip.txt && pip install -e . --no-deps": (
        ".ci/integrations.sh",
        'pip install -q --no-deps -e "$ROOT"',
    ),
    "pip install -r examples/requirements-integrations.txt && pip install -e . --no-deps": (
        ".ci/integrations.sh",
        'pip install -q --no-deps -e "$ROOT"',
    ),
    "pytest tests/test_backend_triton.py": (".ci/run", "python -m pytest -q tests"),
}


@dataclass(frozen=True)
class Command:
    path: str
    line: int
    text: str  # without the trailing comment
    marker: str | None  # "needs: data", "needs: GPU", "not in CI: ..."


def _strip_comment(line: str) -> tuple[str, str]:
    """Split a shell line into (command, comment) at the first unquoted ``#`` after a space."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i:]
    return line.rstrip(), ""


def _looks_like_shell(lines: list[str]) -> bool:
    words = [ln.split()[0] for ln in lines if ln.strip()]
    return bool(words) and all(w.lstrip("$ ") in SHELL_WORDS or w == "$" for w in words)


def extract(path: Path) -> tuple[list[Command], list[str]]:
    """The shell commands of one Markdown file, and errors (untagged shell blocks)."""
    rel = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)
    commands: list[Command] = []
    errors: list[str] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, tag = m.group("fence"), m.group("info").strip().split(" ")[0].lower()
        start = i + 1
        j = start
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        body = [ln[len(m.group("indent")) :] for ln in lines[start:j]]
        i = j + 1
        if tag not in SHELL_TAGS:
            if tag == "" and _looks_like_shell(body):
                errors.append(f"{rel}:{start}: untagged block of shell commands; tag it ```bash")
            continue
        pending, first = "", start
        for k, raw in enumerate(body):
            text = raw.strip()
            if tag == "console":
                if not text.startswith("$ "):
                    continue  # output
                text = text[2:]
            if not pending:
                first = start + k + 1
            cmd, comment = _strip_comment(text)
            if cmd.endswith("\\"):
                pending += cmd[:-1].rstrip() + " "
                continue
            full = (pending + cmd).strip()
            pending = ""
            if not full:
                continue  # blank or comment-only line
            marker = MARKER.search(comment)
            commands.append(Command(rel, first, " ".join(full.split()), marker and marker.group(1)))
    return commands, errors


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def classify(cmd: Command) -> tuple[str, str | None]:
    """(disposition, error or None) for one command."""
    if cmd.marker:
        return f"marked: {cmd.marker}", None
    if cmd.text in RUN:
        return "run by this checker", None
    if cmd.text in IN_CI:
        ci_file, excerpt = IN_CI[cmd.text]
        target = ROOT / ci_file
        if not target.is_file() or excerpt not in target.read_text(encoding="utf-8"):
            return "in CI?", f"{ci_file} no longer contains {excerpt!r}"
        return f"in CI: {ci_file}", None
    return "unaccounted", (
        "neither run in CI nor marked: add `# needs: data`, `# needs: GPU` or "
        "`# not in CI: <reason>`, or list it in .ci/check_doc_commands.py (RUN or IN_CI)"
    )


def script_options(cmd: str) -> str | None:
    """Error if ``cmd`` runs a repository script that lacks a file or an option it passes."""
    for part in re.split(r"&&|\|\||;|\|", cmd):
        try:
            words = shlex.split(part)
        except ValueError as exc:
            return f"cannot parse the command: {exc}"
        if not words or words[0] not in {"python", "python3", "torchrun"}:
            continue
        scripts = [w for w in words[1:] if w.endswith(".py") and not w.startswith("-")]
        if not scripts:
            continue
        script = ROOT / scripts[0]
        if not script.is_file():
            return f"{scripts[0]} does not exist"
        source = script.read_text(encoding="utf-8")
        after = words[words.index(scripts[0]) + 1 :]
        for word in after:
            flag = word.split("=", 1)[0]
            if flag.startswith("--") and f'"{flag}"' not in source and f"'{flag}'" not in source:
                return f"{scripts[0]} defines no option {flag}"
    return None


def run(cmd: str, timeout: float) -> str | None:
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f} s"
    print(f"    ran in {time.perf_counter() - t0:.1f} s, exit {proc.returncode}")
    if proc.returncode != 0:
        return f"exit {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", action="store_true", help="also execute the RUN commands")
    p.add_argument("--list", action="store_true", help="print every command and its status")
    args = p.parse_args(argv)
    errors: list[str] = []
    seen: set[str] = set()
    for path in doc_files():
        commands, errs = extract(path)
        errors += errs
        for cmd in commands:
            status, err = classify(cmd)
            err = err or script_options(cmd.text)
            if args.list or err:
                print(f"{cmd.path}:{cmd.line}: [{status}] {cmd.text}")
            if err:
                errors.append(f"{cmd.path}:{cmd.line}: {cmd.text}\n    {err}")
            if args.run and status == "run by this checker" and cmd.text not in seen:
                seen.add(cmd.text)
                print(f"  running: {cmd.text}")
                shlex.split(cmd.text)  # a quoting error in the docs fails here, not in the shell
                err = run(cmd.text, RUN[cmd.text])
                if err:
                    errors.append(f"{cmd.path}:{cmd.line}: {cmd.text}\n    {err}")
    for e in errors:
        print("FAIL", e)
    print(f"doc commands: {len(errors)} problem(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
