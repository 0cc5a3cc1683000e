"""bnlib.residual: the fully connected residual network and SkipInit."""

from __future__ import annotations

import pytest
import torch

from bnlib.residual import ResidualMLP


def test_skipinit_blocks_start_as_the_identity():
    """With alpha = 0 every block returns its input, so the network is its stem and head."""
    torch.manual_seed(0)
    model = ResidualMLP(width=16, blocks=3, norm="none", skipinit=True).double()
    x = torch.randn(8, 1, 28, 28, dtype=torch.float64)
    h = model.stem(x.flatten(1))
    for block in model.blocks:
        torch.testing.assert_close(block(h), h, rtol=0, atol=0)
    expected = model.head(model.head_activation(model.head_norm(h)))
    torch.testing.assert_close(model(x), expected, rtol=0, atol=0)
    assert all(isinstance(b.alpha, torch.nn.Parameter) for b in model.blocks)


def test_skipinit_scalars_learn():
    torch.manual_seed(0)
    model = ResidualMLP(width=16, blocks=2, skipinit=True)
    x, y = torch.randn(32, 784), torch.randint(0, 10, (32,))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    assert any(b.alpha.grad.abs() > 0 for b in model.blocks)


@pytest.mark.parametrize("residual", [True, False])
def test_blocks_add_or_replace_the_stream(residual):
    torch.manual_seed(0)
    model = ResidualMLP(width=8, blocks=1, norm="torch", residual=residual).double()
    block = model.blocks[0]
    assert "alpha" not in dict(model.named_parameters())  # a fixed 1 without SkipInit
    h = torch.randn(10, 8, dtype=torch.float64)
    expected = block.branch(h) + (h if residual else 0)
    torch.testing.assert_close(block(h), expected)


def test_bad_configuration_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="blocks must be a whole number"):
        ResidualMLP(blocks=-1)
    with pytest.raises(ValueError, match="unknown activation"):
        ResidualMLP(activation="swish")
    with pytest.raises(ValueError, match="unknown normalization"):
        ResidualMLP(norm="layer")


def test_fixup_starts_at_zero_output_and_learns_through_its_zero_layers():
    import math

    from bnlib.residual import FixupMLP

    torch.manual_seed(0)
    model = FixupMLP(width=64, blocks=16)
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    assert torch.equal(model(x), torch.zeros(32, 10))  # zero classifier, identity blocks
    block = model.blocks[0]
    assert torch.all(block.linear2.weight == 0) and block.scale.item() == 1.0
    std = block.linear1.weight.double().std().item()
    assert std == pytest.approx(math.sqrt(2 / 64) / math.sqrt(16), rel=0.1)  # He x L^-1/2
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    assert model(x).abs().max() > 0
    assert block.linear2.weight.abs().max() > 0  # reached once the classifier has moved
