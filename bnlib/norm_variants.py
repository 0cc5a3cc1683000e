r"""BN's variants and alternatives, as layers that take a trained or freshly built
network's BN layers' place.

- :class:`BatchRenorm`: batch renormalization (Ioffe 2017). In training, the batch
  statistics are corrected toward the running ones by clipped factors :math:`r, d`, so
  that training computes what inference will compute, even at small batches.
- :class:`GhostBatchNorm`: ghost BN (Hoffer, Hubara & Soudry 2017). A large batch is
  normalized as several small "virtual" batches, each with its own statistics.
- :func:`group_norm`: GroupNorm (Wu & He 2018) and LayerNorm (Ba, Kiros & Hinton 2016,
  as Wu & He apply it to convolutional networks: one group holding all channels), whose
  statistics are per example, so the batch size does not enter.
- :class:`ExampleWeightedBatchNorm`: inference with the example included in the
  statistics (one of Summers & Dinneen's 2020 fixes).

:func:`swap_batch_norms` puts any of them in place of a network's BN layers. The new
layer takes over the old one's :math:`\gamma` and :math:`\beta` *parameters* (the same
tensors), so an optimizer built for the network before the swap still trains them.

Shapes: every layer takes ``(N, C)``, ``(N, C, H, W)``, or the stacked fully connected
layout ``(1, C, N)`` of :mod:`bnlib.models` (batch on the last axis), and returns the
same shape.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bnlib.norm import swap_batch_norms

__all__ = [
    "BatchRenorm",
    "ExampleWeightedBatchNorm",
    "GhostBatchNorm",
    "ghost_from",
    "group_norm",
    "renorm_from",
    "swap_batch_norms",
]


def _channel_dims(x: torch.Tensor) -> tuple[int, ...]:
    """The axes BN averages over: all but the channel axis 1."""
    if x.dim() not in (2, 3, 4):
        raise ValueError(f"expected input (N, C), (1, C, N) or (N, C, H, W), got {tuple(x.shape)}")
    return tuple(d for d in range(x.dim()) if d != 1)


def _shape_like(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-channel ``(C,)`` tensor shaped to broadcast against ``x``."""
    return v.view(1, -1, *([1] * (x.dim() - 2)))


def _take_affine(new: nn.Module, old: nn.Module) -> nn.Module:
    """Give ``new`` the very parameter tensors of ``old``'s gamma and beta."""
    new.weight, new.bias = old.weight, old.bias
    return new


class BatchRenorm(nn.Module):
    r"""Batch renormalization (Ioffe 2017, Algorithm 1).

    In training, with the batch's mean :math:`\mu_B` and standard deviation
    :math:`\sigma_B = \sqrt{\sigma_B^2 + \epsilon}` and the running :math:`\mu, \sigma`:

    .. math::
        r = \operatorname{clip}_{[1/r_\max,\, r_\max]}\frac{\sigma_B}{\sigma}, \quad
        d = \operatorname{clip}_{[-d_\max,\, d_\max]}\frac{\mu_B - \mu}{\sigma}, \quad
        y = \gamma\left(\frac{x - \mu_B}{\sigma_B}\, r + d\right) + \beta,

    with :math:`r, d` treated as constants by the gradient. Then
    :math:`\mu \mathrel{+}= \alpha(\mu_B - \mu)`, :math:`\sigma \mathrel{+}= \alpha(\sigma_B
    - \sigma)`. In eval mode :math:`y = \gamma (x - \mu)/\sigma + \beta`, which is what
    training computes whenever the clipping is inactive. With :math:`r_\max = 1,
    d_\max = 0` it is BN. The limits are relaxed linearly over training as in the paper:
    BN until step ``relax_from``, :math:`r_\max` reaching ``r_max`` at step ``r_max_at``
    and :math:`d_\max` reaching ``d_max`` at ``d_max_at`` (steps count training-mode
    forward passes, ``num_batches_tracked``).

    The correction is applied to the normalized value, before :math:`\gamma, \beta`, as in
    the paper (the NTU project's code applied it after them).

    Args:
        num_features: :math:`C`.
        momentum: :math:`\alpha`, the running averages' update factor.
        eps: added to the variance.
        r_max, d_max: the final clipping limits (the paper: 3 and 5).
        relax_from, r_max_at, d_max_at: the schedule's steps (see above).

    Shape:
        input ``(N, C)``, ``(1, C, N)`` or ``(N, C, H, W)``; output the same.
    """

    def __init__(
        self,
        num_features: int,
        *,
        momentum: float = 0.01,
        eps: float = 1e-5,
        r_max: float = 3.0,
        d_max: float = 5.0,
        relax_from: int = 0,
        r_max_at: int = 1,
        d_max_at: int = 1,
    ) -> None:
        super().__init__()
        if not (r_max >= 1 and d_max >= 0):
            raise ValueError(f"need r_max >= 1 and d_max >= 0, got r_max={r_max}, d_max={d_max}")
        if not relax_from < min(r_max_at, d_max_at):
            raise ValueError(
                "the limits are relaxed after relax_from, so it must come before r_max_at and "
                f"d_max_at; got relax_from={relax_from}, r_max_at={r_max_at}, d_max_at={d_max_at}"
            )
        self.num_features, self.momentum, self.eps = num_features, momentum, eps
        self.r_max, self.d_max = r_max, d_max
        self.relax_from, self.r_max_at, self.d_max_at = relax_from, r_max_at, d_max_at
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_std", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def limits(self) -> tuple[float, float]:
        """The current :math:`(r_\\max, d_\\max)` of the schedule."""
        step = int(self.num_batches_tracked)

        def ramp(start: float, end: float, at: int) -> float:
            t = (step - self.relax_from) / (at - self.relax_from)
            return start + (end - start) * min(max(t, 0.0), 1.0)

        return ramp(1.0, self.r_max, self.r_max_at), ramp(0.0, self.d_max, self.d_max_at)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = _channel_dims(x)
        gamma, beta = _shape_like(self.weight, x), _shape_like(self.bias, x)
        if not self.training:
            mean, std = _shape_like(self.running_mean, x), _shape_like(self.running_std, x)
            return gamma * (x - mean) / std + beta
        mean = x.mean(dims)
        std = (x.var(dims, unbiased=False) + self.eps).sqrt()
        r_max, d_max = self.limits()
        with torch.no_grad():
            r = (std / self.running_std).clamp(1 / r_max, r_max)
            d = ((mean - self.running_mean) / self.running_std).clamp(-d_max, d_max)
            self.running_mean.add_(mean - self.running_mean, alpha=self.momentum)
            self.running_std.add_(std - self.running_std, alpha=self.momentum)
            self.num_batches_tracked.add_(1)
        x_hat = (x - _shape_like(mean, x)) / _shape_like(std, x)
        return gamma * (x_hat * _shape_like(r, x) + _shape_like(d, x)) + beta

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, momentum={self.momentum}, r_max={self.r_max}, "
            f"d_max={self.d_max}, relaxed over steps {self.relax_from}.."
            f"{max(self.r_max_at, self.d_max_at)}"
        )


class GhostBatchNorm(nn.Module):
    r"""Ghost batch normalization (Hoffer, Hubara & Soudry 2017).

    In training, the batch is cut into consecutive "ghost" batches of ``ghost_size``
    examples (the last may be smaller), and each is normalized with its own mean and
    variance, exactly as BN would normalize a batch of that size; each ghost batch also
    updates the running statistics. In eval mode it is BN with its running statistics.
    ``ghost_size`` >= the batch size is plain BN.

    Args:
        num_features: :math:`C`.
        ghost_size: examples per ghost batch.
        momentum, eps: as :class:`torch.nn.BatchNorm2d`'s.

    Shape:
        input ``(N, C)``, ``(1, C, N)`` (batch on the last axis) or ``(N, C, H, W)``;
        output the same.
    """

    def __init__(
        self, num_features: int, ghost_size: int, momentum: float = 0.1, eps: float = 1e-5
    ) -> None:
        super().__init__()
        if ghost_size < 2:
            raise ValueError(f"ghost_size must be >= 2 examples, got {ghost_size}")
        self.num_features, self.ghost_size = num_features, ghost_size
        self.momentum, self.eps = momentum, eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _bn(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            self.training,
            self.momentum,
            self.eps,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _channel_dims(x)
        if not self.training:
            return self._bn(x)
        batch_axis = 2 if x.dim() == 3 else 0
        return torch.cat([self._bn(g) for g in x.split(self.ghost_size, batch_axis)], batch_axis)

    def extra_repr(self) -> str:
        return f"{self.num_features}, ghost_size={self.ghost_size}, momentum={self.momentum}"


def group_norm(bn: nn.Module, groups: int, members: int = 1) -> nn.GroupNorm:
    """A GroupNorm with ``groups`` groups per model in place of ``bn``, sharing its gamma and
    beta. ``groups=1`` is Wu & He's LayerNorm (each example normalized over all of a
    layer's channels and positions).

    Args:
        bn: a BN layer over ``members * C`` channels.
        groups: groups per model; must divide ``C``.
        members: the models stacked along the channel axis (:mod:`bnlib.models`); each
            model's channels are contiguous, so ``members * groups`` groups never mix
            two models.

    Returns:
        ``nn.GroupNorm`` over ``(N, members * C, H, W)``. Not for the stacked fully
        connected layout ``(1, C, N)``, whose first axis is not the batch.
    """
    channels = bn.num_features // members
    if channels * members != bn.num_features or channels % groups:
        raise ValueError(
            f"{groups} groups do not divide the {channels} channels of each of the {members} "
            "models: choose a divisor"
        )
    layer = nn.GroupNorm(members * groups, bn.num_features, eps=bn.eps)
    return _take_affine(layer.to(bn.weight.device), bn)


class ExampleWeightedBatchNorm(nn.Module):
    r"""Inference with the example included in the statistics (Summers & Dinneen 2020).

    A trained BN layer in eval mode normalizes with population statistics
    :math:`\mu, \sigma^2` that never include the example at hand, while in training every
    example was part of its batch's statistics. This layer normalizes each example
    :math:`i` with the statistics of a batch of ``batch_size`` :math:`= B` made of the
    example and :math:`B - 1` examples distributed as the population: with the example's
    own per-channel mean :math:`m_i` and variance :math:`v_i` (over positions; 0 for a
    fully connected layer),

    .. math::
        \bar\mu = \frac{m_i + (B-1)\mu}{B}, \quad
        \bar\sigma^2 = \frac{v_i + (m_i - \bar\mu)^2 + (B-1)(\sigma^2 + (\mu - \bar\mu)^2)}{B},

    then :math:`y = \gamma (x - \bar\mu)/\sqrt{\bar\sigma^2 + \epsilon} + \beta`. Each example
    is normalized on its own, so the result does not depend on the other test examples.

    Args:
        bn: the trained BN layer (its running statistics, gamma and beta are used).
        batch_size: :math:`B`, normally the training batch size.

    Shape:
        input ``(N, C)`` or ``(N, C, H, W)``; output the same.
    """

    def __init__(self, bn: nn.Module, batch_size: int) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.bn, self.batch_size = bn, batch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in (2, 4):
            raise ValueError(f"expected input (N, C) or (N, C, H, W), got {tuple(x.shape)}")
        dims = tuple(range(2, x.dim()))
        m = x.mean(dims, keepdim=True) if dims else x
        v = x.var(dims, unbiased=False, keepdim=True) if dims else torch.zeros_like(x)
        b = self.batch_size
        mu, var = _shape_like(self.bn.running_mean, x), _shape_like(self.bn.running_var, x)
        mean = (m + (b - 1) * mu) / b
        var = (v + (m - mean) ** 2 + (b - 1) * (var + (mu - mean) ** 2)) / b
        y = (x - mean) / (var + self.bn.eps).sqrt()
        return _shape_like(self.bn.weight, x) * y + _shape_like(self.bn.bias, x)


def renorm_from(bn: nn.Module, **schedule) -> BatchRenorm:
    """A :class:`BatchRenorm` in place of ``bn``, sharing its gamma and beta."""
    layer = BatchRenorm(bn.num_features, eps=bn.eps, **schedule)
    return _take_affine(layer.to(bn.weight.device), bn)


def ghost_from(bn: nn.Module, ghost_size: int) -> GhostBatchNorm:
    """A :class:`GhostBatchNorm` in place of ``bn``, sharing its gamma and beta."""
    layer = GhostBatchNorm(bn.num_features, ghost_size, momentum=bn.momentum, eps=bn.eps)
    return _take_affine(layer.to(bn.weight.device), bn)
