"""bnlib.device: device choice, seeding, deterministic mode."""

from __future__ import annotations

import pytest
import torch

from bnlib.device import deterministic, pick_device, seed_everything


def test_pick_device_defaults_and_explicit(monkeypatch):
    monkeypatch.delenv("BNLIB_DEVICE", raising=False)
    mps = getattr(torch.backends, "mps", None)
    if torch.cuda.is_available():
        expected = "cuda"
    elif mps is not None and mps.is_available():
        expected = "mps"
    else:
        expected = "cpu"  # a CPU-only machine
    assert pick_device(None).type == expected
    assert pick_device("auto").type == expected
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(torch.device("cpu")).type == "cpu"
    monkeypatch.setenv("BNLIB_DEVICE", "cpu")  # forces the CPU whatever is available
    assert pick_device(None) == torch.device("cpu")
    assert pick_device("auto") == torch.device("cpu")


def test_environment_overrides_auto(monkeypatch):
    monkeypatch.setenv("BNLIB_DEVICE", "cpu")
    assert pick_device(None) == torch.device("cpu")


def test_unknown_or_unavailable_device_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            pick_device("cuda")


def test_seed_everything_reproduces_draws():
    seed_everything(3)
    a = torch.randn(5)
    g = seed_everything(3)
    b = torch.randn(5)
    torch.testing.assert_close(a, b)
    assert torch.equal(torch.randn(2, generator=g), torch.randn(2, generator=seed_everything(3)))


def test_deterministic_mode_restores_state():
    before = torch.are_deterministic_algorithms_enabled()
    with deterministic():
        assert torch.are_deterministic_algorithms_enabled()
    assert torch.are_deterministic_algorithms_enabled() == before
