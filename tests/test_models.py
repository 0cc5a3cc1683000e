"""bnlib.models: shapes, normalization choice, initialization schemes, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bnlib.models import (
    MLP,
    ResNet,
    build_model,
    initialize,
    norm_layer,
    parameter_count,
    stack_members,
    unstack_member,
)
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


@pytest.mark.parametrize(
    ("architecture", "config", "shape"),
    [
        ("mlp", {"norm": "bnlib"}, (1, 28, 28)),
        ("mlp", {"norm": "none", "activation": "relu"}, (1, 28, 28)),
        ("resnet", {"depth": 8, "width": 4, "norm": "torch"}, (1, 28, 28)),
        ("resnet", {"depth": 8, "width": 4, "norm": "bnlib", "in_channels": 3}, (3, 32, 32)),
        ("vgg", {"widths": (4, 8), "norm": "torch"}, (1, 28, 28)),
    ],
)
def test_stack_computes_what_its_members_compute(architecture, config, shape):
    torch.manual_seed(0)
    singles = [build_model(architecture, **config) for _ in range(3)]
    stacked = stack_members(singles)
    x = torch.randn(6, 3, *shape)
    out = stacked(x)
    assert out.shape == (6, 3, 10)
    for k, model in enumerate(singles):
        torch.testing.assert_close(out[:, k], model(x[:, k]), rtol=1e-5, atol=1e-5)
        back = unstack_member(stacked, k)
        for (name, a), b in zip(back.state_dict().items(), model.state_dict().values()):
            torch.testing.assert_close(a, b, msg=name)  # running stats updated alike too


def test_resnet_depths_and_sizes():
    # He et al. 2016, Table 6: ResNet-20 has 0.27M parameters on CIFAR-10 (3 channels)
    assert parameter_count(ResNet(depth=20, in_channels=3)) == pytest.approx(0.27e6, rel=0.02)
    assert len(ResNet(depth=56).blocks) == 27
    with pytest.raises(ValueError, match="6n \\+ 2"):
        ResNet(depth=21)
    assert ResNet(depth=20)(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert ResNet(depth=20, in_channels=3)(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_stacked_input_shape_is_checked_and_mixed_stacks_refused():
    stacked = stack_members([MLP(), MLP()])
    with pytest.raises(ValueError, match="stack of 2 models takes input of shape"):
        stacked(torch.randn(4, 3, 1, 28, 28))
    with pytest.raises(ValueError, match="one architecture and config"):
        stack_members([MLP(), MLP(norm="torch")])
    with pytest.raises(ValueError, match="out of range"):
        unstack_member(stacked, 2)


@pytest.mark.parametrize(
    ("hidden", "error", "message"),
    [
        ((-1,), ValueError, r"hidden\[0\] must be a positive int, got -1"),
        ((100, 0), ValueError, r"hidden\[1\] must be a positive int, got 0"),
        ((2.5,), TypeError, r"hidden\[0\] must be a positive int, got 2\.5"),
        (100, TypeError, r"sequence of layer widths.*hidden=\(100,\)"),
        ("100", TypeError, "sequence of layer widths"),
    ],
)
def test_mlp_hidden_widths_must_be_positive_ints(hidden, error, message):
    with pytest.raises(error, match=message):
        MLP(hidden=hidden)
    with pytest.raises(error, match=message):
        build_model("mlp", hidden=hidden)


def test_mlp_with_one_hidden_layer_and_unknown_arguments():
    model = MLP(hidden=(100,), norm="bnlib")
    assert model(torch.randn(4, 1, 28, 28)).shape == (4, 10)
    assert model.linears[0].out_features == 100 and len(model.norms) == 1
    for units in [(100,), (-1,)]:  # an MLP's widths are 'hidden'; 'units' is no argument
        with pytest.raises(ValueError, match=r"'mlp' takes no argument 'units'.*hidden=\("):
            build_model("mlp", units=units)
    with pytest.raises(ValueError, match=r"'resnet' takes no argument 'hidden'.*depth"):
        build_model("resnet", hidden=(10,))


def test_convolutional_widths_must_be_positive_ints():
    with pytest.raises(ValueError, match="width must be a positive int, got 0"):
        ResNet(depth=8, width=0)
    with pytest.raises(ValueError, match=r"widths\[1\] must be a positive int, got -4"):
        build_model("vgg", widths=(8, -4))
    with pytest.raises(ValueError, match="members must be a positive int, got 0"):
        MLP(members=0)


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: MLP(gain="1"), TypeError, r"gain must be a number, got '1'.*gain=1\.0"),
        (lambda: MLP(gain=float("nan")), ValueError, "gain must be a number, got NaN"),
        (lambda: ResNet(depth=20.0), TypeError, r"depth must be a whole number.*depth=20"),
        (lambda: ResNet(depth=20, in_channels=0), ValueError, "in_channels must be >= 1, got 0"),
        (lambda: stack_members([]), ValueError, "models must hold at least one item"),
        (lambda: ResNet(depth=20, classes=0), ValueError, "classes must be >= 1, got 0"),
    ],
)
def test_bad_numbers_are_clear_errors(make, error, message):
    """Issue 32's cases: a raw TypeError from inside torch, a silent NaN network, a model
    with no input channels, an IndexError, before."""
    with pytest.raises(error, match=message):
        make()
