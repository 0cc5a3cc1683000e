"""Shared fixtures: the real datasets under BNLIB_DATA, and a clean torch state."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import pytest
import torch

matplotlib.use("Agg")  # figures are drawn, never shown, in tests

REPO = Path(__file__).resolve().parents[1]


def _data_root() -> Path:
    if os.environ.get("BNLIB_DATA"):
        return Path(os.environ["BNLIB_DATA"])
    for candidate in (REPO / "data", REPO.parent / "shared" / "data"):
        if (candidate / "MNIST" / "raw").is_dir():
            return candidate
    return REPO / "data"


@pytest.fixture(scope="session", autouse=True)
def data_root() -> Path:
    """The dataset root the tests read; BNLIB_DATA wins, then ./data, then ../shared/data."""
    root = _data_root()
    os.environ["BNLIB_DATA"] = str(root)
    return root


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield
