r"""Two controls for the chapter's test of SGD's noise (Bjorck et al., Section 2).

:mod:`bnlib.experiments.gradient_noise` leaves two questions open, and each experiment
here is the control that answers one:

- With BN, :math:`|B|` times the variance of the mini-batch gradient grows at small
  batches, so the noise exceeds the bound's :math:`1/|B|`. Is the excess the noise of
  the batch statistics? :func:`frozen_statistics_noise` measures the same variance with
  BN's statistics frozen (:func:`frozen_statistics`: every mini-batch normalized with the
  same statistics, those of a fixed sample of training images); the mini-batch gradient
  is then an average of per-example gradients again.
- At a fixed number of epochs, :math:`\alpha / |B|` is proportional to :math:`\alpha`
  times the number of steps, so accuracy following :math:`\alpha / |B|` may be progress,
  not noise. :func:`fixed_steps_batch_sweep` trains every batch size for the *same*
  number of steps: at a given :math:`\alpha` the noise-free path is then the same, and
  only the noise (and the number of examples seen) differs with :math:`|B|`.

They live in their own module: one module per question, the controls beside the
experiments of :mod:`bnlib.experiments.gradient_noise` they build on.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence

import pandas as pd
import torch
from torch import nn

from bnlib import datasets
from bnlib.arguments import whole_number
from bnlib.device import pick_device
from bnlib.experiments import MEASURES_AT_END, REGISTRY, Reproduction, register
from bnlib.experiments.gradient_noise import lr_batch_sweep, noise_rows, trained_with
from bnlib.norm import is_batch_norm
from bnlib.setups import HE_RELU_GAIN
from bnlib.spectra import frozen_batch_statistics

__all__ = ["fixed_steps_batch_sweep", "frozen_statistics", "frozen_statistics_noise"]


@contextlib.contextmanager
def frozen_statistics(model: nn.Module, x: torch.Tensor) -> Iterator[None]:
    """Inside the block, every BN layer of ``model`` normalizes with the statistics of the
    inputs ``x`` ``(N, ...)``, whatever the batch and also in train mode; after it the
    model is exactly as before (buffers, mode, gradients).

    This is :func:`bnlib.spectra.frozen_batch_statistics` (``x``'s batch mean and biased
    variance at each layer, as constants), kept when the model is put in train mode, as
    :func:`bnlib.step.gradient` does: each BN layer then still runs as in eval mode, so no
    gradient flows through the statistics and a mini-batch's gradient is the average of
    its examples' gradients.
    """
    layers = [m for m in model.modules() if is_batch_norm(m)]

    def as_in_eval(module: nn.Module, inputs) -> None:
        module.training = False

    with frozen_batch_statistics(model, x):
        hooks = [layer.register_forward_pre_hook(as_in_eval) for layer in layers]
        try:
            yield
        finally:
            for hook in hooks:
                hook.remove()


def _both_statistics(step: int, model: nn.Module, loss: float, *, reference, noise) -> list[dict]:
    """``noise``'s rows with batch statistics, then with frozen ones on the same
    mini-batches (the generator replayed from the same state)."""
    generator = noise.keywords["generator"]
    state = generator.get_state()
    rows = [{**row, "statistics": "batch"} for row in noise(step, model, loss)]
    replay = torch.Generator()
    replay.set_state(state)
    with frozen_statistics(model, reference):
        found = noise(step, model, loss, generator=replay)
    return rows + [{**row, "statistics": "frozen"} for row in found]


def _noise_profile(profile: str, **extra) -> dict:
    """``gradient_noise``'s configuration in ``profile`` (the same batch sizes, draws,
    checkpoints and seeds), with ``extra``."""
    return {**REGISTRY["gradient_noise"].profiles[profile], **extra}


@register(
    "frozen_statistics_noise",
    chapter="Large learning rates",
    shard_on=("seeds",),
    smoke=_noise_profile("smoke", population=256),
    quick=_noise_profile("quick"),
    full=_noise_profile("full"),
    reproduce=Reproduction(subset={"seeds": [0]}, prefix={"checkpoints": [0, 300]}),
)
def frozen_statistics_noise(
    batch_sizes: Sequence[int] = (8, 32, 128, 512),
    draws: int = 32,
    checkpoints: Sequence[int] = (0, 300),
    population: int = 10_000,
    lr: float = 0.01,
    momentum: float = 0.9,
    train_batch_size: int = 128,
    init: str = "he",
    gain: float = HE_RELU_GAIN,
    seeds: Sequence[int] = (0,),
    dataset: str = "fashion-mnist",
    device: str | None = None,
) -> pd.DataFrame:
    r"""Variance of the BN network's mini-batch gradient, with batch and frozen statistics.

    The BN network of :func:`bnlib.experiments.gradient_noise.gradient_noise` trains the
    same way (same seeds, ``lr``, ``momentum``, batches of ``train_batch_size``); at each
    step in ``checkpoints`` and for each batch size :math:`b` the variance of the
    gradient over ``draws`` random mini-batches is measured twice, on the same
    mini-batches: with each mini-batch's own statistics (train mode, as in training: the
    measurement of ``gradient_noise``) and with frozen statistics
    (:func:`frozen_statistics` of ``population`` fixed training images, drawn once). The
    network is left unchanged by both.

    Returns:
        One row per (seed, statistics, checkpoint, batch size): ``seed, statistics``
        (``"batch"`` or ``"frozen"``), ``step, batch_size, variance, mean_gradient_sq,
        scaled_variance`` (``batch_size * variance``).

    Raises:
        TypeError, ValueError: ``draws`` is not a whole number >= 2, ``population`` is not
            a whole number in 2..(the data size), or a batch size is not a whole number
            in 1..(the data size).
    """
    whole_number(draws, "draws", 2)
    dev = pick_device(device)
    data = datasets.load(dataset, "train", dev)
    whole_number(population, "population", 2, len(data.y), " (the data size)")
    for b in batch_sizes:
        whole_number(b, "batch size", 1, len(data.y), " (the data size)")
    sample = torch.randperm(len(data.y), generator=torch.Generator().manual_seed(1))
    reference = data.x[sample[:population].to(dev)]
    rows: list[dict] = []
    for seed in seeds:
        draws_from = torch.Generator().manual_seed(10_000 + seed)  # gradient_noise's
        measure = functools.partial(
            _both_statistics,
            reference=reference,
            noise=functools.partial(
                noise_rows, data=data, batch_sizes=batch_sizes, draws=draws, generator=draws_from
            ),
        )
        log = trained_with(
            measure,
            data,
            norm="torch",
            seed=seed,
            checkpoints=checkpoints,
            lr=lr,
            momentum=momentum,
            train_batch_size=train_batch_size,
            config=None,
            init=init,
            gain=gain,
            desc=f"frozen statistics, seed {seed}",
        )
        rows += log.assign(seed=seed).to_dict("records")
    columns = ["seed", "statistics", "step", "batch_size", "variance", "mean_gradient_sq"]
    return pd.DataFrame(rows)[[*columns, "scaled_variance"]]


def _same_steps(profile: str, steps: int) -> dict:
    """``lr_batch_sweep``'s configuration in ``profile``, its epochs replaced by ``steps``."""
    grid = REGISTRY["lr_batch_sweep"].profiles[profile]
    return {**{k: v for k, v in grid.items() if k != "epochs"}, "steps": steps}


@register(
    "fixed_steps_batch_sweep",
    chapter="Large learning rates",
    shard_on=("batch_sizes", "norms"),
    smoke=_same_steps("smoke", 5),
    # one epoch at the middle batch size (256); in the full profile, five
    quick=_same_steps("quick", 234),
    full=_same_steps("full", 1172),
    reproduce=Reproduction(subset={"batch_sizes": [128]}, prefix=None, why=MEASURES_AT_END),
)
def fixed_steps_batch_sweep(
    batch_sizes: Sequence[int] = (64, 256, 1024),
    lr_range: Sequence[float] = (1e-3, 1.0),
    lr_count: int = 7,
    steps: int = 234,
    seeds: Sequence[int] = (0,),
    norms: Sequence[str] = ("none", "torch"),
    init: str = "he",
    gain: float = HE_RELU_GAIN,
    dataset: str = "fashion-mnist",
    device: str | None = None,
) -> pd.DataFrame:
    r"""Accuracy over learning rate and batch size, every batch size trained equally long.

    :func:`bnlib.experiments.gradient_noise.lr_batch_sweep` (the deep ReLU MLP, plain
    SGD at a constant learning rate, with and without BN), run one batch size at a time
    for as many epochs as make ``steps`` steps, so every batch size trains for the same
    number of steps and a larger batch sees more examples.

    Returns:
        One row per model: ``norm, batch_size, lr, seed, steps, test_accuracy,
        train_accuracy, loss, diverged, diverged_at``, ``lr_per_example``
        (:math:`\alpha / |B|`) and ``epochs`` (``steps * batch_size`` over the training
        set's size).
    """
    whole_number(steps, "steps", 1)
    size = len(datasets.load(dataset, "train", "cpu").y)
    frames = []
    for b in batch_sizes:
        # lr_batch_sweep trains round(epochs * size / b) steps: exactly ``steps`` here
        frame = lr_batch_sweep(
            batch_sizes=[b],
            lr_range=lr_range,
            lr_count=lr_count,
            epochs=steps * b / size,
            seeds=seeds,
            norms=norms,
            init=init,
            gain=gain,
            dataset=dataset,
            device=device,
        )
        frames.append(frame.assign(epochs=steps * b / size))
    return pd.concat(frames, ignore_index=True)
