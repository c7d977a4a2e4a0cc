#!/usr/bin/env bash
# Integration checks, called by .ci/run after the core tests:
#   1. build (or reuse) two cached venvs OUTSIDE the clone:
#        integrations  from examples/requirements-integrations.txt (open_clip, timm, HF, jupytext)
#        medclip       from examples/requirements-medclip.txt      (medclip 0.0.3, transformers 4.24)
#      each under $RELAXCLIP_CACHE (default ~/.cache/relaxclip-ci) as <name>-<sha256 of the
#      requirements file and the Python version>; a venv is rebuilt when missing or incomplete;
#   2. check that every examples/*.ipynb is in sync with its paired examples/*.py (jupytext);
#   3. run every example in --tiny mode in its venv (offline: no weights, no data downloads);
#   4. run tests/integrations in the integrations venv;
#   5. build the documentation site with `mkdocs build --strict` in a small docs venv from
#      examples/requirements-docs.txt (mkdocstrings reads the source statically: no torch needed);
#   6. floor: the core tests (everything but the demo application and tests/integrations) in a
#      cached venv with the oldest torch pyproject.toml declares (.ci/requirements-floor.txt).
#
# Usage: bash .ci/integrations.sh [all|build|notebooks|examples|tests|docs|floor] (default: all)
#        bash .ci/integrations.sh regen [script.py ...]   regenerate + execute notebooks (not in CI)
# Environment: RELAXCLIP_CACHE (venv cache folder), RELAXCLIP_PYTHON (interpreter, default python3).
set -euo pipefail
shopt -s inherit_errexit
# The whole script is one function, parsed before it runs: editing this file while it runs is safe.
main() {

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${RELAXCLIP_CACHE:-$HOME/.cache/relaxclip-ci}
PY=${RELAXCLIP_PYTHON:-python3}
STEP=${1:-all}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
# Examples and tests must never reach a model hub; make any attempt fail fast.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false PYTHONHASHSEED=0 PYTHONUNBUFFERED=1 NO_MKDOCS_2_WARNING=1
mkdir -p "$CACHE"

log() { printf '[integrations %(%H:%M:%S)T] %s\n' -1 "$*"; }

# venv_path NAME REQUIREMENTS... -> prints the cache path of that venv (not built yet).
venv_path() {
    local name=$1
    shift
    local key req
    for req in "$@"; do
        [[ -f $req ]] || { echo "missing requirements file $req" >&2; exit 1; }
    done
    key=$( { cat "$@"; "$PY" -c 'import sys; print(sys.version)'; } | sha256sum | cut -c1-16)
    printf '%s/%s-%s' "$CACHE" "$name" "$key"
}

# ensure_venv NAME REQUIREMENTS... : build the venv if missing (under a lock), then install the
# clone into it (editable, no deps). A venv is complete only once .complete exists in it.
ensure_venv() {
    local name=$1
    shift
    local dir
    dir=$(venv_path "$name" "$@")
    (
        flock 9
        if [[ ! -f $dir/.complete ]]; then
            log "building venv $name at $dir (cache miss)"
            local t0=$SECONDS
            rm -rf "$dir"
            # Drop outdated builds of the same venv (each is several GB).
            find "$CACHE" -maxdepth 1 -name "$name-*" -type d -exec rm -rf {} +
            "$PY" -m venv "$dir"
            local req
            for req in "$@"; do
                "$dir/bin/python" -m pip install -q -r "$req" 2>&1 | { grep -v 'is ignored: it is neither' || true; }
            done
            touch "$dir/.complete"
            log "built venv $name in $((SECONDS - t0)) s"
        else
            log "reusing venv $name at $dir"
        fi
        "$dir/bin/python" -m pip install -q --no-deps -e "$ROOT" 2>&1 | { grep -v 'is ignored: it is neither' || true; }
    ) 9>"$CACHE/$name.lock"
}

INT_REQ=("$ROOT/examples/requirements-integrations.txt")
MC_REQ=("$ROOT/examples/requirements-medclip.txt")
DOCS_REQ=("$ROOT/examples/requirements-docs.txt")
FLOOR_REQ=("$ROOT/.ci/requirements-floor.txt")
INT=$(venv_path integrations "${INT_REQ[@]}")
MC=$(venv_path medclip "${MC_REQ[@]}")
DOCS=$(venv_path docs "${DOCS_REQ[@]}")
FLOOR=$(venv_path floor "${FLOOR_REQ[@]}")

# Which venv runs which example (every examples/*.py except helpers must be listed here).
declare -A EXAMPLE_VENV=(
    [clip_open_clip.py]=$INT
    [biomedclip.py]=$INT
    [hf_transformers.py]=$INT
    [lightning_finetune.py]=$INT
    [medclip_finetune.py]=$MC
)

step_build() {
    ensure_venv integrations "${INT_REQ[@]}"
    ensure_venv medclip "${MC_REQ[@]}"
}

step_notebooks() {
    ensure_venv integrations "${INT_REQ[@]}"
    local py bad=0
    for py in "${!EXAMPLE_VENV[@]}"; do
        if [[ ! -f $ROOT/examples/${py%.py}.ipynb ]]; then
            log "FAIL: examples/${py%.py}.ipynb is missing (bash .ci/integrations.sh regen $py)"
            bad=1
        fi
    done
    # Same cells as the paired script, executed top to bottom, no error output.
    "$INT/bin/python" "$ROOT/.ci/check_notebooks.py" "$ROOT/examples" || bad=1
    ((bad == 0)) || return 1
}

# run_example PY: examples/PY --tiny in its venv (each tiny example uses one torch thread).
run_example() {
    local py=$1 t0=$SECONDS
    log "running examples/$py --tiny"
    (cd "$out" && "${EXAMPLE_VENV[$py]}/bin/python" "$ROOT/examples/$py" --tiny --output-dir "$out/${py%.py}")
    log "examples/$py --tiny finished in $((SECONDS - t0)) s"
}

step_examples() {
    step_build
    local py t0 out bg_status=0
    out=$(mktemp -d)
    # The one-thread examples run two at a time on the two cores: the slowest (MedCLIP, about
    # two minutes) in the background, its output kept in a file and printed when it ends; the
    # others in the foreground. A failure of either fails the step.
    set -m  # its own process group: one kill stops the example's python too
    run_example medclip_finetune.py >"$out/medclip.log" 2>&1 &
    local bg=$!
    set +m
    trap "kill -- -$bg 2>/dev/null || true" EXIT  # a failure in the foreground stops it too
    for py in clip_open_clip.py biomedclip.py hf_transformers.py lightning_finetune.py; do
        run_example "$py"
    done
    wait "$bg" || bg_status=$?
    trap - EXIT
    log "output of examples/medclip_finetune.py --tiny (ran in the background):"
    cat "$out/medclip.log"
    if ((bg_status != 0)); then
        log "FAIL: examples/medclip_finetune.py --tiny exited with $bg_status"
        return 1
    fi
    # Lightning's DDP strategy with 2 CPU processes (gloo); about a minute on 2 cores.
    t0=$SECONDS
    log "running examples/lightning_finetune.py --tiny --devices 2"
    (cd "$out" && "$INT/bin/python" "$ROOT/examples/lightning_finetune.py" --tiny --devices 2 \
        --output-dir "$out/lightning_finetune_ddp")
    log "examples/lightning_finetune.py --tiny --devices 2 finished in $((SECONDS - t0)) s"
    # the real-data example's torchrun mode: 2 CPU processes (gloo), DDP + the global-batch loss
    t0=$SECONDS
    log "running torchrun --nproc_per_node=2 examples/clip_open_clip.py --tiny --steps 40"
    (cd "$out" && OMP_NUM_THREADS=1 "$INT/bin/torchrun" --nproc_per_node=2 \
        "$ROOT/examples/clip_open_clip.py" --tiny --steps 40 --output-dir "$out/ddp")
    "$INT/bin/python" -c 'import json, sys; r = json.load(open(sys.argv[1])); assert r["world_size"] == 2, r' \
        "$out/ddp/result.json"
    log "torchrun examples/clip_open_clip.py --tiny finished in $((SECONDS - t0)) s"
    rm -rf "$out"
}

step_tests() {
    ensure_venv integrations "${INT_REQ[@]}"
    # tests/integrations, plus the core tests that skip without transformers (real HF tokenizer)
    (cd "$ROOT" && "$INT/bin/python" -m pytest -q -p no:cacheprovider tests/integrations \
        "tests/test_sampling.py::test_real_fast_hf_tokenizer")
}

# Not part of `all`: regenerate and execute the notebooks with the cached venvs (developers).
step_regen() {
    step_build
    PYTHON=$INT/bin/python MEDCLIP_PYTHON=$MC/bin/python bash "$ROOT/examples/make_notebooks.sh" "${@}"
}

step_docs() {
    ensure_venv docs "${DOCS_REQ[@]}"
    local site
    site=$(mktemp -d)
    (cd "$ROOT" && "$DOCS/bin/python" -m mkdocs build --strict --site-dir "$site/site")
    # the site must load nothing from another host (MathJax and fonts are bundled: offline docs)
    "$DOCS/bin/python" "$ROOT/.ci/check_site_offline.py" "$site/site"
    rm -rf "$site"
}

# The declared torch floor is what is tested: the core tests (loss, backends with the triton CPU
# interpreter, distributed, sentences, sampling, zero-shot, metrics, readers, package) in the floor
# venv. Not here: the demo application's tests and tests/integrations (open_clip, HF need newer torch).
step_floor() {
    local floor_torch declared
    floor_torch=$(grep -E '^torch==' "${FLOOR_REQ[0]}" | cut -d= -f3)
    declared=$(grep -oE '"torch>=[0-9.]+"' "$ROOT/pyproject.toml" | tr -d '"' | cut -d= -f2)
    # pyproject's floor and the tested version must agree (major.minor), checked before building
    if [[ -z $floor_torch || ${floor_torch%.*} != "$declared" ]]; then
        log "FAIL: pyproject.toml declares torch>=$declared but the floor venv tests torch $floor_torch"
        return 1
    fi
    ensure_venv floor "${FLOOR_REQ[@]}"
    "$FLOOR/bin/python" -c 'import torch, triton, numpy; print("floor venv: torch", torch.__version__, "triton", triton.__version__, "numpy", numpy.__version__)'
    (cd "$ROOT" && OMP_NUM_THREADS=1 "$FLOOR/bin/python" -m pytest -q -p no:cacheprovider tests \
        --ignore=tests/integrations --ignore-glob='tests/*demo*' --ignore-glob='tests/test_cli*' \
        --ignore-glob='tests/test_synthetic*')
}

T0=$SECONDS
case $STEP in
    build) step_build ;;
    notebooks) step_notebooks ;;
    examples) step_examples ;;
    tests) step_tests ;;
    docs) step_docs ;;
    floor) step_floor ;;
    regen) step_regen "${@:2}" ;;
    all)
        step_build
        step_notebooks
        step_examples
        step_tests
        step_docs
        step_floor
        ;;
    *)
        echo "usage: $0 [all|build|notebooks|examples|tests|docs|floor|regen]" >&2
        exit 2
        ;;
esac
log "step '$STEP' done in $((SECONDS - T0)) s"
}

main "$@"
