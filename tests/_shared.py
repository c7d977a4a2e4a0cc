"""The one place tests find ``../shared/data`` (real public data beside the repository).

Tests that need a file from it use :func:`needs_shared` (a pytest mark that skips with a visible reason
when the file is absent, as for users outside this project) or the ``shared_data`` fixture of
``tests/conftest.py``. Never copy the data into the repository.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

#: ``../shared/data`` beside the repository root (this file is ``<repo>/tests/_shared.py``).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_path(relative: str) -> Path:
    """Path of ``relative`` under ``../shared/data`` (it may not exist)."""
    return SHARED_DATA / relative


def needs_shared(*relatives: str) -> Callable[[Any], Any]:
    """Decorator: mark a test ``shared_data`` and skip it (reason visible in ``-ra``) unless every
    ``relative`` path exists under ``../shared/data``."""
    missing = [r for r in relatives if not shared_path(r).exists()]

    def mark(fn: Any) -> Any:
        fn = pytest.mark.shared_data(fn)
        if missing:
            fn = pytest.mark.skip(reason=f"../shared/data/{missing[0]} absent")(fn)
        return fn

    return mark
