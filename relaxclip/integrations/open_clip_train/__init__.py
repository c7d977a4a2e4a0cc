"""open_clip's own trainer with the relaxed loss and random sentence sampling.

Usage (every ``open_clip_train.main`` argument is accepted unchanged; relaxclip adds its own,
listed by ``--help`` and explained in ``docs/integrations.md``)::

    python -m relaxclip.integrations.open_clip_train \\
        --relax-threshold 0.8 --sentence-sampling --report-sections findings,impression \\
        --dataset-type csv --train-data train.csv --csv-img-key filepath --csv-caption-key report \\
        --model ViT-B-32-quickgelu --pretrained openai --batch-size 64 --epochs 10 ...

    torchrun --nproc_per_node=8 -m -- relaxclip.integrations.open_clip_train ...   # DDP, GPUs

Modules: :mod:`.args` (relaxclip's options), :mod:`.data` (CSV checks, report dataset, collate),
:mod:`.loss` (the loss, its logged statistics, θ calibration), :mod:`.entry` (checks, hooks).
"""

from relaxclip.integrations.open_clip_train.args import (
    SUPPORTED_OPEN_CLIP,
    TESTED_OPEN_CLIP,
    OpenClipVersionError,
    OptionError,
)
from relaxclip.integrations.open_clip_train.entry import cli, main

__all__ = [
    "SUPPORTED_OPEN_CLIP",
    "TESTED_OPEN_CLIP",
    "OpenClipVersionError",
    "OptionError",
    "cli",
    "main",
]
