"""docs/api.md writes the public API down: its table names exactly ``relaxclip.__all__``."""

from __future__ import annotations

import re
from pathlib import Path

import relaxclip

API_MD = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def _documented_names() -> list[str]:
    text = API_MD.read_text(encoding="utf-8")
    section = text.split("## Public API", 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("|") and "---" not in ln][1:]
    assert rows, "docs/api.md: no table under '## Public API'"
    return [name for row in rows for name in re.findall(r"`([^`]+)`", row.split("|")[2])]


def test_api_doc_lists_exactly_the_public_names() -> None:
    documented = _documented_names()
    assert len(documented) == len(set(documented)), "a name is listed twice in docs/api.md"
    missing = sorted(set(relaxclip.__all__) - set(documented))
    extra = sorted(set(documented) - set(relaxclip.__all__))
    assert not missing, f"in relaxclip.__all__ but not in docs/api.md: {missing}"
    assert not extra, f"in docs/api.md but not in relaxclip.__all__: {extra}"
    for name in documented:
        assert hasattr(relaxclip, name), name
