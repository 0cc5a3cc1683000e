"""bnlib.validation: a committed full result stays current through a code change exactly
when the new code reproduces it; the drift check of every committed full result."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bnlib import book, experiments, status, validation
from bnlib.cli import main

REPO = Path(__file__).resolve().parents[1]
COMMITTED = sorted(
    p.name for p in (REPO / "results" / "full").glob("*") if p.is_dir() and any(p.glob("*.json"))
)


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("BNLIB_RESULTS", str(tmp_path / "results"))
    monkeypatch.delenv("BNLIB_PROFILE", raising=False)
    monkeypatch.delenv("BNLIB_BOOK_BUILD", raising=False)
    return tmp_path / "results"


@pytest.fixture
def toys(results):
    import toy_experiments

    toy_experiments.register_all()
    yield toy_experiments
    toy_experiments.unregister_all()


def test_prefix_config_cuts_only_the_steps():
    config = {"steps": 50_000, "mlp_steps": 10, "seeds": [0, 1], "points": 40}
    assert validation.prefix_config(config, 40) == {
        "steps": 40,
        "mlp_steps": 10,
        "seeds": [0, 1],
        "points": 40,
    }


def test_compare_reports_the_largest_deviation_and_the_first_value_out_of_tolerance():
    stored = pd.DataFrame({"seed": [0, 0, 1], "step": [0, 1, 0], "loss": [1.0, 0.5, 2.0]})
    same = validation.compare(stored, stored.iloc[[2]], rtol=1e-3, atol=0)
    assert same.agrees and same.rows == 1 and same.max_abs == 0
    moved = stored.assign(loss=[1.0, 0.5 * 1.01, 2.0])
    result = validation.compare(stored, moved, rtol=1e-3, atol=0)
    assert not result.agrees and "loss at (seed=0, step=1)" in result.problem
    assert result.max_abs == pytest.approx(0.005)
    extra = pd.concat([stored, stored.iloc[[0]].assign(seed=7)])
    assert "no stored counterpart" in validation.compare(stored, extra, rtol=1, atol=1).problem
    nan = stored.assign(loss=[float("nan"), 0.5, 2.0])
    assert not validation.compare(stored, nan, rtol=1, atol=1).agrees
    assert validation.compare(nan, nan, rtol=0, atol=0).agrees


def test_every_registration_names_a_subset_of_its_own_arguments():
    experiments.load_all()
    for name, experiment in experiments.REGISTRY.items():
        spec = experiment.reproduction
        assert spec.prefix is not None or spec.why, f"{name}: prefix=None needs a reason"
        for key, value in spec.subset.items():
            full = experiment.profiles["full"].get(key)
            if isinstance(full, list) and isinstance(value, list):
                assert set(map(str, value)) <= set(map(str, full)), (name, key)


def test_a_toy_experiment_runs_through_status_run_and_book_with_nothing_else_touched(
    toys, results, monkeypatch
):
    table = status.status("cpu").set_index("experiment")
    assert table.loc["toy_sgd", "full"] == "-" and table.loc["toy_sgd", "chapter"] == "Toys"
    quick = experiments.run("toy_sgd", "quick")
    assert list(quick.frame["step"]) == list(range(10))
    assert main(["run", "toy_sgd", "--profile", "full"]) == 0
    table = status.status("cpu").set_index("experiment")
    assert table.loc["toy_sgd", "quick"] == "cached"
    assert table.loc["toy_sgd", "full"] in ("current", "current, no clean commit")
    monkeypatch.setenv("BNLIB_PROFILE", "full")
    assert len(book.result("toy_sgd").frame) == 40 * 3
    compared, problem = validation.drift("toy_sgd")
    assert problem is None and compared > 10


def _revalidate_after_edit(tmp_path: Path, edits: dict[str, tuple[str, str]]) -> dict:
    """Copy bnlib, apply ``edits`` ({file: (old, new)}), and revalidate the toy results
    (computed by the unedited code) in a fresh process running the edited copy."""
    package = tmp_path / "edited"
    shutil.copytree(REPO / "bnlib", package / "bnlib", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(Path(__file__).with_name("toy_experiments.py"), package)
    for file, (old, new) in edits.items():
        path = package / "bnlib" / file
        text = path.read_text()
        assert text.count(old) >= 1, f"{old!r} not in {file}"
        path.write_text(text.replace(old, new))
    script = textwrap.dedent(
        """
        import json
        import toy_experiments
        from bnlib import experiments
        from bnlib.book import full_result
        from bnlib.validation import revalidate
        toy_experiments.register_all()
        outcomes = revalidate(toy_experiments.NAMES, require_clean=False, report=lambda s: None)
        print(json.dumps({
            "revalidated": {o.name: o.validated for o in outcomes},
            "current": {n: full_result(n).current for n in toy_experiments.NAMES},
        }))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(package), "BNLIB_PROGRESS": "0"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=package,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def committed_toys(toys, results, monkeypatch):
    provenance = sys.modules["bnlib.provenance"]  # (bnlib.provenance is also a function)
    monkeypatch.setattr(provenance, "git_revision", lambda: "0123456789ab")  # a clean commit
    for name in toys.NAMES:
        experiments.run(name, "full")
    return results


def test_a_pure_refactor_revalidates_every_result_it_touches(committed_toys, tmp_path):
    # renames in the optimizer and in the initialization: their results' code hashes change
    outcome = _revalidate_after_edit(
        tmp_path,
        {
            "optim.py": ("per_member", "values_per_member"),
            "models.py": ("_choice(", "_checked_choice("),
        },
    )
    assert outcome["revalidated"] == {"toy_sgd": True, "toy_init": True}
    assert all(outcome["current"].values())
    meta = json.loads(next((committed_toys / "full" / "toy_sgd").glob("*.json")).read_text())
    (record,) = meta["validations"]
    assert record["rows_compared"] == 40 and record["max_abs_deviation"] == 0.0
    assert meta["computed_code_hash"] != meta["code_hash"] == record["code_hash"]


def test_flipping_the_sign_of_the_sgd_update_fails_exactly_the_results_that_use_it(
    committed_toys, tmp_path
):
    outcome = _revalidate_after_edit(
        tmp_path, {"optim.py": ("view.addcmul_(g, step_k)", "view.addcmul_(g, -step_k)")}
    )
    assert outcome["revalidated"] == {"toy_sgd": False}
    assert outcome["current"] == {"toy_sgd": False, "toy_init": True, "toy_plain": True}


def test_scaling_an_initialization_by_1_1_fails_exactly_the_results_that_use_it(
    committed_toys, tmp_path
):
    outcome = _revalidate_after_edit(
        tmp_path,
        {
            "models.py": (
                'nn.init.kaiming_normal_(w, nonlinearity="linear")',
                'nn.init.kaiming_normal_(w, nonlinearity="linear")\n            w.mul_(1.1)',
            )
        },
    )
    assert outcome["revalidated"] == {"toy_init": False}
    assert outcome["current"] == {"toy_sgd": True, "toy_init": False, "toy_plain": True}


def test_a_stale_result_fails_the_book_build_and_names_the_fix(committed_toys, monkeypatch):
    from toy_experiments import as_if_computed_by_older_code

    as_if_computed_by_older_code(next((committed_toys / "full" / "toy_plain").glob("*.parquet")))
    assert not book.full_result("toy_plain").current
    monkeypatch.setenv("BNLIB_BOOK_BUILD", "1")
    with pytest.raises(ValueError, match="status --revalidate"):
        book.full_result("toy_plain")


def test_revalidation_refuses_a_tree_with_uncommitted_changes(monkeypatch, toys):
    monkeypatch.setattr(validation, "clean_revision", lambda: None)
    with pytest.raises(ValueError, match="commit them first"):
        validation.revalidate(require_clean=True)


def test_status_revalidate_rejects_names_without_the_flag(capsys):
    assert main(["status", "relative_loss"]) == 2
    assert "--revalidate" in capsys.readouterr().err


@pytest.mark.skipif(not COMMITTED, reason="no full result is committed in results/full")
@pytest.mark.parametrize("name", COMMITTED)
def test_committed_full_result_is_reproduced_by_the_current_code(name, monkeypatch):
    monkeypatch.setenv("BNLIB_RESULTS", str(REPO / "results"))
    compared, problem = validation.drift(name)
    assert problem is None, problem
    stored = book.full_result(name)
    if experiments.get(name).reproduction.prefix is not None and "step" in stored.frame.columns:
        assert compared > 0, "no rows of the prefix run were compared"


@pytest.mark.skipif(not COMMITTED, reason="no full result is committed in results/full")
@pytest.mark.parametrize("name", COMMITTED)
def test_a_drift_prefix_is_registered_only_where_a_shorter_run_shares_rows(name, monkeypatch):
    # A result measured once at the end (no step column) has nothing in common with the
    # first steps of its run: comparing them would report drift where there is none.
    monkeypatch.setenv("BNLIB_RESULTS", str(REPO / "results"))
    spec = experiments.get(name).reproduction
    stored = book.full_result(name)
    config = {**stored.meta["config"], **spec.subset}
    if spec.prefix is not None and "step" not in stored.frame.columns:
        shortened = validation.prefix_config({**config, **spec.prefix})
        assert shortened == config, (
            f"{name} measures at the end of its run (no step column), so its drift prefix "
            "cannot be compared: register it with Reproduction(prefix=None, why=...)"
        )
    if spec.prefix is None:
        assert spec.why, f"{name}: say why a shorter run has no rows in common (why=...)"


@pytest.mark.skipif(not COMMITTED, reason="no full result is committed in results/full")
@pytest.mark.parametrize("name", COMMITTED)
def test_committed_full_result_is_current_and_names_a_clean_commit(name, monkeypatch):
    monkeypatch.setenv("BNLIB_RESULTS", str(REPO / "results"))
    stored = book.full_result(name)
    assert stored.current, (
        f"{name}: computed by older code; `python -m bnlib status --revalidate {name}`"
    )
    assert stored.clean_commit, (
        f"{name}: no clean commit computed or reproduced it; revalidate it from a clean tree"
    )


def test_a_seed_spread_tolerance_allows_what_the_seeds_disagree_by_and_no_more():
    lrs, seeds = np.repeat([0.1, 0.3, 1.0], 2), np.tile([0, 1], 3)
    acc = np.array([0.80, 0.82, 0.70, 0.74, 0.50, 0.50])  # seeds' sd 0.014, 0.028, 0
    stored = pd.DataFrame({"lr": lrs, "seed": seeds, "acc": acc})
    near = stored[stored.seed == 0].assign(acc=[0.81, 0.72, 0.50])  # within 1 sd each
    assert not validation.compare(stored, near, rtol=0, atol=0).agrees
    assert validation.compare(stored, near, rtol=0, atol=0, seed_spread=1).agrees
    far = stored[stored.seed == 0].assign(acc=[0.90, 0.80, 0.50])  # 7 and 3.6 sd away
    result = validation.compare(stored, far, rtol=0, atol=0, seed_spread=2)
    assert not result.agrees and "seeds' standard deviation" in result.problem


def test_a_full_run_with_replaced_arguments_is_kept_apart_from_the_committed_one(results):
    experiments.run("sigmoid_saturation", "full", shifts=[0.0, 1.0])
    assert (results / experiments.OVERRIDES_STORE / "sigmoid_saturation").is_dir()
    assert book.full_result("sigmoid_saturation") is None  # the book never shows it
    experiments.run("sigmoid_saturation", "full")
    assert len(book.full_result("sigmoid_saturation").meta["config"]["shifts"]) == 6


def test_a_committed_full_result_is_refused_from_a_tree_with_uncommitted_changes(
    results, monkeypatch
):
    monkeypatch.setattr(experiments, "committed_store", lambda: True)
    monkeypatch.setattr(experiments, "clean_revision", lambda: None)
    with pytest.raises(ValueError, match="commit them first"):
        experiments.run("sigmoid_saturation", "full")
    assert not (results / "full").exists()
    experiments.run("sigmoid_saturation", "quick")  # other profiles are not committed
