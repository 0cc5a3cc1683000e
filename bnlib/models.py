"""The networks the chapters train.

Every model takes images ``(N, 1, 28, 28)`` (or already-flat ``(N, 784)``) and returns
logits ``(N, classes)``. Normalization is chosen by name so that an experiment's config
stays plain data:

- ``"none"``: no normalization (layers keep their biases);
- ``"bnlib"``: :class:`bnlib.norm.BatchNorm`, the book's from-scratch layer;
- ``"torch"``: :class:`torch.nn.BatchNorm1d`, PyTorch's fused kernel (same maths).

With BN, the linear layer before it has no bias: BN's shift :math:`\\beta` replaces it
(Section 3.2 of Ioffe & Szegedy).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from bnlib.norm import BatchNorm

__all__ = ["ACTIVATIONS", "INITS", "NORMS", "MLP", "initialize", "norm_layer", "parameter_count"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "linear": nn.Identity,
}
NORMS = ("none", "bnlib", "torch")
INITS = ("default", "he", "xavier", "orthogonal", "gaussian")


def _choice(kind: str, value: str, allowed) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {kind} {value!r}: choose one of {', '.join(allowed)}")
    return value


def norm_layer(norm: str, features: int, dims: int = 1, **kwargs) -> nn.Module:
    """A BN layer by name: ``"bnlib"``, ``"torch"`` (BatchNorm1d/2d by ``dims``) or ``"none"``."""
    _choice("normalization", norm, NORMS)
    if norm == "none":
        return nn.Identity()
    if norm == "bnlib":
        return BatchNorm(features, **kwargs)
    return (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(features, **kwargs)


@torch.no_grad()
def initialize(model: nn.Module, scheme: str = "default", gain: float = 1.0) -> nn.Module:
    """Re-initialize every linear and convolutional weight of ``model`` in place.

    Args:
        scheme: ``"default"`` (PyTorch's own), ``"he"`` (Kaiming normal, fan-in),
            ``"xavier"`` (Glorot normal), ``"orthogonal"``, or ``"gaussian"`` (entries
            i.i.d. :math:`\\mathcal N(0, \\text{gain}^2)`: ``gain`` is then the standard
            deviation itself, as in papers that state "Gaussian with std 0.1").
        gain: multiplies the scheme's standard deviation (for ``"default"`` too).
    Biases are set to zero except under ``"default"``. BN parameters are left at 1 and 0.

    Returns:
        ``model``.
    """
    _choice("initialization", scheme, INITS)
    for module in model.modules():
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            continue
        w = module.weight
        if scheme == "default":
            module.reset_parameters()
            w.mul_(gain)
            continue
        if scheme == "he":
            nn.init.kaiming_normal_(w, nonlinearity="linear")
            w.mul_(gain)
        elif scheme == "xavier":
            nn.init.xavier_normal_(w, gain=gain)
        elif scheme == "orthogonal":
            nn.init.orthogonal_(w, gain=gain)
        else:
            nn.init.normal_(w, std=gain)
        if module.bias is not None:
            module.bias.zero_()
    return model


class MLP(nn.Module):
    """A fully connected network: ``[Linear -> (BN) -> activation] * depth -> Linear``.

    Ioffe & Szegedy's MNIST network is ``MLP(hidden=(100, 100, 100), activation="sigmoid")``.

    Args:
        in_features: input size (784 for 28x28 images, which are flattened).
        hidden: width of each hidden layer.
        classes: number of outputs (logits).
        activation: a key of :data:`ACTIVATIONS`.
        norm: ``"none"``, ``"bnlib"`` or ``"torch"``.
        init: a key of :data:`INITS` (see :func:`initialize`), with ``gain``.

    Attributes:
        linears, norms, activations: the hidden layers' parts, indexable by depth, so
            probes can hook "the input of the 3rd sigmoid" as ``model.activations[2]``.
        head: the output layer.
    """

    def __init__(
        self,
        in_features: int = 784,
        hidden: Sequence[int] = (100, 100, 100),
        classes: int = 10,
        activation: str = "sigmoid",
        norm: str = "none",
        init: str = "default",
        gain: float = 1.0,
    ) -> None:
        super().__init__()
        _choice("activation", activation, ACTIVATIONS)
        _choice("normalization", norm, NORMS)
        widths = [in_features, *hidden]
        self.linears = nn.ModuleList(
            nn.Linear(a, b, bias=norm == "none") for a, b in zip(widths, widths[1:])
        )
        self.norms = nn.ModuleList(norm_layer(norm, b) for b in hidden)
        self.activations = nn.ModuleList(ACTIVATIONS[activation]() for _ in hidden)
        self.head = nn.Linear(widths[-1], classes)
        self.config = {
            "in_features": in_features,
            "hidden": tuple(hidden),
            "classes": classes,
            "activation": activation,
            "norm": norm,
            "init": init,
            "gain": gain,
        }
        initialize(self, init, gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for linear, norm, act in zip(self.linears, self.norms, self.activations):
            x = act(norm(linear(x)))
        return self.head(x)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.items())


def parameter_count(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
