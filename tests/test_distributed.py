"""bnlib.distributed: experiments split into shards on a local two-worker Ray cluster give
the same rows as one process; a killed worker is retried; a bad address fails at once.

Ray starts its own processes (a few seconds), once for this module.
"""

from __future__ import annotations

import inspect
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from bnlib import experiments
from bnlib.distributed import RayRunner, RayUnavailableError, connect, shards, split_key

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def runner():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        yield RayRunner(on_progress=lambda done, total, elapsed: None)
    finally:
        ray.shutdown()


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("BNLIB_RESULTS", str(tmp_path))
    monkeypatch.setenv("BNLIB_PROGRESS", "0")
    return tmp_path


def _in_one_process(name: str, config: dict) -> pd.DataFrame:
    return experiments.get(name).function(**config)


def _rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame's rows in a canonical order: shards are concatenated in the order of the
    split argument's values, one process may loop over the arguments in another order."""
    frame = frame.copy()
    for column in frame.columns:
        if frame[column].dtype == object:
            frame[column] = frame[column].astype(str)
    return frame.sort_values(list(frame.columns), kind="mergesort").reset_index(drop=True)


def _two_values(name: str, key: str) -> dict:
    """The smoke profile, with at least two values of ``key`` (the full profile's first
    two where the smoke profile has one)."""
    experiment = experiments.get(name)
    smoke = experiment.profiles["smoke"]
    defaults = {
        p.name: p.default
        for p in inspect.signature(experiment.function).parameters.values()
        if p.default is not inspect.Parameter.empty
    }
    values = {**defaults, **smoke}.get(key)
    if not isinstance(values, (list, tuple)) or len(values) < 2:
        values = list({**defaults, **experiment.profiles["full"]}[key])[:2]
    return {**smoke, key: list(values)}


experiments.load_all()
SHARDED = sorted(n for n, e in experiments.REGISTRY.items() if e.shard_on)


@pytest.mark.slow
@pytest.mark.parametrize("name", SHARDED)
def test_a_declared_shard_argument_splits_the_run_into_its_own_rows(name):
    """What ``shard_on`` promises, checked in one process: run on one value of the list at
    a time, the experiment returns exactly the rows of the whole run."""
    function = experiments.get(name).function
    extra = {"device": "cpu"} if "device" in inspect.signature(function).parameters else {}
    for key in experiments.get(name).shard_on:
        config = _two_values(name, key)
        whole = function(**config, **extra)
        parts = [function(**{**config, key: [value]}, **extra) for value in config[key]]
        merged = pd.concat(parts, ignore_index=True)
        pd.testing.assert_frame_equal(_rows(merged), _rows(whole), check_exact=True)


def test_a_sweep_is_split_along_its_first_declared_argument():
    config = experiments.get("running_statistics").profiles["full"]
    assert split_key("running_statistics", config) == "momenta"
    parts = shards("running_statistics", config)
    assert [p.value for p in parts] == list(config["momenta"])
    assert all(p.config == {**config, "momenta": [p.value]} for p in parts)
    # nothing declared independent: one shard, the whole run
    (whole,) = shards("ics_over_training", experiments.get("ics_over_training").profiles["full"])
    assert whole.key is None and whole.label == "the whole run"


@pytest.mark.parametrize("name", ["running_statistics", "depth_trainability", "small_batches"])
def test_a_sharded_run_on_ray_gives_the_rows_of_one_process(name, runner, results):
    config = experiments.get(name).profiles["smoke"]
    assert len(shards(name, config)) >= 2
    on_ray = experiments.run(name, "smoke", device="cpu", compute=runner.compute)
    assert on_ray.meta["cluster"]["shards"] == len(shards(name, config))
    assert on_ray.meta["cluster"]["resources"]["CPU"] == 2
    alone = _in_one_process(name, {**config, "device": "cpu"})
    pd.testing.assert_frame_equal(_rows(on_ray.frame), _rows(alone), check_exact=True)
    # the provenance names the workers' device, not this process's
    assert on_ray.meta["provenance"]["device"].endswith(
        f"(Ray, {len(shards(name, config))} shards)"
    )
    assert on_ray.meta["cluster"]["shard_seconds"]["max"] > 0


def test_a_shard_that_raises_fails_the_run_naming_it_and_stores_nothing(runner, results):
    from bnlib.distributed import ShardFailedError

    config = {**experiments.get("running_statistics").profiles["smoke"], "momenta": [0.1, 5.0]}
    with pytest.raises(
        ShardFailedError, match=r"shard momenta=5\.0 raised ValueError.*not retried"
    ):
        runner.compute("running_statistics", config, "cpu")
    assert not list(results.rglob("*.parquet"))


def _shard_workers() -> list[int]:
    """PIDs of Ray workers running a shard now (Ray names them after the task)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"ray::_compute_shard" in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def test_a_worker_killed_mid_run_is_retried_and_the_result_is_the_same(runner, results):
    import os
    import signal

    name = "running_statistics"
    config = {**experiments.get(name).profiles["smoke"], "steps": 1000}
    outcome = {}
    thread = threading.Thread(
        target=lambda: outcome.update(frame=runner.compute(name, config, "cpu")[0])
    )
    thread.start()
    deadline, killed = time.monotonic() + 60, None
    while killed is None and time.monotonic() < deadline and thread.is_alive():
        workers = _shard_workers()
        if workers:
            killed = workers[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    thread.join(timeout=600)
    assert killed is not None, "no shard was seen running"
    assert "frame" in outcome, "the run did not finish after the worker was killed"
    alone = _in_one_process(name, {**config, "device": "cpu"})
    pd.testing.assert_frame_equal(_rows(outcome["frame"]), _rows(alone), check_exact=True)


def test_a_bad_address_fails_at_once_with_a_clear_message():
    start = time.monotonic()
    with pytest.raises(RayUnavailableError, match=r"no Ray cluster answers at 127\.0\.0\.1:9"):
        connect("127.0.0.1:9")
    with pytest.raises(RayUnavailableError, match="HOST:PORT"):
        connect("not-an-address")
    assert time.monotonic() - start < 15


def test_the_cli_says_what_to_install_without_ray(monkeypatch, capsys):
    import sys

    from bnlib.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails
    assert main(["run", "sigmoid_saturation", "--profile", "smoke", "--ray"]) == 2
    assert "pip install 'bnlib[ray]'" in capsys.readouterr().err


def test_a_worker_with_other_bnlib_code_fails_before_computing(runner, results, monkeypatch):
    from bnlib.distributed import ShardFailedError

    name = "running_statistics"
    # a million steps: the shard must be refused at once, not after computing
    config = {**experiments.get(name).profiles["smoke"], "steps": 1_000_000, "momenta": [0.1]}
    monkeypatch.setattr(runner, "_source", "0123456789abcdef")  # the driver's, as the workers see
    start = time.monotonic()
    with pytest.raises(ShardFailedError, match="runs bnlib source .* install that checkout"):
        runner.compute(name, config, "cpu")
    assert time.monotonic() - start < 60
    assert not list(results.rglob("*.parquet"))


def test_a_run_collected_late_records_its_time_on_the_cluster(runner, results):
    name = "running_statistics"
    config = experiments.get(name).profiles["smoke"]
    runner.submit(name, config, "cpu")
    refs = runner._submitted[next(iter(runner._submitted))][1]
    ray.wait(refs, num_returns=len(refs))  # every shard done before the run is collected
    time.sleep(2.0)
    stored = experiments.run(name, "smoke", device="cpu", compute=runner.compute)
    shard_seconds = stored.meta["cluster"]["shard_seconds"]
    assert shard_seconds["max"] <= stored.meta["wall_time_s"] <= shard_seconds["sum"] + 1.0


def test_run_all_on_ray_goes_on_past_an_experiment_it_cannot_store(runner, results, capsys):
    from bnlib import status
    from bnlib.distributed import ShardFailedError

    (results / "smoke").mkdir()
    (results / "smoke" / "sigmoid_saturation").write_text("a file where a folder goes")
    names = ["sigmoid_saturation", "gradient_check"]
    with pytest.raises(
        ShardFailedError, match=r"(?s)1 of 2 experiments failed.*sigmoid_saturation: cannot store"
    ):
        status.run_all("smoke", "cpu", runner=runner, names=names)
    assert list((results / "smoke" / "gradient_check").glob("*.parquet"))
    assert "sigmoid_saturation: failed (the others go on)" in capsys.readouterr().out
    assert not runner._submitted  # the failed experiment's shards were stopped
