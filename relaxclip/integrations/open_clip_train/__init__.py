"""open_clip's own trainer with the relaxed loss and random sentence sampling.

``python -m relaxclip.integrations.open_clip_train [open_clip options] [relaxclip options]``
(``--help`` lists both; docs/integrations.md explains them). Modules: :mod:`.args` (options),
:mod:`.data` (CSV checks, report dataset, collate), :mod:`.loss` (the loss, its logged
statistics, θ calibration), :mod:`.entry` (checks, hooks).
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
