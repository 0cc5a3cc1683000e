"""What the experiments of "What else changes BN's effect" share: the chapter's name, the
normalizations of Part 2, held-out splits, activations, the swap of BN layers, and
training with measurements at fractions of a run (:func:`train_measured`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from bnlib import probes
from bnlib.arguments import whole_number
from bnlib.data import Split
from bnlib.engine import Member, StackedRun
from bnlib.models import ACTIVATIONS, MemberLoop
from bnlib.norm_variants import (
    ghost_from,
    group_norm,
    renorm_from,
    swap_batch_norms,
)
from bnlib.setups import HE_RELU

__all__ = [
    "CHAPTER",
    "MORE_ACTIVATIONS",
    "NORMS",
    "activation_maker",
    "holdout",
    "measure_at",
    "members_of",
    "norm_config",
    "normalize",
    "set_activation",
    "subset_split",
    "tidy",
    "train_measured",
]


CHAPTER = "What else changes BN's effect"


#: Activations beyond :data:`bnlib.models.ACTIVATIONS` (the NTU project's leaky ReLU has
#: slope 0.2).
MORE_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "softplus": nn.Softplus,
}


#: Normalizations of Part 2 by name: the model is built with BN ("torch") and its BN
#: layers are swapped (:func:`normalize`).
NORMS = ("bn", "layer", "group", "none")


# --------------------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------------------


def holdout(train: Split, examples: int, seed: int = 0) -> tuple[Split, Split]:
    """``train`` split into (the rest, ``examples`` validation examples), at random."""
    whole_number(examples, "validation", 1, len(train.y) - 1)
    order = torch.randperm(len(train.y), generator=torch.Generator().manual_seed(seed))
    order = order.to(train.x.device)
    held, rest = order[:examples], order[examples:]
    return Split(train.x[rest], train.y[rest]), Split(train.x[held], train.y[held])


def subset_split(split: Split, examples: int, seed: int = 1) -> Split:
    """A fixed random subset of ``examples`` of ``split`` (all of it if it is smaller)."""
    order = torch.randperm(len(split.y), generator=torch.Generator().manual_seed(seed))
    keep = order[: min(examples, len(split.y))].to(split.x.device)
    return Split(split.x[keep], split.y[keep])


def activation_maker(name: str) -> Callable[[], nn.Module]:
    """The constructor of activation ``name``, else a clear error listing the names."""
    if name not in ACTIVATIONS and name not in MORE_ACTIVATIONS:
        known = ", ".join([*ACTIVATIONS, *MORE_ACTIVATIONS])
        raise ValueError(f"unknown activation {name!r}: choose one of {known}")
    return MORE_ACTIVATIONS.get(name) or ACTIVATIONS[name]


def set_activation(model: nn.Module, name: str, dropout: float = 0.0) -> None:
    """Give every hidden layer of an MLP (single, stacked or a loop) activation ``name``,
    followed by dropout with probability ``dropout`` if it is > 0."""
    make = activation_maker(name)
    for single in model.models if isinstance(model, MemberLoop) else [model]:
        for i in range(len(single.activations)):
            layer = make()
            single.activations[i] = nn.Sequential(layer, nn.Dropout(dropout)) if dropout else layer


def normalize(run: StackedRun, norm: str, groups: int = 4, **options) -> None:
    """Put normalization ``norm`` in place of the BN layers of ``run``'s model (built with
    BN). ``"bn"`` keeps them; ``"layer"``, ``"group"`` (``groups`` per layer), ``"renorm"``
    and ``"ghost"`` swap them (``options`` go to the new layers); ``"none"`` models are
    built without BN (:func:`norm_config`)."""
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


def norm_config(norm: str) -> str:
    """The ``norm`` a model is built with: no BN for ``"none"``, else BN to be swapped."""
    return "none" if norm == "none" else "torch"


def tidy(run: StackedRun, log: pd.DataFrame, **labels) -> pd.DataFrame:
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


def measure_at(steps: int, points: int) -> list[int]:
    """``points`` evenly spaced steps ending at ``steps``."""
    whole_number(points, "measure_points", 1)
    return sorted({int(round(v)) for v in np.linspace(0, steps, points + 1)[1:]})


def train_measured(
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
    (activation, dropout, frozen parameters). Returns :func:`tidy` rows with a
    ``<split>_accuracy`` column per split."""
    run = StackedRun(
        architecture,
        {**config, "norm": norm_config(norm)},
        members,
        train,
        batch_size=batch_size,
        optimizer=optimizer,
        device=device,
    )
    normalize(run, norm, **(norm_options or {}))
    if prepare is not None:
        prepare(run)
    accuracy_probes = [probes.test_accuracy(s, metric=f"{n} accuracy") for n, s in measure.items()]
    log = run.train(steps, log_at=measure_at(steps, points), probes=accuracy_probes, desc=desc)
    return tidy(run, log, norm=norm, **labels)


def members_of(lrs: Sequence[float], seeds: Sequence[int], **common) -> list[Member]:
    """One He-initialized member per seed and learning rate."""
    return [
        Member(lr=float(lr), seed=int(seed), **HE_RELU, **common) for seed in seeds for lr in lrs
    ]
