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


def _copy_raw(data_root, tmp_path, folder: str = "MNIST"):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for source in (data_root / folder / "raw").glob("*-ubyte"):  # not the .gz archives
        shutil.copy(source, raw / source.name)
    return raw


def test_the_published_files_pass_and_a_changed_one_is_named(tmp_path, monkeypatch, data_root):
    monkeypatch.setenv("BNLIB_DATA", str(data_root))
    data.verify_files()  # the shared data are the published files
    raw = _copy_raw(data_root, tmp_path)
    images = raw / "train-images-idx3-ubyte"
    header = images.read_bytes()[:16]  # a valid header, random pixels: torchvision loads it
    noise = torch.randint(0, 256, (60_000 * 28 * 28,), dtype=torch.uint8).numpy().tobytes()
    images.write_bytes(header + noise)
    monkeypatch.setenv("BNLIB_DATA", str(tmp_path))
    assert data.load("mnist", "train", download=False).x.shape == (60_000, 1, 28, 28)
    with pytest.raises(data.CorruptDatasetError, match="train-images-idx3-ubyte is not the"):
        data.verify_files(["mnist"])


def test_another_datasets_files_are_not_taken_for_mnist(tmp_path, monkeypatch, data_root):
    _copy_raw(data_root, tmp_path, folder="FashionMNIST")  # Fashion-MNIST in MNIST/raw
    monkeypatch.setenv("BNLIB_DATA", str(tmp_path))
    with pytest.raises(data.CorruptDatasetError, match="not the published mnist file"):
        data.verify_files()


def test_the_checksums_are_of_the_archives_torchvision_lists(data_root):
    import gzip
    import hashlib

    import torchvision

    checked = 0
    for key, spec in data.DATASETS.items():
        resources = dict(getattr(torchvision.datasets, spec.torchvision_class).resources)
        for archive, archive_md5 in resources.items():
            path = data_root / spec.folder / "raw" / archive
            if not path.is_file():
                continue
            packed = path.read_bytes()
            assert hashlib.md5(packed).hexdigest() == archive_md5, path
            inside = hashlib.md5(gzip.decompress(packed)).hexdigest()
            assert inside == data.FILE_MD5[key][archive.removesuffix(".gz")], path
            checked += 1
    if not checked:
        pytest.skip("no archives under the data root to check the table against")
