"""SGD and Adam for stacked models, with hyperparameters per member.

A stacked model (:mod:`bnlib.models`) keeps every parameter with a model-major leading
axis, so member ``k``'s slice of a parameter is ``p.unflatten(0, (K, -1))[k]``. These
optimizers apply PyTorch's update rules (``torch.optim.SGD`` and ``torch.optim.Adam``
with their defaults otherwise) to every member at once, each with its own learning rate,
momentum and weight decay, and leave frozen members (``active[k] = False``) untouched.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

__all__ = ["MemberOptimizers", "StackedAdam", "StackedSGD", "per_member"]


def per_member(
    value: float | Sequence[float],
    members: int,
    name: str,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """A ``(K,)`` tensor from a scalar or a sequence of K values (checked)."""
    values = (
        [float(value)] * members if isinstance(value, (int, float)) else [float(v) for v in value]
    )
    if len(values) != members:
        raise ValueError(f"{name} has {len(values)} values for {members} members")
    return torch.tensor(values, dtype=dtype, device=device)


class _StackedOptimizer:
    def __init__(self, params: Iterable[nn.Parameter], members: int, lr) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.members = members
        self.factory = {"device": self.params[0].device, "dtype": self.params[0].dtype}
        self.lr = per_member(lr, members, "lr", **self.factory)
        if not bool((self.lr > 0).all()):
            raise ValueError(f"every learning rate must be > 0, got {self.lr.tolist()}")
        self.state: dict[nn.Parameter, dict[str, torch.Tensor]] = {}

    def _views(self, p: torch.Tensor, *per_k: torch.Tensor):
        """p as (K, -1, ...) and each (K,) tensor shaped to broadcast against it."""
        view = p.unflatten(0, (self.members, -1))
        shape = (self.members, *([1] * (view.dim() - 1)))
        return view, [t.view(shape) for t in per_k]

    def _frozen_gradients_to_zero(self, active: torch.Tensor | None) -> None:
        """Zero the gradient slices of frozen members, so that their (possibly NaN or
        infinite) gradients cannot reach their parameters or optimizer state."""
        if active is None or bool(active.all()):  # the common case costs nothing
            return
        frozen = (~active).nonzero().flatten()
        for p in self.params:
            if p.grad is not None:
                p.grad.unflatten(0, (self.members, -1)).index_fill_(0, frozen, 0.0)

    def _step_sizes(self, active: torch.Tensor | None) -> torch.Tensor:
        """``-lr`` per member, 0 for frozen members."""
        return -self.lr if active is None else -self.lr * active

    def zero_grad(self) -> None:
        """Forget all gradients (set them to None)."""
        for p in self.params:
            p.grad = None


class StackedSGD(_StackedOptimizer):
    """SGD with momentum and weight decay per member (``torch.optim.SGD``'s rule).

    ``g = grad + wd * p``; ``buf = momentum * buf + g`` (``buf = g`` at the first step);
    ``p -= lr * buf``.

    Args:
        params: the stacked model's parameters.
        members: K.
        lr, momentum, weight_decay: a float for all members, or K values.
    """

    def __init__(self, params, members: int, lr, momentum=0.0, weight_decay=0.0) -> None:
        super().__init__(params, members, lr)
        self.momentum = per_member(momentum, members, "momentum", **self.factory)
        self.weight_decay = per_member(weight_decay, members, "weight_decay", **self.factory)
        self.uses_momentum = bool((self.momentum != 0).any())
        self.uses_decay = bool((self.weight_decay != 0).any())

    @torch.no_grad()
    def step(self, active: torch.Tensor | None = None) -> None:
        """Update every parameter of the members with ``active[k]`` (all by default);
        frozen members' parameters stay exactly as they are."""
        self._frozen_gradients_to_zero(active)
        step = self._step_sizes(active)
        for p in self.params:
            if p.grad is None:
                continue
            view, (step_k, mu_k, wd_k) = self._views(p, step, self.momentum, self.weight_decay)
            g = p.grad.unflatten(0, (self.members, -1))
            if self.uses_decay:
                g = g.addcmul(view, wd_k)
            if self.uses_momentum:
                buf = self.state.setdefault(p, {}).get("momentum")
                if buf is None:
                    buf = self.state[p]["momentum"] = g.clone()
                else:
                    buf.mul_(mu_k).add_(g)
                g = buf
            view.addcmul_(g, step_k)  # p -= lr * g, fused, no temporary


class StackedAdam(_StackedOptimizer):
    """Adam with learning rate and weight decay per member (``torch.optim.Adam``'s rule).

    Args:
        params, members: as for :class:`StackedSGD`.
        lr, weight_decay: a float for all members, or K values.
        betas, eps: shared by all members.
    """

    def __init__(
        self, params, members: int, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0
    ) -> None:
        super().__init__(params, members, lr)
        self.betas, self.eps = betas, eps
        self.weight_decay = per_member(weight_decay, members, "weight_decay", **self.factory)
        self.t = 0

    @torch.no_grad()
    def step(self, active: torch.Tensor | None = None) -> None:
        """Update every parameter of the members with ``active[k]`` (all by default);
        frozen members' parameters stay exactly as they are."""
        self._frozen_gradients_to_zero(active)
        self.t += 1
        b1, b2 = self.betas
        step = self._step_sizes(active) / (1 - b1**self.t)
        for p in self.params:
            if p.grad is None:
                continue
            view, (step_k, wd_k) = self._views(p, step, self.weight_decay)
            g = p.grad.unflatten(0, (self.members, -1)).addcmul(view, wd_k)
            state = self.state.setdefault(p, {})
            if not state:
                state["m"] = torch.zeros_like(g)
                state["v"] = torch.zeros_like(g)
            m, v = state["m"], state["v"]
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v / (1 - b2**self.t)).sqrt_().add_(self.eps)
            view.addcmul_(m / denom, step_k)


class MemberOptimizers:
    """One optimizer per member, for K separate models (:class:`bnlib.models.MemberLoop`),
    with the interface of the stacked optimizers."""

    def __init__(self, optimizers: Sequence[_StackedOptimizer]) -> None:
        self.optimizers = list(optimizers)

    def zero_grad(self) -> None:
        """Forget all gradients."""
        for optimizer in self.optimizers:
            optimizer.zero_grad()

    @torch.no_grad()
    def step(self, active: torch.Tensor | None = None) -> None:
        """Step the optimizers of the active members; the others' models stay as they are."""
        flags = [True] * len(self.optimizers) if active is None else active.tolist()
        for optimizer, flag in zip(self.optimizers, flags):
            if flag:
                optimizer.step()
