"""Check that every examples/*.ipynb is in sync with its paired jupytext script and was executed.

In sync: the same cells (type and source, in order) as the percent-format script ``<name>.py``.
Executed: every non-empty code cell has an execution count, counts increase, and no cell output
is an error. Exit status 1 lists every problem; run in a venv with jupytext installed.
Regenerate with ``bash examples/make_notebooks.sh``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jupytext


def _cells(notebook: object) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in notebook.cells]  # type: ignore[attr-defined]


def check(notebook_path: Path) -> list[str]:
    script = notebook_path.with_suffix(".py")
    if not script.is_file():
        return [f"{notebook_path.name}: no paired script {script.name}"]
    nb, sc = jupytext.read(notebook_path), jupytext.read(script)
    problems = []
    a, b = _cells(nb), _cells(sc)
    if a != b:
        i = next(
            (k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
        )
        problems.append(
            f"{notebook_path.name}: out of sync with {script.name} from cell {i} "
            f"({len(a)} cells in the notebook, {len(b)} in the script)"
        )
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    if any(n is None for n in counts) or counts != sorted(counts):
        problems.append(f"{notebook_path.name}: not executed top to bottom (counts {counts})")
    for k, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                problems.append(
                    f"{notebook_path.name}: cell {k} has an error output ({out.get('ename')})"
                )
    return problems


def main(folder: str) -> int:
    notebooks = sorted(Path(folder).glob("*.ipynb"))
    problems = [p for nb in notebooks for p in check(nb)]
    for p in problems:
        print("FAIL:", p)
    if not problems:
        print(f"{len(notebooks)} notebooks in sync with their scripts and executed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "examples"))
