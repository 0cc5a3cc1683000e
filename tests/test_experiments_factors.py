"""The chapter "What else changes BN's effect": experiments (bnlib.experiments.factors)
and their figures, on real data at tiny sizes."""

import matplotlib
import pandas as pd
import pytest
import torch
from torch import nn

from bnlib import data as datasets
from bnlib.data import Split
from bnlib.engine import Member, StackedRun
from bnlib.experiments import factors
from bnlib.experiments.factors import common, ntu_study, regularization
from bnlib.figures import factors as figures
from bnlib.norm_variants import BatchRenorm

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def mnist_test():
    return datasets.load("mnist", "test")


def test_holdout_is_disjoint_and_complete():
    ids = torch.arange(100)
    rest, held = common.holdout(Split(ids.float().view(-1, 1, 1, 1), ids), 30)
    assert len(held.y) == 30 and len(rest.y) == 70
    assert set(held.y.tolist()).isdisjoint(rest.y.tolist())
    assert set(held.y.tolist()) | set(rest.y.tolist()) == set(range(100))
    assert torch.equal(held.x.flatten().long(), held.y)  # images stay with their labels


def test_digits_relabels_in_the_given_order(mnist_test):
    part = ntu_study._digits(mnist_test, (1, 0))
    assert set(part.y.tolist()) == {0, 1}
    assert (part.y == 0).sum() == (mnist_test.y == 1).sum() == 1135
    assert (part.y == 1).sum() == (mnist_test.y == 0).sum() == 980


def test_activation_is_set_in_every_hidden_layer_with_dropout():
    run = StackedRun(
        "mlp",
        {"hidden": [8, 8], "norm": "torch"},
        [Member(lr=0.1, seed=s) for s in (0, 1)],
        Split(torch.randn(32, 1, 4, 4), torch.randint(0, 10, (32,))),
        batch_size=8,
        device="cpu",
    )
    common.set_activation(run.model, "leaky_relu", dropout=0.5)
    for layer in run.model.activations:
        assert isinstance(layer[0], nn.LeakyReLU) and layer[0].negative_slope == 0.2
        assert isinstance(layer[1], nn.Dropout)
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        common.set_activation(run.model, "swish")


@pytest.mark.parametrize("norm, kind", [("renorm", BatchRenorm), ("layer", nn.GroupNorm)])
def test_normalize_swaps_layers_and_training_reaches_them(norm, kind):
    torch.manual_seed(0)
    data = Split(torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,)))
    run = StackedRun(
        "vgg",
        {"widths": [4, 8], "convs": 1, "norm": "torch"},
        [Member(lr=0.1, seed=0)],
        data,
        batch_size=16,
        device="cpu",
        strategy="stacked" if norm == "renorm" else "loop",
    )
    options = {"relax_from": 0, "r_max_at": 2, "d_max_at": 2} if norm == "renorm" else {}
    common.normalize(run, norm, **options)
    layers = [m for m in run.model.modules() if isinstance(m, kind)]
    assert len(layers) == 2
    before = layers[0].bias.detach().clone()
    run.train(3, progress=False)
    assert not torch.equal(layers[0].bias, before)


def test_freeze_except_trains_only_gamma_and_beta():
    torch.manual_seed(0)
    data = Split(torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,)))
    run = StackedRun(
        "vgg",
        {"widths": [4, 8], "convs": 1, "norm": "torch"},
        [Member(lr=0.5, seed=0, momentum=0.9)],
        data,
        batch_size=16,
        device="cpu",
    )
    assert regularization._freeze_except(run, "BN's gamma and beta") == 2 * (4 + 8)
    single = run.model.models[0]
    conv, head = single.features[0].weight.detach().clone(), single.head.weight.detach().clone()
    gamma = single.features[1].weight.detach().clone()
    run.train(3, progress=False)
    assert torch.equal(single.features[0].weight, conv) and torch.equal(single.head.weight, head)
    assert not torch.equal(single.features[1].weight, gamma)


def test_evaluations_leave_the_model_unchanged():
    torch.manual_seed(0)
    from bnlib.models import VGG

    model = VGG(widths=(4, 8), convs=1, norm="torch")
    model.train()
    model(torch.randn(32, 1, 8, 8))  # running statistics away from their start
    state = {k: v.clone() for k, v in model.state_dict().items()}
    test = Split(torch.randn(40, 1, 8, 8), torch.arange(40) % 10)
    found = regularization._evaluations(model, test, Split(torch.randn(64, 1, 8, 8), test.y), 16)
    assert set(found) == set(figures.PITFALL_STYLES)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert all(0 <= v <= 1 for v in found.values())


def test_class_mismatch_test_sets_have_the_stated_ratios():
    frame = factors.class_mismatch(steps=2, seeds=[0], minority_per_majority=(1, 9, 99))
    counts = frame[(frame["norm"] == "bn") & (frame["evaluation"] == "population statistics")]
    counts = counts.set_index(["ratio", "digit"])["examples"]
    assert counts[(1, 0)] == counts[(9, 0)] == counts[(99, 0)] == 980
    assert [counts[(r, 1)] for r in (1, 9, 99)] == [980, 109, 10]
    # eval mode is per example: the zeros (the same 980 in every set) score the same
    right = frame[(frame["evaluation"] == "population statistics") & (frame["digit"] == 0)]
    assert right.groupby("norm")["accuracy"].nunique().eq(1).all()


def test_factor_study_varies_one_factor_at_a_time():
    frame = factors.factor_study(
        activations=("sigmoid", "relu"),
        optimizers=("sgd", "adam"),
        batch_sizes=(16, 64),
        sgd_lrs=[0.3],
        adam_lrs=[1e-3],
        steps=2,
        measure_points=1,
        validation=500,
    )
    settings = set(map(tuple, frame[["activation", "optimizer", "batch_size"]].to_numpy()))
    assert settings == {
        ("sigmoid", "sgd", 64),
        ("relu", "sgd", 64),
        ("sigmoid", "adam", 64),
        ("sigmoid", "sgd", 16),
    }
    assert set(frame["norm"]) == {"bn", "none"}
    assert frame.loc[frame["optimizer"] == "adam", "lr"].eq(1e-3).all()
    with pytest.raises(ValueError, match="unknown activation"):
        factors.factor_study(activations=("sigmoid", "swish"), steps=1)


def test_small_batches_follow_the_linear_scaling_rule():
    frame = factors.small_batches(
        batch_sizes=[4, 16],
        norms=["group", "none"],
        examples=32,
        validation=200,
        test_examples=200,
        base_lrs=[0.05],
    )
    assert set(frame["norm"]) == {"group", "none"}
    rows = frame.set_index(["norm", "batch_size"])
    assert rows.loc[("group", 4), "lr"] == pytest.approx(0.05 * 4 / 32)
    assert rows.loc[("group", 4), "step"] == 8 and rows.loc[("group", 16), "step"] == 2
    assert rows["base_lr"].to_numpy() == pytest.approx(0.05)


def test_ghost_of_the_whole_batch_is_plain_bn():
    frame = factors.ghost_batch_norm(
        batch_size=16,
        ghost_sizes=[16, 4],
        steps=2,
        measure_points=1,
        validation=100,
        test_examples=100,
        train_examples=100,
    )
    assert sorted(frame["ghost_size"]) == [4, 16]


# --------------------------------------------------------------------------------------
# Figures and summaries on constructed data
# --------------------------------------------------------------------------------------


def _factor_frame():
    rows = []
    settings = [
        ("sigmoid", "sgd", 64),
        ("relu", "sgd", 64),
        ("sigmoid", "adam", 64),
        ("sigmoid", "sgd", 4),
    ]
    for activation, optimizer, batch in settings:
        for norm in ("bn", "none"):
            for lr, val in ((0.1, 0.90), (1.0, 0.95)):
                for step in (50, 100):
                    acc = val - (0.1 if step == 50 else 0) + (0.01 if norm == "bn" else 0)
                    rows.append(
                        dict(
                            activation=activation,
                            optimizer=optimizer,
                            batch_size=batch,
                            norm=norm,
                            lr=lr,
                            seed=0,
                            step=step,
                            validation_accuracy=acc,
                            test_accuracy=acc - 0.001,
                            loss=0.1,
                            diverged=False,
                            diverged_at=-1,
                        )
                    )
    return pd.DataFrame(rows)


def test_best_learning_rate_is_chosen_on_validation_not_test():
    frame = _factor_frame()
    # make the test split prefer the other learning rate: the choice must not follow it
    frame.loc[frame["lr"] == 0.1, "test_accuracy"] = 0.99
    best = figures.best_learning_rates(frame, ["activation", "optimizer", "batch_size"])
    assert best["lr"].eq(1.0).all()


def test_factor_table_and_steps_to_target():
    table = figures.factor_table(_factor_frame(), target=0.9)
    assert set(table["factor"]) == set(figures.FACTORS.values())
    base = table[(table["factor"] == "activation") & (table["value"] == "sigmoid")].iloc[0]
    assert base["BN - no BN"] == pytest.approx(1.0)
    assert base["steps to 90% BN"] == 100 and base["steps to 90% no BN"] == 100
    table = figures.factor_table(_factor_frame(), target=0.99)
    assert table["steps to 99% BN"].isna().all()


def test_factor_figures_draw():
    frame = _factor_frame()
    for fig in (figures.factor_effects(frame), figures.factor_curves(frame, "batch_size", 4)):
        assert fig.axes
    with pytest.raises(ValueError, match="no run"):
        figures.factor_curves(frame, "batch_size", 7)
    with pytest.raises(ValueError, match="unknown factor"):
        figures.factor_values(frame, "depth")
