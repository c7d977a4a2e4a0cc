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
