"""``python -m relaxclip.demo [options]`` is ``relaxclip demo [options]``."""

import sys

from relaxclip.demo.cli import main

raise SystemExit(main(["demo", *sys.argv[1:]]))
