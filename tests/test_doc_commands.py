"""README.md and docs/*.md: every shell command is run in CI or marked (.ci/check_doc_commands.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "check_doc_commands", ROOT / ".ci" / "check_doc_commands.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _commands(checker: ModuleType, tmp_path: Path, text: str) -> tuple[list, list[str]]:
    md = tmp_path / "page.md"
    md.write_text(text, encoding="utf-8")
    return checker.extract(md)


def test_repository_docs_pass(checker: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert checker.main([]) == 0, capsys.readouterr().out


def test_unpublished_install_is_reported(checker: ModuleType, tmp_path: Path) -> None:
    # README's first command before 0.2.0: no release exists, so it must not pass unmarked
    commands, errors = _commands(checker, tmp_path, "```bash\npip install relaxclip\n```\n")
    assert errors == []
    assert [c.text for c in commands] == ["pip install relaxclip"]
    status, err = checker.classify(commands[0])
    assert status == "unaccounted" and err is not None


def test_markers_continuations_and_prompts(checker: ModuleType, tmp_path: Path) -> None:
    text = (
        "```bash\n"
        "# a comment line\n"
        "python examples/clip_open_clip.py --mimic-root /m \\\n"
        "    --threshold 0.8  # needs: data, GPU\n"
        "relaxclip demo   # not in CI: minutes\n"
        "```\n"
        "```console\n"
        '$ pip install -e ".[dev]"\n'
        "Successfully installed relaxclip\n"
        "```\n"
    )
    commands, errors = _commands(checker, tmp_path, text)
    assert errors == []
    got = [(c.text, c.marker) for c in commands]
    assert got == [
        ("python examples/clip_open_clip.py --mimic-root /m --threshold 0.8", "needs: data, GPU"),
        ("relaxclip demo", "not in CI: minutes"),
        ('pip install -e ".[dev]"', None),
    ]
    assert checker.classify(commands[2]) == ("run by this checker", None)


def test_untagged_shell_block_is_an_error(checker: ModuleType, tmp_path: Path) -> None:
    _, errors = _commands(checker, tmp_path, "```\npytest tests/test_loss.py\n```\n")
    assert len(errors) == 1 and "untagged" in errors[0]
    _, errors = _commands(checker, tmp_path, "```\nL = 1/(2B) sum_i ...\n```\n")
    assert errors == []  # a formula block is not a shell block


def test_script_options_must_exist(checker: ModuleType) -> None:
    # the multi-GPU command docs/reproducing.md showed before: ddp_train.py has no data options
    err = checker.script_options(
        "torchrun --nproc_per_node=8 examples/ddp_train.py --mimic-root /data/mimic"
    )
    assert err == "examples/ddp_train.py defines no option --mimic-root"
    assert checker.script_options("python examples/clip_open_clip.py --mimic-root /m") is None
    assert checker.script_options("python examples/nope.py") == "examples/nope.py does not exist"


def test_in_ci_claim_fails_when_ci_no_longer_runs_it(
    checker: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    cmd = checker.Command("README.md", 1, "python -m pytest -q tests", None)
    assert checker.classify(cmd) == ("in CI: .ci/run", None)
    monkeypatch.setitem(checker.IN_CI, cmd.text, (".ci/run", "a step that is not there"))
    status, err = checker.classify(cmd)
    assert err is not None and "no longer contains" in err
