"""The public API: what README and docs promise is importable, typed and versioned."""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

import relaxclip
import relaxclip.data

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("module", [relaxclip, relaxclip.data])
def test_every_exported_name_exists(module) -> None:  # type: ignore[no-untyped-def]
    assert module.__all__, module.__name__
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing


def test_quick_start_names_and_version() -> None:
    from relaxclip import RelaxedContrastiveLoss, SentenceSampler  # noqa: F401

    text = (ROOT / "pyproject.toml").read_text()  # no tomllib: the package supports Python 3.10
    # One source of truth: pyproject reads the version from relaxclip.__version__, the installed
    # metadata agrees, and it is the CHANGELOG's top entry.
    assert re.search(r'^dynamic = \["version"\]', text, re.M)
    assert 'version = { attr = "relaxclip.__version__" }' in text
    assert importlib.metadata.version("relaxclip") == relaxclip.__version__
    top = re.search(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert top is not None and top.group(1) == relaxclip.__version__
    assert re.search(r'^license = "MIT"$', text, re.M)  # an SPDX expression, not a table
    deps = re.search(r"^dependencies = \[(.*?)\]", text, re.M | re.S)
    assert deps is not None
    names = {
        re.split(r"[<>=!~ ]", d.strip().strip('"'))[0]
        for d in deps.group(1).split(",")
        if d.strip()
    }
    assert names == {"torch", "numpy", "nltk"}


def test_py_typed_is_shipped() -> None:
    assert (Path(relaxclip.__file__).parent / "py.typed").is_file()


def test_import_does_not_load_heavy_optional_modules() -> None:
    code = (
        "import sys, relaxclip, relaxclip.data\n"
        "heavy = [m for m in ('nltk', 'matplotlib', 'triton', 'open_clip', 'transformers', 'PIL', 'sklearn')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize(
    "name",
    [
        "relaxclip.loss",
        "relaxclip.backends.dense",
        "relaxclip.backends.chunked",
        "relaxclip.backends.triton",
        "relaxclip.distributed",
        "relaxclip.sentences",
        "relaxclip.sampling",
        "relaxclip.zeroshot",
        "relaxclip.metrics",
        "relaxclip.demo.cli",
    ],
)
def test_modules_import(name: str) -> None:
    importlib.import_module(name)


def test_ci_installs_as_the_readme_says() -> None:
    """CI's core venv is installed with the README's command and no torch pin, so the tests run
    on the torch a user gets (the declared floor has its own venv)."""
    command = 'pip install -e ".[dev,demo,triton]"'
    assert command in (ROOT / "README.md").read_text()
    installs = [
        line.split("#")[0]
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.lstrip().startswith("pip install")
    ]
    assert any(
        line.split() == ["pip", "install", "-q", "-e", '".[dev,demo,triton]"'] for line in installs
    )
    assert not any("torch" in line for line in installs), installs
