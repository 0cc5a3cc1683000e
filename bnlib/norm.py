r"""Batch normalization written from scratch (Ioffe & Szegedy 2015, Algorithms 1 and 2).

For a mini-batch :math:`\mathcal{B} = \{x_1, \dots, x_m\}` of one feature (one channel of
a convolution, pooled over batch and positions), Algorithm 1 computes

.. math::

    \mu_\mathcal{B} = \frac1m \sum_i x_i, \qquad
    \sigma^2_\mathcal{B} = \frac1m \sum_i (x_i - \mu_\mathcal{B})^2, \qquad
    \hat x_i = \frac{x_i - \mu_\mathcal{B}}{\sqrt{\sigma^2_\mathcal{B} + \epsilon}}, \qquad
    y_i = \gamma \hat x_i + \beta .

The backward pass (:func:`batch_norm_backward`) is the paper's chain rule written out,
not autograd; :class:`BatchNormFunction` joins the two so that autograd can call it.
:class:`BatchNorm` is the module: it keeps the running (population) statistics of
Algorithm 2 and uses them in eval mode, with the same arguments and semantics as
:class:`torch.nn.BatchNorm1d` / :class:`torch.nn.BatchNorm2d`.
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

import torch
from torch import nn

from bnlib import arguments

__all__ = [
    "BatchNorm",
    "DistributionNoise",
    "BatchNormFunction",
    "ForwardCache",
    "batch_norm",
    "batch_norm_backward",
    "batch_norm_forward",
    "is_batch_norm",
    "population_statistics",
    "replayed_noise",
    "swap_batch_norms",
]


def _reduce_dims(x: torch.Tensor) -> tuple[int, ...]:
    """Dimensions pooled into one statistic: the batch, and every spatial position."""
    if x.dim() < 2:
        raise ValueError(
            f"batch norm needs an input of shape (N, C) or (N, C, ...), got {tuple(x.shape)}"
        )
    return (0, *range(2, x.dim()))


def _require_floating(x: torch.Tensor) -> None:
    """Batch norm divides by a standard deviation: integer inputs are refused clearly."""
    if not x.is_floating_point():
        raise TypeError(
            f"batch norm needs a floating-point tensor, got dtype {x.dtype}. Fix: convert "
            "the input first, e.g. x.float() (or x.to(torch.float32)); for 0-255 pixel "
            "values, x.float() / 255"
        )


def _per_channel(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """View a (C,) vector so that it broadcasts against x of shape (N, C, ...)."""
    return v.view(1, -1, *([1] * (x.dim() - 2)))


def _values_per_channel(x: torch.Tensor) -> int:
    return x.numel() // x.shape[1]


class ForwardCache(NamedTuple):
    """What the backward pass needs from the forward pass (all tensors per channel).

    ``x_hat`` has the input's shape; ``mean``, ``var`` (biased) and ``inv_std``
    (:math:`1/\\sqrt{\\sigma^2_\\mathcal{B} + \\epsilon}`) have shape ``(C,)``.
    """

    x_hat: torch.Tensor
    x_centered: torch.Tensor
    mean: torch.Tensor
    var: torch.Tensor
    inv_std: torch.Tensor


def batch_norm_forward(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float = 1e-5,
) -> tuple[torch.Tensor, ForwardCache]:
    r"""Algorithm 1 with mini-batch statistics.

    Args:
        x: input of shape ``(N, C)`` or ``(N, C, *spatial)``.
        weight: :math:`\gamma`, shape ``(C,)``, or ``None`` for 1.
        bias: :math:`\beta`, shape ``(C,)``, or ``None`` for 0.
        eps: :math:`\epsilon`, added to the variance for numerical stability.

    Returns:
        ``(y, cache)``: ``y`` has the shape of ``x``; ``cache`` holds :math:`\hat x`,
        :math:`x - \mu_\mathcal{B}`, and per channel :math:`\mu_\mathcal{B}`, the biased
        :math:`\sigma^2_\mathcal{B}` and :math:`1/\sqrt{\sigma^2_\mathcal{B}+\epsilon}`.

    Raises:
        TypeError: ``x`` is not a floating-point tensor.
        ValueError: if a channel has a single value (its variance would be 0 and
            :math:`\hat x` identically 0), which is what PyTorch refuses too.
    """
    arguments.check_full_precision(x.dtype, "the input")
    _require_floating(x)
    dims = _reduce_dims(x)
    if _values_per_channel(x) <= 1:
        raise ValueError(
            "Expected more than 1 value per channel when training, got input size "
            f"{tuple(x.shape)}: batch statistics of a single value are meaningless. "
            "Fix: use a batch size of at least 2, or call .eval() to use running statistics."
        )
    mean = x.mean(dim=dims)
    x_centered = x - _per_channel(mean, x)
    var = x_centered.square().mean(dim=dims)
    inv_std = torch.rsqrt(var + eps)
    x_hat = x_centered * _per_channel(inv_std, x)
    y = x_hat
    if weight is not None:
        y = y * _per_channel(weight, x)
    if bias is not None:
        y = y + _per_channel(bias, x)
    return y, ForwardCache(x_hat, x_centered, mean, var, inv_std)


def batch_norm_backward(
    grad_y: torch.Tensor,
    cache: ForwardCache,
    weight: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""The gradients of Algorithm 1, as derived in Section 3 of the paper.

    With :math:`m` values per channel and :math:`\ell` the loss:

    .. math::

        \frac{\partial \ell}{\partial \hat x_i} &= \frac{\partial \ell}{\partial y_i}\gamma \\
        \frac{\partial \ell}{\partial \sigma^2_\mathcal{B}} &= \sum_i
            \frac{\partial \ell}{\partial \hat x_i}(x_i-\mu_\mathcal{B})
            \cdot\left(-\tfrac12\right)(\sigma^2_\mathcal{B}+\epsilon)^{-3/2} \\
        \frac{\partial \ell}{\partial \mu_\mathcal{B}} &= \sum_i
            \frac{\partial \ell}{\partial \hat x_i}\frac{-1}{\sqrt{\sigma^2_\mathcal{B}+\epsilon}}
            + \frac{\partial \ell}{\partial \sigma^2_\mathcal{B}}
              \frac{\sum_i -2(x_i-\mu_\mathcal{B})}{m} \\
        \frac{\partial \ell}{\partial x_i} &= \frac{\partial \ell}{\partial \hat x_i}
            \frac{1}{\sqrt{\sigma^2_\mathcal{B}+\epsilon}}
            + \frac{\partial \ell}{\partial \sigma^2_\mathcal{B}}\frac{2(x_i-\mu_\mathcal{B})}{m}
            + \frac{\partial \ell}{\partial \mu_\mathcal{B}}\frac1m \\
        \frac{\partial \ell}{\partial \gamma} &= \sum_i \frac{\partial \ell}{\partial y_i}\hat x_i,
        \qquad
        \frac{\partial \ell}{\partial \beta} = \sum_i \frac{\partial \ell}{\partial y_i}

    Args:
        grad_y: :math:`\partial\ell/\partial y`, the shape of the input.
        cache: the second output of :func:`batch_norm_forward`.
        weight: :math:`\gamma` of shape ``(C,)``, or ``None`` for 1.

    Returns:
        ``(grad_x, grad_weight, grad_bias)``: the input's shape, ``(C,)`` and ``(C,)``.
    """
    dims = _reduce_dims(grad_y)
    m = _values_per_channel(grad_y)
    x_hat, xc, _, var, inv_std = cache
    grad_x_hat = grad_y if weight is None else grad_y * _per_channel(weight, grad_y)
    grad_var = (grad_x_hat * xc).sum(dim=dims) * (-0.5) * inv_std.pow(3)
    # The second term is zero in exact arithmetic (the centred values sum to zero); the
    # paper keeps it, and so do we, so the code reads like the formula.
    grad_mean = (grad_x_hat * -_per_channel(inv_std, xc)).sum(dim=dims) + grad_var * (
        -2.0 * xc.sum(dim=dims) / m
    )
    grad_x = (
        grad_x_hat * _per_channel(inv_std, xc)
        + _per_channel(grad_var, xc) * 2.0 * xc / m
        + _per_channel(grad_mean, xc) / m
    )
    grad_weight = (grad_y * x_hat).sum(dim=dims)
    grad_bias = grad_y.sum(dim=dims)
    return grad_x, grad_weight, grad_bias


class BatchNormFunction(torch.autograd.Function):
    """Algorithm 1 as an autograd node with the hand-written backward pass.

    ``BatchNormFunction.apply(x, weight, bias, eps)`` returns ``(y, mean, var)``, where
    ``mean`` and the biased ``var`` are the batch statistics per channel (not
    differentiable: they feed the running averages only).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps):  # noqa: D102 (documented on the class)
        y, cache = batch_norm_forward(x, weight, bias, eps)
        ctx.save_for_backward(
            cache.x_hat, cache.x_centered, cache.mean, cache.var, cache.inv_std, weight
        )
        ctx.has_weight, ctx.has_bias = weight is not None, bias is not None
        ctx.mark_non_differentiable(cache.mean, cache.var)
        return y, cache.mean, cache.var

    @staticmethod
    def backward(ctx, grad_y, _grad_mean, _grad_var):  # noqa: D102
        x_hat, xc, mean, var, inv_std, weight = ctx.saved_tensors
        cache = ForwardCache(x_hat, xc, mean, var, inv_std)
        grad_x, grad_w, grad_b = batch_norm_backward(
            grad_y, cache, weight if ctx.has_weight else None
        )
        return (
            grad_x if ctx.needs_input_grad[0] else None,
            grad_w if ctx.has_weight and ctx.needs_input_grad[1] else None,
            grad_b if ctx.has_bias and ctx.needs_input_grad[2] else None,
            None,
        )


def batch_norm(
    x: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    training: bool = False,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
    num_batches_tracked: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Functional batch normalization with the semantics of :func:`torch.nn.functional.batch_norm`.

    In training, normalizes with the batch statistics (Algorithm 1) and, if running
    buffers are given, updates them in place (Algorithm 2):
    ``running = (1 - momentum) * running + momentum * batch``, with the *unbiased* batch
    variance :math:`\frac{m}{m-1}\sigma^2_\mathcal{B}` for ``running_var``. With
    ``momentum=None`` the update is the cumulative average over all batches seen
    (``num_batches_tracked`` counts them). Outside training, normalizes with the running
    statistics: :math:`y = \gamma\,(x - \mathrm{E}[x])/\sqrt{\mathrm{Var}[x]+\epsilon} + \beta`.

    Args:
        x: ``(N, C)`` or ``(N, C, *spatial)``.
        running_mean, running_var: ``(C,)`` buffers, or ``None`` (then batch statistics are
            used in both modes, as PyTorch does).
        weight, bias: :math:`\gamma` and :math:`\beta`, ``(C,)`` or ``None``.
        training: use (and track) batch statistics.
        momentum: the running averages' update factor, or ``None`` for a cumulative average.
        eps: added to the variance.
        num_batches_tracked: scalar int64 buffer, incremented in training when given.

    Returns:
        ``y``, the shape of ``x``.

    Raises:
        TypeError: ``x`` is not a floating-point tensor, or ``momentum`` or ``eps`` not a
            number.
        ValueError: ``momentum`` outside [0, 1], or ``eps`` negative.
    """
    arguments.check_number(momentum, "momentum", low=0, high=1, allow_none=True)
    arguments.check_number(eps, "eps", low=0)
    _require_floating(x)
    if not training:  # (in training, batch_norm_forward refuses half precision)
        arguments.check_full_precision(x.dtype, "the input")
        if running_mean is None or running_var is None:
            raise ValueError("eval-mode batch norm needs running_mean and running_var")
        scale = torch.rsqrt(running_var + eps)
        if weight is not None:
            scale = scale * weight
        shift = -running_mean * scale
        if bias is not None:
            shift = shift + bias
        return x * _per_channel(scale, x) + _per_channel(shift, x)

    y, mean, var = BatchNormFunction.apply(x, weight, bias, eps)
    if running_mean is not None and running_var is not None:
        with torch.no_grad():
            m = _values_per_channel(x)
            if num_batches_tracked is not None:
                num_batches_tracked.add_(1)
            if momentum is None:
                if num_batches_tracked is None:
                    raise ValueError("momentum=None (cumulative average) needs num_batches_tracked")
                factor = 1.0 / float(num_batches_tracked)
            else:
                factor = momentum
            running_mean.mul_(1 - factor).add_(mean.to(running_mean.dtype), alpha=factor)
            unbiased = var * (m / (m - 1))
            running_var.mul_(1 - factor).add_(unbiased.to(running_var.dtype), alpha=factor)
    return y


class BatchNorm(nn.Module):
    r"""Batch normalization over ``(N, C)`` or ``(N, C, H, W)`` inputs, written from scratch.

    A drop-in for :class:`torch.nn.BatchNorm1d` and :class:`torch.nn.BatchNorm2d` (same
    arguments, parameters, buffers and state-dict keys), whose gradient is the paper's
    hand-written one (:func:`batch_norm_backward`).

    Args:
        num_features: :math:`C`.
        eps: added to the variance.
        momentum: update factor of the running averages; ``None`` for a cumulative average.
        affine: learn :math:`\gamma` (``weight``, init 1) and :math:`\beta` (``bias``, init 0).
        track_running_stats: keep ``running_mean``, ``running_var`` and
            ``num_batches_tracked``; without them the batch statistics are used in eval too.

    Shape:
        input ``(N, C)`` or ``(N, C, *spatial)``; output the same. In training each channel
        needs more than one value (``N * H * W > 1``).
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        arguments.check_whole_number(num_features, "num_features", low=1)
        arguments.check_number(eps, "eps", low=0)
        arguments.check_full_precision(dtype, "dtype")
        if num_features < 1:
            raise ValueError(f"num_features must be a positive integer, got {num_features}")
        factory = {"device": device, "dtype": dtype}
        self.num_features, self.eps = num_features, eps
        self.momentum = momentum  # checked by the property's setter
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features, **factory))
            self.bias = nn.Parameter(torch.zeros(num_features, **factory))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer(
                "num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device)
            )
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    @property
    def momentum(self) -> float | None:
        """Update factor of the running averages, in [0, 1]; ``None`` for a cumulative
        average. Checked on every assignment, not only by the constructor (experiments
        set it on built models)."""
        return self._momentum

    @momentum.setter
    def momentum(self, value: float | None) -> None:
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(
                    f"momentum must be a number in [0, 1] or None, got {value!r} "
                    f"({type(value).__name__})"
                )
            if not 0.0 <= value <= 1.0:  # NaN fails too
                raise ValueError(
                    f"momentum must be in [0, 1] or None (a cumulative average), got {value}: "
                    "it is the weight of the new batch in running = (1 - momentum) * running "
                    "+ momentum * batch"
                )
            value = float(value)
        self._momentum = value

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, no batches tracked."""
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[1] != self.num_features:
            raise ValueError(
                f"expected input of shape (N, {self.num_features}) or (N, {self.num_features},"
                f" H, W), got {tuple(x.shape)}"
            )
        use_batch_stats = self.training or self.running_mean is None
        track = self.training and self.track_running_stats
        return batch_norm(
            x,
            self.running_mean if track or not use_batch_stats else None,
            self.running_var if track or not use_batch_stats else None,
            self.weight,
            self.bias,
            training=use_batch_stats,
            momentum=self.momentum,
            eps=self.eps,
            num_batches_tracked=self.num_batches_tracked if track else None,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, track_running_stats={self.track_running_stats}"
        )


_NORM_TYPES = (BatchNorm, nn.modules.batchnorm._BatchNorm)


@torch.no_grad()
def population_statistics(
    model: nn.Module,
    x: torch.Tensor,
    batch_size: int = 1000,
    batches: Iterable[torch.Tensor] | None = None,
) -> nn.Module:
    r"""Replace every BN layer's running statistics by population estimates (Algorithm 2).

    Runs the network in training mode over ``x`` in consecutive mini-batches and sets each
    layer's statistics to :math:`\mathrm{E}[x] = \mathrm{E}_\mathcal{B}[\mu_\mathcal{B}]` and
    :math:`\mathrm{Var}[x] = \frac{m}{m-1}\mathrm{E}_\mathcal{B}[\sigma^2_\mathcal{B}]`, the
    averages over all those batches. Nothing else changes (no parameter is updated); the
    model's train/eval mode and the layers' momentum are restored afterwards.

    Works for bnlib's :class:`BatchNorm` and PyTorch's BN layers alike.

    Args:
        model: the network; modified in place and returned.
        x: inputs, ``(N, ...)``; unlabeled data is enough (so it can re-estimate the
            statistics on shifted test data).
        batch_size: :math:`m`; a last incomplete batch is dropped.
        batches: an iterable of input batches to use instead of ``x`` split in order.

    Returns:
        ``model``.

    Raises:
        TypeError, ValueError: ``batch_size`` is not a whole number of at least 1.
    """
    arguments.check_whole_number(batch_size, "batch_size", low=1)
    layers = [
        mod for mod in model.modules() if isinstance(mod, _NORM_TYPES) and mod.track_running_stats
    ]
    if not layers:
        return model
    was_training = model.training
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average = E_B over the batches
    model.train()
    try:
        if batches is None:
            usable = (len(x) // batch_size) * batch_size
            if usable == 0:
                raise ValueError(f"need at least batch_size={batch_size} inputs, got {len(x)}")
            batches = x[:usable].split(batch_size)
        for batch in batches:
            model(batch)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        model.train(was_training)
    return model


class DistributionNoise(nn.Module):
    r"""Santurkar et al.'s noise (2018, Appendix A.2.1, Algorithm 1): every unit's
    distribution is shifted and rescaled anew at every step (training only).

    Injected after each BN layer, it makes the layer inputs' distributions move far more
    than without BN ("noisy BN"). At each forward pass in training mode (one training
    step), each unit (channel) :math:`j` draws

    .. math::
        \mu_j \sim U(\text{shift}), \qquad \sigma_j \sim U(\text{scale}),

    and each example :math:`i` then draws its own
    :math:`m_{ij} \sim U(\mu_j - \text{jitter}, \mu_j + \text{jitter})` and
    :math:`s_{ij} \sim \mathcal N(\sigma_j, \text{jitter}^2)`, and
    :math:`a_{ij} \leftarrow s_{ij}\, a_{ij} + m_{ij}`. The paper writes
    :math:`\mathcal N(\sigma_j, 0.1)` without saying whether 0.1 is a standard deviation or
    a variance; we take it as the standard deviation. In eval mode the layer is the
    identity.

    With ``replay`` set (:func:`replayed_noise`), a forward pass reuses the per-unit
    :math:`\mu_j, \sigma_j` of the last training step instead of drawing new ones, so
    that a probe sees the distribution training saw at that step (the per-example draws
    are made for the probe's own examples).

    Args:
        shift: the range of :math:`\mu_j`, default :math:`U(-0.5, 0.5)`.
        scale: the range of :math:`\sigma_j`, default :math:`U(1, 1.25)`.
        jitter: the per-example spread, 0.1 (the paper's).

    Shape:
        any ``(N, C, ...)``: units on dim 1, the per-example draws made for every element
        of the other dims (so stacked models, ``(1, K*C, N)``, and convolutions, whose
        positions count as examples in the paper, get them too).
    """

    def __init__(
        self,
        shift: tuple[float, float] = (-0.5, 0.5),
        scale: tuple[float, float] = (1.0, 1.25),
        jitter: float = 0.1,
    ) -> None:
        super().__init__()
        if shift[0] > shift[1] or scale[0] > scale[1] or jitter < 0:
            raise ValueError(
                f"bad noise ranges: shift={shift}, scale={scale}, jitter={jitter} "
                "(each range must be (low, high) with low <= high, and jitter >= 0)"
            )
        self.shift, self.scale, self.jitter = shift, scale, jitter
        self.replay = False
        self._unit_draws: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return a
        channels = a.shape[1]
        view = (1, channels, *([1] * (a.dim() - 2)))
        if self.replay and self._unit_draws is not None:
            mu, sigma = self._unit_draws
        else:
            mu = torch.empty(channels, device=a.device, dtype=a.dtype).uniform_(*self.shift)
            sigma = torch.empty(channels, device=a.device, dtype=a.dtype).uniform_(*self.scale)
            self._unit_draws = (mu, sigma)
        u = torch.rand_like(a)
        m = mu.view(view) + self.jitter * (2 * u - 1)
        s = sigma.view(view) + self.jitter * torch.randn_like(a)
        return s * a + m

    def extra_repr(self) -> str:
        return f"shift={self.shift}, scale={self.scale}, jitter={self.jitter}"


@contextlib.contextmanager
def replayed_noise(model: nn.Module) -> Iterator[None]:
    """Within the context, every :class:`DistributionNoise` of ``model`` reuses the
    per-unit shift and scale of the last training step (see its docstring)."""
    layers = [m for m in model.modules() if isinstance(m, DistributionNoise)]
    before = [layer.replay for layer in layers]
    for layer in layers:
        layer.replay = True
    try:
        yield
    finally:
        for layer, flag in zip(layers, before):
            layer.replay = flag


def is_batch_norm(module: nn.Module) -> bool:
    """Whether ``module`` is a BN layer: bnlib's :class:`BatchNorm` or one of PyTorch's
    (``nn.BatchNorm1d``, ``nn.BatchNorm2d``, ...)."""
    return isinstance(module, (BatchNorm, nn.modules.batchnorm._BatchNorm))


def swap_batch_norms(model: nn.Module, make: Callable[[nn.Module], nn.Module]) -> int:
    """Replace every BN layer of ``model`` (bnlib's or PyTorch's) in place by ``make(bn)``.

    Args:
        model: any network, a stacked one or a :class:`bnlib.models.MemberLoop` included.
        make: builds the replacement from the old layer (on its device; the layers of this
            module take over its gamma and beta with :func:`group_norm`'s sharing, or copy
            its state).

    Returns:
        The number of layers replaced.

    Raises:
        ValueError: ``model`` has no BN layer (build it with a BN norm first).
    """
    names = [name for name, m in model.named_modules() if is_batch_norm(m)]
    if not names:
        raise ValueError("the model has no BN layer to replace: build it with norm='torch'")
    for name in names:
        model.set_submodule(name, make(model.get_submodule(name)))
    return len(names)
