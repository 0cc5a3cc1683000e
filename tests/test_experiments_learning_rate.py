"""bnlib.experiments.learning_rate at a small scale."""

from __future__ import annotations

import pytest

from bnlib.experiments.learning_rate import lr_grid, lr_sweep


def test_lr_grid():
    grid = lr_grid(0.01, 10, 4)
    assert grid[0] == pytest.approx(0.01) and grid[-1] == pytest.approx(10)
    assert grid[2] / grid[1] == pytest.approx(grid[1] / grid[0])
    with pytest.raises(ValueError, match="0 < low < high"):
        lr_grid(0, 1, 3)


def test_lr_sweep_rows_and_divergence():
    df = lr_sweep(
        lr_range=(0.01, 1e4),
        lr_count=3,
        steps=40,
        batch_size=50,
        config={"hidden": (32,), "activation": "relu"},
        device="cpu",
    )
    assert len(df) == 6 and set(df["norm"]) == {"none", "torch"}
    assert {"lr", "seed", "test_accuracy", "final_loss", "diverged", "diverged_at"} <= set(df)
    small = df[df["lr"] == df["lr"].min()]
    assert (small["test_accuracy"] > 0.5).all() and not small["diverged"].any()
    huge = df[(df["lr"] == df["lr"].max()) & (df["norm"] == "none")]
    assert huge["diverged"].all() and (huge["diverged_at"] > 0).all()


@pytest.mark.parametrize("steps", [0, -5])
def test_lr_sweep_needs_at_least_one_step(steps):
    with pytest.raises(ValueError, match=f"steps must be >= 1, got {steps}"):
        lr_sweep(steps=steps, lr_count=2, device="cpu")


def test_lr_sweep_needs_a_whole_batch_size():
    with pytest.raises(TypeError, match=r"batch_size must be a whole number.*2\.5"):
        lr_sweep(steps=5, batch_size=2.5, lr_count=2, device="cpu")
