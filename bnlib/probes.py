"""Probes: measurements taken on a :class:`bnlib.engine.StackedRun` at chosen steps.

A probe is a function ``probe(run, step) -> list[dict]``; each dict is one measurement
with at least ``member``, ``metric`` and ``value``. Probes measure on fixed data (a probe
batch, the test set) so that values at different steps are comparable, and leave the
training state exactly as it was (parameters, BN running statistics, gradients, mode).

Make one with :func:`activation_stats`, :func:`gradient_norms` or :func:`test_accuracy`,
and pass it to :meth:`bnlib.engine.StackedRun.train`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from bnlib.data import Split
from bnlib.engine import preserved_state
from bnlib.models import member_gradients, member_modules
from bnlib.norm import replayed_noise

__all__ = [
    "activation_stats",
    "gradient_norms",
    "internal_covariate_shift",
    "preserved_state",
    "test_accuracy",
]


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
            batch's statistics; running statistics are restored afterwards; noise layers,
            :class:`bnlib.norm.DistributionNoise`, reuse the last training step's
            per-unit shift and scale rather than drawing their own).
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
            with preserved_state(model), replayed_noise(model), torch.no_grad():
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
    groups: Sequence[Sequence[nn.Parameter]] | None = None,
) -> list[dict]:
    r"""Internal covariate shift as Santurkar, Tsipras, Ilyas & Madry (2018) define it.

    For layer :math:`i` with weights :math:`W_i`: :math:`G_i` is the gradient of the loss
    with respect to :math:`W_i` on the batch ``(x, y)``; :math:`G'_i` is the same gradient,
    on the same batch, after every layer before :math:`i` has taken its training update:
    all of those layers' parameters (weights, biases, BN's :math:`\gamma, \beta`) move by
    :math:`-\eta\, \partial\ell/\partial\theta`, the gradient taken at the current
    parameters on the same batch. With ``(x, y)`` the batch of the next training step and
    plain SGD at rate :math:`\eta`, this is exactly the update training makes
    (Santurkar et al., Definition 2.1). ICS is :math:`\|G_i - G'_i\|_2`, also given as
    the cosine between :math:`G_i` and :math:`G'_i`. For the first layer nothing precedes
    it, so :math:`G'_1 = G_1` by construction.

    Args:
        model: a single model (not a stack), in the mode to measure in (BN in train mode
            uses the batch's statistics, as during training).
        layers: the modules whose ``weight`` is :math:`W_1, \dots, W_k`, in forward order.
        x, y: the batch, ``(N, ...)`` and the targets ``loss_fn`` takes.
        lr: :math:`\eta`, the learning rate of the update of the previous layers.
        loss_fn: ``loss_fn(model(x), y)``, a scalar; cross-entropy by default.
        groups: ``groups[i]``, the parameters of layer :math:`i` (updated when a later
            layer is measured); default: each layer module's own parameters. An MLP with
            BN passes ``[linear_i, bn_i]``'s parameters, so that :math:`\gamma, \beta` move
            too.

    Returns:
        One row per layer: ``layer`` (index, 0 = first), ``ics`` (the L2 distance),
        ``cosine``, ``grad_norm`` (:math:`\|G_i\|`). The model is left unchanged
        (parameters, buffers, gradients, mode).
    """
    if groups is None:
        groups = [list(layer.parameters()) for layer in layers]
    if len(groups) != len(layers):
        raise ValueError(f"groups has {len(groups)} entries for {len(layers)} layers")
    weights = [layer.weight for layer in layers]
    updated = [p for group in groups for p in group]
    with preserved_state(model):
        originals = [p.detach().clone() for p in updated]
        grads = dict(zip(updated, torch.autograd.grad(loss_fn(model(x), y), updated)))
        rows = []
        try:
            for i, weight in enumerate(weights):
                earlier = [p for group in groups[:i] for p in group]
                with torch.no_grad():
                    for p in earlier:
                        p.sub_(lr * grads[p])
                g_after = torch.autograd.grad(loss_fn(model(x), y), weight)[0]
                with torch.no_grad():
                    for p, original in zip(updated, originals):
                        p.copy_(original)
                g, h = grads[weight].flatten(), g_after.flatten()
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
                for p, original in zip(updated, originals):
                    p.copy_(original)
    return rows
