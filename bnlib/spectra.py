r"""Singular values: of products of random Gaussian matrices, and of networks' Jacobians.

Bjorck et al. (2018, Section 4) trace an unnormalized deep network's trouble at
initialization to random matrix theory: a deep *linear* network at initialization is a
product of :math:`L` independent random matrices, and the singular values of such a
product spread out with :math:`L`, a few growing and most collapsing toward zero. This
module computes both sides of that comparison.

Theory, for :math:`N \times N` matrices with i.i.d. entries :math:`\mathcal N(0, 1/N)`, as
:math:`N \to \infty`:

- one matrix (:math:`L = 1`): the singular values follow the quarter-circle law,
  density :math:`\frac{1}{\pi}\sqrt{4 - s^2}` on :math:`[0, 2]`
  (:func:`quarter_circle_density`, :func:`quarter_circle_cdf`);
- a product of :math:`L`: the largest singular value tends to
  :math:`\sqrt{(L+1)^{L+1} / L^L}` (:func:`product_edge`: 2, 3.08, 3.86 for
  :math:`L = 1, 3, 5`), while the squared singular values' mean stays 1.

Networks: :func:`hidden_jacobians` takes the per-example Jacobian of a fully connected
network's hidden layers, :math:`\partial h_{j} / \partial h_{i}`, a square matrix when the
layers have equal widths. With BN, a per-example Jacobian needs BN's statistics held
fixed (in train mode every output depends on every example of the batch; the NTU project's
"Jacobians" mixed examples for this reason): :func:`frozen_batch_statistics` makes BN
normalize with one batch's statistics as constants, exactly as the training step on that
batch does, so the Jacobian is that of the function the training step sees, one example
at a time.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from bnlib.engine import preserved_state
from bnlib.norm import is_batch_norm

__all__ = [
    "frozen_batch_statistics",
    "gaussian_product_singular_values",
    "hidden_jacobians",
    "hidden_states",
    "layer_jacobians",
    "product_edge",
    "quarter_circle_cdf",
    "quarter_circle_density",
    "singular_value_summary",
]


def gaussian_product_singular_values(
    n: int, depth: int, *, draws: int = 1, seed: int = 0
) -> np.ndarray:
    r"""Singular values of :math:`W_L \cdots W_1`, each :math:`W_i` an independent
    :math:`n \times n` matrix with i.i.d. :math:`\mathcal N(0, 1/n)` entries.

    Computed in float64 (products of 10 matrices span many orders of magnitude).

    Args:
        n: the matrices' size (>= 1).
        depth: the number of matrices :math:`L` (>= 1).
        draws: independent products.
        seed: seeds the draws; the same seed gives the same matrices for every ``depth``,
            so that depth ``L`` extends depth ``L - 1`` by one matrix.

    Returns:
        ``(draws, n)`` float64, each row in descending order.
    """
    for value, name in ((n, "n"), (depth, "depth"), (draws, "draws")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    generator = torch.Generator().manual_seed(seed)
    out = np.empty((draws, n))
    for d in range(draws):
        product = torch.eye(n, dtype=torch.float64)
        for _ in range(depth):
            w = torch.randn(n, n, generator=generator, dtype=torch.float64) / math.sqrt(n)
            product = w @ product
        out[d] = torch.linalg.svdvals(product).numpy()
    return out


def quarter_circle_density(s: np.ndarray | float) -> np.ndarray:
    r"""The quarter-circle law :math:`\frac1\pi\sqrt{4 - s^2}` on :math:`[0, 2]` (0
    elsewhere): the singular values of one large matrix with :math:`\mathcal N(0, 1/n)`
    entries."""
    s = np.asarray(s, dtype=float)
    inside = (s >= 0) & (s <= 2)
    return np.where(inside, np.sqrt(np.clip(4 - s**2, 0, None)) / math.pi, 0.0)


def quarter_circle_cdf(s: np.ndarray | float) -> np.ndarray:
    r"""The quarter-circle law's cumulative distribution,
    :math:`\frac1\pi\left(\frac s2\sqrt{4 - s^2} + 2\arcsin\frac s2\right)` on
    :math:`[0, 2]`."""
    s = np.clip(np.asarray(s, dtype=float), 0, 2)
    return (s / 2 * np.sqrt(4 - s**2) + 2 * np.arcsin(s / 2)) / math.pi


def product_edge(depth: int) -> float:
    r"""The largest singular value of a product of ``depth`` large Gaussian matrices
    (entries :math:`\mathcal N(0, 1/n)`) as :math:`n \to \infty`:
    :math:`\sqrt{(L+1)^{L+1} / L^L}`."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    return math.sqrt((depth + 1) ** (depth + 1) / depth**depth)


def singular_value_summary(values: np.ndarray, small: float = 0.1) -> dict[str, float]:
    """The statistics the chapter follows with depth, over all values given.

    Returns:
        ``{"largest", "median", "fraction_small"}``: the largest value, the median, and
        the fraction of values below ``small``.
    """
    values = np.asarray(values, dtype=float).ravel()
    return {
        "largest": float(values.max()),
        "median": float(np.median(values)),
        "fraction_small": float((values < small).mean()),
    }


@contextlib.contextmanager
def frozen_batch_statistics(model: nn.Module, x: torch.Tensor) -> Iterator[nn.Module]:
    """Inside the context, every BN layer of ``model`` normalizes with the statistics of
    the batch ``x`` as constants: the model is in eval mode with each BN's running mean
    and variance set to ``x``'s batch mean and (biased) variance at that layer, so its
    output on ``x`` is exactly the train-mode output, but one example's output no
    longer depends on the others'. On exit the model's buffers, gradients and mode are
    restored (:func:`bnlib.engine.preserved_state`).

    Args:
        x: the batch ``(B, ...)`` whose statistics BN uses.

    Yields:
        ``model``.
    """
    norms = [m for m in model.modules() if is_batch_norm(m)]
    inputs: dict[nn.Module, torch.Tensor] = {}

    def keep(module, args):
        inputs[module] = args[0].detach()

    with preserved_state(model):
        handles = [m.register_forward_pre_hook(keep) for m in norms]
        try:
            model.train()
            with torch.no_grad():
                model(x)
        finally:
            for h in handles:
                h.remove()
        with torch.no_grad():
            for m in norms:
                if getattr(m, "running_mean", None) is None:
                    raise ValueError(
                        "frozen_batch_statistics needs BN layers that keep running "
                        "statistics (track_running_stats=True)"
                    )
                v = inputs[m]
                dims = [d for d in range(v.dim()) if d != 1]
                m.running_mean.copy_(v.mean(dims))
                m.running_var.copy_(v.var(dims, unbiased=False))
        model.eval()
        yield model


@torch.no_grad()
def hidden_states(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The hidden layers' outputs of a single MLP on ``x``, in the model's current mode
    (BN's running statistics change in train mode: use :func:`frozen_batch_statistics`).

    Returns:
        ``[h_0, h_1, ..., h_depth]``: ``h_0`` the flattened input ``(B, in_features)``,
        ``h_i`` the output of hidden layer ``i`` ``(B, width_i)``.
    """
    states = [x.flatten(1)]
    for linear, norm, act in zip(model.linears, model.norms, model.activations):
        states.append(act(norm(linear(states[-1]))))
    return states


def layer_jacobians(
    model: nn.Module, layers: Sequence[Callable[[torch.Tensor], torch.Tensor]], h: torch.Tensor
) -> torch.Tensor:
    r"""Per-example Jacobians of a composition of ``model``'s layers,
    :math:`\partial (f_k \circ \dots \circ f_1)(h) / \partial h`, at each row of ``h``.

    The model is used as it is: in eval mode BN applies its running statistics as
    constants (use :func:`frozen_batch_statistics` for a batch's own); in train mode
    this function refuses, as BN would then mix the examples.

    Args:
        model: the network the layers belong to (checked for train-mode BN).
        layers: callables mapping ``(1, n_in)`` to ``(1, n_out)``, applied in order.
        h: ``(B, n_in)``: the points, one example per row.

    Returns:
        ``(B, n_out, n_in)``: one Jacobian per example.
    """
    if model.training and any(is_batch_norm(m) for m in model.modules()):
        raise ValueError(
            "in train mode BN mixes the examples of a batch, so there is no per-example "
            "Jacobian: call model.eval(), or use frozen_batch_statistics(model, x)"
        )

    def composed(one: torch.Tensor) -> torch.Tensor:
        out = one.unsqueeze(0)
        for layer in layers:
            out = layer(out)
        return out.squeeze(0)

    with torch.no_grad():  # the Jacobians are values, not part of a graph
        return torch.func.vmap(torch.func.jacrev(composed))(h.detach())


def hidden_jacobians(model: nn.Module, h: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    r"""Per-example Jacobians of an MLP's hidden layers ``start .. stop - 1``:
    :math:`\partial h_{\text{stop}} / \partial h_{\text{start}}`, where :math:`h_i` is the
    output of hidden layer :math:`i` (:math:`h_0` the flattened input) and hidden layer
    :math:`i` (0-based) maps :math:`h_i` to
    :math:`h_{i+1} = \phi(\mathrm{norm}(W_i h_i))` (see :func:`layer_jacobians`).

    Args:
        model: a single :class:`bnlib.models.MLP` (``members=1``), not in train mode if
            it has BN.
        h: ``(B, width_start)`` the inputs of hidden layer ``start``.
        start, stop: ``0 <= start < stop <= depth``.

    Returns:
        ``(B, width_stop, width_start)``: one Jacobian per example.
    """
    depth = len(model.linears)
    if not 0 <= start < stop <= depth:
        raise ValueError(f"need 0 <= start < stop <= {depth} (hidden layers), got {start}, {stop}")
    layers = [
        nn.Sequential(model.linears[i], model.norms[i], model.activations[i])
        for i in range(start, stop)
    ]
    return layer_jacobians(model, layers, h)
