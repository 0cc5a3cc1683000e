"""python -m bnlib: list, run, bench."""

from __future__ import annotations

import subprocess
import sys

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


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "nope"], "unknown experiment 'nope'"),
        (["run", "lr_sweep", "--profile", "huge"], "unknown profile 'huge'"),
        (["run", "lr_sweep", "--device", "tpu"], "unknown device 'tpu'"),
    ],
)
def test_bad_input_is_a_clear_error_and_exit_code_2(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


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
