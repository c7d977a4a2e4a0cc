"""Measure the package's size against its budgets: lines per module, function bodies, docstrings.

Prints lines per module, the ten longest functions and every budget with its measured value;
exits 1 when a budget is exceeded. ``tests/test_code_shape.py`` runs the same checks.

    python benchmarks/code_size.py            # the table and the budgets
    python benchmarks/code_size.py --json     # the measurements as JSON
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "relaxclip"

MAX_LOSS_LINES = 600
MAX_CORE_LINES = 6650  # relaxclip/ outside demo/
MAX_FILE_LINES_OPEN_CLIP = 400  # each file of the open_clip entry point
MAX_FUNCTION_BODY = 60
MAX_DOCSTRING = 40
# Exempt from the function-body budget: Triton kernels (one fused loop each) and argparse builders.
EXEMPT_DECORATORS = ("triton.jit", "jit")
EXEMPT_NAME = re.compile(r"(^|_)(build_)?(parser|arguments|add_\w*arguments)$")
HISTORY = re.compile(r"\bissues? #?\d+\b|\b20\d\d-\d\d-\d\d\b", re.IGNORECASE)


@dataclass(frozen=True)
class Function:
    where: str
    body_lines: int
    exempt: bool


def python_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _decorator_names(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    names = []
    for dec in node.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        names.append(ast.unparse(target))
    return names


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of the body after the docstring (the signature and docstring do not count)."""
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        if isinstance(body[0].value.value, str):
            body = body[1:]
    if not body:
        return 0
    return (body[-1].end_lineno or body[-1].lineno) - body[0].lineno + 1


def functions(path: Path, root: Path = PACKAGE.parent) -> list[Function]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            exempt = any(d in EXEMPT_DECORATORS for d in _decorator_names(node)) or bool(
                EXEMPT_NAME.search(node.name)
            )
            where = f"{path.relative_to(root)}:{node.lineno} {node.name}"
            out.append(Function(where, _body_lines(node), exempt))
    return out


def docstrings(path: Path, root: Path = PACKAGE.parent) -> list[tuple[str, int]]:
    """(where, lines) of the module's and every class's and function's docstring."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=False)
            if doc is not None:
                name = getattr(node, "name", "<module>")
                where = f"{path.relative_to(root)}:{getattr(node, 'lineno', 1)} {name}"
                out.append((where, len(doc.strip("\n").splitlines())))
    return out


def measure() -> dict[str, object]:
    files = python_files()
    lines = {str(p.relative_to(PACKAGE.parent)): len(p.read_text().splitlines()) for p in files}
    core = sum(n for f, n in lines.items() if not f.startswith("relaxclip/demo/"))
    funcs = [f for p in files for f in functions(p)]
    docs = [d for p in files for d in docstrings(p)]
    history = [
        f"{p.relative_to(PACKAGE.parent)}:{i}"
        for p in files
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if HISTORY.search(line)
    ]
    open_clip = {f: n for f, n in lines.items() if "integrations/open_clip_train" in f}
    return {
        "lines": lines,
        "core_lines": core,
        "longest_functions": [
            (f.where, f.body_lines) for f in sorted(funcs, key=lambda f: -f.body_lines)[:10]
        ],
        "long_functions": [
            (f.where, f.body_lines)
            for f in funcs
            if f.body_lines > MAX_FUNCTION_BODY and not f.exempt
        ],
        "long_docstrings": [(w, n) for w, n in docs if n > MAX_DOCSTRING],
        "history_lines": history,
        "open_clip_files": open_clip,
    }


def violations(m: dict[str, object]) -> list[str]:
    lines = m["lines"]
    assert isinstance(lines, dict)
    out = []
    if lines.get("relaxclip/loss.py", 0) > MAX_LOSS_LINES:
        out.append(f"relaxclip/loss.py has {lines['relaxclip/loss.py']} lines > {MAX_LOSS_LINES}")
    if int(m["core_lines"]) > MAX_CORE_LINES:  # type: ignore[call-overload]
        out.append(f"relaxclip/ outside demo/ has {m['core_lines']} lines > {MAX_CORE_LINES}")
    for f, n in m["open_clip_files"].items():  # type: ignore[attr-defined]
        if n > MAX_FILE_LINES_OPEN_CLIP:
            out.append(f"{f} has {n} lines > {MAX_FILE_LINES_OPEN_CLIP}")
    for where, n in m["long_functions"]:  # type: ignore[attr-defined]
        out.append(f"{where}: body of {n} lines > {MAX_FUNCTION_BODY}")
    for where, n in m["long_docstrings"]:  # type: ignore[attr-defined]
        out.append(f"{where}: docstring of {n} lines > {MAX_DOCSTRING}")
    for where in m["history_lines"]:  # type: ignore[attr-defined]
        out.append(f"{where}: cites an issue number or a date (history belongs in docs/)")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the measurements as JSON")
    args = parser.parse_args()
    m = measure()
    if args.json:
        print(json.dumps(m, indent=1))
    else:
        for f, n in sorted(m["lines"].items(), key=lambda kv: -kv[1]):  # type: ignore[attr-defined]
            print(f"{n:6d}  {f}")
        print(f"{m['core_lines']:6d}  relaxclip/ outside demo/ (budget {MAX_CORE_LINES})")
        print("\nten longest function bodies:")
        for where, n in m["longest_functions"]:  # type: ignore[attr-defined]
            print(f"{n:6d}  {where}")
    bad = violations(m)
    print("\n" + ("\n".join(f"OVER BUDGET: {v}" for v in bad) if bad else "every budget met"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
