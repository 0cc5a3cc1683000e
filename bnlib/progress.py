"""Progress bars for training loops, and the cooperative Stop that explorers use.

Every training loop of bnlib reports its steps through :func:`progress_bar`. Reporting is
also where a run can be stopped: :func:`request_stop` (an explorer's Stop button, from
any thread: ipywidgets callbacks may run in a kernel subshell thread) makes the next
``update`` close the bar and raise :class:`Stopped`, whose message says how far the run
got ("Stopped at step 120 of 300"). Within about one training step the run ends, with
nothing half-written (results are stored only when an experiment returns).

This module changes no result, so it is not part of any result's cache key
(:data:`bnlib.provenance.NOT_COMPUTATION`).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

__all__ = ["Stopped", "progress_bar", "request_stop", "stoppable"]

_STOP = threading.Event()


class Stopped(Exception):
    """A run ended early because a stop was requested (:func:`request_stop`).

    Attributes:
        done: steps done when it stopped (model-steps for a stacked run).
        total: steps it was asked for.
    """

    def __init__(self, done: int, total: int):
        self.done, self.total = done, total
        super().__init__(f"Stopped at step {done} of {total}")


def request_stop() -> None:
    """Ask the running training loop (in this process) to stop at its next step."""
    _STOP.set()


@contextlib.contextmanager
def stoppable() -> Iterator[None]:
    """A block whose training loops :func:`request_stop` can end; an earlier request that
    arrived when nothing ran is forgotten on entry, and a late one on exit."""
    _STOP.clear()
    try:
        yield
    finally:
        _STOP.clear()


class _Bar:
    """A tqdm bar whose ``update`` raises :class:`Stopped` once a stop is requested."""

    def __init__(self, bar, total: int):
        self._bar, self.total, self.done = bar, total, 0

    def update(self, n: int = 1) -> None:
        self.done += n
        self._bar.update(n)
        if _STOP.is_set():
            self._bar.close()
            raise Stopped(self.done, self.total)

    def close(self) -> None:
        self._bar.close()


def progress_bar(total: int, desc: str, enabled: bool | None = None) -> _Bar:
    """A tqdm bar (the notebook widget in Jupyter), off when ``BNLIB_PROGRESS=0``.

    The book's build sets ``BNLIB_PROGRESS=0``: a bar's frames are noise in static HTML.

    Args:
        total: number of steps (model-steps for a stacked run) the loop will report.
        desc: the bar's label.
        enabled: show it; default from ``BNLIB_PROGRESS``.

    Returns:
        A bar with ``update(n=1)`` (raises :class:`Stopped` after :func:`request_stop`)
        and ``close()``.
    """
    from tqdm.auto import tqdm

    if enabled is None:
        enabled = os.environ.get("BNLIB_PROGRESS", "1").lower() not in ("0", "false", "no")
    bar = tqdm(
        total=total,
        desc=desc,
        disable=not enabled,
        leave=False,
        mininterval=1.0,
        unit=" model-steps",
        unit_scale=True,
    )
    return _Bar(bar, total)
