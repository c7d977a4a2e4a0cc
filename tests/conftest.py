"""Fixtures shared by the test modules."""

from __future__ import annotations

from pathlib import Path

import pytest
from _shared import SHARED_DATA


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` (real public data beside the repository); skips the test when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data absent")
    return SHARED_DATA
