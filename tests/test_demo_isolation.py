"""The two wings: the library core never imports the demo application (relaxclip.demo)."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import relaxclip

ROOT = Path(__file__).resolve().parents[1]


def _core_modules() -> list[str]:
    """Every module of the package outside relaxclip.demo (found on disk, not hand-listed)."""
    names = ["relaxclip"]
    for info in pkgutil.walk_packages(relaxclip.__path__, prefix="relaxclip."):
        if info.name == "relaxclip.__main__" or info.name.startswith("relaxclip.demo"):
            continue
        names.append(info.name)
    return names


CORE = _core_modules()


_PROBE = """
import importlib, json, sys
out = {}
for name in sys.argv[1:]:
    importlib.import_module(name)
    out[name] = sorted(m for m in sys.modules if m == "relaxclip.demo" or m.startswith("relaxclip.demo."))
print(json.dumps(out))
"""


def _demo_modules_after_import(modules: list[str]) -> dict[str, list[str]]:
    """Import ``modules`` in turn in a fresh interpreter; per module, the demo modules loaded so
    far (one process: the first module that pulls in the demo is the one named)."""
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *modules],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=300,
    )
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_core_list_covers_the_library() -> None:
    for name in (
        "relaxclip.loss",
        "relaxclip.backends.chunked",
        "relaxclip.distributed",
        "relaxclip.sentences",
        "relaxclip.sampling",
        "relaxclip.zeroshot",
        "relaxclip.metrics",
        "relaxclip.data.openi",
    ):
        assert name in CORE


def test_core_modules_do_not_import_demo() -> None:
    loaded = _demo_modules_after_import(CORE)
    assert list(loaded) == CORE
    offenders = {name: mods for name, mods in loaded.items() if mods}
    assert not offenders, f"core module(s) import the demo: {offenders}"


def test_the_probe_sees_a_demo_import() -> None:
    """The probe itself works: a module that imports the demo is named."""
    loaded = _demo_modules_after_import(["relaxclip", "relaxclip.demo.models"])
    assert loaded["relaxclip"] == []
    assert "relaxclip.demo.models" in loaded["relaxclip.demo.models"]


def test_demo_names_are_not_reexported_at_top_level() -> None:
    for name in ("TinyCLIP", "WordTokenizer", "run_demo", "DemoConfig"):
        assert name not in relaxclip.__all__ and not hasattr(relaxclip, name)
