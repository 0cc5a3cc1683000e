"""Training over on-device tensors: no DataLoader, one indexing operation per minibatch.

:func:`train` trains one model with SGD and calls a logging function every ``log_every``
steps; a run whose loss becomes NaN or infinite is recorded as diverged, never a crash.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import torch
from torch import nn

from bnlib.data import Split

__all__ = ["accuracy", "batch_indices", "log_steps", "progress_bar", "train"]


def progress_bar(total: int, desc: str, enabled: bool | None = None):
    """A tqdm bar (the notebook widget in Jupyter), off when ``BNLIB_PROGRESS=0``.

    The book's build sets ``BNLIB_PROGRESS=0``: a bar's frames are noise in static HTML.
    """
    from tqdm.auto import tqdm

    if enabled is None:
        enabled = os.environ.get("BNLIB_PROGRESS", "1").lower() not in ("0", "false", "no")
    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)


def batch_indices(
    n: int, batch_size: int, steps: int, generator: torch.Generator, device: torch.device
) -> Iterator[torch.Tensor]:
    """Indices of ``steps`` minibatches: epochs of a fresh random permutation of ``range(n)``.

    A permutation's last partial batch is dropped, so every batch has ``batch_size`` items.

    Yields:
        int64 tensors of shape ``(batch_size,)`` on ``device``.
    """
    if not 0 < batch_size <= n:
        raise ValueError(f"batch_size must be in 1..{n} (the data size), got {batch_size}")
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


@torch.no_grad()
def accuracy(model: nn.Module, split: Split, batch_size: int = 10_000) -> float:
    """Fraction of ``split`` classified correctly, in the model's current train/eval mode.

    In train mode BN uses each batch's own statistics, so ``batch_size`` matters then.
    """
    correct = 0
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
