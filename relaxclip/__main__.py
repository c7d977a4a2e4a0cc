"""``python -m relaxclip`` runs the command line (see :mod:`relaxclip.cli`)."""

from relaxclip.cli import main

raise SystemExit(main())
