"""``python -m bnlib bench``: the engine against the naive way, measured in one run.

Two workloads, each done two ways on the same machine in the same run:

- **MLP learning-rate sweep**: 784-100-100-100-10 (ReLU, BN), K=16 learning rates, one
  epoch of MNIST each, batch 60.
- **ResNet-20 sweep**: K=8 learning rates, a fixed number of steps on Fashion-MNIST,
  batch 128.

(a) *naive*: what a tutorial does: one model at a time, a torchvision dataset with
``ToTensor`` and ``Normalize`` through a ``DataLoader``, an ``nn.Module`` and
``torch.optim.SGD``. Being sequential, its throughput per model is the same for any K,
so it is measured on a few of the K models and the sweep's time is K times one model's.
(b) *engine*: all K models at once, as one stacked model fed from on-device tensors
(:class:`bnlib.engine.StackedRun`).
(c) *torch.func* (MLP only): PyTorch's own way of training many models at once,
``stack_module_state`` + ``vmap(functional_call)`` (:func:`_functorch_train`), fed from the
same on-device tensors.
For the ResNet, the engine is measured with both of its strategies: one stacked model
(grouped convolutions), and one model after another (still on-device data and
channels_last). ``StackedRun(strategy="auto")`` picks the loop for convolutional nets on
a CPU because of this measurement.

Each measurement is repeated and the median reported (the machine is shared and noisy);
the fp32 matrix-multiply peak is measured in the same run. The report gives, for each
way, the sweep's wall time (the naive way: K times one model's), the samples processed
per second by all models together, per model (over the sweep's wall time), and the
speed-up: the naive sweep time over this way's.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from torch import nn

from bnlib import data as datasets
from bnlib.device import pick_device
from bnlib.engine import Member, StackedRun, accuracy
from bnlib.models import build_model, unstack_member
from bnlib.provenance import provenance

__all__ = ["matmul_peak", "run_benchmarks"]

#: FLOPs of one training step (forward + backward) per sample of 784-100-100-100-10:
#: 2 * (784*100 + 100*100 + 100*100 + 100*10) multiply-adds forward, about twice that
#: backward (the input gradient of the first layer is not needed).
MLP_FLOP_PER_SAMPLE = 0.44e6
MLP_CONFIG = {"activation": "relu", "norm": "torch"}
RESNET_CONFIG = {"depth": 20, "norm": "torch"}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    """Median GFLOP/s of an ``n x n`` fp32 matrix multiply on ``device``."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    rates = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        for _ in range(5):
            a @ b
        _sync(device)
        rates.append(5 * 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return statistics.median(rates)


def _naive_loader(name: str, batch_size: int, seed: int):
    import torchvision
    from torchvision import transforms

    mean, std = datasets.normalization(name)
    cls = getattr(torchvision.datasets, datasets.DATASETS[name].torchvision_class)
    dataset = cls(
        str(datasets.data_root()),
        train=True,
        download=False,
        transform=transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize((mean,), (std,))]
        ),
    )
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(seed),
    )


def _naive_train(
    architecture, config, dataset, lr, seed, batch_size, steps, device, contiguous=True
):
    """One model the tutorial way; returns (seconds, samples, model)."""
    torch.manual_seed(seed)
    model = build_model(architecture, **config).to(device)
    if contiguous:  # a tutorial's model: default memory format
        model = model.to(memory_format=torch.contiguous_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    loader = _naive_loader(dataset, batch_size, seed)
    first_x, first_y = next(iter(loader))  # warm-up step (kernel selection), not timed
    nn.functional.cross_entropy(model(first_x.to(device)), first_y.to(device)).backward()
    optimizer.zero_grad()
    done = 0
    _sync(device)
    start = time.perf_counter()
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        done += 1
        if done == steps:
            break
    _sync(device)
    return time.perf_counter() - start, done * batch_size, model


def _engine_train(architecture, config, split, lrs, batch_size, steps, device, strategy="auto"):
    """K models with the engine; returns (seconds, samples per member, run)."""
    run = StackedRun(
        architecture,
        config,
        [Member(lr=lr, seed=0) for lr in lrs],
        split,
        batch_size=batch_size,
        device=device,
        strategy=strategy,
    )
    run.train_step()  # warm-up (kernel selection), not timed
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        run.train_step()
    _sync(device)
    return time.perf_counter() - start, steps * batch_size, run


def _functorch_train(config, split, lrs, batch_size, steps, device):
    """K MLPs the way PyTorch documents for model ensembling: their parameters stacked by
    ``torch.func.stack_module_state`` and one training step vmapped over
    ``functional_call`` and ``torch.func.grad``; returns (seconds, samples per member).

    BN's running statistics cannot be updated in place under ``vmap``, so they are
    switched off (``torch.func.replace_all_batch_norm_modules_``, as PyTorch's ensembling
    tutorial does); training itself normalizes with batch statistics as the others do.
    Each member draws its own minibatches from the on-device data.
    """
    import copy

    from torch.func import (
        functional_call,
        grad,
        replace_all_batch_norm_modules_,
        stack_module_state,
        vmap,
    )

    models = []
    for _ in lrs:
        torch.manual_seed(0)
        models.append(replace_all_batch_norm_modules_(build_model("mlp", **config).to(device)))
    params, buffers = stack_module_state(models)
    params = {name: p.detach() for name, p in params.items()}
    base = copy.deepcopy(models[0]).to("meta")

    def loss(p, b, x, y):
        return nn.functional.cross_entropy(functional_call(base, (p, b), (x,)), y)

    gradients = vmap(grad(loss))
    lr = torch.tensor(lrs, device=device)
    generator = torch.Generator(device=device).manual_seed(0)

    def step():
        index = torch.randint(
            len(split.y), (len(lrs), batch_size), device=device, generator=generator
        )
        g = gradients(params, buffers, split.x[index], split.y[index])
        for name, p in params.items():
            p.sub_(lr.view(-1, *[1] * (p.dim() - 1)) * g[name])

    step()  # warm-up, not timed
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return time.perf_counter() - start, steps * batch_size


def _chapter_costs(device) -> list[tuple[str, str, float]]:
    """Wall time of each experiment's quick profile (computed afresh, not cached)."""
    import os
    import tempfile

    from bnlib import experiments

    experiments.load_all()
    costs = []
    previous = os.environ.get("BNLIB_RESULTS")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["BNLIB_RESULTS"] = tmp
        try:
            for name, exp in sorted(experiments.REGISTRY.items()):
                result = experiments.run(name, "quick", device=str(device), force=True)
                costs.append((name, exp.chapter, result.meta["wall_time_s"]))
        finally:
            if previous is None:
                os.environ.pop("BNLIB_RESULTS", None)
            else:
                os.environ["BNLIB_RESULTS"] = previous
    return costs


def run_benchmarks(
    quick: bool = False,
    device: str | None = None,
    output: str | None = None,
    chapter_costs: bool = True,
) -> str:
    """Run both workloads every way; print and return a Markdown report.

    Args:
        quick: a smoke run (fewer steps, models and repeats; numbers not for quoting).
        device: ``None`` picks the best.
        output: also write the report to this path.
        chapter_costs: also time every experiment's quick profile (minutes; never with
            ``quick``).
    """
    dev = pick_device(device)
    repeats = 1 if quick else 3
    mlp_k, mlp_steps = (4, 50) if quick else (16, 1000)  # 1000 x 60 = one epoch
    res_k, res_steps = (2, 2) if quick else (8, 10)
    naive_models = 1 if quick else 2
    lrs = [0.01 * 1.5**i for i in range(mlp_k)]
    res_lrs = [0.02 * 1.5**i for i in range(res_k)]
    print(f"benchmark on {dev}: measuring the fp32 matmul peak ...", flush=True)
    peak = matmul_peak(dev)
    mnist = datasets.load("mnist", "train", dev)
    mnist_test = datasets.load("mnist", "test", dev)
    fashion = datasets.load("fashion-mnist", "train", dev)

    print("MLP sweep: naive ...", flush=True)
    naive_lrs = [lrs[i * (mlp_k // naive_models)] for i in range(naive_models)]
    naive_acc: dict[float, float] = {}
    mlp_naive_all = []
    for _ in range(repeats):
        for lr in naive_lrs:
            seconds, samples, model = _naive_train(
                "mlp", MLP_CONFIG, "mnist", lr, 0, 60, mlp_steps, dev
            )
            naive_acc[lr] = accuracy(model.eval(), mnist_test)
            mlp_naive_all.append(samples / seconds)
    mlp_naive = statistics.median(mlp_naive_all)

    print("MLP sweep: engine ...", flush=True)
    mlp_engine_all, run = [], None
    for _ in range(repeats):
        seconds, samples, run = _engine_train("mlp", MLP_CONFIG, mnist, lrs, 60, mlp_steps, dev)
        mlp_engine_all.append(samples / seconds)
    mlp_engine = statistics.median(mlp_engine_all)
    engine_acc = {
        lr: accuracy(unstack_member(run.model, k).eval(), mnist_test) for k, lr in enumerate(lrs)
    }
    engine_gflops = mlp_engine * mlp_k * MLP_FLOP_PER_SAMPLE / 1e9

    print("MLP sweep: torch.func ensembling ...", flush=True)
    mlp_func_all = []
    for _ in range(repeats):
        seconds, samples = _functorch_train(MLP_CONFIG, mnist, lrs, 60, mlp_steps, dev)
        mlp_func_all.append(samples / seconds)
    mlp_func = statistics.median(mlp_func_all)

    print("ResNet-20 sweep: naive ...", flush=True)
    res_naive_all = []
    for _ in range(repeats * naive_models):
        seconds, samples, _ = _naive_train(
            "resnet", RESNET_CONFIG, "fashion-mnist", res_lrs[0], 0, 128, res_steps, dev
        )
        res_naive_all.append(samples / seconds)
    res_naive = statistics.median(res_naive_all)
    res_all: dict[str, list[float]] = {"loop": [], "stacked": []}
    for strategy in res_all:
        print(f"ResNet-20 sweep: engine, strategy={strategy} ...", flush=True)
        for _ in range(repeats):
            seconds, samples, _ = _engine_train(
                "resnet", RESNET_CONFIG, fashion, res_lrs, 128, res_steps, dev, strategy
            )
            res_all[strategy].append(samples / seconds)
    default = StackedRun(
        "resnet",
        {"depth": 8},
        [Member(lr=0.1)],
        datasets.Split(fashion.x[:10], fashion.y[:10]),
        batch_size=2,
        device=dev,
    ).strategy

    print("chapter costs: the quick profile of every experiment ...", flush=True)
    costs = _chapter_costs(dev) if chapter_costs and not quick else []

    info = provenance(str(dev))
    lines = [
        f"## {info['device']}, torch {info['torch_version']}, {info['date'][:10]}",
        "",
        f"bnlib {info['bnlib_version']} (source {info['bnlib_source']}, git "
        f"{info['git_revision']}); `python -m bnlib bench{' --quick' if quick else ''}`; "
        f"medians of {repeats} repeats (naive: {repeats * naive_models} model runs).",
        f"fp32 matmul peak (2048x2048, median of 5): **{peak:.0f} GFLOP/s**.",
        "",
        "| workload | way | samples/s, all models | samples/s per model | sweep time (s) "
        "| speed-up |",
        "|---|---|---:|---:|---:|---:|",
    ]

    def rows(workload: str, k: int, samples: int, ways: list[tuple[str, float, bool]]) -> None:
        """``ways``: (label, measured rate per model while it trains, trains all at once)."""
        naive_time = None
        for label, rate, together in ways:
            sweep = samples / rate if together else k * samples / rate
            naive_time = naive_time or sweep
            lines.append(
                f"| {workload} | {label} | {k * samples / sweep:,.0f} | "
                f"{samples / sweep:,.1f} | {sweep:.1f} | {naive_time / sweep:.2f}x |"
            )

    rows(
        f"MLP sweep, K={mlp_k}, {mlp_steps * 60} samples each",
        mlp_k,
        mlp_steps * 60,
        [
            ("(a) naive: DataLoader + nn.Module, one at a time", mlp_naive, False),
            ("(b) engine: all K stacked, on-device data", mlp_engine, True),
            (
                "(c) torch.func: stack_module_state + vmap(functional_call), on-device data "
                "(BN without running statistics)",
                mlp_func,
                True,
            ),
        ],
    )
    res_ways = [("(a) naive: DataLoader + nn.Module, one at a time", res_naive, False)]
    for strategy, label in (
        ("loop", "one model after another"),
        ("stacked", "one stacked model, grouped convs"),
    ):
        mark = " **(the engine's choice here)**" if strategy == default else ""
        res_ways.append(
            (
                f"(b) engine, {label}; on-device data, channels_last{mark}",
                statistics.median(res_all[strategy]),
                True,
            )
        )
    rows(f"ResNet-20 sweep, K={res_k}, {res_steps} steps of 128", res_k, res_steps * 128, res_ways)
    lines += [
        "",
        f"Engine MLP throughput: {engine_gflops:.1f} GFLOP/s "
        f"(at {MLP_FLOP_PER_SAMPLE / 1e6:.2f} MFLOP per sample) = "
        f"**{100 * engine_gflops / peak:.0f}% of the matmul peak**.",
        "",
        "Same config, same accuracy (MNIST test accuracy after the run; the naive and the "
        "engine models see different batch orders, so they agree within seed noise):",
        "",
        "| lr | naive | engine |",
        "|---:|---:|---:|",
    ]
    lines += [f"| {lr:.4g} | {acc:.4f} | {engine_acc[lr]:.4f} |" for lr, acc in naive_acc.items()]
    lines += [
        "",
        "Raw rates (samples/s per model): "
        f"MLP naive {[round(r) for r in mlp_naive_all]}, "
        f"engine {[round(r) for r in mlp_engine_all]}, torch.func "
        f"{[round(r) for r in mlp_func_all]}; ResNet naive "
        f"{[round(r, 1) for r in res_naive_all]}, engine loop "
        f"{[round(r, 1) for r in res_all['loop']]}, engine stacked "
        f"{[round(r, 1) for r in res_all['stacked']]}.",
    ]
    if costs:
        lines += [
            "",
            "What a chapter costs: the quick profile of each experiment, computed afresh:",
            "",
            "| experiment | chapter | wall time (s) |",
            "|---|---|---:|",
        ]
        lines += [f"| {name} | {chapter} | {seconds:.1f} |" for name, chapter, seconds in costs]
    report = "\n".join(lines) + "\n"
    print(report)
    if output:
        Path(output).write_text(report)
    return report
