"""Benchmark script: the same as ``python -m bnlib bench`` (arguments are passed on).

python benchmarks/run.py --output BENCHMARKS.md
"""

import sys

from bnlib.cli import main

raise SystemExit(main(["bench", *sys.argv[1:]]))
