"""``python -m relaxclip.integrations.open_clip_train``: see the package docstring."""

from relaxclip.integrations.open_clip_train.entry import cli

raise SystemExit(cli())
