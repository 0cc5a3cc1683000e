r"""The loss landscape along the gradient, and BN's scale invariance, measured.

Santurkar et al. (2018, Section 3.2) probe the landscape a network trains on: at a
training step with parameters :math:`\theta` and mini-batch gradient :math:`g`, they move
along the gradient, :math:`\theta_\eta = \theta - \eta\, g`, for a range of step sizes
:math:`\eta`, and record on the same mini-batch

- the loss :math:`L(\theta_\eta)` (its range over :math:`\eta`: "loss landscape");
- the change of the gradient :math:`\lVert \nabla L(\theta_\eta) - g \rVert_2` (its
  largest value: "gradient predictiveness", small when the gradient stays predictive);
- that change over the distance moved, :math:`\lVert \nabla L(\theta_\eta) - g \rVert_2 /
  \lVert \eta\, g \rVert_2` (its largest value: "effective :math:`\beta`-smoothness").

Ioffe & Szegedy (2015, Section 3.3) point out the property behind the second mechanism
this module measures: a unit followed by BN computes the same output when its incoming
weights are scaled, :math:`\mathrm{BN}((aW)u) = \mathrm{BN}(Wu)`, and its weights'
gradient scales as :math:`1/a`; :func:`unit_weight_norms` and :func:`effective_lr` follow
the consequence during training.

Every function here leaves the model exactly as it found it (parameters, BN running
statistics, gradients, train/eval mode).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from bnlib.engine import preserved_state
from bnlib.step import moved

__all__ = ["along_gradient", "effective_lr", "loss_and_gradient", "unit_weight_norms"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def loss_and_gradient(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn
) -> tuple[float, list[torch.Tensor]]:
    """The loss ``loss_fn(model(x), y)`` in train mode and its gradient, one tensor per
    parameter (zeros where a parameter gets none); the model is left unchanged."""
    params = list(model.parameters())
    with preserved_state(model):
        model.train()
        loss = loss_fn(model(x), y)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    g = [torch.zeros_like(p) if d is None else d.detach() for p, d in zip(params, grads)]
    return float(loss.detach()), g


def _norm(tensors: Sequence[torch.Tensor]) -> float:
    return math.sqrt(sum(float(t.double().square().sum()) for t in tensors))


def along_gradient(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    step_sizes: Sequence[float],
    loss_fn: LossFn = nn.functional.cross_entropy,
) -> list[dict]:
    r"""Santurkar et al.'s probe: the loss and the gradient at
    :math:`\theta - \eta\, g` for each step size :math:`\eta`, on the mini-batch ``(x, y)``.

    Args:
        x, y: the mini-batch (inputs ``(B, ...)``, targets): it gives :math:`g` and every
            measurement along the line. BN normalizes with its statistics (train mode), as
            in the training step.
        step_sizes: the :math:`\eta` values (> 0).
        loss_fn: ``loss_fn(output, y)``, a scalar; default: mean cross-entropy.

    Returns:
        One dict per step size: ``step_size``, ``loss`` (at the moved point; ``inf`` if not
        finite), ``loss_start`` (:math:`L(\theta)`), ``grad_norm``
        (:math:`\lVert g \rVert_2`), ``grad_change``
        (:math:`\lVert \nabla L(\theta_\eta) - g\rVert_2`; ``inf`` if not finite) and
        ``beta`` (``grad_change`` over the distance moved, :math:`\eta \lVert g\rVert_2`).
    """
    if any(not eta > 0 for eta in step_sizes):
        raise ValueError(f"step sizes must be > 0, got {list(step_sizes)}")
    start, g = loss_and_gradient(model, x, y, loss_fn)
    g_norm = _norm(g)
    rows = []
    for eta in step_sizes:
        with moved(model, g, -float(eta)):
            loss, g_moved = loss_and_gradient(model, x, y, loss_fn)
        change = _norm([a - b for a, b in zip(g_moved, g)])
        finite = math.isfinite(loss) and math.isfinite(change)
        rows.append(
            {
                "step_size": float(eta),
                "loss": loss if math.isfinite(loss) else math.inf,
                "loss_start": start,
                "grad_norm": g_norm,
                "grad_change": change if finite else math.inf,
                "beta": change / (eta * g_norm) if finite and g_norm > 0 else math.inf,
            }
        )
    return rows


@torch.no_grad()
def unit_weight_norms(linear: nn.Module, members: int = 1) -> torch.Tensor:
    r"""The norm :math:`\lVert w_j \rVert_2` of each unit's incoming weight vector.

    Args:
        linear: an ``nn.Linear`` (weight ``(out, in)``), a stacked linear layer (weight
            ``(K, out, in)``) or an ``nn.Conv2d`` (weight ``(out, in, kh, kw)``: a unit is
            an output channel).
        members: :math:`K`, the number of stacked models (1 for an ordinary layer).

    Returns:
        ``(K, out)`` float64 on the CPU.
    """
    w = linear.weight.detach()
    out = w.shape[-2] if w.dim() == 3 else w.shape[0] // members
    return w.double().reshape(members, out, -1).norm(dim=2).cpu()


def effective_lr(lr: float, norms: torch.Tensor) -> torch.Tensor:
    r"""The effective learning rate :math:`\eta / \lVert w_j \rVert^2` of each unit's weight
    direction :math:`w_j / \lVert w_j \rVert` when the unit is followed by BN.

    BN makes the loss depend on :math:`w_j` only through its direction, and a gradient
    step of size :math:`\eta` on :math:`w_j` turns that direction as a step of size
    :math:`\eta / \lVert w_j \rVert^2` would on a unit vector (the gradient scales as
    :math:`1/\lVert w_j\rVert`, and the angle moved as the step over :math:`\lVert
    w_j\rVert`). Momentum multiplies both the nominal and the effective rate by about
    :math:`1/(1 - \text{momentum})`.

    Args:
        lr: the nominal learning rate :math:`\eta`.
        norms: :math:`\lVert w_j \rVert` (any shape).

    Returns:
        Same shape as ``norms``.
    """
    return lr / norms.square()
