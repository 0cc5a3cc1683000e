"""Part 1 of "What else changes BN's effect": which factors change BN's benefit, after
the NTU MLDS 2017 course project (its flaws corrected: population statistics at test time,
a mean loss, learning rates chosen on held-out training data, test sets that have the
stated class ratios).

- :func:`factor_study`: the NTU network on MNIST with and without BN as the activation,
  the optimizer or the batch size varies, each setting at its best learning rate;
- :func:`layer_diagnostics`: each layer's weight distribution and gradient norm over
  training, with and without BN;
- :func:`class_mismatch`: a 0-vs-1 classifier tested on sets with fewer and fewer ones,
  evaluated with population statistics and with the test batch's own statistics.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch

from bnlib import arguments
from bnlib import data as datasets
from bnlib.arguments import whole_number
from bnlib.data import Split
from bnlib.device import pick_device
from bnlib.engine import StackedRun, preserved_state
from bnlib.experiments import MEASURES_AT_END, MEASURES_AT_FRACTIONS, Reproduction, register
from bnlib.experiments.factors.common import (
    CHAPTER,
    activation_maker,
    holdout,
    measure_at,
    members_of,
    norm_config,
    set_activation,
    subset_split,
    train_measured,
)
from bnlib.setups import NTU_MLP

__all__ = ["class_mismatch", "factor_study", "layer_diagnostics"]


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
        subset={"activations": ["sigmoid"], "optimizers": ["sgd"], "batch_sizes": [64]},
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
    whole_number(steps, "steps", 1)
    for name in {*activations, baseline_activation}:
        activation_maker(name)  # a typo fails before any data is loaded
    dev = pick_device(device)
    train, held = holdout(datasets.load(dataset, "train", dev), validation)
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
                train_measured(
                    "mlp",
                    NTU_MLP,
                    members_of(grids[optimizer], seeds),
                    train,
                    measure,
                    batch_size=batch_size,
                    steps=steps,
                    points=measure_points,
                    optimizer=optimizer,
                    norm=norm,
                    prepare=lambda run, a=activation: set_activation(run.model, a),
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
    whole_number(steps, "steps", 1)
    arguments.check_whole_number(probe_examples, "probe_examples", low=1)
    dev = pick_device(device)
    train = datasets.load(dataset, "train", dev)
    batch = subset_split(train, probe_examples)
    frames = []
    for norm in ("none", "bn"):
        run = StackedRun(
            "mlp",
            {**NTU_MLP, "norm": norm_config(norm)},
            members_of([lr], seeds),
            train,
            batch_size=batch_size,
            device=dev,
        )
        set_activation(run.model, activation)
        log_at = [0, *measure_at(steps, measure_points)]
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
    shard_on=("seeds", "minority_per_majority"),
    smoke={"steps": 6, "seeds": [0]},
    quick={"steps": 600, "seeds": [0, 1, 2]},
    full={"steps": 3000, "seeds": [0, 1, 2, 3, 4]},
    reproduce=Reproduction(prefix=None, why=MEASURES_AT_END),
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
    whole_number(steps, "steps", 1)
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
            {**NTU_MLP, "classes": 2, "norm": norm_config(norm)},
            members_of([lr], seeds),
            train,
            batch_size=batch_size,
            device=dev,
        )
        set_activation(run.model, activation)
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
