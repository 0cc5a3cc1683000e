"""Running experiments on a Ray cluster: ``python -m bnlib run NAME --ray [ADDRESS]``.

An experiment's sweep is split into **shards** where its rows are independent: along the
first list argument its registration names in ``shard_on`` (seeds, normalizations, batch
sizes...), one value per shard. Running the experiment on part of such a list computes
exactly those rows of the whole run (``tests/test_distributed.py`` checks it for every
experiment that names one); experiments that name none run as one task. Each shard is one
Ray task: on a GPU (one of its own) where the cluster has GPUs and the experiment takes a
device, else on as many CPUs as the threads torch uses in the process that started the
run (on a CPU torch's sums depend on the thread count, and so would the rows). A task
whose worker dies is retried (:data:`RETRIES` times); a shard that raises is not (it
would fail the same way); either fails the run with a message naming the shard, and
nothing is stored. The shards' frames are merged, in the order of the split argument's
values, and stored by :func:`bnlib.experiments.run` as a run in one process is, with the
cluster recorded (``"cluster"``) and the workers' device and versions in the provenance.
Workers must run the same bnlib as the process that starts the run (checked: a shard
from other code fails the run) and see the data at the same path (bnlib's environment
variables are passed to them).

``run --all --ray`` puts every experiment's shards on the cluster at once and stores each
experiment's result once its shards are in. Without an address a new local Ray is started
for the run; with one, an existing cluster is joined.

Ray is optional: ``pip install "bnlib[ray]"`` (or ``pip install ray``) brings it; without
it ``--ray`` says so. Nothing else in bnlib imports Ray.

This module changes no result (shards compute exactly the rows of one process), so it is
not part of any result's cache key (:data:`bnlib.provenance.NOT_COMPUTATION`).
"""

from __future__ import annotations

import contextlib
import os
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

    experiment = experiments.get(name)
    full = experiment.with_defaults(config)
    for key in experiment.shard_on:
        values = full.get(key)
        if isinstance(values, (list, tuple)) and len(values) > 1:
            return key
    return None


def shards(name: str, config: dict) -> list[Shard]:
    """Experiment ``name``'s run with arguments ``config``, split into shards.

    Returns:
        One :class:`Shard` per value of :func:`split_key`'s argument, in the order of its
        values; a single shard (the whole run) when nothing can be split.
    """
    key = split_key(name, config)
    if key is None:
        return [Shard(None, None, dict(config))]
    from bnlib import experiments

    values = experiments.get(name).with_defaults(config)[key]
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


def _worker_environment() -> dict[str, str]:
    """bnlib's environment variables, for workers on other machines (a local Ray's workers
    inherit them anyway): the data and results folders made absolute."""
    env = {k: v for k, v in os.environ.items() if k.startswith("BNLIB_")}
    for key in ("BNLIB_DATA", "BNLIB_RESULTS"):
        if key in env:
            env[key] = os.path.abspath(os.path.expanduser(env[key]))
    return env


def connect(address: str | None = None, num_cpus: int | None = None) -> dict:
    """Join the Ray cluster at ``address``, or start a local one (``address=None``).

    Args:
        address: ``HOST:PORT`` of a running cluster's head (from a machine of the
            cluster), ``ray://HOST:10001`` (Ray Client, from outside it), ``"auto"`` for
            the cluster this machine belongs to, or None for a new local Ray.
        num_cpus: CPUs a local Ray may use (default: all).

    Returns:
        The cluster's resources (``{"CPU": 2.0, "GPU": 0.0, ...}``, Ray's names).

    Raises:
        RayUnavailableError: Ray is not installed, nothing answers at ``address``, or what
            answers is not a Ray cluster this Ray can join.
    """
    ray = _import_ray()
    if address:
        _reachable(address)
    if ray.is_initialized():  # joined already (tests; a notebook that called ray.init)
        return dict(ray.cluster_resources())
    options = {
        "logging_level": "ERROR",
        "log_to_driver": False,
        "runtime_env": {"env_vars": _worker_environment()},
    }
    try:
        if address:
            ray.init(address=address, **options)
        else:  # "local": never a cluster that RAY_ADDRESS or an earlier `ray start` names
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **options)
    except Exception as error:
        raise RayUnavailableError(
            f"could not {'join the Ray cluster at ' + address if address else 'start a local Ray'}"
            f" ({type(error).__name__}: {_last_line(error)}); from a machine of the cluster "
            "give its head's GCS port (HOST:6379), from outside it Ray Client's "
            "(ray://HOST:10001); this Ray and Python must be the cluster's versions"
        ) from error
    return dict(ray.cluster_resources())


def _compute_shard(
    name: str, config: dict, device: str | None, threads: int, source: str
) -> tuple[pd.DataFrame, dict]:
    """One shard, in a Ray worker: its frame, and what the worker was (device, versions,
    host, and when it started and finished, in seconds since the epoch).

    Raises:
        ValueError: the worker's bnlib is not ``source`` (the driver's), checked before
            any work: rows from other code must not be merged into the result.
    """
    import torch

    from bnlib import experiments
    from bnlib.provenance import device_description, source_hash

    here = source_hash()
    if here != source:
        raise ValueError(
            f"this worker ({socket.gethostname()}) runs bnlib source {here}, the process that "
            f"started the run has {source}: install that checkout on every node of the "
            "cluster"
        )
    # Ray gives a one-CPU task one thread; on a CPU torch's sums depend on the thread
    # count, so a shard uses the driver's (and asks Ray for that many CPUs)
    torch.set_num_threads(threads)
    started, start = time.time(), time.perf_counter()
    frame = experiments.get(name).call(config, device)
    return frame, {
        "device": device_description(device),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda or "",
        "host": socket.gethostname(),
        "seconds": time.perf_counter() - start,
        "started": started,
        "finished": time.time(),
    }


def _key(name: str, config: dict) -> str:
    import json

    return name + json.dumps(config, sort_keys=True, default=repr)


class RayRunner:
    """Runs experiments' shards as Ray tasks; its :meth:`compute` is what
    :func:`bnlib.experiments.run` takes as ``compute=``.

    :meth:`submit` queues a run's shards without waiting, so that ``run --all`` can put
    every experiment's shards on the cluster at once; :meth:`compute` then collects a
    submitted run (or submits and collects one that was not). One progress bar counts the
    shards of everything submitted, with the time left; :meth:`close` cancels what is
    still queued and closes it.

    Args:
        address: the cluster (see :func:`connect`); None starts a local Ray.
        num_cpus: CPUs of a local Ray (default: all).
        on_progress: called with (shards done, shards submitted, seconds elapsed) after
            each shard, instead of the progress bar.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: int | None = None,
        on_progress: Callable[[int, int, float], None] | None = None,
    ):
        import torch

        from bnlib.provenance import source_hash

        self.address = address
        self.resources = connect(address, num_cpus)
        self._ray = _import_ray()
        self.gpus = self.resources.get("GPU", 0) > 0
        self.threads = torch.get_num_threads()
        self._source = source_hash()
        self._task = self._ray.remote(max_retries=RETRIES)(_compute_shard)
        self._submitted: dict[str, tuple[list[Shard], list, str | None]] = {}
        self._on_progress = on_progress
        self._bar = None
        self.done = self.total = 0
        self._start = time.perf_counter()

    def description(self) -> str:
        """``"Ray (local: 2 CPUs, 0 GPUs)"``: where the shards run."""
        cpus, gpus = self.resources.get("CPU", 0), self.resources.get("GPU", 0)
        return f"Ray ({self.address or 'local'}: {cpus:g} CPUs, {gpus:g} GPUs)"

    def _device(self, name: str, device: str | None) -> str | None:
        """The device a shard of ``name`` computes on (None: the experiment takes none)."""
        from bnlib import experiments

        if not experiments.get(name).takes_device:
            return None
        if device is None:
            return "cuda" if self.gpus else "cpu"
        if ":" in device:
            raise ValueError(
                f"--device {device} with --ray: give cuda or cpu; Ray gives each shard one "
                "GPU of its own"
            )
        if device.startswith("cuda") and not self.gpus:
            raise ValueError(
                f"--device {device}: the Ray cluster ({self.description()}) has no GPU"
            )
        return device

    def submit(self, name: str, config: dict, device: str | None = None) -> None:
        """Queue experiment ``name``'s run with arguments ``config``, split into shards."""
        key = _key(name, config)
        if key in self._submitted:
            return
        parts = shards(name, config)
        where = self._device(name, device)
        gpu = where is not None and where.startswith("cuda")
        task = self._task.options(num_cpus=1 if gpu else self.threads, num_gpus=1 if gpu else 0)
        refs = [task.remote(name, part.config, where, self.threads, self._source) for part in parts]
        self._submitted[key] = (parts, refs, where)
        self.total += len(parts)
        if self._on_progress is None:
            if self._bar is None:
                from bnlib.progress import progress_bar

                self._bar = progress_bar(total=0, desc="shards on Ray", unit=" shards")
            self._bar.grow(len(parts))

    def compute(self, name: str, config: dict, device: str | None) -> tuple[pd.DataFrame, dict]:
        """The merged frame of the run (submitted now if it was not), and what to add to
        its metadata: ``cluster`` (address, resources, the split, the shards' workers and
        compute seconds) and ``provenance`` (the workers' device and versions).

        The metadata's ``wall_time_s`` is the run's span on the cluster (its first shard's
        start to its last shard's end), not the time this call waited.

        Raises:
            ShardFailedError: a shard's worker died :data:`RETRIES` + 1 times, a shard
                raised (not retried: it would fail the same way), or a worker runs other
                bnlib code than this process (checked before it computes); the message
                names the shard. The run's other shards are cancelled and nothing is
                returned.
        """
        self.submit(name, config, device)
        parts, refs, where = self._submitted.pop(_key(name, config))
        results: list = [None] * len(parts)
        pending = {ref: i for i, ref in enumerate(refs)}
        try:
            while pending:
                ready, _ = self._ray.wait(list(pending), num_returns=1)
                index = pending.pop(ready[0])
                try:
                    results[index] = self._ray.get(ready[0])
                except Exception as error:
                    raise self._failure(name, parts[index], error) from error
                self._advance()
        finally:
            self._cancel(pending)
        frame = pd.concat([frame for frame, _ in results], ignore_index=True)
        workers = [info for _, info in results]
        devices = sorted({w["device"] for w in workers})
        seconds = [w["seconds"] for w in workers]
        cluster = {
            "address": self.address or "local",
            "resources": {k: v for k, v in self.resources.items() if k in ("CPU", "GPU")},
            "split_on": parts[0].key,
            "shards": len(parts),
            "shard_device": where,
            "threads_per_shard": self.threads,
            "hosts": sorted({w["host"] for w in workers}),
            "shard_seconds": {"sum": sum(seconds), "max": max(seconds)},
        }
        provenance = {
            "device": "; ".join(devices) + f" (Ray, {len(parts)} shards)",
            "torch_version": "; ".join(sorted({w["torch_version"] for w in workers})),
            "cuda_version": "; ".join(sorted({w["cuda_version"] for w in workers})),
        }
        # the run's own span on the cluster, first shard's start to last shard's end: the
        # driver may collect it long after (run --all collects one experiment at a time)
        span = max(w["finished"] for w in workers) - min(w["started"] for w in workers)
        wall = max(span, max(seconds))  # clocks of different hosts may disagree
        return frame, {"cluster": cluster, "provenance": provenance, "wall_time_s": wall}

    def cancel(self, name: str, config: dict) -> None:
        """Stop a submitted run's shards (its result will not be collected)."""
        submitted = self._submitted.pop(_key(name, config), None)
        if submitted is not None:
            self._cancel(submitted[1])

    def _failure(self, name: str, shard: Shard, error: Exception) -> ShardFailedError:
        task_error = getattr(self._ray.exceptions, "RayTaskError", ())
        if isinstance(error, task_error):  # the shard's code raised: Ray does not retry it
            cause = getattr(error, "cause", None) or error
            detail = (
                f"{type(cause).__name__}: {cause}"
                if isinstance(cause, (ValueError, OSError))
                else str(error)  # a bug: the remote traceback is what its fix needs
            )
            return ShardFailedError(
                f"{name}: shard {shard.label} raised {detail}; not retried (it would fail the "
                "same way); nothing was stored"
            )
        return ShardFailedError(
            f"{name}: shard {shard.label} failed {RETRIES + 1} times ({type(error).__name__}: "
            f"{_last_line(error)}; its worker or node died); nothing was stored"
        )

    def _cancel(self, refs) -> None:
        for ref in refs:
            # finished, or Ray already shut down: nothing left to stop
            with contextlib.suppress(Exception):
                self._ray.cancel(ref, force=True)

    def _advance(self) -> None:
        self.done += 1
        if self._on_progress is not None:
            self._on_progress(self.done, self.total, time.perf_counter() - self._start)
        elif self._bar is not None:
            self._bar.update(1)

    def close(self) -> None:
        """Cancel the shards still queued (a run that stopped early) and close the bar."""
        for _, refs, _ in self._submitted.values():
            self._cancel(refs)
        self._submitted.clear()
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _last_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[-1] if text else ""
