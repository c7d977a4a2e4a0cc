#!/usr/bin/env bash
# Regenerate examples/*.ipynb from the paired scripts (jupytext percent format) and execute them
# in tiny mode so the saved outputs are real. Run in the integrations venv (see
# .ci/integrations.sh), or in the medclip venv for medclip.py:
#   bash examples/make_notebooks.sh [script.py ...]      (default: all paired scripts)
# Set PYTHON to pick the interpreter (default: python). CI checks that the notebooks and scripts
# are in sync; it does not re-execute the notebooks.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
PYTHON=${PYTHON:-python}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONHASHSEED=0
scripts=("$@")
if ((${#scripts[@]} == 0)); then
    scripts=(clip_open_clip.py biomedclip.py hf_transformers.py medclip.py)
fi
for py in "${scripts[@]}"; do
    echo "== $py"
    "$PYTHON" -m jupytext --to ipynb --execute "$py"
done
"$PYTHON" ../.ci/check_notebooks.py .
