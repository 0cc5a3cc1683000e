"""Training over on-device tensors: no DataLoader, one indexing operation per minibatch.

- :func:`train` trains one model (any ``nn.Module``) with SGD, calling a logging function
  at chosen steps; a run whose loss becomes NaN or infinite is recorded as diverged.
- :class:`StackedRun` trains K models of one architecture at once, as one stacked model
  (:mod:`bnlib.models`), each with its own seed, minibatches and hyperparameters
  (:class:`Member`), with probes (:mod:`bnlib.probes`) at chosen steps.

A diverging model is a result, never a crash.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from bnlib import arguments
from bnlib.arguments import whole_number
from bnlib.data import Split
from bnlib.progress import progress_bar

__all__ = [
    "Member",
    "StackedRun",
    "accuracy",
    "batch_indices",
    "log_steps",
    "ModelState",
    "preserved_state",
    "progress_bar",
    "train",
]


def batch_indices(
    n: int, batch_size: int, steps: int, generator: torch.Generator, device: torch.device
) -> Iterator[torch.Tensor]:
    """Indices of ``steps`` minibatches: epochs of a fresh random permutation of ``range(n)``.

    A permutation's last partial batch is dropped, so every batch has ``batch_size`` items.

    Yields:
        int64 tensors of shape ``(batch_size,)`` on ``device``.

    Raises:
        TypeError: ``batch_size`` or ``steps`` is not a whole number (raised at once,
            not at the first batch).
        ValueError: ``batch_size`` is not in ``1..n`` (the data size), or ``steps < 0``.
    """
    batch_size = whole_number(batch_size, "batch_size", 1, n, " (the data size)")
    steps = whole_number(steps, "steps", 0)
    return _batches(n, batch_size, steps, generator, device)


def _batches(
    n: int, batch_size: int, steps: int, generator: torch.Generator, device: torch.device
) -> Iterator[torch.Tensor]:
    per_epoch = n // batch_size
    done = 0
    while done < steps:
        order = torch.randperm(n, generator=generator).to(device)
        for k in range(min(per_epoch, steps - done)):
            yield order[k * batch_size : (k + 1) * batch_size]
        done += min(per_epoch, steps - done)


def log_steps(steps: int, points: int = 30) -> list[int]:
    """About ``points`` step numbers from 0 to ``steps``, evenly spaced on a log scale."""
    grid = {0, steps}
    grid.update(int(round(v)) for v in np.logspace(0, math.log10(max(steps, 1)), points))
    return sorted(s for s in grid if 0 <= s <= steps)


@dataclass
class ModelState:
    """What evaluation must leave as it found it: a model's buffers (BN running
    statistics), its parameters' gradients and its train/eval mode."""

    buffers: dict[str, torch.Tensor]
    grads: dict[nn.Parameter, torch.Tensor | None]
    training: bool

    @classmethod
    def of(cls, model: nn.Module) -> ModelState:
        """A copy of ``model``'s current state."""
        return cls(
            buffers={name: b.clone() for name, b in model.named_buffers()},
            grads={p: p.grad for p in model.parameters()},
            training=model.training,
        )

    def restore(self, model: nn.Module) -> None:
        """Put ``model`` back in this state (in place)."""
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(self.buffers[name])
        for p, g in self.grads.items():
            p.grad = g
        model.train(self.training)


@contextlib.contextmanager
def preserved_state(model: nn.Module) -> Iterator[None]:
    """Run code on ``model`` and then restore its buffers (BN running statistics), its
    gradients and its train/eval mode (:class:`ModelState`).

    Evaluation must not change the model: a forward pass in train mode updates BN's
    running statistics, which would let evaluation data (test data!) into the training
    state. Every evaluation in bnlib runs inside this context.
    """
    state = ModelState.of(model)
    try:
        yield
    finally:
        state.restore(model)


@torch.no_grad()
def accuracy(model: nn.Module, split: Split, batch_size: int = 10_000) -> float:
    """Fraction of ``split`` classified correctly, in the model's current train/eval mode.

    In train mode BN normalizes each batch of ``batch_size`` examples with that batch's
    own statistics, so ``batch_size`` matters then. The model is left exactly as it was:
    in train mode the forward passes would update BN's running statistics, which are
    restored (:func:`preserved_state`).
    """
    correct = 0
    with preserved_state(model):
        for xb, yb in zip(split.x.split(batch_size), split.y.split(batch_size)):
            correct += (model(xb).argmax(1) == yb).sum().item()
    return correct / len(split.y)


def train(
    model: nn.Module,
    data: Split,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    seed: int = 0,
    log_at: list[int] | None = None,
    log: Callable[[int, nn.Module, float], dict | list[dict]] | None = None,
    desc: str = "training",
) -> pd.DataFrame:
    """Train ``model`` on ``data`` with minibatch SGD and cross-entropy.

    Args:
        model: maps ``data.x[idx]`` to logits; trained in place (left in train mode).
        data: the training split, on the model's device.
        steps: number of SGD steps.
        batch_size: examples per step.
        lr: learning rate (> 0); ``momentum`` and ``weight_decay`` as in ``torch.optim.SGD``.
        seed: seeds the minibatch order (not the model, which the caller built).
        log_at: steps after which ``log`` is called (0 = before training); default: none.
        log: ``log(step, model, loss)`` returns a row (dict) or rows to record; ``loss`` is
            the last minibatch loss (NaN at step 0). It may switch the model to eval mode:
            the model is put back in train mode afterwards.

    Returns:
        One row per logged row, with ``step`` and ``loss`` columns added, and a
        ``diverged`` column: ``True`` from the step on which the loss became NaN or
        infinite (training stops there, and that step is logged).
    """
    arguments.check_number(lr, "lr", above=0)
    arguments.check_same_length(data.x, data.y, "data.x and data.y")
    arguments.check_whole_number(steps, "steps", low=0)
    arguments.check_whole_number(batch_size, "batch_size", low=1)
    arguments.check_whole_number(seed, "seed", low=0)
    arguments.check_number(momentum, "momentum", low=0)
    arguments.check_number(weight_decay, "weight_decay", low=0)
    if not lr > 0:
        raise ValueError(f"learning rate must be > 0, got {lr}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
    )
    log_at_set = set(log_at or [])
    rows: list[dict] = []

    def record(step: int, loss: float, diverged: bool) -> None:
        if log is None:
            return
        out = log(step, model, loss)
        model.train()  # a log function may evaluate in eval mode; training goes on in train
        for row in [out] if isinstance(out, dict) else out:
            rows.append({"step": step, "loss": loss, "diverged": diverged, **row})

    model.train()
    if 0 in log_at_set:
        record(0, float("nan"), False)
    bar = progress_bar(steps, desc)
    for step, idx in enumerate(
        batch_indices(len(data.y), batch_size, steps, generator, data.x.device), start=1
    ):
        loss = nn.functional.cross_entropy(model(data.x[idx]), data.y[idx])
        if not torch.isfinite(loss):
            record(step, loss.item(), True)
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step in log_at_set:
            record(step, loss.item(), False)
        bar.update()
    bar.close()
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------
# Many models at once
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """What distinguishes one model of a stacked run from the others.

    Attributes:
        lr: learning rate (> 0).
        seed: seeds the member's initialization and its minibatch order. Members with the
            same seed start from the same weights and see the same batches.
        init: initialization scheme (:data:`bnlib.models.INITS`); ``None`` keeps the
            architecture's default.
        gain: multiplies the initialization's scale.
        momentum, weight_decay: as in ``torch.optim.SGD`` (Adam uses ``weight_decay``).
    """

    lr: float
    seed: int = 0
    init: str | None = None
    gain: float = 1.0
    momentum: float = 0.0
    weight_decay: float = 0.0


Probe = Callable[["StackedRun", int], list[dict]]


class StackedRun:
    """K models of one architecture, trained together as one stacked model.

    Each member has its own initialization (seeded), its own shuffled minibatches, its
    own hyperparameters (:class:`Member`), its own BN batch and running statistics, and
    its own divergence status. A member whose minibatch loss becomes NaN or infinite, or
    exceeds ``divergence_ratio`` times its first loss (Bjorck et al.'s factor of 1e3),
    is frozen at that step (its parameters no longer change) and recorded as diverged;
    the others go on exactly as if it were not there.

    Args:
        architecture: ``"mlp"``, ``"resnet"`` or ``"vgg"`` (:func:`bnlib.models.build_model`).
        config: the architecture's arguments (``norm``, ``depth``, ``activation``, ...),
            shared by all members.
        members: one :class:`Member` per model.
        data: the training split; moved to ``device`` once.
        batch_size: examples per step and member.
        optimizer: ``"sgd"`` or ``"adam"``.
        device: ``None`` picks the best (:func:`bnlib.device.pick_device`).
        strategy: how the K models are computed. ``"stacked"``: one stacked model
            (batched matrix multiplies, grouped convolutions); ``"loop"``: K ordinary
            models one after the other (:class:`bnlib.models.MemberLoop`), still fed from
            on-device tensors; ``"auto"`` (default): stacked, except convolutional
            networks on a CPU, where ``python -m bnlib bench`` measured grouped
            convolutions to be slower than a loop. Results are the same either way.

    Attributes:
        model: the stacked model (``members=K``); :func:`bnlib.models.unstack_member`
            takes one member out.
        step: number of updates done so far.
        active: ``(K,)`` bool, members still training.
        diverged_at: ``(K,)`` int64, the step at which each member diverged (-1 if not).
    """

    def __init__(
        self,
        architecture: str,
        config: dict,
        members: Sequence[Member],
        data: Split,
        *,
        batch_size: int,
        optimizer: str = "sgd",
        device: str | torch.device | None = None,
        divergence_ratio: float = 1e3,
        strategy: str = "auto",
    ) -> None:
        from bnlib.device import pick_device
        from bnlib.models import MemberLoop, build_model, stack_members
        from bnlib.optim import MemberOptimizers, StackedAdam, StackedSGD

        if not members:
            raise ValueError("a stacked run needs at least one member")
        arguments.check_same_length(data.x, data.y, "data.x and data.y")
        arguments.check_numbers([m.lr for m in members], "members[{}].lr", above=0)
        arguments.check_whole_numbers([m.seed for m in members], "members[{}].seed", low=0)
        arguments.check_numbers([m.gain for m in members], "members[{}].gain")
        arguments.check_numbers([m.momentum for m in members], "members[{}].momentum", low=0)
        arguments.check_numbers(
            [m.weight_decay for m in members], "members[{}].weight_decay", low=0
        )
        arguments.check_number(divergence_ratio, "divergence_ratio", above=1, allow_inf=True)
        for m in members:
            if not m.lr > 0:
                raise ValueError(f"learning rate must be > 0, got {m.lr}")
        whole_number(batch_size, "batch_size", 1, len(data.y), " (the data size)")
        self.device = pick_device(device)
        self.members = list(members)
        self.k = len(members)
        self.architecture, self.config = architecture, dict(config)
        self.batch_size, self.divergence_ratio = batch_size, divergence_ratio
        singles = []
        for m in members:
            torch.manual_seed(m.seed)
            extra = {"init": m.init} if m.init is not None else {}
            singles.append(build_model(architecture, **self.config, **extra, gain=m.gain))
        if strategy == "auto":
            convolutional = architecture != "mlp"
            strategy = "loop" if convolutional and self.device.type == "cpu" else "stacked"
        if strategy not in ("stacked", "loop"):
            raise ValueError(f"unknown strategy {strategy!r}: use 'auto', 'stacked' or 'loop'")
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"unknown optimizer {optimizer!r}: use 'sgd' or 'adam'")
        self.strategy = strategy
        self.data = Split(data.x.to(self.device), data.y.to(self.device))

        def make_optimizer(params, group: Sequence[Member]):
            lrs = [m.lr for m in group]
            decay = [m.weight_decay for m in group]
            if optimizer == "sgd":
                return StackedSGD(params, len(group), lrs, [m.momentum for m in group], decay)
            return StackedAdam(params, len(group), lrs, weight_decay=decay)

        if strategy == "stacked":
            self.model = stack_members(singles).to(self.device)
            self.optimizer = make_optimizer(self.model.parameters(), self.members)
        else:
            self.model = MemberLoop([m.to(self.device) for m in singles])
            self.optimizer = MemberOptimizers(
                [
                    make_optimizer(one.parameters(), [m])
                    for one, m in zip(self.model.models, self.members)
                ]
            )
        self.step = 0
        self.active = torch.ones(self.k, dtype=torch.bool, device=self.device)
        self.diverged_at = torch.full((self.k,), -1, dtype=torch.int64, device=self.device)
        self.first_loss = torch.full((self.k,), float("nan"), device=self.device)
        self.last_loss = torch.full((self.k,), float("nan"), device=self.device)
        self._batches = self._member_batches()

    def _member_batches(self) -> Iterator[torch.Tensor]:
        """Per step, a ``(B, K)`` index tensor: column k is member k's minibatch, the same
        sequence :func:`train` draws for a single model with that seed."""
        n = len(self.data.y)
        streams = {
            s: batch_indices(
                n, self.batch_size, 2**62, torch.Generator().manual_seed(s), self.device
            )
            for s in {m.seed for m in self.members}
        }
        while True:
            drawn = {s: next(stream) for s, stream in streams.items()}
            yield torch.stack([drawn[m.seed] for m in self.members], dim=1)

    def member_table(self) -> pd.DataFrame:
        """One row per member: ``member`` (index) and its hyperparameters."""
        rows = [{"member": i, **asdict(m)} for i, m in enumerate(self.members)]
        return pd.DataFrame(rows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, K, classes)`` for inputs ``(N, K, C, H, W)`` (member k gets
        ``x[:, k]``), in the model's current mode. A run of one member holds an ordinary
        model, which takes ``(N, C, H, W)``."""
        if self.k == 1 and self.strategy == "stacked":
            return self.model(x[:, 0]).unsqueeze(1)
        return self.model(x)

    def losses(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy per member: logits ``(B, K, C)``, labels ``(B, K)`` -> ``(K,)``."""
        per_example = nn.functional.cross_entropy(logits.permute(0, 2, 1), y, reduction="none")
        return per_example.mean(0)

    def train_step(self) -> torch.Tensor:
        """One SGD/Adam step for every active member; returns the ``(K,)`` minibatch losses
        (before the update). No host synchronization: cheap on a GPU."""
        idx = next(self._batches)
        self.model.train()
        losses = self.losses(self.forward(self.data.x[idx]), self.data.y[idx])
        self.step += 1
        if self.step == 1:
            self.first_loss = losses.detach().clone()
        bad = ~torch.isfinite(losses) | (losses > self.divergence_ratio * self.first_loss)
        newly = bad & self.active
        self.diverged_at = torch.where(newly, self.step, self.diverged_at)
        self.active &= ~bad
        self.optimizer.zero_grad()
        torch.where(self.active, losses, 0.0).sum().backward()
        self.optimizer.step(self.active)
        self.last_loss = losses.detach()
        return self.last_loss

    def train(
        self,
        steps: int,
        log_at: Sequence[int] = (),
        probes: Sequence[Probe] = (),
        desc: str = "training",
        progress: bool | None = None,
    ) -> pd.DataFrame:
        """Train ``steps`` more steps; at the steps in ``log_at`` (counted from the run's
        start; 0 = before any update) record the minibatch loss and call the probes.

        Returns:
            Tidy rows: ``step, member, metric, value`` plus any columns the probes add
            (``layer``, ``percentile``, ...), the member's hyperparameters, and
            ``diverged`` (the member had diverged at or before that step). The metric
            ``loss`` is the member's minibatch loss of that step (NaN at step 0).

        Raises:
            TypeError, ValueError: ``steps`` is not a whole number >= 1.
        """
        steps = whole_number(steps, "steps", 1)
        log_at = set(log_at)
        rows: list[dict] = []
        if self.step == 0 and 0 in log_at:
            rows += self._log(probes)
        bar = progress_bar(steps * self.k, f"{desc} ({self.k} models)", progress)
        for _ in range(steps):
            self.train_step()
            if self.step in log_at:
                rows += self._log(probes)
            bar.update(self.k)
        bar.close()
        frame = pd.DataFrame(rows)
        if frame.empty:
            return frame
        diverged_at = self.diverged_at.cpu().numpy()
        frame = frame.merge(self.member_table(), on="member", how="left")
        at = diverged_at[frame["member"].to_numpy()]
        frame["diverged"] = (at >= 0) & (at <= frame["step"].to_numpy())
        return frame

    def _log(self, probes: Sequence[Probe]) -> list[dict]:
        loss = self.last_loss.cpu().tolist() if self.step else [float("nan")] * self.k
        rows = [
            {"step": self.step, "member": i, "metric": "loss", "value": v}
            for i, v in enumerate(loss)
        ]
        for probe in probes:
            rows += [{"step": self.step, **row} for row in probe(self, self.step)]
        return rows

    def loss_trace(self, steps: int) -> pd.DataFrame:
        """Train ``steps`` more steps recording every member's minibatch loss and the loss
        ratio to its previous step (the quantity whose blow-up defines divergence).

        Returns:
            Columns ``step, member, loss, loss_ratio, diverged``.
        """
        arguments.check_whole_number(steps, "steps", low=0)
        history = torch.empty(steps, self.k, device=self.device)
        start = self.step
        for t in range(steps):
            history[t] = self.train_step()
        losses = history.cpu().numpy()
        ratio = np.full_like(losses, np.nan)
        ratio[1:] = losses[1:] / losses[:-1]
        step = np.arange(start + 1, start + steps + 1)
        diverged_at = self.diverged_at.cpu().numpy()
        frame = pd.DataFrame(
            {
                "step": np.repeat(step, self.k),
                "member": np.tile(np.arange(self.k), steps),
                "loss": losses.reshape(-1),
                "loss_ratio": ratio.reshape(-1),
            }
        )
        at = diverged_at[frame["member"].to_numpy()]
        frame["diverged"] = (at >= 0) & (at <= frame["step"].to_numpy())
        return frame
