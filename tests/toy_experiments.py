"""Toy experiments registered by tests (never by bnlib itself): the least an experiment
needs, to show that registering one touches nothing else. Each reaches a different part of
bnlib: ``toy_sgd`` the optimizer, ``toy_init`` the initialization, ``toy_plain`` neither."""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from bnlib import experiments
from bnlib.experiments import Reproduction, register
from bnlib.models import initialize
from bnlib.optim import StackedSGD

NAMES = ("toy_sgd", "toy_init", "toy_plain")


def toy_sgd(steps: int = 20, seeds: tuple[int, ...] = (0,)) -> pd.DataFrame:
    """A linear regression trained by bnlib's SGD: the loss at every step, per seed."""
    rows = []
    for seed in seeds:
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(64, 5, generator=generator)
        y = x @ torch.randn(5, 1, generator=generator)
        model = nn.Linear(5, 1)
        with torch.no_grad():
            model.weight.copy_(torch.randn(1, 5, generator=generator))
            model.bias.zero_()
        optimizer = StackedSGD(model.parameters(), members=1, lr=0.05, momentum=0.9)
        for step in range(steps):
            loss = ((model(x) - y) ** 2).mean()
            rows.append({"seed": seed, "step": step, "loss": loss.item()})
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return pd.DataFrame(rows)


def toy_init(width: int = 200, seeds: tuple[int, ...] = (0,)) -> pd.DataFrame:
    """The standard deviation of a He-initialized layer's weights, per seed."""
    rows = []
    for seed in seeds:
        torch.manual_seed(seed)
        layer = initialize(nn.Linear(width, width), "he")
        rows.append({"seed": seed, "weight_std": float(layer.weight.std())})
    return pd.DataFrame(rows)


def toy_plain(n: int = 1000) -> pd.DataFrame:
    """The mean and variance of n standard normal draws (no bnlib code)."""
    x = torch.randn(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return pd.DataFrame([{"mean": float(x.mean()), "var": float(x.var())}])


def register_all() -> None:
    """Register the toy experiments (once per process)."""
    if "toy_sgd" in experiments.REGISTRY:
        return
    register(
        "toy_sgd",
        chapter="Toys",
        smoke={"steps": 3},
        quick={"steps": 10},
        full={"steps": 40, "seeds": [0, 1, 2]},
        reproduce=Reproduction(subset={"seeds": [1]}),
    )(toy_sgd)
    register(
        "toy_init",
        chapter="Toys",
        smoke={"width": 20},
        quick={},
        full={"width": 400, "seeds": [0, 1]},
        reproduce=Reproduction(subset={"seeds": [1]}),
    )(toy_init)
    register("toy_plain", chapter="Toys", smoke={"n": 10}, quick={}, full={})(toy_plain)


def unregister_all() -> None:
    for name in NAMES:
        experiments.REGISTRY.pop(name, None)


def as_if_computed_by_older_code(path, code_hash: str = "feedfacefeedface"):
    """Re-key the stored result at ``path`` (its parquet) as older code would have stored
    it: the JSON names that code's hash and the key it gives, and both files take the key
    (editing the JSON alone would be an edited result, which bnlib refuses to serve)."""
    import json
    from pathlib import Path

    from bnlib.results import cache_key

    meta_path = Path(path).with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    key = cache_key(meta["experiment"], meta["config"], code_hash)
    meta.update(key=key, code_hash=code_hash)
    parquet = meta_path.with_name(f"{key}.parquet")
    Path(path).rename(parquet)
    parquet.with_suffix(".json").write_text(json.dumps(meta))
    meta_path.unlink()
    return parquet
