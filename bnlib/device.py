"""Device choice, seeding and deterministic mode.

Every experiment takes a ``device`` argument; ``None`` means "the fastest one here":
CUDA, then Apple's MPS, then the CPU.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch

_VALID = ("cuda", "mps", "cpu")


def pick_device(preferred: str | torch.device | None = None) -> torch.device:
    """The device to compute on.

    Args:
        preferred: ``None`` (or ``"auto"``) picks cuda, then mps, then cpu; otherwise a
            device string such as ``"cpu"``, ``"cuda"`` or ``"cuda:1"``. The environment
            variable ``BNLIB_DEVICE`` overrides ``None``.

    Raises:
        ValueError: for an unknown device type, or one that is not available here.
    """
    if isinstance(preferred, torch.device):
        return preferred
    if preferred is None or preferred == "auto":
        preferred = os.environ.get("BNLIB_DEVICE") or None
    if preferred is None or preferred == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = preferred.split(":")[0]
    if kind not in _VALID:
        raise ValueError(
            f"unknown device {preferred!r}: use one of {', '.join(_VALID)} or None for automatic"
        )
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but no CUDA GPU is available: use 'cpu'")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' was asked for, but MPS is not available: use 'cpu'")
    return torch.device(preferred)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's, NumPy's and torch's global generators (all devices).

    Returns:
        A fresh CPU :class:`torch.Generator` seeded with ``seed``, for code that prefers an
        explicit generator to global state.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (the global generator is what we seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def deterministic(enabled: bool = True) -> Iterator[None]:
    """Context in which torch uses deterministic algorithms only (for tests).

    On the CPU, bnlib's results are reproducible without it; on a GPU some kernels
    (atomic adds in scatter and some convolutions' backward passes) are not, and this
    mode makes them so, or raises where no deterministic kernel exists.
    """
    previous = torch.are_deterministic_algorithms_enabled()
    previous_cudnn = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled and previous_cudnn[1]
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = previous_cudnn
