"""The documentation site loads nothing from another host (MathJax and fonts are bundled)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("check_site", ROOT / ".ci" / "check_site_offline.py")
assert spec is not None and spec.loader is not None
check_site = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_site)


def test_mkdocs_config_loads_no_remote_asset() -> None:
    config = (ROOT / "mkdocs.yml").read_text()
    assert re.search(r"^\s+font: false", config, re.M), "Material would load Google Fonts"
    assets = re.findall(r"^\s+- (\S+\.(?:js|css))\s*$", config, re.M)
    assert "javascripts/mathjax/tex-mml-chtml.js" in assets
    assert not [a for a in assets if "//" in a]
    assert "docs_hooks/offline_assets.py" in config
    req = (ROOT / "examples" / "requirements-docs.txt").read_text()
    assert "django-static-mathjax" in req


def _site(tmp_path: Path, head: str, css: str = "") -> Path:
    (tmp_path / "js").mkdir()
    (tmp_path / "js" / "local.js").write_text("")
    (tmp_path / "style.css").write_text(css)
    body = '<a href="https://example.org/paper">a link is fine</a>'
    (tmp_path / "index.html").write_text(f"<html><head>{head}</head><body>{body}</body></html>")
    return tmp_path


def test_checker_accepts_a_local_site(tmp_path: Path) -> None:
    site = _site(
        tmp_path, '<script src="js/local.js"></script><script src="/js/local.js"></script>'
    )
    assert check_site.problems(site) == []


def test_checker_flags_remote_and_missing_assets(tmp_path: Path) -> None:
    head = (
        '<script src="https://unpkg.com/mathjax@3/es5/tex-mml-chtml.js"></script>'
        '<link rel="preconnect" href="https://fonts.gstatic.com">'
        '<script src="js/missing.js"></script>'
    )
    site = _site(tmp_path, head, css="@import 'https://fonts.googleapis.com/css?family=Roboto';")
    found = check_site.problems(site)
    assert len(found) == 4, found
    assert any("unpkg.com" in f for f in found) and any("missing.js" in f for f in found)
