"""python -m bnlib: list, run, bench."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bnlib.cli import main


@pytest.fixture(autouse=True)
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("BNLIB_RESULTS", str(tmp_path))
    return tmp_path


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "lr_sweep" in out and "[The BN algorithm]" in out


def test_run_stores_the_result(capsys, results):
    assert main(["run", "gradient_check", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "gradient_check (quick profile)" in out
    assert list((results / "quick" / "gradient_check").glob("*.parquet"))


def test_run_with_set_replaces_profile_arguments(capsys, results):
    argv = ["run", "relative_loss", "--profile", "smoke", "--device", "cpu"]
    assert main([*argv, "--set", "depths=[8]", "--set", "dataset=mnist"]) == 0
    (meta,) = (results / "smoke" / "relative_loss").glob("*.json")
    config = json.loads(meta.read_text())["config"]
    assert config["depths"] == [8] and config["dataset"] == "mnist"
    assert config["inits"] == ["he", "he-fan-in"]  # the rest is the profile's


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "nope"], "unknown experiment 'nope'"),
        (["run", "lr_sweep", "--profile", "huge"], "unknown profile 'huge'"),
        (["run", "lr_sweep", "--device", "tpu"], "unknown device 'tpu'"),
        (["run", "lr_sweep", "--set", "lr_count"], "--set takes KEY=VALUE"),
        (["run", "lr_sweep", "--set", "speed=3"], "lr_sweep has no argument 'speed'"),
        (["run", "--all", "--set", "seeds=[0]"], "--set applies to one experiment"),
    ],
)
def test_bad_input_is_a_clear_error_and_exit_code_2(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("steps=abc", "steps must be a whole number, got 'abc'"),
        ("steps=null", "steps must be a whole number, got None"),
        ("steps=2.5", "steps must be a whole number, got 2.5"),
        ("steps=0", "steps must be at least 1"),
        ("steps=[1,2", "is not valid JSON"),
        ("lr=inf", "lr must be a number, got 'inf'"),
        ("lr=1e400", "lr must be a finite number"),
        ("lr=-0.1", "lr must be positive"),
        ("lr=true", "lr must be a number"),
        ("seed=-1", "seed must be at least 0"),
        ("contrasts=[]", "contrasts must be a non-empty list"),
        ("contrasts=0.5", "contrasts must be a non-empty list"),
        ('contrasts=[1, "a"]', "contrasts must be a number, got 'a'"),
        ("dataset=[1]", "dataset must be a string"),
    ],
)
def test_every_value_a_user_can_type_is_checked_before_any_work(setting, message, capsys, results):
    assert main(["run", "distribution_shift", "--profile", "smoke", "--set", setting]) == 2
    _assert_clear_error(capsys, message)
    assert not (results / "smoke").exists()  # refused before computing


@pytest.mark.parametrize(
    ("setting", "message"),
    [("points=0", "points must be at least 1"), ("std=-1", "std must be positive")],
)
def test_values_the_issue_found_unchecked_are_refused(setting, message, capsys):
    assert main(["run", "sigmoid_saturation", "--profile", "smoke", "--set", setting]) == 2
    _assert_clear_error(capsys, message)


def test_a_whole_number_written_as_a_float_is_taken(capsys, results):
    argv = ["run", "sigmoid_saturation", "--profile", "smoke", "--set", "points=1e1"]
    assert main(argv) == 0
    (meta,) = (results / "smoke" / "sigmoid_saturation").glob("*.json")
    assert json.loads(meta.read_text())["config"]["points"] == 10


def test_status_refuses_an_unknown_device(capsys):
    assert main(["status", "--device", "tpu"]) == 2
    _assert_clear_error(capsys, "unknown device 'tpu'")


def _assert_clear_error(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def test_results_path_that_is_a_file_fails_before_computing(tmp_path, monkeypatch, capsys):
    not_a_folder = tmp_path / "results.txt"
    not_a_folder.write_text("a file, not a folder")
    monkeypatch.setenv("BNLIB_RESULTS", str(not_a_folder))
    assert main(["run", "gradient_check", "--device", "cpu"]) == 2
    _assert_clear_error(capsys, str(not_a_folder), "is a file, not a folder", "BNLIB_RESULTS")
    assert not_a_folder.read_text() == "a file, not a folder"


def test_results_folder_under_a_file_is_a_clear_error(tmp_path, monkeypatch, capsys):
    """A folder that cannot be created (here: a path through a regular file, which stops
    root too) is reported before the experiment computes."""
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    monkeypatch.setenv("BNLIB_RESULTS", str(blocker / "results"))
    assert main(["run", "transform_stages", "--device", "cpu"]) == 2
    _assert_clear_error(capsys, f"{blocker} is a file", "BNLIB_RESULTS")


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="root writes to read-only folders; the file-path tests cover this case",
)
def test_read_only_results_folder_is_a_clear_error(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "results"
    folder.mkdir()
    folder.chmod(0o500)
    monkeypatch.setenv("BNLIB_RESULTS", str(folder))
    try:
        assert main(["run", "gradient_check", "--device", "cpu"]) == 2
    finally:
        folder.chmod(0o700)
    _assert_clear_error(capsys, "Permission denied", "BNLIB_RESULTS")


def test_missing_data_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BNLIB_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("BNLIB_DOWNLOAD", "0")
    (tmp_path / "empty").mkdir()
    assert main(["run", "transform_stages", "--device", "cpu"]) == 2
    _assert_clear_error(capsys, "mnist (train) is not under", "downloading is off", "BNLIB_DATA")


def test_corrupt_data_is_a_clear_error(tmp_path, monkeypatch, capsys, data_root):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for source in (data_root / "MNIST" / "raw").glob("*-ubyte"):  # not the .gz archives
        shutil.copy(source, raw / source.name)
    images = raw / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:100_000])  # truncated
    monkeypatch.setenv("BNLIB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("BNLIB_DOWNLOAD", "0")
    assert main(["run", "transform_stages", "--device", "cpu"]) == 2
    _assert_clear_error(capsys, "is not the published mnist file", f"delete {raw}")


def test_data_that_load_but_are_not_the_published_files_stop_a_run(
    tmp_path, monkeypatch, capsys, data_root, results
):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for source in (data_root / "FashionMNIST" / "raw").glob("*-ubyte"):  # the wrong dataset
        shutil.copy(source, raw / source.name)
    monkeypatch.setenv("BNLIB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("BNLIB_DOWNLOAD", "0")
    assert main(["run", "transform_stages", "--profile", "smoke", "--device", "cpu"]) == 2
    _assert_clear_error(capsys, "is not the published mnist file")
    assert not list(results.rglob("*.parquet"))  # nothing computed, nothing stored


def test_module_entry_point():
    done = subprocess.run(
        [sys.executable, "-m", "bnlib", "list"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "running_statistics" in done.stdout


@pytest.mark.slow
def test_bench_quick_writes_a_report(tmp_path):
    report = tmp_path / "bench.md"
    assert main(["bench", "--quick", "--device", "cpu", "--output", str(report)]) == 0
    text = report.read_text()
    assert "matmul peak" in text and "MLP sweep" in text and "ResNet-20 sweep" in text
    assert "(c) torch.func: stack_module_state + vmap(functional_call)" in text


def test_bench_refuses_an_output_in_a_missing_folder_before_running(tmp_path, capsys):
    missing = tmp_path / "no" / "such" / "bench.md"
    assert main(["bench", "--quick", "--output", str(missing)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_bench_refuses_a_folder_as_its_output_before_running(tmp_path, capsys):
    start = time.monotonic()
    assert main(["bench", "--quick", "--output", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert time.monotonic() - start < 10  # refused before the benchmark ran


@pytest.mark.parametrize("setting", ["seeds=[0, 0]", 'norms=["bn", "none", "bn"]'])
def test_a_sweep_value_given_twice_is_refused(setting, capsys, results):
    name = "ioffe_figure1" if setting.startswith("seeds") else "small_batches"
    assert main(["run", name, "--profile", "smoke", "--set", setting]) == 2
    _assert_clear_error(capsys, "more than once")
    assert not (results / "smoke").exists()


def test_run_all_on_ray_with_nothing_to_run_starts_no_ray(monkeypatch, capsys):
    """Every committed full result is current (the book's build requires it), so
    `run --all --profile full --ray` has nothing to do and must not start or reach a
    cluster first (it used to, and left it open)."""
    from bnlib import distributed

    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started with nothing to run")

    monkeypatch.setattr(distributed.RayRunner, "__init__", refuse)
    monkeypatch.setenv("BNLIB_RESULTS", str(Path(distributed.__file__).parents[1] / "results"))
    assert main(["run", "--all", "--profile", "full", "--ray", "10.255.255.1:6379"]) == 0
    assert "nothing to run" in capsys.readouterr().out
