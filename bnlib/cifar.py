"""CIFAR-10 as whole tensors on the device, for readers who have it.

The book is built on machines without CIFAR-10, so its chapters use Fashion-MNIST; the
experiments that reproduce CIFAR-10 papers take ``dataset="cifar10"`` through
:func:`bnlib.datasets.load`, which comes here. A split is read once from torchvision's
layout, ``<BNLIB_DATA>/cifar-10-batches-py/`` (the Python version of the dataset:
``data_batch_1`` ... ``data_batch_5``, ``test_batch``), and kept as two tensors: ``x`` of
shape ``(N, 3, 32, 32)`` (float32, each colour channel normalized with the training
split's mean and standard deviation) and ``y`` of shape ``(N,)`` (int64, labels 0..9).

The batches are read here rather than through ``torchvision.datasets.CIFAR10``, which
would also verify their MD5 checksums: so the loader can be tested on files of the same
layout and size, and a damaged file is reported by what is wrong with it. torchvision
still downloads the files when they are missing and a network is allowed.
"""

from __future__ import annotations

import functools
import pickle
from pathlib import Path

import numpy as np
import torch

from bnlib.data import (
    CorruptDatasetError,
    DatasetNotFoundError,
    Split,
    _download_allowed,
    data_root,
)

__all__ = ["CLASSES", "FOLDER", "SIZES", "channel_statistics", "load"]

#: torchvision's folder for the Python version of CIFAR-10, under the data root.
FOLDER = "cifar-10-batches-py"

#: The files of each split, and the number of images in each split.
_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
SIZES = {"train": 50_000, "test": 10_000}

#: The ten classes, by label.
CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


def _download(root: Path, split: str) -> None:
    import torchvision

    try:
        torchvision.datasets.CIFAR10(str(root), train=(split == "train"), download=True)
    except Exception as failure:  # urllib, socket and HTTP errors alike
        raise DatasetNotFoundError(
            f"CIFAR-10 ({split}) is not under {root / FOLDER}, and downloading it failed "
            f"({type(failure).__name__}: {failure}). Fix: set BNLIB_DATA to a folder holding "
            f"{FOLDER}/ (the Python version of CIFAR-10, as torchvision downloads it), or run "
            "once on a machine with internet."
        ) from failure


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch: images ``(n, 3072)`` uint8 and labels ``(n,)``."""
    try:
        with path.open("rb") as file:
            batch = pickle.load(file, encoding="latin1")
        images = np.asarray(batch["data"])
        labels = np.asarray(batch["labels"])
    except Exception as unreadable:
        raise CorruptDatasetError(
            f"the CIFAR-10 file {path} cannot be read ({type(unreadable).__name__}: "
            f"{unreadable}). Fix: delete {path.parent} and download again, or restore the "
            "original files."
        ) from unreadable
    if (
        images.dtype != np.uint8
        or images.ndim != 2
        or images.shape[1] != 3 * 32 * 32
        or labels.shape != (images.shape[0],)
    ):
        raise CorruptDatasetError(
            f"the CIFAR-10 file {path} holds images of shape {images.shape} ({images.dtype}) "
            f"and labels of shape {labels.shape}; expected (n, 3072) uint8 and (n,). Fix: "
            f"delete {path.parent} and download again, or restore the original files."
        )
    return images, labels


@functools.lru_cache(maxsize=2)
def _pixels(split: str, root: str, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels in [0, 1], ``(N, 3, 32, 32)`` float32, and labels ``(N,)`` int64."""
    folder = Path(root) / FOLDER
    paths = [folder / name for name in _FILES[split]]
    if not all(path.is_file() for path in paths):
        if not download:
            raise DatasetNotFoundError(
                f"CIFAR-10 ({split}) is not under {folder} and downloading is off. Fix: set "
                f"BNLIB_DATA to a folder holding {FOLDER}/ (the Python version of CIFAR-10, "
                "as torchvision downloads it), or allow the download (BNLIB_DOWNLOAD=1) on a "
                "machine with internet."
            )
        _download(Path(root), split)
    batches = [_read_batch(path) for path in paths]
    images = np.concatenate([images for images, _ in batches])
    labels = np.concatenate([labels for _, labels in batches])
    expected = SIZES[split]
    if len(labels) != expected or labels.min() < 0 or labels.max() >= len(CLASSES):
        raise CorruptDatasetError(
            f"the CIFAR-10 {split} files under {folder} hold {len(labels)} images with labels "
            f"{labels.min()}..{labels.max()}; expected {expected} with labels 0..9. Fix: "
            f"delete {folder} and download again, or restore the original files."
        )
    # the rows are channel-major (1024 red, then green, then blue values, row by row)
    pixels = torch.from_numpy(images).reshape(-1, 3, 32, 32).to(torch.float32).div_(255.0)
    return pixels, torch.from_numpy(labels.astype(np.int64))


@functools.lru_cache(maxsize=2)
def _statistics(root: str, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    pixels, _ = _pixels("train", root, download)
    flat = pixels.transpose(0, 1).reshape(3, -1).to(torch.float64)
    return flat.mean(dim=1), flat.std(dim=1)


def channel_statistics(*, download: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each colour channel's pixel mean and standard deviation over the training split.

    Computed from the files (pixels scaled to [0, 1]), not copied from elsewhere.

    Returns:
        ``(mean, std)``, each of shape ``(3,)`` (red, green, blue), float64.
    """
    return _statistics(str(data_root().resolve()), _download_allowed(download))


def load(
    split: str = "train",
    device: str | torch.device | None = "cpu",
    *,
    download: bool | None = None,
) -> Split:
    """Load a whole split of CIFAR-10 as normalized tensors on ``device``.

    Args:
        split: ``"train"`` (50,000 images) or ``"test"`` (10,000 images).
        device: where the tensors live; ``None`` picks the best device.
        download: fetch missing files with torchvision; ``None`` reads ``BNLIB_DOWNLOAD``
            (on unless it is ``0``).

    Returns:
        ``Split(x, y)``: ``x`` of shape ``(N, 3, 32, 32)``, float32, each channel
        normalized with the training split's mean and standard deviation
        (:func:`channel_statistics`); ``y`` of shape ``(N,)``, int64. No augmentation.
        The tensors are the caller's own.

    Raises:
        ValueError: unknown split.
        DatasetNotFoundError: files missing and no download possible.
        CorruptDatasetError: files present but unreadable or of the wrong size.
    """
    from bnlib.device import pick_device

    if split not in SIZES:
        raise ValueError(f"unknown split {split!r}: use 'train' or 'test'")
    root, download = str(data_root().resolve()), _download_allowed(download)
    pixels, labels = _pixels(split, root, download)
    mean, std = _statistics(root, download)
    x = (pixels - mean.to(torch.float32).view(1, 3, 1, 1)) / std.to(torch.float32).view(1, 3, 1, 1)
    dev = pick_device(device)
    return Split(x.to(dev), labels.clone().to(dev))
