"""Every dataset the experiments can train on, by name, and the input size it implies.

:func:`load` takes ``"mnist"`` and ``"fashion-mnist"`` (28x28 greyscale,
:mod:`bnlib.data`) and ``"cifar10"`` (32x32 colour, :mod:`bnlib.cifar`), and
:func:`input_config` gives the model arguments that fit the loaded images, so an
experiment written for Fashion-MNIST runs unchanged on CIFAR-10 where a reader has it.

The experiments of the chapter "Large learning rates" (:mod:`bnlib.experiments.large_steps`,
:mod:`bnlib.experiments.gradient_noise`, :mod:`bnlib.experiments.learning_rate`) load
through here. The others still call :func:`bnlib.data.load` (the 28x28 datasets only):
moving them changes their code hash, and with it their committed full results, so they
move when those results are next recomputed.
"""

from __future__ import annotations

import torch

from bnlib import cifar, data
from bnlib.data import Split

__all__ = ["CIFAR_NAMES", "NAMES", "input_config", "load"]

#: The names :func:`load` takes for CIFAR-10.
CIFAR_NAMES = ("cifar10", "cifar-10", "cifar_10")

#: The dataset names :func:`load` takes (aliases aside).
NAMES = (*sorted(data.DATASETS), "cifar10")


def load(
    name: str,
    split: str = "train",
    device: str | torch.device | None = "cpu",
    *,
    download: bool | None = None,
) -> Split:
    """Load a whole split of dataset ``name`` as normalized tensors on ``device``.

    Args:
        name: one of :data:`NAMES` (case and ``-``/``_`` as :func:`bnlib.data.load`
            takes them; ``"cifar-10"`` also works).
        split: ``"train"`` or ``"test"``.
        device: where the tensors live; ``None`` picks the best device.
        download: fetch missing files with torchvision; ``None`` reads ``BNLIB_DOWNLOAD``.

    Returns:
        ``Split(x, y)``: ``x`` of shape ``(N, 1, 28, 28)`` for MNIST and Fashion-MNIST,
        ``(N, 3, 32, 32)`` for CIFAR-10, float32 and normalized; ``y`` of shape ``(N,)``,
        int64.

    Raises:
        TypeError: the name is not a string.
        ValueError: unknown dataset name or split; the message lists the names.
        DatasetNotFoundError, CorruptDatasetError: as :func:`bnlib.data.load`.
    """
    if isinstance(name, str) and name.lower() in CIFAR_NAMES:
        return cifar.load(split, device, download=download)
    try:
        return data.load(name, split, device, download=download)
    except ValueError as unknown:
        if "unknown dataset" not in str(unknown):
            raise
        raise ValueError(
            f"unknown dataset {name!r}: use one of {', '.join(NAMES)} "
            "(CIFAR-10 from BNLIB_DATA/cifar-10-batches-py, downloaded where allowed)"
        ) from None


def input_config(architecture: str, x: torch.Tensor) -> dict[str, int]:
    """The model arguments of :func:`bnlib.models.build_model` that fit inputs ``x``.

    Args:
        architecture: ``"mlp"``, ``"resnet"`` or ``"vgg"``.
        x: a batch of images, ``(N, C, H, W)``.

    Returns:
        ``{"in_features": C * H * W}`` for an MLP (it flattens its input),
        ``{"in_channels": C}`` for the convolutional networks (they pool globally, so
        any image size works).
    """
    if x.dim() != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(x.shape)}")
    if architecture == "mlp":
        return {"in_features": int(x[0].numel())}
    if architecture in ("resnet", "vgg"):
        return {"in_channels": int(x.shape[1])}
    raise ValueError(f"unknown architecture {architecture!r}: use 'mlp', 'resnet' or 'vgg'")
