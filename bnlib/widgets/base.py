"""What every explorer is built from: :class:`Explorer` (controls that re-run an experiment),
:class:`Slicer` (controls over a precomputed sweep), the launch links, and the learning-rate
slider the training explorers share."""

from __future__ import annotations

import html
import re
import threading
from collections.abc import Callable

from bnlib.figures.interactive import in_book_build
from bnlib.provenance import PACKAGE_DIR

__all__ = [
    "LEARNING_RATES",
    "Explorer",
    "Slicer",
    "launch_links",
    "learning_rate_slider",
    "require_result",
]


def launch_links(chapter: str) -> dict[str, str]:
    """Binder and Colab URLs of a chapter, from the book's ``_config.yml``.

    Args:
        chapter: the chapter's file name without suffix, e.g. ``"bn_algorithm"``.

    Returns:
        ``{"Binder": url, "Colab": url}``, or ``{}`` when bnlib is not in the book's
        repository (an installed copy) or the repository is not on GitHub.
    """
    import yaml

    config_path = PACKAGE_DIR.parent / "_config.yml"
    if not config_path.exists():
        return {}
    config = yaml.safe_load(config_path.read_text())
    url = config.get("repository", {}).get("url", "").rstrip("/")
    branch = config.get("repository", {}).get("branch", "main")
    buttons = config.get("launch_buttons", {})
    if "github.com/" not in url:
        return {}
    org_repo = url.split("github.com/", 1)[1]
    links = {}
    if buttons.get("binderhub_url"):
        links["Binder"] = (
            f"{buttons['binderhub_url'].rstrip('/')}/v2/gh/{org_repo}/{branch}"
            f"?urlpath=tree/chapters/{chapter}.md"
        )
    if buttons.get("colab_url"):
        links["Colab"] = (
            f"{buttons['colab_url'].rstrip('/')}/github/{org_repo}/blob/{branch}"
            f"/notebooks/{chapter}.ipynb"
        )
    return links


def _display_once(result) -> None:
    """Display ``result``; a matplotlib figure is then closed, so that the inline backend
    does not show it a second time (outside the explorer) when the cell ends."""
    from IPython.display import display

    display(result)
    _close_if_figure(result)


def _close_if_figure(result) -> None:
    from matplotlib.figure import Figure

    if isinstance(result, Figure):
        import matplotlib.pyplot as plt

        plt.close(result)


def _output_of(result) -> dict:
    """``result`` as one display-data output of an ``ipywidgets.Output`` (its ``outputs``
    entry), formatted as the kernel would display it (a figure: PNG).

    Setting ``Output.outputs`` works from any thread, unlike ``with output:``, which
    routes by the message being handled by the thread that runs the cell."""
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        data, metadata = {"text/plain": repr(result)}, {}
    else:
        data, metadata = shell.display_formatter.format(result)
    return {"output_type": "display_data", "data": data, "metadata": metadata}


def _label_of(widget) -> object:
    """What a control shows for its value: the option's label for a dropdown or selection
    slider (read from the options: ipywidgets leaves ``label`` unset while the first option
    is selected), else the value itself."""
    for option in getattr(widget, "options", ()):
        if isinstance(option, tuple) and option[1] == widget.value:
            return option[0]
    return widget.value


def _static_notice(title: str, chapter: str, defaults: dict, what: str) -> str:
    """The HTML a static book shows in place of an explorer's controls: the settings of
    the figure shown, ``what`` the explorer does, and how to launch the chapter."""
    links = launch_links(chapter)
    buttons = (
        " or ".join(f'<a href="{html.escape(u)}">{name}</a>' for name, u in links.items())
        or "Binder or Colab"
    )
    settings = ", ".join(f"{k} = {v}" for k, v in defaults.items())
    return (
        '<div class="admonition note bnlib-explorer-static"><p class="admonition-title">'
        f"Explorer: {html.escape(title)}</p><p>This page shows the result for "
        f"{html.escape(settings)}. {html.escape(what)}; it needs a running Python kernel. "
        f"Launch this chapter in {buttons} (the rocket icon at the top of the page), or "
        "open it in a local Jupyter, and run this cell to change them.</p></div>"
    )


#: The longest error message a status line shows (characters); the rest is in ``.error``.
STATUS_LENGTH = 160


def _readable(message: str) -> str:
    """``message`` as a reader should see it: NumPy's reprs as plain numbers
    (``np.float64(0.5)`` -> ``0.5``), cut to :data:`STATUS_LENGTH` characters."""
    message = re.sub(r"np\.(?:float|int|uint|bool_?)\d*\(([^()]*)\)", r"\1", message)
    if len(message) > STATUS_LENGTH:
        message = message[: STATUS_LENGTH - 1].rstrip() + "…"
    return message


def _failure_status(error: BaseException | None, shown: bool = True) -> str:
    """The status line (HTML) after a run that raised ``error`` (``""``: no error);
    ``shown``: whether a figure of an earlier run is on screen."""
    if error is None:
        return ""
    from bnlib.progress import Stopped

    kept = " The figure is the last complete run's." if shown else " No run has completed yet."
    if isinstance(error, Stopped):
        return f"<b>{html.escape(_readable(str(error)))}.</b>{kept}"
    if isinstance(error, KeyboardInterrupt):
        return "<b>Interrupted.</b> Change the settings and press Run again."
    if isinstance(error, ValueError):
        return f"<b>Cannot run:</b> {html.escape(_readable(str(error)))}"
    message = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return f"<b>Failed:</b> {html.escape(_readable(message))}"


def require_result(frame: object, explorer: str, experiment: str, columns: list[str]) -> None:
    """Check that ``frame`` is a result of ``experiment`` that ``explorer`` can re-slice: a
    non-empty DataFrame with ``columns``.

    Raises:
        ValueError: naming what was given and what to pass instead.
    """
    import pandas as pd

    fix = f"pass the experiment's result: {explorer}(book.result({experiment!r}).frame)"
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{explorer} re-slices a DataFrame, got {type(frame).__name__}; {fix}")
    missing = [c for c in columns if c not in frame.columns]
    if frame.empty or missing:
        what = "no rows" if frame.empty else f"no column {', '.join(map(repr, missing))}"
        raise ValueError(f"{explorer}: the DataFrame given has {what}; {fix}")


class Explorer:
    """Controls, a Run button, a progress area and the figure of the last run.

    Args:
        title: what the explorer varies, shown above the controls.
        controls: ipywidgets by the name of the ``compute`` argument they set.
        compute: ``compute(**values)`` runs the experiment and returns a figure (or any
            displayable object).
        chapter: the chapter's file name (for the launch links in the static book).
        defaults: the values the static book shows; default: the controls' own values.
    """

    def __init__(
        self,
        title: str,
        controls: dict,
        compute: Callable[..., object],
        chapter: str,
        defaults: dict | None = None,
    ) -> None:
        self.title, self.controls, self.compute = title, controls, compute
        self.chapter = chapter
        self.defaults = defaults or {name: w.value for name, w in controls.items()}
        self._control = self._thread = None
        self.error: BaseException | None = None
        self._shown = False  # whether a figure of a complete run is on screen

    def values(self) -> dict:
        """The controls' current values, by argument name."""
        return {name: widget.value for name, widget in self.controls.items()}

    def static_notice(self) -> str:
        """The HTML shown in the static book in place of the controls."""
        return _static_notice(
            self.title,
            self.chapter,
            self.defaults,
            "The explorer re-runs the experiment with your own settings",
        )

    def build(self):
        """The live explorer: controls, Run and Stop buttons, a status line, a progress
        bar and an output area (``ipywidgets.VBox``). Sets ``self.button``,
        ``self.stop_button``, ``self.status``, ``self.progress`` (a box holding
        ``self.progress_bar`` and ``self.progress_label``, shown only while a run goes)
        and ``self.output``."""
        import ipywidgets as w

        self.output = w.Output()
        self.progress_bar = w.IntProgress(value=0, min=0, max=1, bar_style="info")
        self.progress_label = w.Label()
        self.progress = w.HBox(
            [self.progress_bar, self.progress_label], layout=w.Layout(display="none")
        )
        self.status = w.HTML()
        self.button = w.Button(description="Run", button_style="primary", icon="play")
        self.button.on_click(lambda _: self.start())
        self.stop_button = w.Button(description="Stop", icon="stop", disabled=True)
        self.stop_button.on_click(lambda _: self.stop())
        header = w.HTML(f"<b>{html.escape(self.title)}</b>")
        buttons = w.HBox([self.button, self.stop_button])
        return w.VBox(
            [header, *self.controls.values(), buttons, self.status, self.progress, self.output]
        )

    def start(self) -> threading.Thread | None:
        """Run (as :meth:`run`) in a new thread, and return the thread (``None`` when a
        run is going already). The Run button calls this: the callback returns at once,
        so that the kernel handles the Stop button's click while the run goes, whichever
        thread (main or subshell) handles widget messages."""
        if self._thread is not None and self._thread.is_alive():
            return None
        self._thread = threading.Thread(target=self.run, name="bnlib explorer", daemon=True)
        self._running()
        self._thread.start()
        return self._thread

    def stop(self) -> None:
        """Stop the run going, if any, at its next training step (the Stop button)."""
        if self._control is not None:
            self._control.stop()

    def _running(self) -> None:
        self.button.disabled, self.stop_button.disabled = True, False
        self.status.value = "<i>running... (Stop ends the run)</i>"

    def _show_progress(self, desc: str, done: int, total: int) -> None:
        self.progress_bar.max = max(total, 1)
        self.progress_bar.value = min(done, total)
        self.progress_label.value = f"{desc}: {done:,} of {total:,} steps"
        self.progress.layout.display = "flex"

    def run(self, _=None) -> None:
        """Re-run with the controls' values (in this thread) and show the result.

        The progress bar shows while the run goes; the figure of the last complete run
        stays until the new one is ready. Nothing that goes wrong shows as a traceback,
        and the explorer stays ready for the next run: the status line says ``Stopped at
        step n of N.`` (the Stop button: :meth:`stop`), ``Interrupted.`` (the kernel was
        interrupted: this reaches a run in the main thread, started by running the cell),
        ``Cannot run: <message>`` (a ``ValueError``: the experiment refused the settings)
        or ``Failed: <type>: <message>`` (anything else; the exception is kept in
        ``self.error``).

        The figure goes to the output area by setting its ``outputs``, which works from a
        worker thread (:meth:`start`) as from the main thread.
        """
        from bnlib.progress import stoppable

        self._running()
        error = result = None
        try:
            with stoppable(on_progress=self._show_progress) as self._control:
                try:
                    result = self.compute(**self.values())
                except (Exception, KeyboardInterrupt) as caught:
                    error = caught
            if error is None:
                try:
                    self.output.outputs = (_output_of(result),)
                    self._shown = True
                finally:
                    _close_if_figure(result)
            self.status.value = _failure_status(error, self._shown)
        finally:
            self.error, self._control = error, None
            self.progress.layout.display = "none"
            self.button.disabled, self.stop_button.disabled = False, True

    def _ipython_display_(self) -> None:
        from IPython.display import HTML, display

        if in_book_build():
            display(HTML(self.static_notice()))
            _display_once(self.compute(**self.defaults))
        else:
            display(self.build())
            self.run()


class Slicer:
    """Controls whose every change redraws the figure at once: re-slicing a precomputed
    result, or a measurement of a second or two with no training. No Run button.

    Args:
        title: what the controls choose, shown above them.
        controls: ipywidgets by the name of the ``draw`` argument they set.
        draw: ``draw(**values)`` returns a figure (or any displayable object).
        chapter: the chapter's file name (for the launch links in the static book).
        what: what the controls do in a kernel, for the static book's notice.
    """

    def __init__(
        self,
        title: str,
        controls: dict,
        draw: Callable[..., object],
        chapter: str,
        what: str = "In a running kernel the controls re-slice these precomputed runs at once",
    ) -> None:
        self.title, self.controls, self.draw, self.chapter = title, controls, draw, chapter
        self.what = what
        self.defaults = {name: w.value for name, w in controls.items()}
        #: the settings as the controls show them (a dropdown's label, not its value)
        self.shown = {
            getattr(w, "description", "") or name: _label_of(w) for name, w in controls.items()
        }
        self.error: BaseException | None = None
        self._shown = False

    def values(self) -> dict:
        """The controls' current values, by argument name."""
        return {name: widget.value for name, widget in self.controls.items()}

    def build(self):
        """The live controls, a status line and an output area (``ipywidgets.VBox``);
        every control redraws on change. Sets ``self.status`` and ``self.output``."""
        import ipywidgets as w

        self.output, self.status = w.Output(), w.HTML()
        for control in self.controls.values():
            control.observe(self.redraw, names="value")
        header = w.HTML(f"<b>{html.escape(self.title)}</b>")
        return w.VBox([header, *self.controls.values(), self.status, self.output])

    def redraw(self, _=None) -> None:
        """Draw with the controls' values; a failure shows in the status line (and is
        kept in ``self.error``), and the last figure stays."""
        error = None
        try:
            result = self.draw(**self.values())
            try:
                self.output.outputs = (_output_of(result),)
                self._shown = True
            finally:
                _close_if_figure(result)
        except Exception as caught:
            error = caught
        self.error, self.status.value = error, _failure_status(error, self._shown)

    def _ipython_display_(self) -> None:
        from IPython.display import HTML, display

        if in_book_build():
            display(HTML(_static_notice(self.title, self.chapter, self.shown, self.what)))
            _display_once(self.draw(**self.defaults))
        else:
            display(self.build())
            self.redraw()


LEARNING_RATES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def learning_rate_slider(w, style: dict):
    """A slider over :data:`LEARNING_RATES` (0.5 to start), for the explorers that train."""
    return w.SelectionSlider(
        options=LEARNING_RATES, value=0.5, description="learning rate", style=style
    )
