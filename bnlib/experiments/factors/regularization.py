r"""Part 2 of "What else changes BN's effect": BN at test time and as more than a
normalization.

- :func:`inference_pitfalls`: the same trained networks evaluated the right way and
  the wrong ways, and the fixes;
- :func:`dropout`: BN with and without dropout;
- :func:`bn_only`: training only BN's :math:`\gamma, \beta` in a frozen random network.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from torch import nn

from bnlib import data as datasets
from bnlib.arguments import whole_number
from bnlib.data import Split
from bnlib.device import pick_device
from bnlib.engine import StackedRun, accuracy
from bnlib.experiments import MEASURES_AT_FRACTIONS, Reproduction, register
from bnlib.experiments.factors.common import (
    CHAPTER,
    holdout,
    members_of,
    set_activation,
    subset_split,
    train_measured,
)
from bnlib.models import MemberLoop, unstack_member
from bnlib.norm import is_batch_norm, population_statistics
from bnlib.norm_variants import (
    ExampleWeightedBatchNorm,
    swap_batch_norms,
)
from bnlib.setups import NTU_MLP, SMALL_CNN

__all__ = ["bn_only", "dropout", "inference_pitfalls"]


def _evaluations(model: nn.Module, test: Split, train: Split, batch_size: int) -> dict[str, float]:
    """One trained single BN model's test accuracy, evaluated in every way the chapter
    compares. The model is never changed (each fix works on a copy)."""
    import copy

    by_class = test.y.argsort(stable=True)
    sorted_test = Split(test.x[by_class], test.y[by_class])
    model.eval()
    found = {"running statistics (eval mode)": accuracy(model, test)}
    model.train()
    found["test-batch statistics, mixed batches"] = accuracy(model, test, batch_size)
    found["test-batch statistics, one class per batch"] = accuracy(model, sorted_test, batch_size)
    found["test-batch statistics, batch of 1"] = accuracy(model, test, 1)
    fixed = population_statistics(copy.deepcopy(model), train.x, batch_size=batch_size)
    fixed.eval()
    found["recomputed population statistics"] = accuracy(fixed, test)
    weighted = copy.deepcopy(model).eval()
    swap_batch_norms(weighted, lambda bn: ExampleWeightedBatchNorm(bn, batch_size))
    found["example included in the statistics"] = accuracy(weighted, test)
    model.train()
    return found


@register(
    "inference_pitfalls",
    chapter=CHAPTER,
    shard_on=("seeds",),  # not checkpoints: each would train the run again
    smoke={"checkpoints": [1, 3], "test_examples": 64, "statistics_examples": 256},
    quick={"checkpoints": [10, 30, 100, 300, 1000]},
    full={"checkpoints": [10, 30, 100, 300, 1000, 3000], "seeds": [0, 1, 2]},
    reproduce=Reproduction(subset={"checkpoints": [10, 300]}, prefix={"checkpoints": [10, 30]}),
)
def inference_pitfalls(
    checkpoints: Sequence[int] = (10, 30, 100, 300, 1000),
    batch_size: int = 128,
    lr: float = 0.05,
    momentum: float = 0.9,
    seeds: Sequence[int] = (0,),
    test_examples: int = 2000,
    statistics_examples: int = 5000,
    dataset: str = "fashion-mnist",
    device: str | None = None,
) -> pd.DataFrame:
    """Inference pitfalls of BN (Summers & Dinneen 2020) and their fixes.

    The small CNN with BN on Fashion-MNIST (SGD with ``momentum``, batch ``batch_size``),
    stopped at each step of ``checkpoints``; each copy is evaluated on ``test_examples``
    test images: in eval mode with its running statistics (momentum 0.1, so after few
    steps they still remember their start at mean 0, variance 1); in train mode with
    test batches of ``batch_size`` (mixed classes, then one class per batch) and with
    batches of one image; after recomputing population statistics on
    ``statistics_examples`` training images (:func:`bnlib.norm.population_statistics`);
    and with each example included in its own statistics
    (:class:`bnlib.norm_variants.ExampleWeightedBatchNorm`, batch ``batch_size``).

    Returns:
        One row per model, checkpoint and evaluation: ``seed, step, evaluation,
        test_accuracy``.
    """
    checkpoints = sorted({whole_number(c, "checkpoint", 1) for c in checkpoints})
    dev = pick_device(device)
    train = datasets.load(dataset, "train", dev)
    test = subset_split(datasets.load(dataset, "test", dev), test_examples)
    statistics = subset_split(train, statistics_examples)
    run = StackedRun(
        "vgg",
        {**SMALL_CNN, "norm": "torch"},
        members_of([lr], seeds, momentum=momentum),
        train,
        batch_size=batch_size,
        device=dev,
    )
    rows = []
    done = 0
    for checkpoint in checkpoints:
        run.train(checkpoint - done, desc=f"to step {checkpoint}")
        done = checkpoint
        for k, member in enumerate(run.members):
            model = unstack_member(run.model, k)
            for evaluation, value in _evaluations(model, test, statistics, batch_size).items():
                rows.append(
                    {
                        "seed": member.seed,
                        "step": checkpoint,
                        "evaluation": evaluation,
                        "test_accuracy": value,
                    }
                )
    return pd.DataFrame(rows)


@register(
    "dropout",
    chapter=CHAPTER,
    shard_on=("rates",),
    smoke={"steps": 6, "measure_points": 2},
    quick={"steps": 1500, "seeds": [0]},
    full={"steps": 6000, "seeds": [0, 1]},
    reproduce=Reproduction(subset={"rates": [0.5]}, prefix=None, why=MEASURES_AT_FRACTIONS),
)
def dropout(
    rates: Sequence[float] = (0.0, 0.2, 0.5),
    hidden: Sequence[int] = (512, 512),
    lr: float = 0.1,
    batch_size: int = 64,
    seeds: Sequence[int] = (0,),
    steps: int = 3000,
    measure_points: int = 6,
    train_examples: int = 5000,
    validation: int = 5000,
    dataset: str = "fashion-mnist",
    device: str | None = None,
) -> pd.DataFrame:
    """BN as a regularizer: BN and no BN, each with dropout at every rate of ``rates``.

    A ReLU MLP (``hidden`` widths, He initialization) trained on only ``train_examples``
    Fashion-MNIST images, so that it overfits, with plain SGD at ``lr`` for ``steps``
    steps; dropout after every hidden activation (off in eval mode). Training accuracy
    is measured on those training images, in eval mode.

    Returns:
        One row per model and measured step: ``norm, dropout, lr, seed, step,
        validation_accuracy, test_accuracy, train_accuracy, loss, diverged, diverged_at``.
    """
    whole_number(steps, "steps", 1)
    dev = pick_device(device)
    rest, held = holdout(datasets.load(dataset, "train", dev), validation)
    train = subset_split(rest, train_examples)
    measure = {"validation": held, "test": datasets.load(dataset, "test", dev), "train": train}
    config = {**NTU_MLP, "hidden": list(hidden)}
    frames = []
    for rate in rates:
        if not 0 <= rate < 1:
            raise ValueError(f"a dropout rate is a probability in [0, 1), got {rate}")
        for norm in ("none", "bn"):
            frames.append(
                train_measured(
                    "mlp",
                    config,
                    members_of([lr], seeds),
                    train,
                    measure,
                    batch_size=batch_size,
                    steps=steps,
                    points=measure_points,
                    norm=norm,
                    prepare=lambda run, p=rate: set_activation(run.model, "relu", p),
                    device=dev,
                    desc=f"dropout {rate} {norm}",
                    labels={"dropout": rate},
                )
            )
    frame = pd.concat(frames, ignore_index=True)
    columns = ["norm", "dropout", "lr", "seed", "step"]
    metrics = ["validation_accuracy", "test_accuracy", "train_accuracy", "loss"]
    return frame[columns + metrics + ["diverged", "diverged_at"]].sort_values(
        columns, ignore_index=True
    )


#: Which parts each mode of :func:`bn_only` trains: ``"norm"`` (BN's gamma and beta),
#: ``"head"`` (the output layer), ``"other"`` (the convolutions).
_TRAINED = {
    "all": {"norm", "head", "other"},
    "BN's gamma and beta": {"norm"},
    "output layer": {"head"},
    "gamma, beta and output layer": {"norm", "head"},
}


def _freeze_except(run: StackedRun, mode: str) -> int:
    """Leave trainable only the parameters ``mode`` trains (:data:`_TRAINED`); returns
    how many scalars each model trains."""
    model = run.model
    trainable = 0
    for single in model.models if isinstance(model, MemberLoop) else [model]:
        for module in single.modules():
            kind = "head" if module is single.head else "other"
            if is_batch_norm(module):
                kind = "norm"
            for p in module.parameters(recurse=False):
                p.requires_grad_(kind in _TRAINED[mode])
                trainable += p.numel() if p.requires_grad else 0
    return trainable // run.k


@register(
    "bn_only",
    chapter=CHAPTER,
    shard_on=("modes",),
    smoke={
        "steps": 4,
        "measure_points": 1,
        "widths": [16, 32, 64],
        "validation": 500,
        "test_examples": 500,
    },
    quick={"steps": 400, "widths": [16, 32, 64], "measure_points": 1},
    full={"steps": 800, "test_examples": 10_000},
    reproduce=Reproduction(
        subset={"modes": ["BN's gamma and beta"]}, prefix=None, why=MEASURES_AT_FRACTIONS
    ),
)
def bn_only(
    modes: Sequence[str] = tuple(_TRAINED),
    widths: Sequence[int] = (32, 64, 128),
    lrs: Sequence[float] = (0.01, 0.1),
    momentum: float = 0.9,
    batch_size: int = 128,
    seeds: Sequence[int] = (0,),
    steps: int = 800,
    measure_points: int = 2,
    validation: int = 2000,
    test_examples: int = 2000,
    dataset: str = "fashion-mnist",
    device: str | None = None,
) -> pd.DataFrame:
    """Training only BN's gamma and beta in a frozen random CNN (Frankle et al. 2021).

    A CNN with BN (three convolutions of ``widths`` channels, He initialization) on
    Fashion-MNIST, SGD with ``momentum``, trained in each mode of ``modes``: all
    parameters, only BN's gamma and beta (every other weight stays at its random
    initialization, the output layer included), only the output layer, and gamma, beta
    and the output layer, each at every learning rate of ``lrs``.

    Returns:
        One row per model and measured step: ``mode, trainable`` (scalars trained per
        model), ``lr, seed, step, validation_accuracy, test_accuracy, loss, diverged,
        diverged_at``.
    """
    whole_number(steps, "steps", 1)
    for mode in modes:
        if mode not in _TRAINED:
            raise ValueError(f"unknown mode {mode!r}: choose from {', '.join(_TRAINED)}")
    dev = pick_device(device)
    train, held = holdout(datasets.load(dataset, "train", dev), validation)
    measure = {
        "validation": held,
        "test": subset_split(datasets.load(dataset, "test", dev), test_examples),
    }
    config = {**SMALL_CNN, "widths": list(widths)}
    frames = []
    for mode in modes:
        trainable = {}
        frame = train_measured(
            "vgg",
            config,
            members_of(lrs, seeds, momentum=momentum),
            train,
            measure,
            batch_size=batch_size,
            steps=steps,
            points=measure_points,
            prepare=lambda run, m=mode, t=trainable: t.setdefault("n", _freeze_except(run, m)),
            device=dev,
            desc=f"training {mode}",
            labels={"mode": mode},
        )
        frame["trainable"] = trainable["n"]
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    columns = ["mode", "trainable", "lr", "seed", "step"]
    metrics = ["validation_accuracy", "test_accuracy", "loss", "diverged", "diverged_at"]
    return frame[columns + metrics].sort_values(columns, ignore_index=True)
