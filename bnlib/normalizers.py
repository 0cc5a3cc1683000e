r"""Normalizations other than BN, as drop-in replacements for a network's BN layers.

Santurkar et al. (2018, Section 3.3) ask whether BN's benefit needs BN's particular
statistics. They replace it by *l_p normalization*: subtract the mean and divide by the
average :math:`\ell_p` norm of the activations, for :math:`p = 1, 2, \infty`, and report
that it trains as well as BN while the layers' input distributions move more.

The exact form of their normalization we could not verify in the paper's text. Our
reading, :class:`LpNorm`: per channel :math:`c`, subtract the batch mean :math:`\mu_c`
(as BN does); then divide the whole layer by one number, the average over the batch of
each example's :math:`\ell_p` norm of its centred activations, taken over all of the
layer's :math:`d` units (channels and positions) and put on a per-unit scale:

.. math::
    s = \frac{1}{B} \sum_{i=1}^{B} \frac{\lVert x_i - \mu \rVert_p}{d^{1/p}}, \qquad
    y = \gamma \, \frac{x - \mu}{s} + \beta

(:math:`d^{1/\infty} = 1`: the largest centred value). So unlike BN, the channels' scales
are not equalized: only the layer's overall scale is fixed, and each channel's share of
it can drift during training.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["LP_NORMS", "LpNorm"]

#: The :math:`p` of each l_p normalization, by the name the experiments use.
LP_NORMS = {"l1": 1.0, "l2": 2.0, "linf": math.inf}


class LpNorm(nn.Module):
    r"""l_p normalization (Santurkar et al. 2018, our reading: see the module docstring).

    Args:
        num_features: :math:`C`, the channels (a per-channel mean and affine
            :math:`\gamma, \beta`, as BN's).
        p: 1, 2 or ``math.inf``.
        momentum: update factor of the running mean and running scale, used in eval mode
            (as BN's running statistics).
        eps: added to the scale.

    Shape:
        input ``(N, C)`` or ``(N, C, H, W)``; output the same.
    """

    def __init__(
        self, num_features: int, p: float, momentum: float = 0.1, eps: float = 1e-5
    ) -> None:
        super().__init__()
        if p not in LP_NORMS.values():
            raise ValueError(f"p must be 1, 2 or math.inf, got {p!r}")
        if num_features < 1:
            raise ValueError(f"num_features must be a positive integer, got {num_features}")
        self.num_features, self.p, self.momentum, self.eps = num_features, p, momentum, eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_scale", torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[1] != self.num_features:
            raise ValueError(
                f"expected input of shape (N, {self.num_features}) or (N, {self.num_features},"
                f" H, W), got {tuple(x.shape)}"
            )
        shape = (1, -1) + (1,) * (x.dim() - 2)
        if self.training:
            # reductions over dimensions, not flattened copies: convolutional activations
            # are channels-last in memory
            mean = x.mean((0, *range(2, x.dim())))
            centred = x - mean.view(shape)
            per_example = torch.linalg.vector_norm(
                centred, ord=self.p, dim=tuple(range(1, x.dim()))
            )
            d = centred[0].numel()
            scale = per_example.mean() / (1.0 if math.isinf(self.p) else d ** (1 / self.p))
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_scale.lerp_(scale.detach(), self.momentum)
        else:
            mean, scale = self.running_mean, self.running_scale
            centred = x - mean.view(shape)
        y = centred / (scale + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape)

    def extra_repr(self) -> str:
        return f"{self.num_features}, p={self.p}, momentum={self.momentum}, eps={self.eps}"
