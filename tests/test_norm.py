"""bnlib.norm against torch.nn.BatchNorm1d/2d: outputs, gradients, running statistics."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from bnlib.norm import (
    BatchNorm,
    BatchNormFunction,
    batch_norm,
    batch_norm_forward,
    population_statistics,
)

SHAPES = [(2, 3), (5, 1), (64, 100), (2, 4, 1, 1), (3, 2, 5, 7), (1, 3, 2, 2), (8, 16, 4, 4)]
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}


def torch_bn(shape, **kwargs) -> nn.Module:
    cls = nn.BatchNorm1d if len(shape) == 2 else nn.BatchNorm2d
    return cls(shape[1], **kwargs)


def assert_close(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> None:
    # relative to the magnitude of the values compared, so 1e-5 means float32 precision
    scale = max(1.0, b.abs().max().item())
    err = (a - b).abs().max().item()
    assert err <= TOLERANCE[dtype] * scale, f"max abs error {err:.3e} (scale {scale:.2f})"


def pair(shape, dtype, **kwargs):
    ours = BatchNorm(shape[1], dtype=dtype, **kwargs)
    theirs = torch_bn(shape, dtype=dtype, **kwargs)
    if ours.affine:
        with torch.no_grad():
            ours.weight.uniform_(0.5, 2.0)
            ours.bias.uniform_(-1.0, 1.0)
            theirs.weight.copy_(ours.weight)
            theirs.bias.copy_(ours.bias)
    return ours, theirs


@pytest.mark.parametrize(
    ("shape", "dtype", "affine"),
    list(itertools.product(SHAPES, [torch.float64, torch.float32], [True, False])),
)
def test_training_matches_torch(shape, dtype, affine):
    ours, theirs = pair(shape, dtype, affine=affine)
    x = (torch.randn(shape, dtype=dtype) * 3 + 2).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    grad_out = torch.randn(shape, dtype=dtype)
    for _ in range(3):  # several steps, so the running averages are compared too
        y1, y2 = ours(x), theirs(x2)
        assert_close(y1, y2, dtype)
    (y1 * grad_out).sum().backward()
    (y2 * grad_out).sum().backward()
    assert_close(x.grad, x2.grad, dtype)
    if affine:
        assert_close(ours.weight.grad, theirs.weight.grad, dtype)
        assert_close(ours.bias.grad, theirs.bias.grad, dtype)
    assert_close(ours.running_mean, theirs.running_mean, dtype)
    assert_close(ours.running_var, theirs.running_var, dtype)
    assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked) == 3


@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_running_statistics_and_eval_match_torch(momentum, dtype):
    shape = (16, 6, 3, 3)
    ours, theirs = pair(shape, dtype, momentum=momentum)
    for step in range(5):
        x = torch.randn(shape, dtype=dtype) * (step + 1) + step
        ours(x), theirs(x)
    assert_close(ours.running_mean, theirs.running_mean, dtype)
    assert_close(ours.running_var, theirs.running_var, dtype)
    ours.eval(), theirs.eval()
    x = torch.randn(shape, dtype=dtype).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    assert_close(ours(x), theirs(x2), dtype)
    ours(x).square().sum().backward()
    theirs(x2).square().sum().backward()
    assert_close(x.grad, x2.grad, dtype)


def test_running_var_is_unbiased():
    bn = BatchNorm(1, momentum=1.0)  # running stats = last batch's
    x = torch.tensor([[1.0], [2.0], [3.0], [6.0]])
    bn(x)
    assert bn.running_mean.item() == pytest.approx(3.0)
    assert bn.running_var.item() == pytest.approx(x.var(unbiased=True).item())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_without_running_stats_uses_batch_stats_in_eval(dtype):
    shape = (10, 4)
    ours, theirs = pair(shape, dtype, track_running_stats=False)
    ours.eval(), theirs.eval()
    x = torch.randn(shape, dtype=dtype)
    assert_close(ours(x), theirs(x), dtype)
    assert ours.running_mean is None and ours.num_batches_tracked is None


def test_state_dict_is_interchangeable_with_torch():
    ours, theirs = BatchNorm(5), nn.BatchNorm1d(5)
    theirs(torch.randn(8, 5))
    ours.load_state_dict(theirs.state_dict())
    assert set(ours.state_dict()) == set(theirs.state_dict())
    ours.eval(), theirs.eval()
    x = torch.randn(3, 5)
    torch.testing.assert_close(ours(x), theirs(x))


def test_gradcheck_hand_written_backward():
    x = torch.randn(6, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    w = torch.rand(3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)

    def f(x, w, b):
        return BatchNormFunction.apply(x, w, b, 1e-5)[0]

    assert torch.autograd.gradcheck(f, (x, w, b), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 1, 1)])
def test_single_value_per_channel_is_refused_like_torch(shape):
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        torch_bn(shape)(torch.randn(shape))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        BatchNorm(shape[1])(torch.randn(shape))
    bn = BatchNorm(shape[1]).eval()  # in eval mode one example is fine
    assert bn(torch.randn(shape)).shape == shape


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="expected input of shape"):
        BatchNorm(3)(torch.randn(4, 5))
    with pytest.raises(ValueError, match="momentum"):
        BatchNorm(3, momentum=1.5)
    with pytest.raises(ValueError, match="num_features"):
        BatchNorm(0)


def test_identity_is_representable():
    """gamma = sqrt(var + eps), beta = mean undo the normalization (Section 3 of the paper)."""
    x = torch.randn(32, 7, dtype=torch.float64) * 4 + 3
    y, cache = batch_norm_forward(x, torch.sqrt(x.var(0, unbiased=False) + 1e-5), x.mean(0))
    torch.testing.assert_close(y, x, rtol=0, atol=1e-10)
    assert cache.mean.shape == (7,)


def test_population_statistics_average_over_batches():
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Linear(4, 3), BatchNorm(3, momentum=0.3), nn.ReLU(), nn.Linear(3, 2), nn.BatchNorm1d(2)
    )
    x = torch.randn(1000, 4) * 2 + 1
    model.eval()
    population_statistics(model, x, batch_size=100)
    assert not model.training
    assert model[1].momentum == 0.3
    pre = model[0](x)
    batches = pre.detach().split(100)
    expected_mean = torch.stack([b.mean(0) for b in batches]).mean(0)
    expected_var = torch.stack([b.var(0, unbiased=True) for b in batches]).mean(0)
    torch.testing.assert_close(model[1].running_mean, expected_mean)
    torch.testing.assert_close(model[1].running_var, expected_var)
    assert int(model[4].num_batches_tracked) == 10


@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.bool])
def test_integer_input_is_a_clear_type_error(dtype):
    x = torch.randint(0, 2, (4, 3)).to(dtype)
    message = rf"floating-point tensor, got dtype {dtype}.*x\.float\(\)"
    with pytest.raises(TypeError, match=message):
        batch_norm_forward(x, None, None)
    bn = BatchNorm(3)
    with pytest.raises(TypeError, match=message):
        bn(x)
    with pytest.raises(TypeError, match=message):
        bn.eval()(x)
    assert bn.num_batches_tracked.item() == 0  # nothing was updated


@pytest.mark.parametrize(
    ("value", "error"),
    [(2.0, ValueError), (-0.1, ValueError), (float("nan"), ValueError), ("0.1", TypeError)],
)
def test_momentum_is_checked_on_assignment_too(value, error):
    with pytest.raises(error, match="momentum must be"):
        BatchNorm(3, momentum=value)
    bn = BatchNorm(3)
    with pytest.raises(error, match="momentum must be"):
        bn.momentum = value
    assert bn.momentum == 0.1  # unchanged


def test_assigned_momentum_is_the_one_used():
    """Checked in float64: running = (1 - m) * running + m * batch statistic."""
    x = torch.randn(16, 3, dtype=torch.float64) * 2 + 5
    bn = BatchNorm(3, dtype=torch.float64)
    bn.momentum = 0.25
    bn(x)
    torch.testing.assert_close(bn.running_mean, 0.25 * x.mean(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        bn.running_var, 0.75 + 0.25 * x.var(0, unbiased=True), rtol=1e-12, atol=1e-12
    )
    bn.momentum = None  # cumulative average
    assert bn.momentum is None
    bn.momentum = 1
    assert bn.momentum == 1.0 and isinstance(bn.momentum, float)


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: BatchNorm(2.5), TypeError, r"num_features must be a whole number.*2\.5"),
        (lambda: BatchNorm("4"), TypeError, "num_features must be a whole number"),
        (lambda: BatchNorm(4, eps=-1), ValueError, "eps must be >= 0, got -1"),
        (lambda: BatchNorm(4, eps=float("nan")), ValueError, "eps must be a number, got NaN"),
        (
            lambda: batch_norm(torch.randn(8, 4), torch.zeros(4), torch.ones(4), momentum=2.0),
            ValueError,
            "momentum must be <= 1, got 2.0",
        ),
        (
            lambda: batch_norm(torch.randn(8, 4), None, None, training=True, eps="1e-5"),
            TypeError,
            "eps must be a number",
        ),
        (
            lambda: population_statistics(nn.Sequential(BatchNorm(4)), torch.randn(8, 4), 0),
            ValueError,
            "batch_size must be >= 1, got 0",
        ),
    ],
)
def test_constructor_and_function_arguments_are_checked(make, error, message):
    """Issue 32's cases: a raw TypeError from deep inside torch, or a silent NaN, before."""
    with pytest.raises(error, match=message):
        make()


def test_reduced_precision_is_refused_not_zeroed():
    """Issue 32: in float16, (x - mean)**2 overflowed, the running variance became inf and
    every channel output exactly 0. bnlib computes statistics in the input's dtype, so it
    refuses float16 and bfloat16 (autocast's types) with the fix."""
    with pytest.raises(TypeError, match=r"dtype is torch\.float16.*Fix: run the model in float32"):
        BatchNorm(4, dtype=torch.float16)
    with pytest.raises(TypeError, match="the input is torch.float16"):
        BatchNorm(4)((torch.randn(64, 4) * 100).half())
    model = nn.Sequential(nn.Linear(4, 4), BatchNorm(4))
    with torch.autocast("cpu"), pytest.raises(TypeError, match=r"torch\.bfloat16.*autocast"):
        model(torch.randn(64, 4))
    assert torch.isfinite(model(torch.randn(64, 4) * 100)).all()  # float32 is fine
