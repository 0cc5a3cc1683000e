"""bnlib.experiments.noise_controls: frozen BN statistics and the fixed-steps sweep."""

from __future__ import annotations

import pytest
import torch

from bnlib.experiments.gradient_noise import gradient_noise
from bnlib.experiments.noise_controls import (
    fixed_steps_batch_sweep,
    frozen_statistics,
    frozen_statistics_noise,
)
from bnlib.models import build_model
from bnlib.step import gradient


def _bn_mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("mlp", in_features=6, hidden=[5, 4], norm="torch", classes=3)
    return model.double()


def test_frozen_statistics_make_each_output_independent_of_its_batch():
    model = _bn_mlp()
    x, reference = torch.randn(8, 6, dtype=torch.float64), torch.randn(50, 6, dtype=torch.float64)
    model.train()
    with frozen_statistics(model, reference):
        together = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(8)])
    torch.testing.assert_close(together, alone)
    assert not torch.allclose(model(x)[:1], model(x[:2])[:1])  # batch statistics again


def test_frozen_statistics_use_the_reference_statistics():
    model = _bn_mlp()
    reference = 3 + 2 * torch.randn(200, 6, dtype=torch.float64)
    with frozen_statistics(model, reference):
        layer = model.norms[0]
        h = model.linears[0](reference)
        torch.testing.assert_close(layer.running_mean, h.mean(0))
        torch.testing.assert_close(layer.running_var, h.var(0, unbiased=False))


def test_frozen_statistics_gradient_is_the_mean_of_per_example_gradients():
    model = _bn_mlp()
    x, y = torch.randn(6, 6, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
    with frozen_statistics(model, torch.randn(40, 6, dtype=torch.float64)):
        _, whole = gradient(model, x, y)
        each = [gradient(model, x[i : i + 1], y[i : i + 1])[1] for i in range(6)]
    for k, g in enumerate(whole):
        torch.testing.assert_close(g, torch.stack([e[k] for e in each]).mean(0))


def test_frozen_statistics_leave_the_model_as_it_was():
    model = _bn_mlp()
    model(torch.randn(16, 6, dtype=torch.float64))  # running statistics away from 0 and 1
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with frozen_statistics(model, torch.randn(30, 6, dtype=torch.float64)):
        model.train()
        model(torch.randn(4, 6, dtype=torch.float64)).sum().backward()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    assert not model.training
    assert all(not hook for m in model.norms for hook in [m._forward_pre_hooks])


def test_batch_rows_reproduce_gradient_noise_and_frozen_rows_differ():
    config = {"batch_sizes": [8, 32], "draws": 4, "checkpoints": [0, 5]}
    frame = frozen_statistics_noise(**config, population=256)
    reference = gradient_noise(**config, norms=["torch"])
    batch = frame[frame["statistics"] == "batch"].reset_index(drop=True)
    columns = ["step", "batch_size", "variance", "mean_gradient_sq"]
    torch.testing.assert_close(
        torch.tensor(batch[columns].to_numpy()), torch.tensor(reference[columns].to_numpy())
    )
    frozen = frame[frame["statistics"] == "frozen"]
    assert len(frozen) == len(batch) and (frozen["variance"] > 0).all()
    assert not (frozen["variance"].to_numpy() == batch["variance"].to_numpy()).any()


def test_fixed_steps_sweep_trains_every_batch_size_equally_long():
    frame = fixed_steps_batch_sweep(batch_sizes=[32, 128], lr_count=2, steps=3)
    assert set(frame["steps"]) == {3} and set(frame["batch_size"]) == {32, 128}
    assert (frame["lr_per_example"] == frame["lr"] / frame["batch_size"]).all()
    assert frame.loc[frame["batch_size"] == 128, "epochs"].iloc[0] == pytest.approx(
        3 * 128 / 60_000
    )
    with pytest.raises(ValueError, match="unknown dataset 'cifar100'"):
        fixed_steps_batch_sweep(dataset="cifar100")
