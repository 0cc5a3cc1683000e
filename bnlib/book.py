"""What a chapter calls to get its data: the committed paper-scale results, with provenance.

A chapter never holds an experiment's configuration. It names the experiment, and the
registry (:mod:`bnlib.experiments`) supplies the arguments of the profile the book is built
with (``$BNLIB_PROFILE``; ``full``, the papers' scale, by default)::

    fig1 = book.result("ioffe_figure1")          # a Result: .frame and .meta
    figures.ioffe_figure1(fig1.frame)
    book.provenance("ioffe_figure1")              # one line: config, device, date, commit

    def check(frame):                             # the chapter's claims, as a function
        return [claim(...), claim(...)]
    book.check(check, "ioffe_figure1")

The book never computes a full-profile result: ``python -m bnlib run NAME --profile full``
writes it to ``results/full/NAME/`` (parquet + JSON with provenance), where it is
committed, and the book reads it, so that building the book trains nothing heavy. A
committed result is current when the current code computed it or reproduced it
(:mod:`bnlib.validation`); one that is not fails the book's build (``make book``).

The other profiles recompute everything at a smaller scale, into ``results/<profile>/``:
``quick`` for a reader who wants to rerun the book on a laptop (``BNLIB_PROFILE=quick make
book``), where the claims are checked on the quick data and on the committed full data
both; ``smoke`` for the tests that execute every chapter in seconds.
"""

from __future__ import annotations

import copy
import html
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bnlib import experiments
from bnlib.claims import Claim, Claims, checking, with_full
from bnlib.provenance import is_clean_commit
from bnlib.results import Result, cache_key, check_stored, results_dir

__all__ = [
    "FullResult",
    "check",
    "describe_config",
    "full_result",
    "profile",
    "provenance",
    "provenance_note",
    "result",
]


#: The profile the book reads unless ``$BNLIB_PROFILE`` names another: the committed
#: paper-scale results.
BOOK_PROFILE = "full"


def profile() -> str:
    """The profile the book is built with: ``$BNLIB_PROFILE``, else ``"full"``."""
    return experiments.profile_name(os.environ.get("BNLIB_PROFILE") or BOOK_PROFILE)


def full_dir() -> Path:
    """Where committed full-profile results live: ``<results>/full``."""
    return results_dir() / "full"


@dataclass
class FullResult:
    """A committed full-profile result and whether the current code would compute it.

    Attributes:
        result: the stored :class:`bnlib.results.Result`.
        current: True if its config is the registry's full profile and its code hash is
            the current code's; False if it was computed by an older version.
        code_hash: the current code's hash, for the message when it is not current.
    """

    result: Result
    current: bool
    code_hash: str

    @property
    def validation(self) -> dict | None:
        """The latest validation of this result by the current code
        (:func:`bnlib.validation.revalidate`), or None."""
        for record in reversed(self.meta.get("validations") or []):
            if isinstance(record, dict) and record.get("code_hash") == self.code_hash:
                return record
        return None

    @property
    def clean_commit(self) -> str | None:
        """A commit whose code reproduces this result: the one it was computed from, if
        that tree was clean, else the one of the current code's validation; None if
        neither names a clean commit (or the result is not current)."""
        if not self.current:
            return None
        computed = self.meta["provenance"].get("git_revision")
        if is_clean_commit(computed) and self.meta.get("computed_code_hash") in (
            None,
            self.code_hash,
        ):
            return computed
        validation = self.validation
        if validation is not None and is_clean_commit(validation.get("git_revision")):
            return validation["git_revision"]
        return None

    @property
    def frame(self) -> pd.DataFrame:
        return self.result.frame

    @property
    def meta(self) -> dict:
        return self.result.meta


#: The committed results read so far, by folder, with the files' signature when read: a
#: chapter asks for a result's frame, its provenance and its claims, and reads it once.
_READ: dict[Path, tuple[tuple, list[Result]]] = {}


def _signature(folder: Path) -> tuple:
    """Names, sizes and modification times of a result folder's files."""
    return tuple(
        (path.name, path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(folder.glob("*"))
        if path.suffix in (".json", ".parquet")
    )


def _stored(folder: Path) -> list[Result]:
    """The usable results in a committed result folder (a clear error for any other
    file), read once while the folder's files are unchanged; each call gets its own copy,
    so that a chapter that edits a frame edits no other chapter's."""
    signature = _signature(folder)
    if folder not in _READ or _READ[folder][0] != signature:
        _READ[folder] = (signature, _read_stored(folder))
    return [Result(r.frame.copy(), copy.deepcopy(r.meta), r.path) for r in _READ[folder][1]]


def _read_stored(folder: Path) -> list[Result]:
    found = []
    for meta_path in sorted(folder.glob("*.json")):
        parquet = meta_path.with_suffix(".parquet")
        try:
            meta = json.loads(meta_path.read_text())
            frame = pd.read_parquet(parquet)
        except (OSError, ValueError) as error:
            problem = f"cannot be read ({error})"
        else:
            stored = Result(frame, meta, parquet)
            problem = check_stored(stored)
            if problem is None and (meta["experiment"], meta["profile"]) != (folder.name, "full"):
                problem = f"is {meta['experiment']}'s {meta['profile']} result"
            if problem is None:
                found.append(stored)
                continue
            problem = f"is not usable: {problem}"
        raise ValueError(
            f"the committed full result {meta_path} {problem}; restore it with `git checkout "
            f"-- {folder}`, or recompute it: `python -m bnlib run {folder.name} --profile "
            "full --force`"
        )
    return found


def full_result(name: str) -> FullResult | None:
    """The committed full-profile result of experiment ``name``, or None if there is none.

    Never computes. If several are stored, the one the current code and config would
    produce (or reproduced, :mod:`bnlib.validation`) is preferred, else the most recent,
    which is then not ``current``; while the book is built (``BNLIB_BOOK_BUILD=1``) that is
    an error.
    """
    experiment = experiments.get(name)
    folder = full_dir() / name
    if not folder.is_dir():
        return None
    stored = _stored(folder)
    if not stored:
        return None
    code = experiments.code_hash(name)
    key = cache_key(name, experiment.profiles["full"], code)
    for item in stored:
        if item.meta.get("key") == key:
            return FullResult(item, True, code)
    latest = max(stored, key=lambda r: r.meta["provenance"]["date"])
    if os.environ.get("BNLIB_BOOK_BUILD") == "1":
        raise ValueError(
            f"the committed full result of {name!r} ({latest.path.name}) was computed by other "
            f"code than the current one ({code}); the book is not built from stale results. "
            "`python -m bnlib status --revalidate` checks whether the current code reproduces "
            f"it; if not, `python -m bnlib run {name} --profile full --force` recomputes it"
        )
    return FullResult(latest, False, code)


def result(name: str) -> Result:
    """Experiment ``name``'s result in the book's profile (:func:`profile`).

    ``smoke`` and ``quick`` results are computed if not cached (``results/<profile>/``).
    At the ``full`` profile the committed result is returned, never computed.

    Raises:
        ValueError: unknown experiment, or (full profile) no committed full result.
    """
    chosen = profile()
    if chosen != "full":
        return experiments.run(name, chosen)
    stored = full_result(name)
    if stored is None:
        raise ValueError(
            f"no full-profile result of {name!r} is committed in {full_dir() / name}; the "
            f"book never computes one: run `python -m bnlib run {name} --profile full`, or "
            "build the book at a smaller scale, with BNLIB_PROFILE=quick"
        )
    return stored.result


def _number(value: int) -> str:
    return f"{value:,}"


def describe_config(config: dict) -> str:
    """A short description of a run's scale, e.g. ``"50,000 steps, 5 seeds"``."""
    parts = []
    for key, label in experiments.STEP_ARGUMENTS.items():
        if key in config:
            parts.append(f"{_number(config[key])} {label}")
    for key, label in experiments.SIZE_ARGUMENTS.items():
        if key in config and isinstance(config[key], int):
            parts.append(f"{_number(config[key])} {label}")
    for key, (singular, plural) in experiments.SWEEP_ARGUMENTS.items():
        if key in config and isinstance(config[key], Sequence):
            count = len(config[key])
            parts.append(f"{count} {singular if count == 1 else plural}")
    for key, (label, _) in experiments.COUNT_ARGUMENTS.items():
        if key in config and isinstance(config[key], int):
            parts.append(f"{label} {_number(config[key])}")
    return ", ".join(parts) or "the registry's full configuration"


def format_duration(seconds: float | None) -> str:
    """``"42 s"``, ``"18 min"`` or ``"2.5 h"``; ``"unknown"`` for None."""
    if seconds is None:
        return "unknown"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _label(stored: FullResult) -> str:
    meta, prov = stored.meta, stored.meta["provenance"]
    cuda = f", CUDA {prov['cuda_version']}" if prov["device"].startswith("cuda") else ""
    took = format_duration(meta["wall_time_s"])
    text = (
        f"Data: {meta['experiment']}, {describe_config(meta['config'])}; computed on "
        f"{prov['device']}{cuda} with torch {prov['torch_version']} on {prov['date'][:10]} "
        f"in {took}, git {prov['git_revision']}"
    )
    validation = stored.validation
    if stored.current and validation is not None:
        spread = validation.get("seed_spread")
        how = (
            # the subset's random draws differ from the full run's (they depend on how many
            # models are stacked), so single values cannot agree; the seeds' spread decides
            f"{validation['rows_compared']:,} rows recomputed, each column's median deviation "
            f"within {spread:g} times the seeds' spread, as runs that draw other random "
            f"numbers can only agree; largest single deviation "
            f"{validation['max_abs_deviation']:.2g}"
            if spread
            else f"{validation['rows_compared']:,} rows recomputed, largest deviation "
            f"{validation['max_abs_deviation']:.2g}"
        )
        text += (
            f"; reproduced by the current code at git {validation['git_revision']} on "
            f"{validation['date'][:10]} ({how})"
        )
    if not stored.current:
        text += (
            f"; computed by an older version of the code (bnlib code {meta.get('code_hash', '?')}"
            f"; the current code's is {stored.code_hash}): `python -m bnlib status --revalidate` "
            "checks whether the current code reproduces it; `python -m bnlib run "
            f"{meta['experiment']} --profile full --force` recomputes it"
        )
    return text + "."


class Note:
    """A short paragraph shown in the page (HTML) and in a terminal (text)."""

    def __init__(self, text: str, css: str):
        self.text, self.css = text, css

    def __repr__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        body = html.escape(self.text)
        body = body.replace("`", "")  # commands are quoted in text, plain in HTML
        return f'<p class="bnlib-provenance {self.css}">{body}</p>'


def provenance_note(name: str) -> Note:
    """One line saying where the data of ``name`` shown in the page come from.

    At the ``full`` profile (the book's): the committed result's configuration, device,
    date, duration and commit (and the commit that reproduced it, where one did). At the
    other profiles: the configuration recomputed here, and the command that computes the
    committed paper-scale result where none is committed.
    """
    chosen = profile()
    stored = full_result(name)
    if chosen != "full":
        config = experiments.get(name).profiles[chosen]
        return Note(
            f"Data: {name}, recomputed here at the {chosen} profile ({describe_config(config)}); "
            + (
                "the book's pages show the committed paper-scale result."
                if stored is not None
                else f"`python -m bnlib run {name} --profile full` computes the paper-scale one."
            ),
            "bnlib-provenance-recomputed",
        )
    if stored is None:  # result() has already refused: the book is never built without it
        return Note(f"No committed result of {name!r}.", "bnlib-provenance-missing")
    css = "bnlib-provenance-current" if stored.current else "bnlib-provenance-stale"
    return Note(_label(stored), css)


def provenance(name: str) -> None:
    """Display :func:`provenance_note` of ``name`` under the figure or table it drew."""
    from IPython.display import display

    display(provenance_note(name))


def check(function: Callable[..., Sequence[Claim]], name: str | Sequence[str]) -> Claims:
    """Run a chapter's claims on experiment ``name``'s data.

    Args:
        function: takes the experiment's tidy frame (one per name, in order, when
            ``name`` lists several experiments) and returns its claims
            (:func:`bnlib.claims.claim` calls), in a fixed order.
        name: the registered experiment, or several (a control and the run it controls).

    Returns:
        The claims on the book's profile's data. At the ``full`` profile (the book's) that
        is the committed paper-scale data. At ``quick``, where a full result is committed
        for every experiment named, each claim carries the full number and status as well
        (:func:`bnlib.claims.with_full`). At ``smoke`` claims are computed but not
        enforced, and an error while computing them (too few steps for a quantity to
        exist) is shown instead.

    Raises:
        ClaimFailed: a claim does not hold on the book's data (at ``quick``: on the quick
            data, or on the committed full data).
    """
    names = [name] if isinstance(name, str) else list(name)
    chosen = profile()
    if chosen == "smoke":
        try:
            with checking("smoke", enforce=False):
                return Claims(function(*(result(n).frame for n in names)))
        except Exception as error:  # a smoke run is too short for some quantities
            return Claims([Note(f"Claims not computed at the smoke profile: {error!r}", "")])
    with checking(chosen):
        main = Claims(function(*(result(n).frame for n in names)))
    if chosen == "full":
        return main
    stored = [full_result(n) for n in names]
    if any(one is None for one in stored):
        return main
    with checking("full", enforce=False):
        full = function(*(one.frame for one in stored))
    current = all(one.current for one in stored)
    plural = "s" if len(stored) > 1 else ""
    source = f"committed result{plural}" + ("" if current else ", computed by an older version")
    return with_full(main, full, source)
