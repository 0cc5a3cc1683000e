"""bnlib.status: the status table and the full-run estimates; the provenance of every
committed full result (its drift check is in test_validation.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from bnlib import experiments, status, validation
from bnlib.cli import main
from bnlib.results import data_checksum

REPO = Path(__file__).resolve().parents[1]
COMMITTED = sorted(
    p.name for p in (REPO / "results" / "full").glob("*") if p.is_dir() and any(p.glob("*.json"))
)


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("BNLIB_RESULTS", str(tmp_path))
    monkeypatch.delenv("BNLIB_PROFILE", raising=False)
    return tmp_path


def test_work_counts_steps_times_seeds_and_sweeps():
    assert status.work({"steps": 100, "seeds": [0, 1], "lrs": [0.1, 0.5, 1.0]}) == 600
    assert status.work({"mlp_steps": 10, "linear_steps": 30}) == 40
    assert status.work({"draws": 200}) == 200


def test_status_lists_every_experiment_and_estimates_from_the_quick_run(results, capsys):
    before = status.status("cpu")
    assert sorted(before["experiment"]) == sorted(experiments.REGISTRY)
    row = before.set_index("experiment").loc["sigmoid_saturation"]
    assert (row["quick"], row["full"], row["full run here"]) == ("-", "-", "unknown")
    experiments.run("sigmoid_saturation", "quick")
    after = status.status("cpu").set_index("experiment").loc["sigmoid_saturation"]
    assert after["quick"] == "cached" and after["full run here"] != "unknown"
    assert main(["status"]) == 0
    assert "sigmoid_saturation" in capsys.readouterr().out


def test_status_gives_what_each_full_result_took_and_its_shards_on_ray(results):
    row = status.status("cpu").set_index("experiment")
    assert row.loc["sigmoid_saturation", "full took"] == "-"
    assert status.full_cost() == (0.0, 0)
    assert row.loc["running_statistics", "ray shards"] == len(
        experiments.get("running_statistics").profiles["full"]["momenta"]
    )
    assert row.loc["ics_over_training", "ray shards"] == 1  # nothing declared independent
    stored = experiments.run("sigmoid_saturation", "full")
    seconds, count = status.full_cost()
    assert count == 1 and seconds == stored.meta["wall_time_s"]
    assert (
        status.status("cpu").set_index("experiment").loc["sigmoid_saturation", "full took"] != "-"
    )
    assert "The 1 committed full results took" in status.format_status(status.status("cpu"))


def test_drift_check_passes_on_the_same_code_and_names_a_changed_result(results, monkeypatch):
    full = experiments.get("bias_blowup").profiles["full"]
    monkeypatch.setitem(full, "steps", 120)  # a short stand-in for the full run
    experiments.run("bias_blowup", "full")
    compared, problem = validation.drift("bias_blowup")
    assert problem is None and compared > 10
    stored = next((results / "full" / "bias_blowup").glob("*.parquet"))
    frame = pd.read_parquet(stored)
    frame.loc[frame["step"] == 1, "value"] *= 1.5  # what a change to the computation does
    frame.to_parquet(stored, index=False)
    meta_path = stored.with_suffix(".json")  # as if another computation had stored them
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "data_sha256": data_checksum(stored)}))
    compared, problem = validation.drift("bias_blowup")
    assert problem is not None
    assert "bias_blowup" in problem and "python -m bnlib run bias_blowup --profile full" in problem


def test_run_all_runs_what_is_missing_once_and_says_so(results, capsys, monkeypatch):
    only = {"sigmoid_saturation": experiments.get("sigmoid_saturation")}
    monkeypatch.setattr(experiments, "REGISTRY", only)
    assert status.run_all("full", "cpu") == ["sigmoid_saturation"]
    out = capsys.readouterr().out
    assert "1 experiment(s) to run at the full profile" in out and "estimated time" in out
    assert status.run_all("full", "cpu") == []
    assert "nothing to run" in capsys.readouterr().out
    assert main(["run", "--all", "sigmoid_saturation"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["run"]) == 2


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_full_results_carry_complete_provenance(name, monkeypatch):
    monkeypatch.setenv("BNLIB_RESULTS", str(REPO / "results"))
    from bnlib.book import full_result

    stored = full_result(name)
    assert stored is not None
    meta = stored.meta
    assert meta["config"] == experiments.get(name).profiles["full"]
    assert meta["command"] and meta["wall_time_s"] > 0 and meta["code_hash"]
    for field in (
        "bnlib_version",
        "git_revision",
        "device",
        "torch_version",
        "cuda_version",
        "date",
    ):
        assert field in meta["provenance"], field
