"""``python -m bnlib``: see :mod:`bnlib.cli`."""

from bnlib.cli import main

raise SystemExit(main())
