r"""Why BN tolerates large steps: the landscape along the gradient and scale invariance
(chapter "Why BN tolerates large steps").

- :func:`landscape`: Santurkar et al.'s (2018) measurements along the gradient over
  training (:func:`bnlib.landscape.along_gradient`), for a VGG-style CNN, their 25-layer
  deep linear network, or the deep MLP of the chapter "Large learning rates" (the
  explorer's), with and without BN;
- :func:`lp_normalization`: their counterpoint, l_p normalizations
  (:class:`bnlib.normalizers.LpNorm`) instead of BN: accuracy, and how far the layers'
  input distributions move;
- :func:`scale_invariance`: :math:`\mathrm{BN}((aW)u) = \mathrm{BN}(Wu)` and the
  :math:`1/a` gradient, measured in float64;
- :func:`effective_lr`: each BN network's weight norms and effective learning rate over
  training, over the learning-rate grid of the chapter "Large learning rates", with and
  without weight decay.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from bnlib import arguments
from bnlib import data as datasets
from bnlib.device import pick_device, seed_everything
from bnlib.engine import Member, StackedRun, accuracy, batch_indices, preserved_state
from bnlib.experiments import MEASURES_AT_END, Reproduction, register
from bnlib.experiments.learning_rate import lr_grid
from bnlib.landscape import along_gradient, unit_weight_norms
from bnlib.landscape import effective_lr as effective_rate
from bnlib.models import MLP, VGG
from bnlib.norm import BatchNorm, swap_batch_norms
from bnlib.normalizers import LP_NORMS, LpNorm
from bnlib.progress import progress_bar
from bnlib.setups import (
    DEEP_MLP,
    HE_RELU,
    deep_linear_loss,
    deep_linear_network,
    deep_linear_problem,
)

__all__ = [
    "NORMALIZATIONS",
    "build_network",
    "effective_lr",
    "landscape",
    "lp_normalization",
    "scale_invariance",
]

CHAPTER = "Why BN tolerates large steps"

#: The normalizations the experiments take, by name: none, BN, and the l_p ones.
NORMALIZATIONS = ("none", "bn", *LP_NORMS)

#: The deep ReLU MLP of the chapter "Large learning rates" (He initialization).


def build_network(
    network: str,
    norm: str,
    *,
    widths: Sequence[int] = (16, 32, 64),
    convs: int = 2,
    depth: int = 25,
    width: int = 10,
) -> nn.Module:
    """One of the chapter's networks, initialized from the current torch seed.

    Args:
        network: ``"vgg"`` (:class:`bnlib.models.VGG` with ``widths`` and ``convs``,
            Glorot initialization as Santurkar et al.'s), ``"linear"`` (their deep linear
            network: ``depth`` layers of ``width x width`` without biases, Glorot) or
            ``"mlp"`` (the deep He-initialized ReLU MLP of the chapter "Large learning
            rates").
        norm: ``"none"``, ``"bn"`` or an l_p normalization (``"l1"``, ``"l2"``,
            ``"linf"``: BN's layers replaced by :class:`bnlib.normalizers.LpNorm`).
    """
    if norm not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {norm!r}: choose one of {NORMALIZATIONS}")
    base = "none" if norm == "none" else "torch"
    if network == "vgg":
        model: nn.Module = VGG(widths=widths, convs=convs, norm=base, init="xavier")
    elif network == "linear":
        model = deep_linear_network(base, depth=depth, width=width)
    elif network == "mlp":
        model = MLP(norm=base, **DEEP_MLP, **HE_RELU)
    else:
        raise ValueError(f"unknown network {network!r}: choose 'vgg', 'linear' or 'mlp'")
    if norm in LP_NORMS:
        swap_batch_norms(model, lambda bn: LpNorm(bn.num_features, LP_NORMS[norm]))
    return model


def _problem(
    network: str, seed: int, samples: int, width: int, batch_size: int, steps: int, dev
) -> tuple[Iterator, Callable, datasets.Split | None]:
    """The training batches (one per step, plus one), the loss and the test split."""
    if network == "linear":
        x, target = deep_linear_problem(samples=samples, width=width, seed=seed, device=dev)
        return itertools.repeat((x, target)), deep_linear_loss, None
    split = datasets.load("fashion-mnist", "train", dev)
    order = batch_indices(
        len(split.y), batch_size, steps + 1, torch.Generator().manual_seed(seed), dev
    )
    batches = ((split.x[i], split.y[i]) for i in order)
    return batches, nn.functional.cross_entropy, datasets.load("fashion-mnist", "test", dev)


def _train_probing(
    model: nn.Module,
    batches: Iterator,
    *,
    steps: int,
    lr: float,
    weight_decay: float,
    loss_fn: Callable,
    log_at: set[int],
    probe: Callable[[nn.Module, torch.Tensor, torch.Tensor], list[dict]],
    desc: str,
) -> tuple[list[dict], bool]:
    """Plain SGD (``weight_decay`` added to the gradient, as ``torch.optim.SGD``), calling
    ``probe(model, x, y)`` before the steps in ``log_at`` on the very batch that step
    trains on. Returns the probe's rows (with ``step``) and whether the loss became
    non-finite (training stops there)."""
    rows: list[dict] = []
    bar = progress_bar(steps, desc)
    diverged = False
    for step in range(steps + 1):
        x, y = next(batches)
        if step in log_at:
            rows += [{"step": step, **r} for r in probe(model, x, y)]
        if step == steps:
            break
        model.train()
        loss = loss_fn(model(x), y)
        if not torch.isfinite(loss):
            diverged = True
            break
        model.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                if p.grad is not None:
                    p -= lr * (p.grad + weight_decay * p)
        bar.update()
    bar.close()
    return rows, diverged


def _scale_invariant_layers(model: nn.Module) -> list[nn.Module]:
    """The weight layers whose every unit is followed by a normalization (the MLP's hidden
    layers, the VGG's convolutions): their units' outputs do not depend on the weights'
    scale."""
    if isinstance(model, MLP):
        return list(model.linears)
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def _rms_weight_norm(model: nn.Module) -> float:
    """The root mean square of the units' weight norms over the layers a normalization
    follows: the norm of the average unit, which units that stopped learning (and so only
    shrink under weight decay) do not dominate as they can a median."""
    norms = torch.cat([unit_weight_norms(m).flatten() for m in _scale_invariant_layers(model)])
    return float(norms.square().mean().sqrt())


@register(
    "vgg_landscape",
    chapter=CHAPTER,
    smoke={"network": "vgg", "steps": 6, "points": 2, "factors": [0.5, 4.0], "count": 2},
    quick={"network": "vgg", "steps": 600, "points": 13},
    full={"network": "vgg", "steps": 3000, "points": 31, "widths": [32, 64, 128]},
    reproduce=Reproduction(subset={"norms": ["bn"]}, prefix=None, why=MEASURES_AT_END),
)
@register(
    "linear_landscape",
    chapter=CHAPTER,
    shard_on=("norms",),
    smoke={
        "network": "linear",
        "lr": 1e-6,
        "factors": [0.01, 30.0],
        "steps": 6,
        "points": 2,
        "count": 2,
    },
    quick={"network": "linear", "lr": 1e-6, "factors": [0.01, 30.0], "steps": 1000, "points": 21},
    full={"network": "linear", "lr": 1e-6, "factors": [0.01, 30.0], "steps": 10_000, "points": 201},
    reproduce=Reproduction(subset={"norms": ["bn"]}),
)
def landscape(
    network: str = "vgg",
    norms: Sequence[str] = ("none", "bn"),
    steps: int = 600,
    lr: float = 0.1,
    weight_decay: float = 0.0,
    batch_size: int = 128,
    factors: Sequence[float] = (0.5, 4.0),
    count: int = 8,
    points: int = 13,
    seed: int = 0,
    widths: Sequence[int] = (16, 32, 64),
    convs: int = 2,
    depth: int = 25,
    width: int = 10,
    samples: int = 1000,
    device: str | None = "cpu",
) -> pd.DataFrame:
    r"""The loss and the gradient along the gradient direction over training, with and
    without BN (Santurkar et al. 2018, Section 3.2, Figure 4).

    Each network (:func:`build_network`) is trained by plain SGD at ``lr`` (with
    ``weight_decay``) for ``steps`` steps: on Fashion-MNIST with mini-batches of
    ``batch_size`` (cross-entropy), or, for ``"linear"``, by full-batch gradient descent
    on ``samples`` Gaussian inputs to minimize :math:`\sum_n \lVert W_{25}\cdots W_1 x_n -
    A x_n\rVert^2` (:math:`A` a random Gaussian matrix). At ``points`` evenly spaced steps
    (0 and ``steps`` included), before the update and on that step's batch,
    :func:`bnlib.landscape.along_gradient` probes ``count`` step sizes log-spaced from
    ``factors[0] * lr`` to ``factors[1] * lr``. The model is left unchanged by each probe.

    Returns:
        One row per network, step and step size: ``network, norm, step, step_size,
        factor`` (step size / ``lr``), ``loss, loss_start, grad_norm, grad_change, beta``
        (see :func:`bnlib.landscape.along_gradient`), ``weight_norm`` (the root mean square of the
        units' incoming weight norms over the layers a normalization follows),
        ``test_accuracy`` (eval mode, at the end; NaN for the deep linear network) and
        ``diverged`` (the training loss became non-finite; the run stopped there).
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    arguments.check_number(lr, "lr", above=0)
    arguments.check_number(weight_decay, "weight_decay", low=0)
    if not 0 < factors[0] < factors[1]:
        raise ValueError(f"factors must be (low, high) with 0 < low < high, got {factors}")
    dev = pick_device(device)
    step_sizes = [lr * f for f in np.geomspace(factors[0], factors[1], count)]
    log_at = {int(round(s)) for s in np.linspace(0, steps, points)}
    frames = []
    for norm in norms:
        seed_everything(seed)
        model = build_network(network, norm, widths=widths, convs=convs, depth=depth, width=width)
        model = model.to(dev)
        batches, loss_fn, test = _problem(network, seed, samples, width, batch_size, steps, dev)

        def probe(m, x, y, loss_fn=loss_fn):
            norm_value = _rms_weight_norm(m)
            return [
                {**r, "weight_norm": norm_value}
                for r in along_gradient(m, x, y, step_sizes, loss_fn)
            ]

        rows, diverged = _train_probing(
            model,
            batches,
            steps=steps,
            lr=lr,
            weight_decay=weight_decay,
            loss_fn=loss_fn,
            log_at=log_at,
            probe=probe,
            desc=f"{network} {norm}",
        )
        frame = pd.DataFrame(rows)
        frame["test_accuracy"] = _eval_accuracy(model, test) if test and not diverged else np.nan
        frames.append(frame.assign(network=network, norm=norm, diverged=diverged))
    out = pd.concat(frames, ignore_index=True)
    out["factor"] = out["step_size"] / lr
    columns = ["network", "norm", "step", "step_size", "factor", "loss", "loss_start"]
    rest = ["grad_norm", "grad_change", "beta", "weight_norm", "test_accuracy", "diverged"]
    return out[columns + rest]


def _eval_accuracy(model: nn.Module, test: datasets.Split) -> float:
    """Test accuracy in eval mode (normalizations with their running statistics); the
    model's mode is restored."""
    with preserved_state(model):
        model.eval()
        return accuracy(model, test, batch_size=1000)


@register(
    "lp_normalization",
    chapter=CHAPTER,
    smoke={"steps": 6, "points": 2, "seeds": [0]},
    quick={"steps": 300, "points": 7, "seeds": [0]},
    full={"steps": 2000, "points": 11, "seeds": [0, 1]},
    reproduce=Reproduction(
        subset={"seeds": [0], "norms": ["bn"]}, prefix=None, why=MEASURES_AT_END
    ),
)
def lp_normalization(
    norms: Sequence[str] = NORMALIZATIONS,
    steps: int = 500,
    lr: float = 0.1,
    batch_size: int = 128,
    points: int = 11,
    seeds: Sequence[int] = (0,),
    widths: Sequence[int] = (16, 32, 64),
    convs: int = 2,
    device: str | None = "cpu",
) -> pd.DataFrame:
    r"""Santurkar et al.'s counterpoint (Section 3.3): a VGG-style CNN with BN replaced by
    l_p normalizations (:class:`bnlib.normalizers.LpNorm`), against BN and none.

    Each network (:func:`build_network`, ``"vgg"``) is trained by plain SGD at ``lr`` on
    Fashion-MNIST (mini-batches of ``batch_size``) for ``steps`` steps, per seed. At
    ``points`` evenly spaced steps, the input of every ReLU (the normalization's output,
    after :math:`\gamma` and :math:`\beta`) is summarized per channel on that step's batch,
    before the update: its mean and standard deviation over the batch and positions.

    Returns:
        Columns ``norm, seed, step, layer`` (0 = first convolution), ``channel, mean,
        std, loss`` (that batch's training loss), ``test_accuracy`` and
        ``train_accuracy`` (eval mode, at the end, on the test split and on a fixed random
        sample of 10,000 training images; NaN if the run diverged) and ``diverged``.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    arguments.check_number(lr, "lr", above=0)
    dev = pick_device(device)
    log_at = {int(round(s)) for s in np.linspace(0, steps, points)}
    train = datasets.load("fashion-mnist", "train", dev)
    sample = torch.randperm(len(train.y), generator=torch.Generator().manual_seed(0))[:10_000]
    train_sample = datasets.Split(train.x[sample.to(dev)], train.y[sample.to(dev)])
    frames = []
    for norm, seed in itertools.product(norms, seeds):
        seed_everything(seed)
        model = build_network("vgg", norm, widths=widths, convs=convs).to(dev)
        batches, loss_fn, test = _problem("vgg", seed, 0, 0, batch_size, steps, dev)
        relus = [m for m in model.features if isinstance(m, nn.ReLU)]

        def probe(m, x, y, relus=relus, loss_fn=loss_fn):
            captured: list[torch.Tensor] = []
            handles = [
                r.register_forward_pre_hook(lambda _, inputs: captured.append(inputs[0].detach()))
                for r in relus
            ]
            try:
                with preserved_state(m), torch.no_grad():
                    m.train()
                    loss = float(loss_fn(m(x), y))
            finally:
                for h in handles:
                    h.remove()
            rows = []
            for layer, a in enumerate(captured):
                values = a.double().movedim(1, 0).flatten(1)
                means, stds = values.mean(1).tolist(), values.std(1).tolist()
                rows += [
                    {"layer": layer, "channel": c, "mean": mu, "std": sd, "loss": loss}
                    for c, (mu, sd) in enumerate(zip(means, stds))
                ]
            return rows

        rows, diverged = _train_probing(
            model,
            batches,
            steps=steps,
            lr=lr,
            weight_decay=0.0,
            loss_fn=loss_fn,
            log_at=log_at,
            probe=probe,
            desc=f"VGG {norm} seed {seed}",
        )
        frame = pd.DataFrame(rows)
        frame["test_accuracy"] = np.nan if diverged else _eval_accuracy(model, test)
        frame["train_accuracy"] = np.nan if diverged else _eval_accuracy(model, train_sample)
        frames.append(frame.assign(norm=norm, seed=seed, diverged=diverged))
    out = pd.concat(frames, ignore_index=True)
    columns = ["norm", "seed", "step", "layer", "channel", "mean", "std", "loss"]
    return out[columns + ["test_accuracy", "train_accuracy", "diverged"]]


def _bn_response(
    layer: BatchNorm, u: torch.Tensor, w: torch.Tensor, direction: torch.Tensor, a: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``BN((a w) u)`` in train mode, the gradient of ``<output, direction>`` with respect to
    ``a w``, and ``a w``; the layer is left unchanged."""
    weight = (a * w).requires_grad_()
    with preserved_state(layer):
        layer.train()
        out = layer(u @ weight.T)
    (grad,) = torch.autograd.grad((out * direction).sum(), weight)
    return out.detach(), grad, weight.detach()


@register(
    "scale_invariance",
    chapter=CHAPTER,
    shard_on=("seeds", "scales", "eps_values"),
    smoke={},
    quick={},
    full={"batch_size": 256, "seeds": [0, 1, 2, 3, 4]},
    reproduce=Reproduction(subset={"seeds": [0, 1]}),
)
def scale_invariance(
    scales: Sequence[float] = (0.01, 0.1, 0.5, 2.0, 10.0, 100.0),
    eps_values: Sequence[float] = (0.0, 1e-5),
    batch_size: int = 64,
    fan_in: int = 50,
    units: int = 20,
    seeds: Sequence[int] = (0,),
) -> pd.DataFrame:
    r"""BN's scale invariance, measured in float64 (Ioffe & Szegedy 2015, Section 3.3).

    A layer :math:`u \mapsto \mathrm{BN}(Wu)` (:class:`bnlib.norm.BatchNorm`, train mode,
    ``units`` units with ``fan_in`` inputs, He-scaled Gaussian :math:`W`) on a Gaussian
    batch of ``batch_size``, with a fixed random linear loss of its output. For each scale
    :math:`a` and each BN :math:`\epsilon`, the layer is evaluated with :math:`aW`.

    Returns:
        Columns ``seed, eps, scale, output_change`` (largest
        :math:`|\mathrm{BN}(aWu) - \mathrm{BN}(Wu)|`), ``gradient_ratio``
        (:math:`a \lVert \nabla_{aW} \rVert / \lVert \nabla_W \rVert`: 1 when the gradient
        scales as :math:`1/a`), ``gradient_error`` (:math:`\lVert a \nabla_{aW} - \nabla_W
        \rVert / \lVert \nabla_W \rVert`: 0 when it does, as a vector) and ``cosine``
        (the largest :math:`|\cos|` between a unit's weight vector and its gradient: 0 when
        they are orthogonal).
    """
    rows = []
    for seed, eps in itertools.product(seeds, eps_values):
        gen = torch.Generator().manual_seed(seed)
        u = torch.randn(batch_size, fan_in, generator=gen, dtype=torch.float64)
        w = torch.randn(units, fan_in, generator=gen, dtype=torch.float64) * math.sqrt(2 / fan_in)
        direction = torch.randn(batch_size, units, generator=gen, dtype=torch.float64)
        layer = BatchNorm(units, eps=eps, dtype=torch.float64)

        out_1, grad_1, _ = _bn_response(layer, u, w, direction, 1.0)
        for a in scales:
            out_a, grad_a, weight = _bn_response(layer, u, w, direction, float(a))
            cosine = (grad_a * weight).sum(1).abs() / (grad_a.norm(dim=1) * weight.norm(dim=1))
            rows.append(
                {
                    "seed": seed,
                    "eps": eps,
                    "scale": float(a),
                    "output_change": float((out_a - out_1).abs().max()),
                    "gradient_ratio": float(a * grad_a.norm() / grad_1.norm()),
                    "gradient_error": float((a * grad_a - grad_1).norm() / grad_1.norm()),
                    "cosine": float(cosine.max()),
                }
            )
    return pd.DataFrame(rows)


_EFFECTIVE_LR = {
    "lr_range": [1e-4, 1.0],
    "lr_count": 9,
    "weight_decays": [0.0, 1e-4, 1e-3],
    "momentum": 0.9,
    "steps": 1200,
    "points": 13,
}


@register(
    "effective_lr",
    chapter=CHAPTER,
    smoke={**_EFFECTIVE_LR, "lr_count": 2, "weight_decays": [0.0, 1e-3], "steps": 6, "points": 2},
    quick=_EFFECTIVE_LR,
    full={**_EFFECTIVE_LR, "steps": 9360, "points": 25, "seeds": [0, 1]},
)
def effective_lr(
    lr_range: Sequence[float] = (1e-4, 1.0),
    lr_count: int = 9,
    weight_decays: Sequence[float] = (0.0, 1e-4, 1e-3),
    momentum: float = 0.9,
    steps: int = 1200,
    batch_size: int = 128,
    points: int = 13,
    seeds: Sequence[int] = (0,),
    device: str | None = None,
) -> pd.DataFrame:
    r"""Weight norms and effective learning rates of BN networks over training.

    The deep BN MLP of the chapter "Large learning rates" (8 hidden ReLU layers of 100,
    He initialization, BN after every hidden layer) on Fashion-MNIST, trained by SGD with
    ``momentum``, batches of ``batch_size``, for ``steps`` steps at a constant learning
    rate: one model per learning rate (``lr_count`` log-spaced over ``lr_range``: that
    chapter's grid), weight decay and seed, all trained at once
    (:class:`bnlib.engine.StackedRun`). At ``points`` evenly spaced steps, per hidden
    layer, the root mean square :math:`\bar w` of the units' weight norms
    :math:`\lVert w_j\rVert` (the norm of the layer's average unit: units that stopped
    learning only shrink under weight decay, and would dominate a median) and the
    effective learning rate :math:`\eta / \bar w^2` (:func:`bnlib.landscape.effective_lr`).

    Returns:
        Columns ``lr, weight_decay, seed, step, layer`` (0 = first hidden layer),
        ``weight_norm, effective_lr, loss`` (the member's last minibatch loss) and
        ``diverged``.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    members = [
        Member(
            lr=lr,
            seed=seed,
            **HE_RELU,
            momentum=momentum,
            weight_decay=wd,
        )
        for lr, wd, seed in itertools.product(
            lr_grid(lr_range[0], lr_range[1], lr_count), weight_decays, seeds
        )
    ]
    split = datasets.load("fashion-mnist", "train", pick_device(device))
    run = StackedRun(
        "mlp", {**DEEP_MLP, "norm": "torch"}, members, split, batch_size=batch_size, device=device
    )

    def probe(r: StackedRun, step: int) -> list[dict]:
        rows = []
        loss = r.last_loss.cpu().tolist() if step else [float("nan")] * r.k
        for layer, linear in enumerate(r.model.linears):
            rms = unit_weight_norms(linear, r.k).square().mean(1).sqrt()  # (K,)
            for i, member in enumerate(r.members):
                rows.append(
                    {
                        "member": i,
                        "layer": layer,
                        "weight_norm": float(rms[i]),
                        "effective_lr": float(effective_rate(member.lr, rms[i])),
                        "member_loss": loss[i],
                    }
                )
        return rows

    log_at = [int(round(s)) for s in np.linspace(0, steps, points)]
    frame = run.train(steps, log_at=log_at, probes=[probe], desc="BN MLPs")
    frame = frame[frame["metric"].isna()] if "metric" in frame else frame
    frame = frame.rename(columns={"member_loss": "loss"}).astype({"layer": int})
    return frame[
        [
            "lr",
            "weight_decay",
            "seed",
            "step",
            "layer",
            "weight_norm",
            "effective_lr",
            "loss",
            "diverged",
        ]
    ].reset_index(drop=True)
