"""Why an unnormalized deep network cannot take large steps (Bjorck et al. 2018,
Sections 2-3): one gradient step measured on CIFAR-style ResNets at the start of training.

Each experiment builds fresh ResNets (He et al.'s CIFAR design, ``6n + 2`` layers) with
and without BN and measures, with :mod:`bnlib.step`, what one SGD update does: the loss
along the step (:func:`relative_loss`), the activations' channel statistics with depth
(:func:`activation_growth`) and along a diverging step (:func:`activations_along_step`),
and the gradients that start it (:func:`gradients_at_init`). None of them trains for
more than a few steps, so even ResNet-110 is cheap.

Initialization decides whether the effect appears. The networks and their recipes are
:func:`bnlib.setups.cifar_resnet` and :data:`bnlib.setups.RESNET_INITS`: ``"he"`` is the
ResNet reference codes' (He's :math:`\\mathcal N(0, 2/\\text{fan-out})` on every
convolution, the classifier at PyTorch's default), ``"he-fan-in"`` the fan-in variant
this book used before, ``"default"`` PyTorch's layer defaults. :func:`init_ablation`
measures which detail of the recipe matters.

Every experiment here takes ``dataset``, any name :func:`bnlib.datasets.load` takes:
Fashion-MNIST by default (the book's), CIFAR-10 (``"cifar10"``) where a reader has it;
the ResNets take as many input channels as the images have.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from bnlib import datasets
from bnlib.device import pick_device, seed_everything
from bnlib.engine import batch_indices
from bnlib.experiments import Reproduction, register
from bnlib.models import ResNet
from bnlib.progress import progress_bar
from bnlib.setups import ResNetRecipe, cifar_resnet
from bnlib.step import (
    DIVERGENCE_RATIO,
    channel_statistics,
    gradient,
    moved,
    output_gradients,
    relative_losses,
)

__all__ = [
    "activation_growth",
    "activations_along_step",
    "gradient_alignment",
    "gradients_at_init",
    "init_ablation",
    "relative_loss",
]


def _resnet(
    depth: int, norm: str, init: str | ResNetRecipe, in_channels: int, seed: int, device
) -> ResNet:
    seed_everything(seed)
    return cifar_resnet(depth, norm=norm, init=init, in_channels=in_channels).to(device)


def _blocks(model: ResNet) -> dict[int, torch.nn.Module]:
    """The residual blocks by the number of the layer that ends them (the stem is layer
    1; block ``i`` ends at layer ``2 i + 3``)."""
    return {2 * i + 3: block for i, block in enumerate(model.blocks)}


@register(
    "relative_loss",
    chapter="Large learning rates",
    shard_on=("seeds", "depths", "norms", "batches", "inits"),
    smoke={
        "depths": [8, 14],
        "inits": ["he", "he-fan-in"],
        "step_count": 4,
        "batches": [1, 2],
        "batch_size": 16,
    },
    quick={"depths": [20, 56, 110], "inits": ["he", "he-fan-in"]},
    full={"depths": [20, 56, 110], "inits": ["he", "he-fan-in"], "seeds": [0, 1, 2]},
    reproduce=Reproduction(
        subset={"depths": [20], "inits": ["he"], "seeds": [0]},
        prefix=None,
        why=(
            "its probes follow a few training steps, which amplify float32 differences "
            "between CPUs: on a Zen 3 CPU with AVX2 only, the committed result's first rows "
            "come out up to 10% apart at batch 7 (0.8% at batch 4, 4e-4 at batch 1) by the "
            "code that computed it, so its first steps are no check; its code hash is"
        ),
    ),
)
def relative_loss(
    depths: Sequence[int] = (20, 56),
    norms: Sequence[str] = ("none", "torch"),
    lr_none: float = 1e-4,
    lr_bn: float = 0.1,
    step_range: Sequence[float] = (1e-5, 1.0),
    step_count: int = 21,
    batches: Sequence[int] = (1, 4, 7),
    batch_size: int = 128,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    inits: Sequence[str] = ("he",),
    seeds: Sequence[int] = (0,),
    dataset: str = "fashion-mnist",
    device: str | None = None,
) -> pd.DataFrame:
    r"""Relative loss of one gradient step against its size, early in training.

    For each seed, initialization (:data:`bnlib.setups.RESNET_INITS`), normalization and
    depth, a
    ResNet trains with SGD (``momentum``,
    ``weight_decay``) at its normal learning rate (``lr_bn`` with BN, ``lr_none``
    without: Bjorck et al.'s 0.1 and 1e-4); before training on mini-batch ``k`` for each
    ``k`` in ``batches`` (1 = at initialization), the probe
    :func:`bnlib.step.relative_losses` measures :math:`L(\theta - \eta g)/L(\theta)` on
    that mini-batch for ``step_count`` step sizes :math:`\eta` log-spaced over
    ``step_range``.

    Returns:
        One row per (seed, init, norm, depth, batch, step size): ``seed, init, norm,
        depth, batch, loss_before`` (the mini-batch loss before the step; not finite when
        training at the normal learning rate has already broken the network),
        ``step_size, relative_loss, diverged`` (relative loss above
        :data:`bnlib.step.DIVERGENCE_RATIO` or not finite).
    """
    dev = pick_device(device)
    train = datasets.load(dataset, "train", dev)
    steps = [float(v) for v in np.geomspace(*step_range, step_count)]
    last = max(batches)
    bar = progress_bar(len(seeds) * len(inits) * len(norms) * len(depths) * last, "relative loss")
    rows = []
    for seed, init, norm, depth in itertools.product(seeds, inits, norms, depths):
        model = _resnet(depth, norm, init, train.x.shape[1], seed, dev)
        lr = lr_bn if norm != "none" else lr_none
        optimizer = torch.optim.SGD(
            model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
        )
        generator = torch.Generator().manual_seed(seed)
        order = batch_indices(len(train.y), batch_size, last, generator, dev)
        for k, idx in enumerate(order, start=1):
            x, y = train.x[idx], train.y[idx]
            if k in batches:
                where = {"seed": seed, "init": init, "norm": norm, "depth": depth, "batch": k}
                before, ratios = relative_losses(model, x, y, steps)
                rows += [
                    {
                        **where,
                        "loss_before": before,
                        "step_size": eta,
                        "relative_loss": ratio,
                        "diverged": not ratio <= DIVERGENCE_RATIO,
                    }
                    for eta, ratio in zip(steps, ratios)
                ]
            model.train()  # one training step at the network's normal learning rate
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            bar.update()
    bar.close()
    return pd.DataFrame(rows)


@register(
    "activation_growth",
    chapter="Large learning rates",
    shard_on=("seeds", "norms", "inits"),
    smoke={"depth": 14, "batch_size": 16},
    quick={"depth": 110},
    full={"depth": 110, "seeds": [0, 1, 2, 3, 4], "batch_size": 512},
    reproduce=Reproduction(subset={"seeds": [0], "inits": ["he"]}),
)
def activation_growth(
    depth: int = 110,
    norms: Sequence[str] = ("none", "torch"),
    inits: Sequence[str] = ("he", "he-fan-in", "lecun", "default"),
    batch_size: int = 128,
    seeds: Sequence[int] = (0,),
    dataset: str = "fashion-mnist",
    device: str | None = None,
) -> pd.DataFrame:
    """Size of the activations against depth at initialization.

    For each seed, normalization and initialization (:data:`bnlib.setups.RESNET_INITS`), a
    fresh ResNet of ``depth`` layers
    sees one training mini-batch (train mode); at the output of every residual block the
    per-channel means and standard deviations are taken over the batch and the positions.

    Returns:
        One row per (seed, norm, init, block): ``seed, norm, init, layer`` (the layer that
        ends the block), ``mean_abs`` (mean over channels of the absolute channel mean)
        and ``std`` (mean over channels of the channel standard deviation).
    """
    dev = pick_device(device)
    train = datasets.load(dataset, "train", dev)
    rows = []
    for seed in seeds:
        idx = next(
            batch_indices(len(train.y), batch_size, 1, torch.Generator().manual_seed(seed), dev)
        )
        for norm in norms:
            for init in inits:
                model = _resnet(depth, norm, init, train.x.shape[1], seed, dev)
                blocks = _blocks(model)
                stats = channel_statistics(
                    model, train.x[idx], {str(k): b for k, b in blocks.items()}
                )
                for layer in blocks:
                    means, variances = stats[str(layer)]
                    rows.append(
                        {
                            "seed": seed,
                            "norm": norm,
                            "init": init,
                            "layer": layer,
                            "mean_abs": float(means.abs().mean()),
                            "std": float(variances.sqrt().mean()),
                        }
                    )
    return pd.DataFrame(rows)


_ALONG_SMOKE = {"depth": 14, "batch_size": 16, "fractions": 3, "init": "he-fan-in"}
_ALONG_QUICK = {"depth": 56, "init": "he"}
_ALONG_FULL = {"depth": 56, "init": "he", "batch_size": 512}
#: The control: the BN network alone, along a step of 1, the largest on the relative-loss
#: grid and ten times its normal learning rate, at which it still does not diverge.
_LARGE_BN_STEP = {"norms": ["torch"], "step_size": 1.0}


@register(
    "activations_along_step",
    chapter="Large learning rates",
    shard_on=("norms",),
    smoke=_ALONG_SMOKE,
    quick=_ALONG_QUICK,
    full=_ALONG_FULL,
    reproduce=Reproduction(subset={"fractions": 2}),
)
@register(
    "activations_along_large_bn_step",
    chapter="Large learning rates",
    smoke={**_ALONG_SMOKE, **_LARGE_BN_STEP},
    quick={**_ALONG_QUICK, **_LARGE_BN_STEP},
    full={**_ALONG_FULL, **_LARGE_BN_STEP},
    reproduce=Reproduction(
        subset={"fractions": 2},
        rtol=1e-2,
        why=(
            "a step of size 1 through 110 BN layers amplifies float32 differences between "
            "CPUs: on a Zen 3 CPU with AVX2 only, the code that computed the committed result "
            "gives values up to 0.5% apart from it; the tolerance is twice that"
        ),
    ),
)
def activations_along_step(
    depth: int = 110,
    norms: Sequence[str] = ("none", "torch"),
    step_range: Sequence[float] = (1e-5, 1.0),
    step_count: int = 21,
    fractions: int = 21,
    batch_size: int = 128,
    init: str = "he",
    seed: int = 0,
    dataset: str = "fashion-mnist",
    device: str | None = None,
    step_size: float | None = None,
) -> pd.DataFrame:
    r"""Channel statistics along one diverging update, at initialization.

    The step size :math:`\eta` is the smallest on the grid (``step_count`` values
    log-spaced over ``step_range``) at which the unnormalized network's step diverges
    (relative loss above :data:`bnlib.step.DIVERGENCE_RATIO`), or ``step_size`` when it
    is given; each network in ``norms`` is then moved along its own gradient,
    :math:`\theta - t\,\eta\,g` for ``fractions`` values of :math:`t` from 0 to 1, and
    the per-channel mean and variance of an early, a middle and a late block's output
    are measured on the mini-batch of the step.

    Returns:
        Rows ``norm, layer, channel, fraction, step_size, mean, variance``.

    Raises:
        ValueError: no step size on the grid makes the unnormalized network diverge
            (widen ``step_range``), or ``step_size`` is not positive.
    """
    dev = pick_device(device)
    train = datasets.load(dataset, "train", dev)
    idx = next(batch_indices(len(train.y), batch_size, 1, torch.Generator().manual_seed(seed), dev))
    x, y = train.x[idx], train.y[idx]
    plain = _resnet(depth, "none", init, train.x.shape[1], seed, dev)
    if step_size is not None:
        if not step_size > 0:
            raise ValueError(f"step_size must be positive, got {step_size}")
        eta = float(step_size)
    else:
        grid = [float(v) for v in np.geomspace(*step_range, step_count)]
        _, ratios = relative_losses(plain, x, y, grid)
        diverging = [eta for eta, r in zip(grid, ratios) if not r <= DIVERGENCE_RATIO]
        if not diverging:
            raise ValueError(
                f"no step size in {list(step_range)} makes the unnormalized ResNet-{depth} "
                "diverge: widen step_range"
            )
        eta = diverging[0]
    rows = []
    for norm in norms:
        model = plain if norm == "none" else _resnet(depth, norm, init, train.x.shape[1], seed, dev)
        blocks = _blocks(model)
        layers = list(blocks)
        chosen = {str(k): blocks[k] for k in (layers[1], layers[len(layers) // 2], layers[-1])}
        _, g = gradient(model, x, y)
        for t in np.linspace(0.0, 1.0, fractions):
            with moved(model, g, -eta * float(t)):
                stats = channel_statistics(model, x, chosen)
            for layer, (means, variances) in stats.items():
                rows += [
                    {
                        "norm": norm,
                        "layer": int(layer),
                        "channel": c,
                        "fraction": float(t),
                        "step_size": eta,
                        "mean": float(m),
                        "variance": float(v),
                    }
                    for c, (m, v) in enumerate(zip(means.tolist(), variances.tolist()))
                ]
    return pd.DataFrame(rows)


@register(
    "gradients_at_init",
    chapter="Large learning rates",
    shard_on=("seeds", "norms"),
    smoke={"depths": [14], "images": 16},
    quick={"depths": [20, 56, 110], "seeds": [0, 1, 2]},
    full={"depths": [20, 56, 110], "seeds": [0, 1, 2, 3, 4]},
    reproduce=Reproduction(subset={"depths": [20], "seeds": [0]}),
)
def gradients_at_init(
    depths: Sequence[int] = (110,),
    norms: Sequence[str] = ("none", "torch"),
    images: int = 128,
    init: str = "he",
    seeds: Sequence[int] = (0,),
    dataset: str = "fashion-mnist",
    device: str | None = None,
) -> pd.DataFrame:
    """The gradients at initialization: at the output, per image and class, and of the
    middle block's first convolution.

    For each seed, depth and normalization, a fresh ResNet sees ``images`` test images
    (the first ones of the test split) in train mode, as in a training step; the model
    is left unchanged (nothing of the test data stays in it).

    Returns:
        Rows with ``seed, depth, norm, quantity, value`` and: for ``quantity ==
        "output"``, ``image``, ``label``, ``class`` (the gradient of that image's loss
        with respect to that class's logit, softmax minus one-hot); for ``quantity ==
        "weight"``, ``index`` (one entry of the mean loss's gradient with respect to the
        middle block's first convolution weight).
    """
    dev = pick_device(device)
    test = datasets.load(dataset, "test", dev)
    x, y = test.x[:images], test.y[:images]
    labels = y.cpu().tolist()
    rows = []
    for seed, depth, norm in itertools.product(seeds, depths, norms):
        model = _resnet(depth, norm, init, test.x.shape[1], seed, dev)
        where = {"seed": seed, "depth": depth, "norm": norm}
        out = output_gradients(model, x, y)
        rows += [
            {
                **where,
                "quantity": "output",
                "image": i,
                "label": labels[i],
                "class": c,
                "value": float(v),
            }
            for i, row in enumerate(out.tolist())
            for c, v in enumerate(row)
        ]
        middle = model.blocks[len(model.blocks) // 2].conv1.weight
        _, grads = gradient(model, x, y)
        (g,) = [d for p, d in zip(model.parameters(), grads) if p is middle]
        rows += [
            {**where, "quantity": "weight", "index": i, "value": float(v)}
            for i, v in enumerate(g.flatten().double().cpu().tolist())
        ]
    return pd.DataFrame(rows)


@register(
    "init_ablation",
    chapter="Large learning rates",
    shard_on=("seeds", "fans", "classifiers", "conv_biases"),
    smoke={"depth": 8, "batch_size": 16, "step_count": 4, "shortcuts": ["A"]},
    quick={},
    full={"seeds": [0, 1, 2]},
    reproduce=Reproduction(subset={"seeds": [0], "shortcuts": ["A"], "conv_biases": [False]}),
)
def init_ablation(
    depth: int = 56,
    norm: str = "none",
    fans: Sequence[str] = ("in", "out"),
    classifiers: Sequence[str] = ("fan-in", "default"),
    shortcuts: Sequence[str] = ("A", "B"),
    conv_biases: Sequence[bool] = (False, True),
    step_range: Sequence[float] = (1e-5, 1.0),
    step_count: int = 21,
    batch_size: int = 128,
    seeds: Sequence[int] = (0,),
    dataset: str = "fashion-mnist",
    device: str | None = None,
) -> pd.DataFrame:
    r"""Which detail of a ResNet's initialization recipe decides its first step.

    For each seed and each combination of the recipe's details
    (:class:`bnlib.setups.ResNetRecipe` with He's gain :math:`\sqrt 2`): the convolutions'
    fan (``fans``), the classifier's initialization (``classifiers``), the shortcut
    (``shortcuts``, He et al.'s options A and B) and a bias in every convolution
    (``conv_biases``), a fresh ResNet of ``depth`` layers (``norm`` after every
    convolution) takes the loss of the seed's first training mini-batch and the relative
    loss :math:`L(\theta - \eta g)/L(\theta)` of one step along its gradient, for
    ``step_count`` step sizes log-spaced over ``step_range``
    (:func:`bnlib.step.relative_losses`).

    Returns:
        One row per (seed, fan, classifier, shortcut, conv_bias, step size): those
        columns, ``loss_before`` (the loss at initialization; ln 10 = 2.30 is a network
        that predicts every class alike), ``step_size``, ``relative_loss`` and
        ``diverged`` (relative loss above :data:`bnlib.step.DIVERGENCE_RATIO` or not
        finite).
    """
    dev = pick_device(device)
    train = datasets.load(dataset, "train", dev)
    steps = [float(v) for v in np.geomspace(*step_range, step_count)]
    recipes = list(itertools.product(fans, classifiers, shortcuts, conv_biases))
    bar = progress_bar(len(seeds) * len(recipes), "initialization ablation")
    rows = []
    for seed in seeds:
        generator = torch.Generator().manual_seed(seed)
        idx = next(batch_indices(len(train.y), batch_size, 1, generator, dev))
        x, y = train.x[idx], train.y[idx]
        for fan, classifier, shortcut, conv_bias in recipes:
            recipe = ResNetRecipe(
                fan=fan, classifier=classifier, shortcut=shortcut, conv_bias=bool(conv_bias)
            )
            model = _resnet(depth, norm, recipe, train.x.shape[1], seed, dev)
            before, ratios = relative_losses(model, x, y, steps)
            where = {
                "seed": seed,
                "fan": fan,
                "classifier": classifier,
                "shortcut": shortcut,
                "conv_bias": bool(conv_bias),
                "loss_before": before,
            }
            rows += [
                {
                    **where,
                    "step_size": eta,
                    "relative_loss": ratio,
                    "diverged": not ratio <= DIVERGENCE_RATIO,
                }
                for eta, ratio in zip(steps, ratios)
            ]
            bar.update()
    bar.close()
    return pd.DataFrame(rows)


@register(
    "gradient_alignment",
    chapter="Large learning rates",
    shard_on=("seeds", "norms"),
    smoke={"depths": [8], "images": 4},
    quick={"depths": [20, 56, 110]},
    full={"depths": [20, 56, 110], "seeds": [0, 1, 2]},
    reproduce=Reproduction(subset={"depths": [20], "seeds": [0]}),
)
def gradient_alignment(
    depths: Sequence[int] = (20, 56, 110),
    norms: Sequence[str] = ("none", "torch"),
    images: int = 32,
    init: str = "he",
    seeds: Sequence[int] = (0,),
    dataset: str = "fashion-mnist",
    device: str | None = None,
) -> pd.DataFrame:
    r"""Whether the examples of a mini-batch push the weights the same way, at
    initialization (Bjorck et al.'s mechanism for the large gradients without BN).

    For each seed, depth and normalization, a fresh ResNet (:func:`bnlib.setups.cifar_resnet`,
    recipe ``init``) sees the seed's first training mini-batch of ``images`` images in
    train mode (BN normalizes with the batch's statistics, so an example's gradient depends
    on the others, as in training). Each example's share of the batch loss,
    :math:`\ell_i`, is differentiated on its own: :math:`g_i = \nabla_\theta \ell_i`, so that
    the batch gradient is :math:`\bar g = \frac1B \sum_i g_i`.

    Returns:
        One row per (seed, depth, norm): ``mean_cosine`` (the mean over pairs
        :math:`i \ne j` of the cosine between :math:`g_i` and :math:`g_j`: about 0 for
        unrelated directions, 1 when all point the same way), ``addition`` (
        :math:`\lVert \bar g\rVert` over the mean :math:`\lVert g_i\rVert`: 1 when the
        examples' gradients add up, about :math:`1/\sqrt B` when they cancel like random
        directions), ``batch_gradient_norm``, ``example_gradient_norm`` (that mean) and
        ``zero_gradients`` (examples whose loss is exactly 0, left out of the cosines).
        The network is discarded afterwards.
    """
    dev = pick_device(device)
    train = datasets.load(dataset, "train", dev)
    bar = progress_bar(len(seeds) * len(depths) * len(norms), "gradient alignment")
    rows = []
    for seed in seeds:
        generator = torch.Generator().manual_seed(seed)
        idx = next(batch_indices(len(train.y), images, 1, generator, dev))
        x, y = train.x[idx], train.y[idx]
        for depth, norm in itertools.product(depths, norms):
            model = _resnet(depth, norm, init, train.x.shape[1], seed, dev).train()
            params = [p for p in model.parameters() if p.requires_grad]
            losses = torch.nn.functional.cross_entropy(model(x), y, reduction="none")
            flat = []
            for i in range(len(y)):
                grads = torch.autograd.grad(losses[i], params, retain_graph=i < len(y) - 1)
                flat.append(torch.cat([g.reshape(-1) for g in grads]).double())
            g = torch.stack(flat)  # (B, parameters)
            lengths = g.norm(dim=1)
            batch_norm = float(g.mean(dim=0).norm())
            # An example the network already gets right with certainty has no gradient
            # (its loss is exactly 0): no direction, so it is left out of the pairs.
            moving = lengths > 0
            unit = g[moving] / lengths[moving, None]
            b = int(moving.sum())
            cosines = unit @ unit.T
            off_diagonal = (cosines.sum() - cosines.diagonal().sum()) / max(b * (b - 1), 1)
            rows.append(
                {
                    "seed": seed,
                    "depth": depth,
                    "norm": norm,
                    "mean_cosine": float(off_diagonal),
                    "addition": batch_norm / float(lengths.mean()),
                    "batch_gradient_norm": batch_norm,
                    "example_gradient_norm": float(lengths.mean()),
                    "zero_gradients": len(y) - b,
                }
            )
            bar.update()
    bar.close()
    return pd.DataFrame(rows)
