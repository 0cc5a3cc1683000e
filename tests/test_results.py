"""bnlib.results: the on-disk cache of experiment results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pandas as pd
import pytest

from bnlib.results import (
    STALE_TMP_AFTER_S,
    ResultsNotWritableError,
    cache_key,
    ensure_writable,
    load_or_compute,
    results_dir,
)


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


@pytest.mark.parametrize(
    "key", ["provenance", "rows", "config", "experiment", "profile", "wall_time_s", "command"]
)
def test_json_lacking_a_key_is_recomputed_with_a_warning(results, key):
    compute, calls = counting(pd.DataFrame({"x": [1.0, 2.0]}))
    first = load_or_compute("demo", "quick", {"lr": 0.1}, compute)
    meta_path = first.path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    del meta[key]
    meta_path.write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match=rf"{meta_path.name}.*lacks '{key}'"):
        again = load_or_compute("demo", "quick", {"lr": 0.1}, compute)
    assert len(calls) == 2 and key in again.meta
    assert "demo (quick profile)" in again.provenance_line
    # the rewritten result is complete: read without a warning, not computed again
    third = load_or_compute("demo", "quick", {"lr": 0.1}, compute)
    assert len(calls) == 2 and third.frame["x"].tolist() == [1.0, 2.0]


@pytest.mark.parametrize("text", ["[1, 2]", '"a string"', "null", "3"])
def test_json_that_is_not_an_object_is_recomputed_with_a_warning(results, text):
    compute, calls = counting(pd.DataFrame({"x": [1.0]}))
    first = load_or_compute("demo", "quick", {}, compute)
    first.path.with_suffix(".json").write_text(text)
    with pytest.warns(UserWarning, match="not an object"):
        again = load_or_compute("demo", "quick", {}, compute)
    assert len(calls) == 2 and again.meta["rows"] == 1


def test_json_with_a_wrong_type_or_provenance_is_recomputed(results):
    compute, calls = counting(pd.DataFrame({"x": [1.0]}))
    first = load_or_compute("demo", "quick", {}, compute)
    meta_path = first.path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "rows": "1"}))
    with pytest.warns(UserWarning, match="'rows' is '1', of the wrong type"):
        load_or_compute("demo", "quick", {}, compute)
    del meta["provenance"]["date"]
    meta_path.write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="provenance lacks 'date'"):
        load_or_compute("demo", "quick", {}, compute)
    assert len(calls) == 3


def test_parquet_whose_row_count_differs_from_the_json_is_recomputed(results):
    """An empty but valid parquet (a truncated copy, say) is not served as the result."""
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0]})
    compute, calls = counting(frame)
    first = load_or_compute("demo", "quick", {}, compute)
    frame.iloc[:0].to_parquet(first.path, index=False)
    assert len(pd.read_parquet(first.path)) == 0  # valid parquet, just empty
    with pytest.warns(UserWarning, match="holds 0 rows, its JSON says 3"):
        again = load_or_compute("demo", "quick", {}, compute)
    assert len(calls) == 2 and len(again.frame) == 3
    assert len(load_or_compute("demo", "quick", {}, compute).frame) == 3 and len(calls) == 2


def test_config_with_nan_is_read_back_not_recomputed(results):
    compute, calls = counting(pd.DataFrame({"x": [1.0]}))
    load_or_compute("demo", "quick", {"clip": float("nan")}, compute)
    load_or_compute("demo", "quick", {"clip": float("nan")}, compute)
    assert len(calls) == 1


def _dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout)


def _temporary(folder, name: str, pid: int, age_s: float):
    path = folder / f".{name}.{pid}.tmp"
    path.write_bytes(b"half-written")
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


@pytest.mark.parametrize("cached", [True, False], ids=["on-read", "on-write"])
def test_stale_temporary_files_are_cleaned(results, cached):
    """A crash between the temporary write and the rename leaves ``.<file>.<pid>.tmp``;
    the next read or write in that folder deletes those of dead processes and old ones,
    and keeps a live process's recent one (a write in progress)."""
    compute, calls = counting(pd.DataFrame({"x": [1.0]}))
    first = load_or_compute("demo", "quick", {}, compute)
    folder = first.path.parent
    if not cached:
        first.path.with_suffix(".json").unlink()
    dead = _temporary(folder, f"{first.path.name}", _dead_pid(), age_s=600)
    ancient = _temporary(folder, "other.json", os.getppid(), age_s=STALE_TMP_AFTER_S + 60)
    live = _temporary(folder, "another.parquet", os.getppid(), age_s=600)
    just_died = _temporary(folder, "recent.parquet", _dead_pid(), age_s=0)  # grace period
    unrelated = folder / ".notes.tmp"
    unrelated.write_text("not ours")
    load_or_compute("demo", "quick", {}, compute)
    assert len(calls) == (1 if cached else 2)
    assert not dead.exists() and not ancient.exists()
    assert live.exists() and just_died.exists() and unrelated.exists()


def test_results_path_that_is_a_file_fails_before_computing(tmp_path, monkeypatch):
    not_a_folder = tmp_path / "results.txt"
    not_a_folder.write_text("a file")
    monkeypatch.setenv("BNLIB_RESULTS", str(not_a_folder))
    compute, calls = counting(pd.DataFrame({"x": [1.0]}))
    with pytest.raises(ResultsNotWritableError, match="is a file, not a folder.*BNLIB_RESULTS"):
        load_or_compute("demo", "quick", {}, compute)
    assert calls == []


def test_ensure_writable_creates_the_folder_and_names_the_problem(tmp_path):
    folder = tmp_path / "a" / "b"
    assert ensure_writable(folder) == folder and folder.is_dir()
    assert list(folder.iterdir()) == []  # the write check leaves nothing behind
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ResultsNotWritableError, match=f"{blocker} is a file"):
        ensure_writable(blocker / "quick" / "demo")


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="root writes to read-only folders; the file-path tests cover this case",
)
def test_read_only_folder_fails_before_computing(tmp_path, monkeypatch):
    folder = tmp_path / "results"
    folder.mkdir()
    folder.chmod(0o500)
    monkeypatch.setenv("BNLIB_RESULTS", str(folder))
    compute, calls = counting(pd.DataFrame({"x": [1.0]}))
    try:
        with pytest.raises(ResultsNotWritableError, match="Permission denied.*BNLIB_RESULTS"):
            load_or_compute("demo", "quick", {}, compute)
    finally:
        folder.chmod(0o700)
    assert calls == []


def test_numpy_arrays_in_a_config_are_keyed_by_their_full_values(results):
    import numpy as np

    grid = np.linspace(0, 6, 1001)
    changed = grid.copy()
    changed[500] += 0.5  # in the middle, which NumPy's text elides
    assert str(grid) == str(changed)
    assert cache_key("demo", {"x": grid}) != cache_key("demo", {"x": changed})
    compute, calls = counting(pd.DataFrame({"x": [1.0]}))
    load_or_compute("demo", "quick", {"x": grid}, compute)
    load_or_compute("demo", "quick", {"x": changed}, compute)
    assert len(calls) == 2
    assert cache_key("demo", {"x": grid}) == cache_key("demo", {"x": grid.tolist()})


def _fail_writes(monkeypatch):
    """Make every parquet write fail as on a full disk."""
    import errno

    def no_space(self, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(pd.DataFrame, "to_parquet", no_space)


def test_a_full_disk_keeps_the_previous_result_and_the_computed_one(results, monkeypatch):
    from bnlib.results import ResultNotSavedError

    old = load_or_compute("demo", "quick", {}, lambda: pd.DataFrame({"x": [1.0]}))
    _fail_writes(monkeypatch)
    with pytest.raises(ResultNotSavedError, match=r"cannot be written to .*demo.*is kept") as info:
        load_or_compute("demo", "quick", {}, lambda: pd.DataFrame({"x": [2.0]}), force=True)
    assert info.value.frame["x"].tolist() == [2.0]  # the computed result is not lost
    assert str(results) in str(info.value)
    monkeypatch.undo()
    monkeypatch.setenv("BNLIB_RESULTS", str(results))
    kept = load_or_compute("demo", "quick", {}, lambda: pd.DataFrame({"x": [3.0]}))
    assert kept.frame["x"].tolist() == [1.0] and kept.path == old.path
    assert not list(results.rglob(".*.tmp"))


def test_too_little_free_space_is_refused_before_computing(results, monkeypatch):
    import shutil
    from collections import namedtuple

    load_or_compute("demo", "quick", {"lr": 0.1}, lambda: pd.DataFrame({"x": range(1000)}))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 100, 100))
    compute, calls = counting(pd.DataFrame({"x": [1]}))
    with pytest.raises(ResultsNotWritableError, match="100 bytes free"):
        load_or_compute("demo", "quick", {"lr": 0.2}, compute)
    assert calls == []


def test_an_edited_parquet_is_recognised_by_its_checksum(results):
    compute, calls = counting(pd.DataFrame({"x": [1.0, 2.0], "y": [3.0, 4.0]}))
    first = load_or_compute("demo", "quick", {}, compute)
    first.frame.drop(columns="y").to_parquet(first.path, index=False)  # same rows, a column less
    with pytest.warns(UserWarning, match="checksum differs"):
        load_or_compute("demo", "quick", {}, compute)
    assert len(calls) == 2
