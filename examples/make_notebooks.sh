#!/usr/bin/env bash
# Regenerate examples/*.ipynb from the paired scripts (jupytext percent format) and execute them
# in tiny mode, so the saved outputs are real. Each notebook runs in its own environment:
#   PYTHON          interpreter of the integrations venv (open_clip, timm, transformers 5, jupytext)
#   MEDCLIP_PYTHON  interpreter of the MedCLIP venv (medclip 0.0.3, transformers 4.24, jupytext)
# `bash .ci/integrations.sh regen` sets both to CI's cached venvs and runs this script.
#   bash examples/make_notebooks.sh [script.py ...]      (default: all paired scripts)
# CI checks that notebooks and scripts are in sync (.ci/check_notebooks.py); it does not
# re-execute the notebooks, it runs the scripts.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
PYTHON=${PYTHON:-python}
MEDCLIP_PYTHON=${MEDCLIP_PYTHON:-$PYTHON}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONHASHSEED=0
scripts=("$@")
if ((${#scripts[@]} == 0)); then
    scripts=(clip_open_clip.py biomedclip.py hf_transformers.py medclip_finetune.py lightning_finetune.py)
fi
for py in "${scripts[@]}"; do
    python=$PYTHON
    [[ $py == medclip* ]] && python=$MEDCLIP_PYTHON
    echo "== $py ($python)"
    "$python" -m jupytext --to ipynb --execute "$py"
done
"$PYTHON" ../.ci/check_notebooks.py .
