#!/usr/bin/env bash
# Build relaxclip the way README.md says (`python -m build`), install the wheel in a fresh venv
# (with the pinned CPU torch, never an unpinned one) and use it from outside the source tree:
# every module of relaxclip/ is in the wheel, `import relaxclip` resolves to the installed copy,
# every name in relaxclip.__all__ imports, a loss is computed, `relaxclip --help` runs.
# Usage: bash .ci/check_wheel.sh [WORKDIR]   (called by .ci/run; needs `build` in the current venv)
set -euo pipefail
shopt -s inherit_errexit
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=${1:-$(mktemp -d)}
mkdir -p "$work"
export PIP_DISABLE_PIP_VERSION_CHECK=1

t0=$SECONDS
rm -rf "$work/dist"
(cd "$ROOT" && python -m build --outdir "$work/dist" . >"$work/build.log" 2>&1) \
    || { tail -40 "$work/build.log"; exit 1; }
wheels=("$work"/dist/relaxclip-*.whl)
[[ ${#wheels[@]} == 1 && -f ${wheels[0]} ]] || { echo "expected one wheel, got: ${wheels[*]}"; exit 1; }
ls "$work/dist"
echo "[wheel] built in $((SECONDS - t0)) s"

t0=$SECONDS
rm -rf "$work/wheel-venv"
python3 -m venv "$work/wheel-venv"
quiet() { "$@" 2>&1 | { grep -v 'is ignored: it is neither' || true; }; }
quiet "$work/wheel-venv/bin/python" -m pip install -q torch==2.13.0   # the CPU wheel on local disk
quiet "$work/wheel-venv/bin/python" -m pip install -q "${wheels[0]}"
echo "[wheel] installed in a fresh venv in $((SECONDS - t0)) s"

# Run from an empty folder: the source tree must not be importable (no PYTHONPATH, no cwd copy).
mkdir -p "$work/outside"
cd "$work/outside"
env -u PYTHONPATH "$work/wheel-venv/bin/python" - "$ROOT" "${wheels[0]}" <<'PY'
import importlib
import sys
import zipfile
from pathlib import Path

root, wheel = Path(sys.argv[1]), Path(sys.argv[2])
import relaxclip  # noqa: E402
import torch  # noqa: E402

installed = Path(relaxclip.__file__).resolve().parent
assert "site-packages" in installed.parts, f"relaxclip imported from {installed}, not the wheel"
assert root not in installed.parents, f"relaxclip imported from the source tree {installed}"

# every module of the source package is in the wheel, and py.typed and the package data ship
in_wheel = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("relaxclip/")}
in_source = {
    p.relative_to(root).as_posix()
    for p in (root / "relaxclip").rglob("*")
    if p.is_file()
    and (p.suffix in {".py", ".json"} or p.name == "py.typed")
    and "__pycache__" not in p.parts
}
missing = sorted(in_source - in_wheel)
assert not missing, f"source files missing from the wheel: {missing}"
extra = sorted(n for n in in_wheel - in_source if n.endswith(".py"))
assert not extra, f"modules in the wheel that are not in the source tree: {extra}"

for name in relaxclip.__all__:
    getattr(relaxclip, name)
for mod in sorted(in_source):
    if mod.endswith(".py"):
        dotted = mod[: -len(".py")].replace("/", ".").removesuffix(".__init__")
        if dotted.endswith("__main__"):
            continue
        try:
            importlib.import_module(dotted)
        except ImportError as exc:  # an optional extra (triton, matplotlib, ...) may be absent
            missing_dep = getattr(exc, "name", None) or ""
            if missing_dep.split(".")[0] in {"triton", "matplotlib", "tqdm", "PIL", "sklearn"}:
                print(f"  {dotted}: needs the optional {missing_dep!r} (not installed here)")
                continue
            raise

torch.manual_seed(0)
x, y = torch.randn(8, 16, requires_grad=True), torch.randn(8, 16, requires_grad=True)
loss = relaxclip.relaxed_contrastive_loss(x, y, torch.tensor(10.0), threshold=0.8)
loss.backward()
assert torch.isfinite(loss) and x.grad is not None and torch.isfinite(x.grad).all()
print(f"[wheel] relaxclip {relaxclip.__version__} from {installed}: {len(in_wheel)} files, "
      f"{len(relaxclip.__all__)} public names, loss {loss.item():.4f}")
PY
env -u PYTHONPATH "$work/wheel-venv/bin/relaxclip" --help >/dev/null
env -u PYTHONPATH "$work/wheel-venv/bin/relaxclip" --version
echo "[wheel] relaxclip --help ran from $PWD"
