"""relaxclip.integrations: importable without the host libraries, never imported by the core.

Runs in the core venv (no open_clip); the training tests are in tests/integrations.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest


def test_core_does_not_import_integrations() -> None:
    code = (
        "import sys, relaxclip, relaxclip.data, relaxclip.demo.cli\n"
        "print(','.join(m for m in sys.modules if m.startswith('relaxclip.integrations')))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == ""


def test_entry_point_imports_without_open_clip() -> None:
    code = (
        "import sys, relaxclip.integrations.open_clip_train as m\n"
        "print(','.join(x for x in ('open_clip', 'open_clip_train', 'pandas') if x in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == ""


@pytest.mark.skipif(
    importlib.util.find_spec("open_clip_train") is not None, reason="open_clip_train installed"
)
def test_missing_open_clip_train_names_the_versions() -> None:
    from relaxclip.integrations import open_clip_train as roc

    with pytest.raises(roc.OpenClipVersionError) as err:
        roc.main(["--train-data", "x.csv"])
    assert roc.SUPPORTED_OPEN_CLIP in str(err.value)
    assert f"open_clip_torch=={roc.TESTED_OPEN_CLIP}" in str(err.value)


_NO_OPEN_CLIP = pytest.mark.skipif(
    importlib.util.find_spec("open_clip") is not None, reason="open_clip installed"
)
_ENTRY = [sys.executable, "-m", "relaxclip.integrations.open_clip_train"]


@_NO_OPEN_CLIP
def test_help_without_open_clip_says_how_to_install_it() -> None:
    """--help used to end with an empty open_clip section and never say open_clip was missing."""
    out = subprocess.run([*_ENTRY, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--relax-threshold" in out.stdout  # relaxclip's own options are listed
    section = out.stdout.split("open_clip_train.main options", 1)[1]
    assert "open_clip_torch is not installed" in section
    assert 'pip install "relaxclip[openclip]"' in section


@_NO_OPEN_CLIP
def test_run_without_open_clip_is_one_line_and_fails() -> None:
    """The missing-open_clip error used to come after a 30-line chained traceback."""
    argv = [*_ENTRY, "--relax-threshold", "0.8", "--train-data", "x.csv"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "open_clip_torch is not installed" in lines[0]
    assert 'pip install "relaxclip[openclip]"' in lines[0]
