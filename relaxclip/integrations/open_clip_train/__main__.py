"""``python -m relaxclip.integrations.open_clip_train``: see the package docstring."""

from relaxclip.integrations.open_clip_train.entry import cli

if __name__ == "__main__":
    raise SystemExit(cli())
