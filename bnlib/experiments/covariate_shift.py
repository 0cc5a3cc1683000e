"""Experiments of the chapter "Internal covariate shift".

- :func:`sigmoid_saturation`: why a drifting input distribution hurts a sigmoid.
- :func:`ioffe_figure1`: Figure 1 of Ioffe & Szegedy (2015), MNIST, with and without BN.
- :func:`ics_over_training`: internal covariate shift as Santurkar et al. (2018) measure
  it, for the paper's MLP and for their 25-layer deep linear network.
- :func:`noisy_bn`: Santurkar et al.'s "noisy BN": BN plus noise that moves every layer's
  input distribution at every step.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from bnlib import arguments, probes
from bnlib import data as datasets
from bnlib.device import pick_device, seed_everything
from bnlib.engine import Member, StackedRun, batch_indices, log_steps
from bnlib.experiments import Reproduction, register
from bnlib.models import MLP
from bnlib.progress import progress_bar
from bnlib.setups import IOFFE_MLP, deep_linear_loss, deep_linear_network, deep_linear_problem

__all__ = ["ics_over_training", "ioffe_figure1", "noisy_bn", "sigmoid_saturation"]


def _train_paper_mlps(
    config: dict, seeds, lr, batch_size, steps, points, desc, train_split, device, run_probes
) -> pd.DataFrame:
    """One stack of the paper's MLP (``config`` on top), one member per seed and learning
    rate (``lr``: one rate or a sequence), trained with SGD and probed at log-spaced
    steps."""
    lrs = [lr] if isinstance(lr, (int, float)) else list(lr)
    run = StackedRun(
        "mlp",
        {**IOFFE_MLP, **config},
        [Member(lr=rate, seed=s) for rate in lrs for s in seeds],
        train_split,
        batch_size=batch_size,
        device=device,
    )
    return run.train(steps, log_at=log_steps(steps, points), desc=desc, probes=run_probes)


@register(
    "sigmoid_saturation",
    chapter="Internal covariate shift",
    shard_on=("shifts",),
    smoke={"shifts": [0.0, 2.0, 4.0, 6.0], "points": 41},
    quick={"shifts": [0.0, 2.0, 4.0, 6.0]},
    full={"shifts": [0.0, 1.0, 2.0, 3.0, 4.0, 6.0]},
)
def sigmoid_saturation(
    shifts: Sequence[float] = (0.0, 2.0, 4.0, 6.0), std: float = 1.0, points: int = 401
) -> pd.DataFrame:
    r"""A sigmoid's gradient against the distribution of its input, as that input drifts.

    For inputs :math:`a \sim \mathcal N(\text{shift}, \text{std}^2)`, the density of
    :math:`a`, the sigmoid's derivative :math:`\sigma'(a) = \sigma(a)(1-\sigma(a))`, and the
    expected derivative :math:`\mathrm E[\sigma'(a)]` (the factor by which the gradient
    reaching the layer below is scaled, on average).

    Returns:
        Columns ``x, shift, density, sigmoid_grad, expected_grad``.
    """
    arguments.check_number(std, "std", above=0)
    arguments.check_whole_number(points, "points", low=2)
    x = np.linspace(-10, 10, points)
    sig = 1 / (1 + np.exp(-x))
    grad = sig * (1 - sig)
    frames = []
    for shift in shifts:
        density = np.exp(-0.5 * ((x - shift) / std) ** 2) / (std * np.sqrt(2 * np.pi))
        expected = float(np.sum(density * grad) * (x[1] - x[0]))
        frames.append(
            pd.DataFrame(
                {
                    "x": x,
                    "shift": shift,
                    "density": density,
                    "sigmoid_grad": grad,
                    "expected_grad": expected,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


@register(
    "ioffe_figure1",
    chapter="Internal covariate shift",
    shard_on=("norms",),
    smoke={"steps": 30, "seeds": [0, 1], "points": 5, "probe_examples": 200},
    quick={"steps": 3000, "seeds": [0, 1, 2], "points": 20},
    full={"steps": 50_000, "seeds": [0, 1, 2, 3, 4], "points": 40},
    reproduce=Reproduction(subset={"norms": ["bnlib"]}),
)
def ioffe_figure1(
    steps: int = 3000,
    seeds: Sequence[int] = (0, 1, 2),
    lr: float = 0.5,
    batch_size: int = 60,
    activation: str = "sigmoid",
    units: Sequence[int] = (0, 1, 2, 3, 4),
    probe_examples: int = 1000,
    points: int = 20,
    norms: Sequence[str] = ("none", "bnlib"),
    layer: int = 3,
    device: str | None = "cpu",
) -> pd.DataFrame:
    r"""Figure 1 of Ioffe & Szegedy (2015): MNIST, 3 x 100 sigmoids, with and without BN.

    Both networks (BN on every hidden layer: bnlib's from-scratch layer) are trained with
    plain SGD at one shared learning rate from PyTorch's default initialization, batches
    of 60, once per seed (all seeds at once, :class:`bnlib.engine.StackedRun`). At
    log-spaced steps: the test accuracy with BN's population statistics (the paper's
    inference rule, Algorithm 2) and with each test batch's own statistics, and the 15th,
    50th and 85th percentiles of the input to a few sigmoids of the last hidden layer, on
    a fixed probe batch of training images with the network in training mode (as the
    sigmoid sees it during training). ``norms`` and ``layer`` (1-3, the hidden layer whose
    sigmoid inputs are measured) let the explorer vary the setup.

    Returns:
        Columns ``norm ("no BN" | "BN"), seed, step, metric, value, channel``; metrics
        ``test accuracy``, ``test accuracy (batch statistics)``, ``loss`` (minibatch),
        and ``p15``, ``p50``, ``p85``, ``mean``, ``std`` per ``channel`` (unit).
    """
    arguments.check_whole_number(probe_examples, "probe_examples", low=2, high=60_000)
    arguments.check_whole_numbers(
        units or (), "units[{}]", low=0, high=99, note=" (a hidden layer has 100 units)"
    )
    dev = pick_device(device)
    train_split = datasets.load("mnist", "train", dev)
    test = datasets.load("mnist", "test", dev)
    probe_x = train_split.x[-probe_examples:]
    frames = []
    if not 1 <= layer <= len(IOFFE_MLP["hidden"]):
        raise ValueError(f"layer must be 1..{len(IOFFE_MLP['hidden'])}, got {layer}")
    labels = {"none": "no BN", "bnlib": "BN", "torch": "BN"}
    for norm in norms:
        label = labels[norm]
        log = _train_paper_mlps(
            {"activation": activation, "norm": norm},
            seeds,
            lr,
            batch_size,
            steps,
            points,
            label,
            train_split,
            dev,
            [
                probes.test_accuracy(test),
                probes.test_accuracy(
                    test, batch_size, statistics="batch", metric="test accuracy (batch statistics)"
                ),
                probes.activation_stats(
                    probe_x,
                    [f"norms.{layer - 1}"],
                    percentiles=(15, 50, 85),
                    per_channel=True,
                    units=units,
                    mode="train",
                ),
            ],
        )
        frames.append(log.assign(norm=label))
    out = pd.concat(frames, ignore_index=True)
    if "channel" not in out:
        out["channel"] = np.nan
    return out[["norm", "seed", "step", "metric", "value", "channel"]]


def _layer_groups(model: MLP) -> tuple[list[nn.Module], list[list[nn.Parameter]]]:
    """An MLP's weight layers and, per layer, all of its parameters (weight, bias and
    the BN's gamma and beta that follow it)."""
    layers = [*model.linears, model.head]
    groups = [
        [*linear.parameters(), *norm.parameters()]
        for linear, norm in zip(model.linears, model.norms)
    ]
    return layers, [*groups, list(model.head.parameters())]


def _train_measuring_ics(
    model: MLP,
    batches,
    *,
    steps: int,
    lr: float,
    loss_fn,
    log_at: set[int],
    label: str,
    desc: str,
) -> pd.DataFrame:
    """Plain SGD on ``batches`` (an iterator of ``(x, y)``), measuring ICS before the
    steps in ``log_at`` on the very batch and with the very update that training step
    uses (Santurkar et al.'s definition). A non-finite loss stops the run (diverged)."""
    layers, groups = _layer_groups(model)
    rows = []
    bar = progress_bar(steps, desc)
    for step in range(steps + 1):
        if step == steps and step not in log_at:
            break
        x, y = next(batches)
        model.train()
        if step in log_at:
            with torch.no_grad():
                loss = float(loss_fn(model(x), y))
            diverged = not np.isfinite(loss)
            if not diverged:
                ics = probes.internal_covariate_shift(model, layers, x, y, lr, loss_fn, groups)
                rows += [
                    {"step": step, "norm": label, "loss": loss, "diverged": False, **r} for r in ics
                ]
            else:
                rows.append({"step": step, "norm": label, "loss": loss, "diverged": True})
                break
        if step == steps:
            break
        model.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= lr * p.grad
        bar.update()
    bar.close()
    return pd.DataFrame(rows)


@register(
    "ics_over_training",
    chapter="Internal covariate shift",
    smoke={"mlp_steps": 10, "linear_steps": 10, "points": 4},
    quick={"mlp_steps": 1000, "linear_steps": 2000, "points": 12},
    full={"mlp_steps": 10_000, "linear_steps": 10_000, "points": 24},
)
def ics_over_training(
    mlp_steps: int = 1000,
    linear_steps: int = 2000,
    lr: float = 0.5,
    linear_lr: float = 1e-6,
    depth: int = 25,
    width: int = 10,
    samples: int = 1000,
    batch_size: int = 60,
    points: int = 12,
    seed: int = 0,
    device: str | None = "cpu",
) -> pd.DataFrame:
    r"""Internal covariate shift (Santurkar et al. 2018) over training, with and without BN.

    Two networks, each trained with and without BN:

    - ``"MLP"``: the paper's MNIST network, plain SGD with ``lr`` and batches of
      ``batch_size``; ICS of each of its 4 weight matrices on the training batch of the
      step, with that step's update.
    - ``"deep linear"``: Santurkar et al.'s deep linear network, ``depth`` layers of
      ``width x width`` without biases, Glorot (Xavier normal) initialization, trained by
      full-batch gradient descent (``linear_lr``) to minimize
      :math:`\sum_n \|W_{25}\cdots W_1 x_n - A x_n\|^2` over ``samples`` Gaussian inputs,
      :math:`A` a random Gaussian matrix; ICS of every layer on the full batch.

    ICS is :func:`bnlib.probes.internal_covariate_shift`, measured at about ``points``
    log-spaced steps, before the step is taken, on the batch that step trains on, with
    every parameter of the earlier layers (biases and BN's :math:`\gamma, \beta`
    included) moved by that step's SGD update: Santurkar et al.'s Definition 2.1.

    Returns:
        Columns ``network, norm ("no BN" | "BN"), step, layer (0 = first), ics, cosine,
        grad_norm, loss`` (the loss on the measured batch), ``diverged``.
    """
    for name, value in (("mlp_steps", mlp_steps), ("linear_steps", linear_steps)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    arguments.check_number(lr, "lr", above=0)
    arguments.check_number(linear_lr, "linear_lr", above=0)
    dev = pick_device(device)
    frames = []
    train_split = datasets.load("mnist", "train", dev)
    for norm, label in (("none", "no BN"), ("bnlib", "BN")):
        seed_everything(seed)
        model = MLP(norm=norm, **IOFFE_MLP).to(dev)
        order = batch_indices(
            len(train_split.y),
            batch_size,
            mlp_steps + 1,
            torch.Generator().manual_seed(seed),
            train_split.x.device,
        )
        batches = ((train_split.x[i], train_split.y[i]) for i in order)
        frame = _train_measuring_ics(
            model,
            batches,
            steps=mlp_steps,
            lr=lr,
            loss_fn=nn.functional.cross_entropy,
            log_at=set(log_steps(mlp_steps, points)),
            label=label,
            desc=f"MLP {label}",
        )
        frames.append(frame.assign(network="MLP"))

    x, target = deep_linear_problem(samples=samples, width=width, seed=seed, device=dev)
    for norm, label in (("none", "no BN"), ("bnlib", "BN")):
        seed_everything(seed)
        model = deep_linear_network(norm, depth=depth, width=width).to(dev)
        frame = _train_measuring_ics(
            model,
            itertools.repeat((x, target)),
            steps=linear_steps,
            lr=linear_lr,
            loss_fn=deep_linear_loss,
            log_at=set(log_steps(linear_steps, points)),
            label=label,
            desc=f"deep linear {label}",
        )
        frames.append(frame.assign(network="deep linear"))
    out = pd.concat(frames, ignore_index=True)
    return out[
        ["network", "norm", "step", "layer", "ics", "cosine", "grad_norm", "loss", "diverged"]
    ]


NOISY_VARIANTS = {
    "standard": {"norm": "none", "noise": False},
    "BN": {"norm": "bnlib", "noise": False},
    "BN + noise": {"norm": "bnlib", "noise": True},
    "noise without BN": {"norm": "none", "noise": True},
}


@register(
    "noisy_bn",
    chapter="Internal covariate shift",
    smoke={"steps": 20, "seeds": [0, 1], "lrs": [0.1, 0.5], "points": 4},
    quick={"steps": 2000, "seeds": [0, 1, 2], "lrs": [0.1, 0.5], "points": 16},
    full={"steps": 20_000, "seeds": [0, 1, 2, 3, 4], "lrs": [0.05, 0.1, 0.5, 1.0], "points": 30},
    reproduce=Reproduction(
        subset={"seeds": [0, 1], "lrs": [0.05]},
        prefix=None,
        seed_spread=2.0,
        why=(
            "its measurements at the logged steps draw from the training noise's random "
            "stream, so a run logged at other steps trains with other noise; and the noise "
            "is drawn for all the stacked models at once, so no subset draws the full run's "
            "noise: the subset is compared within the seeds' spread"
        ),
    ),
)
def noisy_bn(
    steps: int = 2000,
    seeds: Sequence[int] = (0, 1, 2),
    lrs: Sequence[float] = (0.1, 0.5),
    batch_size: int = 60,
    units: Sequence[int] = (0, 1, 2, 3, 4),
    points: int = 16,
    device: str | None = "cpu",
) -> pd.DataFrame:
    r"""Santurkar et al.'s "noisy BN" on the paper's MNIST MLP.

    Four networks (:data:`NOISY_VARIANTS`): standard (no BN), BN, BN followed by
    :class:`bnlib.norm.DistributionNoise` (their Algorithm 1) on every hidden layer, and
    the same noise without BN. Each is trained with SGD (batches of 60) at every learning
    rate in ``lrs`` from every seed in ``seeds`` (one stack per network). At log-spaced
    steps: the training accuracy (10,000 training images, eval mode: no noise) and the
    percentiles of a few units' inputs to the last hidden sigmoid on a fixed probe batch
    in training mode, with the noise of the last training step (as the sigmoid saw it
    then; the probe does not draw its own per-unit noise).

    Returns:
        Columns ``variant, lr, seed, step, metric, value, channel, diverged``; metrics
        ``train accuracy``, ``loss`` (minibatch), ``p15``, ``p50``, ``p85``, ``mean``,
        ``std``.
    """
    dev = pick_device(device)
    train_split = datasets.load("mnist", "train", dev)
    subset = datasets.Split(train_split.x[:10_000], train_split.y[:10_000])
    probe_x = train_split.x[-1000:]
    frames = []
    for variant, config in NOISY_VARIANTS.items():
        log = _train_paper_mlps(
            config,
            seeds,
            lrs,
            batch_size,
            steps,
            points,
            variant,
            train_split,
            dev,
            [
                probes.test_accuracy(subset, metric="train accuracy"),
                probes.activation_stats(
                    probe_x,
                    ["norms.2"],
                    percentiles=(15, 50, 85),
                    per_channel=True,
                    units=units,
                    mode="train",
                ),
            ],
        )
        frames.append(log.assign(variant=variant))
    out = pd.concat(frames, ignore_index=True)
    return out[["variant", "lr", "seed", "step", "metric", "value", "channel", "diverged"]]
