"""bnlib.optim against torch.optim, member by member."""

from __future__ import annotations

import pytest
import torch

from bnlib.models import MLP, stack_members, unstack_member
from bnlib.optim import StackedAdam, StackedSGD, per_member

LRS = [0.1, 0.03, 0.5]


def _members():
    torch.manual_seed(0)
    return [MLP(hidden=(7, 5), in_features=6, classes=3, norm="torch") for _ in LRS]


def _grads(model, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(8, len(LRS), 6, generator=gen)
    y = torch.randint(0, 3, (8, len(LRS)), generator=gen)
    out = model(x)
    return x, y, torch.nn.functional.cross_entropy(out.permute(0, 2, 1), y, reduction="none")


@pytest.mark.parametrize(
    ("kind", "kwargs"),
    [
        ("sgd", {}),
        ("sgd", {"momentum": [0.9, 0.0, 0.5], "weight_decay": [1e-3, 0, 0.1]}),
        ("adam", {}),
        ("adam", {"weight_decay": [0.0, 0.01, 0.1]}),
    ],
)
def test_updates_match_torch_optim_per_member(kind, kwargs):
    singles = _members()
    stacked = stack_members(singles)
    if kind == "sgd":
        ours = StackedSGD(stacked.parameters(), len(LRS), LRS, **kwargs)
    else:
        ours = StackedAdam(stacked.parameters(), len(LRS), LRS, **kwargs)
    refs = []
    for k, model in enumerate(singles):
        per = {name: v[k] for name, v in kwargs.items()}
        cls = torch.optim.SGD if kind == "sgd" else torch.optim.Adam
        refs.append(cls(model.parameters(), lr=LRS[k], **per))
    for step in range(4):
        x, y, losses = _grads(stacked, step)
        ours.zero_grad()
        losses.mean(0).sum().backward()
        ours.step()
        for k, (model, opt) in enumerate(zip(singles, refs)):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[:, k]), y[:, k])
            loss.backward()
            opt.step()
    for k, model in enumerate(singles):
        member = unstack_member(stacked, k)
        for (name, a), b in zip(member.named_parameters(), model.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_frozen_members_do_not_move_even_with_nan_gradients():
    stacked = stack_members(_members())
    opt = StackedSGD(stacked.parameters(), len(LRS), LRS)
    before = [p.detach().clone() for p in stacked.parameters()]
    for p in stacked.parameters():
        p.grad = torch.ones_like(p)
        p.grad.unflatten(0, (len(LRS), -1))[1] = float("nan")
    opt.step(active=torch.tensor([True, False, True]))
    for p, b in zip(stacked.parameters(), before):
        assert torch.equal(p.unflatten(0, (3, -1))[1], b.unflatten(0, (3, -1))[1])
        assert not torch.equal(p.unflatten(0, (3, -1))[0], b.unflatten(0, (3, -1))[0])
        assert torch.isfinite(p).all()


def test_per_member_validation():
    with pytest.raises(ValueError, match="lr has 2 values for 3 members"):
        per_member([0.1, 0.2], 3, "lr")
    with pytest.raises(ValueError, match="learning rate must be > 0"):
        StackedSGD(stack_members(_members()).parameters(), 3, [0.1, 0.0, 0.1])
