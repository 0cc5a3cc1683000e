"""bnlib.setups: the papers' networks, built as the papers and reference codes build them."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bnlib.models import ResNet
from bnlib.setups import (
    HE_RELU_GAIN,
    RESNET_INITS,
    ProjectionBlock,
    ResNetRecipe,
    cifar_resnet,
    deep_linear_network,
)


def _built(init, depth=20, norm="none", seed=0):
    torch.manual_seed(seed)
    return cifar_resnet(depth, norm=norm, init=init)


def test_reference_he_draws_every_convolution_from_its_fan_out():
    model = _built("he")
    conv = model.blocks[-1].conv2  # 64 x 64 x 3 x 3: 36,864 draws
    assert conv.weight.double().var().item() == pytest.approx(2 / (9 * 64), rel=0.05)
    # the 1-channel stem: fan-out 9 x 16 = 144, fan-in 9 (16 times the variance)
    stem = model.stem.weight.double().var().item()
    assert abs(math.log(stem / (2 / 144))) < abs(math.log(stem / (2 / 9)))
    head = model.head  # PyTorch's default: uniform within 1/sqrt(64), bias too
    assert head.weight.abs().max() <= 1 / 8 and head.bias.abs().max() > 0


def test_fan_in_recipe_is_the_networks_own_he_initialization_draw_for_draw():
    torch.manual_seed(3)
    own = ResNet(depth=20, norm="none", init="he", gain=HE_RELU_GAIN)
    recipe = _built("he-fan-in", seed=3)
    for (name, a), (_, b) in zip(own.state_dict().items(), recipe.state_dict().items()):
        assert torch.equal(a, b), name
    assert torch.all(recipe.head.bias == 0)


def test_shortcut_b_projects_where_a_block_changes_shape_and_conv_bias_adds_biases():
    a = _built(ResNetRecipe(), norm="torch")
    b = _built(ResNetRecipe(shortcut="B", conv_bias=True), norm="torch")
    projected = [m for m in b.blocks if isinstance(m, ProjectionBlock)]
    assert len(projected) == 2  # the first block of stages 2 and 3
    convs = [m for m in b.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.bias is not None for c in convs)
    extra = sum(p.numel() for p in b.parameters()) - sum(p.numel() for p in a.parameters())
    projections = 16 * 32 + 32 * 64 + 2 * (32 + 64)  # 1x1 weights and their BN
    assert extra == projections + sum(c.out_channels for c in convs)
    assert b(torch.randn(4, 1, 28, 28)).shape == (4, 10)


def test_a_projection_that_copies_channels_is_option_a():
    model = _built(ResNetRecipe(shortcut="B"))
    block = next(m for m in model.blocks if isinstance(m, ProjectionBlock))
    conv = block.project[0]  # 16 -> 32 channels, stride 2
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:16, :, 0, 0] = torch.eye(16)  # keep the old channels, zeros for the new
    x = torch.randn(2, 16, 28, 28)
    assert torch.allclose(block(x), block.block(x), atol=1e-5)  # the block's own shortcut: A


def test_cifar_resnet_refuses_unknown_recipes_by_name():
    with pytest.raises(ValueError, match="unknown initialization 'xavier'.*'he'"):
        cifar_resnet(20, norm="none", init="xavier")
    with pytest.raises(ValueError, match="shortcut must be one of"):
        cifar_resnet(20, norm="none", init=ResNetRecipe(shortcut="C"))
    assert set(RESNET_INITS) >= {"he", "he-fan-in", "default"}


def test_deep_linear_network_has_no_bias_anywhere():
    model = deep_linear_network()
    assert all("bias" not in name for name, _ in model.named_parameters())
