r"""What else changes BN's effect (chapter "What else changes BN's effect").

Part 1, which factors change BN's benefit (after the NTU MLDS 2017 course project, with
its flaws corrected: population statistics at test time, a mean loss, learning rates
chosen on held-out training data, test sets that have the stated class ratios):

- :func:`factor_study`: the NTU network on MNIST with and without BN as the activation,
  the optimizer or the batch size varies, each setting at its best learning rate;
- :func:`layer_diagnostics`: each layer's weight distribution and gradient norm over
  training, with and without BN;
- :func:`class_mismatch`: a 0-vs-1 classifier tested on sets with fewer and fewer ones,
  evaluated with population statistics and with the test batch's own statistics.

Part 2, when BN fails and what replaces it (:mod:`bnlib.norm_variants`):

- :func:`small_batches`: BN, LayerNorm, GroupNorm and no normalization for batch sizes
  2 to 128;
- :func:`batch_renorm`: batch renormalization against BN at batch size 4;
- :func:`ghost_batch_norm`: BN over small virtual batches inside a large batch;
- :func:`inference_pitfalls`: the same trained networks evaluated the right way and
  the wrong ways, and the fixes;
- :func:`dropout`: BN with and without dropout;
- :func:`bn_only`: training only BN's :math:`\gamma, \beta` in a frozen random network.

All accuracies are measured without changing the models (:func:`bnlib.engine.preserved_state`);
test data never reaches a model's training state, and learning rates are chosen on a
validation split held out of the training data, never on the test split.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from bnlib import data as datasets
from bnlib import probes
from bnlib.data import Split
from bnlib.device import pick_device
from bnlib.engine import Member, StackedRun, _whole_number, accuracy, preserved_state
from bnlib.experiments import MEASURES_AT_END, MEASURES_AT_FRACTIONS, Reproduction, register
from bnlib.models import ACTIVATIONS, MemberLoop, unstack_member
from bnlib.norm import population_statistics
from bnlib.norm_variants import (
    ExampleWeightedBatchNorm,
    ghost_from,
    group_norm,
    renorm_from,
    swap_batch_norms,
)

__all__ = [
    "NORMS",
    "batch_renorm",
    "bn_only",
    "class_mismatch",
    "dropout",
    "factor_study",
    "ghost_batch_norm",
    "inference_pitfalls",
    "layer_diagnostics",
    "small_batches",
]

CHAPTER = "What else changes BN's effect"

#: The NTU project's network: 784-100-100-10, std sqrt(2 / fan-in) Gaussian weights
#: (theirs truncated), zero biases (theirs 0.1 without BN).
_NTU_MLP = {"hidden": [100, 100]}

#: Activations beyond :data:`bnlib.models.ACTIVATIONS` (the NTU project's leaky ReLU has
#: slope 0.2).
_MORE_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "softplus": nn.Softplus,
}

#: The small CNN of Part 2: three 3x3 convolutions (16, 32, 64 channels), each followed
#: by the normalization, ReLU and 2x2 max pooling (:class:`bnlib.models.VGG`).
_SMALL_CNN = {"widths": [16, 32, 64], "convs": 1}

#: Every model's initialization (given per member, :class:`bnlib.engine.Member`): He et
#: al.'s N(0, 2 / fan-in) weights, zero biases.
_HE = {"init": "he", "gain": math.sqrt(2.0)}

#: Normalizations of Part 2 by name: the model is built with BN ("torch") and its BN
#: layers are swapped (:func:`_normalize`).
NORMS = ("bn", "layer", "group", "none")


# --------------------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------------------


def _holdout(train: Split, examples: int, seed: int = 0) -> tuple[Split, Split]:
    """``train`` split into (the rest, ``examples`` validation examples), at random."""
    _whole_number(examples, "validation", 1, len(train.y) - 1)
    order = torch.randperm(len(train.y), generator=torch.Generator().manual_seed(seed))
    order = order.to(train.x.device)
    held, rest = order[:examples], order[examples:]
    return Split(train.x[rest], train.y[rest]), Split(train.x[held], train.y[held])


def _subset(split: Split, examples: int, seed: int = 1) -> Split:
    """A fixed random subset of ``examples`` of ``split`` (all of it if it is smaller)."""
    order = torch.randperm(len(split.y), generator=torch.Generator().manual_seed(seed))
    keep = order[: min(examples, len(split.y))].to(split.x.device)
    return Split(split.x[keep], split.y[keep])


def _activation_maker(name: str) -> Callable[[], nn.Module]:
    """The constructor of activation ``name``, else a clear error listing the names."""
    if name not in ACTIVATIONS and name not in _MORE_ACTIVATIONS:
        known = ", ".join([*ACTIVATIONS, *_MORE_ACTIVATIONS])
        raise ValueError(f"unknown activation {name!r}: choose one of {known}")
    return _MORE_ACTIVATIONS.get(name) or ACTIVATIONS[name]


def _set_activation(model: nn.Module, name: str, dropout: float = 0.0) -> None:
    """Give every hidden layer of an MLP (single, stacked or a loop) activation ``name``,
    followed by dropout with probability ``dropout`` if it is > 0."""
    make = _activation_maker(name)
    for single in model.models if isinstance(model, MemberLoop) else [model]:
        for i in range(len(single.activations)):
            layer = make()
            single.activations[i] = nn.Sequential(layer, nn.Dropout(dropout)) if dropout else layer


def _normalize(run: StackedRun, norm: str, groups: int = 4, **options) -> None:
    """Put normalization ``norm`` in place of the BN layers of ``run``'s model (built with
    BN). ``"bn"`` keeps them; ``"layer"``, ``"group"`` (``groups`` per layer), ``"renorm"``
    and ``"ghost"`` swap them (``options`` go to the new layers); ``"none"`` models are
    built without BN (:func:`_norm_config`)."""
    if norm in ("bn", "none"):
        return
    members = 1 if run.strategy == "loop" else run.k
    makers = {
        "layer": lambda bn: group_norm(bn, 1, members),
        "group": lambda bn: group_norm(bn, groups, members),
        "renorm": lambda bn: renorm_from(bn, **options),
        "ghost": lambda bn: ghost_from(bn, **options),
    }
    if norm not in makers:
        raise ValueError(
            f"unknown normalization {norm!r}: choose one of bn, none, {', '.join(makers)}"
        )
    swap_batch_norms(run.model, makers[norm])


def _norm_config(norm: str) -> str:
    """The ``norm`` a model is built with: no BN for ``"none"``, else BN to be swapped."""
    return "none" if norm == "none" else "torch"


def _tidy(run: StackedRun, log: pd.DataFrame, **labels) -> pd.DataFrame:
    """A :meth:`StackedRun.train` log as one row per member and step, a column per metric
    (spaces become underscores), plus the member's ``lr`` and ``seed``, ``diverged_at``
    (the step, or -1), ``diverged`` (at or before that step) and the ``labels``."""
    wide = log.pivot_table(
        index=["member", "lr", "seed", "step"], columns="metric", values="value"
    ).reset_index()
    wide.columns = [str(c).replace(" ", "_") for c in wide.columns]
    wide["diverged_at"] = run.diverged_at.cpu().numpy()[wide["member"]]
    wide["diverged"] = (wide["diverged_at"] >= 0) & (wide["diverged_at"] <= wide["step"])
    for name, value in labels.items():
        wide[name] = value
    return wide.drop(columns="member")


def _measure_at(steps: int, points: int) -> list[int]:
    """``points`` evenly spaced steps ending at ``steps``."""
    _whole_number(points, "measure_points", 1)
    return sorted({int(round(v)) for v in np.linspace(0, steps, points + 1)[1:]})


def _train_measured(
    architecture: str,
    config: dict,
    members: list[Member],
    train: Split,
    measure: dict[str, Split],
    *,
    batch_size: int,
    steps: int,
    points: int,
    optimizer: str = "sgd",
    norm: str = "bn",
    prepare: Callable[[StackedRun], None] | None = None,
    device: torch.device,
    desc: str,
    labels: dict,
    norm_options: dict | None = None,
) -> pd.DataFrame:
    """Train a stacked run and measure each member's eval-mode accuracy on every split of
    ``measure`` at ``points`` steps; ``prepare(run)`` changes the model before training
    (activation, dropout, frozen parameters). Returns :func:`_tidy` rows with a
    ``<split>_accuracy`` column per split."""
    run = StackedRun(
        architecture,
        {**config, "norm": _norm_config(norm)},
        members,
        train,
        batch_size=batch_size,
        optimizer=optimizer,
        device=device,
    )
    _normalize(run, norm, **(norm_options or {}))
    if prepare is not None:
        prepare(run)
    accuracy_probes = [probes.test_accuracy(s, metric=f"{n} accuracy") for n, s in measure.items()]
    log = run.train(steps, log_at=_measure_at(steps, points), probes=accuracy_probes, desc=desc)
    return _tidy(run, log, norm=norm, **labels)


def _members(lrs: Sequence[float], seeds: Sequence[int], **common) -> list[Member]:
    """One He-initialized member per seed and learning rate."""
    return [Member(lr=float(lr), seed=int(seed), **_HE, **common) for seed in seeds for lr in lrs]


# --------------------------------------------------------------------------------------
# Part 1: the factor study
# --------------------------------------------------------------------------------------

_FACTOR_QUICK = {
    "sgd_lrs": [0.1, 0.3, 1.0, 3.0],
    "adam_lrs": [3e-4, 1e-3, 3e-3, 1e-2],
    "seeds": [0],
    "steps": 800,
    "measure_points": 10,
}


@register(
    "factor_study",
    chapter=CHAPTER,
    smoke={**_FACTOR_QUICK, "sgd_lrs": [0.3], "adam_lrs": [1e-3], "steps": 8, "measure_points": 2},
    quick=_FACTOR_QUICK,
    full={
        **_FACTOR_QUICK,
        "sgd_lrs": [0.03, 0.1, 0.3, 1.0, 3.0, 10.0],
        "adam_lrs": [3e-4, 1e-3, 3e-3, 1e-2, 3e-2],
        "seeds": [0, 1],
        "steps": 3000,
    },
    reproduce=Reproduction(
        subset={
            "seeds": [0],
            "activations": ["sigmoid"],
            "optimizers": ["sgd"],
            "batch_sizes": [64],
        },
        prefix=None,
        why=MEASURES_AT_FRACTIONS,
    ),
)
def factor_study(
    activations: Sequence[str] = ("sigmoid", "tanh", "relu", "leaky_relu", "softplus"),
    optimizers: Sequence[str] = ("sgd", "adam"),
    batch_sizes: Sequence[int] = (4, 16, 64, 256),
    baseline_activation: str = "sigmoid",
    baseline_optimizer: str = "sgd",
    baseline_batch_size: int = 64,
    sgd_lrs: Sequence[float] = (0.1, 0.3, 1.0, 3.0),
    adam_lrs: Sequence[float] = (3e-4, 1e-3, 3e-3, 1e-2),
    seeds: Sequence[int] = (0,),
    steps: int = 1500,
    measure_points: int = 15,
    validation: int = 5000,
    dataset: str = "mnist",
    device: str | None = None,
) -> pd.DataFrame:
    """The NTU project's factor study, corrected: BN's effect as one factor varies.

    Starting from the baseline (sigmoid, plain SGD, batch 64: the NTU defaults), one
    factor at a time takes each of its values (activation, optimizer, batch size), the
    others staying at the baseline. Each setting is trained with and without BN
    (``norm`` ``"bn"``/``"none"``) on the NTU network (784-100-100-10), at every learning
    rate of its optimizer's grid and every seed, for ``steps`` steps whatever the batch
    size (as the NTU project did), with the mean cross-entropy (theirs was summed, which
    multiplied the learning rate by the batch size). ``validation`` training examples are
    held out to choose the learning rate; the test split is only measured.

    Returns:
        One row per model and measured step: ``activation, optimizer, batch_size, norm,
        lr, seed, step, validation_accuracy, test_accuracy, loss`` (the step's minibatch
        loss), ``diverged`` and ``diverged_at``. Accuracies in eval mode (BN with its
        running statistics).
    """
    _whole_number(steps, "steps", 1)
    for name in {*activations, baseline_activation}:
        _activation_maker(name)  # a typo fails before any data is loaded
    dev = pick_device(device)
    train, held = _holdout(datasets.load(dataset, "train", dev), validation)
    measure = {"validation": held, "test": datasets.load(dataset, "test", dev)}
    settings = {(baseline_activation, baseline_optimizer, baseline_batch_size)}
    settings |= {(a, baseline_optimizer, baseline_batch_size) for a in activations}
    settings |= {(baseline_activation, o, baseline_batch_size) for o in optimizers}
    settings |= {(baseline_activation, baseline_optimizer, b) for b in batch_sizes}
    grids = {"sgd": sgd_lrs, "adam": adam_lrs}
    frames = []
    for activation, optimizer, batch_size in sorted(settings, key=str):
        if optimizer not in grids:
            raise ValueError(f"unknown optimizer {optimizer!r}: choose 'sgd' or 'adam'")
        for norm in ("none", "bn"):
            frames.append(
                _train_measured(
                    "mlp",
                    _NTU_MLP,
                    _members(grids[optimizer], seeds),
                    train,
                    measure,
                    batch_size=batch_size,
                    steps=steps,
                    points=measure_points,
                    optimizer=optimizer,
                    norm=norm,
                    prepare=lambda run, a=activation: _set_activation(run.model, a),
                    device=dev,
                    desc=f"{activation} {optimizer} batch {batch_size} {norm}",
                    labels={
                        "activation": activation,
                        "optimizer": optimizer,
                        "batch_size": batch_size,
                    },
                )
            )
    frame = pd.concat(frames, ignore_index=True)
    columns = ["activation", "optimizer", "batch_size", "norm", "lr", "seed", "step"]
    metrics = ["validation_accuracy", "test_accuracy", "loss", "diverged", "diverged_at"]
    return frame[columns + metrics].sort_values(columns, ignore_index=True)


def _weight_and_gradient_rows(run: StackedRun, batch: Split) -> list[dict]:
    """Per member and hidden/output layer: weight percentiles and the gradient's norm on
    ``batch`` (train mode, the model restored afterwards)."""
    model = run.model
    with preserved_state(model):
        model.train()
        for p in model.parameters():
            p.grad = None
        k = run.k
        x = batch.x.unsqueeze(1).expand(-1, k, *batch.x.shape[1:])
        run.losses(run.forward(x), batch.y[:, None].expand(-1, k)).sum().backward()
        layers = [*model.linears, model.head]
        rows = []
        for depth, layer in enumerate(layers, start=1):
            w = layer.weight.detach().reshape(k, -1)
            g = layer.weight.grad.reshape(k, -1)
            q = torch.quantile(w, torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95]), dim=1)
            name = "output" if depth == len(layers) else f"hidden {depth}"
            for m in range(k):
                rows.append(
                    {
                        "member": m,
                        "layer": name,
                        "metric": "weights",
                        "value": float(w[m].std()),
                        **{f"w{p}": float(q[i, m]) for i, p in enumerate((5, 25, 50, 75, 95))},
                        "gradient_norm": float(g[m].norm()),
                    }
                )
    return rows


@register(
    "layer_diagnostics",
    chapter=CHAPTER,
    smoke={"steps": 6, "measure_points": 3},
    quick={"steps": 1000},
    full={"steps": 10_000, "seeds": [0, 1, 2]},
    reproduce=Reproduction(subset={"seeds": [0]}),
)
def layer_diagnostics(
    activation: str = "sigmoid",
    lr: float = 0.64,
    batch_size: int = 64,
    seeds: Sequence[int] = (0,),
    steps: int = 1500,
    measure_points: int = 15,
    probe_examples: int = 1000,
    dataset: str = "mnist",
    device: str | None = None,
) -> pd.DataFrame:
    """The NTU project's diagnostics: each layer's weights and gradient over training.

    The NTU network at its baseline (sigmoid, plain SGD, batch 64) at the NTU project's
    own learning rate: 0.01 on a summed loss of 64 examples is 0.64 on the mean loss.
    At ``measure_points`` steps (and step 0), each layer's weight percentiles and the
    norm of its gradient on a fixed batch of ``probe_examples`` training examples.

    Returns:
        One row per model, layer and step: ``norm, seed, step, layer`` (``hidden 1``,
        ``hidden 2``, ``output``), ``weight_std``, ``w5, w25, w50, w75, w95`` (weight
        percentiles), ``gradient_norm`` (L2 norm of the weight gradient of the mean loss),
        ``diverged``.
    """
    _whole_number(steps, "steps", 1)
    dev = pick_device(device)
    train = datasets.load(dataset, "train", dev)
    batch = _subset(train, probe_examples)
    frames = []
    for norm in ("none", "bn"):
        run = StackedRun(
            "mlp",
            {**_NTU_MLP, "norm": _norm_config(norm)},
            _members([lr], seeds),
            train,
            batch_size=batch_size,
            device=dev,
        )
        _set_activation(run.model, activation)
        log_at = [0, *_measure_at(steps, measure_points)]
        log = run.train(
            steps,
            log_at=log_at,
            probes=[lambda r, step: _weight_and_gradient_rows(r, batch)],
            desc=f"diagnostics {norm}",
        )
        log = log[log["metric"] == "weights"].rename(columns={"value": "weight_std"})
        log["norm"] = norm
        frames.append(log)
    frame = pd.concat(frames, ignore_index=True)
    columns = ["norm", "seed", "step", "layer", "weight_std", "w5", "w25", "w50", "w75", "w95"]
    return frame[[*columns, "gradient_norm", "diverged"]].sort_values(
        ["norm", "seed", "layer", "step"], ignore_index=True
    )


def _predictions(run: StackedRun, x: torch.Tensor, batch_statistics: bool, chunk: int):
    """Each member's predicted classes ``(N, K)`` for inputs ``x`` ``(N, ...)``: in eval
    mode, or in train mode with BN normalizing each chunk of ``chunk`` examples by its own
    statistics. The model is left exactly as it was."""
    with preserved_state(run.model), torch.no_grad():
        run.model.train(batch_statistics)
        xs = x.unsqueeze(1).expand(-1, run.k, *x.shape[1:])
        return torch.cat([run.forward(part).argmax(-1) for part in xs.split(chunk)])


def _digits(split: Split, digits: Sequence[int]) -> Split:
    """The examples of ``split`` showing ``digits``, relabelled 0, 1, ... in that order."""
    keep = torch.zeros_like(split.y, dtype=torch.bool)
    y = torch.zeros_like(split.y)
    for label, digit in enumerate(digits):
        mask = split.y == digit
        keep |= mask
        y[mask] = label
    return Split(split.x[keep], y[keep])


@register(
    "class_mismatch",
    chapter=CHAPTER,
    smoke={"steps": 6, "seeds": [0]},
    quick={"steps": 600, "seeds": [0, 1, 2]},
    full={"steps": 3000, "seeds": [0, 1, 2, 3, 4]},
    reproduce=Reproduction(subset={"seeds": [0]}),
)
def class_mismatch(
    minority_per_majority: Sequence[int] = (1, 9, 19, 99),
    train_per_class: int = 5000,
    activation: str = "sigmoid",
    lr: float = 0.64,
    batch_size: int = 64,
    seeds: Sequence[int] = (0,),
    steps: int = 600,
    dataset: str = "mnist",
    device: str | None = None,
) -> pd.DataFrame:
    """The NTU project's class-mismatch test, with test sets that have the stated ratios.

    A 0-vs-1 classifier (the NTU network with two outputs) is trained on
    ``train_per_class`` zeros and as many ones, with and without BN. It is tested on all
    980 zeros of MNIST's test split and ``round(980 / r)`` ones for each ``r`` of
    ``minority_per_majority`` (980, 109, 52 and 10 ones: ratios 1:1, 1:9, 1:19, 1:99),
    two ways: in eval mode (population statistics, the right way) and, as the NTU code
    did, in train mode with the whole test set as one batch (so BN uses the test set's
    own statistics, which shift as its class mix does).

    Returns:
        One row per model, ratio, evaluation and class: ``norm, seed, ratio`` (r),
        ``evaluation`` (``"population statistics"`` or ``"test-set statistics"``),
        ``digit`` (0, 1, or -1 for all), ``examples``, ``accuracy``.
    """
    _whole_number(steps, "steps", 1)
    dev = pick_device(device)
    train_all = _digits(datasets.load(dataset, "train", dev), (0, 1))
    picks = []
    for label in (0, 1):
        where = (train_all.y == label).nonzero().flatten()
        picks.append(where[: min(train_per_class, len(where))])
    train = Split(train_all.x[torch.cat(picks)], train_all.y[torch.cat(picks)])
    test = _digits(datasets.load(dataset, "test", dev), (0, 1))
    zeros, ones = (test.y == 0).nonzero().flatten(), (test.y == 1).nonzero().flatten()
    rows = []
    for norm in ("none", "bn"):
        run = StackedRun(
            "mlp",
            {**_NTU_MLP, "classes": 2, "norm": _norm_config(norm)},
            _members([lr], seeds),
            train,
            batch_size=batch_size,
            device=dev,
        )
        _set_activation(run.model, activation)
        run.train(steps, desc=f"0 vs 1, {norm}")
        for r in minority_per_majority:
            keep = torch.cat([zeros, ones[: max(1, round(len(zeros) / r))]])
            x, y = test.x[keep], test.y[keep]
            for evaluation, batch_statistics in (
                ("population statistics", False),
                ("test-set statistics", True),
            ):
                predicted = _predictions(run, x, batch_statistics, chunk=len(y))
                correct = (predicted == y[:, None]).float()
                for k, member in enumerate(run.members):
                    for digit, mask in (
                        (-1, torch.ones_like(y, dtype=torch.bool)),
                        (0, y == 0),
                        (1, y == 1),
                    ):
                        rows.append(
                            {
                                "norm": norm,
                                "seed": member.seed,
                                "ratio": r,
                                "evaluation": evaluation,
                                "digit": digit,
                                "examples": int(mask.sum()),
                                "accuracy": float(correct[mask, k].mean()),
                            }
                        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------
# Part 2: small batches and the alternatives
# --------------------------------------------------------------------------------------

_SMALL_QUICK = {
    "examples": 6000,
    "seeds": [0],
    "base_lrs": [0.05],
    "batch_sizes": [2, 4, 16, 32, 128],
}


@register(
    "small_batches",
    chapter=CHAPTER,
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
        "base_lrs": [0.025, 0.1],
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
    _whole_number(examples, "examples", 1)
    dev = pick_device(device)
    train, held = _holdout(datasets.load(dataset, "train", dev), validation)
    measure = {
        "validation": held,
        "test": _subset(datasets.load(dataset, "test", dev), test_examples),
    }
    frames = []
    for batch_size in batch_sizes:
        steps = max(1, examples // batch_size)
        lrs = [base * batch_size / base_batch for base in base_lrs]
        for norm in norms:
            frame = _train_measured(
                "vgg",
                _SMALL_CNN,
                _members(lrs, seeds, momentum=momentum),
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
    reproduce=Reproduction(subset={"seeds": [0]}, prefix=None, why=MEASURES_AT_FRACTIONS),
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
    _whole_number(steps, "steps", 1)
    dev = pick_device(device)
    train, held = _holdout(datasets.load(dataset, "train", dev), validation)
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
            {**_NTU_MLP, "norm": _norm_config(norm)},
            _members(lrs, seeds),
            train,
            batch_size=size,
            device=dev,
        )
        if norm == "bn":
            for layer in run.model.norms:
                layer.momentum = momentum
        _normalize(run, norm, **(schedule if norm == "renorm" else {}))
        _set_activation(run.model, activation)
        measure = [
            probes.test_accuracy(held, metric="validation accuracy"),
            probes.test_accuracy(test, metric="test accuracy"),
            probes.test_accuracy(
                test, size, statistics="batch", metric="test accuracy batch statistics"
            ),
        ]
        log = run.train(
            steps,
            log_at=_measure_at(steps, measure_points),
            probes=measure,
            desc=f"{norm} batch {size}",
        )
        frames.append(_tidy(run, log, norm=norm, batch_size=size))
    frame = pd.concat(frames, ignore_index=True)
    columns = ["norm", "batch_size", "lr", "seed", "step"]
    metrics = ["validation_accuracy", "test_accuracy", "test_accuracy_batch_statistics"]
    return frame[columns + metrics + ["loss", "diverged", "diverged_at"]].sort_values(
        columns, ignore_index=True
    )


@register(
    "ghost_batch_norm",
    chapter=CHAPTER,
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
    reproduce=Reproduction(
        subset={"seeds": [0], "ghost_sizes": [256, 16]}, prefix=None, why=MEASURES_AT_FRACTIONS
    ),
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
    _whole_number(steps, "steps", 1)
    dev = pick_device(device)
    train, held = _holdout(datasets.load(dataset, "train", dev), validation)
    measure = {
        "validation": held,
        "test": _subset(datasets.load(dataset, "test", dev), test_examples),
        "train": _subset(train, train_examples),
    }
    frames = []
    for ghost in ghost_sizes:
        frames.append(
            _train_measured(
                "vgg",
                _SMALL_CNN,
                _members([lr], seeds, momentum=momentum),
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
    smoke={"checkpoints": [1, 3], "test_examples": 64, "statistics_examples": 256},
    quick={"checkpoints": [10, 30, 100, 300, 1000]},
    full={"checkpoints": [10, 30, 100, 300, 1000, 3000], "seeds": [0, 1, 2]},
    reproduce=Reproduction(subset={"seeds": [0]}, prefix={"checkpoints": [10, 30]}),
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
    checkpoints = sorted({_whole_number(c, "checkpoint", 1) for c in checkpoints})
    dev = pick_device(device)
    train = datasets.load(dataset, "train", dev)
    test = _subset(datasets.load(dataset, "test", dev), test_examples)
    statistics = _subset(train, statistics_examples)
    run = StackedRun(
        "vgg",
        {**_SMALL_CNN, "norm": "torch"},
        _members([lr], seeds, momentum=momentum),
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
    smoke={"steps": 6, "measure_points": 2},
    quick={"steps": 1500, "seeds": [0]},
    full={"steps": 6000, "seeds": [0, 1]},
    reproduce=Reproduction(
        subset={"seeds": [0], "rates": [0.0, 0.5]}, prefix=None, why=MEASURES_AT_FRACTIONS
    ),
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
    _whole_number(steps, "steps", 1)
    dev = pick_device(device)
    rest, held = _holdout(datasets.load(dataset, "train", dev), validation)
    train = _subset(rest, train_examples)
    measure = {"validation": held, "test": datasets.load(dataset, "test", dev), "train": train}
    config = {**_NTU_MLP, "hidden": list(hidden)}
    frames = []
    for rate in rates:
        if not 0 <= rate < 1:
            raise ValueError(f"a dropout rate is a probability in [0, 1), got {rate}")
        for norm in ("none", "bn"):
            frames.append(
                _train_measured(
                    "mlp",
                    config,
                    _members([lr], seeds),
                    train,
                    measure,
                    batch_size=batch_size,
                    steps=steps,
                    points=measure_points,
                    norm=norm,
                    prepare=lambda run, p=rate: _set_activation(run.model, "relu", p),
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
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                kind = "norm"
            for p in module.parameters(recurse=False):
                p.requires_grad_(kind in _TRAINED[mode])
                trainable += p.numel() if p.requires_grad else 0
    return trainable // run.k


@register(
    "bn_only",
    chapter=CHAPTER,
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
        subset={"modes": ["all"], "lrs": [0.1]}, prefix=None, why=MEASURES_AT_FRACTIONS
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
    _whole_number(steps, "steps", 1)
    for mode in modes:
        if mode not in _TRAINED:
            raise ValueError(f"unknown mode {mode!r}: choose from {', '.join(_TRAINED)}")
    dev = pick_device(device)
    train, held = _holdout(datasets.load(dataset, "train", dev), validation)
    measure = {
        "validation": held,
        "test": _subset(datasets.load(dataset, "test", dev), test_examples),
    }
    config = {**_SMALL_CNN, "widths": list(widths)}
    frames = []
    for mode in modes:
        trainable = {}
        frame = _train_measured(
            "vgg",
            config,
            _members(lrs, seeds, momentum=momentum),
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
