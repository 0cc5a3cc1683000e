r"""Fully connected residual networks, with BN in the residual branches or none, and
SkipInit.

The chapter "Random initialization" asks what a residual connection and BN each do to
a deep network at initialization, and whether an initialization can stand in for BN.
This is the smallest network that asks it: pre-activation residual blocks (He et al.
2016b) of fully connected layers,

.. math::

    h_0 = W_{\text{in}} x, \qquad
    h_{b+1} = h_b + \alpha_b\, f_b(h_b), \qquad
    f_b(h) = W_{b,2}\, \phi(\mathrm{norm}(W_{b,1}\, \phi(\mathrm{norm}(h)))),

then logits :math:`W_{\text{out}}\, \phi(\mathrm{norm}(h_B))`. :math:`h_b` is the
*residual stream*. With ``skipinit=True`` each :math:`\alpha_b` is a learnable scalar
initialized to 0 (De & Smith 2020), so every block starts as the identity; otherwise
:math:`\alpha_b = 1` and is not a parameter. With ``residual=False`` the blocks drop the
skip path, :math:`h_{b+1} = f_b(h_b)`: the same layers as a plain deep network.

Single models only (no ``members``): the chapter's experiments with these networks train
one model at a time with :func:`bnlib.engine.train`.
"""

from __future__ import annotations

import torch
from torch import nn

from bnlib.models import ACTIVATIONS, NORMS, initialize, norm_layer

__all__ = ["FixupBlock", "FixupMLP", "ResidualBlock", "ResidualMLP"]


class ResidualBlock(nn.Module):
    r"""One pre-activation block: :math:`h \mapsto h + \alpha f(h)` (or :math:`f(h)`
    without the skip path). Input and output ``(N, width)``.

    Attributes:
        branch: :math:`f`, ``norm -> activation -> Linear -> norm -> activation -> Linear``.
        alpha: the branch's scale: a parameter (initialized to 0) with SkipInit, else a
            buffer holding 1.
    """

    def __init__(
        self, width: int, norm: str, activation: str, residual: bool, skipinit: bool
    ) -> None:
        super().__init__()
        bias = norm == "none"
        self.residual = residual
        self.branch = nn.Sequential(
            norm_layer(norm, width),
            ACTIVATIONS[activation](),
            nn.Linear(width, width, bias=bias),
            norm_layer(norm, width),
            ACTIVATIONS[activation](),
            nn.Linear(width, width, bias=True),
        )
        if skipinit:
            self.alpha = nn.Parameter(torch.zeros(()))
        else:
            self.register_buffer("alpha", torch.ones(()))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = self.alpha * self.branch(h)
        return h + out if self.residual else out


class ResidualMLP(nn.Module):
    """A fully connected residual network (see the module docstring for the maths).

    Args:
        in_features: input size (784 for 28x28 images, which are flattened).
        width: the residual stream's width (every layer but the first and last).
        blocks: number of residual blocks :math:`B` (each holds two linear layers).
        classes: number of outputs (logits).
        activation: a key of :data:`bnlib.models.ACTIVATIONS`.
        norm: ``"none"``, ``"bnlib"`` or ``"torch"``: the normalization inside each
            branch and before the head.
        residual: keep the skip paths; ``False`` gives a plain network of the same layers.
        skipinit: scale each branch by a learnable scalar initialized to 0.
        init, gain: the linear layers' initialization (:func:`bnlib.models.initialize`).

    Attributes:
        stem, blocks, head_norm, head_activation, head: the layers in order; hook
        ``blocks[b]`` for the residual stream :math:`h_{b+1}`.
    """

    def __init__(
        self,
        in_features: int = 784,
        width: int = 100,
        blocks: int = 8,
        classes: int = 10,
        activation: str = "relu",
        norm: str = "none",
        residual: bool = True,
        skipinit: bool = False,
        init: str = "he",
        gain: float = 2**0.5,
    ) -> None:
        super().__init__()
        for value, name in ((in_features, "in_features"), (width, "width"), (classes, "classes")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 0:
            raise ValueError(f"blocks must be a whole number >= 0, got {blocks!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}: use one of {list(ACTIVATIONS)}")
        if norm not in NORMS:
            raise ValueError(f"unknown normalization {norm!r}: use one of {list(NORMS)}")
        self.config = {
            "in_features": in_features,
            "width": width,
            "blocks": blocks,
            "classes": classes,
            "activation": activation,
            "norm": norm,
            "residual": residual,
            "skipinit": skipinit,
            "init": init,
            "gain": gain,
        }
        self.stem = nn.Linear(in_features, width)
        self.blocks = nn.ModuleList(
            ResidualBlock(width, norm, activation, residual, skipinit) for _ in range(blocks)
        )
        self.head_norm = norm_layer(norm, width)
        self.head_activation = ACTIVATIONS[activation]()
        self.head = nn.Linear(width, classes)
        initialize(self, init, gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, classes)`` for inputs ``(N, ...)`` (flattened to ``in_features``)."""
        h = self.stem(x.flatten(1))
        for block in self.blocks:
            h = block(h)
        return self.head(self.head_activation(self.head_norm(h)))

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.items())


class FixupBlock(nn.Module):
    r"""A residual block without normalization, initialized by Fixup (Zhang, Dauphin & Ma
    2019) as their reference code does it: :math:`h \mapsto h + f(h)` with

    .. math::

        f(h) = s\, W_2\, (\phi(W_1 (\phi(h) + a_1) + b_1) + a_2) + b_2,

    :math:`W_1` drawn by He's rule and scaled by :math:`L^{-1/2}` (:math:`L` blocks of two
    layers each), :math:`W_2 = 0`, the scalar biases :math:`a_1, b_1, a_2, b_2` at 0 and
    the scalar multiplier :math:`s` at 1. Input and output ``(N, width)``.
    """

    def __init__(self, width: int, activation: str, blocks: int) -> None:
        super().__init__()
        self.act1, self.act2 = ACTIVATIONS[activation](), ACTIVATIONS[activation]()
        self.linear1 = nn.Linear(width, width, bias=False)
        self.linear2 = nn.Linear(width, width, bias=False)
        self.bias1a, self.bias1b, self.bias2a, self.bias2b = (
            nn.Parameter(torch.zeros(())) for _ in range(4)
        )
        self.scale = nn.Parameter(torch.ones(()))
        with torch.no_grad():
            nn.init.kaiming_normal_(self.linear1.weight, nonlinearity="relu")
            self.linear1.weight.mul_(blocks**-0.5)
            self.linear2.weight.zero_()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = self.linear1(self.act1(h) + self.bias1a)
        out = self.linear2(self.act2(out + self.bias1b) + self.bias2a)
        return h + self.scale * out + self.bias2b


class FixupMLP(nn.Module):
    """The residual MLP of :class:`ResidualMLP` without normalization, initialized by Fixup:
    a He-initialized input layer, ``blocks`` :class:`FixupBlock` s, then the activation, a
    scalar bias and a classifier whose weights and bias start at 0.

    Args:
        in_features, width, blocks, classes, activation: as :class:`ResidualMLP`'s.
    """

    def __init__(
        self,
        in_features: int = 784,
        width: int = 100,
        blocks: int = 8,
        classes: int = 10,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 1:
            raise ValueError(f"blocks must be a whole number >= 1, got {blocks!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}: use one of {list(ACTIVATIONS)}")
        self.config = {
            "in_features": in_features,
            "width": width,
            "blocks": blocks,
            "classes": classes,
            "activation": activation,
        }
        self.stem = nn.Linear(in_features, width)
        self.blocks = nn.ModuleList(FixupBlock(width, activation, blocks) for _ in range(blocks))
        self.head_activation = ACTIVATIONS[activation]()
        self.head_bias = nn.Parameter(torch.zeros(()))
        self.head = nn.Linear(width, classes)
        with torch.no_grad():
            nn.init.kaiming_normal_(self.stem.weight, nonlinearity="relu")
            self.stem.bias.zero_()
            self.head.weight.zero_()
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, classes)`` for inputs ``(N, ...)`` (flattened to ``in_features``)."""
        h = self.stem(x.flatten(1))
        for block in self.blocks:
            h = block(h)
        return self.head(self.head_activation(h) + self.head_bias)
