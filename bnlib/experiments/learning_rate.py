"""Learning-rate sweeps with and without BN, all models of a sweep trained at once.

This is the experiment behind Bjorck et al.'s central figure (accuracy against learning
rate, with and without BN) and the benchmark workload of ``python -m bnlib bench``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from bnlib import data as datasets
from bnlib import probes
from bnlib.device import pick_device
from bnlib.engine import Member, StackedRun
from bnlib.experiments import register

__all__ = ["lr_grid", "lr_sweep"]


def lr_grid(low: float, high: float, count: int) -> list[float]:
    """``count`` learning rates evenly spaced on a log scale from ``low`` to ``high``."""
    if not 0 < low < high:
        raise ValueError(f"need 0 < low < high, got low={low}, high={high}")
    return [float(v) for v in np.geomspace(low, high, count)]


#: The quick profile of :func:`lr_sweep` (the smoke profile is the same sweep, shortened).
_QUICK_SWEEP = {
    "architecture": "mlp",
    "config": {"activation": "relu"},
    "dataset": "mnist",
    "lr_range": [1e-3, 30.0],
    "lr_count": 16,
    "seeds": [0],
    "steps": 1000,
    "batch_size": 60,
    "norms": ["none", "torch"],
}


@register(
    "lr_sweep",
    chapter="Large learning rates",
    smoke={**_QUICK_SWEEP, "lr_range": [1e-2, 10.0], "lr_count": 3, "steps": 10},
    quick=_QUICK_SWEEP,
    full={
        "architecture": "resnet",
        "config": {"depth": 20},
        "dataset": "fashion-mnist",
        "lr_range": [1e-3, 30.0],
        "lr_count": 16,
        "seeds": [0, 1, 2],
        "steps": 9400,
        "batch_size": 128,
        "norms": ["none", "torch"],
    },
)
def lr_sweep(
    architecture: str = "mlp",
    config: dict | None = None,
    dataset: str = "mnist",
    lr_range: Sequence[float] = (1e-3, 30.0),
    lr_count: int = 16,
    seeds: Sequence[int] = (0,),
    steps: int = 1000,
    batch_size: int = 60,
    norms: Sequence[str] = ("none", "torch"),
    momentum: float = 0.0,
    device: str | None = None,
) -> pd.DataFrame:
    """Test accuracy and final loss against the learning rate, with and without BN.

    For each normalization, one stacked run trains ``lr_count x len(seeds)`` models (plain
    SGD unless ``momentum``), each with its own learning rate and seed, for ``steps``
    steps of ``batch_size``. Diverging models are frozen and reported as diverged.

    Returns:
        One row per model: ``norm, lr, seed, test_accuracy, final_loss, diverged,
        diverged_at`` (step, or -1).

    Raises:
        TypeError, ValueError: ``steps`` or ``batch_size`` is not a whole number >= 1
            (checked before any data is loaded).
    """
    from bnlib.engine import _whole_number

    _whole_number(steps, "steps", 1)
    _whole_number(batch_size, "batch_size", 1)
    dev = pick_device(device)
    train = datasets.load(dataset, "train", dev)
    test = datasets.load(dataset, "test", dev)
    lrs = lr_grid(*lr_range, lr_count)
    members = [Member(lr=lr, seed=seed, momentum=momentum) for seed in seeds for lr in lrs]
    frames = []
    for norm in norms:
        run = StackedRun(
            architecture,
            {**(config or {}), "norm": norm},
            members,
            train,
            batch_size=batch_size,
            device=dev,
        )
        log = run.train(
            steps,
            log_at=[steps],
            probes=[probes.test_accuracy(test)],
            desc=f"{architecture} norm={norm}",
        )
        wide = log.pivot_table(
            index=["member", "lr", "seed"], columns="metric", values="value"
        ).reset_index()
        wide["diverged_at"] = run.diverged_at.cpu().numpy()[wide["member"]]
        wide["diverged"] = wide["diverged_at"] >= 0
        wide["norm"] = norm
        frames.append(wide.rename(columns={"test accuracy": "test_accuracy", "loss": "final_loss"}))
    columns = ["norm", "lr", "seed", "test_accuracy", "final_loss", "diverged", "diverged_at"]
    return pd.concat(frames, ignore_index=True)[columns]
