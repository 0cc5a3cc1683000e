"""Part 2 of "What else changes BN's effect": when BN's batches are small, and what
replaces it (:mod:`bnlib.norm_variants`).

- :func:`small_batches`: BN, LayerNorm, GroupNorm and no normalization for batch sizes
  2 to 128;
- :func:`batch_renorm`: batch renormalization against BN at batch size 4;
- :func:`ghost_batch_norm`: BN over small virtual batches inside a large batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from bnlib import data as datasets
from bnlib import probes
from bnlib.arguments import whole_number
from bnlib.device import pick_device
from bnlib.engine import StackedRun
from bnlib.experiments import MEASURES_AT_END, MEASURES_AT_FRACTIONS, Reproduction, register
from bnlib.experiments.factors.common import (
    CHAPTER,
    NORMS,
    holdout,
    measure_at,
    members_of,
    norm_config,
    normalize,
    set_activation,
    subset_split,
    tidy,
    train_measured,
)
from bnlib.setups import NTU_MLP, SMALL_CNN

__all__ = ["batch_renorm", "ghost_batch_norm", "small_batches"]


_SMALL_QUICK = {
    "examples": 6000,
    "seeds": [0],
    "base_lrs": [0.05],
    "batch_sizes": [2, 4, 16, 32, 128],
}


@register(
    "small_batches",
    chapter=CHAPTER,
    shard_on=("batch_sizes", "norms"),
    smoke={
        **_SMALL_QUICK,
        "batch_sizes": [2, 32],
        "examples": 64,
        "validation": 500,
        "test_examples": 500,
    },
    quick=_SMALL_QUICK,
    full={
        **_SMALL_QUICK,
        "examples": 12_000,
        # five rates over a factor of 16: with two, every best rate was one of them
        "base_lrs": [0.0125, 0.025, 0.05, 0.1, 0.2],
        "batch_sizes": [2, 4, 8, 16, 32, 64, 128],
    },
    reproduce=Reproduction(
        subset={"batch_sizes": [128], "norms": ["bn", "none"]},
        prefix=None,
        why=MEASURES_AT_END,
    ),
)
def small_batches(
    batch_sizes: Sequence[int] = (2, 4, 8, 16, 32, 64, 128),
    norms: Sequence[str] = NORMS,
    base_lrs: Sequence[float] = (0.05,),
    base_batch: int = 32,
    momentum: float = 0.9,
    groups: int = 4,
    examples: int = 12_000,
    seeds: Sequence[int] = (0,),
    validation: int = 5000,
    test_examples: int = 10_000,
    dataset: str = "fashion-mnist",
    device: str | None = None,
) -> pd.DataFrame:
    """BN, LayerNorm, GroupNorm and no normalization against the batch size.

    The small CNN (three convolutions, 16/32/64 channels) on Fashion-MNIST, SGD with
    ``momentum``, for ``examples / batch_size`` steps (every batch size sees the same
    number of examples), with the linear scaling rule: learning rate
    ``base_lr * batch_size / base_batch``. GroupNorm uses ``groups`` groups per layer;
    LayerNorm is one group (the form Wu & He compare with for CNNs). BN is
    evaluated with its running statistics (momentum 0.1).

    Returns:
        One row per model: ``norm, batch_size, base_lr, lr, seed, step`` (the last),
        ``validation_accuracy``, ``test_accuracy``, ``loss``, ``diverged``, ``diverged_at``.
    """
    whole_number(examples, "examples", 1)
    dev = pick_device(device)
    train, held = holdout(datasets.load(dataset, "train", dev), validation)
    measure = {
        "validation": held,
        "test": subset_split(datasets.load(dataset, "test", dev), test_examples),
    }
    frames = []
    for batch_size in batch_sizes:
        steps = max(1, examples // batch_size)
        lrs = [base * batch_size / base_batch for base in base_lrs]
        for norm in norms:
            frame = train_measured(
                "vgg",
                SMALL_CNN,
                members_of(lrs, seeds, momentum=momentum),
                train,
                measure,
                batch_size=batch_size,
                steps=steps,
                points=1,
                norm=norm,
                device=dev,
                desc=f"batch {batch_size} {norm}",
                labels={"batch_size": batch_size},
                norm_options={"groups": groups} if norm == "group" else {},
            )
            frame["base_lr"] = frame["lr"] * base_batch / batch_size
            frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    columns = ["norm", "batch_size", "base_lr", "lr", "seed", "step"]
    metrics = ["validation_accuracy", "test_accuracy", "loss", "diverged", "diverged_at"]
    return frame[columns + metrics].sort_values(columns[:5], ignore_index=True)


@register(
    "batch_renorm",
    chapter=CHAPTER,
    smoke={"steps": 8, "lrs": [0.1], "measure_points": 2},
    quick={"steps": 3000, "seeds": [0, 1], "measure_points": 5},
    full={"steps": 12_000, "seeds": [0, 1]},
    reproduce=Reproduction(prefix=None, why=MEASURES_AT_FRACTIONS),
)
def batch_renorm(
    batch_size: int = 4,
    reference_batch_size: int = 64,
    activation: str = "sigmoid",
    lrs: Sequence[float] = (0.03, 0.1, 0.3),
    momentum: float = 0.01,
    seeds: Sequence[int] = (0,),
    steps: int = 4000,
    measure_points: int = 10,
    validation: int = 5000,
    dataset: str = "mnist",
    device: str | None = None,
) -> pd.DataFrame:
    """Batch renormalization against BN at batch size 4 (the NTU project's comparison).

    The NTU network on MNIST, trained at ``batch_size`` with BN, batch renormalization
    (:class:`bnlib.norm_variants.BatchRenorm`) and no normalization, and with BN at
    ``reference_batch_size``, over the learning rates ``lrs`` (plain SGD), for ``steps``
    steps. Both normalizations' running averages use ``momentum`` (0.01, so that batches
    of 4 give usable population statistics). Renormalization's limits follow the NTU
    project's schedule scaled to ``steps``: BN for the first tenth, r_max 1 -> 3 by 80%,
    d_max 0 -> 5 by half of training. Each model is measured in eval mode, and on the
    test split in train mode with batches of ``batch_size`` (what training computed).

    Returns:
        One row per model and measured step: ``norm`` (``bn``, ``renorm``, ``none``),
        ``batch_size, lr, seed, step, validation_accuracy, test_accuracy``,
        ``test_accuracy_batch_statistics``, ``loss``, ``diverged``, ``diverged_at``.
    """
    whole_number(steps, "steps", 1)
    dev = pick_device(device)
    train, held = holdout(datasets.load(dataset, "train", dev), validation)
    test = datasets.load(dataset, "test", dev)
    schedule = {
        "momentum": momentum,
        "relax_from": steps // 10,
        "r_max_at": max(steps // 10 + 1, int(0.8 * steps)),
        "d_max_at": max(steps // 10 + 1, steps // 2),
    }
    frames = []
    runs = [(n, batch_size) for n in ("bn", "renorm", "none")] + [("bn", reference_batch_size)]
    for norm, size in runs:
        run = StackedRun(
            "mlp",
            {**NTU_MLP, "norm": norm_config(norm)},
            members_of(lrs, seeds),
            train,
            batch_size=size,
            device=dev,
        )
        if norm == "bn":
            for layer in run.model.norms:
                layer.momentum = momentum
        normalize(run, norm, **(schedule if norm == "renorm" else {}))
        set_activation(run.model, activation)
        measure = [
            probes.test_accuracy(held, metric="validation accuracy"),
            probes.test_accuracy(test, metric="test accuracy"),
            probes.test_accuracy(
                test, size, statistics="batch", metric="test accuracy batch statistics"
            ),
        ]
        log = run.train(
            steps,
            log_at=measure_at(steps, measure_points),
            probes=measure,
            desc=f"{norm} batch {size}",
        )
        frames.append(tidy(run, log, norm=norm, batch_size=size))
    frame = pd.concat(frames, ignore_index=True)
    columns = ["norm", "batch_size", "lr", "seed", "step"]
    metrics = ["validation_accuracy", "test_accuracy", "test_accuracy_batch_statistics"]
    return frame[columns + metrics + ["loss", "diverged", "diverged_at"]].sort_values(
        columns, ignore_index=True
    )


@register(
    "ghost_batch_norm",
    chapter=CHAPTER,
    shard_on=("ghost_sizes",),
    smoke={
        "steps": 3,
        "batch_size": 32,
        "ghost_sizes": [32, 8],
        "measure_points": 1,
        "validation": 500,
        "test_examples": 500,
        "train_examples": 500,
    },
    quick={"steps": 100, "seeds": [0], "measure_points": 2},
    full={"steps": 300, "seeds": [0, 1]},
    reproduce=Reproduction(subset={"ghost_sizes": [16]}, prefix=None, why=MEASURES_AT_FRACTIONS),
)
def ghost_batch_norm(
    batch_size: int = 256,
    ghost_sizes: Sequence[int] = (256, 64, 16, 4),
    lr: float = 0.4,
    momentum: float = 0.9,
    seeds: Sequence[int] = (0,),
    steps: int = 150,
    measure_points: int = 3,
    train_examples: int = 5000,
    validation: int = 5000,
    test_examples: int = 10_000,
    dataset: str = "fashion-mnist",
    device: str | None = None,
) -> pd.DataFrame:
    """Ghost BN: a large batch normalized as smaller virtual batches (Hoffer et al. 2017).

    The small CNN on Fashion-MNIST at batch ``batch_size``, SGD with ``momentum`` at
    learning rate ``lr``, for ``steps`` steps, with BN computed over ghost batches of each
    size in ``ghost_sizes`` (``batch_size`` itself is plain BN). Same number of updates
    for every ghost size. Training accuracy on a fixed subset of ``train_examples``.

    Returns:
        One row per model and measured step: ``ghost_size, lr, seed, step,
        validation_accuracy, test_accuracy, train_accuracy, loss, diverged, diverged_at``.
    """
    whole_number(steps, "steps", 1)
    dev = pick_device(device)
    train, held = holdout(datasets.load(dataset, "train", dev), validation)
    measure = {
        "validation": held,
        "test": subset_split(datasets.load(dataset, "test", dev), test_examples),
        "train": subset_split(train, train_examples),
    }
    frames = []
    for ghost in ghost_sizes:
        frames.append(
            train_measured(
                "vgg",
                SMALL_CNN,
                members_of([lr], seeds, momentum=momentum),
                train,
                measure,
                batch_size=batch_size,
                steps=steps,
                points=measure_points,
                norm="bn" if ghost >= batch_size else "ghost",
                device=dev,
                desc=f"ghost batches of {ghost}",
                labels={"ghost_size": ghost},
                norm_options={} if ghost >= batch_size else {"ghost_size": ghost},
            )
        )
    frame = pd.concat(frames, ignore_index=True)
    columns = ["ghost_size", "lr", "seed", "step"]
    metrics = ["validation_accuracy", "test_accuracy", "train_accuracy", "loss"]
    return frame[columns + metrics + ["diverged", "diverged_at"]].sort_values(
        columns, ignore_index=True
    )
