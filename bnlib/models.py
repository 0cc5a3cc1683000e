"""The networks the chapters train, as single models or as stacks of K independent models.

Every architecture takes a ``members`` argument. With ``members=1`` (the default) it is an
ordinary PyTorch model of standard layers (``nn.Linear``, ``nn.Conv2d``, BN): it maps
images ``(N, C, H, W)`` to logits ``(N, classes)``. With ``members=K`` it is K independent
models of that architecture in one module, which :mod:`bnlib.engine` trains at once:

- activations are laid out model-major along the channel axis, ``(N, K * C[, H, W])``;
- fully connected layers are one batched matrix multiply (:class:`StackedLinear`),
  convolutions are grouped convolutions with ``groups=K``;
- BN over ``K * C`` channels is exactly per-model BN: each model keeps its own batch and
  running statistics, so the BN layers are the ordinary ones (bnlib's or PyTorch's);
- input is ``(N, K, C, H, W)`` (each model its own minibatch), output ``(N, K, classes)``.

Build a stack from K separately initialized models with :func:`stack_members`, and take
member ``i`` back out as an ordinary model with :func:`unstack_member`.

Normalization is chosen by name: ``"none"``, ``"bnlib"`` (:class:`bnlib.norm.BatchNorm`,
the from-scratch layer) or ``"torch"`` (PyTorch's fused kernels, the same maths). With
BN, the layer before it has no bias: BN's shift replaces it (Section 3.2 of the paper).
"""

from __future__ import annotations

import copy
import inspect
import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bnlib import arguments
from bnlib.norm import BatchNorm, DistributionNoise

__all__ = [
    "ACTIVATIONS",
    "INITS",
    "MLP",
    "NORMS",
    "VGG",
    "MemberLoop",
    "ResNet",
    "StackedLinear",
    "build_model",
    "initialize",
    "member_gradients",
    "member_modules",
    "norm_layer",
    "parameter_count",
    "stack_members",
    "unstack_member",
]

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


def _positive_int(value: object, name: str) -> int:
    """``value`` if it is a positive int, else a clear error naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive int, got {value!r} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return int(value)


def _widths(values: object, name: str) -> tuple[int, ...]:
    """A sequence of layer widths (positive ints), else a clear error naming ``name``."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(
            f"{name} must be a sequence of layer widths, e.g. {name}=(100, 100), got "
            f"{values!r} ({type(values).__name__}); for one layer of 100 use {name}=(100,)"
        )
    return tuple(_positive_int(v, f"{name}[{i}]") for i, v in enumerate(values))


def norm_layer(norm: str, features: int, dims: int = 1, **kwargs) -> nn.Module:
    """A BN layer by name: ``"bnlib"``, ``"torch"`` (BatchNorm1d/2d by ``dims``) or ``"none"``."""
    _choice("normalization", norm, NORMS)
    if norm == "none":
        return nn.Identity()
    if norm == "bnlib":
        return BatchNorm(features, **kwargs)
    return (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(features, **kwargs)


class StackedLinear(nn.Module):
    """K independent linear layers applied as one batched matrix multiply.

    Parameters have a leading model axis: ``weight`` ``(K, out, in)`` and ``bias``
    ``(K, out)`` (member ``k``'s are exactly an ``nn.Linear``'s ``weight[k]``, ``bias[k]``).

    Activations are feature-major, ``(1, K * features, N)``: member k's layer computes
    ``W_k @ X_k`` on its ``(in, N)`` slice. Everything is a view, the weight gradient
    ``G_k @ X_k^T`` comes out in the weight's own layout (no copy), and a BN layer over
    ``K * features`` channels of this ``(1, C, N)`` tensor is exactly per-member BN
    (BatchNorm1d reduces over dims 0 and 2).

    Shape:
        input ``(1, K * in, N)``, output ``(1, K * out, N)``.
    """

    def __init__(self, members: int, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.members, self.in_features, self.out_features = members, in_features, out_features
        self.weight = nn.Parameter(torch.empty(members, out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(members, out_features)) if bias else None
        for k in range(members):  # nn.Linear's own default initialization, per member
            layer = nn.Linear(in_features, out_features, bias=bias)
            with torch.no_grad():
                self.weight[k].copy_(layer.weight)
                if bias:
                    self.bias[k].copy_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[-1]
        x = x.view(self.members, self.in_features, n)
        if self.bias is None:
            out = torch.bmm(self.weight, x)
        else:
            out = torch.baddbmm(self.bias[:, :, None], self.weight, x)
        return out.view(1, self.members * self.out_features, n)

    def extra_repr(self) -> str:
        return (
            f"members={self.members}, in_features={self.in_features}, "
            f"out_features={self.out_features}, bias={self.bias is not None}"
        )


def _linear(members: int, a: int, b: int, bias: bool) -> nn.Module:
    return nn.Linear(a, b, bias=bias) if members == 1 else StackedLinear(members, a, b, bias)


def _conv(members: int, a: int, b: int, kernel: int, stride: int = 1, bias: bool = False):
    return nn.Conv2d(
        members * a,
        members * b,
        kernel,
        stride=stride,
        padding=kernel // 2,
        bias=bias,
        groups=members,
    )


@torch.no_grad()
def initialize(model: nn.Module, scheme: str = "default", gain: float = 1.0) -> nn.Module:
    """Re-initialize every linear and convolutional weight of a single model in place.

    Args:
        scheme: ``"default"`` (PyTorch's own), ``"he"`` (Kaiming normal, fan-in),
            ``"xavier"`` (Glorot normal), ``"orthogonal"``, or ``"gaussian"`` (entries
            i.i.d. :math:`\\mathcal N(0, \\text{gain}^2)`: ``gain`` is then the standard
            deviation itself, as in papers that state "Gaussian with std 0.1").
        gain: multiplies the scheme's standard deviation (for ``"default"`` too).
    Biases are set to zero except under ``"default"``. BN parameters are left at 1 and 0.
    Stacks are initialized member by member (:func:`stack_members`).

    Returns:
        ``model``.
    """
    _choice("initialization", scheme, INITS)
    arguments.check_number(gain, "gain")
    for module in model.modules():
        if isinstance(module, StackedLinear):
            raise ValueError("initialize single models, then stack them with stack_members")
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


class _Stackable(nn.Module):
    """Base of the architectures: records its config, handles stacked input and output."""

    members: int
    config: dict

    def _finish(self, config: dict, channels_last: bool = False) -> None:
        """Record the config, initialize a single model, choose the memory format."""
        self.config = config
        if self.members == 1:
            initialize(self, config["init"], config["gain"])
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def _classify(self, features: torch.Tensor) -> torch.Tensor:
        """The head on pooled features ``(N, K*F)``; logits ``(N, K, classes)`` for a stack."""
        if self.members == 1:
            return self.head(features)
        return self._logits(self.head(features.t().unsqueeze(0)))

    def _logits(self, head_output: torch.Tensor) -> torch.Tensor:
        """A stacked head's feature-major ``(1, K*classes, N)`` as ``(N, K, classes)``."""
        return head_output.view(self.members, -1, head_output.shape[-1]).permute(2, 0, 1)

    def _merge_input(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, K, C, H, W)`` -> ``(N, K*C, H, W)``; single models take ``(N, C, H, W)``."""
        if self.members == 1:
            return x
        if x.dim() < 3 or x.shape[1] != self.members:
            raise ValueError(
                f"a stack of {self.members} models takes input of shape "
                f"(N, {self.members}, ...), got {tuple(x.shape)}"
            )
        return x.flatten(1, 2)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.items())


class MLP(_Stackable):
    """A fully connected network: ``[Linear -> (BN) -> activation] * depth -> Linear``.

    Ioffe & Szegedy's MNIST network is ``MLP(hidden=(100, 100, 100), activation="sigmoid")``.

    Args:
        in_features: input size (784 for 28x28 images, which are flattened).
        hidden: width of each hidden layer.
        classes: number of outputs (logits).
        activation: a key of :data:`ACTIVATIONS`.
        norm: ``"none"``, ``"bnlib"`` or ``"torch"``.
        init: a key of :data:`INITS` (see :func:`initialize`), with ``gain``.
        bias: give the hidden layers biases; default: only without BN (BN's shift
            replaces them).
        noise: add :class:`bnlib.norm.DistributionNoise` after each normalization layer
            (Santurkar et al.'s "noisy BN"; with ``norm="none"``, noise on its own).
        members: number of stacked models (see the module docstring).

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
        bias: bool | None = None,
        noise: bool = False,
        members: int = 1,
    ) -> None:
        super().__init__()
        _choice("activation", activation, ACTIVATIONS)
        _choice("normalization", norm, NORMS)
        _positive_int(in_features, "in_features")
        _positive_int(classes, "classes")
        hidden = _widths(hidden, "hidden")
        widths = [in_features, *hidden]
        k = self.members = _positive_int(members, "members")
        use_bias = norm == "none" if bias is None else bias
        self.linears = nn.ModuleList(
            _linear(k, a, b, bias=use_bias) for a, b in zip(widths, widths[1:])
        )
        self.norms = nn.ModuleList(
            nn.Sequential(norm_layer(norm, k * b), DistributionNoise())
            if noise
            else norm_layer(norm, k * b)
            for b in hidden
        )
        self.activations = nn.ModuleList(ACTIVATIONS[activation]() for _ in hidden)
        self.head = _linear(k, widths[-1], classes, bias=True)
        self._finish(
            {
                "in_features": in_features,
                "hidden": tuple(hidden),
                "classes": classes,
                "activation": activation,
                "norm": norm,
                "init": init,
                "gain": gain,
                "bias": bias,
                "noise": noise,
            }
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.members == 1:
            x = x.flatten(1)
        else:  # (N, K, ...) -> the feature-major (1, K * 784, N) view
            x = self._merge_input(x).reshape(x.shape[0], -1).t().unsqueeze(0)
        for linear, norm, act in zip(self.linears, self.norms, self.activations):
            x = act(norm(linear(x)))
        x = self.head(x)
        return x if self.members == 1 else self._logits(x)


class _BasicBlock(nn.Module):
    """He et al.'s CIFAR residual block: two 3x3 convolutions, identity shortcut.

    When the block halves the resolution and doubles the channels, the shortcut subsamples
    and pads the new channels with zeros ("option A" of He et al. 2016, used for CIFAR).
    """

    def __init__(self, members: int, a: int, b: int, stride: int, norm: str, act: str):
        super().__init__()
        self.members, self.pad = members, b - a
        self.stride = stride
        self.conv1 = _conv(members, a, b, 3, stride)
        self.bn1 = norm_layer(norm, members * b, dims=2)
        self.act1 = ACTIVATIONS[act]()
        self.conv2 = _conv(members, b, b, 3)
        self.bn2 = norm_layer(norm, members * b, dims=2)
        self.act2 = ACTIVATIONS[act]()

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1 and self.pad == 0:
            return x
        x = x[:, :, :: self.stride, :: self.stride]
        n, _, h, w = x.shape
        x = x.reshape(n, self.members, -1, h, w)  # pad each member's channels separately
        x = F.pad(x, (0, 0, 0, 0, 0, self.pad))
        return x.reshape(n, -1, h, w).contiguous(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class ResNet(_Stackable):
    """CIFAR-style ResNet (He et al. 2016, Section 4.2): depth ``6n + 2``.

    A 3x3 convolution with 16 channels, then 3 stages of ``n`` basic blocks with 16, 32 and
    64 channels (stride 2 at the start of stages 2 and 3), global average pooling and a
    linear classifier. ResNet-20/32/56/110 have ``n`` = 3/5/9/18. Works for ``1x28x28``
    and ``3x32x32`` inputs (``in_channels``).

    Args:
        depth: 20, 32, 56, 110, or any ``6n + 2``.
        norm: ``"none"``, ``"bnlib"`` or ``"torch"`` after every convolution.
        width: channels of the first stage (16 in the paper; stages have w, 2w, 4w).
        members: number of stacked models.
    """

    def __init__(
        self,
        depth: int = 20,
        in_channels: int = 1,
        classes: int = 10,
        norm: str = "torch",
        activation: str = "relu",
        width: int = 16,
        init: str = "he",
        gain: float = 1.0,
        members: int = 1,
    ) -> None:
        super().__init__()
        arguments.check_whole_number(depth, "depth", low=8, note=" (6n + 2: 20, 32, 56, 110)")
        arguments.check_whole_number(in_channels, "in_channels", low=1)
        arguments.check_whole_number(classes, "classes", low=1)
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"ResNet depth must be 6n + 2 (20, 32, 56, 110, ...), got {depth}")
        _choice("activation", activation, ACTIVATIONS)
        _positive_int(width, "width")
        n = (depth - 2) // 6
        k = self.members = _positive_int(members, "members")
        self.stem = _conv(k, in_channels, width, 3)
        self.stem_norm = norm_layer(norm, k * width, dims=2)
        self.stem_act = ACTIVATIONS[activation]()
        blocks, a = [], width
        for stage, b in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(_BasicBlock(k, a, b, stride, norm, activation))
                a = b
        self.blocks = nn.Sequential(*blocks)
        self.head = _linear(k, a, classes, bias=True)
        self._finish(
            {
                "depth": depth,
                "in_channels": in_channels,
                "classes": classes,
                "norm": norm,
                "activation": activation,
                "width": width,
                "init": init,
                "gain": gain,
            },
            channels_last=True,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._merge_input(x).contiguous(memory_format=torch.channels_last)
        x = self.stem_act(self.stem_norm(self.stem(x)))
        return self._classify(self.blocks(x).mean((2, 3)))


class VGG(_Stackable):
    """A VGG-style CNN: stages of ``[3x3 conv -> (BN) -> activation] * convs``, each
    followed by 2x2 max pooling, then global average pooling and a linear classifier.

    Args:
        widths: channels of each stage.
        convs: convolutions per stage.
    """

    def __init__(
        self,
        widths: Sequence[int] = (32, 64, 128),
        convs: int = 2,
        in_channels: int = 1,
        classes: int = 10,
        norm: str = "torch",
        activation: str = "relu",
        init: str = "he",
        gain: float = 1.0,
        members: int = 1,
    ) -> None:
        super().__init__()
        _choice("activation", activation, ACTIVATIONS)
        widths = _widths(widths, "widths")
        _positive_int(convs, "convs")
        k = self.members = _positive_int(members, "members")
        layers: list[nn.Module] = []
        a = in_channels
        for b in widths:
            for _ in range(convs):
                layers += [
                    _conv(k, a, b, 3, bias=norm == "none"),
                    norm_layer(norm, k * b, dims=2),
                    ACTIVATIONS[activation](),
                ]
                a = b
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.head = _linear(k, a, classes, bias=True)
        self._finish(
            {
                "widths": tuple(widths),
                "convs": convs,
                "in_channels": in_channels,
                "classes": classes,
                "norm": norm,
                "activation": activation,
                "init": init,
                "gain": gain,
            },
            channels_last=True,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._merge_input(x).contiguous(memory_format=torch.channels_last)
        return self._classify(self.features(x).mean((2, 3)))


ARCHITECTURES: dict[str, type[_Stackable]] = {"mlp": MLP, "resnet": ResNet, "vgg": VGG}


def build_model(architecture: str, members: int = 1, **config) -> nn.Module:
    """An architecture by name (``"mlp"``, ``"resnet"``, ``"vgg"``) with its config.

    Raises:
        ValueError: unknown architecture, or a config key the architecture does not take
            (the message lists those it takes; an MLP's layer widths are ``hidden``).
    """
    _choice("architecture", architecture, tuple(ARCHITECTURES))
    cls = ARCHITECTURES[architecture]
    takes = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "members")]
    unknown = [key for key in config if key not in takes]
    if unknown:
        hint = ""
        if architecture == "mlp" and {"units", "width", "widths"} & set(unknown):
            hint = "; the hidden layers' widths are 'hidden', e.g. hidden=(100, 100)"
        raise ValueError(
            f"{architecture!r} takes no argument {', '.join(map(repr, unknown))}: it takes "
            f"{', '.join(takes)}{hint}"
        )
    return cls(members=members, **config)


def _member_view(stacked: torch.Tensor, members: int, shape: torch.Size) -> torch.Tensor:
    """The ``(K, *shape)`` view of a stacked tensor (model-major leading axis).

    Always a view (splitting the leading axis never copies, whatever the memory format),
    so writing into it writes into the stack.
    """
    if stacked.dim() == 0:  # num_batches_tracked: one count shared by all members
        return stacked.expand(members)
    view = stacked.unflatten(0, (members, -1))
    return view if view.shape[1:] == shape else view.squeeze(1)  # StackedLinear: (K, 1, ...)


@torch.no_grad()
def stack_members(models: Sequence[nn.Module]) -> nn.Module:
    """One stacked module holding ``len(models)`` single models of the same config.

    Args:
        models: single models (``members=1``) of one architecture and config, each
            initialized as wanted (different seeds, schemes, gains).

    Returns:
        A model with ``members=len(models)`` whose member ``k`` computes exactly what
        ``models[k]`` computes (on its own slice of the input), with the same parameters
        and buffers.
    """
    arguments.check_nonempty(models, "models")
    first = models[0]

    def structure(m):  # initialization is per member; everything else must agree
        return type(m), {k: v for k, v in m.config.items() if k not in ("init", "gain")}

    if any(structure(m) != structure(first) for m in models):
        raise ValueError(
            "stack_members needs models of one architecture and config "
            "(they may differ in init and gain only)"
        )
    config = {k: v for k, v in first.config.items()}
    stacked = type(first)(members=len(models), **config)
    stacked.to(next(first.parameters()).device)
    sources = [dict(m.state_dict()) for m in models]
    for name, target in stacked.state_dict().items():
        shape = sources[0][name].shape
        view = _member_view(target, len(models), shape)
        if target.dim() == 0:
            target.copy_(sources[0][name])
            continue
        for k, source in enumerate(sources):
            view[k].copy_(source[name])
    return stacked


@torch.no_grad()
def unstack_member(stacked: nn.Module, k: int) -> nn.Module:
    """Member ``k`` of a stacked model as an ordinary single model (a copy)."""
    if not 0 <= k < stacked.members:
        raise ValueError(f"member {k} out of range: the stack has {stacked.members}")
    if isinstance(stacked, MemberLoop):
        return copy.deepcopy(stacked.models[k])
    single = type(stacked)(members=1, **stacked.config)
    single.to(next(stacked.parameters()).device)
    source = stacked.state_dict()
    for name, target in single.state_dict().items():
        if target.dim() == 0:
            target.copy_(source[name])
        else:
            target.copy_(_member_view(source[name], stacked.members, target.shape)[k])
    single.train(stacked.training)
    return single


class MemberLoop(nn.Module):
    """K single models with the interface of a stack, computed one after the other.

    On a CPU a grouped convolution is slower than K ordinary ones (``python -m bnlib
    bench`` measures both), so :class:`bnlib.engine.StackedRun` trains convolutional
    networks this way there. Input ``(N, K, C, H, W)``, output ``(N, K, classes)``.

    Attributes:
        models: the K single models (``nn.ModuleList``).
    """

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        self.models = nn.ModuleList(models)
        self.members = len(models)
        self.config = models[0].config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x[:, k]) for k, m in enumerate(self.models)], dim=1)


def member_modules(model: nn.Module, name: str) -> list[nn.Module]:
    """The module called ``name`` (as in a single model's ``named_modules()``): one module
    for a stack (holding every member), K modules for a :class:`MemberLoop`."""
    singles = model.models if isinstance(model, MemberLoop) else [model]
    found = []
    for single in singles:
        modules = dict(single.named_modules())
        if name not in modules:
            raise ValueError(
                f"no layer {name!r} in the model; layers: {[n for n in modules if n][:40]}"
            )
        found.append(modules[name])
    return found


def _single_parameter_shapes(model: nn.Module) -> dict[str, torch.Size]:
    """Parameter shapes of one member of a stack, computed once per stack."""
    if getattr(model, "_single_shapes", None) is None:
        single = type(model)(members=1, **model.config)
        model._single_shapes = {n: p.shape for n, p in single.named_parameters()}
    return model._single_shapes


def member_gradients(model: nn.Module, k: int) -> dict[str, torch.Tensor | None]:
    """Member ``k``'s parameter gradients by (single-model) parameter name."""
    if isinstance(model, MemberLoop):
        return {n: p.grad for n, p in model.models[k].named_parameters()}
    single_shapes = _single_parameter_shapes(model)
    return {
        n: None if p.grad is None else _member_view(p.grad, model.members, single_shapes[n])[k]
        for n, p in model.named_parameters()
    }


def parameter_count(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
