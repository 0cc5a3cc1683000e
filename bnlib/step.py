r"""What one gradient step does to a network: the loss along the step, the activations
along it, and the gradient that starts it.

Bjorck et al. (2018) explain why an unnormalized deep network cannot take large steps by
looking at a single update :math:`\theta \to \theta - \eta\, g`, with :math:`g` the
gradient of the mini-batch loss: the *relative loss* :math:`L(\theta - \eta g) /
L(\theta)` on the same mini-batch against the step size :math:`\eta`, and the channel
statistics of the activations at :math:`\theta - t\,\eta g` for :math:`t` from 0 to 1.

Every function here works on a single (unstacked) model and leaves it exactly as it found
it: parameters, BN running statistics, gradients, train/eval mode. The network is run in
train mode (BN normalizes with the batch's statistics, as in the training step whose
update is studied).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import nn

from bnlib.engine import preserved_state

__all__ = [
    "DIVERGENCE_RATIO",
    "channel_statistics",
    "gradient",
    "moved",
    "output_gradients",
    "relative_losses",
]

#: Bjorck et al.'s definition: a step diverges when the loss grows by more than this.
DIVERGENCE_RATIO = 1e3


def gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, list]:
    """The mini-batch loss and its gradient, in train mode, leaving the model unchanged.

    Args:
        x: inputs ``(B, ...)``; y: labels ``(B,)``.

    Returns:
        ``(loss, g)``: the mean cross-entropy (a float) and one gradient tensor per
        parameter (``torch.zeros_like`` where a parameter gets none).
    """
    params = list(model.parameters())
    with preserved_state(model):
        model.train()
        loss = nn.functional.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    g = [torch.zeros_like(p) if d is None else d.detach() for p, d in zip(params, grads)]
    return float(loss.detach()), g


@contextlib.contextmanager
def moved(model: nn.Module, direction: Sequence[torch.Tensor], scale: float) -> Iterator[None]:
    """Parameters set to :math:`\\theta + \\text{scale} \\cdot \\text{direction}` inside the
    block; exactly :math:`\\theta` again (the saved tensors copied back) after it.

    ``moved(model, g, -eta * t)`` is the point a fraction ``t`` of the way along the SGD
    step of size ``eta``: ``t = 0`` is the start, ``t = 1`` the full step.
    """
    params = list(model.parameters())
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.add_(d, alpha=scale)
        yield
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)


@torch.no_grad()
def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(nn.functional.cross_entropy(model(x), y))


def relative_losses(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, step_sizes: Sequence[float]
) -> tuple[float, list[float]]:
    r"""The relative loss :math:`L(\theta - \eta g) / L(\theta)` of one plain gradient step
    on the mini-batch ``(x, y)``, for each step size :math:`\eta` (Bjorck et al.'s probe).

    Args:
        x: inputs ``(B, ...)``; y: labels ``(B,)``: the same mini-batch gives the gradient
            and both losses.
        step_sizes: the :math:`\eta` values (> 0).

    Returns:
        ``(loss, ratios)``: the loss :math:`L(\theta)` before the step (``nan`` or
        ``inf`` when the network is already broken), and one ratio per step size (``inf``
        where the loss after the step is not finite). A ratio above
        :data:`DIVERGENCE_RATIO` is a diverging step.
    """
    if any(not eta > 0 for eta in step_sizes):
        raise ValueError(f"step sizes must be > 0, got {list(step_sizes)}")
    before, g = gradient(model, x, y)
    ratios = []
    with preserved_state(model):
        model.train()
        for eta in step_sizes:
            with moved(model, g, -float(eta)):
                after = _loss(model, x, y)
            ratios.append(after / before if math.isfinite(after) else math.inf)
    return before, ratios


def channel_statistics(
    model: nn.Module, x: torch.Tensor, modules: Mapping[str, nn.Module]
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per-channel mean and variance of the outputs of ``modules`` on the batch ``x``, in
    train mode, leaving the model unchanged.

    Args:
        x: inputs ``(B, C, H, W)`` or ``(B, F)``.
        modules: submodules of ``model`` by the name to report them under.

    Returns:
        ``{name: (means, variances)}``, each ``(channels,)`` float64 on the CPU: for a
        ``(B, C, H, W)`` output, over the batch and the positions; for ``(B, F)``, over
        the batch.
    """
    captured: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(module, inputs, output):
            captured[name] = output.detach()

        return hook

    handles = [m.register_forward_hook(keep(name)) for name, m in modules.items()]
    try:
        with preserved_state(model), torch.no_grad():
            model.train()
            model(x)
    finally:
        for h in handles:
            h.remove()
    stats = {}
    for name, out in captured.items():
        values = out.double().movedim(1, 0).flatten(1)  # (C, B*H*W)
        stats[name] = (values.mean(1).cpu(), values.var(1, unbiased=False).cpu())
    return stats


def output_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""The gradient of each example's cross-entropy with respect to its logits,
    :math:`\mathrm{softmax}(z) - \mathrm{onehot}(y)`, in train mode (BN with the batch's
    statistics), leaving the model unchanged.

    Returns:
        ``(B, classes)`` float64 on the CPU. (The mean loss's gradient is this over ``B``.)
    """
    with preserved_state(model), torch.no_grad():
        model.train()
        logits = model(x).double()
    onehot = nn.functional.one_hot(y, logits.shape[-1]).double()
    return (logits.softmax(-1) - onehot).cpu()
