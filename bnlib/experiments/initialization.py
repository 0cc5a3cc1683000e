r"""Random initialization: why unnormalized deep networks start broken, what BN changes,
and whether an initialization can replace it (chapter "Random initialization").

Most experiments here never train: they build fresh networks and measure them, so even
deep ones are cheap. In order of the chapter:

- :func:`output_collapse`: how much a fresh network's output depends on its input
  (Bjorck et al. 2018, Section 4);
- :func:`gaussian_products`, :func:`network_spectra`: singular values of products of
  random matrices against theory, and of real networks' Jacobians
  (:mod:`bnlib.spectra`);
- :func:`jacobians_over_training`: the hidden layers' Jacobians over the first training
  steps (Ioffe & Szegedy's conjecture, the NTU project's measurement);
- :func:`gradient_explosion`, :func:`depth_trainability`: BN's own gradient explosion at
  initialization (Yang et al. 2019) and what it does to training at depth;
- :func:`init_schemes`, :func:`residual_variance`, :func:`skipinit_sweep`: activation
  scale with depth under each initialization, the residual stream's growth (De & Smith
  2020), and the learning-rate sweep that asks whether SkipInit trains like BN.

Every measurement at initialization runs in train mode (BN normalizes with the batch's
own statistics, as in the first training step) and leaves the network unchanged.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from bnlib import data as datasets
from bnlib.device import pick_device, seed_everything
from bnlib.engine import accuracy, batch_indices, preserved_state, train
from bnlib.experiments import MEASURES_AT_END, Reproduction, register
from bnlib.experiments.learning_rate import final_rows, lr_grid, lr_sweep
from bnlib.models import MLP
from bnlib.progress import progress_bar
from bnlib.residual import FixupMLP, ResidualMLP
from bnlib.setups import HE_RELU_GAIN, cifar_resnet
from bnlib.spectra import (
    frozen_batch_statistics,
    gaussian_product_singular_values,
    hidden_jacobians,
    hidden_states,
    layer_jacobians,
)
from bnlib.step import channel_statistics

__all__ = [
    "INIT_SCHEMES",
    "depth_trainability",
    "fixup_sweep",
    "fresh_network",
    "gaussian_products",
    "gradient_explosion",
    "init_schemes",
    "jacobians_over_training",
    "majority_fraction",
    "network_spectra",
    "output_collapse",
    "residual_variance",
    "skipinit_sweep",
]


#: The initializations compared with depth, by label: (scheme of
#: :func:`bnlib.models.initialize`, gain). For ReLU, He et al.'s gain sqrt(2) keeps the
#: activations' scale; Xavier/Glorot's and PyTorch's default shrink it, a larger gain
#: grows it.
INIT_SCHEMES: dict[str, tuple[str, float]] = {
    "default": ("default", 1.0),
    "xavier": ("xavier", 1.0),
    "he": ("he", HE_RELU_GAIN),
    "orthogonal": ("orthogonal", HE_RELU_GAIN),
    "he x 1.2": ("he", 1.2 * HE_RELU_GAIN),
}


def _gain(activation: str) -> float:
    """The gain that keeps the activations' scale through a layer of ``activation``."""
    return HE_RELU_GAIN if activation == "relu" else 1.0


def majority_fraction(predictions: torch.Tensor) -> float:
    """The fraction of inputs assigned to the most frequent predicted class.

    Args:
        predictions: ``(N,)`` class indices.

    Returns:
        In ``[1/N, 1]``; 1 when every input gets the same class.
    """
    if predictions.numel() == 0:
        raise ValueError("no predictions: the statistic needs at least one input")
    return float(torch.bincount(predictions.flatten()).max()) / predictions.numel()


def _logit_statistics(logits: torch.Tensor) -> dict[str, float]:
    logits = logits.double()
    mean = logits.mean(0)  # (classes,)
    return {
        "majority": majority_fraction(logits.argmax(1)),
        # how much the logits move from input to input, against how far apart the
        # classes' average logits are: below 1, the input rarely changes the answer
        "input_spread": float(logits.std(0, unbiased=False).mean()),
        "class_offset": float(mean.std(unbiased=False)),
    }


@register(
    "output_collapse",
    chapter="Random initialization",
    shard_on=("seeds", "norms", "inits"),
    smoke={"mlp_depths": [2, 5], "residual_depths": [4], "resnet_depths": [8], "images": 64},
    quick={},
    full={"seeds": [0, 1, 2, 3, 4], "images": 2000},
    reproduce=Reproduction(
        subset={"seeds": [0], "mlp_depths": [5, 100], "residual_depths": [10], "resnet_depths": [8]}
    ),
)
def output_collapse(
    mlp_depths: Sequence[int] = (5, 10, 20, 50, 100),
    residual_depths: Sequence[int] = (10, 20, 50, 100),
    resnet_depths: Sequence[int] = (8, 20, 56, 110),
    norms: Sequence[str] = ("none", "torch"),
    inits: Sequence[str] = ("default", "he"),
    width: int = 100,
    images: int = 500,
    seeds: Sequence[int] = (0,),
    dataset: str = "fashion-mnist",
    device: str | None = None,
) -> pd.DataFrame:
    """How much a fresh network's output depends on its input, against depth.

    For each seed, architecture (``"mlp"``: a ReLU MLP of ``width`` units per hidden
    layer, depths ``mlp_depths``; ``"residual"``: :class:`bnlib.residual.ResidualMLP` of
    ``width`` with ``depth // 2`` blocks of two layers, depths ``residual_depths``;
    ``"resnet"``: He et al.'s CIFAR ResNet, depths ``resnet_depths``), normalization
    and initialization (``"default"``: PyTorch's; ``"he"``: N(0, 2/fan-in) for the MLPs,
    and for the ResNets the reference codes' N(0, 2/fan-out) on the convolutions with the
    classifier at PyTorch's default, :data:`bnlib.setups.RESNET_INITS`), a fresh
    network classifies the first ``images`` test images in one batch, in train mode, and
    is left unchanged.

    Returns:
        One row per (seed, architecture, depth, norm, init): ``majority`` (the fraction
        of images given the most frequent predicted class), ``input_spread`` (the
        logits' standard deviation across images, averaged over classes),
        ``class_offset`` (the standard deviation across classes of the logits' average
        over images) and ``ratio`` (``input_spread / class_offset``).
    """
    dev = pick_device(device)
    test = datasets.load(dataset, "test", dev)
    x = test.x[:images]
    configs = (
        [("mlp", d) for d in mlp_depths]
        + [("residual", d) for d in residual_depths]
        + [("resnet", d) for d in resnet_depths]
    )
    bar = progress_bar(len(seeds) * len(configs) * len(norms) * len(inits), "output collapse")
    rows = []
    for seed, (arch, depth), norm, init in itertools.product(seeds, configs, norms, inits):
        scheme, gain = INIT_SCHEMES[init]
        seed_everything(seed)
        if arch == "mlp":
            model = MLP(
                hidden=(width,) * depth, norm=norm, activation="relu", init=scheme, gain=gain
            )
        elif arch == "residual":
            model = ResidualMLP(width=width, blocks=depth // 2, norm=norm, init=scheme, gain=gain)
        else:  # the reference codes' recipe of the same name (bnlib.setups.RESNET_INITS)
            model = cifar_resnet(depth, norm=norm, init=init, in_channels=x.shape[1])
        model = model.to(dev)
        with preserved_state(model), torch.no_grad():
            model.train()
            logits = model(x)
        stats = _logit_statistics(logits)
        rows.append(
            {
                "seed": seed,
                "architecture": arch,
                "depth": depth,
                "norm": norm,
                "init": init,
                **stats,
                "ratio": stats["input_spread"] / stats["class_offset"],
            }
        )
        bar.update()
    bar.close()
    return pd.DataFrame(rows)


@register(
    "gaussian_products",
    chapter="Random initialization",
    shard_on=("depths",),
    smoke={"n": 50, "depths": [1, 3], "draws": 1},
    quick={},
    full={"n": 1000, "draws": 10},
    reproduce=Reproduction(subset={"depths": [1, 3]}),
)
def gaussian_products(
    n: int = 500,
    depths: Sequence[int] = tuple(range(1, 11)),
    draws: int = 4,
    seed: int = 0,
) -> pd.DataFrame:
    r"""Singular values of products of ``depth`` independent ``n x n`` Gaussian matrices
    with entries :math:`\mathcal N(0, 1/n)`
    (:func:`bnlib.spectra.gaussian_product_singular_values`).

    Returns:
        One row per (depth, draw, singular value): ``depth, draw, index`` (0 = largest),
        ``value``.
    """
    frames = []
    for depth in depths:
        values = gaussian_product_singular_values(n, depth, draws=draws, seed=seed)
        draw, index = np.meshgrid(np.arange(draws), np.arange(n), indexing="ij")
        frames.append(
            pd.DataFrame(
                {
                    "depth": depth,
                    "draw": draw.ravel(),
                    "index": index.ravel(),
                    "value": values.ravel(),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _jacobian_rows(jacobians: torch.Tensor, where: dict) -> list[dict]:
    values = torch.linalg.svdvals(jacobians.double()).cpu().numpy()  # (B, n)
    return [
        {**where, "example": e, "index": i, "value": float(v)}
        for e, row in enumerate(values)
        for i, v in enumerate(row)
    ]


@register(
    "network_spectra",
    chapter="Random initialization",
    shard_on=("seeds", "depths", "activations", "norms"),
    smoke={"depths": [1, 3], "width": 32, "examples": 4, "batch_size": 64},
    quick={"depths": [1, 3, 5, 10, 50]},
    full={
        "depths": [1, 3, 5, 10, 20, 50, 100],
        "width": 400,
        "examples": 8,
        "seeds": [0, 1, 2],
    },
    reproduce=Reproduction(subset={"depths": [1, 3], "seeds": [0], "activations": ["linear"]}),
)
def network_spectra(
    depths: Sequence[int] = (1, 3, 5, 10),
    width: int = 256,
    activations: Sequence[str] = ("linear", "relu"),
    norms: Sequence[str] = ("none", "torch"),
    examples: int = 16,
    batch_size: int = 256,
    seeds: Sequence[int] = (0,),
    dataset: str = "fashion-mnist",
    device: str | None = None,
) -> pd.DataFrame:
    r"""Singular values of fresh MLPs' Jacobians across ``depth`` hidden layers.

    Each network has ``depth + 1`` hidden layers of ``width`` units (He et al.'s
    initialization with the gain that keeps the activations' scale: 1 for linear, sqrt(2)
    for ReLU). The Jacobian :math:`\partial h_{\text{depth}+1} / \partial h_1` spans
    ``depth`` square weight matrices, as the Gaussian products of
    :func:`gaussian_products` do. BN normalizes with the statistics of a training batch of
    ``batch_size`` held fixed (:func:`bnlib.spectra.frozen_batch_statistics`); the
    Jacobian is taken at that batch's first ``examples`` examples.

    Returns:
        One row per (seed, activation, norm, depth, example, singular value): ``seed,
        activation, norm, depth, example, index`` (0 = largest), ``value``.
    """
    dev = pick_device(device)
    data = datasets.load(dataset, "train", dev)
    rows: list[dict] = []
    bar = progress_bar(len(seeds) * len(activations) * len(norms) * len(depths), "spectra")
    for seed, act, norm, depth in itertools.product(seeds, activations, norms, depths):
        idx = next(
            batch_indices(len(data.y), batch_size, 1, torch.Generator().manual_seed(seed), dev)
        )
        x = data.x[idx]
        seed_everything(seed)
        model = MLP(
            hidden=(width,) * (depth + 1), activation=act, norm=norm, init="he", gain=_gain(act)
        ).to(dev)
        with frozen_batch_statistics(model, x):
            h1 = hidden_states(model, x)[1][:examples]
            jac = hidden_jacobians(model, h1, 1, depth + 1)
        where = {"seed": seed, "activation": act, "norm": norm, "depth": depth}
        rows += _jacobian_rows(jac, where)
        bar.update()
    bar.close()
    return pd.DataFrame(rows)


#: The full profile of the Jacobians over training, shared by its two controls.
_JACOBIANS_FULL = {"checkpoints": [0, 10, 100, 1000, 10000], "examples": 16, "seeds": [0, 1, 2]}
_JACOBIANS_SMOKE = {"checkpoints": [0, 5], "examples": 4}
#: Control: the ReLU network at a learning rate ten times smaller, where it trains without BN.
_RELU_SMALL_LR = {"activations": ["relu"], "lr": 0.064}
#: Control: the sigmoid network without BN, its weights scaled by 4 = 1 / sigmoid'(0).
_SIGMOID_GAIN = {"activations": ["sigmoid"], "norms": ["none"], "gain": 4.0}


@register(
    "jacobians_over_training",
    chapter="Random initialization",
    shard_on=("seeds", "activations", "norms"),
    smoke=_JACOBIANS_SMOKE,
    quick={},
    full=_JACOBIANS_FULL,
    reproduce=Reproduction(
        subset={"seeds": [0], "activations": ["sigmoid"]}, prefix={"checkpoints": [0, 10, 100]}
    ),
)
@register(
    "jacobians_relu_small_lr",
    chapter="Random initialization",
    shard_on=("seeds", "norms"),
    smoke={**_JACOBIANS_SMOKE, **_RELU_SMALL_LR},
    quick=_RELU_SMALL_LR,
    full={**_JACOBIANS_FULL, **_RELU_SMALL_LR},
    reproduce=Reproduction(subset={"seeds": [0]}, prefix={"checkpoints": [0, 10, 100]}),
)
@register(
    "jacobians_sigmoid_gain",
    chapter="Random initialization",
    shard_on=("seeds",),  # not checkpoints: each would train the run again
    smoke={**_JACOBIANS_SMOKE, **_SIGMOID_GAIN},
    quick=_SIGMOID_GAIN,
    full={**_JACOBIANS_FULL, **_SIGMOID_GAIN},
    reproduce=Reproduction(subset={"seeds": [0]}, prefix={"checkpoints": [0, 10, 100]}),
)
def jacobians_over_training(
    activations: Sequence[str] = ("sigmoid", "relu"),
    norms: Sequence[str] = ("none", "torch"),
    hidden: Sequence[int] = (100, 100, 100),
    checkpoints: Sequence[int] = (0, 10, 100, 1000),
    lr: float = 0.64,
    batch_size: int = 64,
    examples: int = 32,
    seeds: Sequence[int] = (0,),
    dataset: str = "mnist",
    gain: float | None = None,
    device: str | None = None,
) -> pd.DataFrame:
    r"""Singular values of an MLP's hidden-layer Jacobians over training.

    For each seed, activation and normalization, an MLP with ``hidden`` layers (He et
    al.'s initialization scaled by ``gain``; by default the activation's: sqrt(2) for ReLU,
    1 otherwise)
    trains with plain SGD at ``lr`` on mini-batches of ``batch_size`` (the NTU project's
    gradient descent at 0.01 on a *summed* loss over 64 examples is a mean loss at 0.64).
    After each step in ``checkpoints`` (0 = at initialization), on a fixed batch of 256
    training images: BN's statistics are those of that batch, held fixed
    (:func:`bnlib.spectra.frozen_batch_statistics`), and the per-example Jacobians of each
    hidden layer after the first (:math:`\partial h_{i+1} / \partial h_i`) and across all
    of them (:math:`\partial h_L / \partial h_1`) are taken at its first ``examples``
    images. Measuring leaves the model unchanged.

    Returns:
        One row per (seed, activation, norm, step, Jacobian, example, singular value):
        ``seed, activation, norm, step, jacobian`` (``"layer i"`` for
        :math:`\partial h_i / \partial h_{i-1}`, 1-based, or ``"end to end"``),
        ``example, index, value``, and ``diverged`` (training had stopped on a non-finite
        loss at or before that step).
    """
    dev = pick_device(device)
    data = datasets.load(dataset, "train", dev)
    probe = data.x[torch.randperm(len(data.y), generator=torch.Generator().manual_seed(1))[:256]]
    depth = len(hidden)
    rows: list[dict] = []
    for seed, act, norm in itertools.product(seeds, activations, norms):
        seed_everything(seed)
        scale = _gain(act) if gain is None else gain
        model = MLP(hidden=tuple(hidden), activation=act, norm=norm, init="he", gain=scale)
        model = model.to(dev)
        where = {"seed": seed, "activation": act, "norm": norm}

        def measure(step, model, loss, where=where):
            with frozen_batch_statistics(model, probe):
                states = hidden_states(model, probe)
                pairs = [(f"layer {i + 1}", i, i + 1) for i in range(1, depth)]
                pairs.append(("end to end", 1, depth))
                out = []
                for name, start, stop in pairs:
                    jac = hidden_jacobians(model, states[start][:examples], start, stop)
                    out += _jacobian_rows(jac, {**where, "jacobian": name})
            return out

        log = train(
            model,
            data,
            steps=max(checkpoints),
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            log_at=list(checkpoints),
            log=measure,
            desc=f"Jacobians ({act}, {norm})",
        )
        rows += log.drop(columns="loss").to_dict("records")
    return pd.DataFrame(rows)


@register(
    "gradient_explosion",
    chapter="Random initialization",
    shard_on=("seeds", "depths", "norms", "architectures"),
    smoke={"depths": [4, 8], "width": 32, "batch_size": 32},
    quick={},
    full={"width": 500, "seeds": [0, 1, 2, 3, 4]},
    reproduce=Reproduction(subset={"seeds": [0], "depths": [10, 25]}),
)
def gradient_explosion(
    depths: Sequence[int] = (10, 25, 50, 100),
    width: int = 256,
    norms: Sequence[str] = ("none", "torch"),
    architectures: Sequence[str] = ("mlp", "residual"),
    batch_size: int = 128,
    seeds: Sequence[int] = (0,),
    dataset: str = "fashion-mnist",
    device: str | None = None,
) -> pd.DataFrame:
    r"""The gradient's size at each layer at initialization, against depth.

    For each seed, architecture, normalization and depth: a fresh ReLU network with He
    et al.'s initialization, ``"mlp"`` (``depth`` hidden layers of ``width``, BN after
    each linear layer) or ``"residual"`` (:class:`bnlib.residual.ResidualMLP`, ``depth //
    2`` blocks of two layers, so about the same number of layers), computes the mean
    cross-entropy's gradient on one training batch of ``batch_size`` in train mode; the
    model is left unchanged.

    Returns:
        One row per (seed, architecture, norm, depth, layer): ``seed, architecture,
        norm, depth, layer`` (1 = the first hidden layer's weights, counting the linear
        layers of the hidden part in order) and ``grad_sq`` (the squared Frobenius norm
        of the loss's gradient with respect to that layer's weight matrix).
    """
    dev = pick_device(device)
    data = datasets.load(dataset, "train", dev)
    rows: list[dict] = []
    grid = list(itertools.product(seeds, architectures, norms, depths))
    bar = progress_bar(len(grid), "gradient norms")
    for seed, arch, norm, depth in grid:
        idx = next(
            batch_indices(len(data.y), batch_size, 1, torch.Generator().manual_seed(seed), dev)
        )
        seed_everything(seed)
        if arch == "mlp":
            model = MLP(
                hidden=(width,) * depth, activation="relu", norm=norm, init="he", gain=HE_RELU_GAIN
            )
            weights = [lin.weight for lin in model.linears]
        elif arch == "residual":
            model = ResidualMLP(width=width, blocks=depth // 2, norm=norm)
            weights = [model.stem.weight] + [
                layer.weight
                for block in model.blocks
                for layer in block.branch
                if isinstance(layer, nn.Linear)
            ]
        else:
            raise ValueError(f"unknown architecture {arch!r}: use 'mlp' or 'residual'")
        model = model.to(dev)
        with preserved_state(model):
            model.train()
            loss = nn.functional.cross_entropy(model(data.x[idx]), data.y[idx])
            grads = torch.autograd.grad(loss, weights)
        for layer, g in enumerate(grads, start=1):
            rows.append(
                {
                    "seed": seed,
                    "architecture": arch,
                    "norm": norm,
                    "depth": depth,
                    "layer": layer,
                    "grad_sq": float(g.double().pow(2).sum()),
                }
            )
        bar.update()
    bar.close()
    return pd.DataFrame(rows)


@register(
    "depth_trainability",
    chapter="Random initialization",
    shard_on=("seeds", "depths", "norms"),
    smoke={"depths": [2, 4], "lr_count": 1, "steps": 5, "width": 16},
    quick={},
    full={"depths": [5, 10, 25, 50, 100], "steps": 2000, "seeds": [0, 1]},
    reproduce=Reproduction(subset={"depths": [5, 25]}, prefix=None, why=MEASURES_AT_END),
)
def depth_trainability(
    depths: Sequence[int] = (5, 10, 25, 50),
    lr_range: Sequence[float] = (0.01, 1.0),
    lr_count: int = 3,
    norms: Sequence[str] = ("none", "torch"),
    width: int = 100,
    steps: int = 500,
    batch_size: int = 128,
    seeds: Sequence[int] = (0,),
    dataset: str = "fashion-mnist",
    device: str | None = None,
) -> pd.DataFrame:
    """Test accuracy of deep ReLU MLPs after a short training, against depth.

    For each depth, :func:`bnlib.experiments.learning_rate.lr_sweep` trains ReLU MLPs of
    ``depth`` hidden layers of ``width`` (He et al.'s initialization, plain SGD) at
    ``lr_count`` learning rates log-spaced over ``lr_range``, with and without BN, for
    ``steps`` steps of ``batch_size``.

    Returns:
        One row per model: ``norm, depth, lr, seed, test_accuracy, train_accuracy``
        (eval mode), ``diverged`` (the loss became non-finite or exceeded 1e3 times its
        first value).
    """
    frames = []
    for depth in depths:
        sweep = lr_sweep(
            architecture="mlp",
            config={"hidden": (width,) * depth, "activation": "relu"},
            dataset=dataset,
            lr_range=lr_range,
            lr_count=lr_count,
            seeds=seeds,
            steps=steps,
            batch_size=batch_size,
            norms=norms,
            init="he",
            gain=HE_RELU_GAIN,
            device=device,
        )
        frames.append(final_rows(sweep).assign(depth=depth))
    columns = ["norm", "depth", "lr", "seed", "test_accuracy", "train_accuracy", "diverged"]
    return pd.concat(frames, ignore_index=True)[columns]


@register(
    "init_schemes",
    chapter="Random initialization",
    shard_on=("seeds", "schemes", "norms"),
    smoke={"depth": 6, "width": 32, "batch_size": 32},
    quick={},
    full={"depth": 100, "width": 500, "seeds": [0, 1, 2, 3, 4]},
    reproduce=Reproduction(subset={"seeds": [0]}),
)
def init_schemes(
    depth: int = 50,
    width: int = 256,
    schemes: Sequence[str] = tuple(INIT_SCHEMES),
    norms: Sequence[str] = ("none", "torch"),
    batch_size: int = 256,
    seeds: Sequence[int] = (0,),
    dataset: str = "fashion-mnist",
    device: str | None = None,
) -> pd.DataFrame:
    """The activations' scale against depth at initialization, for each initialization.

    For each seed, scheme (:data:`INIT_SCHEMES`) and normalization, a fresh ReLU MLP of
    ``depth`` hidden layers of ``width`` sees one training batch in train mode; the
    model is left unchanged.

    Returns:
        One row per (seed, scheme, norm, layer): ``seed, scheme, norm, layer`` (1-based)
        and ``rms`` (the root mean square of that hidden layer's output over the batch
        and the units).
    """
    dev = pick_device(device)
    data = datasets.load(dataset, "train", dev)
    rows = []
    for seed, scheme, norm in itertools.product(seeds, schemes, norms):
        idx = next(
            batch_indices(len(data.y), batch_size, 1, torch.Generator().manual_seed(seed), dev)
        )
        kind, gain = INIT_SCHEMES[scheme]
        seed_everything(seed)
        model = MLP(hidden=(width,) * depth, activation="relu", norm=norm, init=kind, gain=gain)
        model = model.to(dev)
        with preserved_state(model):
            model.train()
            states = hidden_states(model, data.x[idx])
        rows += [
            {
                "seed": seed,
                "scheme": scheme,
                "norm": norm,
                "layer": layer,
                "rms": float(h.double().pow(2).mean().sqrt()),
            }
            for layer, h in enumerate(states[1:], start=1)
        ]
    return pd.DataFrame(rows)


@register(
    "residual_variance",
    chapter="Random initialization",
    shard_on=("seeds", "norms"),
    smoke={"blocks": 4, "width": 32, "batch_size": 32},
    quick={},
    full={"blocks": 100, "width": 500, "seeds": [0, 1, 2, 3, 4]},
    reproduce=Reproduction(subset={"seeds": [0]}),
)
def residual_variance(
    blocks: int = 50,
    width: int = 256,
    norms: Sequence[str] = ("none", "torch"),
    batch_size: int = 256,
    seeds: Sequence[int] = (0,),
    dataset: str = "fashion-mnist",
    device: str | None = None,
) -> pd.DataFrame:
    r"""The residual stream's size and the branches' against the number of blocks, at
    initialization (De & Smith 2020).

    For each seed and normalization, a fresh :class:`bnlib.residual.ResidualMLP` (ReLU,
    He et al.'s initialization) sees one training batch in train mode; the model is left
    unchanged.

    Returns:
        One row per (seed, norm, block): ``seed, norm, block`` (0 = the stream entering
        the first block, :math:`h_0`; ``b`` = :math:`h_b`, after block ``b``),
        ``stream`` (the mean over units of :math:`h_b`'s variance over the batch) and
        ``branch`` (the same for the output of block ``b``'s branch,
        :math:`f_{b-1}(h_{b-1})`; NaN at block 0).
    """
    dev = pick_device(device)
    data = datasets.load(dataset, "train", dev)
    rows = []
    for seed, norm in itertools.product(seeds, norms):
        idx = next(
            batch_indices(len(data.y), batch_size, 1, torch.Generator().manual_seed(seed), dev)
        )
        seed_everything(seed)
        model = ResidualMLP(width=width, blocks=blocks, norm=norm).to(dev)
        modules = {"stream 0": model.stem}
        for b, block in enumerate(model.blocks, start=1):
            modules[f"stream {b}"] = block
            modules[f"branch {b}"] = block.branch
        stats = channel_statistics(model, data.x[idx], modules)
        for b in range(blocks + 1):
            branch = stats.get(f"branch {b}")
            rows.append(
                {
                    "seed": seed,
                    "norm": norm,
                    "block": b,
                    "stream": float(stats[f"stream {b}"][1].mean()),
                    "branch": float(branch[1].mean()) if branch else float("nan"),
                }
            )
    return pd.DataFrame(rows)


#: The networks of :func:`skipinit_sweep`, by label: (normalization, SkipInit).
SKIPINIT_VARIANTS = {"none": ("none", False), "bn": ("torch", False), "skipinit": ("none", True)}
#: The residual sweeps' profiles (SkipInit's and Fixup's run on the same grid and seeds).
_RESIDUAL_SWEEP_SMOKE = {"lr_count": 2, "steps": 5, "blocks": 2, "width": 16}
_RESIDUAL_SWEEP_FULL = {
    "blocks": 32,
    "lr_range": [1e-4, 3.16],
    "lr_count": 10,
    "steps": 2340,
    "seeds": [0, 1, 2],
}


@register(
    "skipinit_sweep",
    chapter="Random initialization",
    shard_on=("seeds", "variants"),
    smoke=_RESIDUAL_SWEEP_SMOKE,
    quick={},
    full=_RESIDUAL_SWEEP_FULL,
    reproduce=Reproduction(
        subset={"seeds": [0], "variants": ["skipinit"]}, prefix=None, why=MEASURES_AT_END
    ),
)
def skipinit_sweep(
    variants: Sequence[str] = tuple(SKIPINIT_VARIANTS),
    lr_range: Sequence[float] = (1e-3, 3.16),
    lr_count: int = 8,
    blocks: int = 8,
    width: int = 100,
    steps: int = 600,
    batch_size: int = 128,
    momentum: float = 0.9,
    seeds: Sequence[int] = (0,),
    dataset: str = "fashion-mnist",
    device: str | None = None,
) -> pd.DataFrame:
    """Test accuracy against the learning rate of a residual network with BN, without,
    and without BN but with SkipInit.

    For each variant (:data:`SKIPINIT_VARIANTS`), learning rate (``lr_count`` values
    log-spaced over ``lr_range``) and seed, a :class:`bnlib.residual.ResidualMLP` of
    ``blocks`` blocks of ``width`` (ReLU, He et al.'s initialization) trains with SGD
    (``momentum``) for ``steps`` steps of ``batch_size``
    (:func:`bnlib.engine.train`, which stops a run whose loss is no longer finite).

    Returns:
        One row per run: ``variant, lr, seed, test_accuracy`` (eval mode, the whole test
        split; NaN for a diverged run), ``final_loss`` (the last mini-batch loss) and
        ``diverged``.
    """
    for variant in variants:
        if variant not in SKIPINIT_VARIANTS:
            raise ValueError(f"unknown variant {variant!r}: use one of {list(SKIPINIT_VARIANTS)}")

    def build(variant: str) -> nn.Module:
        norm, skip = SKIPINIT_VARIANTS[variant]
        return ResidualMLP(width=width, blocks=blocks, norm=norm, skipinit=skip)

    return _residual_sweep(
        build,
        variants,
        lrs=lr_grid(*lr_range, lr_count),
        steps=steps,
        batch_size=batch_size,
        momentum=momentum,
        seeds=seeds,
        dataset=dataset,
        device=device,
    )


def _residual_sweep(
    build: Callable[[str], nn.Module],
    variants: Sequence[str],
    *,
    lrs: Sequence[float],
    steps: int,
    batch_size: int,
    momentum: float,
    seeds: Sequence[int],
    dataset: str,
    device: str | None,
) -> pd.DataFrame:
    """Train ``build(variant)`` (built from each seed) at every learning rate of ``lrs``
    and return one row per run: ``variant, lr, seed, test_accuracy, final_loss,
    diverged``."""
    dev = pick_device(device)
    train_split = datasets.load(dataset, "train", dev)
    test = datasets.load(dataset, "test", dev)
    rows = []
    for variant, lr, seed in itertools.product(variants, lrs, seeds):
        seed_everything(seed)
        model = build(variant).to(dev)
        log = train(
            model,
            train_split,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            momentum=momentum,
            seed=seed,
            log_at=[steps],
            log=lambda step, model, loss: {},
            desc=f"{variant}, lr {lr:.2g}",
        )
        diverged = bool(log["diverged"].any()) if len(log) else False
        final = log["loss"].iloc[-1] if len(log) else float("nan")
        rows.append(
            {
                "variant": variant,
                "lr": lr,
                "seed": seed,
                "test_accuracy": float("nan") if diverged else accuracy(model.eval(), test),
                "final_loss": float(final),
                "diverged": diverged,
            }
        )
    return pd.DataFrame(rows)


@register(
    "fixup_sweep",
    chapter="Random initialization",
    smoke=_RESIDUAL_SWEEP_SMOKE,
    quick={},
    # one seed of SkipInit's three: the 32-block network trains at about 40 steps a second
    # on the 2-core CPU, and three seeds did not fit the session that added Fixup
    full={**_RESIDUAL_SWEEP_FULL, "seeds": [0]},
    reproduce=Reproduction(subset={"seeds": [0]}, prefix=None, why=MEASURES_AT_END),
)
def fixup_sweep(
    lr_range: Sequence[float] = (1e-3, 3.16),
    lr_count: int = 8,
    blocks: int = 8,
    width: int = 100,
    steps: int = 600,
    batch_size: int = 128,
    momentum: float = 0.9,
    seeds: Sequence[int] = (0,),
    dataset: str = "fashion-mnist",
    device: str | None = None,
) -> pd.DataFrame:
    """Test accuracy against the learning rate of the residual network of
    :func:`skipinit_sweep` without BN, initialized by Fixup instead
    (:class:`bnlib.residual.FixupMLP`), on the same grid, steps and seeds.

    Returns:
        One row per run, as :func:`skipinit_sweep`'s, with ``variant == "fixup"``.
    """
    return _residual_sweep(
        lambda variant: FixupMLP(width=width, blocks=blocks),
        ["fixup"],
        lrs=lr_grid(*lr_range, lr_count),
        steps=steps,
        batch_size=batch_size,
        momentum=momentum,
        seeds=seeds,
        dataset=dataset,
        device=device,
    )


def fresh_network(
    depth: int = 20,
    width: int = 128,
    init: str = "he",
    gain_factor: float = 1.0,
    norm: str = "none",
    residual: bool = False,
    activation: str = "relu",
    examples: int = 8,
    batch_size: int = 256,
    images: int = 500,
    seed: int = 0,
    dataset: str = "fashion-mnist",
    device: str | None = None,
) -> pd.DataFrame:
    r"""Everything the chapter measures on one fresh network, for its explorer: no
    training, a few seconds on a CPU.

    The network: a plain MLP of ``depth`` hidden layers of ``width``, or (``residual``)
    a :class:`bnlib.residual.ResidualMLP` of ``depth // 2`` blocks of two layers;
    ``activation``, ``norm``; initialization ``init`` (a key of :data:`INIT_SCHEMES`
    without ``"he x 1.2"``) with its gain times ``gain_factor``, where He's and the
    orthogonal scheme's gain is the one that keeps the scale through ``activation``
    (sqrt(2) for ReLU, else 1).

    Measured on one training batch of ``batch_size`` with BN's statistics held fixed
    (:func:`bnlib.spectra.frozen_batch_statistics`): the root mean square of each
    hidden layer's output (residual: of the stream :math:`h_b`), and the singular values
    of the Jacobian from the first hidden layer's output to the last (residual: from
    :math:`h_0` to :math:`h_B`) at ``examples`` examples. On the first ``images`` test
    images, in train mode: the share given the most frequent class. The model is left
    unchanged.

    Returns:
        Rows ``quantity, layer, index, value``: ``"rms"`` per ``layer``,
        ``"singular value"`` per ``index`` (examples pooled), one ``"majority"`` row.

    Raises:
        ValueError: depth below 2 (4 with ``residual``), or an unknown scheme.
    """
    if init not in INIT_SCHEMES or init == "he x 1.2":
        raise ValueError(f"unknown initialization {init!r}: use default, xavier, he or orthogonal")
    if depth < (4 if residual else 2):
        raise ValueError(
            f"depth {depth} is too shallow: the Jacobian spans the layers after the first, "
            "so use at least 2 layers (4 with residual blocks of two layers)"
        )
    dev = pick_device(device)
    data = datasets.load(dataset, "train", dev)
    test = datasets.load(dataset, "test", dev)
    scheme = INIT_SCHEMES[init][0]
    gain = (_gain(activation) if init in ("he", "orthogonal") else 1.0) * gain_factor
    seed_everything(seed)
    if residual:
        model = ResidualMLP(
            width=width,
            blocks=depth // 2,
            norm=norm,
            activation=activation,
            init=scheme,
            gain=gain,
        )
    else:
        model = MLP(
            hidden=(width,) * depth, activation=activation, norm=norm, init=scheme, gain=gain
        )
    model = model.to(dev)
    idx = next(batch_indices(len(data.y), batch_size, 1, torch.Generator().manual_seed(seed), dev))
    x = data.x[idx]
    with frozen_batch_statistics(model, x):
        if residual:
            with torch.no_grad():
                states = [model.stem(x.flatten(1))]
                for block in model.blocks:
                    states.append(block(states[-1]))
            jac = layer_jacobians(model, list(model.blocks), states[0][:examples])
        else:
            states = hidden_states(model, x)[1:]
            jac = hidden_jacobians(model, states[0][:examples], 1, depth)
    with preserved_state(model), torch.no_grad():
        model.train()
        majority = majority_fraction(model(test.x[:images]).argmax(1))
    rows = [
        {"quantity": "rms", "layer": layer, "value": float(h.double().pow(2).mean().sqrt())}
        for layer, h in enumerate(states, start=0 if residual else 1)
    ]
    values = torch.linalg.svdvals(jac.double()).flatten().cpu().tolist()
    rows += [{"quantity": "singular value", "index": i, "value": v} for i, v in enumerate(values)]
    rows.append({"quantity": "majority", "value": majority})
    return pd.DataFrame(rows)
