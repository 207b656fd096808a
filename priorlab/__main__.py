"""``python -m priorlab`` = the ``priorlab`` command."""

from priorlab.cli import main

raise SystemExit(main())
