"""bnlib.cifar and bnlib.datasets on files in torchvision's CIFAR-10 layout.

CIFAR-10 is not on the machines that build the book, so these tests write a dataset of
the real layout and size (random pixels, labels 0..9) and load it the way a reader's copy
is loaded.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from bnlib import cifar, data, datasets


def _write_batch(path, images: np.ndarray, labels: list[int]) -> None:
    with path.open("wb") as file:
        pickle.dump({"batch_label": path.name, "data": images, "labels": labels}, file)


def _close(values: torch.Tensor, expected: float, atol: float) -> None:
    torch.testing.assert_close(values, torch.full_like(values, expected), atol=atol, rtol=0)


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    """A folder holding ``cifar-10-batches-py/`` with 50,000 + 10,000 random images; the
    first training image is all red (255, 0, 0) so the channel order can be checked."""
    root = tmp_path_factory.mktemp("cifar")
    folder = root / cifar.FOLDER
    folder.mkdir()
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        images = rng.integers(0, 256, size=(10_000, 3072), dtype=np.uint8)
        if i == 0:
            images[0] = np.repeat(np.array([255, 0, 0], dtype=np.uint8), 1024)
        labels = [int(v) for v in rng.integers(0, 10, size=10_000)]
        _write_batch(folder / name, images, labels)
    return root


@pytest.fixture
def cifar_env(cifar_root, monkeypatch):
    monkeypatch.setenv("BNLIB_DATA", str(cifar_root))
    monkeypatch.setenv("BNLIB_DOWNLOAD", "0")
    return cifar_root


@pytest.mark.parametrize(("split", "n"), [("train", 50_000), ("test", 10_000)])
def test_shapes_types_and_normalization(cifar_env, split, n):
    x, y = datasets.load("CIFAR-10", split)
    assert x.shape == (n, 3, 32, 32) and x.dtype == torch.float32
    assert y.shape == (n,) and y.dtype == torch.int64 and y.min() >= 0 and y.max() <= 9
    if split == "train":  # each channel of the training split: mean 0, std 1
        per_channel = x.transpose(0, 1).reshape(3, -1).double()
        torch.testing.assert_close(
            per_channel.mean(1), torch.zeros(3, dtype=torch.float64), atol=1e-5, rtol=0
        )
        torch.testing.assert_close(
            per_channel.std(1), torch.ones(3, dtype=torch.float64), atol=1e-5, rtol=0
        )


def test_channel_order_and_statistics(cifar_env):
    mean, std = cifar.channel_statistics()
    assert mean.shape == (3,) and std.shape == (3,)
    # uniform random bytes: mean about 127.5 / 255, std about 0.289 (uniform on [0, 1])
    torch.testing.assert_close(mean, torch.full((3,), 0.5, dtype=torch.float64), atol=2e-3, rtol=0)
    torch.testing.assert_close(
        std, torch.full((3,), 0.2898, dtype=torch.float64), atol=2e-3, rtol=0
    )
    x, _ = cifar.load("train")
    pixels = x[0] * std.view(3, 1, 1).float() + mean.view(3, 1, 1).float()  # the red image
    torch.testing.assert_close(pixels[0], torch.ones(32, 32), atol=1e-5, rtol=0)
    torch.testing.assert_close(pixels[1:], torch.zeros(2, 32, 32), atol=1e-5, rtol=0)


def test_loads_are_independent_copies(cifar_env):
    x1, y1 = cifar.load("test")
    x1.zero_()
    y1.zero_()
    x2, y2 = cifar.load("test")
    assert x2.abs().sum() > 0 and y2.sum() > 0


def test_input_config_fits_the_models(cifar_env):
    from bnlib.models import build_model

    x = cifar.load("test").x[:4]
    for architecture, extra in [("mlp", {"hidden": [8]}), ("resnet", {"depth": 8}), ("vgg", {})]:
        shape = datasets.input_config(architecture, x)
        model = build_model(architecture, **shape, **extra)
        assert model(x).shape == (4, 10)
    assert datasets.input_config("mlp", x) == {"in_features": 3072}
    assert datasets.input_config("resnet", torch.zeros(2, 1, 28, 28)) == {"in_channels": 1}
    assert datasets.input_config("mlp", torch.zeros(2, 1, 28, 28)) == {"in_features": 784}
    with pytest.raises(ValueError, match="unknown architecture"):
        datasets.input_config("transformer", x)


def test_missing_files_name_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("BNLIB_DATA", str(tmp_path))
    with pytest.raises(data.DatasetNotFoundError, match="cifar-10-batches-py.*BNLIB_DATA"):
        cifar.load("test", download=False)


def test_damaged_files_name_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("BNLIB_DATA", str(tmp_path))
    folder = tmp_path / cifar.FOLDER
    folder.mkdir()
    (folder / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(data.CorruptDatasetError, match="cannot be read.*download again"):
        cifar.load("test", download=False)
    _write_batch(folder / "test_batch", np.zeros((10, 3072), dtype=np.uint8), [0] * 10)
    cifar._pixels.cache_clear()
    with pytest.raises(data.CorruptDatasetError, match="hold 10 images.*expected 10000"):
        cifar.load("test", download=False)
    _write_batch(folder / "test_batch", np.zeros((10, 100), dtype=np.uint8), [0] * 10)
    with pytest.raises(data.CorruptDatasetError, match=r"expected \(n, 3072\) uint8"):
        cifar.load("test", download=False)


def test_names_and_unknown_datasets():
    assert datasets.load("Fashion_MNIST", "test").x.shape == (10_000, 1, 28, 28)
    with pytest.raises(ValueError, match="unknown dataset 'cifar100'.*cifar10"):
        datasets.load("cifar100")
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        cifar.load("valid")


@pytest.mark.parametrize(
    "name", ["relative_loss", "activation_growth", "activations_along_step", "gradients_at_init"]
)
def test_single_step_experiments_take_cifar10(cifar_env, name):
    from bnlib import experiments

    experiment = experiments.get(name)
    config = {**experiment.profiles["smoke"], "dataset": "cifar10"}
    frame = experiment.function(**config, device="cpu")
    assert len(frame) > 0


def test_gradient_noise_takes_cifar10(cifar_env):
    from bnlib.experiments.gradient_noise import gradient_noise

    frame = gradient_noise(batch_sizes=[8, 32], draws=2, checkpoints=[0, 2], dataset="cifar10")
    assert (frame["variance"] > 0).all()


@pytest.mark.parametrize("architecture", ["mlp", "resnet"])
def test_the_learning_rate_sweep_takes_cifar10(cifar_env, architecture):
    from bnlib.experiments.learning_rate import lr_sweep

    config = {"hidden": [16]} if architecture == "mlp" else {"depth": 8, "width": 4}
    frame = lr_sweep(
        architecture=architecture,
        config=config,
        dataset="cifar10",
        lr_count=2,
        steps=2,
        batch_size=16,
        train_examples=64,
        device="cpu",
    )
    assert len(frame) == 4 and frame["test_accuracy"].between(0, 1).all()
