"""The demo application: ``relaxclip demo``, an offline end-to-end run of the paper's experiment.

Not part of the library core: :mod:`relaxclip` (loss, backends, distributed, sentences,
sampling, zero-shot, metrics, dataset readers) never imports this package, and nothing here is
re-exported at the top level.  Reach it through the ``relaxclip demo`` command,
``python -m relaxclip demo``, ``python -m relaxclip.demo`` or its own module path:

* :mod:`relaxclip.demo.runner` -- :class:`DemoConfig` and :func:`run_demo`;
* :mod:`relaxclip.demo.models` -- :class:`TinyCLIP` and :class:`WordTokenizer`;
* :mod:`relaxclip.demo.synthetic` -- the embedded synthetic benchmark;
* :mod:`relaxclip.demo.cli` -- the command line.
"""

from relaxclip.demo.arms import ARMS, Arm
from relaxclip.demo.config import DemoConfig
from relaxclip.demo.report import format_table
from relaxclip.demo.runner import run_demo

__all__ = ["ARMS", "Arm", "DemoConfig", "format_table", "run_demo"]
