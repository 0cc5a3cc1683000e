"""bnlib.engine: on-device batching, training, divergence as a result."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from bnlib import data
from bnlib.engine import Member, StackedRun, accuracy, batch_indices, log_steps, train
from bnlib.models import MLP, member_gradients, unstack_member


def test_batch_indices_cover_each_epoch_once():
    batches = list(
        batch_indices(
            10, 3, steps=6, generator=torch.Generator().manual_seed(0), device=torch.device("cpu")
        )
    )
    assert len(batches) == 6 and all(len(b) == 3 for b in batches)
    first_epoch = torch.cat(batches[:3])
    assert len(set(first_epoch.tolist())) == 9  # 10 // 3 batches, no repeats
    with pytest.raises(ValueError, match="batch_size"):
        next(batch_indices(5, 6, 1, torch.Generator(), torch.device("cpu")))


def test_log_steps_are_sorted_and_bounded():
    steps = log_steps(1000, 20)
    assert steps[0] == 0 and steps[-1] == 1000 and steps == sorted(set(steps))


def test_training_learns_mnist_and_is_reproducible():
    train_split = data.load("mnist", "train")
    test = data.load("mnist", "test")

    def run():
        torch.manual_seed(0)
        model = MLP(norm="bnlib")
        log = train(
            model,
            train_split,
            steps=200,
            batch_size=60,
            lr=0.5,
            seed=1,
            log_at=[0, 200],
            log=lambda s, m, loss: {"acc": accuracy(m.eval(), test)},
        )
        return model, log

    model_a, log_a = run()
    model_b, log_b = run()
    assert log_a.loc[log_a.step == 200, "acc"].item() > 0.85
    assert log_a.loc[log_a.step == 0, "acc"].item() < 0.3
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(pa, pb)
    assert log_a.equals(log_b)


def test_divergence_is_recorded_not_raised():
    train_split = data.load("mnist", "test")
    torch.manual_seed(0)
    model = MLP(activation="relu", hidden=(100,))
    log = train(
        model,
        train_split,
        steps=50,
        batch_size=60,
        lr=1e6,
        log_at=list(range(51)),
        log=lambda s, m, loss: {},
    )
    assert log["diverged"].any()
    assert log["diverged"].iloc[-1] and not log["diverged"].iloc[:-1].any()
    assert log["step"].iloc[-1] < 50


@pytest.mark.parametrize("lr", [0.0, -0.1])
def test_nonpositive_learning_rate_is_a_clear_error(lr):
    with pytest.raises(ValueError, match="lr must be > 0"):
        train(MLP(), data.load("mnist", "test"), steps=1, batch_size=10, lr=lr)


# ---- many models at once ------------------------------------------------------------

SMALL = {
    "mlp-bn": ("mlp", {"norm": "bnlib", "hidden": (32, 32)}),
    "mlp": ("mlp", {"norm": "none", "hidden": (32, 32), "activation": "tanh"}),
    "resnet-bn": ("resnet", {"depth": 8, "width": 4, "norm": "torch"}),
    "resnet": ("resnet", {"depth": 8, "width": 4, "norm": "none"}),
}


@pytest.fixture(scope="module")
def small_mnist():
    x, y = data.load("mnist", "train")
    return data.Split(x[:600], y[:600])


@pytest.fixture
def default_dtype(request):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(request.param)
    yield request.param
    torch.set_default_dtype(previous)


# float32: losses and parameter updates agree to 1e-5. A gradient is a sum over batch and
# positions (15,680 terms for a conv weight here) that grouped and ordinary convolutions
# add in different orders: measured differences reach 2.2e-5 in float32, and 2e-16 in
# float64, so float64 checks that the computation is the same to 1e-10.
TOLERANCE = {torch.float32: (1e-5, 1e-4), torch.float64: (1e-10, 1e-10)}


@pytest.mark.parametrize("default_dtype", [torch.float32, torch.float64], indirect=True)
@pytest.mark.parametrize("strategy", ["stacked", "loop"])
@pytest.mark.parametrize("name", list(SMALL))
def test_stacked_run_equals_separate_models(name, strategy, small_mnist, default_dtype):
    """Outputs (losses), gradients and updates of each member equal those of an ordinary
    nn.Module with torch.optim.SGD, the same initial weights and the same batches."""
    tol, grad_tol = TOLERANCE[default_dtype]
    split = data.Split(small_mnist.x.to(default_dtype), small_mnist.y)
    architecture, config = SMALL[name]
    members = [
        Member(lr=0.05, seed=1),
        Member(lr=0.2, seed=2, momentum=0.9),
        Member(lr=0.1, seed=1, init="xavier", gain=0.8),
    ]
    run = StackedRun(architecture, config, members, split, batch_size=20, strategy=strategy)
    assert run.strategy == strategy
    singles = [unstack_member(run.model, k) for k in range(run.k)]
    optimizers = [
        torch.optim.SGD(m.parameters(), lr=mem.lr, momentum=mem.momentum)
        for m, mem in zip(singles, members)
    ]
    streams = [
        batch_indices(600, 20, 5, torch.Generator().manual_seed(mem.seed), torch.device("cpu"))
        for mem in members
    ]
    for _ in range(5):
        for k, model in enumerate(singles):  # the same weights as the stack's members
            with torch.no_grad():
                for a, b in zip(
                    model.state_dict().values(), unstack_member(run.model, k).state_dict().values()
                ):
                    a.copy_(b)
        losses = run.train_step()
        for k, (model, opt, stream) in enumerate(zip(singles, optimizers, streams)):
            idx = next(stream)
            loss = torch.nn.functional.cross_entropy(model(split.x[idx]), split.y[idx])
            opt.zero_grad()
            loss.backward()
            assert losses[k].item() == pytest.approx(loss.item(), rel=tol, abs=tol)
            grads = member_gradients(run.model, k)
            for n, p in model.named_parameters():
                grad = grads[n]
                scale = max(1.0, p.grad.abs().max().item())
                assert (grad - p.grad).abs().max().item() <= grad_tol * scale
            opt.step()
            member = unstack_member(run.model, k)
            for (n, a), b in zip(member.state_dict().items(), model.state_dict().values()):
                torch.testing.assert_close(a, b, rtol=tol, atol=tol, msg=n)


def test_a_diverging_member_changes_nothing_for_the_others(small_mnist):
    good = [Member(lr=0.1, seed=1), Member(lr=0.3, seed=2)]
    config = {"norm": "torch", "hidden": (32, 32), "activation": "relu"}
    with_bad = StackedRun(
        "mlp", config, [good[0], Member(lr=1e5, seed=3), good[1]], small_mnist, batch_size=20
    )
    alone = StackedRun("mlp", config, good, small_mnist, batch_size=20)
    log = with_bad.train(30, log_at=range(31), progress=False)
    alone.train(30, progress=False)
    assert with_bad.diverged_at.tolist()[1] > 0 and with_bad.diverged_at.tolist()[::2] == [-1, -1]
    assert not with_bad.active[1] and with_bad.active[0] and with_bad.active[2]
    diverged = log[log.metric == "loss"].pivot(index="step", columns="member", values="diverged")
    assert diverged[1].iloc[-1] and not diverged[0].any() and not diverged[2].any()
    for k_bad, k_alone in ((0, 0), (2, 1)):
        a, b = unstack_member(with_bad.model, k_bad), unstack_member(alone.model, k_alone)
        for (n, p), q in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6, msg=n)
    frozen = unstack_member(with_bad.model, 1)
    assert all(torch.isfinite(p).all() for p in frozen.parameters())


def test_same_seed_same_results(small_mnist):
    def once():
        run = StackedRun(
            "resnet",
            SMALL["resnet-bn"][1],
            [Member(lr=0.1, seed=4)] * 2,
            small_mnist,
            batch_size=16,
        )
        return run.train(4, log_at=[0, 2, 4], progress=False)

    pd.testing.assert_frame_equal(once(), once())


def test_auto_strategy_loops_convolutions_on_cpu(small_mnist):
    def strategy(architecture, config):
        return StackedRun(
            architecture, config, [Member(lr=0.1)], small_mnist, batch_size=10, device="cpu"
        ).strategy

    assert strategy("mlp", {}) == "stacked"
    assert strategy("resnet", SMALL["resnet"][1]) == "loop"


def test_stacked_run_rejects_bad_input(small_mnist):
    with pytest.raises(ValueError, match=r"members\[0\]\.lr must be > 0"):
        StackedRun("mlp", {}, [Member(lr=-1.0)], small_mnist, batch_size=10)
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        StackedRun("mlp", {}, [Member(lr=0.1)], small_mnist, batch_size=10, optimizer="rmsprop")
    with pytest.raises(ValueError, match="unknown strategy 'vmap'"):
        StackedRun("mlp", {}, [Member(lr=0.1)], small_mnist, batch_size=10, strategy="vmap")
    with pytest.raises(ValueError, match="unknown architecture 'transformer'"):
        StackedRun("transformer", {}, [Member(lr=0.1)], small_mnist, batch_size=10)


def test_loss_trace_records_ratios_and_divergence(small_mnist):
    run = StackedRun(
        "mlp", {"norm": "none"}, [Member(lr=0.05), Member(lr=1e4)], small_mnist, batch_size=20
    )
    trace = run.loss_trace(10)
    assert len(trace) == 20 and trace.groupby("member")["diverged"].any().tolist() == [False, True]
    first = trace[trace.step == 2].set_index("member")
    assert first.loc[0, "loss_ratio"] == pytest.approx(
        first.loc[0, "loss"] / trace[(trace.step == 1) & (trace.member == 0)]["loss"].item()
    )


def test_evaluation_in_train_mode_leaves_running_statistics_untouched():
    """Test data must never reach the training state: a train-mode evaluation (each test
    batch normalized with its own statistics) runs forward passes that would update BN's
    running averages; :func:`accuracy` restores them."""
    test = data.load("mnist", "test")
    for momentum in (0.1, None):
        model = MLP(norm="bnlib").double()
        for layer in model.norms:
            layer.momentum = momentum
        before = {k: v.clone() for k, v in model.state_dict().items()}
        model.train()
        accuracy(model, data.Split(test.x[:600].double(), test.y[:600]), batch_size=60)
        assert model.training
        for key, value in model.state_dict().items():
            assert torch.equal(value, before[key]), f"{key} changed by evaluation"


def test_logging_with_train_mode_evaluation_does_not_change_training():
    """A run that evaluates on test data in train mode at every logged step ends with the
    same running statistics and weights as a run that never evaluates."""
    train_split = data.load("mnist", "train")
    test = data.load("mnist", "test")
    small_test = data.Split(test.x[:1200], test.y[:1200])

    def run(log):
        torch.manual_seed(0)
        model = MLP(norm="bnlib")
        for layer in model.norms:
            layer.momentum = None  # cumulative average: every batch seen counts equally
        train(model, train_split, steps=20, batch_size=60, lr=0.1, log_at=list(range(21)), log=log)
        return model.state_dict()

    quiet = run(None)
    evaluated = run(lambda step, m, loss: {"acc": accuracy(m.train(), small_test, 60)})
    for key in quiet:
        assert torch.equal(quiet[key], evaluated[key]), key


def test_batch_size_and_steps_must_be_whole_numbers_checked_at_once():
    """Bad values fail when batch_indices is called, before any batch is drawn."""
    gen, cpu = torch.Generator().manual_seed(0), torch.device("cpu")
    with pytest.raises(TypeError, match=r"batch_size must be a whole number.*2\.5.*batch_size=2"):
        batch_indices(100, 2.5, 10, gen, cpu)
    with pytest.raises(TypeError, match="batch_size must be a whole number"):
        batch_indices(100, True, 10, gen, cpu)
    with pytest.raises(ValueError, match=r"batch_size must be in 1\.\.100 \(the data size\)"):
        batch_indices(100, 0, 10, gen, cpu)
    with pytest.raises(ValueError, match="steps must be >= 0, got -1"):
        batch_indices(100, 10, -1, gen, cpu)
    assert len(list(batch_indices(100, 10, 0, gen, cpu))) == 0


def test_stacked_run_rejects_a_fractional_batch_size_and_no_steps():
    test = data.load("mnist", "test")
    split = data.Split(test.x[:200], test.y[:200])
    config = {"hidden": (8,), "norm": "torch"}
    with pytest.raises(TypeError, match=r"batch_size must be a whole number.*2\.5"):
        StackedRun("mlp", config, [Member(lr=0.1)], split, batch_size=2.5, device="cpu")
    with pytest.raises(ValueError, match=r"batch_size must be in 1\.\.200"):
        StackedRun("mlp", config, [Member(lr=0.1)], split, batch_size=500, device="cpu")
    run = StackedRun("mlp", config, [Member(lr=0.1)], split, batch_size=20, device="cpu")
    for steps in (0, -3):
        with pytest.raises(ValueError, match=f"steps must be >= 1, got {steps}"):
            run.train(steps, log_at=[0], progress=False)
    with pytest.raises(TypeError, match=r"steps must be a whole number.*2\.0"):
        run.train(2.0, progress=False)
    assert run.step == 0  # nothing was trained
    assert len(run.train(2, log_at=[2], progress=False)) == 1 and run.step == 2


@pytest.mark.parametrize(
    ("member", "kwargs", "error", "message"),
    [
        (Member(lr="0.1"), {}, TypeError, r"members\[0\]\.lr must be a number.*lr=0\.1"),
        (Member(lr=0.1, seed=1.5), {}, TypeError, r"members\[0\]\.seed must be a whole number"),
        (Member(lr=0.1, gain=float("nan")), {}, ValueError, r"members\[0\]\.gain .* NaN"),
        (Member(lr=0.1), {"divergence_ratio": float("nan")}, ValueError, "divergence_ratio"),
        (Member(lr=0.1), {"divergence_ratio": 0.5}, ValueError, "divergence_ratio must be > 1"),
        (Member(lr=0.1, momentum=-0.9), {}, ValueError, r"members\[0\]\.momentum must be >= 0"),
        (Member(lr=0.1, weight_decay=-1), {}, ValueError, r"members\[0\]\.weight_decay"),
    ],
)
def test_stacked_run_checks_every_number(small_mnist, member, kwargs, error, message):
    """Issue 32's cases: raw TypeErrors from torch, or a NaN that silently switched the
    divergence check off, before."""
    with pytest.raises(error, match=message):
        StackedRun("mlp", {}, [member], small_mnist, batch_size=10, **kwargs)


def test_loss_trace_and_train_refuse_bad_counts(small_mnist):
    run = StackedRun("mlp", {}, [Member(lr=0.1)], small_mnist, batch_size=10)
    with pytest.raises(ValueError, match="steps must be >= 0, got -1"):
        run.loss_trace(-1)
    with pytest.raises(TypeError, match="seed must be a whole number"):
        train(MLP(), small_mnist, steps=1, batch_size=10, lr=0.1, seed=1.5)
    for bad, message in [
        ({"momentum": -0.9}, "momentum must be >= 0"),
        ({"weight_decay": float("nan")}, "weight_decay must be a number, got NaN"),
        ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            train(MLP(), small_mnist, **{"steps": 1, "batch_size": 10, "lr": 0.1, **bad})


def test_inputs_and_labels_of_different_lengths_are_refused(small_mnist):
    """Issue 32's case: Split(x[:512], y[:100]) trained on the first 100 images silently."""
    mismatched = data.Split(small_mnist.x[:512], small_mnist.y[:100])
    with pytest.raises(
        ValueError, match="data.x and data.y must have the same length.*512 and 100"
    ):
        StackedRun("mlp", {}, [Member(lr=0.1)], mismatched, batch_size=10)
    with pytest.raises(ValueError, match="512 and 100"):
        train(MLP(), mismatched, steps=1, batch_size=10, lr=0.1)
