"""bnlib.models: shapes, normalization choice, initialization schemes, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bnlib.models import MLP, initialize, norm_layer, parameter_count
from bnlib.norm import BatchNorm


@pytest.mark.parametrize("norm", ["none", "bnlib", "torch"])
def test_mlp_shapes_and_norm_layers(norm):
    model = MLP(norm=norm)
    assert model(torch.randn(5, 1, 28, 28)).shape == (5, 10)
    expected = {"none": nn.Identity, "bnlib": BatchNorm, "torch": nn.BatchNorm1d}[norm]
    assert all(isinstance(m, expected) for m in model.norms)
    assert all((lin.bias is None) == (norm != "none") for lin in model.linears)


def test_bnlib_and_torch_bn_mlps_compute_the_same_function():
    torch.manual_seed(0)
    ours = MLP(norm="bnlib", activation="tanh")
    theirs = MLP(norm="torch", activation="tanh")
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(32, 784)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scheme", ["he", "xavier", "orthogonal", "gaussian", "default"])
def test_initialization_scales(scheme):
    torch.manual_seed(0)
    model = MLP(hidden=(400, 400), init=scheme, gain=2.0)
    w = model.linears[1].weight
    expected = {
        "he": 2.0 / 400**0.5,
        "xavier": 2.0 * (2 / 800) ** 0.5,
        "gaussian": 2.0,
        "orthogonal": None,
        "default": 2.0 / (3 * 400) ** 0.5,
    }[scheme]
    if scheme == "orthogonal":
        torch.testing.assert_close(w @ w.T / 4.0, torch.eye(400), atol=1e-4, rtol=0)
    else:
        assert w.std().item() == pytest.approx(expected, rel=0.05)


def test_bad_choices_are_clear_errors():
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        MLP(activation="swish")
    with pytest.raises(ValueError, match="unknown normalization 'layer'"):
        norm_layer("layer", 4)
    with pytest.raises(ValueError, match="unknown initialization 'lecun'"):
        initialize(MLP(), "lecun")


def test_parameter_count_of_the_paper_mlp():
    assert parameter_count(MLP()) == 784 * 100 + 100 + 2 * (100 * 100 + 100) + 100 * 10 + 10
