"""bnlib.probes against direct computations on the unstacked members."""

from __future__ import annotations

import pytest
import torch

from bnlib import data, probes
from bnlib.engine import Member, StackedRun, accuracy
from bnlib.models import unstack_member


@pytest.fixture(scope="module")
def run_and_data():
    x, y = data.load("mnist", "test")
    split = data.Split(x[:2000], y[:2000])
    run = StackedRun(
        "mlp",
        {"norm": "torch", "hidden": (16, 16)},
        [Member(lr=0.1, seed=0), Member(lr=0.5, seed=1)],
        split,
        batch_size=50,
    )
    run.train(20, progress=False)
    return run, split


def _state(run):
    return {n: t.clone() for n, t in run.model.state_dict().items()}


def test_activation_stats_match_the_member_and_leave_state_alone(run_and_data):
    run, split = run_and_data
    before = _state(run)
    probe = probes.activation_stats(split.x[:300], ["norms.1"], percentiles=(15, 50, 85))
    rows = probe(run, run.step)
    for k in range(2):
        member = unstack_member(run.model, k).eval()
        captured = {}
        member.norms[1].register_forward_hook(lambda m, i, o, c=captured: c.setdefault("o", o))
        member(split.x[:300])
        values = captured["o"].flatten()
        got = {r["metric"]: r["value"] for r in rows if r["member"] == k}
        assert got["mean"] == pytest.approx(values.mean().item(), abs=1e-5)
        assert got["std"] == pytest.approx(values.std().item(), rel=1e-4)
        assert got["p85"] == pytest.approx(torch.quantile(values, 0.85).item(), abs=1e-5)
    for name, tensor in run.model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert run.model.training


def test_activation_stats_per_channel(run_and_data):
    run, split = run_and_data
    rows = probes.activation_stats(
        split.x[:100], ["linears.0"], per_channel=True, units=[3, 7], percentiles=(50,)
    )(run, run.step)
    assert {r["channel"] for r in rows} == {3, 7}
    member = unstack_member(run.model, 1).eval()
    pre = member.linears[0](split.x[:100].flatten(1))[:, 7]
    got = next(
        r["value"] for r in rows if r["member"] == 1 and r["channel"] == 7 and r["metric"] == "mean"
    )
    assert got == pytest.approx(pre.mean().item(), abs=1e-5)
    with pytest.raises(ValueError, match="no layer"):
        probes.activation_stats(split.x[:10], ["nope"])(run, 0)


def test_gradient_norms_match_the_member(run_and_data):
    run, split = run_and_data
    before = _state(run)
    rows = probes.gradient_norms(split.x[:64], split.y[:64], ["head.weight"])(run, run.step)
    for k in range(2):
        member = unstack_member(run.model, k).train()
        torch.nn.functional.cross_entropy(member(split.x[:64]), split.y[:64]).backward()
        got = next(r["value"] for r in rows if r["member"] == k)
        assert got == pytest.approx(member.head.weight.grad.norm().item(), rel=1e-4)
    for name, tensor in run.model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_test_accuracy_matches_the_member(run_and_data):
    run, split = run_and_data
    rows = probes.test_accuracy(split, examples_per_chunk=300)(run, run.step)
    for k in range(2):
        expected = accuracy(unstack_member(run.model, k).eval(), split)
        assert next(r["value"] for r in rows if r["member"] == k) == pytest.approx(expected)
