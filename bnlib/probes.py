"""Probes: measurements taken on a :class:`bnlib.engine.StackedRun` at chosen steps.

A probe is a function ``probe(run, step) -> list[dict]``; each dict is one measurement
with at least ``member``, ``metric`` and ``value``. Probes measure on fixed data (a probe
batch, the test set) so that values at different steps are comparable, and leave the
training state exactly as it was (parameters, BN running statistics, gradients, mode).

Make one with :func:`activation_stats`, :func:`gradient_norms` or :func:`test_accuracy`,
and pass it to :meth:`bnlib.engine.StackedRun.train`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from bnlib.data import Split
from bnlib.models import member_gradients, member_modules

__all__ = [
    "activation_stats",
    "gradient_norms",
    "internal_covariate_shift",
    "preserved_state",
    "test_accuracy",
]


@contextlib.contextmanager
def preserved_state(model: nn.Module) -> Iterator[None]:
    """Run code on ``model`` and then restore its buffers (BN running statistics), its
    gradients and its train/eval mode."""
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    grads = {p: p.grad for p in model.parameters()}
    training = model.training
    try:
        yield
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        for p, g in grads.items():
            p.grad = g
        model.train(training)


def _expand(x: torch.Tensor, k: int) -> torch.Tensor:
    """Give every member the same examples: ``(N, ...)`` -> ``(N, K, ...)`` (a view)."""
    return x.unsqueeze(1).expand(x.shape[0], k, *x.shape[1:])


def _per_member(t: torch.Tensor, k: int, per_channel: bool) -> torch.Tensor:
    """A captured activation ``(N, K*C, ...)`` as ``(K, values)`` or ``(K, C, values)``."""
    t = t.detach().float().unflatten(1, (k, -1))  # (N, K, C, ...)
    t = t.movedim(1, 0).movedim(2, 1)  # (K, C, N, ...)
    return t.flatten(2) if per_channel else t.flatten(1)


def activation_stats(
    x: torch.Tensor,
    layers: Sequence[str],
    percentiles: Sequence[float] = (15, 50, 85),
    per_channel: bool = False,
    capture: str = "output",
    mode: str = "eval",
    units: Sequence[int] | None = None,
):
    """A probe of activation statistics per layer and member, on a fixed probe batch.

    Args:
        x: the probe inputs ``(N, C, H, W)``, on the run's device; every member sees them.
        layers: names of modules of the stacked model (``dict(model.named_modules())``
            keys), e.g. ``"norms.2"`` for the output of an MLP's third BN layer, which is
            the input of its third activation.
        percentiles: which percentiles to report (0-100).
        per_channel: statistics per unit/channel (rows get a ``channel`` column) rather
            than over all of the layer's values.
        capture: ``"output"`` or ``"input"`` of each module.
        mode: ``"eval"`` (BN uses running statistics) or ``"train"`` (BN uses the probe
            batch's statistics; running statistics are restored afterwards).
        units: with ``per_channel``, only these channels (default: all).

    Returns:
        The probe. Its rows: ``member, layer, metric, value`` (+ ``channel``), metrics
        ``mean``, ``std`` and ``p15``-style percentiles.
    """
    if capture not in ("output", "input"):
        raise ValueError(f"capture must be 'output' or 'input', got {capture!r}")
    if mode not in ("eval", "train"):
        raise ValueError(f"mode must be 'eval' or 'train', got {mode!r}")
    q = torch.tensor([p / 100 for p in percentiles])

    def probe(run, step: int) -> list[dict]:
        model, k = run.model, run.k
        modules = {name: member_modules(model, name) for name in layers}
        captured: dict[str, list[torch.Tensor]] = {name: [] for name in layers}

        def hook(name):
            def keep(module, inputs, output):
                captured[name].append(inputs[0] if capture == "input" else output)

            return keep

        handles = [m.register_forward_hook(hook(name)) for name in layers for m in modules[name]]
        try:
            with preserved_state(model), torch.no_grad():
                model.train(mode == "train")
                run.forward(_expand(x, k))
        finally:
            for h in handles:
                h.remove()
        rows = []
        for name in layers:  # a loop's K outputs, joined like a stack's: (N, K*C, ...)
            values = _per_member(torch.cat(captured[name], dim=1), k, per_channel)
            if per_channel and units is not None:
                values = values[:, list(units)]
            stats = {"mean": values.mean(-1), "std": values.std(-1)}
            quantiles = torch.quantile(values, q.to(values.device), dim=-1)  # (P, K[, C])
            for p, row in zip(percentiles, quantiles):
                stats[f"p{p:g}"] = row
            for metric, tensor in stats.items():
                tensor = tensor.cpu()
                for member in range(k):
                    if per_channel:
                        chans = list(units) if units is not None else range(tensor.shape[1])
                        rows += [
                            {
                                "member": member,
                                "layer": name,
                                "channel": c,
                                "metric": metric,
                                "value": float(tensor[member, j]),
                            }
                            for j, c in enumerate(chans)
                        ]
                    else:
                        rows.append(
                            {
                                "member": member,
                                "layer": name,
                                "metric": metric,
                                "value": float(tensor[member]),
                            }
                        )
        return rows

    return probe


def gradient_norms(x: torch.Tensor, y: torch.Tensor, parameters: Sequence[str] | None = None):
    """A probe of the L2 norm of each parameter's gradient, per member, on a fixed batch.

    The gradient is that of each member's mean cross-entropy on ``(x, y)`` with the
    network in train mode (BN uses the batch's statistics, as in training); BN running
    statistics and the training gradients are restored afterwards.

    Args:
        x, y: the probe batch, ``(N, C, H, W)`` and ``(N,)``, on the run's device.
        parameters: names of parameters (``model.named_parameters()``); default all.

    Returns:
        The probe. Rows: ``member, layer (the parameter's name), metric="grad norm", value``.
    """

    def probe(run, step: int) -> list[dict]:
        model, k = run.model, run.k
        with preserved_state(model):
            model.train()
            for p in model.parameters():
                p.grad = None
            run.losses(run.forward(_expand(x, k)), y[:, None].expand(-1, k)).sum().backward()
            rows = []
            for member in range(k):
                grads = member_gradients(model, member)
                names = list(parameters) if parameters is not None else list(grads)
                rows += [
                    {
                        "member": member,
                        "layer": n,
                        "metric": "grad norm",
                        "value": float(grads[n].norm()),
                    }
                    for n in names
                    if grads[n] is not None
                ]
        return rows

    return probe


def test_accuracy(
    split: Split,
    examples_per_chunk: int | None = None,
    statistics: str = "running",
    metric: str = "test accuracy",
):
    """A probe of each member's accuracy on ``split``.

    Args:
        split: the data, on the run's device.
        examples_per_chunk: examples per forward pass. With ``statistics="running"`` only
            a matter of memory (default: about 8M input values for all members together);
            with ``"batch"`` it is the batch whose statistics BN uses.
        statistics: ``"running"``: eval mode, BN uses its running (population)
            statistics, Algorithm 2 of Ioffe & Szegedy; ``"batch"``: train mode, BN
            normalizes each chunk with the chunk's own statistics (running statistics
            restored afterwards).
        metric: the name in the rows.

    Returns:
        The probe. Rows: ``member, metric, value``.
    """
    if statistics not in ("running", "batch"):
        raise ValueError(f"statistics must be 'running' or 'batch', got {statistics!r}")
    if statistics == "batch" and not examples_per_chunk:
        raise ValueError("statistics='batch' needs examples_per_chunk (the batch size)")

    def probe(run, step: int) -> list[dict]:
        model, k = run.model, run.k
        per_example = split.x[0].numel()
        chunk = examples_per_chunk or max(1, 8_000_000 // (k * per_example))
        correct = torch.zeros(k, device=split.x.device)
        with preserved_state(model), torch.no_grad():
            model.train(statistics == "batch")
            for xb, yb in zip(split.x.split(chunk), split.y.split(chunk)):
                correct += (run.forward(_expand(xb, k)).argmax(-1) == yb[:, None]).sum(0)
        acc = (correct / len(split.y)).cpu()
        return [{"member": m, "metric": metric, "value": float(acc[m])} for m in range(k)]

    return probe


def internal_covariate_shift(
    model: nn.Module,
    layers: Sequence[nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    lr: float,
    loss_fn=nn.functional.cross_entropy,
) -> list[dict]:
    r"""Internal covariate shift as Santurkar, Tsipras, Ilyas & Madry (2018) define it.

    For layer :math:`i` with weights :math:`W_i`: :math:`G_i` is the gradient of the loss
    with respect to :math:`W_i` on the batch ``(x, y)``; :math:`G'_i` is the same gradient,
    on the same batch, after every layer before :math:`i` has taken its SGD step
    (:math:`W_j \leftarrow W_j - \eta\, \partial\ell/\partial W_j` for :math:`j < i`, from
    the gradients at the current weights). ICS is :math:`\|G_i - G'_i\|_2`, also given as
    the cosine between :math:`G_i` and :math:`G'_i`.

    Args:
        model: a single model (not a stack), in the mode to measure in (BN in train mode
            uses the batch's statistics, as during training).
        layers: the modules whose ``weight`` is :math:`W_1, \dots, W_k`, in forward order.
        x, y: the batch.
        lr: :math:`\eta`, the step of the previous layers.
        loss_fn: ``loss_fn(model(x), y)``; cross-entropy by default.

    Returns:
        One row per layer: ``layer`` (index), ``ics`` (the L2 distance), ``cosine``,
        ``grad_norm`` (:math:`\|G_i\|`). The model is left unchanged (weights, buffers,
        gradients, mode).
    """
    weights = [layer.weight for layer in layers]
    with preserved_state(model):
        originals = [w.detach().clone() for w in weights]
        grads = torch.autograd.grad(loss_fn(model(x), y), weights)
        rows = []
        try:
            for i in range(len(weights)):
                with torch.no_grad():
                    for j in range(i):
                        weights[j].sub_(lr * grads[j])
                g_after = torch.autograd.grad(loss_fn(model(x), y), weights[i])[0]
                with torch.no_grad():
                    for j in range(i):
                        weights[j].copy_(originals[j])
                g, h = grads[i].flatten(), g_after.flatten()
                rows.append(
                    {
                        "layer": i,
                        "ics": float((g - h).norm()),
                        "cosine": float(g @ h / (g.norm() * h.norm()).clamp_min(1e-30)),
                        "grad_norm": float(g.norm()),
                    }
                )
        finally:
            with torch.no_grad():
                for w, original in zip(weights, originals):
                    w.copy_(original)
    return rows
