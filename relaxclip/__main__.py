"""``python -m relaxclip`` runs the command line (see :mod:`relaxclip.demo.cli`)."""

from relaxclip.demo.cli import main

raise SystemExit(main())
