"""Explorers: controls (ipywidgets) that re-run a small experiment with the reader's
settings and redraw its figure, in Jupyter, Binder or Colab.

An explorer needs a running kernel. In the built HTML book there is none, so there an
explorer shows the figure its default settings produce, and says how to launch the
chapter to change them (Binder, Colab, or a local Jupyter), instead of a slider that looks
alive but does nothing. A run shows its progress, and the explorer's Stop button ends it
within about a training step (so does interrupting the kernel, for the first run, which
runs in the cell); either way the explorer is left ready for another run.

One module per chapter (:mod:`bnlib.widgets.algorithm`, ...), built on
:mod:`bnlib.widgets.base`; every explorer is importable from here.
"""

from bnlib.widgets.algorithm import running_statistics_explorer
from bnlib.widgets.base import LEARNING_RATES, Explorer, Slicer, launch_links
from bnlib.widgets.covariate_shift import covariate_shift_explorer
from bnlib.widgets.factors import factor_explorer, small_batch_explorer
from bnlib.widgets.initialization import initialization_explorer
from bnlib.widgets.landscape import landscape_explorer
from bnlib.widgets.large_steps import STEP_SIZES, large_steps_explorer, lr_sweep_slicer

__all__ = [
    "LEARNING_RATES",
    "STEP_SIZES",
    "Explorer",
    "Slicer",
    "covariate_shift_explorer",
    "factor_explorer",
    "initialization_explorer",
    "landscape_explorer",
    "large_steps_explorer",
    "launch_links",
    "lr_sweep_slicer",
    "running_statistics_explorer",
    "small_batch_explorer",
]
