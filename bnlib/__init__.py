"""bnlib: the library behind the executable textbook on Batch Normalization.

Every figure in the book is produced by a function of this package, from data that an
experiment of this package computed. The modules, one job each:

- :mod:`bnlib.data`        datasets as whole on-device tensors (MNIST, Fashion-MNIST)
- :mod:`bnlib.device`      device choice, seeding, deterministic mode
- :mod:`bnlib.norm`        batch normalization written from scratch (Algorithms 1 and 2)
- :mod:`bnlib.models`      the networks the chapters train
- :mod:`bnlib.engine`      training loops over on-device tensors
- :mod:`bnlib.provenance`  version, source hash and run metadata shown beside results
- :mod:`bnlib.results`     the results store: parquet + JSON, keyed by config and code
- :mod:`bnlib.validation`  whether the current code still reproduces a committed result
- :mod:`bnlib.experiments` one function per figure; each returns a tidy DataFrame
- :mod:`bnlib.figures`     one function per figure; each takes that DataFrame, never trains
- :mod:`bnlib.claims`      the chapters' quantitative sentences, computed and checked
- :mod:`bnlib.notebook`    the first call of every chapter (seeds, style, provenance)
"""

from bnlib.notebook import setup_notebook
from bnlib.provenance import __version__, provenance, source_hash

__all__ = ["__version__", "provenance", "setup_notebook", "source_hash"]
