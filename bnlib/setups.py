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
- :func:`cifar_resnet` with :data:`RESNET_INITS`: He et al.'s (2016) CIFAR ResNets with
  their initialization recipes by name, the reference codes' (``"he"``) first.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from bnlib.models import MLP, ResNet, norm_layer

__all__ = [
    "DEEP_MLP",
    "HE_RELU",
    "HE_RELU_GAIN",
    "IOFFE_MLP",
    "NTU_MLP",
    "RESNET_INITS",
    "SMALL_CNN",
    "ProjectionBlock",
    "ResNetRecipe",
    "cifar_resnet",
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


@dataclass(frozen=True)
class ResNetRecipe:
    r"""How a CIFAR ResNet is built and initialized (:func:`cifar_resnet`).

    Attributes:
        fan: the convolutions' weights: ``"out"``, :math:`\mathcal N(0, g^2/\text{fan-out})`
            with fan-out :math:`k^2 \cdot` out-channels (torchvision's
            ``kaiming_normal_(mode="fan_out")``, fb.resnet.torch's
            ``n = kW*kH*nOutputPlane``); ``"in"``, :math:`\mathcal N(0, g^2/\text{fan-in})`;
            ``"default"``, PyTorch's layer default (uniform, variance
            :math:`1/(3\,\text{fan-in})`).
        gain: :math:`g` (:math:`\sqrt 2` is He's for ReLU).
        classifier: the final linear layer: ``"default"`` (PyTorch's, what the reference
            codes leave it at) or ``"fan-in"`` (:math:`\mathcal N(0, g^2/\text{fan-in})`,
            bias 0).
        shortcut: ``"A"`` (subsample and pad the new channels with zeros, He et al.'s
            CIFAR choice) or ``"B"`` (a 1x1 convolution, with the network's
            normalization, where a block changes shape).
        conv_bias: give every convolution a bias, at PyTorch's default (uniform in
            :math:`\pm 1/\sqrt{\text{fan-in}}`); the reference codes have none.
    """

    fan: str = "out"
    gain: float = HE_RELU_GAIN
    classifier: str = "default"
    shortcut: str = "A"
    conv_bias: bool = False


#: The CIFAR ResNets' initialization recipes by name. ``"he"``: the reference codes'
#: (torchvision's ``resnet.py``): He's N(0, 2/fan-out) on every convolution, the stem's
#: included (fan-out 9 x 16 = 144), BN at 1 and 0, the classifier at PyTorch's default.
#: ``"he-fan-in"``: N(0, 2/fan-in) on every convolution **and** the classifier (bias 0),
#: which this book used before; on a 1-channel stem it gives 16 times the reference
#: variance. ``"lecun"``: N(0, 1/fan-in) the same way. ``"default"``: PyTorch's layer
#: defaults everywhere.
RESNET_INITS = {
    "he": ResNetRecipe(),
    "he-fan-in": ResNetRecipe(fan="in", classifier="fan-in"),
    "lecun": ResNetRecipe(fan="in", gain=1.0, classifier="fan-in"),
    "default": ResNetRecipe(fan="default", gain=1.0),
}


class ProjectionBlock(nn.Module):
    """A residual block of :class:`bnlib.models.ResNet` whose shortcut is He et al.'s
    option B: a strided 1x1 convolution (and the block's normalization) instead of
    zero padding. Shape: ``(N, a, H, W)`` to ``(N, b, H/s, W/s)``, as the block's."""

    def __init__(self, block: nn.Module, norm: str) -> None:
        super().__init__()
        self.block = block
        conv = block.conv1
        self.project = nn.Sequential(
            nn.Conv2d(conv.in_channels, conv.out_channels, 1, stride=conv.stride, bias=False),
            norm_layer(norm, conv.out_channels, dims=2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.block
        branch = b.bn2(b.conv2(b.act1(b.bn1(b.conv1(x)))))
        return b.act2(branch + self.project(x))


def cifar_resnet(
    depth: int, *, norm: str, init: str | ResNetRecipe = "he", in_channels: int = 1
) -> ResNet:
    """A CIFAR ResNet (:class:`bnlib.models.ResNet`, ``6n + 2`` layers) built and
    initialized by a recipe, from the current torch seed.

    Args:
        depth: 20, 56, 110, ... layers.
        norm: ``"none"``, ``"torch"`` or ``"bnlib"`` after every convolution.
        init: a name in :data:`RESNET_INITS` or a :class:`ResNetRecipe`.
        in_channels: the images' channels (1 for Fashion-MNIST, 3 for CIFAR-10).

    Returns:
        The network, mapping ``(N, in_channels, H, W)`` images to ``(N, 10)`` logits.

    Raises:
        ValueError: an unknown recipe name or recipe field.
    """
    if isinstance(init, str):
        if init not in RESNET_INITS:
            raise ValueError(f"unknown initialization {init!r}: use one of {list(RESNET_INITS)}")
        init = RESNET_INITS[init]
    for field, value, allowed in (
        ("fan", init.fan, ("out", "in", "default")),
        ("classifier", init.classifier, ("default", "fan-in")),
        ("shortcut", init.shortcut, ("A", "B")),
    ):
        if value not in allowed:
            raise ValueError(f"ResNetRecipe.{field} must be one of {allowed}, got {value!r}")
    # ResNet draws fan-in or default weights itself; building on that keeps the
    # "he-fan-in", "lecun" and "default" recipes' random streams, and so their numbers,
    # exactly those of the book's earlier runs.
    model = ResNet(
        depth=depth,
        norm=norm,
        init="he" if init.fan == "in" else "default",
        gain=init.gain,
        in_channels=in_channels,
    )
    if init.shortcut == "B":
        model.blocks = nn.Sequential(
            *(ProjectionBlock(b, norm) if b.stride != 1 or b.pad else b for b in model.blocks)
        )
    _redraw(model, init)
    model.config = {**model.config, "init": dataclasses.asdict(init)}
    return model.to(memory_format=torch.channels_last)


@torch.no_grad()
def _draw_conv(conv: nn.Conv2d, recipe: ResNetRecipe) -> None:
    if recipe.fan == "default":
        conv.reset_parameters()
    else:
        mode = "fan_out" if recipe.fan == "out" else "fan_in"
        nn.init.kaiming_normal_(conv.weight, mode=mode, nonlinearity="linear")
    conv.weight.mul_(recipe.gain)


@torch.no_grad()
def _redraw(model: ResNet, recipe: ResNetRecipe) -> None:
    """Bring the weights :class:`ResNet` drew to ``recipe`` (BN layers stay at 1 and 0)."""
    projections = {id(b.project[0]) for b in model.blocks if isinstance(b, ProjectionBlock)}
    for module in model.modules():
        if not isinstance(module, nn.Conv2d):
            continue
        if recipe.fan == "out" or id(module) in projections:
            _draw_conv(module, recipe)
        if recipe.conv_bias:
            bound = module.weight[0].numel() ** -0.5  # PyTorch's default: 1/sqrt(fan-in)
            module.bias = nn.Parameter(module.weight.new_empty(module.out_channels))
            nn.init.uniform_(module.bias, -bound, bound)
    drawn = "fan-in" if recipe.fan == "in" else "default"  # what ResNet gave the head
    if recipe.classifier != drawn or (drawn == "default" and recipe.gain != 1.0):
        head = model.head
        head.reset_parameters()
        if recipe.classifier == "fan-in":
            nn.init.kaiming_normal_(head.weight, mode="fan_in", nonlinearity="linear")
            head.weight.mul_(recipe.gain)
            head.bias.zero_()
