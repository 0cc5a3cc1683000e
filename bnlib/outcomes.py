r"""How a training run ended: the book's one definition of *diverged* and of *collapsed*.

A run **diverges** when its loss stops being finite or grows more than
:data:`DIVERGENCE_RATIO` times (Bjorck et al.'s threshold, as both summaries of the paper
report it); :class:`bnlib.engine.StackedRun` and :mod:`bnlib.step` record it so. (The
single-model loop :func:`bnlib.engine.train`, which the residual sweeps use, still stops
only at a loss that is not finite: a second meaning that goes when those sweeps move to
the one trainer.)

A run **collapses** when it does not diverge but ends no better than guessing: a network
that gives every class the same probability has the cross-entropy
:math:`\ln K` for :math:`K` classes (2.30 for ten) and the accuracy :math:`1/K`. Such a
run has failed although its loss is finite, and a claim that "no network fails" must count
it. :func:`collapsed` is the rule, from the loss or from the accuracy, whichever a result
records.
"""

from __future__ import annotations

import math

import numpy as np

from bnlib.step import DIVERGENCE_RATIO

__all__ = ["CHANCE_SHARE", "DIVERGENCE_RATIO", "chance_loss", "collapsed"]

#: A run has collapsed when its final loss is at least this share of the chance loss
#: :math:`\ln K`, or its accuracy at most ``1 / CHANCE_SHARE`` times chance (1/K).
CHANCE_SHARE = 0.9


def chance_loss(classes: int = 10) -> float:
    """The cross-entropy of predicting every one of ``classes`` classes alike, :math:`\\ln K`."""
    if not isinstance(classes, int) or classes < 2:
        raise ValueError(f"classes must be an integer of at least 2, got {classes!r}")
    return math.log(classes)


def collapsed(
    *, loss: object = None, accuracy: object = None, classes: int = 10
) -> np.ndarray | bool:
    """Whether runs that did not diverge ended at chance level.

    Give one of:
        loss: the final training loss (mean cross-entropy, nats), a number or an array;
            collapsed when finite and at least :data:`CHANCE_SHARE` times
            :func:`chance_loss`.
        accuracy: the final accuracy (a fraction); collapsed when at most
            ``1 / CHANCE_SHARE`` times chance, :math:`1/K` (0.111 for ten classes).
        classes: :math:`K`.

    Returns:
        A bool, or a boolean array of the input's shape. A loss that is not finite is a
        divergence, not a collapse: it gives ``False``.

    Raises:
        ValueError: neither or both of ``loss`` and ``accuracy`` given.
    """
    if (loss is None) == (accuracy is None):
        raise ValueError("collapsed(): give the final loss or the final accuracy, not both")
    if loss is not None:
        values = np.asarray(loss, dtype=float)
        result = np.isfinite(values) & (values >= CHANCE_SHARE * chance_loss(classes))
    else:
        values = np.asarray(accuracy, dtype=float)
        result = values <= (1 / classes) / CHANCE_SHARE
    return bool(result) if result.ndim == 0 else result
