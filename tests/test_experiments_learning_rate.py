"""bnlib.experiments.learning_rate at a small scale."""

from __future__ import annotations

import pytest

from bnlib.experiments.learning_rate import final_rows, lr_grid, lr_sweep


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
    assert {"lr", "seed", "test_accuracy", "train_accuracy", "diverged", "diverged_at"} <= set(df)
    assert (df["step"] == 40).all()
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


def test_lr_sweep_curves_and_drop():
    """Measured at evenly spaced steps; the drop at half of training slows the updates:
    with lr_drop=1e-6 the second half barely moves the model, so the accuracy at the
    end equals the accuracy at half of training, and without the drop it does not.
    (No BN: its running statistics would go on moving without any update.)"""
    common = dict(
        lr_range=(0.05, 0.1),
        lr_count=2,
        steps=40,
        batch_size=50,
        config={"hidden": (32,), "activation": "relu"},
        norms=("none",),
        curve_points=2,
        train_examples=500,
        device="cpu",
    )
    dropped = lr_sweep(**common, lr_drop_at=0.5, lr_drop=1e-6)
    assert sorted(set(dropped["step"])) == [20, 40]
    half, end = (dropped[dropped["step"] == s].set_index("lr") for s in (20, 40))
    assert (end["test_accuracy"] - half["test_accuracy"]).abs().max() < 2e-3
    kept = lr_sweep(**common)
    half, end = (kept[kept["step"] == s].set_index("lr") for s in (20, 40))
    assert (end["test_accuracy"] - half["test_accuracy"]).abs().max() > 5e-3
    assert len(final_rows(kept)) == 2 and (final_rows(kept)["step"] == 40).all()


@pytest.mark.parametrize("at", [0.0, 1.0, -0.5, 2.0])
def test_lr_sweep_rejects_a_drop_outside_training(at):
    with pytest.raises(ValueError, match="lr_drop_at .* must be in \\(0, 1\\)"):
        lr_sweep(steps=5, lr_count=2, lr_drop_at=at, device="cpu")
