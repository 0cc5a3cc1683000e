"""Running experiments on a Ray cluster: ``python -m bnlib run NAME --ray [ADDRESS]``.

An experiment's sweep is split into **shards** where its rows are independent: along the
first list argument its registration names in ``shard_on`` (seeds, normalizations, batch
sizes...), one value per shard. Running the experiment on part of such a list computes
exactly those rows of the whole run (``tests/test_distributed.py`` checks it for every
experiment that names one); experiments that name none run as one task. Each shard is one
Ray task, asking for one
GPU where the cluster has GPUs and one CPU otherwise; a task whose worker dies is retried
(:data:`RETRIES` times); a shard that keeps failing fails the run with a message naming
it. The shards' frames are merged, in the order of the sweep's values, into the same tidy
frame that one process computes, and stored by :func:`bnlib.experiments.run` with the same
provenance (plus the cluster's resources, under ``"ray"``). Nothing is stored unless every
shard finished.

``run --all --ray`` gives each experiment its own shards in turn. Without an address a
local Ray is started for the run (``ray.init``), with one; an existing cluster is joined.

Ray is optional: ``pip install "bnlib[ray]"`` (or ``pip install ray``) brings it; without
it ``--ray`` says so. Nothing else in bnlib imports Ray.

This module changes no result (shards compute exactly the rows of one process), so it is
not part of any result's cache key (:data:`bnlib.provenance.NOT_COMPUTATION`).
"""

from __future__ import annotations

import inspect
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

__all__ = [
    "RETRIES",
    "RayRunner",
    "RayUnavailableError",
    "Shard",
    "ShardFailedError",
    "connect",
    "shards",
    "split_key",
]

#: How many times Ray retries a shard whose worker died (then the run fails).
RETRIES = 3
#: Seconds to wait for a cluster's address to answer before giving up.
CONNECT_TIMEOUT = 5.0


class RayUnavailableError(RuntimeError):
    """Ray is not installed, or the cluster cannot be reached."""


class ShardFailedError(RuntimeError):
    """A shard failed on every try; the run stored nothing."""


@dataclass(frozen=True)
class Shard:
    """One independent part of an experiment's sweep.

    Attributes:
        key: the list argument split on (``"seeds"``), or ``None`` for the whole run.
        value: this shard's value of it (``None`` for the whole run).
        config: the experiment's arguments with ``key`` narrowed to ``[value]``.
    """

    key: str | None
    value: object
    config: dict

    @property
    def label(self) -> str:
        """``"seeds=1"``, or ``"the whole run"``: how messages name the shard."""
        return "the whole run" if self.key is None else f"{self.key}={self.value!r}"


def split_key(name: str, config: dict) -> str | None:
    """The list argument of experiment ``name`` that its sweep is split on, or None.

    The candidates are the arguments its registration names as independent
    (``shard_on``: running on part of such a list returns exactly those rows of the whole
    run, which ``tests/test_distributed.py`` checks); the first that holds two values or
    more in ``config`` (or in the function's defaults) is taken.
    """
    from bnlib import experiments

    full = _with_defaults(name, config)
    for key in experiments.get(name).shard_on:
        values = full.get(key)
        if isinstance(values, (list, tuple)) and len(values) > 1:
            return key
    return None


def _with_defaults(name: str, config: dict) -> dict:
    """``config`` with the experiment function's defaults for the arguments it leaves out
    (a sweep the profile does not set, such as the normalizations compared)."""
    from bnlib import experiments

    parameters = inspect.signature(experiments.get(name).function).parameters.values()
    defaults = {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}
    return {**defaults, **config}


def shards(name: str, config: dict) -> list[Shard]:
    """Experiment ``name``'s run with arguments ``config``, split into shards.

    Returns:
        One :class:`Shard` per value of :func:`split_key`'s argument, in the order of its
        values; a single shard (the whole run) when nothing can be split.
    """
    key = split_key(name, config)
    if key is None:
        return [Shard(None, None, dict(config))]
    values = _with_defaults(name, config)[key]
    return [Shard(key, value, {**config, key: [value]}) for value in values]


def _import_ray():
    try:
        import ray
    except ImportError as error:
        raise RayUnavailableError(
            "--ray needs Ray, which is not installed: pip install 'bnlib[ray]' (or pip "
            "install ray), or run without --ray"
        ) from error
    return ray


def _reachable(address: str) -> None:
    """Fail at once, and clearly, if ``host:port`` does not answer."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise RayUnavailableError(
            f"--ray {address!r} is not a cluster address: give HOST:PORT (e.g. "
            "10.0.0.5:6379, the head node's `ray start --head` port), or no address for a "
            "local Ray"
        )
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as error:
        raise RayUnavailableError(
            f"no Ray cluster answers at {address} ({error.strerror or error}); start one with "
            "`ray start --head` there, check the address, or run --ray without an address "
            "for a local Ray"
        ) from error


def connect(address: str | None = None, num_cpus: int | None = None) -> dict:
    """Join the Ray cluster at ``address``, or start a local one (``address=None``).

    Args:
        address: ``HOST:PORT`` of a running cluster's head, ``"auto"`` for the one this
            machine belongs to, or None for a local Ray started for this run.
        num_cpus: CPUs a local Ray may use (default: all).

    Returns:
        The cluster's resources (``{"CPU": 2.0, "GPU": 0.0, ...}``, Ray's names).

    Raises:
        RayUnavailableError: Ray is not installed, or nothing answers at ``address``.
    """
    ray = _import_ray()
    if address:
        _reachable(address)
    if ray.is_initialized():  # joined already (tests; a notebook that called ray.init)
        return dict(ray.cluster_resources())
    if address:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    else:
        ray.init(
            num_cpus=num_cpus, logging_level="ERROR", log_to_driver=False, include_dashboard=False
        )
    return dict(ray.cluster_resources())


def _compute_shard(name: str, config: dict, device: str | None, threads: int) -> pd.DataFrame:
    import torch

    from bnlib import experiments

    # Ray gives a one-CPU task one thread; on a CPU torch's sums depend on the thread
    # count, so a shard uses the driver's, and computes the rows one process would
    torch.set_num_threads(threads)
    function = experiments.get(name).function
    extra = {"device": device} if "device" in inspect.signature(function).parameters else {}
    return function(**config, **extra)


def _key(name: str, config: dict) -> str:
    import json

    return name + json.dumps(config, sort_keys=True, default=repr)


class RayRunner:
    """Runs experiments' shards as Ray tasks; its :meth:`compute` is what
    :func:`bnlib.experiments.run` takes as ``compute=``.

    :meth:`submit` queues a run's shards without waiting, so that ``run --all`` can put
    every experiment's shards on the cluster at once; :meth:`compute` then collects a
    submitted run (or submits and collects one that was not). One progress bar counts the
    shards of everything submitted, with the time left.

    Args:
        address: the cluster (see :func:`connect`); None starts a local Ray.
        num_cpus: CPUs of a local Ray (default: all).
        on_progress: called with (shards done, shards submitted, seconds elapsed) after
            each shard; by default a progress bar (:func:`bnlib.progress.progress_bar`).
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: int | None = None,
        on_progress: Callable[[int, int, float], None] | None = None,
    ):
        self.address = address
        self.resources = connect(address, num_cpus)
        self._ray = _import_ray()
        self.gpus = self.resources.get("GPU", 0) > 0
        self._task = self._ray.remote(
            num_cpus=1, num_gpus=1 if self.gpus else 0, max_retries=RETRIES
        )(_compute_shard)
        self._submitted: dict[str, tuple[list[Shard], list, str]] = {}
        self._on_progress = on_progress
        self._bar = None
        self.done = self.total = 0
        self._start = time.perf_counter()

    def description(self) -> str:
        """``"Ray (local: 2 CPUs, 0 GPUs)"``: where the shards run."""
        cpus, gpus = self.resources.get("CPU", 0), self.resources.get("GPU", 0)
        return f"Ray ({self.address or 'local'}: {cpus:g} CPUs, {gpus:g} GPUs)"

    def submit(self, name: str, config: dict, device: str | None = None) -> None:
        """Queue experiment ``name``'s run with arguments ``config``, split into shards."""
        import torch

        key = _key(name, config)
        if key in self._submitted:
            return
        parts = shards(name, config)
        where = ("cuda" if self.gpus else "cpu") if device is None else device
        threads = torch.get_num_threads()
        refs = [self._task.remote(name, part.config, where, threads) for part in parts]
        self._submitted[key] = (parts, refs, where)
        self.total += len(parts)

    def compute(self, name: str, config: dict, device: str | None) -> tuple[pd.DataFrame, dict]:
        """The merged frame of the run (submitted now if it was not) and what to record of
        the cluster.

        Raises:
            ShardFailedError: a shard failed :data:`RETRIES` + 1 times (the message names it);
                the run's other shards are cancelled and nothing is returned.
        """
        self.submit(name, config, device)
        parts, refs, where = self._submitted.pop(_key(name, config))
        frames: list[pd.DataFrame | None] = [None] * len(parts)
        pending = {ref: i for i, ref in enumerate(refs)}
        while pending:
            ready, _ = self._ray.wait(list(pending), num_returns=1)
            index = pending.pop(ready[0])
            try:
                frames[index] = self._ray.get(ready[0])
            except Exception as error:
                for ref in pending:
                    self._ray.cancel(ref, force=True)
                raise ShardFailedError(
                    f"{name}: shard {parts[index].label} failed after {RETRIES} retries; "
                    f"nothing was stored ({type(error).__name__}: {_last_line(error)})"
                ) from error
            self._advance()
        frame = pd.concat(frames, ignore_index=True)
        cluster = {
            "address": self.address or "local",
            "resources": {k: v for k, v in self.resources.items() if k in ("CPU", "GPU")},
            "nodes": sum(1 for node in self._ray.nodes() if node.get("Alive")),
            "split_on": parts[0].key,
            "shards": len(parts),
            "shard_device": where,
        }
        return frame, cluster

    def _advance(self) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self._start
        if self._on_progress is not None:
            self._on_progress(self.done, self.total, elapsed)
            return
        from bnlib.progress import progress_bar

        if self._bar is None:
            self._bar = progress_bar(total=self.total, desc="shards on Ray")
        self._bar.update(1)
        if self.done == self.total:
            self._bar.close()
            self._bar = None


def _last_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[-1] if text else ""
