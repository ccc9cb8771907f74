"""``python -m structlab`` is the ``structlab`` command."""

from structlab.cli import main

raise SystemExit(main())
