"""bnlib.results: the on-disk cache of experiment results."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from bnlib.results import cache_key, load_or_compute, results_dir


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("BNLIB_RESULTS", str(tmp_path))
    return tmp_path


def counting(frame: pd.DataFrame):
    calls = []

    def compute():
        calls.append(1)
        return frame

    return compute, calls


def test_computes_once_then_reads(results):
    frame = pd.DataFrame({"step": [0, 1], "value": [0.5, 0.25], "label": ["a", None]})
    compute, calls = counting(frame)
    first = load_or_compute("demo", "quick", {"lr": 0.1}, compute, device="cpu")
    second = load_or_compute("demo", "quick", {"lr": 0.1}, compute, device="cpu")
    assert len(calls) == 1
    pd.testing.assert_frame_equal(first.frame, second.frame)
    assert results_dir() == results and first.path.parent == results / "quick" / "demo"
    meta = json.loads(first.path.with_suffix(".json").read_text())
    assert meta["config"] == {"lr": 0.1} and meta["profile"] == "quick"
    assert {"bnlib_source", "git_revision", "device", "torch_version", "date"} <= set(
        meta["provenance"]
    )
    assert "demo (quick profile)" in second.provenance_line


def test_changed_config_or_code_computes_again(results):
    compute, calls = counting(pd.DataFrame({"x": [1]}))
    load_or_compute("demo", "quick", {"lr": 0.1}, compute)
    load_or_compute("demo", "quick", {"lr": 0.2}, compute)
    load_or_compute("demo", "full", {"lr": 0.1}, compute)
    assert len(calls) == 3
    assert cache_key("demo", {"lr": 0.1}, code="aaaa") != cache_key("demo", {"lr": 0.1}, code="b")
    assert cache_key("demo", {"a": 1, "b": 2}) == cache_key("demo", {"b": 2, "a": 1})


def test_corrupt_file_is_recomputed_with_a_warning(results):
    compute, calls = counting(pd.DataFrame({"x": [1.0]}))
    first = load_or_compute("demo", "quick", {}, compute)
    first.path.write_bytes(b"not parquet")
    with pytest.warns(UserWarning, match="cannot be read"):
        again = load_or_compute("demo", "quick", {}, compute)
    assert len(calls) == 2 and again.frame["x"].tolist() == [1.0]
    assert load_or_compute("demo", "quick", {}, compute).frame["x"].tolist() == [1.0]


def test_interrupted_write_restarts_cleanly(results):
    """A parquet file without its JSON (the run died between the two) is not trusted."""
    compute, calls = counting(pd.DataFrame({"x": [2]}))
    first = load_or_compute("demo", "quick", {}, compute)
    first.path.with_suffix(".json").unlink()
    load_or_compute("demo", "quick", {}, compute)
    assert len(calls) == 2
    assert not list(first.path.parent.glob(".*tmp"))


def test_failing_experiment_leaves_no_result(results):
    def broken():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        load_or_compute("demo", "quick", {}, broken)
    assert not list(results.rglob("*.json"))
