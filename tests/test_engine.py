"""bnlib.engine: on-device batching, training, divergence as a result."""

from __future__ import annotations

import pytest
import torch

from bnlib import data
from bnlib.engine import accuracy, batch_indices, log_steps, train
from bnlib.models import MLP


def test_batch_indices_cover_each_epoch_once():
    batches = list(
        batch_indices(
            10, 3, steps=6, generator=torch.Generator().manual_seed(0), device=torch.device("cpu")
        )
    )
    assert len(batches) == 6 and all(len(b) == 3 for b in batches)
    first_epoch = torch.cat(batches[:3])
    assert len(set(first_epoch.tolist())) == 9  # 10 // 3 batches, no repeats
    with pytest.raises(ValueError, match="batch_size"):
        next(batch_indices(5, 6, 1, torch.Generator(), torch.device("cpu")))


def test_log_steps_are_sorted_and_bounded():
    steps = log_steps(1000, 20)
    assert steps[0] == 0 and steps[-1] == 1000 and steps == sorted(set(steps))


def test_training_learns_mnist_and_is_reproducible():
    train_split = data.load("mnist", "train")
    test = data.load("mnist", "test")

    def run():
        torch.manual_seed(0)
        model = MLP(norm="bnlib")
        log = train(
            model,
            train_split,
            steps=200,
            batch_size=60,
            lr=0.5,
            seed=1,
            log_at=[0, 200],
            log=lambda s, m, loss: {"acc": accuracy(m.eval(), test)},
        )
        return model, log

    model_a, log_a = run()
    model_b, log_b = run()
    assert log_a.loc[log_a.step == 200, "acc"].item() > 0.85
    assert log_a.loc[log_a.step == 0, "acc"].item() < 0.3
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(pa, pb)
    assert log_a.equals(log_b)


def test_divergence_is_recorded_not_raised():
    train_split = data.load("mnist", "test")
    torch.manual_seed(0)
    model = MLP(activation="relu", hidden=(100,))
    log = train(
        model,
        train_split,
        steps=50,
        batch_size=60,
        lr=1e6,
        log_at=list(range(51)),
        log=lambda s, m, loss: {},
    )
    assert log["diverged"].any()
    assert log["diverged"].iloc[-1] and not log["diverged"].iloc[:-1].any()
    assert log["step"].iloc[-1] < 50


@pytest.mark.parametrize("lr", [0.0, -0.1])
def test_nonpositive_learning_rate_is_a_clear_error(lr):
    with pytest.raises(ValueError, match="learning rate must be > 0"):
        train(MLP(), data.load("mnist", "test"), steps=1, batch_size=10, lr=lr)
