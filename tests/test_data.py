"""bnlib.data on the real MNIST and Fashion-MNIST files, and its error messages."""

from __future__ import annotations

import shutil

import pytest
import torch

from bnlib import data


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
@pytest.mark.parametrize(("split", "n"), [("train", 60_000), ("test", 10_000)])
def test_shapes_and_types(name, split, n):
    x, y = data.load(name, split)
    assert x.shape == (n, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (n,) and y.dtype == torch.int64
    assert set(y.unique().tolist()) == set(range(10))


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_training_split_is_normalized(name):
    x, _ = data.load(name, "train")
    assert abs(x.mean().item()) < 2e-3
    assert abs(x.std().item() - 1) < 2e-3
    pixels = data.to_pixels(x, name)
    assert pixels.min().item() == pytest.approx(0.0, abs=1e-6)
    assert pixels.max().item() == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(data.from_pixels(pixels, name), x)


def test_loads_are_independent_copies():
    x1, _ = data.load("mnist", "test")
    x1.zero_()
    x2, _ = data.load("mnist", "test")
    assert x2.abs().sum() > 0


def test_aliases_and_unknown_names():
    assert data.load("Fashion_MNIST", "test").x.shape[0] == 10_000
    with pytest.raises(ValueError, match="unknown dataset 'cifar100'.*mnist"):
        data.load("cifar100")
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        data.load("mnist", "valid")


def test_missing_files_without_download_name_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("BNLIB_DATA", str(tmp_path))
    with pytest.raises(data.DatasetNotFoundError, match="BNLIB_DATA") as info:
        data.load("mnist", "test", download=False)
    assert str(tmp_path) in str(info.value)


def test_download_switch_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("BNLIB_DATA", str(tmp_path))
    monkeypatch.setenv("BNLIB_DOWNLOAD", "0")
    with pytest.raises(data.DatasetNotFoundError, match="downloading is off"):
        data.load("fashion-mnist", "test")


def test_truncated_file_is_reported_as_corrupt(tmp_path, monkeypatch, data_root):
    raw = tmp_path / "MNIST" / "raw"
    shutil.copytree(data_root / "MNIST" / "raw", raw)
    images = raw / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:100_000])
    monkeypatch.setenv("BNLIB_DATA", str(tmp_path))
    with pytest.raises(data.CorruptDatasetError, match="delete"):
        data.load("mnist", "test", download=False)


def test_wrong_item_count_is_reported_as_corrupt(tmp_path, monkeypatch, data_root):
    """A file that parses but holds the other split's count (files swapped by hand)."""
    raw = tmp_path / "MNIST" / "raw"
    shutil.copytree(data_root / "MNIST" / "raw", raw)
    shutil.copy(raw / "train-labels-idx1-ubyte", raw / "t10k-labels-idx1-ubyte")
    monkeypatch.setenv("BNLIB_DATA", str(tmp_path))
    with pytest.raises(data.CorruptDatasetError, match="expected"):
        data.load("mnist", "test", download=False)


def test_a_name_that_is_not_a_string_lists_the_datasets():
    with pytest.raises(TypeError, match=r"dataset name must be a string, got None.*'mnist'"):
        data.load(None)
    with pytest.raises(TypeError, match="'fashion-mnist', 'mnist'"):
        data.load(1)
