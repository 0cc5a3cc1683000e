"""Datasets as whole tensors on the device, ready for fast batching.

The book's experiments train small networks for many steps; a DataLoader that decodes
and collates every minibatch would dominate their cost. So a split is loaded once,
normalized, and kept as two tensors: ``x`` of shape ``(N, 1, 28, 28)`` (float32) and
``y`` of shape ``(N,)`` (int64). A minibatch is then one indexing operation.

The dataset root comes from the environment variable ``BNLIB_DATA`` (default ``./data``)
and uses torchvision's layout (``<root>/MNIST/raw/...``). Missing files are downloaded by
torchvision when a network is reachable.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch

__all__ = [
    "DATASETS",
    "CorruptDatasetError",
    "DatasetNotFoundError",
    "Split",
    "data_root",
    "FILE_MD5",
    "load",
    "verify_files",
    "normalization",
    "to_pixels",
    "from_pixels",
]


class _Spec(NamedTuple):
    folder: str  # torchvision's folder name under the root
    torchvision_class: str
    mean: float  # pixel mean of the training split, pixels scaled to [0, 1]
    std: float  # pixel standard deviation of the training split
    sizes: dict[str, int]
    classes: int


#: The datasets bnlib can load, by the name :func:`load` takes.
DATASETS: dict[str, _Spec] = {
    "mnist": _Spec("MNIST", "MNIST", 0.1307, 0.3081, {"train": 60_000, "test": 10_000}, 10),
    "fashion-mnist": _Spec(
        "FashionMNIST", "FashionMNIST", 0.2860, 0.3530, {"train": 60_000, "test": 10_000}, 10
    ),
}
_ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist"}


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not under the data root, and could not be downloaded."""


class CorruptDatasetError(RuntimeError):
    """The dataset's files exist but cannot be read, or hold the wrong number of items."""


class Split(NamedTuple):
    """One split of a dataset: inputs ``x`` (N, 1, 28, 28) float32, labels ``y`` (N,) int64."""

    x: torch.Tensor
    y: torch.Tensor


def data_root() -> Path:
    """The dataset root: ``$BNLIB_DATA`` if set, else ``./data`` (relative to the cwd)."""
    return Path(os.environ.get("BNLIB_DATA") or "data").expanduser()


def _spec(name: str) -> tuple[str, _Spec]:
    if not isinstance(name, str):
        raise TypeError(
            f"the dataset name must be a string, got {name!r} ({type(name).__name__}): "
            f"use one of {', '.join(map(repr, sorted(DATASETS)))}, e.g. load('mnist')"
        )
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in DATASETS:
        raise ValueError(
            f"unknown dataset {name!r}: bnlib.data knows {', '.join(sorted(DATASETS))}. "
            "(CIFAR-10 loads through bnlib.datasets, which the experiments of 'Large "
            "learning rates' use.)"
        )
    return key, DATASETS[key]


def normalization(name: str) -> tuple[float, float]:
    """``(mean, std)`` of the training split's pixels in [0, 1], used to normalize inputs."""
    return _spec(name)[1][2:4]


def to_pixels(x: torch.Tensor, name: str) -> torch.Tensor:
    """Undo :func:`load`'s normalization: pixel intensities in [0, 1]."""
    mean, std = normalization(name)
    return x * std + mean


def from_pixels(pixels: torch.Tensor, name: str) -> torch.Tensor:
    """Normalize pixel intensities in [0, 1] the way :func:`load` does."""
    mean, std = normalization(name)
    return (pixels - mean) / std


def _download_allowed(download: bool | None) -> bool:
    if download is not None:
        return download
    return os.environ.get("BNLIB_DOWNLOAD", "1").lower() not in ("0", "false", "no")


@functools.lru_cache(maxsize=8)
def _load_cpu(key: str, split: str, root: str, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    import torchvision

    spec = DATASETS[key]
    cls = getattr(torchvision.datasets, spec.torchvision_class)
    raw = Path(root) / spec.folder / "raw"
    try:
        dataset = cls(root, train=(split == "train"), download=False)
    except RuntimeError as missing:
        if "not found" not in str(missing).lower():
            raise CorruptDatasetError(
                f"the {key} files under {raw} cannot be read ({missing}). Fix: delete {raw} "
                "and download again, or restore the original files."
            ) from missing
        if not download:
            raise DatasetNotFoundError(
                f"{key} ({split}) is not under {raw} and downloading is off. Fix: set "
                f"BNLIB_DATA to a folder holding {spec.folder}/raw/ in torchvision's layout, "
                "or allow the download (BNLIB_DOWNLOAD=1) on a machine with internet."
            ) from missing
        try:
            dataset = cls(root, train=(split == "train"), download=True)
        except Exception as failure:  # urllib, socket and HTTP errors alike
            raise DatasetNotFoundError(
                f"{key} ({split}) is not under {raw}, and downloading it failed "
                f"({type(failure).__name__}: {failure}). Fix: set BNLIB_DATA to a folder "
                f"holding {spec.folder}/raw/ in torchvision's layout (the files "
                "torchvision downloads), or run once on a machine with internet."
            ) from failure
    except Exception as unreadable:
        raise CorruptDatasetError(
            f"the {key} files under {raw} cannot be read ({type(unreadable).__name__}: "
            f"{unreadable}). Fix: delete {raw} and download again, or restore the files "
            "(their MD5 checksums are those torchvision lists)."
        ) from unreadable
    images, labels = dataset.data, dataset.targets
    expected = spec.sizes[split]
    if (
        images.shape != (expected, 28, 28)
        or labels.shape != (expected,)
        or int(labels.min()) < 0
        or int(labels.max()) >= spec.classes
    ):
        raise CorruptDatasetError(
            f"the {key} {split} files under {raw} hold images of shape {tuple(images.shape)} "
            f"and labels of shape {tuple(labels.shape)}; expected ({expected}, 28, 28) and "
            f"({expected},) with labels 0..{spec.classes - 1}. Fix: delete {raw} and "
            "download again, or restore the original files."
        )
    pixels = images.to(torch.float32).div_(255.0).unsqueeze(1)
    return from_pixels(pixels, key), labels.to(torch.int64)


#: MD5 of each dataset's files as :func:`load` reads them (torchvision's layout, the
#: archives unpacked). torchvision lists the MD5 of the archives (``MNIST.resources``);
#: these are of the files inside them, computed from archives that match that list
#: (``tests/test_data.py`` checks both where the archives are present).
FILE_MD5: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}

_VERIFIED: set[tuple[str, int, int]] = set()


def verify_files(names: Sequence[str] | None = None) -> None:
    """Check that the dataset files under :func:`data_root` are the published ones.

    A file with a valid header but other contents (random pixels, another dataset's
    images copied into this dataset's folder) loads without error and trains; only its
    checksum tells. Files that are absent are not checked (:func:`load` says what is
    missing). Each file is read once per process while its size and time are unchanged.

    Args:
        names: the datasets (default: every one in :data:`DATASETS`).

    Raises:
        CorruptDatasetError: a file's MD5 is not the published one; the message names the
            file and the fix.
    """
    root = data_root()
    for key in names or DATASETS:
        key, spec = _spec(key)
        for filename, expected in FILE_MD5[key].items():
            path = root / spec.folder / "raw" / filename
            if not path.is_file():
                continue
            stat = path.stat()
            mark = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
            if mark in _VERIFIED:
                continue
            if hashlib.md5(path.read_bytes()).hexdigest() != expected:
                raise CorruptDatasetError(
                    f"{path} is not the published {key} file (its MD5 checksum differs): "
                    "it was changed, or holds another dataset. Fix: delete "
                    f"{path.parent} and download again, or restore the original files"
                )
            _VERIFIED.add(mark)


def load(
    name: str,
    split: str = "train",
    device: str | torch.device | None = "cpu",
    *,
    download: bool | None = None,
) -> Split:
    """Load a whole split as normalized tensors on ``device``.

    Args:
        name: ``"mnist"`` or ``"fashion-mnist"``.
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000 images).
        device: where the tensors live; ``None`` picks the best device (see
            :func:`bnlib.device.pick_device`).
        download: fetch missing files with torchvision; ``None`` reads ``BNLIB_DOWNLOAD``
            (on unless it is ``0``).

    Returns:
        ``Split(x, y)``: ``x`` of shape ``(N, 1, 28, 28)``, float32, normalized with the
        training split's pixel mean and standard deviation (so the training split has
        mean about 0 and standard deviation about 1); ``y`` of shape ``(N,)``, int64.
        The tensors are the caller's own: changing them changes no later load.

    Raises:
        TypeError: the name is not a string (``None``, say); the message lists the names.
        ValueError: unknown dataset name or split.
        DatasetNotFoundError: files missing and no download possible.
        CorruptDatasetError: files present but unreadable or of the wrong size.
    """
    from bnlib.device import pick_device

    key, _ = _spec(name)
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}: use 'train' or 'test'")
    x, y = _load_cpu(key, split, str(data_root().resolve()), _download_allowed(download))
    dev = pick_device(device)
    if dev.type == "cpu":  # the cache must stay unchanged whatever the caller does
        return Split(x.clone(), y.clone())
    return Split(x.to(dev), y.to(dev))
