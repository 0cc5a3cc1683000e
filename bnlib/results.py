"""Experiment results on disk: parquet data + JSON metadata, keyed by config and code.

A result is stored as two files in ``<results>/<profile>/<experiment>/``:
``<key>.parquet`` (the tidy DataFrame) and ``<key>.json`` (experiment, profile, config,
and provenance: bnlib version and source hash, git revision, device, torch version,
date, wall time, command). The key hashes the experiment's name, its config and bnlib's
source, so a changed config or a changed bnlib computes anew.

Writes are atomic (a temporary file, then a rename; the JSON last), so an interrupted run
leaves no half-written result and the next run starts that result cleanly. A result whose
files cannot be read is computed again, with a warning.

The results folder is ``$BNLIB_RESULTS``, or ``results/`` in the repository that holds
bnlib (where the book reads them), or ``./results``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bnlib.provenance import PACKAGE_DIR, provenance, source_hash

__all__ = ["Result", "cache_key", "load_or_compute", "results_dir"]


def results_dir() -> Path:
    """Where results are stored (see the module docstring)."""
    if os.environ.get("BNLIB_RESULTS"):
        return Path(os.environ["BNLIB_RESULTS"]).expanduser()
    repo = PACKAGE_DIR.parent
    if (repo / "_config.yml").exists():
        return repo / "results"
    return Path("results")


def _canonical(config: dict) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def cache_key(experiment: str, config: dict, code: str | None = None) -> str:
    """16 hex digits identifying (experiment, config, bnlib source)."""
    text = f"{experiment}\n{_canonical(config)}\n{code or source_hash()}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Result:
    """A tidy DataFrame and the metadata that says where it came from."""

    frame: pd.DataFrame
    meta: dict
    path: Path

    @property
    def provenance_line(self) -> str:
        """One line for display next to a figure."""
        m, p = self.meta, self.meta["provenance"]
        return (
            f"{m['experiment']} ({m['profile']} profile): bnlib {p['bnlib_version']} "
            f"source {p['bnlib_source']}, git {p['git_revision']}, {p['device']}, "
            f"torch {p['torch_version']}, {p['date']}, {m['wall_time_s']:.1f} s; "
            f"command: {m['command']}"
        )


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read(parquet: Path, meta_path: Path) -> Result | None:
    if not meta_path.exists():  # no metadata: never finished writing
        return None
    try:
        meta = json.loads(meta_path.read_text())
        frame = pd.read_parquet(parquet)
    except Exception as error:  # any unreadable file: recompute
        warnings.warn(
            f"cached result {parquet.name} in {parquet.parent} cannot be read "
            f"({type(error).__name__}: {error}); computing it again",
            stacklevel=3,
        )
        return None
    return Result(frame, meta, parquet)


def load_or_compute(
    experiment: str,
    profile: str,
    config: dict,
    compute: Callable[[], pd.DataFrame],
    device: str | None = None,
    force: bool = False,
    command: str | None = None,
) -> Result:
    """The stored result of ``experiment`` with ``config``, computing and storing it first
    if there is none (or ``force``).

    Args:
        experiment, profile: names, used in the path and the metadata.
        config: the experiment's arguments (JSON-serializable); part of the key.
        compute: returns the tidy DataFrame.
        device: recorded in the provenance.
        command: recorded in the metadata (default: this process's command line).

    Returns:
        The :class:`Result`.
    """
    key = cache_key(experiment, config)
    folder = results_dir() / profile / experiment
    parquet, meta_path = folder / f"{key}.parquet", folder / f"{key}.json"
    if not force:
        cached = _read(parquet, meta_path)
        if cached is not None:
            return cached
    start = time.perf_counter()
    frame = compute()
    wall = time.perf_counter() - start
    meta = {
        "experiment": experiment,
        "profile": profile,
        "config": json.loads(_canonical(config)),
        "key": key,
        "wall_time_s": wall,
        "rows": len(frame),
        "command": command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "provenance": provenance(device),
    }
    folder.mkdir(parents=True, exist_ok=True)
    meta_path.unlink(missing_ok=True)  # the JSON is written last and marks completion
    _write_atomically(parquet, lambda p: frame.to_parquet(p, index=False))
    _write_atomically(meta_path, lambda p: p.write_text(json.dumps(meta, indent=2)))
    return Result(frame, meta, parquet)
