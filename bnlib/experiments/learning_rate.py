"""Learning-rate sweeps with and without BN, all models of a sweep trained at once.

This is the experiment behind Bjorck et al.'s central figure (accuracy against learning
rate, with and without BN, one learning-rate drop at half of training) and the benchmark
workload of ``python -m bnlib bench``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from bnlib import datasets, probes
from bnlib.arguments import whole_number
from bnlib.data import Split
from bnlib.device import pick_device
from bnlib.engine import Member, StackedRun
from bnlib.experiments import Reproduction, register
from bnlib.setups import DEEP_MLP

__all__ = ["final_rows", "lr_grid", "lr_sweep"]


def lr_grid(low: float, high: float, count: int) -> list[float]:
    """``count`` learning rates evenly spaced on a log scale from ``low`` to ``high``."""
    if not 0 < low < high:
        raise ValueError(f"need 0 < low < high, got low={low}, high={high}")
    return [float(v) for v in np.geomspace(low, high, count)]


#: Bjorck et al.'s schedule as far as it is known: SGD with momentum and weight decay
#: (the ResNet recipe's 0.9 and 1e-4), learning rate divided by 10 at half of training.
_PAPER_SCHEDULE = {"momentum": 0.9, "weight_decay": 1e-4, "lr_drop_at": 0.5, "lr_drop": 0.1}

#: The quick profile of :func:`lr_sweep` (the smoke profile is the same sweep, shortened).
_QUICK_SWEEP = {
    "architecture": "mlp",
    "config": DEEP_MLP,
    "init": "he",
    "gain": math.sqrt(2.0),
    "dataset": "fashion-mnist",
    "lr_range": [1e-4, 1.0],
    "lr_count": 9,
    "seeds": [0],
    "steps": 1200,
    "batch_size": 128,
    "curve_points": 12,
    **_PAPER_SCHEDULE,
}


@register(
    "lr_sweep",
    chapter="Large learning rates",
    shard_on=("norms",),
    smoke={**_QUICK_SWEEP, "lr_count": 3, "seeds": [0], "steps": 10, "curve_points": 2},
    quick=_QUICK_SWEEP,
    full={
        **_QUICK_SWEEP,
        "lr_count": 10,
        "lr_range": [1e-4, 10**0.5],
        "seeds": [0, 1, 2],
        "steps": 9360,
    },
    reproduce=Reproduction(
        subset={"norms": ["torch"]},
        prefix=None,
        why=(
            "its learning-rate drop and its logged steps are fractions of the run's length, "
            "so a shorter run drops at another step and logs at other steps"
        ),
    ),
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
    init: str | None = None,
    gain: float = 1.0,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    lr_drop_at: float | None = None,
    lr_drop: float = 0.1,
    curve_points: int = 1,
    train_examples: int = 10_000,
    device: str | None = None,
) -> pd.DataFrame:
    """Test and training accuracy against the learning rate, with and without BN.

    ``dataset`` is any name :func:`bnlib.datasets.load` takes (CIFAR-10 where a reader has
    it); the network's input size follows the images (:func:`bnlib.datasets.input_config`,
    which ``config`` can override).

    For each normalization, one stacked run trains ``lr_count x len(seeds)`` models
    (initialized by ``init`` with ``gain``, :func:`bnlib.models.initialize`; ``None``
    keeps the architecture's default; SGD with ``momentum`` and ``weight_decay``), each
    with its own learning rate (``lr_count`` values log-spaced over ``lr_range``) and
    seed, for ``steps`` steps of ``batch_size``.
    With ``lr_drop_at`` (a fraction of ``steps``), every learning rate is multiplied by
    ``lr_drop`` after that many steps (Bjorck et al.: divided by 10 at half of training).
    A model whose minibatch loss becomes non-finite or exceeds 1e3 times its first loss
    is frozen there and reported as diverged.

    Accuracies are measured in eval mode (BN with its running statistics), on the whole
    test split and on a fixed random subset of ``train_examples`` training examples,
    after ``curve_points`` evenly spaced steps (the last one is ``steps``); measuring
    never changes the models.

    Returns:
        One row per model and measured step: ``norm, lr, seed, step, test_accuracy,
        train_accuracy, loss`` (the minibatch loss of that step), ``diverged`` (at or
        before that step) and ``diverged_at`` (the step, or -1). :func:`final_rows`
        keeps the rows of the last step.

    Raises:
        TypeError, ValueError: ``steps``, ``batch_size``, ``curve_points`` or
            ``train_examples`` is not a whole number >= 1, or ``lr_drop_at`` is not in
            (0, 1) (checked before any data is loaded).
    """
    whole_number(steps, "steps", 1)
    whole_number(batch_size, "batch_size", 1)
    whole_number(curve_points, "curve_points", 1)
    whole_number(train_examples, "train_examples", 1)
    if lr_drop_at is not None and not 0 < lr_drop_at < 1:
        raise ValueError(
            f"lr_drop_at is the fraction of training after which the learning rate drops; "
            f"it must be in (0, 1), got {lr_drop_at}"
        )
    if not lr_drop > 0:
        raise ValueError(f"lr_drop multiplies the learning rates; it must be > 0, got {lr_drop}")
    dev = pick_device(device)
    train = datasets.load(dataset, "train", dev)
    test = datasets.load(dataset, "test", dev)
    subset = torch.randperm(len(train.y), generator=torch.Generator().manual_seed(0))
    subset = subset[: min(train_examples, len(train.y))].to(dev)
    train_probe = Split(train.x[subset], train.y[subset])
    lrs = lr_grid(*lr_range, lr_count)
    members = [
        Member(lr=lr, seed=seed, init=init, gain=gain, momentum=momentum, weight_decay=weight_decay)
        for seed in seeds
        for lr in lrs
    ]
    log_at = sorted({int(round(v)) for v in np.linspace(0, steps, curve_points + 1)[1:]})
    drop_step = None if lr_drop_at is None else int(round(lr_drop_at * steps))
    frames = []
    for norm in norms:
        run = StackedRun(
            architecture,
            {**datasets.input_config(architecture, train.x), **(config or {}), "norm": norm},
            members,
            train,
            batch_size=batch_size,
            device=dev,
        )
        measure = [
            probes.test_accuracy(test),
            probes.test_accuracy(train_probe, metric="train accuracy"),
        ]
        desc = f"{architecture} norm={norm}"
        phases = [steps] if drop_step in (None, 0, steps) else [drop_step, steps - drop_step]
        logs = []
        for i, length in enumerate(phases):
            if i:
                _scale_learning_rates(run, lr_drop)
            logs.append(run.train(length, log_at=log_at, probes=measure, desc=desc))
        log = pd.concat(logs, ignore_index=True)
        wide = log.pivot_table(
            index=["member", "lr", "seed", "step"], columns="metric", values="value"
        ).reset_index()
        wide["diverged_at"] = run.diverged_at.cpu().numpy()[wide["member"]]
        wide["diverged"] = (wide["diverged_at"] >= 0) & (wide["diverged_at"] <= wide["step"])
        wide["norm"] = norm
        frames.append(
            wide.rename(
                columns={"test accuracy": "test_accuracy", "train accuracy": "train_accuracy"}
            )
        )
    columns = ["norm", "lr", "seed", "step", "test_accuracy", "train_accuracy", "loss"]
    frame = pd.concat(frames, ignore_index=True)[[*columns, "diverged", "diverged_at"]]
    return frame.sort_values(["norm", "seed", "lr", "step"], ignore_index=True)


def _scale_learning_rates(run: StackedRun, factor: float) -> None:
    """Multiply every member's learning rate by ``factor`` (a step of the schedule).

    The stacked optimizers keep the learning rates as one ``(K,)`` tensor each; a loop of
    single models has one optimizer per member.
    """
    for optimizer in getattr(run.optimizer, "optimizers", [run.optimizer]):
        optimizer.lr.mul_(factor)


def final_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of :func:`lr_sweep`'s result measured at the last step: one per model."""
    return frame[frame["step"] == frame["step"].max()].reset_index(drop=True)
