"""mkdocs hook: serve MathJax from the built site itself, so the docs render offline.

MathJax comes from the ``django-static-mathjax`` wheel (MathJax 3.2.2's static files, no
dependencies; listed in examples/requirements-docs.txt). After the build, its ``es5`` folder is
copied to ``site/javascripts/mathjax/``, where ``mkdocs.yml``'s ``extra_javascript`` points.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

TARGET = Path("javascripts") / "mathjax"


def _mathjax_es5() -> Path:
    spec = importlib.util.find_spec("mathjax")  # located, not imported (it is a Django app)
    for root in (spec.submodule_search_locations or []) if spec else []:
        es5 = Path(root) / "static" / "mathjax" / "es5"
        if (es5 / "tex-mml-chtml.js").is_file():
            return es5
    raise PluginError(
        "MathJax for the offline docs is missing: pip install -r examples/requirements-docs.txt "
        "(it provides django-static-mathjax)"
    )


def on_post_build(config: Any, **kwargs: Any) -> None:
    """Copy MathJax's es5 bundle (script, fonts, extensions) into the built site."""
    target = Path(config["site_dir"]) / TARGET
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(_mathjax_es5(), target)
