r"""SGD's gradient noise and the learning rate over the batch size (Bjorck et al., Section 2).

Bjorck et al. bound the noise of one SGD step,
:math:`\mathbb E\,\lVert \alpha \nabla \ell(x) - \alpha \nabla_{SGD}(x) \rVert^2 \le
\frac{\alpha^2}{|B|} C`, with :math:`C` the variance of one example's gradient, and read
it as: what matters for the noise, and so for generalization, is about :math:`\alpha /
|B|` (or :math:`\alpha^2 / |B|`). Two experiments test the two halves of that reading:

- :func:`gradient_noise` measures the noise term itself: the variance of the mini-batch
  gradient for several batch sizes, with and without BN, at initialization and after some
  training (registered three times: after training at learning rate 0.01, 0.001 and, BN
  only, 0.1). The bound predicts :math:`|B| \cdot \text{variance}` independent of
  :math:`|B|`.
- :func:`lr_batch_sweep` trains over a grid of learning rates and batch sizes, for the
  same number of epochs, and records the accuracies, to see whether they follow
  :math:`\alpha / |B|`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import pandas as pd
import torch

from bnlib import datasets
from bnlib.arguments import whole_number
from bnlib.device import pick_device, seed_everything
from bnlib.engine import train
from bnlib.experiments import MEASURES_AT_END, Reproduction, register
from bnlib.experiments.learning_rate import final_rows, lr_sweep
from bnlib.models import build_model
from bnlib.setups import DEEP_MLP, HE_RELU_GAIN
from bnlib.step import gradient

__all__ = ["gradient_noise", "lr_batch_sweep"]


_NOISE_SMOKE = {"batch_sizes": [8, 32], "draws": 4, "checkpoints": [0, 5]}
_NOISE_QUICK = {"batch_sizes": [8, 32, 128, 512], "draws": 32, "checkpoints": [0, 300]}
_NOISE_FULL = {
    "batch_sizes": [4, 8, 16, 32, 64, 128, 256, 512, 1024],
    "draws": 128,
    "checkpoints": [0, 300, 3000],
    "seeds": [0, 1, 2],
}
#: The same measurement after training at other learning rates (gradient_noise: 0.01):
#: ten times smaller, with and without BN, and ten times larger, where only BN trains.
_SMALL_LR = {"lr": 0.001}
_LARGE_LR = {"lr": 0.1, "norms": ["torch"]}


@register(
    "gradient_noise",
    chapter="Large learning rates",
    shard_on=("seeds", "norms"),
    smoke=_NOISE_SMOKE,
    quick=_NOISE_QUICK,
    full=_NOISE_FULL,
    reproduce=Reproduction(
        subset={"seeds": [0], "norms": ["torch"]}, prefix={"checkpoints": [0, 300]}
    ),
)
@register(
    "gradient_noise_small_lr",
    chapter="Large learning rates",
    shard_on=("seeds", "norms"),
    smoke={**_NOISE_SMOKE, **_SMALL_LR},
    quick={**_NOISE_QUICK, **_SMALL_LR},
    full={**_NOISE_FULL, **_SMALL_LR},
    reproduce=Reproduction(
        subset={"seeds": [0], "norms": ["torch"]}, prefix={"checkpoints": [0, 300]}
    ),
)
@register(
    "gradient_noise_large_lr",
    chapter="Large learning rates",
    shard_on=("seeds",),
    smoke={**_NOISE_SMOKE, **_LARGE_LR},
    quick={**_NOISE_QUICK, **_LARGE_LR},
    full={**_NOISE_FULL, **_LARGE_LR},
    reproduce=Reproduction(subset={"seeds": [0]}, prefix={"checkpoints": [0, 300]}),
)
def gradient_noise(
    batch_sizes: Sequence[int] = (8, 32, 128, 512),
    draws: int = 32,
    checkpoints: Sequence[int] = (0, 300),
    norms: Sequence[str] = ("none", "torch"),
    lr: float = 0.01,
    momentum: float = 0.9,
    train_batch_size: int = 128,
    config: dict | None = None,
    init: str = "he",
    gain: float = HE_RELU_GAIN,
    seeds: Sequence[int] = (0,),
    dataset: str = "fashion-mnist",
    device: str | None = None,
) -> pd.DataFrame:
    r"""Variance of the mini-batch gradient against the batch size, with and without BN.

    For each seed and normalization, a network (default: the deep ReLU MLP of
    :func:`bnlib.experiments.learning_rate.lr_sweep`, He-initialized) trains with SGD
    (``lr``, ``momentum``, batches of ``train_batch_size``); at each step in
    ``checkpoints`` (0 = at initialization) and for each batch size :math:`b`, the
    gradient :math:`g_i` of the mean loss is computed on ``draws`` independent random
    mini-batches (train mode, as in training; the model is left unchanged) and

    .. math:: \text{variance} = \frac{1}{n-1} \sum_i \lVert g_i - \bar g \rVert^2,
       \qquad \bar g = \frac1n \sum_i g_i,

    the unbiased estimate of :math:`\mathbb E \lVert g_B - \mathbb E g_B \rVert^2`. With BN
    the mini-batch gradient is not an average of per-example gradients (each example's
    output depends on the batch), so the same definition, variance about the mean
    mini-batch gradient, serves both networks.

    Returns:
        One row per (seed, norm, checkpoint, batch size): ``seed, norm, step, batch_size,
        variance``, ``mean_gradient_sq`` (:math:`\lVert \bar g \rVert^2`) and
        ``scaled_variance`` (``batch_size * variance``: constant in the batch size if the
        noise falls as :math:`1/|B|`).

    Raises:
        TypeError, ValueError: ``draws`` is not a whole number >= 2, or a batch size is not
            a whole number in 1..(the training set's size).
    """
    whole_number(draws, "draws", 2)
    dev = pick_device(device)
    data = datasets.load(dataset, "train", dev)
    for b in batch_sizes:
        whole_number(b, "batch size", 1, len(data.y), " (the data size)")
    rows: list[dict] = []
    for seed in seeds:
        for norm in norms:
            draws_from = torch.Generator().manual_seed(10_000 + seed)
            measure = functools.partial(
                noise_rows, data=data, batch_sizes=batch_sizes, draws=draws, generator=draws_from
            )
            log = trained_with(
                measure,
                data,
                norm=norm,
                seed=seed,
                checkpoints=checkpoints,
                lr=lr,
                momentum=momentum,
                train_batch_size=train_batch_size,
                config=config,
                init=init,
                gain=gain,
                desc=f"gradient noise, norm={norm}",
            )
            rows += log.assign(seed=seed, norm=norm).to_dict("records")
    columns = ["seed", "norm", "step", "batch_size", "variance", "mean_gradient_sq"]
    return pd.DataFrame(rows)[[*columns, "scaled_variance"]]


def trained_with(
    measure,
    data,
    *,
    norm: str,
    seed: int,
    checkpoints: Sequence[int],
    lr: float,
    momentum: float,
    train_batch_size: int,
    config: dict | None,
    init: str,
    gain: float,
    desc: str,
) -> pd.DataFrame:
    """Train :func:`gradient_noise`'s network (``norm``, ``seed``) on ``data`` to the last
    checkpoint; the rows ``measure(step, model, loss)`` returns at each checkpoint, with
    a ``step`` column."""
    seed_everything(seed)
    shape = {**DEEP_MLP, **datasets.input_config("mlp", data.x), **(config or {})}
    model = build_model("mlp", **shape, norm=norm, init=init, gain=gain).to(data.x.device)
    log = train(
        model,
        data,
        steps=max(checkpoints),
        batch_size=train_batch_size,
        lr=lr,
        momentum=momentum,
        seed=seed,
        log_at=list(checkpoints),
        log=measure,
        desc=desc,
    )
    return log.drop(columns=["loss", "diverged"])


def noise_rows(
    step: int,
    model: torch.nn.Module,
    loss: float,
    *,
    data,
    batch_sizes: Sequence[int],
    draws: int,
    generator: torch.Generator,
) -> list[dict]:
    """Rows ``batch_size, variance, mean_gradient_sq, scaled_variance`` for ``model`` as
    it is (a logging function of :func:`bnlib.engine.train`)."""
    out = []
    for b in batch_sizes:
        grads = torch.stack(
            [
                torch.cat([d.flatten() for d in gradient(model, *batch)[1]])
                for batch in _batches(data, b, draws, generator)
            ]
        ).double()
        mean = grads.mean(0)
        variance = float(((grads - mean) ** 2).sum() / (draws - 1))
        out.append(
            {
                "batch_size": b,
                "variance": variance,
                "mean_gradient_sq": float((mean**2).sum()),
                "scaled_variance": b * variance,
            }
        )
    return out


def _batches(data, batch_size: int, draws: int, generator: torch.Generator):
    """``draws`` independent mini-batches ``(x, y)`` of ``batch_size`` distinct examples."""
    n = len(data.y)
    for _ in range(draws):
        idx = torch.randperm(n, generator=generator)[:batch_size].to(data.x.device)
        yield data.x[idx], data.y[idx]


#: The sweep of learning rate and batch size: plain SGD (the bound's :math:`\alpha` is
#: the step size; momentum would multiply it), a constant learning rate, the same number
#: of epochs for every batch size.
_QUICK_GRID = {
    "batch_sizes": [64, 256, 1024],
    "lr_range": [1e-3, 1.0],
    "lr_count": 7,
    "epochs": 1,
    "seeds": [0],
}


@register(
    "lr_batch_sweep",
    chapter="Large learning rates",
    shard_on=("batch_sizes", "norms"),
    smoke={**_QUICK_GRID, "batch_sizes": [256, 1024], "lr_count": 2, "epochs": 0.02},
    quick=_QUICK_GRID,
    full={
        **_QUICK_GRID,
        "batch_sizes": [16, 32, 64, 128, 256, 512],
        "lr_range": [1e-4, 10**0.5],
        "lr_count": 10,
        "epochs": 5,
        "seeds": [0, 1, 2],
    },
    reproduce=Reproduction(subset={"batch_sizes": [128]}, prefix=None, why=MEASURES_AT_END),
)
def lr_batch_sweep(
    batch_sizes: Sequence[int] = (32, 128, 512),
    lr_range: Sequence[float] = (1e-3, 1.0),
    lr_count: int = 7,
    epochs: float = 1,
    seeds: Sequence[int] = (0,),
    norms: Sequence[str] = ("none", "torch"),
    config: dict | None = None,
    init: str = "he",
    gain: float = HE_RELU_GAIN,
    dataset: str = "fashion-mnist",
    device: str | None = None,
) -> pd.DataFrame:
    r"""Accuracy over a grid of learning rates and batch sizes, with and without BN.

    For each batch size :math:`b`, :func:`bnlib.experiments.learning_rate.lr_sweep`
    trains the deep ReLU MLP (``config`` overrides it) with plain SGD at a constant
    learning rate for ``epochs`` passes over the training set (``epochs * N / b`` steps,
    at least one), so every batch size sees the same number of examples.

    Returns:
        One row per model: ``norm, batch_size, lr, seed, steps, test_accuracy,
        train_accuracy, loss, diverged, diverged_at`` and ``lr_per_example``
        (:math:`\alpha / |B|`, the quantity Bjorck et al.'s bound points to).

    Raises:
        ValueError: ``epochs`` is not > 0.
    """
    if not epochs > 0:
        raise ValueError(f"epochs must be > 0, got {epochs}")
    dev = pick_device(device)
    size = len(datasets.load(dataset, "train", dev).y)
    frames = []
    for b in batch_sizes:
        steps = max(1, round(epochs * size / b))
        sweep = lr_sweep(
            architecture="mlp",
            config={**DEEP_MLP, **(config or {})},
            dataset=dataset,
            lr_range=lr_range,
            lr_count=lr_count,
            seeds=seeds,
            steps=steps,
            batch_size=b,
            norms=norms,
            init=init,
            gain=gain,
            device=device,
        )
        frame = final_rows(sweep).rename(columns={"step": "steps"})
        frame.insert(1, "batch_size", b)
        frame["lr_per_example"] = frame["lr"] / b
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
