r"""Experiments of the chapter "The BN algorithm".

Each function returns a tidy :class:`pandas.DataFrame` (one row per measurement) and is
cheap enough for the book's build on a 2-core CPU (seconds each).
"""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pandas as pd
import torch
from torch import nn

from bnlib import arguments
from bnlib import data as datasets
from bnlib.device import pick_device, seed_everything
from bnlib.engine import accuracy, log_steps, preserved_state, train
from bnlib.experiments import MEASURES_AT_END, Reproduction, register
from bnlib.models import MLP
from bnlib.norm import BatchNorm, BatchNormFunction, population_statistics
from bnlib.setups import IOFFE_MLP

__all__ = [
    "batch_statistics_noise",
    "bias_blowup",
    "distribution_shift",
    "gradient_check",
    "identity_recovery",
    "running_statistics",
    "transform_stages",
]


def _first_layer_inputs(layer: str, examples: int, seed: int, dataset: str) -> torch.Tensor:
    """Pre-activations of a freshly initialized first layer on real images.

    ``layer="linear"``: ``(examples, 100)`` from a 784-100 linear layer;
    ``layer="conv"``: ``(examples, 8, 28, 28)`` from a 3x3 convolution with 8 channels.
    """
    gen = seed_everything(seed)
    x, _ = datasets.load(dataset, "train")
    x = x[torch.randperm(len(x), generator=gen)[:examples]]
    if layer == "linear":
        module = nn.Linear(784, 100)
        return module(x.flatten(1)).detach()
    if layer == "conv":
        module = nn.Conv2d(1, 8, 3, padding=1)
        return module(x).detach()
    raise ValueError(f"unknown layer {layer!r}: use 'linear' or 'conv'")


@register(
    "transform_stages_conv",
    chapter="The BN algorithm",
    smoke={"layer": "conv", "gamma": 0.5, "beta": 2.0, "batch_size": 16},
    quick={"layer": "conv", "gamma": 0.5, "beta": 2.0},
    full={"layer": "conv", "gamma": 0.5, "beta": 2.0, "batch_size": 1024},
)
@register(
    "transform_stages",
    chapter="The BN algorithm",
    smoke={"layer": "linear", "gamma": 0.5, "beta": 2.0, "batch_size": 16},
    quick={"layer": "linear", "gamma": 0.5, "beta": 2.0},
    full={"layer": "linear", "gamma": 0.5, "beta": 2.0, "batch_size": 1024},
)
def transform_stages(
    layer: str = "linear",
    units: tuple[int, ...] | None = None,
    gamma: float = 0.5,
    beta: float = 2.0,
    batch_size: int = 256,
    max_values: int = 4096,
    seed: int = 0,
    dataset: str = "mnist",
) -> pd.DataFrame:
    r"""The values of a few units at each step of Algorithm 1, on one real mini-batch.

    Args:
        layer: ``"linear"`` (a unit = one output of a 784-100 layer) or ``"conv"`` (a unit =
            one channel of a 3x3 convolution, pooled over batch and the 28x28 positions).
        units: which units (or channels) to report; ``None`` picks three that differ most:
            the lowest mean, the highest mean and the largest standard deviation.
        gamma, beta: the scale and shift applied in the last step.
        batch_size: :math:`N` images in the mini-batch.
        max_values: at most this many values per unit and stage are returned (a random
            subset of the same positions at every stage); the statistics use them all.

    Returns:
        Columns ``layer, unit, stage, value``; stages are ``"x"`` (input),
        ``"x_hat"`` (normalized) and ``"y"`` (scaled and shifted). For ``"conv"`` each
        unit has ``N * 28 * 28`` values per stage; for ``"linear"``, ``N``.
    """
    x = _first_layer_inputs(layer, batch_size, seed, dataset).double()
    weight = torch.full((x.shape[1],), gamma, dtype=x.dtype)
    bias = torch.full((x.shape[1],), beta, dtype=x.dtype)
    if units is None:
        dims = (0, *range(2, x.dim()))
        mean, std = x.mean(dims), x.std(dims)
        units = tuple(dict.fromkeys(int(i) for i in (mean.argmin(), mean.argmax(), std.argmax())))
    bn = BatchNorm(x.shape[1], affine=False, dtype=x.dtype)
    x_hat = bn(x).detach()
    y = BatchNormFunction.apply(x, weight, bias, bn.eps)[0].detach()
    frames = []
    per_unit = x[:, 0].numel()
    keep = torch.randperm(per_unit, generator=torch.Generator().manual_seed(seed))[:max_values]
    for stage, values in (("x", x), ("x_hat", x_hat), ("y", y)):
        for unit in units:
            v = values[:, unit].reshape(-1)[keep].numpy()
            frames.append(pd.DataFrame({"layer": layer, "unit": unit, "stage": stage, "value": v}))
    return pd.concat(frames, ignore_index=True)


@register(
    "identity_recovery",
    chapter="The BN algorithm",
    smoke={"batch_size": 60, "batches": 3},
    quick={"batch_size": 60, "batches": 50},
    full={"batch_size": 60, "batches": 1000},
)
def identity_recovery(
    batch_size: int = 60, batches: int = 50, seed: int = 0, dataset: str = "mnist"
) -> pd.DataFrame:
    r"""Can BN represent the identity? With population statistics exactly; with batch
    statistics only on average.

    The pre-activations :math:`x` of a freshly initialized 784-100 layer over the whole
    training set give each unit's population mean :math:`\mathrm E[x]` and variance
    :math:`\mathrm{Var}[x]`. A :class:`bnlib.norm.BatchNorm` gets
    :math:`\gamma = \sqrt{\mathrm{Var}[x] + \epsilon}`, :math:`\beta = \mathrm E[x]` and
    those statistics as its running averages (float64). Then, on ``batches`` random
    mini-batches of ``batch_size`` images: in eval mode (Algorithm 2) the layer returns
    :math:`x` up to round-off; in training mode (Algorithm 1) it normalizes with each
    batch's own statistics, so the same :math:`\gamma, \beta` do not give :math:`x` back.

    Returns:
        Columns ``mode ("eval: population statistics" | "train: batch statistics"),
        batch, max_error`` (the largest :math:`|y - x|` over the batch and units, in
        units of each unit's population standard deviation).
    """
    pre = _first_layer_inputs("linear", 60_000, seed, dataset).double()
    mean, var = pre.mean(0), pre.var(0, unbiased=False)
    bn = BatchNorm(pre.shape[1], dtype=torch.float64)
    with torch.no_grad():
        bn.weight.copy_(torch.sqrt(var + bn.eps))
        bn.bias.copy_(mean)
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
    gen = torch.Generator().manual_seed(seed + 1)
    sd = var.sqrt()
    rows = []
    for b in range(batches):
        x = pre[torch.randperm(len(pre), generator=gen)[:batch_size]]
        for mode, training in (
            ("eval: population statistics", False),
            ("train: batch statistics", True),
        ):
            # a training-mode pass would move the running averages: restore them
            with preserved_state(bn), torch.no_grad():
                y = bn.train(training)(x)
            error = ((y - x).abs() / sd).max().item()
            rows.append({"mode": mode, "batch": b, "max_error": error})
    return pd.DataFrame(rows)


def _max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@register(
    "gradient_check",
    chapter="The BN algorithm",
    smoke={"shapes": [[2, 3], [4, 3, 1, 1]]},
    quick={},
    full={"shapes": [[2, 3], [60, 100], [256, 512], [8, 16, 5, 5], [4, 3, 1, 1], [32, 64, 16, 16]]},
)
def gradient_check(
    shapes: tuple[tuple[int, ...], ...] = ((2, 3), (60, 100), (8, 16, 5, 5), (4, 3, 1, 1)),
    dtypes: tuple[torch.dtype, ...] = (torch.float64, torch.float32),
    seed: int = 0,
) -> pd.DataFrame:
    r"""Compare bnlib's hand-written BN with autograd and with PyTorch's BN.

    For every shape and dtype, one training step of :class:`bnlib.norm.BatchNorm` and of
    :class:`torch.nn.BatchNorm1d`/``2d`` with the same :math:`\gamma`, :math:`\beta`, input
    and upstream gradient; plus :func:`torch.autograd.gradcheck` (finite differences) of
    the hand-written backward in float64.

    Returns:
        Columns ``shape, dtype, quantity, max_abs_error, tolerance, passed``; quantity is
        one of ``output, grad x, grad gamma, grad beta, running mean, running var`` (vs
        PyTorch) or ``gradcheck`` (vs finite differences, with its own tolerance 1e-6;
        run for the float64 shapes of at most 600 values, since it evaluates the function
        twice per input; it passes or fails, so its ``max_abs_error`` is NaN).
        ``max_abs_error`` is the largest :math:`|a - b|` divided by
        :math:`\max(1, \max|b|)`: a relative error for quantities larger than 1, an
        absolute one for smaller quantities.
    """
    tolerance = {torch.float64: 1e-10, torch.float32: 1e-5}
    rows = []
    gen = seed_everything(seed)
    for shape, dtype in itertools.product([tuple(s) for s in shapes], dtypes):
        ours = BatchNorm(shape[1], dtype=dtype)
        theirs = (nn.BatchNorm1d if len(shape) == 2 else nn.BatchNorm2d)(shape[1], dtype=dtype)
        with torch.no_grad():
            ours.weight.copy_(torch.rand(shape[1], generator=gen) + 0.5)
            ours.bias.copy_(torch.randn(shape[1], generator=gen))
            theirs.load_state_dict(ours.state_dict())
        x1 = (torch.randn(shape, generator=gen) * 3 + 1).to(dtype).requires_grad_()
        x2 = x1.detach().clone().requires_grad_()
        g = torch.randn(shape, generator=gen).to(dtype)
        y1, y2 = ours(x1), theirs(x2)
        (y1 * g).sum().backward()
        (y2 * g).sum().backward()
        pairs = {
            "output": (y1, y2),
            "grad x": (x1.grad, x2.grad),
            "grad gamma": (ours.weight.grad, theirs.weight.grad),
            "grad beta": (ours.bias.grad, theirs.bias.grad),
            "running mean": (ours.running_mean, theirs.running_mean),
            "running var": (ours.running_var, theirs.running_var),
        }
        for quantity, (a, b) in pairs.items():
            err = _max_error(a, b) / max(1.0, b.abs().max().item())
            rows.append(
                {
                    "shape": str(shape),
                    "dtype": str(dtype).replace("torch.", ""),
                    "quantity": quantity,
                    "max_abs_error": err,
                    "tolerance": tolerance[dtype],
                    "passed": err <= tolerance[dtype],
                }
            )
        if dtype == torch.float64 and x1.numel() <= 600:  # finite differences: 2 calls/input
            inputs = (
                x1.detach().clone().requires_grad_(),
                ours.weight.detach().clone().requires_grad_(),
                ours.bias.detach().clone().requires_grad_(),
            )
            ok = torch.autograd.gradcheck(
                lambda a, w, b: BatchNormFunction.apply(a, w, b, 1e-5)[0],
                inputs,
                eps=1e-6,
                atol=1e-6,
                raise_exception=False,
            )
            rows.append(
                {
                    "shape": str(shape),
                    "dtype": "float64",
                    "quantity": "gradcheck",
                    "max_abs_error": float("nan"),  # gradcheck passes or fails, no error
                    "tolerance": 1e-6,
                    "passed": bool(ok),
                }
            )
    return pd.DataFrame(rows)


def _bn_layers(model: nn.Module) -> list[BatchNorm]:
    return [m for m in model.modules() if isinstance(m, BatchNorm)]


@register(
    "running_statistics",
    chapter="The BN algorithm",
    shard_on=("momenta",),
    smoke={"steps": 20, "momenta": [0.1, 0.01, None], "points": 4, "population_examples": 500},
    quick={"steps": 1000, "momenta": [0.1, 0.01, None]},
    full={"steps": 50_000, "momenta": [0.1, 0.01, 0.001, None], "points": 30},
    reproduce=Reproduction(subset={"momenta": [0.1]}),
)
def running_statistics(
    steps: int = 1000,
    momenta: tuple[float | None, ...] = (0.1, 0.01),
    batch_size: int = 60,
    lr: float = 0.5,
    seed: int = 0,
    dataset: str = "mnist",
    population_examples: int = 10_000,
    points: int = 16,
    activation: str = "sigmoid",
    device: str | None = "cpu",
) -> pd.DataFrame:
    r"""How Algorithm 2's running averages approach the population statistics in training.

    Trains the paper's BN MLP once per momentum (same seed, so the same trajectory: the
    momentum does not affect training) and, at about ``points`` log-spaced steps, measures
    for every BN layer the distance between the running statistics and the population
    statistics of the *current* network (:func:`bnlib.norm.population_statistics` on
    ``population_examples`` training images), and the test accuracy with each kind of
    statistics. ``activation`` replaces the paper's sigmoid.

    Returns:
        Columns ``step, loss, diverged, momentum, metric, value``; ``momentum`` is a string
        (``"None"`` for the cumulative average). Metrics:
        ``mean error`` (mean over units and layers of :math:`|\hat\mu - \mu|/\sigma`),
        ``var error`` (mean of :math:`|\hat\sigma^2/\sigma^2 - 1|`),
        ``accuracy: running statistics`` (eval mode), ``accuracy: population statistics``
        and ``accuracy: batch statistics`` (train mode, test batches of ``batch_size``).
    """
    dev = pick_device(device)
    train_split = datasets.load(dataset, "train", dev)
    test = datasets.load(dataset, "test", dev)
    probe_x = train_split.x[:population_examples]

    def log(step: int, model: nn.Module, loss: float, momentum) -> list[dict]:
        reference = population_statistics(copy.deepcopy(model), probe_x, batch_size)
        mean_err, var_err = [], []
        for ours, pop in zip(_bn_layers(model), _bn_layers(reference)):
            sd = pop.running_var.sqrt()
            mean_err.append(((ours.running_mean - pop.running_mean).abs() / sd).mean().item())
            var_err.append((ours.running_var / pop.running_var - 1).abs().mean().item())
        model.eval()
        acc_running = accuracy(model, test)
        model.train()
        acc_batch = accuracy(model, test, batch_size)
        reference.eval()
        acc_population = accuracy(reference, test)
        values = {
            "mean error": float(np.mean(mean_err)),
            "var error": float(np.mean(var_err)),
            "accuracy: running statistics": acc_running,
            "accuracy: population statistics": acc_population,
            "accuracy: batch statistics": acc_batch,
        }
        return [{"momentum": str(momentum), "metric": k, "value": v} for k, v in values.items()]

    frames = []
    for momentum in momenta:
        seed_everything(seed)
        model = MLP(norm="bnlib", **{**IOFFE_MLP, "activation": activation}).to(dev)
        for layer in _bn_layers(model):
            layer.momentum = momentum
        frames.append(
            train(
                model,
                train_split,
                steps=steps,
                batch_size=batch_size,
                lr=lr,
                seed=seed,
                log_at=log_steps(steps, points),
                log=lambda s, m, loss, mom=momentum: log(s, m, loss, mom),
                desc=f"momentum={momentum}",
            )
        )
    return pd.concat(frames, ignore_index=True)


@register(
    "distribution_shift",
    chapter="The BN algorithm",
    shard_on=("contrasts",),
    smoke={"steps": 20},
    quick={"steps": 2000},
    full={"steps": 50_000},
    reproduce=Reproduction(prefix=None, why=MEASURES_AT_END),
)
def distribution_shift(
    contrasts: tuple[float, ...] = (1.0, 0.8, 0.6, 0.4, 0.2),
    steps: int = 2000,
    batch_size: int = 60,
    lr: float = 0.5,
    seed: int = 0,
    dataset: str = "mnist",
    device: str | None = "cpu",
) -> pd.DataFrame:
    r"""Eval-mode BN when the test data's distribution differs from the training data's.

    Trains the paper's MLP with and without BN, then classifies the test set with its
    pixel intensities scaled by ``contrast`` (``pixels' = contrast * pixels``: a dimmer
    scan). The BN net is evaluated with its running statistics from training, and again
    after re-estimating them on the shifted test images themselves
    (:func:`bnlib.norm.population_statistics`; labels are not used).

    Returns:
        Columns ``contrast, network, accuracy``; networks: ``no BN``,
        ``BN: training statistics``, ``BN: re-estimated statistics``.
    """
    dev = pick_device(device)
    train_split = datasets.load(dataset, "train", dev)
    test = datasets.load(dataset, "test", dev)
    nets = {}
    for norm in ("none", "bnlib"):
        seed_everything(seed)
        model = MLP(norm=norm, **IOFFE_MLP).to(dev)
        train(
            model,
            train_split,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            desc=f"norm={norm}",
        )
        nets[norm] = model.eval()
    rows = []
    for contrast in contrasts:
        shifted = datasets.Split(
            datasets.from_pixels(datasets.to_pixels(test.x, dataset) * contrast, dataset), test.y
        )
        adapted = population_statistics(copy.deepcopy(nets["bnlib"]), shifted.x, 500)
        for network, model in (
            ("no BN", nets["none"]),
            ("BN: training statistics", nets["bnlib"]),
            ("BN: re-estimated statistics", adapted),
        ):
            rows.append(
                {"contrast": contrast, "network": network, "accuracy": accuracy(model, shifted)}
            )
    return pd.DataFrame(rows)


class _CenteredLayer(nn.Module):
    r"""``x = W u + b`` followed by :math:`\hat x = x - \mathrm{E}[x]` over the batch.

    With ``through_mean=False`` the gradient treats :math:`\mathrm{E}[x]` as a constant,
    the mistake Section 2 of the paper warns against.
    """

    def __init__(self, through_mean: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(784, 100)
        self.through_mean = through_mean

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        x = self.linear(u.flatten(1))
        mean = x.mean(0, keepdim=True)
        return x - (mean if self.through_mean else mean.detach())


@register(
    "bias_blowup",
    chapter="The BN algorithm",
    smoke={"steps": 20, "lr": 1.0, "points": 4, "probe_examples": 200},
    quick={"steps": 2000, "lr": 1.0},
    full={"steps": 50_000, "lr": 1.0},
)
def bias_blowup(
    steps: int = 2000,
    lr: float = 1.0,
    batch_size: int = 60,
    seed: int = 0,
    dataset: str = "mnist",
    probe_examples: int = 2000,
    points: int = 30,
    device: str | None = "cpu",
) -> pd.DataFrame:
    r"""Section 2 of Ioffe & Szegedy: normalization outside the gradient lets a bias drift.

    The paper's thought experiment, run: a layer ``x = W u + b`` whose output is centred,
    :math:`\hat x = x - \mathrm{E}[x]`, inside ``u -> centre(W u + b) -> ReLU ->
    Linear(100, 10)``. Only ``b`` is trained (SGD, same initialization and batches for both
    variants). Centering removes ``b`` from the output exactly, so the loss cannot depend
    on ``b``. If the gradient flows through the batch mean, ``b``'s gradient is zero and
    nothing moves. If it ignores the mean, ``b`` takes a step of
    :math:`-\eta\,\overline{\partial\ell/\partial\hat x}` at every step, and the
    centering undoes each step: ``b`` grows without bound while the loss stays put.

    Returns:
        Columns ``step, loss, diverged, gradient, metric, value``; ``gradient`` is
        ``"through the mean"`` or ``"ignores the mean"``; metrics ``bias norm``
        (:math:`\|b\|_2`) and ``probe loss`` (cross-entropy on ``probe_examples`` fixed
        training images, so that it is not minibatch noise).
    """
    arguments.check_whole_number(probe_examples, "probe_examples", low=1, high=60_000)
    dev = pick_device(device)
    train_split = datasets.load(dataset, "train", dev)
    probe = datasets.Split(train_split.x[:probe_examples], train_split.y[:probe_examples])
    rows = []
    for through_mean, label in ((True, "through the mean"), (False, "ignores the mean")):
        seed_everything(seed)
        model = nn.Sequential(_CenteredLayer(through_mean), nn.ReLU(), nn.Linear(100, 10)).to(dev)
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name == "0.linear.bias")

        def log(step, m, loss, label=label):
            with torch.no_grad():
                probe_loss = nn.functional.cross_entropy(m(probe.x), probe.y).item()
            return [
                {"gradient": label, "metric": "bias norm", "value": m[0].linear.bias.norm().item()},
                {"gradient": label, "metric": "probe loss", "value": probe_loss},
            ]

        rows.append(
            train(
                model,
                train_split,
                steps=steps,
                batch_size=batch_size,
                lr=lr,
                seed=seed,
                log_at=log_steps(steps, points),
                log=log,
                desc=label,
            )
        )
    return pd.concat(rows, ignore_index=True)


@register(
    "batch_statistics_noise",
    chapter="The BN algorithm",
    smoke={"draws": 10},
    quick={},
    full={"draws": 1000, "units": 10},
)
def batch_statistics_noise(
    batch_sizes: tuple[int, ...] = (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
    draws: int = 200,
    units: int = 100,
    seed: int = 0,
    dataset: str = "mnist",
) -> pd.DataFrame:
    r"""How far a mini-batch's statistics are from the population's, by batch size.

    Uses the pre-activations of a freshly initialized 784-100 layer over the whole training
    set: the population mean :math:`\mu` and standard deviation :math:`\sigma` per unit.
    For each batch size :math:`m`, ``draws`` random mini-batches give :math:`\mu_\mathcal{B}`
    and :math:`\sigma_\mathcal{B}`; and one fixed example, placed in each of those batches,
    gets a normalized value :math:`\hat x` that varies with its batch-mates.

    Returns:
        Columns ``batch_size, draw, unit, mean_error, std_ratio, x_hat,
        x_hat_population``: :math:`(\mu_\mathcal{B}-\mu)/\sigma`,
        :math:`\sigma_\mathcal{B}/\sigma`, the fixed example's :math:`\hat x` in that
        batch, and its :math:`\hat x` with the population statistics. The spread of each
        over draws is the noise BN injects; for the mean it is :math:`1/\sqrt{m}` in theory.
    """
    pre = _first_layer_inputs("linear", 60_000, seed, dataset)[:, :units]
    mu, sigma = pre.mean(0), pre.std(0, unbiased=False)
    gen = torch.Generator().manual_seed(seed + 1)
    fixed = pre[0]
    x_hat_population = (fixed - mu) / torch.sqrt(sigma.square() + 1e-5)
    rest = pre[1:]
    frames = []
    for m in batch_sizes:
        idx = torch.stack([torch.randperm(len(rest), generator=gen)[: m - 1] for _ in range(draws)])
        batch = torch.cat([fixed.expand(draws, 1, -1), rest[idx]], dim=1)  # (draws, m, units)
        mean_b = batch.mean(1)
        std_b = batch.std(1, unbiased=False)
        x_hat = (fixed - mean_b) / torch.sqrt(std_b.square() + 1e-5)
        frames.append(
            pd.DataFrame(
                {
                    "batch_size": m,
                    "draw": np.repeat(np.arange(draws), units),
                    "unit": np.tile(np.arange(units), draws),
                    "mean_error": ((mean_b - mu) / sigma).reshape(-1).numpy(),
                    "std_ratio": (std_b / sigma).reshape(-1).numpy(),
                    "x_hat": x_hat.reshape(-1).numpy(),
                    "x_hat_population": x_hat_population.repeat(draws).numpy(),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)
