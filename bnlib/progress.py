"""Progress bars for training loops, and the cooperative Stop that explorers use.

Every training loop of bnlib reports its steps through :func:`progress_bar`. Reporting is
also where a run can be stopped. A run entered with :func:`stoppable` gets a
:class:`RunControl`; its ``stop()`` (an explorer's Stop button, called from any thread:
ipywidgets callbacks may run in a kernel subshell thread) makes the run's next ``update``
close the bar and raise :class:`Stopped`, whose message says how far the run got
("Stopped at step 120 of 300"). Within about one training step the run ends, with nothing
half-written (results are stored only when an experiment returns). The control can also
take the run's progress (``on_progress``), for an explorer that draws its own bar.

This module changes no result, so it is not part of any result's cache key
(:data:`bnlib.provenance.NOT_COMPUTATION`).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator

__all__ = ["RunControl", "Stopped", "progress_bar", "request_stop", "stoppable"]

#: ``on_progress(desc, done, total)``: a bar's label, steps done, steps asked for.
ProgressListener = Callable[[str, int, int], None]

#: Seconds between two reports to an ``on_progress`` listener (the last step is always
#: reported): a widget that redraws at every step would flood the browser.
REPORT_INTERVAL = 0.1


class Stopped(Exception):
    """A run ended early because a stop was requested (:meth:`RunControl.stop`).

    Attributes:
        done: steps done when it stopped (model-steps for a stacked run).
        total: steps it was asked for.
    """

    def __init__(self, done: int, total: int):
        self.done, self.total = done, total
        super().__init__(f"Stopped at step {done} of {total}")


class RunControl:
    """One stoppable run: its stop flag, and where its progress goes.

    Args:
        on_progress: called as ``on_progress(desc, done, total)`` when a bar of the run
            starts, at most every :data:`REPORT_INTERVAL` seconds while it runs, and at
            its last step; ``None``: the bars show as tqdm bars.
    """

    def __init__(self, on_progress: ProgressListener | None = None):
        self.on_progress = on_progress
        self._stop = threading.Event()

    def stop(self) -> None:
        """Ask the run to stop at its next step (safe from any thread)."""
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()


_current = threading.local()  # the RunControl of the run in this thread, if any
_active: set[RunControl] = set()
_active_lock = threading.Lock()


@contextlib.contextmanager
def stoppable(on_progress: ProgressListener | None = None) -> Iterator[RunControl]:
    """A block whose training loops (in this thread) its :class:`RunControl` can stop.

    Args:
        on_progress: where the block's progress goes (see :class:`RunControl`).

    Yields:
        The run's control; keep it to call ``stop()`` from elsewhere.
    """
    control = RunControl(on_progress)
    outer = getattr(_current, "control", None)
    _current.control = control
    with _active_lock:
        _active.add(control)
    try:
        yield control
    finally:
        _current.control = outer
        with _active_lock:
            _active.discard(control)


def request_stop() -> None:
    """Ask every stoppable run in this process to stop at its next step."""
    with _active_lock:
        for control in _active:
            control.stop()


class _Bar:
    """A progress bar whose ``update`` raises :class:`Stopped` once a stop is requested."""

    def __init__(self, bar, total: int, desc: str, control: RunControl | None, report: bool):
        self._bar, self.total, self.desc, self.done = bar, total, desc, 0
        self._control = control
        self._listener = control.on_progress if control is not None and report else None
        self._reported = 0.0
        self._report()

    def _report(self) -> None:
        if self._listener is None:
            return
        now = time.monotonic()
        if self.done in (0, self.total) or now - self._reported >= REPORT_INTERVAL:
            self._reported = now
            self._listener(self.desc, self.done, self.total)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        self._report()
        if self._control is not None and self._control.stop_requested:
            self.close()
            raise Stopped(self.done, self.total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def grow(self, n: int) -> None:
        """``n`` more steps to do than the bar was opened with (work added on the way)."""
        self.total += n
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.refresh()


def progress_bar(
    total: int, desc: str, enabled: bool | None = None, unit: str = " model-steps"
) -> _Bar:
    """A progress bar for a loop of ``total`` steps.

    Inside a :func:`stoppable` block with an ``on_progress`` listener, the listener gets
    the progress (an explorer's own bar); otherwise a tqdm bar shows it (the notebook
    widget in Jupyter), unless ``BNLIB_PROGRESS=0``: the book's build sets that, since a
    bar's frames are noise in static HTML. Inside any :func:`stoppable` block, ``update``
    raises :class:`Stopped` once the block's run is asked to stop.

    Args:
        total: number of steps (model-steps for a stacked run) the loop will report.
        desc: the bar's label.
        enabled: show it; ``False`` shows nothing (the run can still be stopped); default:
            shown to a listener, and as a tqdm bar unless ``BNLIB_PROGRESS=0``.
        unit: what a step is, as the bar names it.

    Returns:
        A bar with ``update(n=1)`` (raises :class:`Stopped` after a stop request) and
        ``close()``.
    """
    control = getattr(_current, "control", None)
    to_listener = control is not None and control.on_progress is not None
    if enabled is None:
        enabled = os.environ.get("BNLIB_PROGRESS", "1").lower() not in ("0", "false", "no")
        report = True
    else:
        report = enabled
    bar = None
    if enabled and not to_listener:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=total,
            desc=desc,
            leave=False,
            mininterval=1.0,
            unit=unit,
            unit_scale=True,
        )
    return _Bar(bar, total, desc, control, report and to_listener)
