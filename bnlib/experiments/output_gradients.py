r"""The final layer's gradient of fresh MLPs, image by image (chapter "Random
initialization", Bjorck et al. 2018, Section 4).

Bjorck et al. show, as a heatmap of 128 images x 10 classes, the gradient of each image's
loss with respect to its logits, :math:`\mathrm{softmax}(z) - \mathrm{onehot}(y)`, at the
initialization of a network without BN and with it: without BN one class column
dominates for almost every image, so the gradient hardly depends on the input. The
previous chapter draws it for CIFAR ResNets
(:func:`bnlib.experiments.large_steps.gradients_at_init`); :func:`mlp_output_gradients`
draws it for the plain ReLU MLPs whose majority-class share
:func:`bnlib.experiments.initialization.output_collapse` measures against depth. Nothing
trains; every network is left unchanged.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pandas as pd

from bnlib import data as datasets
from bnlib.device import pick_device, seed_everything
from bnlib.experiments import Reproduction, register
from bnlib.experiments.initialization import INIT_SCHEMES
from bnlib.models import MLP
from bnlib.step import output_gradients

__all__ = ["mlp_output_gradients"]


@register(
    "mlp_output_gradients",
    chapter="Random initialization",
    shard_on=("seeds", "norms"),
    smoke={"depths": [5], "images": 16},
    quick={},
    full={"seeds": [0, 1, 2, 3, 4]},
    reproduce=Reproduction(subset={"seeds": [0]}),
)
def mlp_output_gradients(
    depths: Sequence[int] = (10, 50),
    norms: Sequence[str] = ("none", "torch"),
    init: str = "he",
    width: int = 100,
    images: int = 128,
    seeds: Sequence[int] = (0, 1, 2),
    dataset: str = "fashion-mnist",
    device: str | None = None,
) -> pd.DataFrame:
    """The output gradient of every image and class, for fresh plain ReLU MLPs.

    For each seed, depth (hidden layers of ``width`` units) and normalization, a fresh
    MLP (initialization ``init``, a key of
    :data:`bnlib.experiments.initialization.INIT_SCHEMES`) classifies the first
    ``images`` test images as one batch in train mode (BN with the batch's statistics,
    as in a training step); the network is left unchanged.

    Returns:
        One row per (seed, depth, norm, image, class): ``seed, depth, norm, init,
        quantity`` (always ``"output"``, the layout of
        :func:`bnlib.experiments.large_steps.gradients_at_init`, so the same figures
        read it), ``image`` (index in the test split), ``label``, ``class`` and
        ``value``: the gradient of that image's cross-entropy with respect to that
        class's logit, in ``[-1, 1]``.
    """
    if init not in INIT_SCHEMES:
        raise ValueError(f"unknown init {init!r}: choose one of {sorted(INIT_SCHEMES)}")
    dev = pick_device(device)
    test = datasets.load(dataset, "test", dev)
    x, y = test.x[:images], test.y[:images]
    labels = y.cpu().tolist()
    scheme, gain = INIT_SCHEMES[init]
    rows = []
    for seed, depth, norm in itertools.product(seeds, depths, norms):
        seed_everything(seed)
        model = MLP(hidden=(width,) * depth, norm=norm, activation="relu", init=scheme, gain=gain)
        out = output_gradients(model.to(dev), x, y)
        where = {"seed": seed, "depth": depth, "norm": norm, "init": init, "quantity": "output"}
        rows += [
            {**where, "image": i, "label": labels[i], "class": c, "value": v}
            for i, row in enumerate(out.tolist())
            for c, v in enumerate(row)
        ]
    return pd.DataFrame(rows)
