"""``python -m mmagents.cli``: the console script without an installed entry point."""

from mmagents.cli import main

raise SystemExit(main())
