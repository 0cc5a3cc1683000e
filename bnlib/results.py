"""Experiment results on disk: parquet data + JSON metadata, keyed by config and code.

A result is stored as two files in ``<results>/<profile>/<experiment>/``:
``<key>.parquet`` (the tidy DataFrame) and ``<key>.json`` (experiment, profile, config,
and provenance: bnlib version and source hash, git revision, device, torch version,
date, wall time, command, and the code hash). The key hashes the experiment's name, its
config and the code that computes it (:func:`bnlib.provenance.computation_hash`: the
bnlib functions, classes and constants the experiment's function reaches, without comments
or docstrings), so a changed config or a changed computation computes anew, while an edit
to figures, widgets, the CLI, or code the experiment does not use keeps its stored result.

Writes are atomic (both files are written beside the stored ones, then renamed; the JSON
last), so an interrupted run or a full disk leaves no half-written result and keeps the
previous one, ``force`` included; a result computed but not written is kept in the error
(:class:`ResultNotSavedError`). A result whose files cannot be read, or do not agree (a
JSON without the keys the book needs, a parquet whose row count is not the JSON's
``rows`` or whose checksum is not its ``data_sha256``, a key that is not that of the
JSON's config and code: :func:`check_stored`), is computed again, with a warning; a
committed full result like that is an error (:func:`bnlib.book.full_result`). Temporary
files that a crashed run left behind (``.<file>.<pid>.tmp`` of a process that no longer
runs, or older than :data:`STALE_TMP_AFTER_S`) are deleted when a result of that folder is
read or written.

Before computing, :func:`load_or_compute` checks that the results folder can be written
(:func:`ensure_writable`), so a long run never ends unable to save its result.

The results folder is ``$BNLIB_RESULTS``, or ``results/`` in the repository that holds
bnlib (where the book reads them), or ``./results``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bnlib.provenance import PACKAGE_DIR, provenance, source_hash

__all__ = [
    "STALE_TMP_AFTER_S",
    "Result",
    "ResultNotSavedError",
    "ResultsNotWritableError",
    "cache_key",
    "check_stored",
    "committed_store",
    "data_checksum",
    "ensure_writable",
    "load",
    "load_or_compute",
    "record_validation",
    "results_dir",
]

#: Age (seconds) after which a temporary file is deleted even if its process still runs
#: (a pid reused by an unrelated process must not keep a crashed run's file forever).
STALE_TMP_AFTER_S = 6 * 3600
#: A temporary file of a process that no longer runs is deleted only once it is this old
#: (seconds): on a folder shared over the network, its pid may be another machine's.
_DEAD_TMP_GRACE_S = 60
_TMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp$")

#: Metadata keys a stored result must have, with their types; and its provenance's keys.
_META_TYPES: dict[str, type | tuple[type, ...]] = {
    "experiment": str,
    "profile": str,
    "config": dict,
    "wall_time_s": (int, float),
    "rows": int,
    "command": str,
    "provenance": dict,
}
_PROVENANCE_KEYS = (
    "bnlib_version",
    "bnlib_source",
    "git_revision",
    "device",
    "torch_version",
    "date",
)


class ResultsNotWritableError(OSError):
    """The results folder cannot be created or written (the message says why and the fix)."""


def results_dir() -> Path:
    """Where results are stored (see the module docstring)."""
    if os.environ.get("BNLIB_RESULTS"):
        return Path(os.environ["BNLIB_RESULTS"]).expanduser()
    repo = PACKAGE_DIR.parent
    if (repo / "_config.yml").exists():
        return repo / "results"
    return Path("results")


def committed_store() -> bool:
    """Whether results are stored in the repository's own ``results/`` folder, whose full
    results are committed (rather than a folder of a user's or a test's)."""
    repo = PACKAGE_DIR.parent / "results"
    try:
        return results_dir().resolve() == repo.resolve()
    except OSError:
        return False


def _json_value(value: object) -> object:
    """A config value JSON cannot write, as one it can: arrays and tensors by their full
    values (their ``str`` elides the middle of long arrays, so two configs would share a
    key), anything else by its text."""
    if hasattr(value, "tolist"):  # NumPy arrays and scalars, torch tensors
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    return str(value)


def _canonical(config: dict) -> str:
    return json.dumps(config, sort_keys=True, default=_json_value)


def cache_key(experiment: str, config: dict, code: str | None = None) -> str:
    """16 hex digits identifying (experiment, config, code).

    ``code`` is the hash of the code that computes the result
    (:func:`bnlib.experiments.code_hash` of the experiment); without it,
    the hash of all of bnlib's source.
    """
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


def _command_line() -> str:
    """This process's command as a user would type it (``python -m bnlib ...`` for the CLI)."""
    program = Path(sys.argv[0]).name
    if program == "__main__.py" and Path(sys.argv[0]).parent.name == "bnlib":
        program = "python -m bnlib"
    return " ".join([program, *sys.argv[1:]])


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def ensure_writable(folder: str | os.PathLike, needed_bytes: int = 0) -> Path:
    """Create ``folder`` (and its parents) if needed and check that files can be written in it.

    Called before an experiment computes, so that a run of hours cannot end unable to save.

    Args:
        folder: the folder results will be written to.
        needed_bytes: the free space the result will take (an estimate: the size of the
            results already stored there); a disk with less free space is refused.

    Returns:
        The folder, as a :class:`~pathlib.Path`.

    Raises:
        ResultsNotWritableError: the folder or one of its parents is a file, or the folder
            cannot be created or written (permissions, read-only file system, full disk);
            the message names the path and the fix.
    """
    folder = Path(folder)
    fix = (
        "Fix: set BNLIB_RESULTS to a folder you can write to "
        f"(results are read from and written to $BNLIB_RESULTS/<profile>/<experiment>), "
        f"or make {folder} writable."
    )
    for parent in (folder, *folder.parents):
        if parent.exists() and not parent.is_dir():
            raise ResultsNotWritableError(
                f"cannot store results in {folder}: {parent} is a file, not a folder. {fix}"
            )
    probe = folder / f".write-check.{os.getpid()}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        reason = error.strerror or str(error)
        raise ResultsNotWritableError(
            f"cannot store results in {folder}: {reason} ({type(error).__name__}). {fix}"
        ) from error
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise ResultsNotWritableError(
            f"cannot store results in {folder}: {free:,} bytes free, and a result of this "
            f"experiment takes about {needed_bytes:,}. Fix: free space on that disk, or set "
            "BNLIB_RESULTS to a folder on another."
        )
    return folder


def _stored_size(folder: Path) -> int:
    """The size in bytes of the largest result stored in ``folder`` (0 if none): what the
    next one will take, about."""
    sizes: dict[str, int] = {}
    try:
        for path in folder.glob("*.*"):
            if path.suffix in (".parquet", ".json"):
                sizes[path.stem] = sizes.get(path.stem, 0) + path.stat().st_size
    except OSError:
        return 0
    return max(sizes.values(), default=0)


def data_checksum(path: Path) -> str:
    """The SHA-256 of a stored result's parquet file (hex), recorded in its JSON as
    ``data_sha256`` so that an edited or truncated file is recognised when read."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _pid_alive(pid: int) -> bool:
    """Whether a process with this id runs here (unsure counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError, ValueError):  # another user's process, or unknowable
        return True
    return True


def _clean_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files in ``folder`` that a crashed run left behind: those of a
    process that no longer runs (after a short grace), and any older than
    :data:`STALE_TMP_AFTER_S`. Never fails (a read-only folder just keeps them).

    Returns:
        The files deleted.
    """
    removed: list[Path] = []
    try:
        candidates = list(folder.glob(".*.tmp"))
    except OSError:
        return removed
    now = time.time()
    for path in candidates:
        match = _TMP_NAME.match(path.name)
        if match is None:
            continue
        try:
            age = now - path.stat().st_mtime
        except OSError:  # already gone
            continue
        dead = age > _DEAD_TMP_GRACE_S and not _pid_alive(int(match["pid"]))
        if dead or age > STALE_TMP_AFTER_S:
            try:
                path.unlink()
            except OSError:
                continue
            removed.append(path)
    return removed


def _problem(meta: object, frame: pd.DataFrame, expected: dict) -> str | None:
    """What is wrong with a stored result's metadata and data, or ``None``."""
    if not isinstance(meta, dict):
        return f"its JSON is a {type(meta).__name__}, not an object"
    missing = [key for key in _META_TYPES if key not in meta]
    if missing:
        return f"its JSON lacks {', '.join(map(repr, missing))}"
    for key, kind in _META_TYPES.items():
        value = meta[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"its JSON's {key!r} is {value!r}, of the wrong type"
    lacking = [key for key in _PROVENANCE_KEYS if key not in meta["provenance"]]
    if lacking:
        return f"its JSON's provenance lacks {', '.join(map(repr, lacking))}"
    for key, value in expected.items():  # compared as JSON, so that NaN equals NaN
        if json.dumps(meta[key], sort_keys=True) != json.dumps(value, sort_keys=True):
            return f"its JSON's {key!r} is {meta[key]!r}, expected {value!r}"
    if len(frame) != meta["rows"]:
        return f"its parquet holds {len(frame)} rows, its JSON says {meta['rows']}"
    return None


def check_stored(result: Result, expected: dict | None = None) -> str | None:
    """What is wrong with a stored result, or ``None``: its JSON's keys and types (and the
    ``expected`` values of some keys), its row count, its data's checksum (``data_sha256``,
    which must be there), and its key against the experiment, config and code hash the JSON
    names (an edited config keeps no key)."""
    meta = result.meta
    problem = _problem(meta, result.frame, expected or {})
    if problem is not None:
        return problem
    if "key" in meta and "code_hash" in meta:
        key = cache_key(meta["experiment"], meta["config"], meta["code_hash"])
        if meta["key"] != key or result.path.stem != key:
            return (
                f"its key ({result.path.stem}) is not that of the experiment, config and code "
                f"its JSON names ({key}): the JSON was edited"
            )
    recorded = meta.get("data_sha256")
    if recorded is None:  # every result bnlib stores records it: taken away, it hid an edit
        return "its JSON records no data_sha256, the checksum of its parquet: it was edited"
    if data_checksum(result.path) != recorded:
        return "its parquet is not the one its JSON names (the checksum differs): it was edited"
    return None


def _read(parquet: Path, meta_path: Path, expected: dict) -> Result | None:
    """The stored result, or ``None`` (with a warning if it exists but is unusable)."""
    if not meta_path.exists():  # no metadata: never finished writing
        return None
    try:
        meta = json.loads(meta_path.read_text())
        frame = pd.read_parquet(parquet)
    except Exception as error:  # any unreadable file: recompute
        problem = f"cannot be read ({type(error).__name__}: {error})"
    else:
        stored = Result(frame, meta, parquet)
        problem = check_stored(stored, expected)
        if problem is None:
            return stored
        problem = f"is inconsistent: {problem}"
    warnings.warn(
        f"cached result {meta_path.name} / {parquet.name} in {parquet.parent} {problem}; "
        "computing it again",
        stacklevel=3,
    )
    return None


def load(
    experiment: str, profile: str, config: dict, code: str | None = None, store: str | None = None
) -> Result | None:
    """The stored result of ``experiment`` with ``config`` and ``code`` (see
    :func:`load_or_compute`), or ``None`` if there is none or it is unusable (with a
    warning naming the file and the problem). Never computes."""
    key = cache_key(experiment, config, code)
    folder = results_dir() / (store or profile) / experiment
    expected = {
        "experiment": experiment,
        "profile": profile,
        "config": json.loads(_canonical(config)),
    }
    try:
        return _read(folder / f"{key}.parquet", folder / f"{key}.json", expected)
    except OSError:  # the results folder is a file, or cannot be listed
        return None


def load_or_compute(
    experiment: str,
    profile: str,
    config: dict,
    compute: Callable[[], pd.DataFrame],
    device: str | None = None,
    force: bool = False,
    command: str | None = None,
    code: str | None = None,
    store: str | None = None,
    annotate: Callable[[], dict] | None = None,
) -> Result:
    """The stored result of ``experiment`` with ``config``, computing and storing it first
    if there is none (or ``force``).

    Args:
        experiment, profile: names, used in the path and the metadata.
        config: the experiment's arguments (JSON-serializable); part of the key.
        compute: returns the tidy DataFrame.
        device: recorded in the provenance.
        command: recorded in the metadata (default: this process's command line).
        code: hash of the code that computes the result (part of the key; see
            :func:`cache_key`), recorded in the metadata as ``code_hash``.
        store: the folder under the results folder (default: ``profile``).
        annotate: called after ``compute``; what it returns is added to the metadata,
            its ``"provenance"`` entries to the provenance (a Ray run records its cluster
            and its workers' device so, :mod:`bnlib.distributed`).

    Returns:
        The :class:`Result`. A stored result that cannot be read or is inconsistent is
        computed again, with a warning naming the file and the problem.

    Raises:
        ResultsNotWritableError: before computing, if the results folder cannot be written
            or has less free space than a stored result of this experiment takes.
        ResultNotSavedError: after computing, if writing failed (full disk): the error holds
            the computed ``frame`` and ``meta``; the stored result, if any, is kept.
    """
    key = cache_key(experiment, config, code)
    folder = results_dir() / (store or profile) / experiment
    parquet, meta_path = folder / f"{key}.parquet", folder / f"{key}.json"
    canonical = json.loads(_canonical(config))
    if folder.is_dir():
        _clean_stale_temporaries(folder)
    if not force:
        cached = load(experiment, profile, config, code, store)
        if cached is not None:
            return cached
    # before computing: a long run must be able to save
    ensure_writable(folder, needed_bytes=_stored_size(folder) if folder.is_dir() else 0)
    start = time.perf_counter()
    frame = compute()
    wall = time.perf_counter() - start
    meta = {
        "experiment": experiment,
        "profile": profile,
        "config": canonical,
        "key": key,
        "code_hash": code or source_hash(),
        "wall_time_s": wall,
        "rows": len(frame),
        "command": command or _command_line(),
        "provenance": provenance(device),
    }
    added = dict(annotate()) if annotate else {}
    meta["provenance"].update(added.pop("provenance", {}))
    meta.update(added)
    _store(frame, meta, parquet, meta_path)
    return Result(frame, meta, parquet)


class ResultNotSavedError(ResultsNotWritableError):
    """A computed result could not be written; ``frame`` and ``meta`` hold it, and the
    result stored before (if any) is kept."""

    def __init__(self, message: str, frame: pd.DataFrame, meta: dict):
        super().__init__(message)
        self.frame, self.meta = frame, meta


def _store(frame: pd.DataFrame, meta: dict, parquet: Path, meta_path: Path) -> None:
    """Write a result's two files. Both are written completely beside the stored ones
    before any of those is replaced, so a full disk or a crash keeps the previous result
    (with ``--force`` too); the JSON, written last, marks completion."""
    tmp_parquet = parquet.with_name(f".{parquet.name}.{os.getpid()}.tmp")
    tmp_meta = meta_path.with_name(f".{meta_path.name}.{os.getpid()}.tmp")
    try:
        frame.to_parquet(tmp_parquet, index=False)
        meta["data_sha256"] = data_checksum(tmp_parquet)
        tmp_meta.write_text(json.dumps(meta, indent=2))
        meta_path.unlink(missing_ok=True)
        os.replace(tmp_parquet, parquet)
        os.replace(tmp_meta, meta_path)
    except OSError as error:
        reason = error.strerror or str(error)
        raise ResultNotSavedError(
            f"{meta['experiment']} was computed ({len(frame):,} rows) but cannot be written "
            f"to {parquet.parent}: {reason}. The result stored there before, if any, is kept; "
            "the computed one is in this error's .frame and .meta. Fix: free space on that "
            "disk (or set BNLIB_RESULTS to a folder on another) and run it again.",
            frame,
            meta,
        ) from error
    finally:
        tmp_parquet.unlink(missing_ok=True)
        tmp_meta.unlink(missing_ok=True)


def prune_others(result: Result) -> list[Path]:
    """Delete the other stored results of ``result``'s experiment and profile.

    Used for the full profile, whose results are committed: one result per experiment,
    the newest. Returns the deleted paths.
    """
    removed = []
    for path in sorted(result.path.parent.iterdir()):
        if path.suffix in (".parquet", ".json") and path.stem != result.path.stem:
            path.unlink()
            removed.append(path)
    return removed


def record_validation(result: Result, *, key: str, code_hash: str, validation: dict) -> Result:
    """Record that the current code reproduces a stored result (:mod:`bnlib.validation`).

    The result's JSON takes the new ``key`` and ``code_hash`` (so that the current code
    finds it), keeps its provenance (where and when it was computed) and appends
    ``validation`` to its ``validations``; its two files are renamed to the new key. The
    new files are written completely before the old ones are removed, so an interruption
    leaves the old result or the new one, never neither.

    Returns:
        The result at its new path.
    """
    meta = dict(result.meta)
    meta.setdefault("computed_code_hash", meta.get("code_hash"))
    meta.setdefault("data_sha256", data_checksum(result.path))  # results stored before it
    meta["key"], meta["code_hash"] = key, code_hash
    meta["validations"] = [*meta.get("validations", []), validation]
    folder = result.path.parent
    parquet, meta_path = folder / f"{key}.parquet", folder / f"{key}.json"
    old_parquet, old_meta = result.path, result.path.with_suffix(".json")
    if parquet != old_parquet:
        _write_atomically(parquet, lambda p: p.write_bytes(old_parquet.read_bytes()))
    _write_atomically(meta_path, lambda p: p.write_text(json.dumps(meta, indent=2)))
    if parquet != old_parquet:
        old_meta.unlink(missing_ok=True)
        old_parquet.unlink(missing_ok=True)
    return Result(result.frame, meta, parquet)
