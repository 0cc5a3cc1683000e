"""bnlib.outcomes: the one rule for a run that collapsed to chance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bnlib.outcomes import chance_loss, collapsed


def test_a_network_that_predicts_every_class_alike_has_the_chance_loss():
    logits = torch.zeros(64, 10, dtype=torch.float64)
    labels = torch.arange(64) % 10
    loss = torch.nn.functional.cross_entropy(logits, labels).item()
    assert loss == pytest.approx(chance_loss(10)) == pytest.approx(math.log(10))
    assert collapsed(loss=loss) and not collapsed(loss=0.4)


def test_collapse_is_judged_per_run_and_divergence_is_not_collapse():
    got = collapsed(loss=np.array([0.37, 2.27, 2.35, np.inf, np.nan]))
    assert got.tolist() == [False, True, True, False, False]
    assert collapsed(accuracy=np.array([0.1, 0.12655, 0.417])).tolist() == [True, False, False]
    assert collapsed(accuracy=0.11)


def test_collapsed_needs_exactly_one_measure():
    with pytest.raises(ValueError, match="not both"):
        collapsed()
    with pytest.raises(ValueError, match="not both"):
        collapsed(loss=2.3, accuracy=0.1)
    with pytest.raises(ValueError, match="at least 2"):
        chance_loss(1)
