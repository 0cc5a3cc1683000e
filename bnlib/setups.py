r"""The papers' setups, one definition each: the networks and problems the experiments
reproduce. An experiment that means one of these uses it from here, so that a correction
reaches every experiment that uses the setup.

- :data:`IOFFE_MLP`: Ioffe & Szegedy's (2015, Section 4.1) MNIST network: three hidden
  layers of 100 sigmoid units.
- :data:`DEEP_MLP` with :data:`HE_RELU`: the deep MLP of the chapters "Large learning
  rates" and "Why BN tolerates large steps", a fully connected stand-in for Bjorck et al.'s
  ResNets: eight hidden layers of 100 ReLU units, He-initialized (fan-in, gain
  :math:`\sqrt 2`).
- :data:`NTU_MLP`, :data:`SMALL_CNN`: the networks of the NTU student study and of the
  chapter "What else changes BN's effect" (two hidden layers of 100 units; a small CNN of
  16, 32 and 64 channels).
- :func:`deep_linear_network`, :func:`deep_linear_problem`, :func:`deep_linear_loss`:
  Santurkar et al.'s (2018) deep linear network: 25 layers of :math:`10 \times 10`
  weights without biases, :math:`y = W_{25} \cdots W_1 x`, Glorot-initialized, trained by
  full-batch gradient descent on the summed squared error to a random linear target.
"""

from __future__ import annotations

import math

import torch

from bnlib.models import MLP

__all__ = [
    "DEEP_MLP",
    "HE_RELU",
    "HE_RELU_GAIN",
    "IOFFE_MLP",
    "NTU_MLP",
    "SMALL_CNN",
    "deep_linear_loss",
    "deep_linear_network",
    "deep_linear_problem",
]

#: He's gain for ReLU networks, :math:`\sqrt 2` (with ``init="he"``, which is fan-in).
HE_RELU_GAIN = math.sqrt(2.0)
#: He's initialization for ReLU networks, as :class:`bnlib.engine.Member` or
#: :class:`bnlib.models.MLP` arguments.
HE_RELU = {"init": "he", "gain": HE_RELU_GAIN}

#: Ioffe & Szegedy's MNIST MLP (Section 4.1): 3 hidden layers of 100 sigmoid units.
IOFFE_MLP = {"hidden": [100, 100, 100], "activation": "sigmoid"}
#: The deep ReLU MLP of "Large learning rates" (initialize it with :data:`HE_RELU`).
DEEP_MLP = {"hidden": [100] * 8, "activation": "relu"}
#: The NTU study's network: 784-100-100-10 (activation set per experiment); initialize it
#: with :data:`HE_RELU` (the study's std sqrt(2 / fan-in) Gaussian weights, theirs
#: truncated) and zero biases (theirs 0.1 without BN).
NTU_MLP = {"hidden": [100, 100]}
#: The small CNN of "What else changes BN's effect": three 3x3 convolutions (16, 32, 64
#: channels), each followed by the normalization, ReLU and 2x2 max pooling
#: (:class:`bnlib.models.VGG`).
SMALL_CNN = {"widths": [16, 32, 64], "convs": 1}


def deep_linear_network(norm: str = "none", *, depth: int = 25, width: int = 10) -> MLP:
    """Santurkar et al.'s deep linear network, initialized from the current torch seed.

    Args:
        norm: ``"none"``, or a BN implementation of :class:`bnlib.models.MLP`
            (``"torch"``, ``"bnlib"``) after each hidden layer.
        depth: number of weight matrices.
        width: inputs, hidden units and outputs.

    Returns:
        An :class:`bnlib.models.MLP` mapping ``(N, width)`` to ``(N, width)`` with no
        bias anywhere (the output layer's too) and Glorot-normal weights.
    """
    model = MLP(
        in_features=width,
        hidden=[width] * (depth - 1),
        classes=width,
        activation="linear",
        norm=norm,
        init="xavier",
        bias=False,
    )
    model.head.register_parameter("bias", None)  # no bias anywhere: W_25 ... W_1 x
    return model


def deep_linear_problem(
    *, samples: int, width: int, seed: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The deep linear network's data: ``x`` of shape ``(samples, width)``, standard
    normal, and its target ``x @ A.T`` for a standard normal ``(width, width)`` matrix
    ``A``, both drawn from a generator seeded with ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, width, generator=gen).to(device)
    a = torch.randn(width, width, generator=gen).to(device)
    return x, x @ a.T


def deep_linear_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Santurkar et al.'s deep linear loss: the squared error summed over examples and
    outputs (a scalar)."""
    return (out - target).square().sum()
